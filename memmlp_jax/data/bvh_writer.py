"""Writes a Motion as BVH, the format Blender, MotionBuilder and Maya import.

The hierarchy is the motion's own skeleton (joint names, rest offsets in the
chosen units); the root has 6 channels (position, then rotation) and every
other joint 3 rotation channels. BVH is conventionally Y up (Blender's
importer assumes Y up and -Z forward by default), so ``up="y"`` turns the
Z-up world by -90 degrees about X; the body's own offsets are already Y up.
The root's OFFSET is zero and its position channels hold the root joint's
world position, which every importer reads the same way. Leaf joints get an
End Site continuing their bone by half its length.

Rotation channels are Euler angles in degrees, ``order`` naming the channels
("ZYX": ``Zrotation Yrotation Xrotation``, R = Rz Ry Rx), unwrapped over
time so animation curves stay continuous.
"""

import numpy as np

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import motion as motion_lib

UNITS_PER_M = {"m": 1.0, "cm": 100.0, "mm": 1000.0}
ROTATION_ORDERS = ("ZYX", "XYZ", "YXZ", "ZXY", "XZY", "YZX")


def _hierarchy(skeleton: skeleton_lib.Skeleton, scale: float,
               rotation_channels: str) -> list:
  """The HIERARCHY section's lines, depth first (BVH's channel order)."""
  lines = []

  def joint(j: int, depth: int):
    pad = "\t" * depth
    if j == 0:
      lines.append(f"ROOT {skeleton.names[0]}")
      offset = np.zeros(3)
      channels = "6 Xposition Yposition Zposition " + rotation_channels
    else:
      lines.append(f"{pad}JOINT {skeleton.names[j]}")
      offset = skeleton.offsets[j] * scale
      channels = "3 " + rotation_channels
    lines.append(f"{pad}{{")
    lines.append(f"{pad}\tOFFSET {_numbers(offset)}")
    lines.append(f"{pad}\tCHANNELS {channels}")
    children = skeleton.children(j)
    for child in children:
      joint(child, depth + 1)
    if not children:
      end = skeleton.offsets[j] * scale * 0.5
      lines.extend([f"{pad}\tEnd Site", f"{pad}\t{{",
                    f"{pad}\t\tOFFSET {_numbers(end)}", f"{pad}\t}}"])
    lines.append(f"{pad}}}")

  joint(0, 0)
  return lines


def depth_first_order(skeleton: skeleton_lib.Skeleton) -> list:
  """Joint indices in the order their channels appear in a BVH frame."""
  order = []

  def visit(j):
    order.append(j)
    for child in skeleton.children(j):
      visit(child)

  visit(0)
  return order


def _numbers(values) -> str:
  return " ".join(f"{v:.6f}" for v in values)


def to_bvh(motion: motion_lib.Motion, *, units: str = "m",
           order: str = "ZYX", up: str = "y") -> str:
  """The BVH text of ``motion`` (see the module docstring for the choices)."""
  if units not in UNITS_PER_M:
    raise ValueError(f"units must be one of {tuple(UNITS_PER_M)}, got {units!r}")
  if order not in ROTATION_ORDERS:
    raise ValueError(f"order must be one of {ROTATION_ORDERS}, got {order!r}")
  if up not in ("y", "z"):
    raise ValueError(f"up must be 'y' or 'z', got {up!r}")
  skeleton = motion.skeleton
  scale = UNITS_PER_M[units]
  world_to_file = skeleton_lib.Y_UP_TO_Z_UP.T if up == "y" else np.eye(3)

  local = np.array(motion.local_rotations, np.float64)
  local[:, 0] = world_to_file @ local[:, 0]
  root = (np.asarray(motion.root_translation, np.float64) +
          skeleton.offsets[0]) @ world_to_file.T * scale
  joints = depth_first_order(skeleton)
  angles = geometry.matrix_to_euler(local[:, joints], order, degrees=True)
  angles = np.unwrap(angles, period=360.0, axis=0)
  frames = np.concatenate(
      [root, angles.reshape(len(local), -1)], axis=1)

  channels = " ".join(f"{axis}rotation" for axis in order)
  lines = ["HIERARCHY"] + _hierarchy(skeleton, scale, channels)
  lines += ["MOTION", f"Frames: {len(frames)}",
            f"Frame Time: {1.0 / motion.fps:.9f}"]
  lines += [_numbers(row) for row in frames]
  return "\n".join(lines) + "\n"


def write_bvh(path, motion: motion_lib.Motion, **options) -> None:
  """Writes ``to_bvh(motion, **options)`` to ``path``."""
  text = to_bvh(motion, **options)
  with open(path, "w", encoding="ascii") as f:
    f.write(text)
