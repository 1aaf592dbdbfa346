"""IK refinement: L-BFGS brings FK onto the target positions."""

import numpy as np
import pytest

from memmlp_jax import geometry
from memmlp_jax import ik
from memmlp_jax import metrics
from memmlp_jax import skeleton

BODY = skeleton.SMPL_NEUTRAL
LEAVES = (10, 11, 15, 20, 21)


def _random_pose(rng, frames, scale):
  axis_angle = rng.normal(scale=scale, size=(frames, 22, 3))
  return geometry.matrix_to_rot6d(
      geometry.axis_angle_to_matrix(axis_angle)).reshape(frames, 132)


def _position_error(rot6d, target, head):
  placed = metrics.head_aligned_positions(rot6d.astype(np.float64), head, BODY)
  return np.linalg.norm(placed - target.reshape(-1, 22, 3), axis=-1).mean()


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  truth = _random_pose(rng, 20, scale=0.4)
  head = rng.normal(size=(20, 3))
  target = metrics.head_aligned_positions(truth, head, BODY).reshape(20, 66)
  start = geometry.matrix_to_rot6d(
      geometry.rot6d_to_matrix(truth.reshape(20, 22, 6))
      @ geometry.axis_angle_to_matrix(rng.normal(scale=0.15, size=(20, 22, 3)))
  ).reshape(20, 132)
  return start, target, head


@pytest.mark.slow
def test_ik_moves_fk_onto_the_targets(problem):
  start, target, head = problem
  refined = ik.refine(start, target, head, BODY)
  before = _position_error(start, target, head)
  after = _position_error(refined, target, head)
  assert before > 0.02  # centimetres of error to remove
  assert after < 0.15 * before


def test_ik_output_is_orthonormal_and_keeps_leaves(problem):
  start, target, head = problem
  refined = ik.refine(start, target, head, BODY)
  rotations = geometry.rot6d_to_matrix(refined.reshape(-1, 22, 6),
                                       gram_schmidt=False)
  eye = np.broadcast_to(np.eye(3), rotations.shape)
  np.testing.assert_allclose(rotations @ np.swapaxes(rotations, -1, -2), eye,
                             atol=1e-5)
  for joint in LEAVES:
    np.testing.assert_allclose(refined[:, joint * 6:joint * 6 + 6],
                               start[:, joint * 6:joint * 6 + 6], atol=1e-5)


def test_ik_from_the_solution_stays_there(problem):
  _, target, head = problem
  rng = np.random.default_rng(0)
  truth = _random_pose(rng, 20, scale=0.4)
  refined = ik.refine(truth, target, head, BODY)
  assert _position_error(refined, target, head) < 1e-4


def test_ik_rejects_mismatched_lengths(problem):
  start, target, head = problem
  with pytest.raises(ValueError, match="differ"):
    ik.refine(start, target[:5], head, BODY)
