"""Tests for memmlp_jax.data.amass on written AMASS/SMPL-H look-alike files."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import amass
from memmlp_jax.data import motion as motion_lib
import synthetic_amass as synth


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
  root = tmp_path_factory.mktemp("smplh")
  return synth.write_body_model(root / "male" / "model.npz")


@pytest.fixture(scope="module")
def body(model_path):
  return amass.load_body_model(model_path)


def _clip(tmp_path, name="CMU/01/01_02_poses.npz", **kwargs):
  return synth.write_clip(tmp_path / name, **kwargs)


def test_body_model_rest_joints_and_parents(model_path, body):
  np.testing.assert_allclose(body.rest_positions(), synth.rest_joints()[:22],
                             atol=1e-12)
  assert body.parents == skeleton_lib.PARENTS
  assert body.names == skeleton_lib.JOINT_NAMES
  # The SMPL-H download's folder works as well as the file.
  from_folder = amass.load_body_model(model_path.parent.parent)
  assert from_folder.same_as(body)


def test_120fps_keeps_every_second_frame(tmp_path, body):
  path = _clip(tmp_path, num_frames=41, fps=120.0)
  raw = np.load(path)
  motion = amass.load_amass(path, body)
  assert motion.fps == 60.0 and motion.num_frames == 21
  expected = Rotation.from_rotvec(
      raw["poses"][::2, :66].reshape(-1, 3)).as_matrix().reshape(21, 22, 3, 3)
  np.testing.assert_allclose(motion.local_rotations, expected, atol=1e-12)
  np.testing.assert_allclose(motion.root_translation, raw["trans"][::2])
  assert motion.clip_id == "amass/CMU/01/01_02"
  assert motion.subject == "amass/CMU/01"
  assert motion.source == "amass" and motion.skeleton is body


def test_60fps_keeps_every_frame(tmp_path, body):
  path = _clip(tmp_path, num_frames=17, fps=60.0)
  motion = amass.load_amass(path, body)
  assert motion.num_frames == 17
  np.testing.assert_allclose(motion.root_translation, np.load(path)["trans"])


@pytest.mark.parametrize("fps", [100.0, 50.0, 59.94])
def test_other_rates_are_slerp_resampled_not_strided(tmp_path, body, fps):
  num = 50
  path = _clip(tmp_path, num_frames=num, fps=fps)
  raw = np.load(path)
  motion = amass.load_amass(path, body)
  src_times = np.arange(num) / fps
  expected_frames = int(np.floor((num - 1) / fps * 60 + 1e-6)) + 1
  assert motion.num_frames == expected_frames
  dst_times = np.arange(expected_frames) / 60.0
  for j in (0, 5, 21):
    rots = Rotation.from_rotvec(raw["poses"][:, 3 * j:3 * j + 3])
    expected = Slerp(src_times, rots)(dst_times).as_matrix()
    np.testing.assert_allclose(motion.local_rotations[:, j], expected,
                               atol=1e-9)
  for axis in range(3):
    np.testing.assert_allclose(
        motion.root_translation[:, axis],
        np.interp(dst_times, src_times, raw["trans"][:, axis]), atol=1e-12)


def test_root_sits_at_trans_plus_pelvis_and_body_is_upright(tmp_path, body):
  path = _clip(tmp_path, num_frames=20, poses=np.tile(
      np.r_[np.pi / 2, 0, 0, np.zeros(153)], (20, 1)))
  motion = amass.load_amass(path, body)
  _, positions = motion.global_pose()
  np.testing.assert_allclose(positions[:, 0],
                             motion.root_translation + body.offsets[0],
                             atol=1e-12)
  head_above_pelvis = positions[:, 15, 2] - positions[:, 0, 2]
  np.testing.assert_allclose(
      head_above_pelvis, (body.rest_positions()[15] - body.offsets[0])[1],
      atol=1e-9)
  feats = motion_lib.features(motion)
  assert feats["sparse"].shape == (9, 54)
  assert feats["rot6d"].shape == (9, 132) and feats["pos"].shape == (9, 66)


@pytest.mark.parametrize("kwargs, problem", [
    (dict(drop=("poses",)), "no 'poses' array"),
    (dict(drop=("trans",)), "no 'trans' array"),
    (dict(poses=np.zeros((40, 30))), "'poses' has shape"),
    (dict(trans=np.zeros((39, 3))), "'poses' has 40 frames but 'trans' 39"),
    (dict(drop=("mocap_framerate",)), "unknown frame rate"),
    (dict(mocap_framerate=np.array(0.0)), "unknown frame rate"),
    (dict(mocap_framerate=np.array(np.nan)), "unknown frame rate"),
    (dict(mocap_framerate=np.array("fast")), "unknown frame rate"),
    (dict(num_frames=1), "only 1 frame"),
])
def test_bad_clips_name_file_and_problem(tmp_path, body, kwargs, problem):
  path = _clip(tmp_path, **kwargs)
  with pytest.raises(motion_lib.MotionError, match=problem) as info:
    amass.load_amass(path, body)
  assert str(path) in str(info.value)


@pytest.mark.parametrize("key, frame", [("poses", 7), ("trans", 3)])
def test_nan_values_are_refused_with_their_frame(tmp_path, body, key, frame):
  values = synth.clip_arrays(40)[key]
  values[frame, 1] = np.nan
  path = _clip(tmp_path, **{key: values})
  with pytest.raises(motion_lib.MotionError,
                     match=f"'{key}' holds NaN/inf in 1 frame.*frame {frame}"
                     ) as info:
    amass.load_amass(path, body)
  assert str(path) in str(info.value)


def test_unreadable_clip(tmp_path, body):
  path = tmp_path / "broken_poses.npz"
  path.write_bytes(b"not a zip")
  with pytest.raises(motion_lib.MotionError, match="not a readable"):
    amass.load_amass(path, body)
  with pytest.raises(motion_lib.MotionError, match="not found"):
    amass.load_amass(tmp_path / "absent_poses.npz", body)


def test_bad_body_models(tmp_path):
  no_regressor = synth.write_body_model(tmp_path / "a.npz",
                                        drop=("J_regressor",))
  with pytest.raises(motion_lib.MotionError, match="lacks J_regressor"):
    amass.load_body_model(no_regressor)
  parents = synth.smplh_parents()
  parents[4] = 2
  wrong_tree = synth.write_body_model(tmp_path / "b.npz", parents=parents)
  with pytest.raises(motion_lib.MotionError, match="not the SMPL tree"):
    amass.load_body_model(wrong_tree)
  with pytest.raises(motion_lib.MotionError, match="no male/model.npz"):
    amass.load_body_model(tmp_path)
