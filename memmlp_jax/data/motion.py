"""The one motion record every loader returns, and the model's features.

A `Motion` holds canonical local rotations and root translation in the Z-up
world at (normally) 60 fps. `features` turns it into the model's sparse input
and targets exactly as docs/design.md §1 defines them (AGRoL/AvatarPoser's
convention: no normalisation, frame 0 dropped).
"""

import dataclasses

import numpy as np

from memmlp_jax import dims
from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib

SPARSE_DIM = dims.SPARSE_DIM
ROT6D_DIM = dims.ROT6D_DIM
POS_DIM = dims.POS_DIM
MOTION_DIM = dims.MOTION_DIM


class MotionError(ValueError):
  """Bad input data; the message names the file and the problem."""

  def __init__(self, path, problem: str):
    self.path = str(path)
    self.problem = problem
    super().__init__(f"{self.path}: {problem}")


@dataclasses.dataclass(frozen=True, eq=False)
class Motion:
  """A clip on one body.

  Attributes:
    local_rotations: (N, J, 3, 3); joint 0 is the root's world orientation.
    root_translation: (N, 3) metres, Z up; the root joint is at
      ``root_translation + skeleton.offsets[0]``.
    fps: frames per second.
    clip_id: unique id, "<source>/<name>", e.g. "cmu/02_01".
    subject: the performer, "<source>/<subject>", e.g. "cmu/02".
    source: where it came from, e.g. "cmu", "hdm05", "cmu_bvh", "amass".
    skeleton: the body the rotations drive.
  """
  local_rotations: np.ndarray
  root_translation: np.ndarray
  fps: float
  clip_id: str
  subject: str
  source: str
  skeleton: skeleton_lib.Skeleton = skeleton_lib.SMPL_NEUTRAL

  @property
  def num_frames(self) -> int:
    return len(self.local_rotations)

  def global_pose(self):
    """(global rotations (N, J, 3, 3), joint positions (N, J, 3))."""
    return geometry.forward_kinematics(
        self.local_rotations, self.root_translation, self.skeleton.parents,
        self.skeleton.offsets)


def validate(motion: Motion, path, min_frames: int = 2) -> Motion:
  """Checks shapes and values; raises MotionError naming ``path``."""
  j = motion.skeleton.num_joints
  rot, trans = motion.local_rotations, motion.root_translation
  if rot.ndim != 4 or rot.shape[1:] != (j, 3, 3):
    raise MotionError(path, f"local rotations have shape {rot.shape}, "
                      f"expected (frames, {j}, 3, 3)")
  if trans.shape != (len(rot), 3):
    raise MotionError(path, f"root translation has shape {trans.shape}, "
                      f"expected ({len(rot)}, 3)")
  if not np.isfinite(motion.fps) or motion.fps <= 0:
    raise MotionError(path, f"invalid frame rate {motion.fps}")
  for name, values in (("rotations", rot), ("root translation", trans)):
    bad = ~np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if bad.any():
      frames = np.flatnonzero(bad)
      raise MotionError(path, f"{len(frames)} frame(s) hold NaN/inf "
                        f"{name} (first at frame {frames[0]})")
  if len(rot) < min_frames:
    raise MotionError(path, f"only {len(rot)} frame(s); need {min_frames}")
  return motion


def sparse_from_tracking(rotations, positions):
  """Sparse input features from tracked head and hands.

  Args:
    rotations: (N, 3, 3, 3) global rotations of head, left and right wrist.
    positions: (N, 3, 3) their world positions in metres (Z up).

  Returns:
    (N - 1, 54): per frame t >= 1, 6D rotations (18), 6D rotation velocity
    R_{t-1}^T R_t (18), positions (9), position deltas p_t - p_{t-1} (9).
    NaN in a frame's signals propagates into that frame and the next.
  """
  rotations = np.asarray(rotations)
  positions = np.asarray(positions)
  n = len(rotations)
  velocity = np.swapaxes(rotations[:-1], -1, -2) @ rotations[1:]
  return np.concatenate([
      geometry.matrix_to_rot6d(rotations[1:]).reshape(n - 1, 18),
      geometry.matrix_to_rot6d(velocity).reshape(n - 1, 18),
      positions[1:].reshape(n - 1, 9),
      (positions[1:] - positions[:-1]).reshape(n - 1, 9),
  ], axis=-1).astype(np.float32)


def features(motion: Motion):
  """dict(sparse (N-1, 54), rot6d (N-1, 132), pos (N-1, 66)), float32."""
  global_rotations, positions = motion.global_pose()
  tracked = list(skeleton_lib.SPARSE_JOINTS)
  n = motion.num_frames
  return {
      "sparse": sparse_from_tracking(global_rotations[:, tracked],
                                     positions[:, tracked]),
      "rot6d": geometry.matrix_to_rot6d(motion.local_rotations[1:]).reshape(
          n - 1, ROT6D_DIM).astype(np.float32),
      "pos": positions[1:].reshape(n - 1, POS_DIM).astype(np.float32),
  }
