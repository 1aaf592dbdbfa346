"""The predict CLI: recordings and mocap in, BVH / npz / GIF out; bad input."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import zipfile

from absl import app
from absl import flags
from absl.testing import flagsaver
import numpy as np
from PIL import Image
import pytest

from experiments import predict
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax import render
from memmlp_jax.data import asfamc
from memmlp_jax.data import bvh
from memmlp_jax.data import tracking
import synthetic_amass
import test_tracking  # the Unity recording writer of the tracking tests

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), os.environ.get("MEMMLP_DATA", "../shared/data"))
CMU = os.path.join(DATA, "cmu_mocap_asfamc", "subjects", "02.zip")
CMU_BVH = os.path.join(DATA, "cmu_mocap_bvh", "subjects", "09.zip")


_WRIST_OFFSET = ",".join(str(v) for v in test_tracking.RIGHT_WRIST_OFFSET)
AMC_FRAMES = 122  # the first second of the walk: 61 frames at 60 fps


def _first_amc_frames(text, count):
  """An AMC cut after frame ``count`` (a frame starts with its number)."""
  lines = text.splitlines()
  end = lines.index(str(count + 1)) if str(count + 1) in lines else len(lines)
  return "\n".join(lines[:end]) + "\n"


@pytest.fixture(scope="module")
def cmu(tmp_path_factory):
  """02.asf and the first second of 02_01.amc (a walk), and the clip."""
  if not os.path.exists(CMU):
    pytest.skip(f"no mocap data at {DATA}")
  folder = tmp_path_factory.mktemp("cmu")
  with zipfile.ZipFile(CMU) as z:
    (folder / "02.asf").write_bytes(z.read("02.asf"))
    (folder / "02_01.amc").write_text(_first_amc_frames(
        z.read("02_01.amc").decode("latin-1"), AMC_FRAMES))
  clip = asfamc.load_amc(str(folder / "02.asf"), str(folder / "02_01.amc"),
                         clip_id="cmu/02_01", subject="cmu/02", source="cmu")
  assert clip.num_frames == AMC_FRAMES // 2
  return folder, clip


@pytest.fixture(scope="module")
def run(small_random_run):
  """A very small Mem-MLP (memory, no VQ code) at random weights."""
  return small_random_run


def _main(**flag_values):
  with flagsaver.flagsaver():
    flags.FLAGS(["predict"] + [f"--{k}={v}" for k, v in flag_values.items()])
    predict.main(["predict"])


def _identity_map(tmp_path, units_to_m=1.0):
  path = tmp_path / "canonical.json"
  path.write_text(json.dumps({
      "joints": {n: n for n in skeleton_lib.JOINT_NAMES},
      "units_to_m": units_to_m, "up": "y"}))
  return path


def _unity_recording(clip, path, lost_left=(), keep_frame_times=False):
  """The clip's head and wrists as a 90 Hz Unity recording.

  With ``keep_frame_times`` the samples are the clip's 60 fps frames plus
  one midpoint every other frame (still 90 Hz), so resampling is exact.
  """
  rotations, positions = test_tracking._tracked(clip)
  frame_times = np.arange(clip.num_frames) / clip.fps
  times = np.linspace(0.0, frame_times[-1], int(frame_times[-1] * 90) + 1)
  if keep_frame_times:
    times = np.sort(np.concatenate(
        [frame_times, frame_times[:-1:2] + 0.5 / clip.fps]))
  flags_ = np.ones((len(times), 2), int)
  flags_[list(lost_left), 0] = 0
  path.write_text(test_tracking._unity_csv(
      times, *test_tracking._interpolate(frame_times, rotations, positions,
                                         times), flags_))
  return path


def test_recording_to_bvh_npz_and_gif(run, cmu, tmp_path, capsys):
  _, clip = cmu
  recording = _unity_recording(clip, tmp_path / "walk.csv",
                               lost_left=range(45, 50))
  height = 1.70
  _main(workdir=run, input=recording, output=tmp_path / "walk.bvh",
        npz=tmp_path / "walk.npz", gif=tmp_path / "walk.gif", height=height,
        wrist_offset=_WRIST_OFFSET)
  timing = capsys.readouterr().out.strip().splitlines()[-1]
  assert "60 frames" in timing and "predict" in timing, timing
  out = np.load(tmp_path / "walk.npz")
  positions = out["positions"]
  assert positions.shape == (60, 22, 3) and np.isfinite(positions).all()
  # The body is scaled to the user and its head follows the tracked head.
  scaled = skeleton_lib.SMPL_NEUTRAL.scaled(
      height / skeleton_lib.SMPL_NEUTRAL.height())
  np.testing.assert_allclose(out["offsets"], scaled.offsets, atol=1e-12)
  tracked = tracking.load_tracking_csv(str(recording),
                                       test_tracking._unity())
  np.testing.assert_allclose(positions[:, 15], tracked.positions[1:, 0],
                             atol=1e-5)
  # Lost left-hand samples 45..49 (0.5-0.544 s) spoil frames 30..33, and
  # their features reach the model as NaN in output frames 29..33 (each
  # frame's features also use the frame before), and only those.
  assert np.flatnonzero(out["lost"]).tolist() == [29, 30, 31, 32, 33]
  # The BVH holds exactly the prediction, on the user-sized body: our BVH
  # reader's FK of the file (not retargeted, which would resize the body).
  held = bvh.parse_bvh(str(tmp_path / "walk.bvh"))
  _, read_back = bvh.to_source(held, 1.0, "y").world_pose()
  order = [held.names.index(n) for n in skeleton_lib.JOINT_NAMES]
  np.testing.assert_allclose(read_back[:, order], positions, atol=1e-4)
  gif = Image.open(tmp_path / "walk.gif")
  assert gif.n_frames == 15  # 60 frames at the GIF's 15 fps


def test_mocap_input_is_scored_and_drawn_next_to_its_ground_truth(
    run, cmu, tmp_path, capsys):
  folder, clip = cmu
  _main(workdir=run, input=folder / "02_01.amc", asf=folder / "02.asf",
        output=tmp_path / "amc.bvh", npz=tmp_path / "amc.npz",
        gif=tmp_path / "amc.gif", bvh_units="cm", bvh_order="XYZ")
  printed = capsys.readouterr().out
  assert "against the ground truth: MPJPE" in printed
  out = np.load(tmp_path / "amc.npz")
  _, truth = clip.global_pose()
  np.testing.assert_allclose(out["positions"][:, 15], truth[1:, 15],
                             atol=1e-5)
  # Two panels, prediction and ground truth: twice a single panel's width.
  render.animate([truth[:4]], skeleton_lib.PARENTS, str(tmp_path / "one.gif"))
  assert (Image.open(tmp_path / "amc.gif").size[0] ==
          2 * Image.open(tmp_path / "one.gif").size[0])
  # The same clip as a Unity recording gives the same prediction.
  recording = _unity_recording(clip, tmp_path / "walk.csv",
                               keep_frame_times=True)
  _main(workdir=run, input=recording, output=tmp_path / "rec.bvh",
        npz=tmp_path / "rec.npz", wrist_offset=_WRIST_OFFSET)
  np.testing.assert_allclose(np.load(tmp_path / "rec.npz")["positions"],
                             out["positions"], atol=1e-4)
  # A user 10% taller, with --height: the same motion, 10% larger.
  scale = 1.1
  taller = dataclasses.replace(
      clip, root_translation=clip.root_translation * scale,
      skeleton=clip.skeleton.scaled(scale))
  recording = _unity_recording(taller, tmp_path / "tall.csv",
                               keep_frame_times=True)
  _main(workdir=run, input=recording, output=tmp_path / "tall.bvh",
        npz=tmp_path / "tall.npz", wrist_offset=_WRIST_OFFSET,
        height=scale * skeleton_lib.SMPL_NEUTRAL.height())
  np.testing.assert_allclose(np.load(tmp_path / "tall.npz")["positions"],
                             scale * out["positions"], atol=2e-4)
  # What the BVH holds, read back and retargeted to the same body, is the
  # prediction (channels in centimetres and XYZ order).
  motion = bvh.load_bvh(
      str(tmp_path / "amc.bvh"),
      bvh.load_joint_map(str(_identity_map(tmp_path, units_to_m=0.01))),
      clip_id="p/amc", subject="p/u", source="p")
  np.testing.assert_allclose(motion.global_pose()[1], out["positions"],
                             atol=1e-4)


def test_bvh_input_with_a_joint_map(run, tmp_path, capsys):
  if not os.path.exists(CMU_BVH):
    pytest.skip(f"no mocap data at {DATA}")
  with zipfile.ZipFile(CMU_BVH) as z:
    (tmp_path / "09_01.bvh").write_bytes(z.read("09_01.bvh"))
  _main(workdir=run, input=tmp_path / "09_01.bvh", bvh_map=bvh.CMU_MAP,
        output=tmp_path / "run.bvh")
  assert "against the ground truth" in capsys.readouterr().out
  assert (tmp_path / "run.bvh").exists()


def test_amass_input_keeps_the_body_model(run, tmp_path, capsys):
  model = synthetic_amass.write_body_model(tmp_path / "smplh" / "model.npz")
  clip = synthetic_amass.write_clip(tmp_path / "walk_poses.npz",
                                    num_frames=40)
  _main(workdir=run, input=clip, body_model=model,
        output=tmp_path / "amass.bvh", npz=tmp_path / "amass.npz")
  assert "against the ground truth" in capsys.readouterr().out
  out = np.load(tmp_path / "amass.npz")
  assert out["positions"].shape == (19, 22, 3)  # 20 frames at 60 fps
  rest = synthetic_amass.rest_joints()[:22]
  offsets = rest - np.concatenate([[np.zeros(3)], rest[
      list(skeleton_lib.PARENTS[1:])]])
  np.testing.assert_allclose(out["offsets"][1:], offsets[1:], atol=1e-6)


def test_bad_input_is_named(run, cmu, tmp_path):
  folder, clip = cmu
  recording = _unity_recording(clip, tmp_path / "walk.csv")
  lines = recording.read_text().splitlines()
  lines[7] = lines[7].rsplit(",", 3)[0]
  (tmp_path / "bad.csv").write_text("\n".join(lines))
  common = {"workdir": run, "output": tmp_path / "o.bvh"}
  with pytest.raises(SystemExit, match=r"bad\.csv: line 8: 21 columns"):
    _main(input=tmp_path / "bad.csv", **common)
  with pytest.raises(app.UsageError, match="--bvh_map"):
    _main(input=tmp_path / "x.bvh", **common)
  with pytest.raises(app.UsageError, match="--asf"):
    _main(input=folder / "02_01.amc", **common)
  with pytest.raises(app.UsageError, match="--body_model"):
    _main(input=tmp_path / "clip.npz", **common)
  with pytest.raises(app.UsageError, match="unknown extension '.txt'"):
    _main(input=tmp_path / "walk.txt", **common)
  with pytest.raises(app.UsageError, match="--height applies to .csv"):
    _main(input=folder / "02_01.amc", asf=folder / "02.asf", height=1.7,
          **common)
  with pytest.raises(app.UsageError, match="plausible"):
    _main(input=recording, height=17, **common)
  with pytest.raises(app.UsageError, match="wrist_offset"):
    _main(input=recording, wrist_offset="1,2", **common)
  with pytest.raises(SystemExit, match="no run config"):
    _main(input=recording, workdir=tmp_path, output=tmp_path / "o.bvh")
  assert not (tmp_path / "o.bvh").exists()


@pytest.mark.slow
def test_cli_smoke(run, cmu, tmp_path):
  """The program itself, once: a recording in, a BVH out."""
  recording = _unity_recording(cmu[1], tmp_path / "walk.csv")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.predict", f"--workdir={run}",
       f"--input={recording}", f"--output={tmp_path / 'walk.bvh'}"],
      cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True,
      text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "60 frames" in result.stdout
  assert (tmp_path / "walk.bvh").stat().st_size > 0
