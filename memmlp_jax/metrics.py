"""The evaluation metrics of AGRoL, with its exact conventions (docs/design.md §5).

Published tables (AGRoL, AvatarPoser, Mem-MLP) all compute:
- predicted joint positions by forward kinematics of the predicted rotations
  with zero root translation, then translated so the predicted head equals
  the tracked head (the model predicts no root translation);
- MPJRE over the axis-angle components of joints 1..21, each difference
  wrapped to [-pi, pi] (the root orientation is excluded);
- every metric per sequence, then the plain mean over sequences (a long clip
  counts as much as a short one), at 60 fps.

Units: MPJRE degrees; position errors cm; MPJVE cm/s; jitter 10^2 m/s^3.
"""

from typing import Mapping, Sequence

import numpy as np

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib

FPS = 60.0
HEAD = 15
# The results keys, in the column order of the paper's tables.
COLUMNS = ("mpjre", "mpjpe", "mpjve", "hand_pe", "upper_pe", "lower_pe",
           "root_pe", "jitter")
HEADERS = {"mpjre": "MPJRE", "mpjpe": "MPJPE", "mpjve": "MPJVE",
           "hand_pe": "Hand PE", "upper_pe": "Upper PE",
           "lower_pe": "Lower PE", "root_pe": "Root PE", "jitter": "Jitter",
           "gt_jitter": "GT Jitter"}
MIN_FRAMES = 4  # the third difference of jitter needs four frames


def head_aligned_positions(rot6d, head_position, skeleton):
  """Joint positions of predicted rotations, placed by the tracked head.

  Args:
    rot6d: (N, 132) local rotations of the 22 joints as 6D.
    head_position: (N, 3) tracked head position in the world.
    skeleton: the body (``parents``, ``offsets``) the targets were made on.

  Returns:
    (N, 22, 3) positions: FK with zero root translation, shifted so that
    joint 15 (head) sits at ``head_position``.
  """
  rotations = geometry.rot6d_to_matrix(_joints6d(rot6d))
  zeros = np.zeros(rotations.shape[:-3] + (3,), rotations.dtype)
  _, positions = geometry.forward_kinematics(
      rotations, zeros, skeleton.parents, skeleton.offsets)
  return positions + (head_position - positions[..., HEAD, :])[..., None, :]


def _joints6d(rot6d):
  return rot6d.reshape(rot6d.shape[:-1] + (-1, 6))


def _axis_angle(rot6d):
  """Axis-angle of joints 1..21 from 6D, Gram-Schmidt as AGRoL does."""
  rotations = geometry.rot6d_to_matrix(_joints6d(rot6d).astype(np.float64))
  return geometry.matrix_to_axis_angle(rotations)[..., 1:22, :]


def wrapped_rotation_error(pred_rot6d, gt_rot6d):
  """Mean |axis-angle component difference| (radians), wrapped as AGRoL."""
  diff = _axis_angle(gt_rot6d) - _axis_angle(pred_rot6d)
  diff = np.where(diff > np.pi, diff - 2 * np.pi, diff)
  diff = np.where(diff < -np.pi, diff + 2 * np.pi, diff)
  return float(np.mean(np.abs(diff)))


def jitter(positions, fps: float = FPS):
  """Mean norm of the third difference x fps^3 (m/s^3) of (N, J, 3)."""
  third = (positions[3:] - 3 * positions[2:-1] + 3 * positions[1:-2]
           - positions[:-3]) * fps ** 3
  return float(np.mean(np.linalg.norm(third, axis=-1)))


def sequence_metrics(pred_rot6d, gt_rot6d, gt_positions, head_position,
                     skeleton, fps: float = FPS) -> dict:
  """All metrics of one sequence.

  Args:
    pred_rot6d: (N, 132) predicted local rotations (6D, any scale: they are
      orthonormalised).
    gt_rot6d: (N, 132) ground-truth local rotations.
    gt_positions: (N, 66) or (N, 22, 3) ground-truth global joint positions.
    head_position: (N, 3) the tracked head (the sparse input's head).
    skeleton: body with ``parents`` and ``offsets``.
    fps: frame rate of the sequence.

  Returns:
    dict of floats in the module's units (the COLUMNS and ``gt_jitter``) and
    ``per_joint``, the (22,) mean position error of each joint in cm.
  """
  num_frames = len(pred_rot6d)
  if num_frames < MIN_FRAMES:
    raise ValueError(f"a sequence needs at least {MIN_FRAMES} frames for "
                     f"the velocity metrics, got {num_frames}")
  gt = np.asarray(gt_positions, np.float64).reshape(num_frames, -1, 3)
  pred = head_aligned_positions(np.asarray(pred_rot6d, np.float64),
                                np.asarray(head_position, np.float64),
                                skeleton)
  error = np.linalg.norm(pred - gt, axis=-1)  # (N, 22) metres
  velocity_error = np.linalg.norm(np.diff(pred, axis=0) - np.diff(gt, axis=0),
                                  axis=-1) * fps
  to_cm = 100.0
  return {
      "mpjre": float(np.degrees(wrapped_rotation_error(pred_rot6d,
                                                      gt_rot6d))),
      "mpjpe": float(np.mean(error)) * to_cm,
      "mpjve": float(np.mean(velocity_error)) * to_cm,
      "hand_pe": float(np.mean(error[:, list(skeleton_lib.HANDS)])) * to_cm,
      "upper_pe": float(np.mean(error[:, list(skeleton_lib.UPPER)])) * to_cm,
      "lower_pe": float(np.mean(error[:, list(skeleton_lib.LOWER)])) * to_cm,
      "root_pe": float(np.mean(error[:, 0])) * to_cm,
      "jitter": jitter(pred, fps) / 100.0,
      "gt_jitter": jitter(gt, fps) / 100.0,
      "per_joint": np.mean(error, axis=0) * to_cm,
  }


def average(per_sequence: Sequence[Mapping]) -> dict:
  """Plain mean over sequences of every scalar metric (AGRoL's averaging)."""
  if not per_sequence:
    raise ValueError("no sequences to average")
  keys = COLUMNS + ("gt_jitter",)
  return {k: float(np.mean([m[k] for m in per_sequence])) for k in keys}


# Differences each metric averages over in a sequence of N frames, minus N:
# the velocity error has N - 1, jitter's third difference N - 3.
_LOST_FRAMES = {"mpjve": 1, "jitter": 3, "gt_jitter": 3}


def frame_weighted(per_sequence: Sequence[Mapping]) -> dict:
  """Every metric pooled over all frames (each row needs "frames").

  AGRoL's per-sequence mean lets a 100-frame clip count as much as a
  10,000-frame one; this is the mean over every frame (every difference for
  MPJVE and jitter) of the test set instead.
  """
  if not per_sequence:
    raise ValueError("no sequences to average")
  result = {}
  for key in COLUMNS + ("gt_jitter",):
    weights = np.array([m["frames"] - _LOST_FRAMES.get(key, 0)
                        for m in per_sequence], np.float64)
    values = np.array([m[key] for m in per_sequence], np.float64)
    result[key] = float(np.sum(weights * values) / np.sum(weights))
  return result


def markdown_table(rows: Mapping[str, Mapping], columns=COLUMNS) -> str:
  """A Markdown table, one row per named result, in the paper's order."""
  header = "| Method | " + " | ".join(HEADERS[c] for c in columns) + " |"
  rule = "| --- |" + " --- |" * len(columns)
  lines = [header, rule]
  for name, result in rows.items():
    cells = " | ".join(f"{result[c]:.2f}" for c in columns)
    lines.append(f"| {name} | {cells} |")
  return "\n".join(lines)
