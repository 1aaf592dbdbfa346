"""Data protocols: which clips train and which test (docs/design.md §2).

- ``free``: all the mocap in the shared data folder (CMU ASF/AMC, HDM05 cut
  ASF/AMC, CMU BVH), split 90/10 by clip, stratified by person, seeded, and
  written ONCE to the committed file ``splits/free.txt``; read from it ever
  after, so the split never drifts when code or data listings change.
- ``s1``: AMASS CMU + BMLrub + HDM05 with the public train/test lists, read
  from a folder the user names (``<Subset>_train.txt`` / ``_test.txt``).
- ``s2``: AMASS, train on twelve subsets, test on HumanEva and Transitions.
- ``s3``: all AMASS clips found, a seeded 90/10 random split.
- ``bvh``: every BVH file in a folder of the user's (plain or zipped, see
  `bvh.iter_clips`) with a joint map, split 90/10 by file, seeded; the split
  lands in the prepared folder's manifest. For training on one's own capture.

A protocol lists clips as `ClipRef`s whose ``load()`` returns a Motion; the
loading itself happens in `prepared`. Clips a protocol names but the data
folder lacks are reported in ``missing`` with the reason.
"""

import dataclasses
import functools
import glob
import os
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from memmlp_jax.data import amass
from memmlp_jax.data import asfamc
from memmlp_jax.data import bvh
from memmlp_jax.data import motion as motion_lib

NAMES = ("free", "s1", "s2", "s3", "bvh")
SPLITS = ("train", "test")
TEST_FRACTION = 0.1
FREE_SEED = 0
FREE_SPLIT_FILE = os.path.join(os.path.dirname(__file__), "splits", "free.txt")
BVH_MAP_FILE = str(bvh.CMU_MAP)

# Free data: clip-id prefix -> folder under the data dir.
FREE_FOLDERS = {
    "cmu": "cmu_mocap_asfamc",
    "hdm05": "hdm05_cut_asfamc",
    "cmu_bvh": "cmu_mocap_bvh",
}

# AMASS subsets by their protocol names, with the folder names later AMASS
# releases use for the same data.
AMASS_ALIASES = {
    "BioMotionLab_NTroje": ("BMLrub",),
    "MPI_HDM05": ("HDM05",),
    "MPI_Limits": ("PosePrior",),
    "MPI_mosh": ("MoSh",),
    "Transitions_mocap": ("Transitions",),
    "Eyes_Japan_Dataset": ("Eyes_Japan",),
    "BMLmovi": ("BMLmovi",),
}
S2_TRAIN = ("CMU", "MPI_Limits", "TotalCapture", "Eyes_Japan_Dataset", "KIT",
            "BioMotionLab_NTroje", "BMLmovi", "EKUT", "ACCAD", "MPI_mosh",
            "SFU", "MPI_HDM05")
S2_TEST = ("HumanEva", "Transitions_mocap")
S1_SUBSETS = ("CMU", "BioMotionLab_NTroje", "MPI_HDM05")
S3_SEED = 0
BVH_SEED = 0


@dataclasses.dataclass(frozen=True)
class ClipRef:
  """A clip a protocol names: its id, its person and how to load it."""
  clip_id: str
  person: str
  load: Callable[[], motion_lib.Motion]


@dataclasses.dataclass(frozen=True)
class Protocol:
  """Train and test clips, clips named but absent, and the files behind it.

  Attributes:
    name: one of NAMES.
    train, test: the clips, in the protocol's fixed order.
    missing: (clip id or subset, reason) for what the protocol names but the
      data folder lacks.
    sources: the files the prepared data depends on (their sizes and
      modification times key the cache).
    split_info: how a split made at preparation time was made (seed,
      fraction, clip lists), recorded in the manifest; empty for the others.
  """
  name: str
  train: tuple[ClipRef, ...]
  test: tuple[ClipRef, ...]
  missing: tuple[tuple[str, str], ...]
  sources: tuple[str, ...]
  split_info: Mapping = dataclasses.field(default_factory=dict)

  def split(self, name: str) -> tuple[ClipRef, ...]:
    return {"train": self.train, "test": self.test}[name]


class ProtocolError(ValueError):
  """A protocol cannot be built (bad name, list file or folder)."""


def person_of(clip_id: str) -> str:
  """The performer of a free clip: CMU numbers name people in either format.

  The CMU BVH clips of subjects 02/05/06/09 are the same people as the CMU
  ASF/AMC subjects 02/05/06/09, so both map to "cmu/NN"; HDM05 clips map to
  their actor, e.g. "hdm05/HDM_bd_kickLFront1Reps_001_120" -> "hdm05/bd".
  """
  source, name = clip_id.split("/", 1)
  if source in ("cmu", "cmu_bvh"):
    return "cmu/" + name.split("_")[0]
  if source == "hdm05":
    return "hdm05/" + name.split("_")[1]
  raise ProtocolError(f"no person rule for clip {clip_id!r}")


# --- The split file --------------------------------------------------------


def stratified_split(clip_persons: Mapping[str, str],
                     test_fraction: float = TEST_FRACTION,
                     seed: int = FREE_SEED) -> dict[str, list[str]]:
  """Splits clips so each person gives ~`test_fraction` of their clips.

  Per person, the clips are shuffled with a generator seeded by (seed, person)
  and the first ones go to test. The test counts are the floors of each
  person's share, topped up by largest remainder until the total is
  round(test_fraction * clips), so the overall fraction is exact.
  """
  by_person: dict[str, list[str]] = {}
  for clip_id in sorted(clip_persons):
    by_person.setdefault(clip_persons[clip_id], []).append(clip_id)
  persons = sorted(by_person)
  shares = np.array([test_fraction * len(by_person[p]) for p in persons])
  counts = np.floor(shares).astype(int)
  extra = int(round(test_fraction * len(clip_persons))) - counts.sum()
  order = sorted(range(len(persons)),
                 key=lambda i: (-(shares[i] - counts[i]), persons[i]))
  for i in order[:max(extra, 0)]:
    counts[i] += 1
  split = {"train": [], "test": []}
  for person, count in zip(persons, counts):
    seed_seq = np.random.SeedSequence([seed] + [ord(c) for c in person])
    clips = list(np.random.default_rng(seed_seq).permutation(
        by_person[person]))
    split["test"] += sorted(clips[:count])
    split["train"] += sorted(clips[count:])
  return {k: sorted(v) for k, v in split.items()}


def write_split_file(path: str, split: Mapping[str, Sequence[str]],
                     header: str):
  """Writes "<split>\\t<clip id>" lines under '#' header lines."""
  lines = [f"# {line}" for line in header.splitlines()]
  for name in SPLITS:
    lines += [f"{name}\t{clip_id}" for clip_id in split[name]]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(path + ".tmp", path)


def read_split_file(path: str) -> dict[str, list[str]]:
  """The split lists of a file written by `write_split_file`."""
  split = {name: [] for name in SPLITS}
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise ProtocolError(f"{path}: cannot read the split file ({e})") from None
  seen = set()
  for number, line in enumerate(lines, 1):
    if not line.strip() or line.startswith("#"):
      continue
    fields = line.split("\t")
    if len(fields) != 2 or fields[0] not in split:
      raise ProtocolError(f"{path}:{number}: expected '<train|test>\\t<clip "
                          f"id>', got {line!r}")
    if fields[1] in seen:
      raise ProtocolError(f"{path}:{number}: clip {fields[1]} listed twice")
    seen.add(fields[1])
    split[fields[0]].append(fields[1])
  return split


def write_free_split(data_dir: str, path: str = FREE_SPLIT_FILE,
                     seed: int = FREE_SEED) -> dict[str, list[str]]:
  """Creates the free split from every clip in `data_dir` (done once).

  The committed file is the protocol; rerunning this on the same data with
  the same seed reproduces it (a test checks this).
  """
  clips = _free_clip_refs(data_dir)
  missing = [f for f in FREE_FOLDERS.values()
             if not os.path.isdir(os.path.join(data_dir, f))]
  if missing:
    raise ProtocolError(f"{data_dir}: the free split needs all of its "
                        f"folders; missing {', '.join(missing)}")
  split = stratified_split({c: person_of(c) for c in clips},
                           TEST_FRACTION, seed)
  write_split_file(path, split, (
      f"Free protocol: every clip of {', '.join(FREE_FOLDERS.values())};\n"
      f"{1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} by clip, stratified by "
      f"person (CMU subject numbers name the same\n"
      f"person in ASF/AMC and BVH), seed {seed}. Written once by\n"
      f"memmlp_jax.data.protocols.write_free_split; do not edit, so the "
      f"split never drifts."))
  return split


# --- free ------------------------------------------------------------------


def _free_clip_refs(data_dir: str) -> dict[str, Callable[[], object]]:
  """clip id -> loader thunk for every free clip present in `data_dir`."""
  loaders = {}
  asfamc_dir = os.path.join(data_dir, FREE_FOLDERS["cmu"])
  for prefix, folder in FREE_FOLDERS.items():
    path = os.path.join(data_dir, folder)
    if not os.path.isdir(path):
      continue
    if prefix == "cmu_bvh":
      # The BVH repair takes the thorax of subjects 02/05/06/09 from their
      # ASFs when present, else estimates it.
      clips = bvh.iter_cmu_clips(
          path, asfamc_dir if os.path.isdir(asfamc_dir) else None)
    else:
      clips = asfamc.iter_clips(path)
    for clip in clips:
      loaders[clip.clip_id] = clip.load
  return loaders


def free_source_files(data_dir: str) -> list[str]:
  """The files the free protocol's data comes from."""
  files = [FREE_SPLIT_FILE, BVH_MAP_FILE]
  for folder in FREE_FOLDERS.values():
    files += sorted(glob.glob(os.path.join(data_dir, folder, "**", "*"),
                              recursive=True))
  return [f for f in files if os.path.isfile(f)]


def free(data_dir: str, split_file: str = FREE_SPLIT_FILE) -> Protocol:
  """The free protocol over `data_dir` (clips absent there are `missing`)."""
  split = read_split_file(split_file)
  loaders = _free_clip_refs(data_dir)
  refs = {name: [] for name in SPLITS}
  missing = []
  for name in SPLITS:
    for clip_id in split[name]:
      if clip_id in loaders:
        refs[name].append(ClipRef(clip_id, person_of(clip_id),
                                  loaders[clip_id]))
        continue
      folder = FREE_FOLDERS.get(clip_id.split("/")[0], "?")
      where = os.path.join(data_dir, folder)
      reason = (f"{where}: no such clip" if os.path.isdir(where) else
                f"{where}: folder absent")
      missing.append((clip_id, reason))
  return Protocol("free", tuple(refs["train"]), tuple(refs["test"]),
                  tuple(missing), tuple(free_source_files(data_dir)))


# --- AMASS -----------------------------------------------------------------


def _subset_folder(data_dir: str, subset: str) -> str | None:
  for name in (subset,) + AMASS_ALIASES.get(subset, ()):
    if os.path.isdir(os.path.join(data_dir, name)):
      return name
  return None


def _amass_files(data_dir: str, subset_folder: str) -> list[str]:
  """Relative paths of a subset's ``*_poses.npz`` clips, sorted."""
  pattern = os.path.join(data_dir, subset_folder, "**", "*_poses.npz")
  return sorted(os.path.relpath(p, data_dir)
                for p in glob.glob(pattern, recursive=True))


def _amass_ref(data_dir: str, relpath: str, body_model) -> ClipRef:
  path = os.path.join(data_dir, relpath)
  clip_id, subject = amass.ids_from_path(path)
  return ClipRef(clip_id, subject, functools.partial(
      amass.load_amass, path, body_model, clip_id=clip_id, subject=subject))


def _amass_protocol(name: str, data_dir: str, body_model_path: str,
                    split: Mapping[str, Iterable[str]],
                    missing: list[tuple[str, str]],
                    extra_sources: Sequence[str] = ()) -> Protocol:
  if not body_model_path:
    raise ProtocolError(f"protocol {name} needs the SMPL-H body model "
                        "(model.npz of the male body)")
  body = amass.load_body_model(body_model_path)
  refs = {s: tuple(_amass_ref(data_dir, p, body) for p in split[s])
          for s in SPLITS}
  sources = [os.path.join(data_dir, p) for s in SPLITS for p in split[s]]
  sources += [body_model_path, *extra_sources]
  return Protocol(name, refs["train"], refs["test"], tuple(missing),
                  tuple(sources))


def _resolve_listed(data_dir: str, relpath: str) -> str | None:
  """A listed AMASS path, its subset folder renamed if the user's differs."""
  subset, rest = relpath.split("/", 1)
  folder = _subset_folder(data_dir, subset)
  if folder is None:
    return None
  candidate = f"{folder}/{rest}"
  return candidate if os.path.isfile(os.path.join(data_dir, candidate)) else None


def s1(data_dir: str, body_model_path: str, lists_dir: str) -> Protocol:
  """AMASS protocol 1: the public lists in `lists_dir`."""
  split = {s: [] for s in SPLITS}
  missing = []
  list_files = []
  for subset in S1_SUBSETS:
    for name in SPLITS:
      path = os.path.join(lists_dir, f"{subset}_{name}.txt")
      if not os.path.isfile(path):
        raise ProtocolError(f"{path}: protocol s1 list file not found")
      list_files.append(path)
      with open(path, encoding="utf-8") as f:
        for line in f.read().split():
          found = _resolve_listed(data_dir, line)
          if found is None:
            missing.append((line, f"not found under {data_dir}"))
          else:
            split[name].append(found)
  return _amass_protocol("s1", data_dir, body_model_path, split, missing,
                         list_files)


def s2(data_dir: str, body_model_path: str) -> Protocol:
  """AMASS protocol 2: train on twelve subsets, test on two others."""
  split = {s: [] for s in SPLITS}
  missing = []
  for name, subsets in (("train", S2_TRAIN), ("test", S2_TEST)):
    for subset in subsets:
      folder = _subset_folder(data_dir, subset)
      if folder is None:
        missing.append((f"amass/{subset}",
                        f"subset folder not found under {data_dir}"))
      else:
        split[name] += _amass_files(data_dir, folder)
  return _amass_protocol("s2", data_dir, body_model_path, split, missing)


def s3(data_dir: str, body_model_path: str, seed: int = S3_SEED) -> Protocol:
  """AMASS protocol 3: every clip found, a seeded 90/10 random split."""
  files = sorted(os.path.relpath(p, data_dir) for p in glob.glob(
      os.path.join(data_dir, "**", "*_poses.npz"), recursive=True))
  if not files:
    raise ProtocolError(f"{data_dir}: no AMASS *_poses.npz files found")
  order = np.random.default_rng(seed).permutation(len(files))
  num_test = int(round(TEST_FRACTION * len(files)))
  split = {"test": sorted(files[i] for i in order[:num_test]),
           "train": sorted(files[i] for i in order[num_test:])}
  return _amass_protocol("s3", data_dir, body_model_path, split, [])


# --- A folder of the user's BVH files ----------------------------------------


def bvh_folder(data_dir: str, bvh_map: str, seed: int = BVH_SEED) -> Protocol:
  """Every BVH under `data_dir`, read with the joint map `bvh_map` (a file
  or a shipped map's name), split by file: a seeded permutation of the
  sorted clip ids, round(10%) of them (at least one of two or more) to test.
  """
  try:
    joint_map = bvh.load_joint_map(bvh_map)
    clips = list(bvh.iter_clips(data_dir, joint_map, source="bvh"))
  except motion_lib.MotionError as e:
    raise ProtocolError(str(e)) from None
  by_id = {}
  for clip in clips:
    if clip.clip_id in by_id:
      raise ProtocolError(
          f"{data_dir}: two files are clip {clip.clip_id!r} (clips are named "
          "by file name); rename one")
    by_id[clip.clip_id] = clip
  if not by_id:
    raise ProtocolError(f"{data_dir}: no .bvh files (plain or in zips)")
  ids = sorted(by_id)
  order = np.random.default_rng(seed).permutation(len(ids))
  num_test = max(int(round(TEST_FRACTION * len(ids))), int(len(ids) >= 2))
  split = {"test": sorted(ids[i] for i in order[:num_test]),
           "train": sorted(ids[i] for i in order[num_test:])}
  refs = {name: tuple(ClipRef(c, by_id[c].subject, by_id[c].load)
                      for c in split[name]) for name in SPLITS}
  map_file = str(bvh.PRESETS.get(bvh_map, bvh_map)
                 if not os.path.isfile(bvh_map) else bvh_map)
  sources = [map_file] + sorted(
      os.path.join(root, f) for root, _, files in os.walk(data_dir)
      for f in files if f.lower().endswith((".bvh", ".zip")))
  if joint_map.reference is not None and joint_map.reference.path:
    sources.append(joint_map.reference.path)
  info = {"folder": data_dir, "map": bvh_map, "seed": seed,
          "test_fraction": TEST_FRACTION, "by": "file", **split}
  return Protocol("bvh", refs["train"], refs["test"], (), tuple(sources),
                  info)


def build(name: str, data_dir: str, *, body_model: str | None = None,
          lists_dir: str | None = None, bvh_map: str | None = None,
          split_seed: int = BVH_SEED) -> Protocol:
  """The protocol `name` over `data_dir` (``bvh``: with ``bvh_map`` and
  ``split_seed``)."""
  if not os.path.isdir(data_dir):
    raise ProtocolError(f"{data_dir}: data folder not found")
  if name == "bvh":
    if not bvh_map:
      raise ProtocolError("protocol bvh needs a joint map (--bvh_map: a "
                          "JSON file or one of "
                          f"{sorted(bvh.PRESETS)})")
    return bvh_folder(data_dir, bvh_map, split_seed)
  if name == "free":
    return free(data_dir)
  if name == "s1":
    if not lists_dir:
      raise ProtocolError("protocol s1 needs the folder of its list files "
                          "(e.g. ../shared/protocols/amass_s1)")
    return s1(data_dir, body_model, lists_dir)
  if name == "s2":
    return s2(data_dir, body_model)
  if name == "s3":
    return s3(data_dir, body_model)
  raise ProtocolError(f"unknown protocol {name!r}; choose one of "
                      f"{', '.join(NAMES)}")

