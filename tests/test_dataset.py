"""Tests for training windows: sampling and exact augmentation."""

import types

import numpy as np
import pytest

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import dataset
from memmlp_jax.data import motion as motion_lib

_S = np.diag([-1.0, 1.0, 1.0])


def _random_motion(num_frames=30, seed=0):
  """A smooth random motion on the canonical body, standing up in Z-up."""
  rng = np.random.default_rng(seed)
  t = np.linspace(0, 1, num_frames)[:, None, None]
  axis_angle = (rng.normal(0, 0.4, (1, 22, 3)) +
                t * rng.normal(0, 1.0, (1, 22, 3)))
  local = geometry.axis_angle_to_matrix(axis_angle)
  local[:, 0] = skeleton_lib.Y_UP_TO_Z_UP @ local[:, 0]
  trans = rng.normal(0, 1, (1, 3)) + t[:, 0] * rng.normal(0, 1, (1, 3))
  return motion_lib.Motion(local, trans, 60.0, "test/a", "test/s", "test")


def _windows(motion):
  return {k: v[None] for k, v in motion_lib.features(motion).items()}


def _assert_windows_close(actual, expected):
  for key in ("sparse", "rot6d", "pos"):
    np.testing.assert_allclose(actual[key], expected[key], atol=2e-5,
                               err_msg=key)


def test_yaw_equals_features_of_the_turned_motion():
  motion = _random_motion()
  angle = 1.234
  rz = geometry.axis_angle_to_matrix(np.array([0.0, 0.0, angle]))
  offset0 = motion.skeleton.offsets[0]
  local = motion.local_rotations.copy()
  local[:, 0] = rz @ local[:, 0]
  # The root joint (translation + offset_0) turns about the world origin.
  trans = (motion.root_translation + offset0) @ rz.T - offset0
  turned = motion_lib.Motion(local, trans, 60.0, "t", "t", "t",
                             motion.skeleton)
  _assert_windows_close(dataset.rotate_yaw(_windows(motion), [angle]),
                        _windows(turned))


def test_mirror_equals_features_of_the_mirrored_motion():
  motion = _random_motion(seed=1)
  perm = list(skeleton_lib.MIRROR)
  body = motion.skeleton
  # The mirrored performer has the mirrored body (SMPL's rest skeleton is not
  # exactly symmetric), so FK of the mirrored rotations lands on the mirror.
  mirrored_body = skeleton_lib.Skeleton(body.names, body.parents,
                                        body.offsets[perm] @ _S)
  local = _S @ motion.local_rotations[:, perm] @ _S
  root = (motion.root_translation + body.offsets[0]) @ _S
  mirrored = motion_lib.Motion(local, root - mirrored_body.offsets[0], 60.0,
                               "t", "t", "t", mirrored_body)
  _assert_windows_close(dataset.mirror(_windows(motion), [True]),
                        _windows(mirrored))


def test_mirror_keeps_the_floor_and_is_an_involution():
  windows = _windows(_random_motion(seed=2))
  once = dataset.mirror(windows, [True])
  pos, mirrored_pos = (w["pos"].reshape(-1, 22, 3) for w in (windows, once))
  np.testing.assert_array_equal(mirrored_pos[:, skeleton_lib.MIRROR, 2],
                                pos[..., 2])
  assert not np.allclose(once["sparse"], windows["sparse"])
  twice = dataset.mirror(once, [True])
  for key in windows:
    np.testing.assert_array_equal(twice[key], windows[key])
  unflagged = dataset.mirror(windows, [False])
  for key in windows:
    np.testing.assert_array_equal(unflagged[key], windows[key])


def _split(lengths, seed=0):
  """A prepared split with recognisable rows: value = global row index."""
  total = sum(lengths)
  rows = np.arange(total, dtype=np.float32)[:, None]
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  clips = [types.SimpleNamespace(clip_id=f"c{i}", subject="s", start=int(s),
                                 length=int(n))
           for i, (s, n) in enumerate(zip(starts, lengths))]
  return types.SimpleNamespace(
      sparse=np.repeat(rows, 54, 1), rot6d=np.repeat(rows, 132, 1),
      pos=np.repeat(rows, 66, 1), clips=clips)


def test_crops_stay_inside_clips_and_cover_every_fitting_clip():
  lengths = [5, 12, 3, 8, 20]
  split = _split(lengths)
  sampler = dataset.WindowSampler(split, window=7, batch_size=64, seed=3)
  seen = set()
  for step in range(20):
    first_rows = sampler.batch(step)["sparse"][:, :, 0]
    assert first_rows.shape == (64, 8)
    np.testing.assert_array_equal(np.diff(first_rows, axis=1), 1)
    for start in first_rows[:, 0].astype(int):
      clip = next(c for c in split.clips
                  if c.start <= start < c.start + c.length)
      assert start + 8 <= clip.start + clip.length
      seen.add(clip.clip_id)
  assert seen == {"c1", "c3", "c4"}  # clips of >= 8 frames


def test_batches_are_a_pure_function_of_seed_and_step():
  split = _split([50, 70])
  augment = dataset.Augment(yaw=True, mirror=True)
  make = lambda seed: dataset.WindowSampler(split, 10, 16, seed, augment)
  a, b = make(0), make(0)
  b.batch(5)  # calls made earlier must not matter
  np.testing.assert_array_equal(a.batch(3)["pos"], b.batch(3)["pos"])
  assert not np.array_equal(a.batch(3)["pos"], a.batch(4)["pos"])
  assert not np.array_equal(a.batch(3)["pos"], make(1).batch(3)["pos"])
  plan = a.plan(3)
  assert plan.mirror.any() and not plan.mirror.all() and plan.angles.any()
  # A process reading rows of the global batch gets exactly those rows.
  full = a.batch(7)
  share = a.batch(7, rows=slice(4, 12))
  for key in full:
    np.testing.assert_array_equal(share[key], full[key][4:12])


def test_augmentation_off_returns_the_stored_rows():
  split = _split([40])
  plan = dataset.WindowSampler(split, 5, 8, 0).plan(0)
  assert not plan.angles.any() and not plan.mirror.any()
  batch = dataset.WindowSampler(split, 5, 8, 0).batch(0)
  np.testing.assert_array_equal(batch["rot6d"][:, :, 0],
                                plan.starts[:, None] + np.arange(6))


def test_split_window_gives_current_and_previous():
  batch = dataset.WindowSampler(_split([30]), 4, 2, 0).batch(0)
  current, previous = dataset.split_window(batch)
  assert current["pos"].shape == previous["pos"].shape == (2, 4, 66)
  np.testing.assert_array_equal(current["pos"][:, :-1], previous["pos"][:, 1:])


def test_bad_requests_are_named():
  with pytest.raises(ValueError, match="41 frames"):
    dataset.WindowSampler(_split([10, 20]), 40, 4, 0)
  with pytest.raises(ValueError, match="unknown augmentation"):
    dataset.Augment.from_names(["yaw", "flip"])
  assert dataset.Augment.from_names(["mirror"]) == dataset.Augment(False, True)
