"""The ablation CLI: one budget, Markdown tables, resume skips finished."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from experiments import ablate as ablate_cli
from memmlp_jax import evaluation
from memmlp_jax.data import bvh
import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, os.environ.get("MEMMLP_DATA", "../shared/data"))
BVH_ZIP = os.path.join(DATA, "cmu_mocap_bvh", "subjects", "09.zip")
TINY = "agrol_tiny:agrol_mlp41:latent_dim=16:num_blocks=2:window=8"


def _write_split(folder, clips):
  folder.mkdir(parents=True)
  for key in ("sparse", "rot6d", "pos"):
    np.save(folder / f"{key}.npy",
            np.concatenate([getattr(c, key) for c in clips]))
  rows, start = ["clip_id\tsubject\tstart\tlength"], 0
  for clip in clips:
    rows.append(f"{clip.name}\tbvh\t{start}\t{len(clip.sparse)}")
    start += len(clip.sparse)
  (folder / "clips.tsv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  """A prepared folder of real BVH clips: two to train on, one to test."""
  if not os.path.exists(BVH_ZIP):
    pytest.skip(f"no mocap data at {DATA}")
  source = tmp_path_factory.mktemp("bvh")
  with zipfile.ZipFile(BVH_ZIP) as z:
    for name in ("09_01.bvh", "09_02.bvh", "09_03.bvh"):
      (source / name).write_bytes(z.read(name))
  clips, skeleton, _ = evaluation.bvh_clips(str(source), str(bvh.CMU_MAP))
  folder = tmp_path_factory.mktemp("prepared")
  _write_split(folder / "train", clips[:2])
  _write_split(folder / "test", clips[2:])
  (folder / "skeleton.json").write_text(json.dumps(skeleton.to_json()))
  return str(folder)


def _ablate(*args):
  """(exit code, output) of the ablate CLI's main, in-process."""
  return cli.run(ablate_cli, *args)


@pytest.mark.slow
def test_trains_evaluates_tables_and_resumes(prepared_dir, tmp_path):
  args = (f"--workdir={tmp_path}", f"--prepared_dir={prepared_dir}",
          "--use_prepared", "--steps=2", "--batch_size=4",
          "--checkpoint_every=1", "--log_every=1", f"--variant={TINY}",
          "--table=Peers:agrol_tiny")
  code, first = _ablate(*args)
  assert code == 0, first[-2000:]
  assert "agrol_tiny: training and evaluating" in first
  text = (tmp_path / "ablation.md").read_text()
  assert "## Peers" in text and "| agrol_tiny |" in text
  assert "Every variant: 2 steps at batch 4" in text
  results = tmp_path / "agrol_tiny" / "results.json"
  saved = json.loads(results.read_text())
  assert saved["model"] == "agrol_mlp41" and saved["sequences"] == 1
  stamp = os.stat(results).st_mtime_ns

  code, again = _ablate(*args)  # all finished: nothing retrained or rewritten
  assert code == 0, again[-2000:]
  assert "agrol_tiny: finished earlier, skipping" in again
  assert "| agrol_tiny |" in again
  assert os.stat(results).st_mtime_ns == stamp


def test_bad_specs_are_clear_usage_errors(tmp_path):
  for spec, message in [("justaname", "label:model"),
                        ("x:nosuchmodel", "unknown model"),
                        ("x:memmlp41:depth=3", "unknown config fields")]:
    code, output = _ablate(f"--workdir={tmp_path}", f"--variant={spec}")
    assert code != 0
    assert message in output and "Traceback" not in output
  code, output = _ablate(f"--workdir={tmp_path}", "--variant=x:memmlp41",
                         "--table=T:y")
  assert code != 0 and "no --variant labelled" in output


@pytest.mark.slow
def test_seeds_and_recipe_fields(prepared_dir, tmp_path):
  """Each seed trains in its own folder; cells are mean ± std over seeds."""
  recipe = TINY.replace("agrol_tiny", "agrol_own") + (
      ":loss_distance='l2norm':rot_vel_loss=False:optimizer='adam'")
  code, output = _ablate(f"--workdir={tmp_path}",
                         f"--prepared_dir={prepared_dir}", "--use_prepared",
                         "--steps=2", "--batch_size=4", "--checkpoint_every=1",
                         "--log_every=1", "--seeds=0,1", f"--variant={recipe}")
  assert code == 0, output[-2000:]
  for seed in (0, 1):
    saved = json.loads((tmp_path / "agrol_own" / f"seed_{seed}" /
                        "results.json").read_text())
    assert saved["run_config"]["seed"] == seed
    assert saved["run_config"]["optimizer"] == "adam"
    assert saved["run_config"]["model"]["loss_distance"] == "l2norm"
    assert set(saved["frame_weighted"]) >= {"mpjpe", "jitter"}
  text = (tmp_path / "ablation.md").read_text()
  assert "seeds 0, 1" in text and " ± " in text
  assert "frame-weighted" in text and "frames from T-1 on" in text
  summary = json.loads((tmp_path / "ablation.json").read_text())
  assert summary["agrol_own"]["seeds"] == [0, 1]
  assert summary["agrol_own"]["per_sequence"]["seeds"] == 2


def test_bad_recipe_values_are_usage_errors(tmp_path):
  for args, message in [
      (["--variant=x:memmlp41:memory_source='later'"], "memory_source"),
      (["--variant=x:memmlp41", "--seeds=0,0"], "distinct seeds"),
      (["--variant=x:memmlp41", "--seeds=a"], "not integers")]:
    code, output = _ablate(f"--workdir={tmp_path}", *args)
    assert code != 0
    assert message in output and "Traceback" not in output


@pytest.mark.slow
def test_cli_smoke(tmp_path):
  """The program itself: flags parsed by app.run, a usage error on stderr."""
  result = subprocess.run(
      [sys.executable, "-m", "experiments.ablate", f"--workdir={tmp_path}",
       "--variant=justaname"], cwd=REPO, capture_output=True, text=True,
      check=False)
  assert result.returncode != 0
  assert "label:model" in result.stderr and "Traceback" not in result.stderr
