"""Tests for memmlp_jax.data.protocols: the free split file and AMASS lists."""

import collections
import os
import pathlib

import pytest

from memmlp_jax.data import protocols
import synthetic_amass as synth

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / os.environ.get("MEMMLP_DATA", "../shared/data")
S1_LISTS = ROOT / "../shared/protocols/amass_s1"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no data at {DATA}")


# --- The split rule ----------------------------------------------------------


def _clips(counts):
  return {f"p{p}/c{i:02d}": f"p{p}" for p, n in enumerate(counts)
          for i in range(n)}


def test_stratified_split_is_exact_stratified_and_seeded():
  clips = _clips([1, 3, 9, 10, 14, 25, 55])
  split = protocols.stratified_split(clips, 0.1, seed=0)
  assert sorted(split["train"] + split["test"]) == sorted(clips)
  assert not set(split["train"]) & set(split["test"])
  assert len(split["test"]) == round(0.1 * len(clips))
  per_person = collections.Counter(clips[c] for c in split["test"])
  for p, n in enumerate([1, 3, 9, 10, 14, 25, 55]):
    assert per_person[f"p{p}"] in (int(0.1 * n), int(0.1 * n) + 1)
  assert protocols.stratified_split(clips, 0.1, seed=0) == split
  assert protocols.stratified_split(clips, 0.1, seed=1) != split


def test_person_rule_joins_cmu_formats():
  assert protocols.person_of("cmu/02_01") == "cmu/02"
  assert protocols.person_of("cmu_bvh/02_04") == "cmu/02"
  assert protocols.person_of("cmu/105_33") == "cmu/105"
  assert protocols.person_of(
      "hdm05/HDM_bd_kickLFront1Reps_001_120") == "hdm05/bd"
  with pytest.raises(protocols.ProtocolError, match="no person rule"):
    protocols.person_of("mystery/x")


def test_split_file_round_trip_and_errors(tmp_path):
  path = str(tmp_path / "s.txt")
  split = {"train": ["a/1", "a/2"], "test": ["b/1"]}
  protocols.write_split_file(path, split, "two\nlines")
  assert protocols.read_split_file(path) == split
  with open(path, encoding="utf-8") as f:
    assert f.read().startswith("# two\n# lines\n")
  (tmp_path / "bad.txt").write_text("train a/1\n")
  with pytest.raises(protocols.ProtocolError, match=r"bad.txt:1: expected"):
    protocols.read_split_file(str(tmp_path / "bad.txt"))
  (tmp_path / "dup.txt").write_text("train\ta/1\ntest\ta/1\n")
  with pytest.raises(protocols.ProtocolError, match="listed twice"):
    protocols.read_split_file(str(tmp_path / "dup.txt"))
  with pytest.raises(protocols.ProtocolError, match="cannot read"):
    protocols.read_split_file(str(tmp_path / "absent.txt"))


# --- free, on the real data --------------------------------------------------


@needs_data
def test_committed_free_split_is_the_rule_applied_to_the_data(tmp_path):
  regenerated = tmp_path / "free.txt"
  protocols.write_free_split(str(DATA), str(regenerated))
  with open(protocols.FREE_SPLIT_FILE, encoding="utf-8") as f:
    committed = f.read()
  assert regenerated.read_text(encoding="utf-8") == committed


@needs_data
def test_free_protocol_covers_every_clip_stratified_by_person():
  protocol = protocols.free(str(DATA))
  assert not protocol.missing
  train = {c.clip_id for c in protocol.train}
  test = {c.clip_id for c in protocol.test}
  assert len(train) + len(test) == 184 + 287 + 73
  assert not train & test
  assert len(test) == round(0.1 * (len(train) + len(test)))
  persons = collections.Counter(c.person for c in protocol.train)
  persons.update(c.person for c in protocol.test)
  # 13 CMU ASF/AMC subjects + 4 BVH-only subjects + 5 HDM05 actors.
  assert len(persons) == 22
  test_persons = collections.Counter(c.person for c in protocol.test)
  for person, count in persons.items():
    assert abs(test_persons[person] - 0.1 * count) < 1, person
  # The BVH trials of CMU subject 02 count with the ASF/AMC ones.
  assert persons["cmu/02"] == 3 + 7


@needs_data
def test_free_clips_of_absent_folders_are_missing_with_reason(tmp_path):
  os.symlink(DATA / "cmu_mocap_asfamc", tmp_path / "cmu_mocap_asfamc")
  protocol = protocols.free(str(tmp_path))
  loaded = {c.clip_id.split("/")[0] for c in protocol.train + protocol.test}
  assert loaded == {"cmu"}
  assert len(protocol.train) + len(protocol.test) == 184
  assert len(protocol.missing) == 287 + 73
  clip, reason = protocol.missing[0]
  assert clip.split("/")[0] in ("hdm05", "cmu_bvh")
  assert reason.endswith("folder absent")


# --- AMASS protocols ---------------------------------------------------------


@pytest.fixture(name="amass_root")
def fixture_amass_root(tmp_path):
  """A tiny AMASS tree: later-release folder names for BMLrub and HDM05."""
  root = tmp_path / "amass"
  for rel in ("CMU/01/01_01_poses.npz", "CMU/01/01_02_poses.npz",
              "CMU/02/02_01_poses.npz", "BMLrub/rub001/0001_walk_poses.npz",
              "HDM05/bd/HDM_bd_01-01_01_120_poses.npz",
              "HumanEva/S1/Walking_poses.npz", "KIT/3/walk_poses.npz",
              "CMU/01/shape.npz"):
    synth.write_clip(root / rel, num_frames=6)
  synth.write_body_model(tmp_path / "smplh" / "male" / "model.npz")
  lists = tmp_path / "lists"
  lists.mkdir()
  listed = {
      "CMU_train": ["CMU/01/01_01_poses.npz", "CMU/02/02_01_poses.npz"],
      "CMU_test": ["CMU/01/01_02_poses.npz", "CMU/09/09_01_poses.npz"],
      "BioMotionLab_NTroje_train": [
          "BioMotionLab_NTroje/rub001/0001_walk_poses.npz"],
      "BioMotionLab_NTroje_test": [],
      "MPI_HDM05_train": [],
      "MPI_HDM05_test": ["MPI_HDM05/bd/HDM_bd_01-01_01_120_poses.npz"],
  }
  for name, lines in listed.items():
    (lists / f"{name}.txt").write_text("".join(f"{l}\n" for l in lines))
  return root


def _ids(clips):
  return [c.clip_id for c in clips]


def test_s1_reads_lists_and_maps_renamed_subsets(amass_root):
  model = str(amass_root.parent / "smplh")
  protocol = protocols.build("s1", str(amass_root), body_model=model,
                             lists_dir=str(amass_root.parent / "lists"))
  assert _ids(protocol.train) == ["amass/CMU/01/01_01", "amass/CMU/02/02_01",
                                  "amass/BMLrub/rub001/0001_walk"]
  assert _ids(protocol.test) == ["amass/CMU/01/01_02",
                                 "amass/HDM05/bd/HDM_bd_01-01_01_120"]
  assert protocol.missing == (("CMU/09/09_01_poses.npz",
                               f"not found under {amass_root}"),)
  assert protocol.test[0].load().num_frames == 3


@pytest.mark.skipif(not S1_LISTS.is_dir(), reason="no public s1 lists")
def test_s1_public_lists_parse(tmp_path):
  synth.write_body_model(tmp_path / "model.npz")
  protocol = protocols.s1(str(tmp_path), str(tmp_path / "model.npz"),
                          str(S1_LISTS))
  assert len(protocol.missing) == 5350
  assert not protocol.train and not protocol.test


def test_s2_trains_on_its_subsets_and_reports_absent_ones(amass_root):
  protocol = protocols.build("s2", str(amass_root),
                             body_model=str(amass_root.parent / "smplh"))
  assert _ids(protocol.test) == ["amass/HumanEva/S1/Walking"]
  assert len(protocol.train) == 6  # CMU 3, KIT, BMLrub, HDM05
  absent = {clip for clip, _ in protocol.missing}
  assert "amass/Transitions_mocap" in absent and "amass/CMU" not in absent
  assert "amass/BioMotionLab_NTroje" not in absent  # found as BMLrub


def test_s3_is_a_seeded_random_tenth(amass_root):
  model = str(amass_root.parent / "smplh")
  first = protocols.s3(str(amass_root), model)
  assert len(first.test) == 1 and len(first.train) == 6
  again = protocols.s3(str(amass_root), model)
  assert _ids(again.test) == _ids(first.test)
  tests = {tuple(_ids(protocols.s3(str(amass_root), model, seed=s).test))
           for s in range(8)}
  assert len(tests) > 1


@pytest.mark.parametrize("name, kwargs, problem", [
    ("s9", {}, "unknown protocol 's9'"),
    ("s1", {"body_model": "m.npz"}, "needs the folder of its list files"),
    ("s2", {}, "needs the SMPL-H body model"),
])
def test_bad_protocol_requests(amass_root, name, kwargs, problem):
  with pytest.raises(protocols.ProtocolError, match=problem):
    protocols.build(name, str(amass_root), **kwargs)


def test_absent_data_folder(tmp_path):
  with pytest.raises(protocols.ProtocolError, match="data folder not found"):
    protocols.build("free", str(tmp_path / "nowhere"))
