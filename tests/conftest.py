"""Test-session setup and the fixtures every test module may share.

  compilation_cache  the persistent XLA compilation cache of the session and
                     of the CLIs it starts (inherited through the
                     environment): pytest's cache folder
                     (.pytest_cache/d/xla, kept between sessions, so a
                     second run compiles almost nothing), or a folder of this
                     session alone under `-p no:cacheprovider` (CI), or
                     $JAX_COMPILATION_CACHE_DIR when set
  small_free         (data_dir, prepared_dir): the free protocol on two CMU
                     subjects, prepared once
  tiny_run           the workdir of one run of experiments/flags/tiny.flags on
                     small_free, trained once by the train CLI's main
                     (in-process)
  random_run         the workdir of tiny.flags' model at its random
                     initialisation, saved as training saves a run: for
                     tests that need a run but not a trained one
  small_random_run   the same for a smaller Mem-MLP without the VQ code
                     (window 8; no near-tie VQ codes to flip), as a str

Tests that train (compile and run a training step), roll out real data,
start CLIs as subprocesses or load every clip are marked `slow`:
`pytest -m "not slow"` is the fast loop. A test that asks for tiny_run is
marked `slow` here (the fixture trains).
"""

import os
import pathlib
import shutil
import tempfile

# Before JAX starts its backend, for this process and the CLIs it starts:
# the tests' programs are tiny and compiled once each, so LLVM's optimisation
# passes cost far more than they save (about half of a training test's time).
_FAST_COMPILE = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      filter(None, [os.environ.get("XLA_FLAGS"), _FAST_COMPILE]))

import jax  # pylint: disable=g-import-not-at-top,g-bad-import-order
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


def pytest_collection_modifyitems(items):
  """A test that needs the trained tiny run trains (once per session)."""
  for item in items:
    if "tiny_run" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.slow)


def has_free_data() -> bool:
  return (DATA / "cmu_mocap_asfamc").is_dir()


# The kept XLA cache is emptied when it grows past this (entries of programs
# the code no longer compiles are never read again).
_XLA_CACHE_LIMIT = 2 * 2**30
_SESSION_CACHE = []  # a cache folder of this session alone, removed after


def _folder_bytes(path: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _xla_cache_dir(config) -> str:
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  cache = getattr(config, "cache", None)
  if cache is None:  # -p no:cacheprovider: nothing is kept between sessions
    path = tempfile.mkdtemp(prefix="memmlp_xla_")
    _SESSION_CACHE.append(path)
    return path
  path = cache.mkdir("xla")
  if _folder_bytes(path) > _XLA_CACHE_LIMIT:
    # Each pytest-xdist worker configures itself: tolerate the other's turn.
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(exist_ok=True)
  return str(path)


def pytest_configure(config):
  """The persistent XLA compilation cache, before anything compiles.

  In the environment too, so every CLI the tests start shares it: they
  compile the same programs, and a hit skips seconds of XLA. Every program
  is kept, however fast it compiled: on a loaded 2-core machine even the
  small ones add up.
  """
  path = _xla_cache_dir(config)
  os.environ.update({"JAX_COMPILATION_CACHE_DIR": path,
                     "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                     "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
  del config
  for path in _SESSION_CACHE:
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def compilation_cache():
  """The folder of the session's persistent XLA compilation cache."""
  return os.environ["JAX_COMPILATION_CACHE_DIR"]


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

  Trained by the train CLI's main in-process (tests/cli.py); the kill -9
  test of tests/test_train.py runs the same flags as a program and compares.
  Read it; never train further in it.
  """
  import cli  # pylint: disable=g-import-not-at-top
  from experiments import train as train_cli  # pylint: disable=g-import-not-at-top
  data_dir, prepared_dir = small_free
  workdir = tmp_path_factory.mktemp("tiny") / "run"
  code, output = cli.run(train_cli, f"--flagfile={TINY_FLAGS}",
                         f"--data_dir={data_dir}",
                         f"--prepared_dir={prepared_dir}",
                         f"--workdir={workdir}")
  assert code == 0, output[-3000:]
  return workdir


@pytest.fixture(scope="session")
def random_run(tmp_path_factory):
  """The workdir (pathlib.Path) of tiny.flags' model at random weights."""
  import saved_runs  # pylint: disable=g-import-not-at-top
  from memmlp_jax.models import configs  # pylint: disable=g-import-not-at-top
  flag_values = {}  # tiny.flags' --model and --model_override lines
  for line in TINY_FLAGS.read_text().splitlines():
    name, _, value = line.partition("=")
    flag_values.setdefault(name, []).append(value)
  overrides = configs.parse_overrides(flag_values["--model_override"])
  cfg = configs.get_config(flag_values["--model"][0], **overrides)
  workdir = tmp_path_factory.mktemp("random") / "run"
  saved_runs.save_random_run(workdir, cfg)
  return workdir


@pytest.fixture(scope="session")
def small_random_run(tmp_path_factory):
  """The workdir (str) of a small Mem-MLP (memory block, no VQ code, window
  8) at random weights, saved as training saves a run."""
  import saved_runs  # pylint: disable=g-import-not-at-top
  from memmlp_jax.models import configs  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("small_random") / "run"
  saved_runs.save_random_run(workdir, configs.get_config(
      "memmlp41", window=8, latent_dim=16, num_blocks=2, head_blocks=1,
      memory_dim=8, use_vq_code=False))
  return str(workdir)
