"""ASF/AMC loading and retargeting on the real CMU and HDM05 files."""

import csv
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
from memmlp_jax.data import motion as motion_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = (REPO / os.environ.get("MEMMLP_DATA", "../shared/data")).resolve()
CMU = DATA / "cmu_mocap_asfamc"
HDM05 = DATA / "hdm05_cut_asfamc"

pytestmark = pytest.mark.skipif(not CMU.is_dir() or not HDM05.is_dir(),
                                reason=f"no mocap data in {DATA}")


def _read(folder, zip_name, member):
  with zipfile.ZipFile(folder / zip_name) as archive:
    return archive.read(member).decode("latin-1")


def _cmu(clip):
  subject = clip.split("_")[0]
  return (_read(CMU / "subjects", f"{subject}.zip", f"{subject}.asf"),
          _read(CMU / "subjects", f"{subject}.zip", f"{clip}.amc"))


def _hdm05(clip):
  actor = "_".join(clip.split("_")[:2])
  return (_read(HDM05 / "actors", f"{actor}.zip", f"{actor}.asf"),
          _read(HDM05 / "actors", f"{actor}.zip", f"{clip}.amc"))


def _load(asf_text, amc_text, clip_id="cmu/x"):
  return asfamc.load_amc(asf_text, amc_text, clip_id=clip_id,
                         subject="cmu/x", source="cmu", amc_name="x.amc",
                         asf_name="x.asf")


def _source_60(asf_text, amc_text):
  asf = asfamc.parse_asf(asf_text)
  return asf, asfamc.load_source(asf, amc_text, stride=2)


def _tsv_frames(folder):
  with open(folder / "clips.tsv", newline="") as f:
    return {row["file"][:-4]: int(row["frames"])
            for row in csv.DictReader(f, delimiter="\t")}


def test_readme_forward_kinematics():
  """Joint positions equal the README's bone-end FK, done independently."""
  asf_text, amc_text = _cmu("02_01")
  asf = asfamc.parse_asf(asf_text)
  source = asfamc.load_source(asf, amc_text)
  _, points = source.world_pose()
  frame_line = amc_text.split("\n:DEGREES\n")[1].split("\n2\n")[0]
  dofs = {l.split()[0]: [float(v) for v in l.split()[1:]]
          for l in frame_line.split("\n")[1:]}
  ends = {"root": np.array(dofs["root"][:3])}
  world = {"root": Rotation.from_euler("xyz", dofs["root"][3:], degrees=True)}
  for i, bone in enumerate(asf.bones, start=1):
    parent = asf.names[asf.parents[i]]
    axis = Rotation.from_matrix(bone.axis)
    angles = dict(zip(bone.dofs, dofs.get(bone.name, [])))
    motion = Rotation.from_euler(
        "xyz", [angles.get(a, 0.0) for a in ("rx", "ry", "rz")], degrees=True)
    world[bone.name] = world[parent] * axis * motion * axis.inv()
    ends[bone.name] = ends[parent] + bone.length * world[bone.name].apply(
        bone.direction)
    # Joint i sits at the start of bone i, the end of its parent bone.
    expected = skeleton_lib.Y_UP_TO_Z_UP @ ends[parent] * asfamc.CMU_UNITS_TO_M
    np.testing.assert_allclose(points[0, i], expected, atol=1e-9)


@pytest.mark.parametrize("clip, folder", [
    ("02_01", "cmu"), ("05_14", "cmu"), ("105_15", "cmu"), ("35_01", "cmu"),
    ("HDM_bd_depositFloorR_001_120", "hdm05"),
    ("HDM_mm_lieDownFloor_015_120", "hdm05"),
])
def test_one_child_bones_follow_the_source(clip, folder):
  asf_text, amc_text = (_cmu if folder == "cmu" else _hdm05)(clip)
  motion = _load(asf_text, amc_text)
  asf, source = _source_60(asf_text, amc_text)
  plan = retarget.make_plan(asf.skeleton, asfamc.CMU_JOINT_MAP, "y", "x")
  _, canonical = motion.global_pose()
  _, points = source.world_pose()
  checked = 0
  for j, c in enumerate(skeleton_lib.PARENTS):
    if c < 0 or len(skeleton_lib.SMPL_NEUTRAL.children(c)) != 1:
      continue
    a = canonical[:, j] - canonical[:, c]
    b = (points[:, plan.source_joints[j]] - points[:, plan.source_joints[c]])
    a /= np.linalg.norm(a, axis=-1, keepdims=True)
    b /= np.linalg.norm(b, axis=-1, keepdims=True)
    np.testing.assert_allclose(a, b, atol=1e-5)
    checked += 1
  assert checked == 15


def test_walk_02_01_feet_on_floor_head_height_pelvis_children():
  asf_text, amc_text = _cmu("02_01")
  motion = _load(asf_text, amc_text)
  _, points = motion.global_pose()
  feet = points[:, [10, 11], 2]
  lowest = feet.min(axis=1)
  print(f"02_01: feet mean {feet.mean():.3f} m, lowest foot mean "
        f"{lowest.mean():.3f} m, head {points[:, 15, 2].mean():.3f} m")
  assert 0.0 < lowest.mean() < 0.06
  assert np.all(lowest > -0.03)
  assert 1.4 < points[:, 15, 2].mean() < 1.6
  asf, source = _source_60(asf_text, amc_text)
  plan = retarget.make_plan(asf.skeleton, asfamc.CMU_JOINT_MAP, "y", "x")
  angles = retarget.bone_angles(motion, source, plan)
  pelvis = {c: float(angles[(0, c)].mean()) for c in (1, 2, 3)}
  print(f"02_01: pelvis children angles (deg) {pelvis}")
  assert all(5.0 < a < 30.0 for a in pelvis.values())
  # Walking forward about 1.2 m/s (README), along the ground.
  speed = np.linalg.norm(np.diff(motion.root_translation[:, :2], axis=0),
                         axis=-1).mean() * motion.fps
  assert 0.8 < speed < 1.6


def test_frames_fps_ids_and_zip_equals_plain_folder(tmp_path):
  clips = {c.clip_id: c for c in asfamc.iter_clips(CMU)}
  motion = clips["cmu/02_01"].load()
  raw = _tsv_frames(CMU)["02_01"]
  assert motion.num_frames == len(range(0, raw, 2)) and motion.fps == 60.0
  assert (motion.clip_id, motion.subject, motion.source) == (
      "cmu/02_01", "cmu/02", "cmu")
  assert clips["cmu/02_01"].subject == "cmu/02"
  asf_text, amc_text = _cmu("02_01")
  (tmp_path / "02.asf").write_text(asf_text.replace("\n", "\r\n"))
  (tmp_path / "02_01.amc").write_text(amc_text)
  (plain,) = asfamc.iter_clips(tmp_path)
  assert plain.clip_id == "cmu/02_01" and plain.subject == "cmu/02"
  np.testing.assert_allclose(plain.load().local_rotations,
                             motion.local_rotations, atol=1e-12)
  (tmp_path / "02.asf").unlink()
  (orphan,) = asfamc.iter_clips(tmp_path)
  with pytest.raises(motion_lib.MotionError, match="02_01.amc: no ASF"):
    orphan.load()
  hdm = next(iter(asfamc.iter_clips(HDM05)))
  assert hdm.clip_id == "hdm05/HDM_bd_depositFloorR_001_120"
  assert hdm.subject == "hdm05/bd" and hdm.load().source == "hdm05"


def test_reordered_bone_lines_parse_the_same():
  asf_text, amc_text = _cmu("02_01")
  lines = amc_text.split("\n")
  start = lines.index("2")  # swap two bone lines of frame 2 only
  lines[start + 1], lines[start + 2] = lines[start + 2], lines[start + 1]
  plain = _load(asf_text, amc_text)
  shuffled = _load(asf_text, "\n".join(lines))
  np.testing.assert_allclose(shuffled.local_rotations, plain.local_rotations,
                             atol=1e-12)


def test_stride_equals_full_rate_then_slerp():
  asf_text, amc_text = _cmu("02_01")
  asf = asfamc.parse_asf(asf_text)
  full = asfamc.load_source(asf, amc_text)
  strided = asfamc.load_source(asf, amc_text, stride=2)
  assert (full.fps, strided.fps) == (120.0, 60.0)
  np.testing.assert_allclose(strided.local_rotations,
                             full.resampled(60.0).local_rotations, atol=1e-12)
  motion_30 = asfamc.load_amc(asf_text, amc_text, clip_id="c/x", subject="c/x",
                              source="c", fps=45.0)
  assert motion_30.num_frames == int((full.num_frames - 1) / 45 * 60) + 1


def test_truncated_amc():
  asf_text, amc_text = _cmu("02_01")
  cut = amc_text[:len(amc_text) // 2]
  cut = cut[:cut.rindex("\n")]  # ends on a whole line, mid-frame
  with pytest.raises(motion_lib.MotionError,
                     match=r"x\.amc: frame \d+ of \d+ lacks .*truncated"):
    _load(asf_text, cut)
  with pytest.raises(motion_lib.MotionError, match=r"x\.amc: .*truncated"):
    _load(asf_text, cut[:-3])  # mid-line


def test_asf_missing_a_bone():
  asf_text, amc_text = _cmu("02_01")
  start = asf_text.index("name ltibia")
  block_start = asf_text.rindex("begin", 0, start)
  block_end = asf_text.index("end", start) + 3
  broken = asf_text[:block_start] + asf_text[block_end:]
  with pytest.raises(motion_lib.MotionError,
                     match=r"x\.asf: hierarchy names bone 'ltibia'"):
    _load(broken, amc_text)
  hierarchy_too = broken.replace("lfemur ltibia", "lfemur").replace(
      "ltibia lfoot", "lfemur lfoot")
  with pytest.raises(motion_lib.MotionError, match=r"x\.(asf|amc): .*ltibia"):
    _load(hierarchy_too, amc_text)


def test_nan_and_bad_values_and_frame_rate():
  asf_text, amc_text = _cmu("02_01")
  nan = amc_text.replace("ltibia 22.3977", "ltibia nan", 1)
  with pytest.raises(motion_lib.MotionError,
                     match=r"x\.amc: NaN/inf value for 'ltibia' in frame 1"):
    _load(asf_text, nan)
  with pytest.raises(motion_lib.MotionError, match=r"x\.amc: .*bad number"):
    _load(asf_text, amc_text.replace("ltibia 22.3977", "ltibia 2x", 1))
  for fps in (0.0, float("nan"), -120.0):
    with pytest.raises(motion_lib.MotionError, match="x.amc: invalid frame"):
      asfamc.load_amc(asf_text, amc_text, clip_id="c/x", subject="c/x",
                      source="c", fps=fps, amc_name="x.amc")
  with pytest.raises(motion_lib.MotionError, match="nothere.asf: cannot read"):
    asfamc.load_amc(CMU / "nothere.asf", CMU / "nothere.amc", clip_id="c/x",
                    subject="c/x", source="c")


@pytest.mark.slow
def test_every_asfamc_clip_loads():
  """All 471 CMU and HDM05 clips load (or name their problem)."""
  for folder, count in ((CMU, 184), (HDM05, 287)):
    start = time.perf_counter()
    loaded, failed, frames = 0, [], 0
    for clip in asfamc.iter_clips(folder):
      try:
        motion = clip.load()
      except motion_lib.MotionError as e:
        failed.append((clip.clip_id, e))
        continue
      loaded += 1
      frames += motion.num_frames
    print(f"{folder.name}: {loaded} clips, {frames} frames at 60 fps in "
          f"{time.perf_counter() - start:.1f} s; failed "
          f"{[f'{clip_id}: {e}' for clip_id, e in failed]}")
    assert loaded + len(failed) == count
    # A failure names its file and its problem.
    assert all(e.path and e.problem and str(e).startswith(e.path)
               for _, e in failed), failed
    assert loaded == count, failed


def test_frames_may_be_numbered_from_zero_but_not_skip():
  asf_text, amc_text = _cmu("02_01")
  lines = amc_text.split("\n")
  numbered = [i for i, l in enumerate(lines) if l.strip().isdigit()]
  for i in numbered:
    lines[i] = str(int(lines[i]) - 1)
  from_zero = _load(asf_text, "\n".join(lines))
  np.testing.assert_allclose(from_zero.local_rotations,
                             _load(asf_text, amc_text).local_rotations)
  lines[numbered[5]] = "99"
  with pytest.raises(motion_lib.MotionError,
                     match="x.amc: frame number 99 follows frame 4"):
    _load(asf_text, "\n".join(lines))
