"""Training windows: random crops of prepared clips, with optional augmentation.

A batch is a pure function of (seed, step): the crop positions and the
augmentation draws come from a numpy generator keyed on (seed, step), so a run
resumed from a checkpoint sees exactly the batches it would have seen, with no
iterator state to save. Every crop has T + H frames (H = `history`, 1 by
default) because the memory block at window t reads the window at t - 1: the
model's current window is the crop's last T frames and its previous window
the T frames one earlier (H = 2 adds the window before that, for a training
step that first predicts the previous window itself).

Clip starts (`start_share`): that share of the crops ends at one of a clip's
first T + H - 1 frames. Rows before the clip's first frame repeat it, exactly
as the online rollout pads its first windows, and `clip_frame` (the clip
frame of the crop's last row) tells the trainer where the memory must be
empty, as it is at the rollout's first frame.

Augmentation acts on the feature arrays directly and is exact, i.e. an
augmented window equals the features recomputed from the augmented motion:
- world yaw: the whole world turns by an angle about the up (Z) axis. Global
  rotations, the root's local rotation, positions and position deltas turn
  with it; rotation velocities R_{t-1}^T R_t and the other local rotations are
  invariant.
- mirror: reflection x -> -x of the world, with the body mirrored across its
  own sagittal plane (SMPL body frame: +X is the body's left). Every rotation
  R becomes S R S with S = diag(-1, 1, 1), positions have x negated, and left
  and right joints (and the two hands of the sparse input) swap places.
"""

import dataclasses
from typing import Sequence

import numpy as np

from memmlp_jax import skeleton

SPARSE_JOINTS = len(skeleton.SPARSE_JOINTS)
NUM_JOINTS = skeleton.NUM_JOINTS
# Layout of the 54 sparse features (docs/design.md §1): per block, head, left wrist,
# right wrist in that order.
_SPARSE_ROT = slice(0, 18)
_SPARSE_ROT_VEL = slice(18, 36)
_SPARSE_POS = slice(36, 45)
_SPARSE_DELTA = slice(45, 54)
# Sparse joints after a mirror: the head stays, the wrists swap.
_SPARSE_MIRROR = np.array([0, 2, 1])
_JOINT_MIRROR = np.array(skeleton.MIRROR)
# 6D = (r00, r10, r20, r01, r11, r21); S R S with S = diag(-1, 1, 1) flips the
# sign of every entry r_ik with exactly one of i, k equal to 0.
_ROT6D_MIRROR_SIGN = np.array([1, -1, -1, -1, 1, 1], np.float32)


class WindowError(ValueError):
  """A split cannot give the windows asked for."""


@dataclasses.dataclass(frozen=True)
class Augment:
  """Which augmentations a batch gets (each window draws its own)."""
  yaw: bool = False
  mirror: bool = False

  @classmethod
  def from_names(cls, names: Sequence[str]) -> "Augment":
    unknown = set(names) - {"yaw", "mirror"}
    if unknown:
      raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; "
                       "known: yaw, mirror")
    return cls(yaw="yaw" in names, mirror="mirror" in names)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Where each window of a batch comes from and how it is augmented."""
  starts: np.ndarray   # (B,) first row of each crop in the split's arrays
  angles: np.ndarray   # (B,) world yaw in radians (0 when off)
  mirror: np.ndarray   # (B,) bool
  # (B,) row of each crop's clip start; rows before it repeat it (padding).
  clip_first: np.ndarray | None = None

  def rows(self, span: int, rows=slice(None)) -> np.ndarray:
    """(b, span) array rows of the crops, padding clamped to the clip start."""
    index = self.starts[rows, None] + np.arange(span)
    if self.clip_first is None:
      return index
    return np.maximum(index, self.clip_first[rows, None])

  def clip_frame(self, span: int, rows=slice(None)) -> np.ndarray:
    """(b,) clip frame of each crop's last row."""
    first = (self.starts if self.clip_first is None
             else self.clip_first)[rows]
    return (self.starts[rows] + span - 1 - first).astype(np.int32)


def valid_starts(clip_starts, clip_lengths, span: int):
  """Per clip, how many crops of `span` frames fit, and their cumulative sum."""
  counts = np.maximum(np.asarray(clip_lengths, np.int64) - span + 1, 0)
  return counts, np.cumsum(counts)


def plan_batch(clip_starts, clip_lengths, span: int, batch_size: int,
               seed: int, step: int, augment: Augment = Augment(),
               start_share: float = 0.0) -> Plan:
  """Draws a batch's crops (uniform over all crops that stay inside a clip).

  A pure function of its arguments; `step` may be any non-negative integer
  (evaluation uses its own range of steps). With `start_share`, each crop
  is instead, with that probability, one that ends at a uniformly drawn
  frame among its clip's first span - 1 (padded with the clip's first frame).
  """
  counts, cumulative = valid_starts(clip_starts, clip_lengths, span)
  total = int(cumulative[-1]) if len(cumulative) else 0
  if total == 0:
    raise WindowError(f"no clip has the {span} frames a window needs "
                     f"(longest: {max(clip_lengths, default=0)})")
  rng = np.random.default_rng([seed, step])
  flat = rng.integers(total, size=batch_size)
  clip = np.searchsorted(cumulative, flat, side="right")
  offset = flat - (cumulative[clip] - counts[clip])
  starts = np.asarray(clip_starts, np.int64)[clip] + offset
  angles = rng.uniform(0.0, 2 * np.pi, size=batch_size)
  mirror = rng.random(batch_size) < 0.5
  clip_first = None
  if start_share:
    # Drawn after the plain plan, so start_share=0 keeps its batches.
    at_start = rng.random(batch_size) < start_share
    last_row = rng.integers(span - 1, size=batch_size)
    clip_first = np.asarray(clip_starts, np.int64)[clip]
    starts = np.where(at_start, clip_first + last_row - (span - 1), starts)
  return Plan(starts=starts,
              angles=angles if augment.yaw else np.zeros(batch_size),
              mirror=mirror if augment.mirror else np.zeros(batch_size, bool),
              clip_first=clip_first)


def gather(arrays, plan: Plan, span: int, rows=slice(None)):
  """Reads the planned crops; `rows` selects this process's share of them.

  Args:
    arrays: dict with "sparse" (F, 54), "rot6d" (F, 132), "pos" (F, 66).
    plan: from plan_batch.
    span: frames per crop (T + 1).
    rows: which windows of the batch to read.
  Returns:
    dict of float32 arrays (b, span, D), augmented as planned, and
    "clip_frame" (b,) int32, the clip frame of each crop's last row.
  """
  index = plan.rows(span, rows)
  window = {k: np.asarray(arrays[k][index], np.float32)
            for k in ("sparse", "rot6d", "pos")}
  window = mirror(window, plan.mirror[rows])
  angles = plan.angles[rows]
  window = rotate_yaw(window, angles) if np.any(angles) else window
  return {**window, "clip_frame": plan.clip_frame(span, rows)}


def _yaw_matrices(angles):
  c, s = np.cos(angles), np.sin(angles)
  zero, one = np.zeros_like(c), np.ones_like(c)
  return np.stack([np.stack([c, -s, zero], -1),
                   np.stack([s, c, zero], -1),
                   np.stack([zero, zero, one], -1)], -2).astype(np.float32)


def _rotate_vectors(x, rz):
  """x (B, T, ..., 3) turned by rz (B, 3, 3)."""
  return np.einsum("bij,bt...j->bt...i", rz, x)


def _rotate_rot6d(x, rz):
  """6D rotations (B, T, K, 6) left-multiplied by rz: both columns turn."""
  cols = x.reshape(x.shape[:-1] + (2, 3))
  return _rotate_vectors(cols, rz).reshape(x.shape)


def rotate_yaw(window, angles):
  """Turns the world of each window by its angle (radians) about Z."""
  rz = _yaw_matrices(np.asarray(angles))
  sparse = window["sparse"].copy()
  b, t = sparse.shape[:2]
  sparse[..., _SPARSE_ROT] = _rotate_rot6d(
      sparse[..., _SPARSE_ROT].reshape(b, t, SPARSE_JOINTS, 6), rz
  ).reshape(b, t, -1)
  for block in (_SPARSE_POS, _SPARSE_DELTA):
    sparse[..., block] = _rotate_vectors(
        sparse[..., block].reshape(b, t, SPARSE_JOINTS, 3), rz
    ).reshape(b, t, -1)
  rot6d = window["rot6d"].copy()
  rot6d[..., :6] = _rotate_rot6d(rot6d[..., None, :6], rz)[..., 0, :]
  pos = _rotate_vectors(window["pos"].reshape(b, t, NUM_JOINTS, 3), rz)
  return {"sparse": sparse, "rot6d": rot6d, "pos": pos.reshape(b, t, -1)}


def _mirror_rot6d(x, perm):
  """(B, T, K*6) -> joints permuted, each R -> S R S."""
  shape = x.shape
  x = x.reshape(shape[:-1] + (len(perm), 6))[..., perm, :]
  return (x * _ROT6D_MIRROR_SIGN).reshape(shape)


def _mirror_vectors(x, perm):
  """(B, T, K*3) -> joints permuted, x coordinate negated."""
  shape = x.shape
  x = x.reshape(shape[:-1] + (len(perm), 3))[..., perm, :]
  return (x * np.array([-1, 1, 1], np.float32)).reshape(shape)


def mirror(window, flags):
  """Mirrors the windows whose flag is set (see the module docstring)."""
  flags = np.asarray(flags, bool)
  if not flags.any():
    return window
  sparse = window["sparse"]
  mirrored_sparse = np.concatenate([
      _mirror_rot6d(sparse[..., _SPARSE_ROT], _SPARSE_MIRROR),
      _mirror_rot6d(sparse[..., _SPARSE_ROT_VEL], _SPARSE_MIRROR),
      _mirror_vectors(sparse[..., _SPARSE_POS], _SPARSE_MIRROR),
      _mirror_vectors(sparse[..., _SPARSE_DELTA], _SPARSE_MIRROR)], -1)
  mirrored = {"sparse": mirrored_sparse,
              "rot6d": _mirror_rot6d(window["rot6d"], _JOINT_MIRROR),
              "pos": _mirror_vectors(window["pos"], _JOINT_MIRROR)}
  pick = flags[:, None, None]
  return {k: np.where(pick, mirrored[k], window[k]) for k in window}


WINDOW_KEYS = ("sparse", "rot6d", "pos")


def windows(batch, window: int):
  """(B, T+H, D) crops -> H+1 windows of T frames, oldest first."""
  span = batch["sparse"].shape[1]
  return [{k: batch[k][:, first:first + window] for k in WINDOW_KEYS}
          for first in range(span - window + 1)]


def split_window(batch):
  """(B, T+1, D) crops -> the model's current window and its previous one."""
  previous, current = windows(batch, batch["sparse"].shape[1] - 1)
  return current, previous


class WindowSampler:
  """Batches of augmented T+1-frame crops of one prepared split.

  `batch(step)` depends only on (seed, step), never on earlier calls.
  """

  def __init__(self, split, window: int, batch_size: int, seed: int,
               augment: Augment = Augment(), history: int = 1,
               start_share: float = 0.0):
    if history < 1 or not 0.0 <= start_share <= 1.0:
      raise ValueError(f"history must be >= 1 and start_share in [0, 1], "
                       f"got {history} and {start_share}")
    self.arrays = {"sparse": split.sparse, "rot6d": split.rot6d,
                   "pos": split.pos}
    self.clip_starts = np.array([c.start for c in split.clips], np.int64)
    self.clip_lengths = np.array([c.length for c in split.clips], np.int64)
    self.span = window + history
    self.batch_size = batch_size
    self.seed = seed
    self.augment = augment
    self.start_share = start_share
    plan_batch(self.clip_starts, self.clip_lengths, self.span, 1, seed, 0)

  def plan(self, step: int) -> Plan:
    return plan_batch(self.clip_starts, self.clip_lengths, self.span,
                      self.batch_size, self.seed, step, self.augment,
                      self.start_share)

  def batch(self, step: int, rows=slice(None)):
    """The crops (B, T+H, D) of `step`, or the `rows` share of them."""
    return gather(self.arrays, self.plan(step), self.span, rows)
