"""Headset recordings: engine conventions, resampling, lost tracking, errors.

The key test writes a real CMU clip as a Unity recording (Y up, left-handed,
quaternions x,y,z,w, ~90 Hz with irregular timestamps, controllers offset
from the wrists) with conversions written here from Unity's own definitions,
and checks the reader gives back the clip's sparse features.
"""

import os
import zipfile

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from scipy.spatial.transform import Slerp

from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import tracking

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), os.environ.get("MEMMLP_DATA", "../shared/data"))
CMU = os.path.join(DATA, "cmu_mocap_asfamc", "subjects", "02.zip")

# Unity: x right, y up, z forward, left-handed. The project's world: z up,
# right-handed; a Unity recording maps x -> x, z (forward) -> y, y -> z.
UNITY_TO_WORLD = np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])
# A device at identity looks forward (world +y) with its up along world +z;
# the canonical joint frame is (x left, y up, z forward), so the joint's
# axes in the world are left = -x, up = +z, forward = +y.
DEVICE_TO_JOINT = np.array([[-1.0, 0, 0], [0, 0, 1], [0, 1, 0]])
RIGHT_WRIST_OFFSET = np.array([0.02, -0.03, -0.09])  # in the controller frame


def _cmu_clip():
  if not os.path.exists(CMU):
    pytest.skip(f"no mocap data at {DATA}")
  from memmlp_jax.data import asfamc  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(CMU) as z:
    asf = z.read("02.asf").decode("latin-1")
    amc = z.read("02_01.amc").decode("latin-1")
  return asfamc.load_amc(asf, amc, clip_id="cmu/02_01", subject="cmu/02",
                         source="cmu")


def _tracked(motion):
  rotations, positions = motion.global_pose()
  joints = list(skeleton_lib.SPARSE_JOINTS)
  return rotations[:, joints], positions[:, joints]


def _interpolate(times, rotations, positions, query):
  """The clip's head and wrists at arbitrary times (slerp and linear)."""
  out_rot = np.stack([
      Slerp(times, Rotation.from_matrix(rotations[:, d]))(query).as_matrix()
      for d in range(3)], axis=1)
  out_pos = np.stack([
      np.stack([np.interp(query, times, positions[:, d, a])
                for a in range(3)], axis=-1) for d in range(3)], axis=1)
  return out_rot, out_pos


def _unity_csv(times, rotations, positions, flags=None):
  """A Unity recording of world joint poses, as the engine would log it."""
  lines = [",".join(tracking.expected_header("xyzw", flags is not None))]
  left_offset = RIGHT_WRIST_OFFSET * [-1, 1, 1]  # mirrored across x (right)
  offsets = [np.zeros(3), left_offset, RIGHT_WRIST_OFFSET]
  for i, t in enumerate(times):
    row = [f"{t:.9f}"]
    for d in range(3):
      device_world = rotations[i, d] @ DEVICE_TO_JOINT.T
      device_unity = UNITY_TO_WORLD.T @ device_world @ UNITY_TO_WORLD
      wrist_unity = UNITY_TO_WORLD.T @ positions[i, d]
      controller = wrist_unity - device_unity @ offsets[d]
      quat = Rotation.from_matrix(device_unity).as_quat()  # x, y, z, w
      row += [f"{v:.9g}" for v in np.concatenate([controller, quat])]
    if flags is not None:
      row += [str(int(f)) for f in flags[i]]
    lines.append(",".join(row))
  return "\n".join(lines) + "\n"


def _unity(**changes):
  return tracking.Conventions(
      **{"wrist_offset": tuple(RIGHT_WRIST_OFFSET), **changes})


def test_unity_axes_and_handedness_follow_unity():
  half = np.sqrt(0.5)
  # Head at identity 1.6 m up; left controller turned by Unity's
  # Quaternion.Euler(0, 90, 0) (a turn to the right); right at (0.3, 1, 0.2).
  values = np.array([[0, 1.6, 0, 0, 0, 0, 1,
                      -0.3, 1, 0.2, 0, half, 0, half,
                      0.3, 1, 0.2, 0, 0, 0, 1]], np.float64)
  rotations, positions = tracking.to_world(values, tracking.PRESETS["unity"])
  np.testing.assert_allclose(rotations[0, 0], DEVICE_TO_JOINT, atol=1e-12)
  # Turned right from facing +y: now facing +x, the left side towards +y.
  np.testing.assert_allclose(rotations[0, 1][:, 2], [1, 0, 0], atol=1e-12)
  np.testing.assert_allclose(rotations[0, 1][:, 0], [0, 1, 0], atol=1e-12)
  np.testing.assert_allclose(
      positions[0], [[0, 0, 1.6], [-0.3, 0.2, 1], [0.3, 0.2, 1]], atol=1e-12)


@pytest.mark.parametrize("preset, forward, position, expected", [
    ("openxr", [0, 1, 0], [0.1, 1.7, -0.4], [0.1, 0.4, 1.7]),
    ("unreal", [1, 0, 0], [40.0, 10.0, 170.0], [0.4, -0.1, 1.7]),
])
def test_other_engines_face_forward_at_identity(preset, forward, position,
                                                expected):
  values = np.array([(position + [0, 0, 0, 1]) * 3], np.float64)
  rotations, positions = tracking.to_world(values, tracking.PRESETS[preset])
  for d in range(3):
    np.testing.assert_allclose(rotations[0, d][:, 2], forward, atol=1e-12)
    np.testing.assert_allclose(rotations[0, d][:, 1], [0, 0, 1], atol=1e-12)
    assert np.linalg.det(rotations[0, d]) == pytest.approx(1.0)
  np.testing.assert_allclose(positions[0, 0], expected, atol=1e-12)


def test_unity_recording_of_a_real_clip_gives_its_features():
  """Irregular ~90 Hz samples that include every 60 fps frame time."""
  motion = _cmu_clip()
  rotations, positions = _tracked(motion)
  frame_times = np.arange(motion.num_frames) / motion.fps
  rng = np.random.default_rng(0)
  # Every 60 fps frame plus one sample at a random time inside every other
  # frame interval: 90 Hz on average, irregular.
  between = frame_times[:-1:2] + rng.uniform(0.1, 0.9, len(frame_times[:-1:2])
                                             ) / motion.fps
  times = np.sort(np.concatenate([frame_times, between]))
  csv = _unity_csv(times, *_interpolate(frame_times, rotations, positions,
                                        times))
  recording = tracking.load_tracking_csv(csv, _unity(), path="unity.csv")
  assert recording.num_frames == motion.num_frames
  assert recording.valid.all()
  got = motion_lib.sparse_from_tracking(recording.rotations,
                                        recording.positions)
  want = motion_lib.features(motion)["sparse"]
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_jittered_90hz_recording_matches_up_to_interpolation():
  """Timestamps at 90 Hz +- 2 ms: the 60 fps frames are re-interpolated."""
  motion = _cmu_clip()
  rotations, positions = _tracked(motion)
  frame_times = np.arange(motion.num_frames) / motion.fps
  rng = np.random.default_rng(1)
  times = np.arange(0.0, frame_times[-1], 1 / 90) + rng.uniform(
      -0.002, 0.002, len(np.arange(0.0, frame_times[-1], 1 / 90)))
  times[0], times[-1] = 0.0, frame_times[-1]
  csv = _unity_csv(times, *_interpolate(frame_times, rotations, positions,
                                        times))
  recording = tracking.load_tracking_csv(csv, _unity(), path="jitter.csv")
  assert recording.num_frames == motion.num_frames
  got = motion_lib.sparse_from_tracking(recording.rotations,
                                        recording.positions)
  want = motion_lib.features(motion)["sparse"]
  # Positions within 5 mm, 6D rotations within ~1 degree, per-frame
  # deltas within 3 mm (a walk moves ~2 cm per frame).
  assert np.abs(got[:, 36:45] - want[:, 36:45]).max() < 0.005
  assert np.abs(got[:, :18] - want[:, :18]).max() < 0.02
  assert np.abs(got[:, 45:] - want[:, 45:]).max() < 0.003


def _still_recording(num_samples=31, rate=30.0, flags=None):
  times = np.arange(num_samples) / rate
  rotations = np.tile(DEVICE_TO_JOINT, (num_samples, 3, 1, 1))
  positions = np.tile([[0, 0, 1.6], [-0.3, 0.1, 1], [0.3, 0.1, 1]],
                      (num_samples, 1, 1)).astype(np.float64)
  positions[:, :, 0] += times[:, None]  # walking along +x at 1 m/s
  return times, _unity_csv(times, rotations, positions, flags)


def test_lost_hands_become_nan_exactly_where_interpolation_needs_them():
  flags = np.ones((31, 2), int)
  flags[10, 1] = 0  # right hand flagged at 1/3 s
  _, csv = _still_recording(flags=flags)
  lines = csv.splitlines()
  fields = lines[1 + 20].split(",")  # left hand NaN at 2/3 s
  fields[8:15] = ["nan"] * 7
  lines[1 + 20] = ",".join(fields)
  recording = tracking.load_tracking_csv("\n".join(lines), _unity(),
                                         path="lost.csv")
  assert recording.num_frames == 61
  lost = ~recording.valid
  # Samples every 2 frames: a lost sample spoils the frames within 1/30 s.
  assert np.flatnonzero(lost[:, 2]).tolist() == [19, 20, 21]
  assert np.flatnonzero(lost[:, 1]).tolist() == [39, 40, 41]
  assert not lost[:, 0].any()
  assert np.isnan(recording.positions[lost]).all()
  assert np.isfinite(recording.positions[~lost]).all()
  np.testing.assert_allclose(recording.positions[:, 0, 0],
                             np.arange(61) / 60, atol=1e-7)
  sparse = motion_lib.sparse_from_tracking(recording.rotations,
                                           recording.positions)
  frames_with_nan = np.flatnonzero(np.isnan(sparse).any(axis=1)) + 1
  assert frames_with_nan.tolist() == [19, 20, 21, 22, 39, 40, 41, 42]


def test_units_time_units_and_wxyz_order():
  text = ("time,head_px,head_py,head_pz,head_qw,head_qx,head_qy,head_qz,"
          "left_px,left_py,left_pz,left_qw,left_qx,left_qy,left_qz,"
          "right_px,right_py,right_pz,right_qw,right_qx,right_qy,right_qz\n")
  for ms in (0, 50, 100):
    text += f"{ms},0,160,0,1,0,0,0,-30,100,20,1,0,0,0,30,100,20,1,0,0,0\n"
  recording = tracking.load_tracking_csv(
      text, tracking.Conventions(quat_order="wxyz", units="cm",
                                 time_units="ms"), path="cm.csv")
  assert recording.num_frames == 7
  np.testing.assert_allclose(recording.positions[3, 0], [0, 0, 1.6])
  np.testing.assert_allclose(recording.rotations[3, 0], DEVICE_TO_JOINT,
                             atol=1e-12)


def _replace_field(lines, line_no, column, text):
  fields = lines[line_no - 1].split(",")
  fields[column] = text
  return lines[:line_no - 1] + [",".join(fields)] + lines[line_no:]


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:3] + ["0.5,1,2"] + lines[4:], "line 4: 3 columns"),
    (lambda lines: _replace_field(lines, 3, 2, "abc"),
     "line 3, column head_py: 'abc' is not a number"),
    (lambda lines: lines[:5] + [lines[3]] + lines[6:],
     r"line 6: time 0.0666667 is not after the previous sample's 0.1;"),
    (lambda lines: [lines[0].replace("head_qx", "head_qw", 1)] + lines[1:],
     "header does not match quat_order"),
    (lambda lines: lines[:2], "1 tracking sample"),
    (lambda lines: [], "0 tracking sample"),
    (lambda lines: [lines[0]] + [",".join(["nan"] * 22)] * 3,
     "line 2: time is missing"),
])
def test_malformed_csv_errors_name_file_and_line(edit, message):
  _, csv = _still_recording(num_samples=8)
  text = "\n".join(edit(csv.splitlines()))
  with pytest.raises(motion_lib.MotionError, match=message) as error:
    tracking.load_tracking_csv(text + "\n", _unity(), path="rec.csv")
  assert str(error.value).startswith("rec.csv: ")


def test_unreadable_file_and_untracked_head(tmp_path):
  with pytest.raises(motion_lib.MotionError, match="cannot read"):
    tracking.load_tracking_csv(str(tmp_path / "missing.csv"))
  _, csv = _still_recording(num_samples=4)
  lines = csv.splitlines()
  for i in range(1, 5):
    fields = lines[i].split(",")
    fields[4:8] = ["0"] * 4  # zero-length head quaternions
    lines[i] = ",".join(fields)
  path = tmp_path / "rec.csv"
  path.write_text("\n".join(lines))
  with pytest.raises(motion_lib.MotionError, match="head is never tracked"):
    tracking.load_tracking_csv(str(path))
