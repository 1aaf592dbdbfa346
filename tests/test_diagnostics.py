"""memmlp_jax.diagnostics: every row of every window, and the jitter report."""

import os
import pathlib
import zipfile

import numpy as np
import pytest

from memmlp_jax import diagnostics
from memmlp_jax import export
from memmlp_jax import metrics
from memmlp_jax import rollout
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import asfamc
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.models import configs

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
  model, variables = configs.build(cfg), export.random_variables(cfg)
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
