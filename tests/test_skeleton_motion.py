"""The canonical body and the Motion record's features."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import motion as motion_lib


def test_canonical_body_matches_published_sizes():
  skel = skeleton_lib.SMPL_NEUTRAL
  assert skel.num_joints == 22
  assert skel.parents == (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12,
                          13, 14, 16, 17, 18, 19)
  rest = skel.rest_positions()
  # ../shared/data/smpl_skeleton.md: head 1.496 m above the foot joints,
  # wrist-to-wrist span 1.365 m, left thigh 0.377 m.
  assert skel.height() == pytest.approx(1.496, abs=1e-3)
  assert np.linalg.norm(rest[20] - rest[21]) == pytest.approx(1.365, abs=1e-3)
  assert np.linalg.norm(skel.offsets[4]) == pytest.approx(0.3768, abs=1e-4)
  np.testing.assert_allclose(rest[15], [0.00498956, 0.35257241, 0.03653179],
                             atol=1e-7)
  assert sorted(skeleton_lib.UPPER + skeleton_lib.LOWER) == list(range(22))
  for j, m in enumerate(skeleton_lib.MIRROR):
    assert skeleton_lib.MIRROR[m] == j
    np.testing.assert_allclose(rest[m] * [-1, 1, 1], rest[j], atol=0.02)


def test_skeleton_rejects_bad_trees_and_roundtrips_json():
  skel = skeleton_lib.SMPL_NEUTRAL
  assert skeleton_lib.Skeleton.from_json(skel.to_json()).same_as(skel)
  assert skel.scaled(1.8 / skel.height()).height() == pytest.approx(1.8)
  with pytest.raises(ValueError, match="parents"):
    skeleton_lib.Skeleton(("a", "b"), (-1, 1), np.zeros((2, 3)))
  with pytest.raises(ValueError, match="offsets"):
    skeleton_lib.Skeleton(("a", "b"), (-1, 0), np.zeros((3, 3)))


def _random_motion(n=12, seed=0):
  rng = np.random.default_rng(seed)
  local = Rotation.random(n * 22, random_state=seed).as_matrix().reshape(
      n, 22, 3, 3)
  return motion_lib.Motion(local, rng.normal(size=(n, 3)), 60.0, "test/a",
                           "test/s", "test")


def test_features_follow_the_design_definition():
  motion = _random_motion()
  feats = motion_lib.features(motion)
  n = motion.num_frames
  assert feats["sparse"].shape == (n - 1, 54)
  assert feats["rot6d"].shape == (n - 1, 132)
  assert feats["pos"].shape == (n - 1, 66)
  g, p = motion.global_pose()
  t = 5  # feature row t-1 describes frame t
  row = feats["sparse"][t - 1]
  for k, j in enumerate((15, 20, 21)):
    np.testing.assert_allclose(row[6 * k:6 * k + 6],
                               np.concatenate([g[t, j][:, 0], g[t, j][:, 1]]),
                               atol=1e-6)
    vel = g[t - 1, j].T @ g[t, j]
    np.testing.assert_allclose(row[18 + 6 * k:24 + 6 * k],
                               np.concatenate([vel[:, 0], vel[:, 1]]),
                               atol=1e-6)
    np.testing.assert_allclose(row[36 + 3 * k:39 + 3 * k], p[t, j], atol=1e-5)
    np.testing.assert_allclose(row[45 + 3 * k:48 + 3 * k],
                               p[t, j] - p[t - 1, j], atol=1e-5)
  np.testing.assert_allclose(
      geometry.rot6d_to_matrix(feats["rot6d"][t - 1].reshape(22, 6)),
      motion.local_rotations[t], atol=1e-5)
  np.testing.assert_allclose(feats["pos"][t - 1].reshape(22, 3), p[t],
                             atol=1e-5)


def test_validate_names_the_file_and_problem():
  motion = _random_motion()
  motion_lib.validate(motion, "clip.amc")
  bad = motion.local_rotations.copy()
  bad[3, 4, 0, 0] = np.nan
  broken = motion_lib.Motion(bad, motion.root_translation, 60.0, "a", "s", "t")
  with pytest.raises(motion_lib.MotionError, match=r"clip\.amc: .*NaN.*frame 3"):
    motion_lib.validate(broken, "clip.amc")
  short = motion_lib.Motion(motion.local_rotations[:1],
                            motion.root_translation[:1], 60.0, "a", "s", "t")
  with pytest.raises(motion_lib.MotionError, match="only 1 frame"):
    motion_lib.validate(short, "x.bvh")
  wrong = motion_lib.Motion(motion.local_rotations[:, :21],
                            motion.root_translation, 60.0, "a", "s", "t")
  with pytest.raises(motion_lib.MotionError, match="shape"):
    motion_lib.validate(wrong, "x.npz")


def test_features_of_a_real_clip_recomputed_independently():
  """CMU 02_01: per-frame scipy FK and features equal motion.features."""
  import os
  import pathlib
  from memmlp_jax.data import asfamc
  root = pathlib.Path(__file__).resolve().parents[1]
  data = root / os.environ.get("MEMMLP_DATA", "../shared/data")
  if not (data / "cmu_mocap_asfamc").is_dir():
    pytest.skip(f"no mocap data at {data}")
  clip = next(c for c in asfamc.iter_clips(data / "cmu_mocap_asfamc")
              if c.clip_id == "cmu/02_01")
  motion = clip.load()
  assert motion.fps == 60.0 and motion.num_frames == 172
  feats = motion_lib.features(motion)
  skel = motion.skeleton
  rng = np.random.default_rng(0)
  frames = np.concatenate([[1, motion.num_frames - 1],
                           rng.integers(1, motion.num_frames, size=8)])

  def pose(t):
    g, p = {}, {}
    for j, parent in enumerate(skel.parents):
      local = Rotation.from_matrix(motion.local_rotations[t, j])
      if parent < 0:
        g[j], p[j] = local, motion.root_translation[t] + skel.offsets[0]
      else:
        g[j] = g[parent] * local
        p[j] = p[parent] + g[parent].apply(skel.offsets[j])
    return g, p

  for t in frames:
    g, p = pose(t)
    g_prev, p_prev = pose(t - 1)
    expected = []
    for j in (15, 20, 21):
      m = g[j].as_matrix()
      expected += list(m[:, 0]) + list(m[:, 1])
    for j in (15, 20, 21):
      v = (g_prev[j].inv() * g[j]).as_matrix()
      expected += list(v[:, 0]) + list(v[:, 1])
    for j in (15, 20, 21):
      expected += list(p[j])
    for j in (15, 20, 21):
      expected += list(p[j] - p_prev[j])
    np.testing.assert_allclose(feats["sparse"][t - 1], expected, atol=2e-5)
    np.testing.assert_allclose(feats["pos"][t - 1],
                               np.concatenate([p[j] for j in range(22)]),
                               atol=2e-5)
    local6d = motion.local_rotations[t][:, :, :2].transpose(0, 2, 1)
    np.testing.assert_allclose(feats["rot6d"][t - 1], local6d.reshape(-1),
                               atol=1e-6)
