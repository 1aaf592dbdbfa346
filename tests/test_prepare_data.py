"""Tests for memmlp_jax.data.prepared and the prepare_data CLI."""

import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from experiments import prepare_data as prepare_data_cli
from memmlp_jax.data import amass
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import prepared
from memmlp_jax.data import protocols
import cli
import synthetic_amass as synth

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / os.environ.get("MEMMLP_DATA", "../shared/data")
CMU_02 = DATA / "cmu_mocap_asfamc" / "subjects" / "02.zip"
MANIFEST_KEYS = ["protocol", "fps", "train", "test", "skipped"]


def _quiet(_):
  pass


@pytest.fixture(name="amass_data")
def fixture_amass_data(tmp_path):
  """Eleven good AMASS clips at mixed rates and three bad ones."""
  root = tmp_path / "amass"
  for i in range(11):
    synth.write_clip(root / f"CMU/{i:02d}/{i:02d}_01_poses.npz",
                     num_frames=30 + 7 * i, fps=(120.0, 60.0, 100.0)[i % 3],
                     seed=i)
  synth.write_clip(root / "KIT/3/no_poses_poses.npz", drop=("poses",))
  synth.write_clip(root / "KIT/3/nan_poses.npz",
                   trans=np.full((40, 3), np.nan))
  synth.write_clip(root / "KIT/3/no_rate_poses.npz",
                   drop=("mocap_framerate",))
  model = synth.write_body_model(tmp_path / "smplh" / "male" / "model.npz")
  return root, model


def _prepare(amass_data, out, **kwargs):
  root, model = amass_data
  return prepared.ensure_prepared("s3", str(root), str(out),
                                  body_model=str(model), workers=1,
                                  log=kwargs.pop("log", _quiet), **kwargs)


def test_prepared_arrays_are_the_features_of_each_clip(amass_data, tmp_path):
  out = _prepare(amass_data, tmp_path / "out")
  manifest = prepared.load_manifest(out)
  assert list(manifest) == MANIFEST_KEYS
  assert manifest["protocol"] == "s3" and manifest["fps"] == 60
  body = amass.load_body_model(amass_data[1])
  for split in protocols.SPLITS:
    data = prepared.load_split(out, split)
    assert isinstance(data.sparse, np.memmap) and data.sparse.dtype == "f4"
    assert manifest[split] == {"clips": len(data.clips),
                               "frames": len(data.sparse)}
    assert data.skeleton.same_as(body)
    for span in data.clips:
      rel = span.clip_id[len("amass/"):] + "_poses.npz"
      expected = motion_lib.features(
          amass.load_amass(amass_data[0] / rel, body))
      got = data.clip(span.clip_id)
      for key in prepared.ARRAYS:
        np.testing.assert_array_equal(got[key], expected[key])
  assert manifest["train"]["clips"] + manifest["test"]["clips"] == 11


def test_failing_clips_are_skipped_with_reasons_and_the_rest_goes_on(
    amass_data, tmp_path):
  manifest = prepared.load_manifest(_prepare(amass_data, tmp_path / "out"))
  reasons = {s["clip"]: s["reason"] for s in manifest["skipped"]}
  root = amass_data[0]
  assert reasons == {
      "amass/KIT/3/no_poses": (
          f"{root}/KIT/3/no_poses_poses.npz: no 'poses' array (has betas, "
          "dmpls, gender, mocap_framerate, trans)"),
      "amass/KIT/3/nan": (f"{root}/KIT/3/nan_poses.npz: 'trans' holds NaN/inf "
                          "in 40 frame(s) (first at frame 0)"),
      "amass/KIT/3/no_rate": (
          f"{root}/KIT/3/no_rate_poses.npz: unknown frame rate: no "
          "mocap_framerate or mocap_frame_rate entry"),
  }


def test_second_run_reuses_the_cache_until_a_source_changes(amass_data,
                                                            tmp_path):
  out = tmp_path / "out"
  _prepare(amass_data, out)
  written = os.stat(out / "train" / "sparse.npy").st_mtime_ns
  lines = []
  _prepare(amass_data, out, log=lines.append)
  assert lines[0].startswith("reused the cached s3 dataset")
  assert os.stat(out / "train" / "sparse.npy").st_mtime_ns == written
  clip = amass_data[0] / "CMU/03/03_01_poses.npz"
  os.utime(clip, ns=(1, 1))
  lines = []
  _prepare(amass_data, out, log=lines.append)
  assert lines[0].startswith("prepared s3")


def test_worker_pool_gives_the_same_dataset(amass_data, tmp_path):
  root, model = amass_data
  one = _prepare(amass_data, tmp_path / "one")
  two = prepared.ensure_prepared("s3", str(root), str(tmp_path / "two"),
                                 body_model=str(model), workers=2, log=_quiet)
  for split in protocols.SPLITS:
    a, b = prepared.load_split(one, split), prepared.load_split(two, split)
    assert a.clips == b.clips
    np.testing.assert_array_equal(a.pos, b.pos)
  assert (prepared.load_manifest(one)["skipped"] ==
          prepared.load_manifest(two)["skipped"])


def test_refuses_to_replace_a_folder_that_is_not_prepared(amass_data,
                                                          tmp_path):
  out = tmp_path / "precious"
  out.mkdir()
  (out / "notes.txt").write_text("keep me")
  with pytest.raises(prepared.PreparedError, match="refusing to replace"):
    _prepare(amass_data, out)
  assert (out / "notes.txt").read_text() == "keep me"
  assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []


def test_load_split_errors(tmp_path):
  with pytest.raises(prepared.PreparedError, match="incomplete prepared"):
    prepared.load_split(str(tmp_path), "train")
  with pytest.raises(prepared.PreparedError, match="unknown split"):
    prepared.load_split(str(tmp_path), "validation")
  with pytest.raises(prepared.PreparedError, match="not a prepared dataset"):
    prepared.load_manifest(str(tmp_path))


@pytest.mark.skipif(not CMU_02.is_file(), reason=f"no data at {DATA}")
def test_free_protocol_on_real_clips_skips_a_truncated_one(tmp_path):
  """Subject 02's real clips, 02_02 truncated; every other clip absent."""
  subjects = tmp_path / "data" / "cmu_mocap_asfamc" / "subjects"
  subjects.mkdir(parents=True)
  with zipfile.ZipFile(CMU_02) as src, \
      zipfile.ZipFile(subjects / "02.zip", "w") as dst:
    for name in src.namelist():
      text = src.read(name)
      dst.writestr(name, text[:len(text) // 2] if name == "02_02.amc" else
                   text)
  out = prepared.ensure_prepared("free", str(tmp_path / "data"),
                                 str(tmp_path / "out"), workers=1,
                                 fetch_missing=False, log=_quiet)
  manifest = prepared.load_manifest(out)
  loaded = manifest["train"]["clips"] + manifest["test"]["clips"]
  assert loaded == 2
  reasons = {s["clip"]: s["reason"] for s in manifest["skipped"]}
  assert len(reasons) == 184 + 287 + 73 - 2
  assert "02_02.amc" in reasons["cmu/02_02"]
  assert reasons["hdm05/HDM_bd_depositFloorR_001_120"].endswith(
      "folder absent")
  protocol = protocols.free(str(tmp_path / "data"))
  ref = next(c for c in protocol.train + protocol.test
             if c.clip_id == "cmu/02_01")
  _, positions = ref.load().global_pose()
  split = "train" if ref in protocol.train else "test"
  got = prepared.load_split(out, split).clip("cmu/02_01")["pos"]
  np.testing.assert_allclose(got, positions[1:].reshape(-1, 66), atol=1e-5)


def _cli(*args, cwd):
  return subprocess.run(
      [sys.executable, "-m", "experiments.prepare_data", *args], cwd=cwd,
      capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_cli_prepares_reports_and_previews(amass_data, tmp_path):
  root, model = amass_data
  gif = tmp_path / "preview.gif"
  result = _cli("--protocol=s3", f"--data_dir={root}",
                f"--out={tmp_path / 'out'}", f"--body_model={model}",
                "--workers=1", "--preview=amass/CMU/00/00_01",
                f"--preview_out={gif}", cwd=ROOT)
  assert result.returncode == 0, result.stderr
  manifest = prepared.load_manifest(str(tmp_path / "out"))
  assert f"timing: s3 ready in {tmp_path / 'out'}" in result.stdout
  assert (f"train: {manifest['train']['clips']} clips, "
          f"{manifest['train']['frames']} frames at 60 fps") in result.stdout
  assert "skipped: 3" in result.stdout
  assert "11/14 clips" in result.stderr or "14/14 clips" in result.stderr
  assert gif.stat().st_size > 0


def test_cli_bad_input_is_a_clean_error(tmp_path):
  code, output = cli.run(prepare_data_cli, "--protocol=free",
                         "--download=false", f"--data_dir={tmp_path / 'none'}",
                         f"--out={tmp_path / 'out'}")
  assert code != 0
  assert f"{tmp_path / 'none'}: data folder not found" in output
  assert "Traceback" not in output


def test_cache_key_reads_the_packages_own_lists_by_their_text(tmp_path):
  # Another checkout or a fresh clone has the same split list at another
  # path and time; it must reuse the prepared folder, not rebuild it.
  data = tmp_path / "data"
  data.mkdir()
  built = protocols.build("free", str(data))
  own = [s for s in built.sources if s.startswith(prepared._PACKAGE_DIR)]
  assert own, "the free protocol reads the package's split list"
  key = prepared.cache_key(built)
  stat = os.stat(own[0])
  try:
    os.utime(own[0], ns=(1, 1))
    assert prepared.cache_key(built) == key
  finally:
    os.utime(own[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
