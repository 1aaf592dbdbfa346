"""Test-session setup and the fixtures every test module may share.

  compilation_cache  one persistent XLA cache for the session and the CLIs it
                     starts (inherited through the environment)
  small_free         (data_dir, prepared_dir): the free protocol on two CMU
                     subjects, prepared once
  tiny_run           the workdir of one run of experiments/flags/tiny.flags on
                     small_free, trained once by the train CLI (its smoke test)

Tests that need minutes (real-data trainings, subprocess CLIs, every-clip
loads) are marked `slow`: `pytest -m "not slow"` is the fast loop.
"""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from memmlp_jax import host_memory
from memmlp_jax.data import prepared

# Before any test runs JAX: the CLIs do the same in their main().
host_memory.reuse_freed_memory()

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = (REPO / os.environ.get("MEMMLP_DATA", "../shared/data")).resolve()
TINY_FLAGS = REPO / "experiments" / "flags" / "tiny.flags"
# Real clips for the data-bound tests: two CMU subjects of the free protocol
# (both have train and test clips; the notebook streams 02_01).
SUBJECTS = ("02.zip", "35.zip")


def has_free_data() -> bool:
  return (DATA / "cmu_mocap_asfamc").is_dir()


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA compilation cache for the whole session.

  Set in the environment too, so every CLI the tests start shares it: they
  compile the same programs, and a cache hit skips seconds of XLA.
  """
  path = (os.environ.get("JAX_COMPILATION_CACHE_DIR")
          or str(tmp_path_factory.mktemp("xla_cache")))
  settings = {"JAX_COMPILATION_CACHE_DIR": path,
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  os.environ.update(settings)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


@pytest.fixture(scope="session")
def small_free(tmp_path_factory):
  """(data_dir, prepared_dir) of the free protocol on two CMU subjects."""
  if not has_free_data():
    pytest.skip(f"no real data at {DATA} (set MEMMLP_DATA)")
  root = tmp_path_factory.mktemp("free")
  subjects = root / "data" / "cmu_mocap_asfamc" / "subjects"
  subjects.mkdir(parents=True)
  for name in SUBJECTS:
    (subjects / name).symlink_to(DATA / "cmu_mocap_asfamc" / "subjects" / name)
  out = str(root / "prepared")
  prepared.ensure_prepared("free", str(root / "data"), out,
                           fetch_missing=False, workers=1, log=lambda _: None)
  return str(root / "data"), out


@pytest.fixture(scope="session")
def tiny_run(small_free, tmp_path_factory):
  """The workdir (pathlib.Path) of one tiny.flags run on small_free.

  Trained by `python -m experiments.train`, which makes this the train CLI's
  subprocess smoke test. Read it; never train further in it.
  """
  data_dir, prepared_dir = small_free
  workdir = tmp_path_factory.mktemp("tiny") / "run"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--flagfile={TINY_FLAGS}",
       f"--data_dir={data_dir}", f"--prepared_dir={prepared_dir}",
       f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir
