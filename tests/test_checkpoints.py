"""Tests for reading a run: params-only restore, no trainer in inference."""

import ast
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from memmlp_jax import checkpoints
from memmlp_jax import export
from memmlp_jax.models import configs

import saved_runs

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(window=16, latent_dim=32, num_blocks=2, head_blocks=1,
            memory_dim=16, vq_hidden=32, vq_codebook_size=32)


def test_restore_reads_the_saved_model_params(tmp_path):
  cfg = configs.get_config("memmlp41", **TINY)
  saved_runs.save_random_run(tmp_path, cfg)
  restored_cfg, params = checkpoints.restore(str(tmp_path))
  expected = export.random_variables(cfg)["params"]
  assert restored_cfg == cfg
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert isinstance(got, jax.Array)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_latest_step_of_a_missing_stage_is_none(tmp_path):
  assert checkpoints.latest_step(str(tmp_path / "memmlp")) is None


@pytest.mark.slow
def test_inference_code_does_not_import_the_trainer():
  """The inference CLIs name no trainer module, and the library modules they
  use pull none in (one process: the CLIs' flags would collide)."""
  for cli in ("evaluate", "export", "diagnose_jitter"):
    tree = ast.parse((REPO / "experiments" / f"{cli}.py").read_text())
    imported = {alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert not imported & {"train", "losses"}, cli
  modules = ["memmlp_jax.checkpoints", "memmlp_jax.evaluation",
             "memmlp_jax.export", "memmlp_jax.diagnostics"]
  code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
          "print(sorted(m for m in ('memmlp_jax.train', 'memmlp_jax.losses',"
          " 'clu', 'tensorflow') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == "[]"
