"""The VMC protocol (OSC over UDP): tracker poses in, humanoid bones out.

VMC (Virtual Motion Capture protocol, https://protocol.vmc.info) carries
poses between a "Performer" and the engines' receivers (EVMC4U for Unity,
VMC4UE for Unreal, VMC4B for Blender, Godot's). Every pose is in Unity's
frame: left-handed, Y up, +Z forward, metres, quaternions (x, y, z, w).

In (tracking devices):
  /VMC/Ext/Hmd/Pos  (s serial, f px, py, pz, qx, qy, qz, qw)
  /VMC/Ext/Con/Pos  (s serial, f px, py, pz, qx, qy, qz, qw)
  /VMC/Ext/T        (f time in seconds), optional, the frame's time

Out (one bundle per answered frame):
  /VMC/Ext/Root/Pos (s "root", f px, py, pz, qx, qy, qz, qw): the avatar's
                    root, at the origin unrotated;
  /VMC/Ext/Bone/Pos (s HumanBodyBones name, f px, py, pz, qx, qy, qz, qw)
                    per bone: local position and local rotation;
  /VMC/Ext/OK       (i loaded = 1, i calibration state = 3 (calibrated),
                    i calibration mode = 0, i tracking status 1 / 0 when a
                    device is lost);
  /VMC/Ext/T        (f time): the time of the input frame this answers.

Bones are the canonical body's 22 joints under Unity's HumanBodyBones names.
Their rotations are relative to the T-pose with identity rest, as normalised
VRM avatars expect: the canonical body's rest pose is SMPL's T-pose with
every local rotation identity, in axes (+X the body's left, +Y up, +Z
forward); Unity's avatar axes are (+X the body's right, +Y up, +Z forward),
the same axes mirrored in X, so a local rotation R becomes M R M with
M = diag(-1, 1, 1). The hips carry the body's world orientation and, as
their local position, the pelvis's position in Unity's world.
"""

import struct
from typing import Any, Sequence

import numpy as np
from pythonosc import osc_bundle_builder
from pythonosc import osc_message_builder
from pythonosc import osc_packet

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import tracking

HMD = "/VMC/Ext/Hmd/Pos"
CONTROLLER = "/VMC/Ext/Con/Pos"
TIME = "/VMC/Ext/T"
ROOT = "/VMC/Ext/Root/Pos"
BONE = "/VMC/Ext/Bone/Pos"
OK = "/VMC/Ext/OK"

# Unity HumanBodyBones name of each canonical joint (skeleton.JOINT_NAMES).
BONE_NAMES = (
    "Hips", "LeftUpperLeg", "RightUpperLeg", "Spine", "LeftLowerLeg",
    "RightLowerLeg", "Chest", "LeftFoot", "RightFoot", "UpperChest",
    "LeftToes", "RightToes", "Neck", "LeftShoulder", "RightShoulder", "Head",
    "LeftUpperArm", "RightUpperArm", "LeftLowerArm", "RightLowerArm",
    "LeftHand", "RightHand",
)
# The canonical body's axes -> a Unity avatar's: X mirrored.
_MIRROR = np.diag([-1.0, 1.0, 1.0])
# The project's Z-up world -> Unity's world (symmetric: its own inverse).
_UNITY_BASIS = tracking.PRESETS["unity"].basis
# The root's world rotation of a body standing in Unity's rest orientation
# (facing Unity's +Z): the rotation whose bone rotation is identity.
REST_ROOT_ROTATION = _UNITY_BASIS @ _MIRROR


class MalformedPacket(ValueError):
  """A datagram that is not OSC, or a message VMC does not define so."""

  def __init__(self, reason: str, detail: str):
    self.reason = reason  # a stats key: "garbage", "bad_arguments", ...
    super().__init__(detail)


# ------------------------------------------------------------- bones


def _to_unity_quat(rotations):
  """(..., 3, 3) -> (..., 4) quaternions (x, y, z, w)."""
  return geometry.matrix_to_quat(rotations)[..., [1, 2, 3, 0]]


def bones_from_body(local_rotations, root_translation,
                    skeleton=skeleton_lib.SMPL_NEUTRAL):
  """The body's pose as VMC bones.

  Args:
    local_rotations: (..., 22, 3, 3) canonical local rotations (joint 0 the
      root's world orientation in the Z-up world).
    root_translation: (..., 3) the root translation (Z-up world, metres).
    skeleton: the body, for the bones' rest offsets.

  Returns:
    (positions (..., 22, 3), quaternions (..., 22, 4) x, y, z, w): each
    bone's local position and rotation in Unity's frame, in BONE_NAMES order.
  """
  local_rotations = np.asarray(local_rotations, np.float64)
  rotations = _MIRROR @ local_rotations @ _MIRROR
  rotations[..., 0, :, :] = (
      _UNITY_BASIS @ local_rotations[..., 0, :, :] @ _MIRROR)
  offsets = skeleton.offsets @ _MIRROR
  positions = np.broadcast_to(offsets, rotations.shape[:-2] + (3,)).copy()
  hips = np.asarray(root_translation, np.float64) + skeleton.offsets[0]
  positions[..., 0, :] = hips @ _UNITY_BASIS
  return positions, _to_unity_quat(rotations)


def body_from_bones(positions, quaternions, skeleton=skeleton_lib.SMPL_NEUTRAL):
  """The inverse of ``bones_from_body``.

  Returns:
    (local rotations (..., 22, 3, 3), root translation (..., 3) for
    ``skeleton``, the bones' rest offsets (..., 22, 3) with the root's 0:
    the body the sender animated).
  """
  positions = np.asarray(positions, np.float64)
  rotations = geometry.quat_to_matrix(
      np.asarray(quaternions, np.float64)[..., [3, 0, 1, 2]])
  local = _MIRROR @ rotations @ _MIRROR
  local[..., 0, :, :] = _UNITY_BASIS @ rotations[..., 0, :, :] @ _MIRROR
  hips = positions[..., 0, :] @ _UNITY_BASIS
  offsets = positions @ _MIRROR
  offsets[..., 0, :] = 0.0
  return local, hips - skeleton.offsets[0], offsets


# ------------------------------------------------------------- encoding


def message(address: str, args: Sequence[Any]):
  """An OSC message; Python floats go out as OSC float32 ("f")."""
  builder = osc_message_builder.OscMessageBuilder(address=address)
  for value in args:
    builder.add_arg(value)
  return builder.build()


def bundle(messages) -> bytes:
  """The datagram of one OSC bundle holding ``messages`` (immediate)."""
  builder = osc_bundle_builder.OscBundleBuilder(
      osc_bundle_builder.IMMEDIATELY)
  for msg in messages:
    builder.add_content(msg)
  return builder.build().dgram


def pose_args(name: str, position, quaternion) -> list:
  """(name, px, py, pz, qx, qy, qz, qw) as OSC arguments."""
  return [name] + [float(v) for v in position] + [float(v) for v in quaternion]


def _padded(text: str) -> bytes:
  """An OSC string: UTF-8, NUL-terminated, padded to a multiple of 4."""
  data = text.encode() + b"\0"
  return data + b"\0" * (-len(data) % 4)


# The fixed part of every bone message (address, type tags, bone name):
# answers are the hot path of the live server, so only the seven floats of
# each bone are packed per frame (python-osc's builder takes ~30 us per
# message). The tests check these bytes decode with python-osc.
_POSE_TAGS = _padded(",sfffffff")
_BONE_HEADERS = tuple(_padded(BONE) + _POSE_TAGS + _padded(name)
                      for name in BONE_NAMES)
_ROOT_MESSAGE = (_padded(ROOT) + _POSE_TAGS + _padded("root")
                 + struct.pack(">7f", 0, 0, 0, 0, 0, 0, 1))
_BUNDLE_HEADER = _padded("#bundle") + struct.pack(">Q", 1)  # immediately


def _element(data: bytes) -> bytes:
  return struct.pack(">i", len(data)) + data


def answer(positions, quaternions, time: float, tracked: bool) -> bytes:
  """The bundle answering one frame: root, bones, OK, then T."""
  poses = np.concatenate([positions, quaternions], axis=-1).astype(">f4")
  parts = [_BUNDLE_HEADER, _element(_ROOT_MESSAGE)]
  parts += [_element(header + pose.tobytes())
            for header, pose in zip(_BONE_HEADERS, poses)]
  parts.append(_element(_padded(OK) + _padded(",iiii")
                        + struct.pack(">4i", 1, 3, 0, int(tracked))))
  parts.append(_element(_padded(TIME) + _padded(",f")
                        + struct.pack(">f", time)))
  return b"".join(parts)


def tracking_frame(time: float, head, controllers) -> bytes:
  """The bundle a Performer sends per frame: T, the headset, controllers.

  ``head`` is (serial, position, quaternion xyzw) and ``controllers`` a list
  of them, in Unity's frame (or the receiver's preset).
  """
  messages = [message(TIME, [float(time)]), message(HMD, pose_args(*head))]
  messages += [message(CONTROLLER, pose_args(*c)) for c in controllers]
  return bundle(messages)


# ------------------------------------------------------------- decoding


def parse(datagram: bytes) -> list[tuple[str, tuple]]:
  """[(address, args)] of every message in a datagram, bundles flattened.

  Raises:
    MalformedPacket("garbage", ...): the bytes are not an OSC packet.
  """
  try:
    packet = osc_packet.OscPacket(datagram)
    return [(m.message.address, tuple(m.message.params))
            for m in packet.messages]
  except Exception as e:  # pylint: disable=broad-except
    # The parser raises ParseError, but also struct or index errors on some
    # truncated packets: every failure here is the sender's garbage.
    raise MalformedPacket("garbage", f"not an OSC packet: {e}") from None


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def device_pose(address: str, args: tuple):
  """(serial, position (3,), quaternion (4,) x, y, z, w) of a device message.

  Raises:
    MalformedPacket("bad_arguments" | "non_finite", ...).
  """
  if (len(args) != 8 or not isinstance(args[0], str)
      or not all(_is_number(v) for v in args[1:])):
    raise MalformedPacket(
        "bad_arguments", f"{address} needs (string serial, 7 numbers), got "
        f"{tuple(type(a).__name__ for a in args)}")
  values = np.asarray(args[1:], np.float64)
  if not np.isfinite(values).all():
    raise MalformedPacket("non_finite", f"{address} {args[0]!r}: NaN or inf")
  if np.linalg.norm(values[3:]) < 1e-6:
    raise MalformedPacket("non_finite", f"{address} {args[0]!r}: zero "
                          "quaternion")
  return args[0], values[:3], values[3:]


def frame_time(args: tuple) -> float:
  """The time of a /VMC/Ext/T message, checked."""
  if len(args) != 1 or not _is_number(args[0]):
    raise MalformedPacket("bad_arguments", f"{TIME} needs one number, got "
                          f"{args!r}")
  if not np.isfinite(args[0]):
    raise MalformedPacket("non_finite", f"{TIME}: {args[0]}")
  return float(args[0])


def answer_frame(messages):
  """(time, {bone name: (position, quaternion)}, tracked) of an answer bundle.

  For receivers of ``answer``'s bundles (live_replay, the tests). Raises
  MalformedPacket when the bundle carries no time or a bad bone.
  """
  bones, time, tracked = {}, None, True
  for address, args in messages:
    if address == BONE:
      name, position, quaternion = device_pose(address, args)
      bones[name] = (position, quaternion)
    elif address == TIME:
      time = frame_time(args)
    elif address == OK and len(args) >= 4:
      tracked = bool(args[3])
  if time is None:
    raise MalformedPacket("bad_arguments", "an answer without /VMC/Ext/T")
  return time, bones, tracked
