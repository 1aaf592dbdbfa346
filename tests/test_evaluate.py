"""Evaluation on real BVH clips with a tiny run at random weights; the CLI."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image
import pytest

from experiments import evaluate as evaluate_cli
from memmlp_jax import checkpoints
from memmlp_jax import evaluation
from memmlp_jax import metrics
from memmlp_jax import run_config
from memmlp_jax.data import bvh
from memmlp_jax.models import configs
import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, os.environ.get("MEMMLP_DATA", "../shared/data"))
BVH_ZIP = os.path.join(DATA, "cmu_mocap_bvh", "subjects", "09.zip")
CLIPS = ("09_01.bvh", "09_02.bvh")  # runs, about 70 frames each at 60 fps


@pytest.fixture(scope="module")
def bvh_dir(tmp_path_factory):
  if not os.path.exists(BVH_ZIP):
    pytest.skip(f"no mocap data at {DATA}")
  folder = tmp_path_factory.mktemp("bvh")
  with zipfile.ZipFile(BVH_ZIP) as z:
    for name in CLIPS:
      (folder / name).write_bytes(z.read(name))
  return str(folder)


@pytest.fixture(scope="module")
def clips(bvh_dir):
  loaded, skeleton, skipped = evaluation.bvh_clips(bvh_dir, str(bvh.CMU_MAP))
  assert not skipped and len(loaded) == 2
  return loaded, skeleton


@pytest.fixture(scope="module")
def run(small_random_run):
  """A tiny Mem-MLP at random weights: evaluation needs a run, not a
  trained one."""
  return small_random_run


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.evaluate", *args],
                        cwd=REPO, capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_results_table_and_heatmap(run, clips, tmp_path):
  loaded, skeleton = clips
  cfg, params = checkpoints.restore(run)
  results, rows = evaluation.evaluate(cfg, params, loaded, skeleton)
  for key in metrics.COLUMNS + ("gt_jitter", "sequences", "frames", "model",
                                "params", "gflops", "nan_frames", "timing"):
    assert key in results, key
  assert results["sequences"] == 2 and results["nan_frames"] == 0
  assert results["model"] == "memmlp41" and results["params"] > 0
  assert results["gflops"] > 0 and not results["ik"]
  for key in metrics.COLUMNS:
    assert np.isfinite(results[key]) and results[key] > 0
  assert rows[0]["per_joint"].shape == (22,)
  table = evaluation.write_outputs(str(tmp_path / "r.json"), results, rows,
                                   "tiny")
  assert table.startswith("| Method | MPJRE | MPJPE | MPJVE | Hand PE |")
  saved = json.loads((tmp_path / "r.json").read_text())
  assert len(saved["per_sequence"][1]["per_joint"]) == 22
  assert (tmp_path / "r.md").read_text() == table
  assert Image.open(tmp_path / "r.png").size[0] > 100
  assert evaluation.timing_line(results).startswith("timing: 2 sequences")

  refined, _ = evaluation.evaluate(cfg, params, loaded, skeleton, use_ik=True)
  assert refined["ik"] and "IK" in refined["mode"]
  assert refined["mpjpe"] != results["mpjpe"]


@pytest.mark.slow
def test_cli_prints_table_and_timing(run, bvh_dir, tmp_path):
  folder = tmp_path / "clips"
  shutil.copytree(bvh_dir, folder)
  (folder / "broken.bvh").write_text("HIERARCHY\nROOT Hips\n")
  out = tmp_path / "results.json"
  result = _cli(f"--workdir={run}", f"--out={out}", f"--bvh_dir={folder}",
                "--bvh_map=cmu_bvh")  # a shipped map, by name
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| memmlp41 |" in result.stdout
  assert "loaded 2 clip(s), 1 skipped" in result.stdout
  assert "timing: 2 sequences" in result.stdout
  saved = json.loads(out.read_text())
  assert saved["source"] == str(folder) and saved["loaded"] == 2
  [skipped] = saved["skipped"]
  assert skipped["clip"] == "broken.bvh"
  assert "broken.bvh: no HIERARCHY/MOTION" in skipped["reason"]
  assert (tmp_path / "results.png").exists()


@pytest.mark.slow
def test_cli_bad_input_gets_a_clear_message(run, bvh_dir, tmp_path):
  untrained = tmp_path / "untrained"
  untrained.mkdir()
  shutil.copy(os.path.join(run, run_config.CONFIG_FILE), untrained)
  data = json.loads(bvh.CMU_MAP.read_text())
  del data["joints"]["head"]
  no_head = tmp_path / "no_head.json"
  no_head.write_text(json.dumps(data))
  no_reference = tmp_path / "no_reference.json"
  no_reference.write_text(json.dumps(
      {**json.loads(bvh.CMU_MAP.read_text()),
       "reference": {"bvh": "tpose.bvh", "frame": 0}}))
  cases = [
      ((f"--workdir={untrained}", f"--bvh_map={bvh.CMU_MAP}"),
       "no trained model checkpoint"),
      ((f"--workdir={run}", f"--bvh_map={no_head}"), "no_head.json"),
      ((f"--workdir={run}", f"--bvh_map={no_reference}"),
       "no_reference.json: reference file 'tpose.bvh'"),
  ]
  for args, message in cases:
    code, output = cli.run(evaluate_cli, *args, f"--out={tmp_path / 'r.json'}",
                           f"--bvh_dir={bvh_dir}")
    assert code != 0
    assert message in output and "Traceback" not in output


def test_bvh_map_missing_a_joint_is_named(bvh_dir, tmp_path):
  data = json.loads(bvh.CMU_MAP.read_text())
  del data["joints"]["head"]
  bad_map = tmp_path / "no_head.json"
  bad_map.write_text(json.dumps(data))
  with pytest.raises(ValueError, match="no_head.json.*head"):
    evaluation.bvh_clips(bvh_dir, str(bad_map))


def test_modes_that_do_not_fit_the_model(run):
  cfg, _ = checkpoints.restore(run)
  with pytest.raises(ValueError, match="offline protocol"):
    evaluation.check_mode(cfg, use_ik=False, offline=True)
  agrol = configs.get_config("agrol_mlp41")
  with pytest.raises(ValueError, match="no position branch"):
    evaluation.check_mode(agrol, use_ik=True, offline=False)


def test_short_and_lost_sequences(run, clips):
  loaded, skeleton = clips
  cfg, params = checkpoints.restore(run)
  short = evaluation.Clip("short", *(x[:5] for x in (
      loaded[0].sparse, loaded[0].rot6d, loaded[0].pos)))  # < window
  tiny = evaluation.Clip("tiny", *(x[:3] for x in (
      loaded[0].sparse, loaded[0].rot6d, loaded[0].pos)))
  lost = evaluation.Clip("lost", loaded[1].sparse.copy(), loaded[1].rot6d,
                         loaded[1].pos)
  lost.sparse[10:13, 45:54] = np.nan  # the right hand's tracker drops out
  kept, skipped = evaluation.scorable([short, tiny, lost])
  assert [c.name for c in kept] == ["short", "lost"]
  assert skipped[0]["clip"] == "tiny" and "at least 4" in skipped[0]["reason"]
  results, rows = evaluation.evaluate(cfg, params, kept, skeleton, lanes=2)
  assert [r["nan_frames"] for r in rows] == [0, 3]
  assert results["nan_frames"] == 3
  assert all(np.isfinite(results[k]) for k in metrics.COLUMNS)
