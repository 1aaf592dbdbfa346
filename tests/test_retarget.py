"""Retargeting (docs/design.md §2) on sources whose right answer is known."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from memmlp_jax import geometry
from memmlp_jax import retarget
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import motion as motion_lib

NAMES = skeleton_lib.JOINT_NAMES
IDENTITY_MAP = {n: n for n in NAMES}


def _random_locals(frames, seed=0, max_angle=0.8):
  rng = np.random.default_rng(seed)
  aa = rng.normal(size=(frames, len(NAMES), 3))
  aa *= max_angle * rng.uniform(size=(frames, len(NAMES), 1)) / np.linalg.norm(
      aa, axis=-1, keepdims=True)
  return geometry.axis_angle_to_matrix(aa)


def _canonical_source(frames=5, up="y", fps=60.0):
  """The canonical body itself as a source (Y up), or the same turned Z-up."""
  local = _random_locals(frames)
  translation = np.random.default_rng(1).normal(size=(frames, 3))
  skeleton = skeleton_lib.SMPL_NEUTRAL
  if up == "z":
    turn = skeleton_lib.Y_UP_TO_Z_UP
    skeleton = skeleton_lib.Skeleton(NAMES, skeleton.parents,
                                     skeleton.offsets @ turn.T)
    local = turn @ local @ turn.T
    translation = translation @ turn.T
  return retarget.SourceMotion(skeleton, local, translation, fps, up)


def _retarget(source, joint_map=IDENTITY_MAP):
  return retarget.retarget(source, joint_map, clip_id="t/clip", subject="t/s",
                           source_name="t", path="clip.test", fps=source.fps)


def test_canonical_body_as_source_is_unchanged():
  source = _canonical_source()
  motion = _retarget(source)
  plan = retarget.make_plan(source.skeleton, IDENTITY_MAP, "y", "x")
  np.testing.assert_allclose(plan.alignments, np.tile(np.eye(3), (22, 1, 1)),
                             atol=1e-12)
  assert plan.scale == pytest.approx(1.0)
  np.testing.assert_allclose(motion.local_rotations[:, 1:],
                             source.local_rotations[:, 1:], atol=1e-12)
  np.testing.assert_allclose(
      motion.local_rotations[:, 0],
      skeleton_lib.Y_UP_TO_Z_UP @ source.local_rotations[:, 0], atol=1e-12)
  _, source_points = source.world_pose()
  _, points = motion.global_pose()
  np.testing.assert_allclose(points, source_points, atol=1e-12)


def test_z_up_source_gives_the_same_motion():
  y_up = _retarget(_canonical_source(up="y"))
  z_up = _retarget(_canonical_source(up="z"))
  np.testing.assert_allclose(z_up.local_rotations, y_up.local_rotations,
                             atol=1e-9)
  np.testing.assert_allclose(z_up.root_translation, y_up.root_translation,
                             atol=1e-9)


def test_scaled_source_scales_translation_not_rotations():
  source = _canonical_source()
  big = retarget.SourceMotion(source.skeleton.scaled(1.3),
                              source.local_rotations,
                              source.root_translation * 1.3, source.fps, "y")
  plain, scaled = _retarget(source), _retarget(big)
  np.testing.assert_allclose(scaled.local_rotations, plain.local_rotations,
                             atol=1e-12)
  np.testing.assert_allclose(scaled.global_pose()[1], plain.global_pose()[1],
                             atol=1e-12)


def test_null_joint_gets_identity_and_its_child_keeps_direction():
  # A source with a stiff spine2, as a two-joint spine behaves.
  source = _canonical_source()
  spine1, spine2, spine3 = (NAMES.index(n) for n in ("spine1", "spine2",
                                                     "spine3"))
  source.local_rotations[:, spine2] = np.eye(3)
  joint_map = dict(IDENTITY_MAP, spine2=None)
  motion = _retarget(source, joint_map)
  np.testing.assert_allclose(motion.local_rotations[:, spine2],
                             np.tile(np.eye(3), (5, 1, 1)), atol=1e-12)
  plan = retarget.make_plan(source.skeleton, joint_map, "y", "x")
  assert plan.targets[spine1] == (spine3,)
  angles = retarget.bone_angles(motion, source, plan)
  assert angles[(spine1, spine3)].max() < 1e-5


def test_resampling_to_60_fps_uses_slerp():
  source = _canonical_source(frames=4, fps=30.0)
  motion = retarget.retarget(source, IDENTITY_MAP, clip_id="t/c",
                             subject="t/s", source_name="t", path="clip.test")
  assert motion.fps == 60.0 and motion.num_frames == 7
  halfway = Rotation.from_matrix(source.local_rotations[:2, 5])
  expected = (halfway[0] * (halfway[0].inv() * halfway[1]) ** 0.5).as_matrix()
  np.testing.assert_allclose(motion.local_rotations[1, 5], expected, atol=1e-9)


def test_coincident_child_is_left_out_of_the_alignment():
  # Collars moved onto spine3 (as CMU's clavicles start at the thorax end).
  offsets = skeleton_lib.SMPL_NEUTRAL.offsets.copy()
  for name in ("left_collar", "right_collar"):
    j = NAMES.index(name)
    offsets[skeleton_lib.SMPL_NEUTRAL.children(j)[0]] += offsets[j]
    offsets[j] = 0.0
  skeleton = skeleton_lib.Skeleton(NAMES, skeleton_lib.PARENTS, offsets)
  plan = retarget.make_plan(skeleton, IDENTITY_MAP, "y", "x")
  assert plan.targets[NAMES.index("spine3")] == (NAMES.index("neck"),)


@pytest.mark.parametrize("change, problem", [
    ({"spine9": "x"}, "unknown canonical joint"),
    ({"head": "neck"}, "both mapped to source joint 'neck'"),
    ({"pelvis": None}, "must map ['pelvis']"),
    ({"head": 3}, "must be a joint name or null"),
])
def test_bad_joint_maps(change, problem):
  joint_map = dict(IDENTITY_MAP, **change)
  with pytest.raises(motion_lib.MotionError, match="map.json") as info:
    retarget.check_joint_map(joint_map, "map.json")
  assert problem in str(info.value)


def test_missing_canonical_joint_and_unknown_source_joint():
  joint_map = dict(IDENTITY_MAP)
  del joint_map["neck"]
  with pytest.raises(motion_lib.MotionError, match="lacks canonical"):
    retarget.check_joint_map(joint_map, "map.json")
  with pytest.raises(motion_lib.MotionError, match="'Noggin'"):
    retarget.make_plan(skeleton_lib.SMPL_NEUTRAL,
                       dict(IDENTITY_MAP, head="Noggin"), "y", "a.bvh")


def test_nan_source_is_rejected_naming_the_file():
  source = _canonical_source()
  source.root_translation[2, 0] = np.nan
  with pytest.raises(motion_lib.MotionError, match="clip.test.*NaN"):
    _retarget(source)
