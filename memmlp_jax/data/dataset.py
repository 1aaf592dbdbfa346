"""Training windows: random crops of prepared clips, with optional augmentation.

A batch is a pure function of (seed, step): the crop positions and the
augmentation draws come from a numpy generator keyed on (seed, step), so a run
resumed from a checkpoint sees exactly the batches it would have seen, with no
iterator state to save. Every crop has T + 1 frames because the memory block at
window t reads the window at t - 1: the model's current window is frames 1..T
and its previous window frames 0..T-1.

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
# Layout of the 54 sparse features (DESIGN 1): per block, head, left wrist,
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


def valid_starts(clip_starts, clip_lengths, span: int):
  """Per clip, how many crops of `span` frames fit, and their cumulative sum."""
  counts = np.maximum(np.asarray(clip_lengths, np.int64) - span + 1, 0)
  return counts, np.cumsum(counts)


def plan_batch(clip_starts, clip_lengths, span: int, batch_size: int,
               seed: int, step: int, augment: Augment = Augment()) -> Plan:
  """Draws a batch's crops (uniform over all crops that stay inside a clip).

  A pure function of its arguments; `step` may be any non-negative integer
  (evaluation uses its own range of steps).
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
  return Plan(starts=starts,
              angles=angles if augment.yaw else np.zeros(batch_size),
              mirror=mirror if augment.mirror else np.zeros(batch_size, bool))


def gather(arrays, plan: Plan, span: int, rows=slice(None)):
  """Reads the planned crops; `rows` selects this process's share of them.

  Args:
    arrays: dict with "sparse" (F, 54), "rot6d" (F, 132), "pos" (F, 66).
    plan: from plan_batch.
    span: frames per crop (T + 1).
    rows: which windows of the batch to read.
  Returns:
    dict of float32 arrays (b, span, D), augmented as planned.
  """
  index = plan.starts[rows, None] + np.arange(span)
  window = {k: np.asarray(arrays[k][index], np.float32)
            for k in ("sparse", "rot6d", "pos")}
  window = mirror(window, plan.mirror[rows])
  angles = plan.angles[rows]
  return rotate_yaw(window, angles) if np.any(angles) else window


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


def split_window(batch):
  """(B, T+1, D) crops -> the model's current window and its previous one."""
  current = {k: v[:, 1:] for k, v in batch.items()}
  previous = {k: v[:, :-1] for k, v in batch.items()}
  return current, previous


class WindowSampler:
  """Batches of augmented T+1-frame crops of one prepared split.

  `batch(step)` depends only on (seed, step), never on earlier calls.
  """

  def __init__(self, split, window: int, batch_size: int, seed: int,
               augment: Augment = Augment()):
    self.arrays = {"sparse": split.sparse, "rot6d": split.rot6d,
                   "pos": split.pos}
    self.clip_starts = np.array([c.start for c in split.clips], np.int64)
    self.clip_lengths = np.array([c.length for c in split.clips], np.int64)
    self.span = window + 1
    self.batch_size = batch_size
    self.seed = seed
    self.augment = augment
    plan_batch(self.clip_starts, self.clip_lengths, self.span, 1, seed, 0)

  def plan(self, step: int) -> Plan:
    return plan_batch(self.clip_starts, self.clip_lengths, self.span,
                      self.batch_size, self.seed, step, self.augment)

  def batch(self, step: int, rows=slice(None)):
    """The crops (B, T+1, D) of `step`, or the `rows` share of them."""
    return gather(self.arrays, self.plan(step), self.span, rows)
