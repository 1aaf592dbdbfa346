"""Prepared datasets: a protocol's features, memory-mappable, cached.

Layout of a prepared folder DIR (docs/CONTRACT.md, "Prepared datasets"):

  manifest.json   {"protocol", "fps": 60, "train": {"clips", "frames"},
                   "test": {...}, "skipped": [{"clip", "reason"}]}, and for
                  the bvh protocol "split": {"folder", "map", "seed",
                  "test_fraction", "by": "file", "train": [clip ids],
                  "test": [...]}
  {train,test}/sparse.npy (F, 54), rot6d.npy (F, 132), pos.npy (F, 66)
                  float32, every clip's rows one after another
  {train,test}/clips.tsv  clip_id, subject, start, length (rows of the arrays)
  skeleton.json   the body the targets were computed on
  split.txt       the protocol's split ("<split>\\t<clip id>" lines)
  cache.json      format version and the key of the sources it was built from

"frames" counts array rows: each clip's frames at 60 fps less its first
(the features need a previous frame). `ensure_prepared` rebuilds only when
the key changes: the sources' sizes and modification times (data, body
model, split lists of your own), the text of the package's split lists and
maps, the format version and the loading code.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from typing import Callable, NamedTuple

import numpy as np

from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import download
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import protocols

FORMAT_VERSION = 1
FPS = 60
ARRAYS = {"sparse": motion_lib.SPARSE_DIM, "rot6d": motion_lib.ROT6D_DIM,
          "pos": motion_lib.POS_DIM}
# Modules whose code shapes the prepared numbers; their text joins the key.
_CODE_MODULES = ("geometry.py", "skeleton.py", "retarget.py",
                 "data/motion.py", "data/asfamc.py", "data/bvh.py",
                 "data/amass.py", "data/prepared.py")
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (done, total, clip id, reason it was skipped or None)
Progress = Callable[[int, int, str, str | None], None]


class PreparedError(ValueError):
  """A prepared folder is missing, incomplete or cannot be written."""


@dataclasses.dataclass(frozen=True)
class ClipSpan:
  clip_id: str
  subject: str
  start: int
  length: int


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a prepared dataset; the arrays are read-only memmaps."""
  sparse: np.ndarray
  rot6d: np.ndarray
  pos: np.ndarray
  clips: list[ClipSpan]
  skeleton: skeleton_lib.Skeleton

  def clip(self, clip_id: str) -> dict[str, np.ndarray]:
    """One clip's rows of each array."""
    for span in self.clips:
      if span.clip_id == clip_id:
        rows = slice(span.start, span.start + span.length)
        return {k: getattr(self, k)[rows] for k in ARRAYS}
    raise KeyError(clip_id)


# --- Reading ---------------------------------------------------------------


def load_manifest(prepared_dir: str) -> dict:
  path = os.path.join(prepared_dir, "manifest.json")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise PreparedError(f"{path}: not a prepared dataset ({e})") from None


def load_skeleton(prepared_dir: str) -> skeleton_lib.Skeleton:
  path = os.path.join(prepared_dir, "skeleton.json")
  try:
    with open(path, encoding="utf-8") as f:
      return skeleton_lib.Skeleton.from_json(json.load(f))
  except (OSError, ValueError, KeyError) as e:
    raise PreparedError(f"{path}: cannot read the skeleton ({e})") from None


def _read_clips(path: str) -> list[ClipSpan]:
  clips = []
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n").split("\t")
    if header != ["clip_id", "subject", "start", "length"]:
      raise PreparedError(f"{path}: unexpected header {header}")
    for line in f:
      clip_id, subject, start, length = line.rstrip("\n").split("\t")
      clips.append(ClipSpan(clip_id, subject, int(start), int(length)))
  return clips


def load_split(prepared_dir: str, split: str) -> Split:
  """The `split` ("train" or "test") of a prepared dataset, memory-mapped."""
  if split not in protocols.SPLITS:
    raise PreparedError(f"unknown split {split!r}; choose train or test")
  folder = os.path.join(prepared_dir, split)
  try:
    arrays = {k: np.load(os.path.join(folder, f"{k}.npy"), mmap_mode="r")
              for k in ARRAYS}
    clips = _read_clips(os.path.join(folder, "clips.tsv"))
  except (OSError, ValueError) as e:
    raise PreparedError(f"{folder}: incomplete prepared split ({e})") from None
  rows = sum(c.length for c in clips)
  for name, values in arrays.items():
    if values.shape != (rows, ARRAYS[name]):
      raise PreparedError(f"{folder}/{name}.npy has shape {values.shape}, "
                          f"clips.tsv needs ({rows}, {ARRAYS[name]})")
  return Split(clips=clips, skeleton=load_skeleton(prepared_dir), **arrays)


# --- Loading clips, in worker processes or here -----------------------------

_WORKER_CLIPS: dict[str, protocols.ClipRef] = {}


def _init_worker(protocol_args: dict):
  protocol = protocols.build(**protocol_args)
  _WORKER_CLIPS.update({c.clip_id: c for c in protocol.train + protocol.test})


class ClipResult(NamedTuple):
  """A loaded clip's features, or the reason it was skipped."""
  clip_id: str
  subject: str = ""
  features: dict | None = None
  skeleton: skeleton_lib.Skeleton | None = None
  reason: str | None = None


def _clip_features(ref: protocols.ClipRef) -> ClipResult:
  try:
    motion = ref.load()
    if motion.fps != FPS:
      raise motion_lib.MotionError(
          ref.clip_id, f"loader returned {motion.fps} fps, not {FPS}")
    return ClipResult(ref.clip_id, motion.subject,
                      motion_lib.features(motion), motion.skeleton)
  except motion_lib.MotionError as e:
    return ClipResult(ref.clip_id, reason=str(e))
  except Exception as e:  # pylint: disable=broad-except
    # One clip must not stop a batch; the reason lands in the manifest.
    return ClipResult(ref.clip_id,
                      reason=f"{ref.clip_id}: {type(e).__name__}: {e}")


def _worker_features(clip_id: str):
  return _clip_features(_WORKER_CLIPS[clip_id])


def _load_all(protocol: protocols.Protocol, protocol_args: dict,
              workers: int, progress: Progress | None) -> dict:
  refs = list(protocol.train + protocol.test)
  results = {}

  def record(result: ClipResult):
    results[result.clip_id] = result
    if progress:
      progress(len(results), len(refs), result.clip_id, result.reason)

  if workers <= 1 or len(refs) < 2 * workers:
    for ref in refs:
      record(_clip_features(ref))
    return results
  # "spawn": JAX is multithreaded and must not be forked.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=context, initializer=_init_worker,
      initargs=(protocol_args,)) as pool:
    futures = [pool.submit(_worker_features, ref.clip_id) for ref in refs]
    for future in concurrent.futures.as_completed(futures):
      record(future.result())
  return results


# --- Writing ----------------------------------------------------------------


def _write_split(folder: str, refs, results, skipped) -> dict:
  os.makedirs(folder)
  chunks = {k: [] for k in ARRAYS}
  rows = []
  start = 0
  for ref in refs:
    result = results[ref.clip_id]
    if result.reason is not None:
      skipped.append({"clip": result.clip_id, "reason": result.reason})
      continue
    length = len(result.features["sparse"])
    for k in ARRAYS:
      chunks[k].append(result.features[k])
    rows.append(f"{result.clip_id}\t{result.subject}\t{start}\t{length}")
    start += length
  for k, dim in ARRAYS.items():
    values = (np.concatenate(chunks[k]) if chunks[k] else
              np.zeros((0, dim), np.float32))
    np.save(os.path.join(folder, f"{k}.npy"), values.astype(np.float32))
  with open(os.path.join(folder, "clips.tsv"), "w", encoding="utf-8") as f:
    f.write("\n".join(["clip_id\tsubject\tstart\tlength"] + rows) + "\n")
  return {"clips": len(rows), "frames": start}


def _replace_dir(tmp_dir: str, out_dir: str):
  if os.path.exists(out_dir):
    is_prepared = any(os.path.exists(os.path.join(out_dir, name))
                      for name in ("cache.json", "manifest.json"))
    if os.listdir(out_dir) and not is_prepared:
      shutil.rmtree(tmp_dir)
      raise PreparedError(f"{out_dir}: exists and is not a prepared dataset; "
                          "refusing to replace it")
    shutil.rmtree(out_dir)
  os.rename(tmp_dir, out_dir)


def write_prepared(protocol: protocols.Protocol, results: dict, out_dir: str,
                   key: str) -> dict:
  """Writes a prepared folder atomically (built aside, then renamed)."""
  out_dir = os.path.abspath(out_dir)
  tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
  if os.path.exists(tmp_dir):
    shutil.rmtree(tmp_dir)
  os.makedirs(tmp_dir)
  # Every protocol's clips share one body (canonical or the SMPL-H model).
  loaded = [results[c.clip_id] for c in protocol.train + protocol.test
            if results[c.clip_id].reason is None]
  skeleton = loaded[0].skeleton if loaded else skeleton_lib.SMPL_NEUTRAL
  skipped = [{"clip": c, "reason": r} for c, r in protocol.missing]
  manifest = {"protocol": protocol.name, "fps": FPS}
  if protocol.split_info:
    manifest["split"] = dict(protocol.split_info)
  for name in protocols.SPLITS:
    manifest[name] = _write_split(os.path.join(tmp_dir, name),
                                  protocol.split(name), results, skipped)
  manifest["skipped"] = skipped
  files = {
      "manifest.json": json.dumps(manifest, indent=1),
      "skeleton.json": json.dumps(skeleton.to_json()),
      "cache.json": json.dumps({"format_version": FORMAT_VERSION, "key": key}),
      "split.txt": "".join(f"{s}\t{c.clip_id}\n" for s in protocols.SPLITS
                           for c in protocol.split(s)),
  }
  for name, text in files.items():
    with open(os.path.join(tmp_dir, name), "w", encoding="utf-8") as f:
      f.write(text)
  _replace_dir(tmp_dir, out_dir)
  return manifest


# --- The cache --------------------------------------------------------------


def cache_key(protocol: protocols.Protocol) -> str:
  """Digest of what the prepared numbers depend on."""
  digest = hashlib.sha256()
  digest.update(f"{FORMAT_VERSION}\t{protocol.name}\n".encode())
  if protocol.split_info:
    digest.update(json.dumps(protocol.split_info, sort_keys=True).encode())
  for path in sorted(protocol.sources):
    path = os.path.abspath(path)
    if path.startswith(_PACKAGE_DIR + os.sep):
      # The package's own split lists and maps: their text, so that two
      # checkouts (or a fresh clone) share one prepared folder.
      with open(path, "rb") as f:
        digest.update(os.path.relpath(path, _PACKAGE_DIR).encode()
                      + hashlib.sha256(f.read()).digest())
      continue
    stat = os.stat(path)
    digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
  for module in _CODE_MODULES:
    path = os.path.join(_PACKAGE_DIR, module)
    if os.path.exists(path):
      with open(path, "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
  return digest.hexdigest()


def _cached_key(out_dir: str) -> str | None:
  try:
    with open(os.path.join(out_dir, "cache.json"), encoding="utf-8") as f:
      cached = json.load(f)
  except (OSError, ValueError):
    return None
  complete = all(os.path.exists(os.path.join(out_dir, s, "clips.tsv"))
                 for s in protocols.SPLITS)
  return cached.get("key") if complete else None


def ensure_prepared(protocol: str, data_dir: str, out_dir: str, *,
                    body_model: str | None = None,
                    lists_dir: str | None = None,
                    bvh_map: str | None = None,
                    split_seed: int = protocols.BVH_SEED,
                    workers: int = 2,
                    progress: Progress | None = None,
                    fetch_missing: bool = True,
                    cmu_base_url: str = download.CMU_BASE_URL,
                    log: Callable[[str], None] = print) -> str:
  """Prepares `protocol` from `data_dir` into `out_dir` unless cached.

  Args:
    protocol: one of protocols.NAMES.
    data_dir: the data root (the free data's folders, or the AMASS root).
    out_dir: the prepared folder to write or reuse.
    body_model: the SMPL-H male model.npz (AMASS protocols).
    lists_dir: the folder of the s1 list files.
    bvh_map, split_seed: the bvh protocol's joint map and split seed.
    workers: processes that load clips in parallel.
    progress: called after each clip.
    fetch_missing: for "free", download the CMU ASF/AMC clips from CMU when
      their folder is absent.
    cmu_base_url: where to download them from.
    log: receives one line about what happened.

  Returns:
    `out_dir`.
  """
  start = time.perf_counter()
  if protocol == "free" and fetch_missing:
    download.ensure_cmu_asfamc(data_dir, cmu_base_url, log=log)
  args = dict(name=protocol, data_dir=data_dir, body_model=body_model,
              lists_dir=lists_dir, bvh_map=bvh_map, split_seed=split_seed)
  built = protocols.build(**args)
  key = cache_key(built)
  if _cached_key(out_dir) == key:
    log(f"reused the cached {protocol} dataset in {out_dir} "
        f"({time.perf_counter() - start:.1f} s)")
    return out_dir
  results = _load_all(built, args, workers, progress)
  manifest = write_prepared(built, results, out_dir, key)
  log(f"prepared {protocol}: train {manifest['train']['clips']} clips "
      f"{manifest['train']['frames']} frames, test "
      f"{manifest['test']['clips']} clips {manifest['test']['frames']} "
      f"frames, {len(manifest['skipped'])} skipped, in "
      f"{time.perf_counter() - start:.1f} s with {workers} worker(s)")
  return out_dir
