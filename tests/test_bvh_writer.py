"""BVH output: what Blender reads back, and a round trip through our loader."""

import json
import os
import zipfile

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import bvh_writer
from memmlp_jax.data import motion as motion_lib

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), os.environ.get("MEMMLP_DATA", "../shared/data"))
CMU = os.path.join(DATA, "cmu_mocap_asfamc", "subjects", "02.zip")
# Z-up world -> Y-up file: -90 degrees about X.
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])


def _random_motion(n=20, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  axis_angle = np.cumsum(rng.normal(scale=0.2, size=(n, 22, 3)), axis=0)
  local = Rotation.from_rotvec(axis_angle.reshape(-1, 3)).as_matrix()
  return motion_lib.Motion(
      local.reshape(n, 22, 3, 3), rng.normal(size=(n, 3)), 60.0, "test/a",
      "test/s", "test", skeleton_lib.SMPL_NEUTRAL.scaled(scale))


def _parse(text):
  """A plain BVH reader (Blender's reading): offsets, channels, frames."""
  tokens = text.split()
  names, parents, offsets, channels, stack = [], [], [], [], []
  assert tokens[0] == "HIERARCHY"
  i = 1
  while tokens[i] != "MOTION":
    word = tokens[i]
    if word in ("ROOT", "JOINT"):
      names.append(tokens[i + 1])
      parents.append(stack[-1] if stack else -1)
      i += 2
    elif word == "End":
      names.append(None)
      parents.append(stack[-1])
      i += 2
    elif word == "{":
      stack.append(len(names) - 1)
      i += 1
    elif word == "}":
      stack.pop()
      i += 1
    elif word == "OFFSET":
      offsets.append([float(v) for v in tokens[i + 1:i + 4]])
      i += 4
    elif word == "CHANNELS":
      count = int(tokens[i + 1])
      channels.append(tokens[i + 2:i + 2 + count])
      i += 2 + count
    else:
      raise AssertionError(f"unexpected token {word!r}")
  frames = int(tokens[i + 2])
  frame_time = float(tokens[i + 5])
  values = np.array(tokens[i + 6:], float).reshape(frames, -1)
  return names, parents, np.array(offsets), channels, frame_time, values


def _fk(names, parents, offsets, channels, values):
  """Joint positions (N, joints, 3) from parsed BVH, as Blender computes."""
  joints = [j for j, n in enumerate(names) if n is not None]
  n = len(values)
  glob = {}
  pos = {}
  column = 0
  for k, j in enumerate(joints):
    chans = channels[k]
    data = values[:, column:column + len(chans)]
    column += len(chans)
    rot_axes = "".join(c[0] for c in chans if c.endswith("rotation"))
    angles = data[:, [c.endswith("rotation") for c in chans]]
    local = Rotation.from_euler(rot_axes, angles, degrees=True).as_matrix()
    if parents[j] < 0:
      glob[j] = local
      pos[j] = data[:, :3] + offsets[j]
    else:
      p = parents[j]
      glob[j] = glob[p] @ local
      pos[j] = pos[p] + np.einsum("nij,j->ni", glob[p], offsets[j])
  return np.stack([pos[j] for j in joints], axis=1).reshape(n, -1, 3)


@pytest.mark.parametrize("units, order, up, scale", [
    ("m", "ZYX", "y", 1.0), ("cm", "XYZ", "y", 1.1), ("m", "YXZ", "z", 0.9)])
def test_written_bvh_gives_the_motions_joint_positions(units, order, up,
                                                       scale):
  motion = _random_motion(scale=scale)
  text = bvh_writer.to_bvh(motion, units=units, order=order, up=up)
  names, parents, offsets, channels, frame_time, values = _parse(text)
  joints = [n for n in names if n is not None]
  assert tuple(joints) == tuple(motion.skeleton.names[j] for j in
                                bvh_writer.depth_first_order(motion.skeleton))
  assert names.count(None) == 5  # end sites: head, feet, wrists
  assert channels[0] == ["Xposition", "Yposition", "Zposition"] + [
      f"{a}rotation" for a in order]
  assert all(c == [f"{a}rotation" for a in order] for c in channels[1:])
  assert frame_time == pytest.approx(1 / 60, rel=1e-7)
  assert values.shape == (motion.num_frames, 6 + 3 * 21)

  positions = _fk(names, parents, offsets, channels, values)
  to_m = {"m": 1.0, "cm": 0.01}[units]
  _, want = motion.global_pose()
  want = want[:, bvh_writer.depth_first_order(motion.skeleton)]
  if up == "y":
    want = want @ Z_UP_TO_Y_UP.T
  np.testing.assert_allclose(positions * to_m, want, atol=2e-5)


def test_standing_body_is_upright_in_a_y_up_file():
  motion = _random_motion(n=1)
  upright = np.tile(np.eye(3), (1, 22, 1, 1))
  upright[:, 0] = skeleton_lib.Y_UP_TO_Z_UP
  motion = motion_lib.Motion(upright, np.zeros((1, 3)), 60.0, "a", "b", "c")
  _, _, _, _, _, values = _parse(bvh_writer.to_bvh(motion))
  np.testing.assert_allclose(values[0, 3:], 0.0, atol=1e-9)


def test_bad_options_are_refused():
  motion = _random_motion(n=2)
  for options in ({"units": "inch"}, {"order": "XXY"}, {"up": "x"}):
    with pytest.raises(ValueError, match=list(options)[0]):
      bvh_writer.to_bvh(motion, **options)


def test_roundtrip_through_our_bvh_loader_is_exact(tmp_path):
  """A real clip written as BVH reads back, with an identity joint map."""
  if not os.path.exists(CMU):
    pytest.skip(f"no mocap data at {DATA}")
  from memmlp_jax.data import asfamc  # pylint: disable=g-import-not-at-top
  from memmlp_jax.data import bvh  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(CMU) as z:
    motion = asfamc.load_amc(
        z.read("02.asf").decode("latin-1"),
        z.read("02_01.amc").decode("latin-1"), clip_id="cmu/02_01",
        subject="cmu/02", source="cmu")
  path = tmp_path / "02_01.bvh"
  bvh_writer.write_bvh(str(path), motion, units="cm")
  joint_map = tmp_path / "canonical.json"
  joint_map.write_text(json.dumps({
      "joints": {n: n for n in skeleton_lib.JOINT_NAMES},
      "units_to_m": 0.01, "up": "y"}))
  loaded = bvh.load_bvh(str(path), bvh.load_joint_map(str(joint_map)),
                        clip_id="roundtrip/02_01", subject="roundtrip/02",
                        source="roundtrip")
  assert loaded.num_frames == motion.num_frames
  assert loaded.fps == pytest.approx(60.0)
  _, got = loaded.global_pose()
  _, want = motion.global_pose()
  np.testing.assert_allclose(got, want, atol=1e-4)
  np.testing.assert_allclose(loaded.local_rotations, motion.local_rotations,
                             atol=1e-5)
