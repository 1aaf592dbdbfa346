"""Hand-computed cases for AGRoL's metrics."""

import numpy as np
import pytest

from memmlp_jax import geometry
from memmlp_jax import metrics
from memmlp_jax import skeleton

BODY = skeleton.SMPL_NEUTRAL
IDENTITY_6D = np.tile([1.0, 0, 0, 0, 1, 0], 22)


def _rest(frames=6, head=(0.3, -0.2, 1.6)):
  """Identity rotations, the head tracked at ``head``: (rot6d, positions)."""
  rot6d = np.tile(IDENTITY_6D, (frames, 1))
  rest = BODY.rest_positions()
  positions = rest - rest[15] + np.asarray(head)
  return rot6d, np.tile(positions, (frames, 1, 1))


def _about_z(angle):
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _metrics(pred_rot6d, gt_rot6d, gt_positions):
  return metrics.sequence_metrics(pred_rot6d, gt_rot6d, gt_positions,
                                  gt_positions[:, 15], BODY)


def test_perfect_prediction_is_zero_error():
  rot6d, positions = _rest()
  result = _metrics(rot6d, rot6d, positions)
  for key in metrics.COLUMNS[:-1]:
    assert result[key] == pytest.approx(0.0, abs=1e-9), key
  assert result["jitter"] == pytest.approx(0.0, abs=1e-9)


def test_head_alignment_places_the_head_on_the_tracker():
  rot6d, positions = _rest(head=(1.0, 2.0, 1.5))
  placed = metrics.head_aligned_positions(rot6d, positions[:, 15], BODY)
  np.testing.assert_allclose(placed, positions, atol=1e-12)


def test_mpjre_one_joint_turned():
  rot6d, positions = _rest()
  pred = rot6d.copy()
  # Left knee (joint 4) turned by 0.63 rad about z: one axis-angle component
  # of the 63 (joints 1..21 x 3) differs by 0.63 -> mean 0.01 rad.
  pred[:, 4 * 6:5 * 6] = geometry.matrix_to_rot6d(_about_z(0.63))
  result = metrics.sequence_metrics(pred, rot6d, positions,
                                    positions[:, 15], BODY)
  assert result["mpjre"] == pytest.approx(np.degrees(0.01), rel=1e-6)


def test_mpjre_ignores_the_root():
  rot6d, positions = _rest()
  pred = rot6d.copy()
  pred[:, :6] = geometry.matrix_to_rot6d(_about_z(1.0))
  assert metrics.wrapped_rotation_error(pred, rot6d) == pytest.approx(0.0)


def test_mpjre_wraps_differences():
  gt = np.tile(IDENTITY_6D, (2, 1))
  pred = gt.copy()
  # Joint 1 at +3.0 rad (gt) and -3.0 rad (pred) about z: raw difference
  # 6.0, wrapped 6.0 - 2 pi; mean over the 63 components.
  gt[:, 6:12] = geometry.matrix_to_rot6d(_about_z(3.0))
  pred[:, 6:12] = geometry.matrix_to_rot6d(_about_z(-3.0))
  expected = (2 * np.pi - 6.0) / 63
  assert metrics.wrapped_rotation_error(pred, gt) == pytest.approx(expected)


def test_position_errors_by_group():
  rot6d, positions = _rest()
  gt = positions.copy()
  gt[:, 0, 0] += 0.03  # the pelvis 3 cm off; everything else exact
  result = _metrics(rot6d, rot6d, gt)
  assert result["mpjpe"] == pytest.approx(3.0 / 22)
  assert result["root_pe"] == pytest.approx(3.0)
  assert result["lower_pe"] == pytest.approx(3.0 / 9)  # pelvis is lower body
  assert result["upper_pe"] == pytest.approx(0.0, abs=1e-9)
  assert result["hand_pe"] == pytest.approx(0.0, abs=1e-9)
  assert result["mpjve"] == pytest.approx(0.0, abs=1e-9)
  np.testing.assert_allclose(result["per_joint"],
                             np.eye(22)[0] * 3.0, atol=1e-9)


def test_hand_error():
  rot6d, positions = _rest()
  gt = positions.copy()
  gt[:, 20, 1] += 0.04
  gt[:, 21, 2] -= 0.02
  result = _metrics(rot6d, rot6d, gt)
  assert result["hand_pe"] == pytest.approx(3.0)
  assert result["upper_pe"] == pytest.approx(6.0 / 13)


def test_mpjve_from_a_drifting_joint():
  rot6d, positions = _rest(frames=10)
  gt = positions.copy()
  # The pelvis of the ground truth drifts 1 cm per frame: 60 cm/s of
  # velocity error on one of 22 joints.
  gt[:, 0, 0] += 0.01 * np.arange(10)
  result = _metrics(rot6d, rot6d, gt)
  assert result["mpjve"] == pytest.approx(60.0 / 22)


def test_jitter_of_a_cubic_trajectory():
  frames = np.arange(8, dtype=np.float64)
  positions = np.zeros((8, 22, 3))
  positions[..., 0] = 1e-6 * frames[:, None] ** 3
  # Third difference of a t^3 per frame is 6 a; times fps^3 -> m/s^3.
  assert metrics.jitter(positions) == pytest.approx(6e-6 * 60 ** 3)
  rot6d, rest = _rest(frames=8)
  result = _metrics(rot6d, rot6d, rest + positions)
  assert result["gt_jitter"] == pytest.approx(6e-6 * 60 ** 3 / 100)
  # The prediction follows the tracked head, which moves the same way.
  assert result["jitter"] == pytest.approx(6e-6 * 60 ** 3 / 100)


def test_average_is_per_sequence():
  short = {k: 1.0 for k in metrics.COLUMNS + ("gt_jitter",)}
  long = {k: 3.0 for k in metrics.COLUMNS + ("gt_jitter",)}
  assert metrics.average([short, long])["mpjpe"] == 2.0
  with pytest.raises(ValueError, match="no sequences"):
    metrics.average([])


def test_too_short_sequence_is_rejected():
  rot6d, positions = _rest(frames=3)
  with pytest.raises(ValueError, match="at least 4 frames"):
    _metrics(rot6d, rot6d, positions)


def test_markdown_table_in_paper_order():
  row = dict(zip(metrics.COLUMNS, range(8)))
  table = metrics.markdown_table({"memmlp41": row})
  lines = table.splitlines()
  assert lines[0].startswith("| Method | MPJRE | MPJPE | MPJVE | Hand PE")
  assert lines[2] == ("| memmlp41 | 0.00 | 1.00 | 2.00 | 3.00 | 4.00 | 5.00 |"
                      " 6.00 | 7.00 |")
