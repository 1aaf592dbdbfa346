"""memmlp_jax.diagnostics: every row of every window, and the jitter report."""

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import saved_runs

from experiments import diagnose_jitter as diagnose_cli
from memmlp_jax import diagnostics
from memmlp_jax import export
from memmlp_jax import metrics
from memmlp_jax import rollout
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import asfamc
from memmlp_jax.data import bvh
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.models import configs
from memmlp_jax.models import factory
import cli

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = (REPO / os.environ.get("MEMMLP_DATA", "../shared/data")).resolve()
CMU = DATA / "cmu_mocap_asfamc"
BODY = skeleton_lib.SMPL_NEUTRAL
WINDOW = 8
needs_data = pytest.mark.skipif(not CMU.is_dir(),
                                reason=f"no mocap data in {DATA}")


def _cmu_features(frames=120):
  with zipfile.ZipFile(CMU / "subjects" / "02.zip") as archive:
    asf, amc = (archive.read("02.asf").decode("latin-1"),
                archive.read("02_01.amc").decode("latin-1"))
  motion = asfamc.load_amc(asf, amc, clip_id="cmu/02_01", subject="cmu/02",
                           source="cmu")
  return {k: v[:frames] for k, v in motion_lib.features(motion).items()}


def _sliding(values, window):
  """Row r of window t = frame max(0, t - (window - 1) + r)."""
  index = np.maximum(np.arange(len(values))[:, None] - (window - 1)
                     + np.arange(window)[None], 0)
  return values[index]


@needs_data
def test_windows_of_ground_truth_report_its_own_jitter():
  features = _cmu_features()
  head = features["pos"].reshape(-1, 22, 3)[:, 15]
  report = diagnostics.row_report(_sliding(features["rot6d"], WINDOW), head,
                                  BODY, rows=(WINDOW - 1, 0))
  positions = metrics.head_aligned_positions(
      features["rot6d"].astype(np.float64), head.astype(np.float64), BODY)
  frames = len(positions)
  # Row r of the windows inside the clip estimates frames r .. N-T+r.
  for r in (WINDOW - 1, 0):
    expected = metrics.jitter(positions[r:frames - (WINDOW - 1) + r]) / 100
    assert report["row_jitter"][r] == pytest.approx(expected, rel=1e-9)
  within = np.mean([metrics.jitter(positions[t - WINDOW + 1:t + 1])
                    for t in range(WINDOW - 1, frames)]) / 100
  assert report["within_window_jitter"] == pytest.approx(within, rel=1e-9)
  assert report["revision_cm"] == pytest.approx(0.0, abs=1e-9)


@needs_data
def test_windows_that_disagree_jitter_across_but_not_within():
  features = _cmu_features()
  head = features["pos"].reshape(-1, 22, 3)[:, 15]
  windows = _sliding(features["rot6d"], WINDOW).copy()
  # Each window bends the spine by its own constant amount.
  bend = np.random.RandomState(0).randn(len(windows), 1, 6) * 0.05
  windows[:, :, 6 * 3:6 * 4] += bend
  smooth = diagnostics.row_report(_sliding(features["rot6d"], WINDOW), head,
                                  BODY)
  noisy = diagnostics.row_report(windows, head, BODY)
  last = WINDOW - 1
  assert noisy["row_jitter"][last] > 5 * smooth["row_jitter"][last]
  assert noisy["within_window_jitter"] < 1.5 * smooth[
      "within_window_jitter"]
  assert noisy["revision_cm"] > 0.5


def test_a_clip_shorter_than_its_window_is_refused():
  with pytest.raises(ValueError, match="shorter than its 8-frame window"):
    diagnostics.row_report(np.zeros((5, WINDOW, 132)), np.zeros((5, 3)), BODY)


@needs_data
@pytest.mark.parametrize("name,overrides", [
    ("agrol_mlp41", dict(latent_dim=32, num_blocks=2, window=WINDOW)),
    ("memmlp41", dict(latent_dim=32, num_blocks=2, memory_dim=16,
                      vq_codebook_size=16, vq_hidden=32, window=WINDOW,
                      head_blocks=1)),
])
def test_last_row_of_each_window_is_the_online_output(name, overrides):
  cfg = configs.get_config(name, **overrides)
  model, variables = factory.build(cfg), export.random_variables(cfg)
  sparse = _cmu_features(40)["sparse"]
  windows = diagnostics.window_predictions(model, variables, cfg, sparse)
  assert windows.shape == (40, WINDOW, 132)
  online = rollout.rollout_sequences(model, variables, cfg, [sparse])[0]
  np.testing.assert_allclose(windows[:, -1], online["rot6d"], atol=1e-5)
  # Not a copy of one row: earlier rows are other estimates.
  assert np.abs(windows[:, 0] - windows[:, -1]).max() > 1e-3
  with pytest.raises(ValueError, match="clean input"):
    diagnostics.window_predictions(model, variables, cfg,
                                   np.full_like(sparse, np.nan))


BVH_ZIP = DATA / "cmu_mocap_bvh" / "subjects" / "09.zip"


def _diagnose_cli(*args):
  """(exit code, output) of the diagnose_jitter CLI's main, in-process."""
  return cli.run(diagnose_cli, *args)


@pytest.mark.skipif(not BVH_ZIP.exists(), reason=f"no mocap data in {DATA}")
@pytest.mark.slow
def test_cli_reports_every_run_on_a_bvh_folder(tmp_path):
  folder = tmp_path / "bvh"
  folder.mkdir()
  with zipfile.ZipFile(BVH_ZIP) as archive:
    (folder / "09_01.bvh").write_bytes(archive.read("09_01.bvh"))
  saved_runs.save_random_run(tmp_path / "agrol", configs.get_config(
      "agrol_mlp41", latent_dim=16, num_blocks=2, window=WINDOW))
  out = tmp_path / "out" / "jitter.json"
  code, output = _diagnose_cli(f"--bvh_dir={folder}",
                               f"--bvh_map={bvh.CMU_MAP}",
                               f"--workdir={tmp_path / 'agrol'}",
                               f"--out={out}")
  assert code == 0, output[-2000:]
  (row,) = json.loads(out.read_text())
  assert row["model"] == "agrol_mlp41" and row["clips"] == 1
  assert set(row["row_jitter"]) == {"0"}  # a window of 8 has no row 10 back
  assert row["gt_jitter"] > 0 and row["within_window_jitter"] > 0
  assert "| agrol (agrol_mlp41) |" in output
  assert (tmp_path / "out" / "jitter.md").read_text().startswith("| run |")


def test_cli_without_a_checkpoint_says_so(tmp_path):
  code, output = _diagnose_cli("--protocol=free", f"--data_dir={DATA}",
                               f"--workdir={tmp_path}",
                               f"--out={tmp_path}/j.json")
  assert code != 0
  assert "cannot restore a trained model" in output
  assert "Traceback" not in output


def test_cli_reads_every_workdir_given(tmp_path):
  """--workdir repeats, one run each: the second, empty one is named."""
  saved_runs.save_random_run(tmp_path / "agrol", configs.get_config(
      "agrol_mlp41", latent_dim=16, num_blocks=2, window=WINDOW))
  empty = tmp_path / "empty"
  empty.mkdir()
  code, output = _diagnose_cli("--protocol=free", f"--data_dir={DATA}",
                               f"--workdir={tmp_path / 'agrol'}",
                               f"--workdir={empty}",
                               f"--out={tmp_path}/j.json")
  assert code != 0
  assert f"--workdir {empty}: cannot restore a trained model" in output
  assert "Traceback" not in output


@pytest.mark.slow
def test_cli_smoke(tmp_path):
  """The program itself: flags parsed by app.run, a usage error on stderr."""
  result = subprocess.run(
      [sys.executable, "-m", "experiments.diagnose_jitter", "--protocol=free",
       f"--data_dir={DATA}", f"--workdir={tmp_path}",
       f"--out={tmp_path}/j.json"], cwd=REPO, capture_output=True, text=True,
      check=False)
  assert result.returncode != 0
  assert "cannot restore a trained model" in result.stderr
  assert "Traceback" not in result.stderr


@needs_data
def test_teacher_forced_memory_reads_the_true_previous_window():
  cfg = configs.get_config("memmlp41", latent_dim=32, num_blocks=2,
                           memory_dim=16, vq_codebook_size=16, vq_hidden=32,
                           window=WINDOW, head_blocks=1)
  model, variables = factory.build(cfg), export.random_variables(cfg)
  features = _cmu_features(40)
  motion = np.concatenate([features["rot6d"], features["pos"]], axis=-1)
  sparse = features["sparse"]
  forced = diagnostics.window_predictions(model, variables, cfg, sparse,
                                          teacher_motion=motion)
  t = 20
  expected = model.apply(variables, sparse[None, t - WINDOW + 1:t + 1],
                         sparse[None, t - WINDOW:t], motion[None, t - WINDOW:t],
                         alpha=cfg.memory_alpha, train=False)["rot6d"][0]
  np.testing.assert_allclose(forced[t], np.asarray(expected), atol=1e-5)
  own = diagnostics.window_predictions(model, variables, cfg, sparse)
  assert np.abs(own[t] - forced[t]).max() > 1e-4  # it did read another input


def test_a_model_without_rows_is_refused_up_front():
  """avatarposer predicts one frame per window: diagnose_jitter names the
  run before any work instead of failing after the other runs."""
  diagnostics.check_model(configs.get_config("memmlp41"))
  with pytest.raises(ValueError, match="avatarposer predicts only the last"):
    diagnostics.check_model(configs.get_config("avatarposer"))
