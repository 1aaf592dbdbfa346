"""BVH loading: a hand-written non-T-pose file, bad input, the CMU release."""

import csv
import json
import os
import pathlib
import time
import zipfile

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from memmlp_jax import retarget
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import asfamc
from memmlp_jax.data import bvh
from memmlp_jax.data import motion as motion_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = (REPO / os.environ.get("MEMMLP_DATA", "../shared/data")).resolve()
CMU_BVH = DATA / "cmu_mocap_bvh"
CMU_ASFAMC = DATA / "cmu_mocap_asfamc"
needs_data = pytest.mark.skipif(not CMU_BVH.is_dir(),
                                reason=f"no mocap data in {DATA}")

# A small body in centimetres, Y up, facing +Z, ARMS DOWN in its zero pose,
# every rotation in Z, X, Y channel order, a two-joint spine (no spine2).
_JOINTS = [  # name, parent, offset (cm)
    ("Hips", None, (0, 0, 0)),
    ("LHip", "Hips", (9, -8, 0)), ("LKnee", "LHip", (0, -42, 1)),
    ("LAnkle", "LKnee", (0, -42, -2)), ("LToe", "LAnkle", (0, -6, 13)),
    ("RHip", "Hips", (-9, -8, 0)), ("RKnee", "RHip", (0, -42, 1)),
    ("RAnkle", "RKnee", (0, -42, -2)), ("RToe", "RAnkle", (0, -6, 13)),
    ("Spine", "Hips", (0, 10, -1)), ("Chest", "Spine", (0, 25, 0)),
    ("Neck", "Chest", (0, 20, -2)), ("Head", "Neck", (0, 10, 2)),
    ("LCollar", "Chest", (3, 15, 0)), ("LShoulder", "LCollar", (14, 2, 0)),
    ("LElbow", "LShoulder", (0, -28, 0)), ("LWrist", "LElbow", (0, -26, 0)),
    ("RCollar", "Chest", (-3, 15, 0)), ("RShoulder", "RCollar", (-14, 2, 0)),
    ("RElbow", "RShoulder", (0, -28, 0)), ("RWrist", "RElbow", (0, -26, 0)),
]
_MAP = {
    "pelvis": "Hips", "left_hip": "LHip", "right_hip": "RHip",
    "spine1": "Spine", "left_knee": "LKnee", "right_knee": "RKnee",
    "spine2": None, "left_ankle": "LAnkle", "right_ankle": "RAnkle",
    "spine3": "Chest", "left_foot": "LToe", "right_foot": "RToe",
    "neck": "Neck", "left_collar": "LCollar", "right_collar": "RCollar",
    "head": "Head", "left_shoulder": "LShoulder",
    "right_shoulder": "RShoulder", "left_elbow": "LElbow",
    "right_elbow": "RElbow", "left_wrist": "LWrist", "right_wrist": "RWrist",
}
_NAMES = [j[0] for j in _JOINTS]


def _hierarchy():
  lines = ["HIERARCHY"]

  def write(name, depth):
    _, _, offset = _JOINTS[_NAMES.index(name)]
    pad = "  " * depth
    lines.append(f"{pad}{'ROOT' if depth == 0 else 'JOINT'} {name}")
    lines.append(pad + "{")
    lines.append(f"{pad}  OFFSET {offset[0]} {offset[1]} {offset[2]}")
    channels = "Zrotation Xrotation Yrotation"
    if depth == 0:
      lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition "
                   f"{channels}")
    else:
      lines.append(f"{pad}  CHANNELS 3 {channels}")
    children = [j[0] for j in _JOINTS if j[1] == name]
    for child in children:
      write(child, depth + 1)
    if not children:
      lines.extend([f"{pad}  End Site", pad + "  {",
                    f"{pad}    OFFSET 0 5 0", pad + "  }"])
    lines.append(pad + "}")

  write("Hips", 0)
  return "\n".join(lines)


def _frames():
  """(3, 66): zero pose; arms raised to a T-pose; a random pose."""
  frames = np.zeros((3, 3 + 3 * len(_JOINTS)))
  frames[:, 1] = 95.0  # hips 95 cm up
  zrot = lambda name: 3 + 3 * _NAMES.index(name)
  frames[1, zrot("LShoulder")] = 90.0  # left arm down -> out to +X (left)
  frames[1, zrot("RShoulder")] = -90.0
  frames[2] = np.random.default_rng(0).uniform(-40, 40, size=frames.shape[1])
  frames[2, :3] = (10.0, 90.0, -5.0)
  return frames


def _bvh_text(frames=None, frame_time="0.0333333333"):
  frames = _frames() if frames is None else frames
  rows = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in frames)
  return (f"{_hierarchy()}\nMOTION\nFrames: {len(frames)}\n"
          f"Frame Time: {frame_time}\n{rows}\n")


def _joint_map(**changes):
  return bvh.load_joint_map(
      {"joints": dict(_MAP, **changes), "units_to_m": 0.01, "up": "y"},
      "tiny_map.json")


def _load(text, joint_map=None):
  return bvh.load_bvh(text, joint_map or _joint_map(), clip_id="tiny/t",
                      subject="tiny/s", source="tiny", name="tiny.bvh")


def _angle(rotations):
  return np.degrees(np.linalg.norm(
      Rotation.from_matrix(rotations.reshape(-1, 3, 3)).as_rotvec(), axis=-1))


def test_channel_order_zxy():
  parsed = bvh.parse_bvh(_bvh_text())
  source = bvh.to_source(parsed, 0.01, "y")
  elbow = _NAMES.index("LElbow")
  z, x, y = _frames()[2, 3 + 3 * elbow:6 + 3 * elbow]
  expected = Rotation.from_euler("ZXY", [z, x, y], degrees=True).as_matrix()
  np.testing.assert_allclose(source.local_rotations[2, elbow], expected,
                             atol=1e-12)
  np.testing.assert_allclose(source.root_translation[2], [0.1, 0.9, -0.05])
  assert source.fps == pytest.approx(30.0)


def test_arms_down_zero_pose_at_30_fps_retargets_right():
  motion = _load(_bvh_text())
  assert motion.fps == 60.0 and motion.num_frames == 5  # 3 frames at 30 fps
  names = skeleton_lib.JOINT_NAMES
  local = motion.local_rotations
  arms = [names.index(n) for n in ("left_shoulder", "right_shoulder")]
  # Source frame 1 (60 fps frame 2) is a T-pose: the canonical arms are near
  # their rest pose (up to the two bodies' different collar and arm rest
  # directions); in the zero pose (arms down) they are lowered ~90 deg, and
  # the two differ by exactly the source's 90 deg.
  assert _angle(local[2, arms]).max() < 20.0
  assert np.all(np.abs(_angle(local[0, arms]) - 90.0) < 20.0)
  raised = np.swapaxes(local[0, arms], -1, -2) @ local[2, arms]
  np.testing.assert_allclose(_angle(raised), 90.0, atol=1e-6)
  # Hands continue the forearms (the source's wrists do not bend here) and
  # the head keeps the source's upright orientation, in both poses.
  assert _angle(local[[0, 2]][:, [20, 21]]).max() < 1e-6
  global_rotations, points = motion.global_pose()
  upright = np.swapaxes(global_rotations[[0, 2], 15], -1, -2) @ (
      skeleton_lib.Y_UP_TO_Z_UP)
  assert _angle(upright).max() < 2.0  # SMPL's hips are 1 deg off symmetric
  # Standing upright: head above pelvis above feet, wrists by the hips in
  # the zero pose and level with the shoulders in the T-pose.
  assert points[0, 15, 2] > points[0, 0, 2] > points[0, 10, 2]
  assert abs(points[0, 20, 2] - points[0, 0, 2]) < 0.15
  assert abs(points[2, 20, 2] - points[2, 16, 2]) < 0.05
  assert points[2, 20, 0] - points[2, 21, 0] > 1.0  # arms spread along X


def test_synthetic_bones_follow_the_source_every_frame():
  joint_map = _joint_map()
  text = _bvh_text()
  motion = _load(text, joint_map)
  source = bvh.to_source(bvh.parse_bvh(text), 0.01, "y").resampled(60.0)
  plan = retarget.make_plan(source.skeleton, joint_map.joints, "y", "x")
  angles = retarget.bone_angles(motion, source, plan)
  single = {k: v for k, v in angles.items()
            if len(plan.targets[k[0]]) == 1}
  assert (3, 9) in single  # spine1 -> spine3 across the missing spine2
  assert len(single) == 14
  assert max(v.max() for v in single.values()) < 1e-4  # degrees
  np.testing.assert_allclose(motion.local_rotations[:, 6],
                             np.tile(np.eye(3), (5, 1, 1)), atol=1e-12)


def test_joint_map_file_errors(tmp_path):
  path = tmp_path / "map.json"
  for data, problem in [
      ({"joints": dict(_MAP, head="Chest"), "units_to_m": 0.01, "up": "y"},
       "'spine3' and 'head' are both mapped to source joint 'Chest'"),
      ({"joints": dict(_MAP, skull="Head"), "units_to_m": 0.01, "up": "y"},
       "unknown canonical joint"),
      ({"joints": _MAP, "units_to_m": 0, "up": "y"}, "units_to_m"),
      ({"joints": _MAP, "units_to_m": 0.01, "up": "x"}, "up must be"),
      ({"bones": _MAP}, "a joint map is"),
  ]:
    path.write_text(json.dumps(data))
    with pytest.raises(motion_lib.MotionError, match="map.json") as info:
      bvh.load_joint_map(path)
    assert problem in str(info.value)
  path.write_text("{not json")
  with pytest.raises(motion_lib.MotionError, match="map.json: not valid JSON"):
    bvh.load_joint_map(path)


def test_map_naming_a_joint_the_bvh_lacks():
  with pytest.raises(motion_lib.MotionError,
                     match=r"tiny\.bvh: joint map tiny_map\.json names "
                     r"joint\(s\) \['Skull'\]"):
    _load(_bvh_text(), _joint_map(head="Skull"))


@pytest.mark.parametrize("frame_time, problem", [
    ("0", "invalid Frame Time"), ("-0.01", "invalid Frame Time"),
    ("nan", "invalid Frame Time"), ("fast", "bad 'Frame Time:'"),
])
def test_bad_frame_time(frame_time, problem):
  with pytest.raises(motion_lib.MotionError, match=f"tiny.bvh: .*{problem}"):
    _load(_bvh_text(frame_time=frame_time))


def test_missing_frame_time_nan_and_truncation():
  text = _bvh_text()
  no_time = "\n".join(l for l in text.split("\n")
                      if not l.startswith("Frame Time"))
  with pytest.raises(motion_lib.MotionError,
                     match="tiny.bvh: .*unknown frame rate"):
    _load(no_time)
  frames = _frames()
  frames[1, 7] = np.nan
  with pytest.raises(motion_lib.MotionError,
                     match="tiny.bvh: NaN/inf values in frame 1"):
    _load(_bvh_text(frames))
  truncated = text[:text.rstrip().rindex("\n")]
  with pytest.raises(motion_lib.MotionError,
                     match="tiny.bvh: 'Frames: 3' but 2 frame lines"):
    _load(truncated)
  with pytest.raises(motion_lib.MotionError, match="tiny.bvh: frame lines"):
    _load(text.rstrip()[:-12])  # last line cut mid-way
  with pytest.raises(motion_lib.MotionError, match="tiny.bvh: .*HIERARCHY"):
    _load(text.replace("JOINT RHip", "RHip", 1))


def _motion_frames():
  with open(CMU_BVH / "clips.tsv", newline="") as f:
    return {row["file"][:-4]: int(row["motion_frames"])
            for row in csv.DictReader(f, delimiter="\t")}


def _cmu_text(clip):
  with zipfile.ZipFile(CMU_BVH / "subjects" / f"{clip[:2]}.zip") as archive:
    return archive.read(f"{clip}.bvh").decode("latin-1")


@needs_data
def test_cmu_repair():
  repair = bvh.cmu_repair(CMU_ASFAMC)
  frames = _motion_frames()
  for clip, glitch in (("07_12", 1), ("09_10", 4), ("07_01", 0),
                       ("01_07", 0)):
    raw = bvh.parse_bvh(_cmu_text(clip))
    fixed = repair(raw, f"cmu_bvh/{clip}", clip)
    assert len(fixed.values) == frames[clip] - glitch
    np.testing.assert_array_equal(fixed.values[0], raw.values[1 + glitch])
  neck = lambda b: b.offsets[b.names.index("Neck")]
  subject_02 = repair(bvh.parse_bvh(_cmu_text("02_04")), "cmu_bvh/02_04", "x")
  np.testing.assert_allclose(neck(subject_02), (0.002, 2.068, 0.008),
                             atol=1e-3)  # the ASF's thorax (README)
  subject_07 = repair(bvh.parse_bvh(_cmu_text("07_01")), "cmu_bvh/07_01", "x")
  np.testing.assert_allclose(
      neck(subject_07),
      1.012 * subject_07.offsets[subject_07.names.index("Spine1")])
  for name in ("LeftShoulder", "RightShoulder"):
    np.testing.assert_array_equal(
        subject_07.offsets[subject_07.names.index(name)], neck(subject_07))


@needs_data
@pytest.mark.parametrize("clip", ["07_01", "01_01", "02_07", "09_10"])
def test_cmu_bvh_one_child_bones_follow_the_source(clip):
  joint_map = bvh.load_joint_map(bvh.CMU_MAP)
  repair = bvh.cmu_repair(CMU_ASFAMC)
  motion = bvh.load_bvh(_cmu_text(clip), joint_map, clip_id=f"cmu_bvh/{clip}",
                        subject="cmu_bvh/x", source="cmu_bvh", repair=repair)
  fixed = repair(bvh.parse_bvh(_cmu_text(clip)), f"cmu_bvh/{clip}", clip)
  source = bvh.to_source(fixed, joint_map.units_to_m, "y").resampled(60.0)
  plan = retarget.make_plan(source.skeleton, joint_map.joints, "y", "x")
  _, canonical = motion.global_pose()
  _, points = source.world_pose()
  for j, c in enumerate(skeleton_lib.PARENTS):
    if c < 0 or len(skeleton_lib.SMPL_NEUTRAL.children(c)) != 1:
      continue
    a = canonical[:, j] - canonical[:, c]
    b = points[:, plan.source_joints[j]] - points[:, plan.source_joints[c]]
    np.testing.assert_allclose(
        a / np.linalg.norm(a, axis=-1, keepdims=True),
        b / np.linalg.norm(b, axis=-1, keepdims=True), atol=1e-5)
  if clip == "07_01":  # a walk: feet near the floor, head at standing height
    lowest = canonical[:, [10, 11], 2].min(axis=1)
    assert 0.0 < lowest.mean() < 0.08
    assert 1.4 < canonical[:, 15, 2].mean() < 1.6


@needs_data
@pytest.mark.slow
def test_every_cmu_bvh_clip_loads():
  start = time.perf_counter()
  loaded, failed, frames = 0, [], 0
  clips = list(bvh.iter_cmu_clips(CMU_BVH, CMU_ASFAMC))
  for clip in clips:
    try:
      motion = clip.load()
    except motion_lib.MotionError as e:
      failed.append(f"{clip.clip_id}: {e}")
      continue
    loaded += 1
    frames += motion.num_frames
    assert motion.clip_id == clip.clip_id and motion.subject == clip.subject
  print(f"cmu_mocap_bvh: {loaded} clips, {frames} frames at 60 fps in "
        f"{time.perf_counter() - start:.1f} s; failed {failed}")
  assert (clips[0].clip_id, clips[0].subject) == ("cmu_bvh/01_01",
                                                  "cmu_bvh/01")
  assert loaded == len(clips) == 73


def test_iter_clips_in_plain_folders_and_zips(tmp_path):
  (tmp_path / "alice").mkdir()
  (tmp_path / "alice" / "walk.bvh").write_text(_bvh_text())
  with zipfile.ZipFile(tmp_path / "bob.zip", "w") as archive:
    archive.writestr("jump.bvh", _bvh_text())
    archive.writestr("broken.bvh", _bvh_text(frame_time="0"))
  clips = {c.clip_id: c for c in bvh.iter_clips(tmp_path, _joint_map(),
                                                source="mine")}
  assert sorted(clips) == ["mine/broken", "mine/jump", "mine/walk"]
  assert clips["mine/walk"].subject == "mine/alice"
  assert clips["mine/jump"].subject == "mine/bob"
  walk, jump = clips["mine/walk"].load(), clips["mine/jump"].load()
  np.testing.assert_allclose(walk.local_rotations, jump.local_rotations)
  assert (walk.clip_id, walk.subject, walk.source) == ("mine/walk",
                                                       "mine/alice", "mine")
  with pytest.raises(motion_lib.MotionError,
                     match=r"bob\.zip:broken\.bvh: invalid Frame Time"):
    clips["mine/broken"].load()


@needs_data
def test_repaired_cmu_bvh_skeleton_equals_its_asf():
  """BVH subject 02 (thorax restored) has the rest pose of CMU's 02.asf."""
  with zipfile.ZipFile(CMU_ASFAMC / "subjects" / "02.zip") as archive:
    asf = asfamc.parse_asf(archive.read("02.asf").decode("latin-1"))
  joint_map = bvh.load_joint_map(bvh.CMU_MAP)
  fixed = bvh.cmu_repair(CMU_ASFAMC)(bvh.parse_bvh(_cmu_text("02_04")),
                                     "cmu_bvh/02_04", "x")
  source = bvh.to_source(fixed, joint_map.units_to_m, "y")
  asf_rest = asf.skeleton.rest_positions()
  bvh_rest = source.skeleton.rest_positions()
  for name in skeleton_lib.JOINT_NAMES:
    np.testing.assert_allclose(
        bvh_rest[source.skeleton.names.index(joint_map.joints[name])],
        asf_rest[asf.names.index(asfamc.CMU_JOINT_MAP[name])], atol=1e-5)
