"""The shipped model: a trained run in one checked file.

  source = pretrained.resolve(workdir)      # --workdir, else the shipped file
  cfg, params = pretrained.restore(source)  # a run's folder or a release file

A release file (an .npz written by experiments/release.py) holds a trained
model's parameters, the frozen VQ part included, stored as float32 or
float16, and ``meta``: the run's config (run_config.RunConfig, enough to
rebuild the model), its training step, the stored dtype and the few-clip
check its model card quotes (``check_scores``). The model needs nothing
else: its inputs are not normalised (docs/design.md §1).

Next to NAME.npz, NAME.npz.sha256 records its checksum in sha256sum's
format. Loading verifies it before reading anything, so a corrupt, truncated
or replaced file is refused by name; what cannot be read, or does not fit
its config, raises ``PretrainedError`` too, a ValueError whose text names
the file and what is wrong (the CLIs print it as one line).
"""

import dataclasses
import hashlib
import io
import json
import os
import zipfile

from flax import traverse_util
import jax
import numpy as np

from memmlp_jax import checkpoints
from memmlp_jax import dims
from memmlp_jax import metrics
from memmlp_jax import rollout
from memmlp_jax import run_config
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import protocols
from memmlp_jax.models import factory

# Where the repository keeps the shipped model; $MEMMLP_PRETRAINED overrides.
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "pretrained", "memmlp41_free.npz")
ENV_VAR = "MEMMLP_PRETRAINED"
# A shipped model stays small enough to keep in the repository.
MAX_BYTES = 20_000_000
DTYPES = ("float32", "float16")
FORMAT_VERSION = 1
_META = "meta"
_PARAMS = "params/"
# Fixed zip dates: the file's bytes, so its checksum, depend on the model
# alone, and releasing a run twice gives the same file.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class PretrainedError(ValueError):
  """No model to run, or a release file that cannot be used (named)."""


@dataclasses.dataclass(frozen=True)
class Release:
  """What a release file holds.

  Attributes:
    config: the run's configuration (the model is ``config.model``).
    params: the model's parameters as float32 arrays (a nested dict).
    step: the stage-2 training step they come from.
    dtype: how the file stores them, one of DTYPES.
    check: the card's few-clip check, ``{"clips": [clip ids], "mpjpe": cm,
      "mpjre": deg}`` (``check_scores``), or None.
  """
  config: run_config.RunConfig
  params: dict
  step: int
  dtype: str = "float32"
  check: dict | None = None


def shipped_path() -> str:
  """$MEMMLP_PRETRAINED, else the repository's pretrained/memmlp41_free.npz."""
  return os.environ.get(ENV_VAR) or SHIPPED


def resolve(workdir: str | None) -> str:
  """The model a command runs: ``workdir`` when given, else the shipped file.

  Raises PretrainedError, saying what to do, when neither is there.
  """
  if workdir:
    return workdir
  path = shipped_path()
  if not os.path.isfile(path):
    raise PretrainedError(
        f"no model to run: pass --workdir=RUN (a run trained by python -m "
        f"experiments.train, see docs/training.md), or put the shipped model "
        f"at {path} (pretrained/README.md; ${ENV_VAR} sets another path)")
  return path


def restore_run(source: str):
  """(RunConfig, params) of a training run's folder or a release file."""
  if os.path.isfile(source):
    release = load(source)
    return release.config, release.params
  return checkpoints.restore_run(source)


def restore(source: str):
  """(ModelConfig, params) of a training run's folder or a release file."""
  config, params = restore_run(source)
  return config.model, params


def stored(params, dtype: str) -> dict:
  """``params`` as a release file stored at ``dtype`` gives them back."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
  return jax.tree.map(
      lambda x: np.asarray(x).astype(dtype).astype(np.float32), params)


def checksum_path(path: str) -> str:
  return path + ".sha256"


def save(path: str, release: Release) -> str:
  """Writes ``path`` and its checksum file; returns the sha256.

  Refuses (PretrainedError, nothing written) a file over MAX_BYTES.
  """
  meta = {"format": FORMAT_VERSION, "config": release.config.to_json(),
          "step": release.step, "dtype": release.dtype,
          "check": release.check}
  arrays = {_META: np.frombuffer(json.dumps(meta, sort_keys=True).encode(),
                                 np.uint8)}
  for key, value in traverse_util.flatten_dict(release.params,
                                               sep="/").items():
    arrays[_PARAMS + key] = np.asarray(value).astype(release.dtype)
  content = _npz_bytes(arrays)
  if len(content) > MAX_BYTES:
    raise PretrainedError(
        f"{path}: {len(content):,} bytes, over the {MAX_BYTES:,} a shipped "
        "model may have; not written (float16 halves a float32 file)")
  digest = hashlib.sha256(content).hexdigest()
  _write_atomically(path, content)
  _write_atomically(checksum_path(path),
                    f"{digest}  {os.path.basename(path)}\n".encode())
  return digest


def load(path: str) -> Release:
  """The release in ``path``, after checking it (PretrainedError if bad)."""
  expected = recorded_sha256(path)
  try:
    with open(path, "rb") as f:
      content = f.read()
  except OSError as e:
    raise PretrainedError(f"{path}: cannot read the model ({e})") from None
  actual = hashlib.sha256(content).hexdigest()
  if actual != expected:
    raise PretrainedError(
        f"{path}: sha256 {actual} is not the {expected} that "
        f"{checksum_path(path)} records: the file is corrupt, truncated or "
        "replaced; release or fetch it again")
  if not zipfile.is_zipfile(io.BytesIO(content)):
    raise PretrainedError(f"{path}: not a release file (not an .npz "
                          "archive)")
  try:
    with np.load(io.BytesIO(content), allow_pickle=False) as data:
      arrays = {name: data[name] for name in data.files}
    meta = json.loads(bytes(arrays.pop(_META)).decode())
  except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
    raise PretrainedError(f"{path}: not a release file ({e})") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
    raise PretrainedError(f"{path}: not a release file of format "
                          f"{FORMAT_VERSION}, the one this code reads")
  missing = sorted({"config", "step", "dtype"} - set(meta))
  if missing:
    raise PretrainedError(f"{path}: its meta has no {', '.join(missing)}")
  try:
    config = run_config.RunConfig.from_json(meta["config"])
  except (KeyError, TypeError, ValueError) as e:
    raise PretrainedError(f"{path}: its run config is not one this code "
                          f"builds a model from ({e!r})") from None
  odd = sorted(k for k, v in arrays.items() if v.dtype.name not in DTYPES)
  if odd:
    raise PretrainedError(f"{path}: arrays {', '.join(odd[:3])} are not "
                          f"stored as one of {DTYPES}")
  params = traverse_util.unflatten_dict(
      {k[len(_PARAMS):]: v.astype(np.float32) for k, v in arrays.items()},
      sep="/")
  _check_fit(path, config.model, params)
  return Release(config, jax.tree.map(jax.numpy.asarray, params),
                 meta["step"], meta["dtype"], meta.get("check"))


def recorded_sha256(path: str) -> str:
  """The checksum that ``path``'s checksum file records."""
  sidecar = checksum_path(path)
  try:
    with open(sidecar, encoding="utf-8") as f:
      digest = f.read().split(maxsplit=1)[0]
  except (OSError, IndexError, UnicodeDecodeError) as e:
    raise PretrainedError(f"{path}: no readable checksum file {sidecar} "
                          f"({e!r}); a model is loaded only when its sha256 "
                          "is recorded next to it") from None
  return digest.lower()


def _check_fit(path: str, cfg, params) -> None:
  """Raises PretrainedError unless ``params`` are ``cfg``'s model's."""
  expected = traverse_util.flatten_dict(jax.eval_shape(
      lambda: factory.init(cfg, jax.random.PRNGKey(0))[1])["params"])
  found = traverse_util.flatten_dict(params)
  problems = [f"missing {'/'.join(k)}" for k in expected if k not in found]
  problems += [f"unexpected {'/'.join(k)}" for k in found
               if k not in expected]
  problems += [f"{'/'.join(k)} has shape {found[k].shape}, the config's "
               f"model {expected[k].shape}"
               for k in expected if k in found
               and tuple(found[k].shape) != tuple(expected[k].shape)]
  if problems:
    raise PretrainedError(
        f"{path}: the parameters do not fit its config ({cfg.name}): "
        + "; ".join(problems[:5])
        + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))


def _npz_bytes(arrays: dict) -> bytes:
  """An .npz (np.load reads it) of ``arrays``, names sorted, dates fixed."""
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
    for name in sorted(arrays):
      info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
      with archive.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array(f, arrays[name], allow_pickle=False)
  return buffer.getvalue()


def _write_atomically(path: str, content: bytes) -> None:
  """No half-written file is left when the process dies mid-write."""
  with open(path + ".tmp", "wb") as f:
    f.write(content)
  os.replace(path + ".tmp", path)


# --- The card's check ------------------------------------------------------


def check_clips(data_dir: str, names):
  """(sparse, rot6d, pos) per named clip of the free test split, and the
  body they are on; raises ValueError naming a clip that is not there."""
  tests = {ref.clip_id: ref for ref in protocols.free(data_dir).test}
  absent = [name for name in names if name not in tests]
  if absent:
    raise ValueError(f"{data_dir}: no free test clip {', '.join(absent)}")
  clips, body = [], None
  for name in names:
    motion = tests[name].load()
    features = motion_lib.features(motion)
    clips.append((features["sparse"], features["rot6d"], features["pos"]))
    body = motion.skeleton
  return clips, body


def check_scores(cfg, params, clips, body) -> dict:
  """MPJPE (cm) and MPJRE (deg) of the online rollout, averaged over clips.

  The few-clip figure a model card quotes and a test recomputes: the same
  metrics as experiments.evaluate, on ``check_clips``.
  """
  poses = rollout.rollout_sequences(
      factory.build(cfg), {"params": params}, cfg,
      [sparse for sparse, _, _ in clips], skeleton=body)
  scores = metrics.average([
      metrics.sequence_metrics(pose["rot6d"], rot6d, pos,
                               pos[:, dims.HEAD_POS_COLUMNS], body)
      for pose, (_, rot6d, pos) in zip(poses, clips)])
  return {"mpjpe": scores["mpjpe"], "mpjre": scores["mpjre"]}
