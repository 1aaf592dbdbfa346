"""Two-bone IK pins the wrists: exact where reachable, never stretched,
elbow plane kept, smooth across tracking loss."""

import numpy as np
import pytest

from memmlp_jax import geometry
from memmlp_jax import hand_ik
from memmlp_jax import skeleton as skeleton_lib

BODY = skeleton_lib.SMPL_NEUTRAL
ARM_LENGTH = [np.linalg.norm(BODY.offsets[[e, w]], axis=-1).sum()
              for _, e, w in hand_ik.ARMS]


def _pose(rng, frames=40):
  local = geometry.axis_angle_to_matrix(rng.normal(scale=0.4,
                                                   size=(frames, 22, 3)))
  return local, rng.normal(size=(frames, 3))


def _fk(local, root):
  return geometry.forward_kinematics(local, root, BODY.parents, BODY.offsets)


def test_reachable_targets_are_met_in_position_and_orientation():
  rng = np.random.default_rng(0)
  local, root = _pose(rng)
  _, joints = _fk(local, root)
  targets = joints[:, [16, 17]] + rng.normal(scale=0.15, size=(40, 2, 3))
  assert (np.linalg.norm(targets - joints[:, [16, 17]], axis=-1)
          < min(ARM_LENGTH)).all()
  orientations = geometry.axis_angle_to_matrix(rng.normal(size=(40, 2, 3)))
  pinned = hand_ik.pin_hands(local, root, targets, orientations,
                             np.ones((40, 2)), BODY)
  rotations, moved = _fk(pinned, root)
  np.testing.assert_allclose(moved[:, [20, 21]], targets, atol=1e-9)
  np.testing.assert_allclose(rotations[:, [20, 21]], orientations, atol=1e-9)
  # Only the arms changed (not the collars: no target is out of reach),
  # and the elbow stayed in the model's plane.
  changed = np.abs(pinned - local).max(axis=(0, 2, 3)) > 1e-9
  assert set(np.flatnonzero(changed)) <= {16, 17, 18, 19, 20, 21}
  for side, (s, e, _) in enumerate(hand_ik.ARMS):
    normal = np.cross(joints[:, e] - joints[:, s], targets[:, side]
                      - joints[:, s])
    offset = np.sum(normal * (moved[:, e] - joints[:, s]), -1)
    np.testing.assert_allclose(offset, 0.0, atol=1e-9)


def test_a_target_out_of_reach_shrugs_then_points_the_straight_arm_at_it():
  rng = np.random.default_rng(1)
  local, root = _pose(rng, 10)
  _, joints = _fk(local, root)
  direction = rng.normal(size=(10, 2, 3))
  direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
  targets = joints[:, [16, 17]] + 2.0 * direction
  pinned = hand_ik.pin_hands(local, root, targets, np.tile(
      np.eye(3), (10, 2, 1, 1)), np.ones((10, 2)), BODY)
  _, moved = _fk(pinned, root)
  reach = moved[:, [20, 21]] - moved[:, [16, 17]]
  np.testing.assert_allclose(np.linalg.norm(reach, axis=-1),
                             np.broadcast_to(ARM_LENGTH, (10, 2)), atol=1e-9)
  toward = targets - moved[:, [16, 17]]
  np.testing.assert_allclose(
      reach / np.linalg.norm(reach, axis=-1, keepdims=True),
      toward / np.linalg.norm(toward, axis=-1, keepdims=True), atol=1e-9)
  # The collar turned toward the target, by at most MAX_SHRUG: the hand
  # got closer than the arm alone could bring it.
  turned = geometry.matrix_to_axis_angle(
      np.swapaxes(local[:, [13, 14]], -1, -2) @ pinned[:, [13, 14]])
  assert (np.linalg.norm(turned, axis=-1) <= hand_ik.MAX_SHRUG + 1e-9).all()
  assert (np.linalg.norm(turned, axis=-1) > 0.1).all()
  assert (np.linalg.norm(targets - moved[:, [20, 21]], axis=-1)
          < 2.0 - np.asarray(ARM_LENGTH)).all()


def test_weight_zero_leaves_the_pose_and_ignores_nan_targets():
  local, root = _pose(np.random.default_rng(2), 5)
  nan = np.full((5, 2, 3), np.nan)
  pinned = hand_ik.pin_hands(local, root, nan, np.full((5, 2, 3, 3), np.nan),
                             np.zeros((5, 2)), BODY)
  np.testing.assert_array_equal(pinned, local)


def test_weights_fade_out_over_tracking_loss_and_back():
  valid = np.ones((60, 2), bool)
  valid[20:40, 0] = False
  weights = hand_ik.pin_weights(valid, fps=60.0)
  step = 1.0 / (hand_ik.RAMP_SECONDS * 60.0)
  assert np.abs(np.diff(weights, axis=0)).max() <= step + 1e-12
  np.testing.assert_array_equal(weights[:, 1], 1.0)
  assert weights[19, 0] == 1.0 and weights[39, 0] == 0.0
  assert weights[59, 0] == 1.0


def test_pinned_sequence_is_smooth_across_a_lost_hand():
  rng = np.random.default_rng(3)
  frames = 60
  # A slowly turning body; the tracked wrists wander off its own.
  angle = np.linspace(0.0, 0.5, frames)
  local = np.tile(np.eye(3), (frames, 22, 1, 1))
  local[:, 0] = geometry.axis_angle_to_matrix(
      np.stack([angle, 0 * angle, 0 * angle], -1)) @ skeleton_lib.Y_UP_TO_Z_UP
  rot6d = geometry.matrix_to_rot6d(local).reshape(frames, -1)
  rotations, joints = _fk(local, np.zeros((frames, 3)))
  # Bent arms (the wrists 15% nearer the shoulders) moving up and down.
  tracked_pos = joints[:, [15, 20, 21]].copy()
  tracked_pos[:, 1:] = (joints[:, [16, 17]] + 0.85 * (
      joints[:, [20, 21]] - joints[:, [16, 17]])
                        + [0, 0, 0.1] * np.sin(4 * angle)[:, None, None])
  tracked_rot = rotations[:, [15, 20, 21]]
  tracked_pos[25:35, 2] = np.nan  # the right controller is lost
  tracked_rot[25:35, 2] = np.nan
  pinned = hand_ik.pin_sequence(rot6d, tracked_rot, tracked_pos, BODY)
  _, moved = _fk(geometry.rot6d_to_matrix(pinned.reshape(frames, -1, 6)),
                 np.zeros((frames, 3)))
  right = moved[:, 21] + (joints[:, 15] - moved[:, 15])
  valid = np.isfinite(tracked_pos[:, 2]).all(-1)
  np.testing.assert_allclose(right[valid][:20], tracked_pos[valid, 2][:20],
                             atol=1e-9)
  # No jump anywhere: frame-to-frame wrist motion stays that of the input.
  steps = np.linalg.norm(np.diff(right, axis=0), axis=-1)
  assert steps.max() < 0.02


def test_evaluate_pin_hands_moves_only_the_arms_onto_the_tracked_wrists(
    random_run, small_free):
  from memmlp_jax import checkpoints
  from memmlp_jax import evaluation
  data_dir, prepared_dir = small_free
  clips, skeleton = evaluation.protocol_clips("free", data_dir, prepared_dir,
                                              fetch_missing=False)
  clips = clips[:2]
  cfg, params = checkpoints.restore(str(random_run))
  free, _ = evaluation.evaluate(cfg, params, clips, skeleton, lanes=2)
  pinned, _ = evaluation.evaluate(cfg, params, clips, skeleton,
                                  pin_hands=True, lanes=2)
  assert pinned["pin_hands"] and "hands pinned" in pinned["mode"]
  assert pinned["hand_pe"] < 0.5 * free["hand_pe"]
  # Only collars, shoulders, elbows and wrists turn: legs and root stay.
  assert pinned["lower_pe"] == pytest.approx(free["lower_pe"], abs=1e-6)
  assert pinned["root_pe"] == pytest.approx(free["root_pe"], abs=1e-6)
