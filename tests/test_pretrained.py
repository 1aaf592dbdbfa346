"""The shipped model: its file (memmlp_jax/pretrained.py), the release app
and the commands that run it when given no --workdir.

The session's tiny run (tests/conftest.py) is released once by the release
app; the card's check is recomputed from that file and, once the repository
ships one, from pretrained/memmlp41_free.npz.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

import cli
from experiments import evaluate as evaluate_cli
from experiments import export as export_cli
from experiments import live as live_cli
from experiments import predict as predict_cli
from experiments import release as release_cli
from memmlp_jax import checkpoints
from memmlp_jax import pretrained
from memmlp_jax import rollout
from memmlp_jax.models import factory

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = (REPO / os.environ.get("MEMMLP_DATA", "../shared/data")).resolve()
SHIPPED = pathlib.Path(pretrained.SHIPPED)
# The free test clips of the two subjects small_free holds.
TINY_CHECK = ("cmu/02_01", "cmu/35_01")


@pytest.fixture(scope="module")
def released(tiny_run, small_free, tmp_path_factory):
  """(release file, data_dir): tiny_run released at float16 by the app."""
  data_dir, prepared_dir = small_free
  out = tmp_path_factory.mktemp("pretrained") / "tiny.npz"
  code, output = cli.run(
      release_cli, f"--workdir={tiny_run}", f"--out={out}", "--dtype=float16",
      f"--data_dir={data_dir}", f"--prepared_dir={prepared_dir}",
      f"--check_clips={','.join(TINY_CHECK)}")
  assert code == 0, output
  return out, data_dir


@pytest.fixture(scope="module")
def walk(small_free, tmp_path_factory):
  """(asf, amc) of the CMU 02_01 walk, predict's mocap input."""
  folder = tmp_path_factory.mktemp("walk")
  with zipfile.ZipFile(DATA / "cmu_mocap_asfamc" / "subjects" / "02.zip") as z:
    for name in ("02.asf", "02_01.amc"):
      (folder / name).write_bytes(z.read(name))
  return folder / "02.asf", folder / "02_01.amc"


def _assert_close_but_for_code_flips(ours, theirs, atol):
  """The typical frame agrees to ``atol``. Weights rounded to float16 may
  flip the memory's VQ code where two codes nearly tie (export's parity
  check finds such frames too), and the frames whose window holds a flipped
  code differ more."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  worst = np.abs(ours - theirs).reshape(len(ours), -1).max(axis=1)
  assert np.median(worst) <= atol, np.sort(worst)[::-1][:10]


def _predict(walk, out: pathlib.Path, *workdir):
  asf, amc = walk
  code, output = cli.run(predict_cli, f"--input={amc}", f"--asf={asf}",
                         f"--output={out}.bvh", f"--npz={out}.npz", *workdir)
  assert code == 0, output
  return np.load(f"{out}.npz")["positions"]


def test_release_writes_the_file_its_checksum_and_the_card(released):
  path, _ = released
  content = path.read_bytes()
  digest = hashlib.sha256(content).hexdigest()
  assert len(content) <= pretrained.MAX_BYTES
  assert (path.parent / "tiny.npz.sha256").read_text() == (
      f"{digest}  tiny.npz\n")
  card = (path.parent / "README.md").read_text()
  for text in (digest, "float16", "python -m experiments.train \\",
               "--model=memmlp41", "--model_override=window=16",
               "| Method | MPJRE | MPJPE", "free for\n  all uses",
               "Attribution-ShareAlike 3.0", "`cmu/02_01`, `cmu/35_01`"):
    assert text in card, text
  release = pretrained.load(str(path))
  assert release.dtype == "float16" and release.step == release.config.steps


def test_a_fine_tuned_run_is_carded_with_the_runs_it_started_from(
    tiny_run, small_free, tmp_path):
  data_dir, prepared_dir = small_free
  tuned = tmp_path / "tuned"
  shutil.copytree(tiny_run, tuned)
  config = json.loads((tuned / "config.json").read_text())
  (tuned / "config.json").write_text(json.dumps(
      {**config, "init_from": str(tiny_run)}))
  args = (f"--workdir={tuned}", f"--data_dir={data_dir}",
          f"--prepared_dir={prepared_dir}",
          f"--check_clips={','.join(TINY_CHECK)}")
  code, output = cli.run(release_cli, f"--out={tmp_path / 'm.npz'}", *args)
  assert code == 0, output
  card = (tmp_path / "README.md").read_text()
  steps, batch = config["steps"], config["batch_size"]
  for text in ("Stage 2 ran 2 times", f"| `{tiny_run}` | 1, VQ-VAE |",
               f"| `{tiny_run}` | 2, Mem-MLP | {steps} |",
               "| `runs/m` | 2, Mem-MLP, fine-tuned |",
               f"| all | 2 | {2 * steps:,} | | {2 * steps * batch:,} |",
               f"--workdir={tiny_run} \\", f"--init_from={tiny_run} \\"):
    assert text in card, text
  # The run it fine-tunes is gone: named, and nothing written.
  (tuned / "config.json").write_text(json.dumps(
      {**config, "init_from": str(tmp_path / "gone")}))
  code, output = cli.run(release_cli, f"--out={tmp_path / 'n.npz'}", *args)
  assert code == 1 and f"fine-tunes {tmp_path / 'gone'}" in output, output
  assert not (tmp_path / "n.npz").exists()


def test_release_predicts_as_its_run(released, tiny_run):
  path, data_dir = released
  cfg, params = checkpoints.restore(str(tiny_run))
  half = pretrained.load(str(path))
  assert half.config == checkpoints.load_config(str(tiny_run))
  # What export reads to decide on smoothing, from a file or a folder.
  assert pretrained.restore_run(str(path))[0] == half.config
  assert pretrained.restore_run(str(tiny_run))[0] == half.config
  jax.tree.map(np.testing.assert_array_equal, half.params,
               pretrained.stored(params, "float16"))
  full = path.parent / "full.npz"
  pretrained.save(str(full), dataclasses.replace(half, params=params,
                                                 dtype="float32"))
  clips, body = pretrained.check_clips(data_dir, TINY_CHECK)
  sparse = [c[0] for c in clips]

  def poses(weights):
    return rollout.rollout_sequences(factory.build(cfg), {"params": weights},
                                     cfg, sparse, skeleton=body)

  for ours, theirs in zip(poses(pretrained.restore(str(full))[1]),
                          poses(params)):
    np.testing.assert_array_equal(ours["rot6d"], theirs["rot6d"])
  for ours, theirs in zip(poses(half.params), poses(params)):
    _assert_close_but_for_code_flips(ours["rot6d"], theirs["rot6d"], 1e-2)
  for key, value in pretrained.check_scores(cfg, params, clips, body).items():
    assert half.check[key] == pytest.approx(value, abs=0.1), key


def test_predict_without_workdir_runs_the_release(released, tiny_run, walk,
                                                  tmp_path, monkeypatch):
  path, _ = released
  monkeypatch.setenv(pretrained.ENV_VAR, str(path))
  shipped = _predict(walk, tmp_path / "shipped")
  run = _predict(walk, tmp_path / "run", f"--workdir={tiny_run}")
  _assert_close_but_for_code_flips(shipped, run, 1e-2)  # metres
  assert not np.array_equal(shipped, run)  # float16 weights: the release's


@pytest.mark.parametrize("app, args, code", [
    (predict_cli, ["--input=rec.csv", "--output=o.bvh"], 1),
    (evaluate_cli, ["--protocol=free", "--data_dir=d", "--out=r.json"], 1),
    (export_cli, ["--out=m.tflite"], 2),
    (live_cli, ["--duration=0.1"], 1),
])
def test_without_any_model_the_commands_say_what_to_do(app, args, code,
                                                       tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path / "none.npz"))
  result, output = cli.run(app, *args)
  assert result == code
  assert "pass --workdir=RUN" in output and "Traceback" not in output
  assert not any(tmp_path.iterdir())


def _flip_a_byte(path):
  content = bytearray(path.read_bytes())
  content[len(content) // 2] ^= 0xFF
  path.write_bytes(bytes(content))


def _truncate(path):
  path.write_bytes(path.read_bytes()[:-1000])


def _garbage(path):
  content = os.urandom(5000)
  path.write_bytes(content)
  pathlib.Path(f"{path}.sha256").write_text(
      f"{hashlib.sha256(content).hexdigest()}  {path.name}\n")


def _no_checksum(path):
  os.remove(f"{path}.sha256")


def _wrong_config(path):
  release = pretrained.load(str(path))
  model = dataclasses.replace(release.config.model, latent_dim=24)
  pretrained.save(str(path), dataclasses.replace(
      release, config=dataclasses.replace(release.config, model=model)))


@pytest.mark.parametrize("spoil, message", [
    (_flip_a_byte, "corrupt, truncated or replaced"),
    (_truncate, "corrupt, truncated or replaced"),
    (_garbage, "not a release file"),
    (_no_checksum, "no readable checksum file"),
    (_wrong_config, r"do not fit its config \(memmlp41\): .* has shape"),
])
def test_a_bad_file_is_named_with_what_is_wrong(released, walk, spoil,
                                                message, tmp_path,
                                                monkeypatch):
  path = tmp_path / "bad.npz"
  shutil.copy(released[0], path)
  shutil.copy(f"{released[0]}.sha256", f"{path}.sha256")
  spoil(path)
  with pytest.raises(pretrained.PretrainedError, match=message) as error:
    pretrained.load(str(path))
  assert str(error.value).startswith(str(path))
  monkeypatch.setenv(pretrained.ENV_VAR, str(path))
  asf, amc = walk
  code, output = cli.run(predict_cli, f"--input={amc}", f"--asf={asf}",
                         f"--output={tmp_path / 'o.bvh'}")
  assert code == 1 and "Traceback" not in output
  assert output.strip().splitlines()[-1].startswith(f"error: {path}: ")


def test_a_file_over_the_limit_is_not_written(released, tiny_run, small_free,
                                              tmp_path, monkeypatch):
  path, _ = released
  data_dir, prepared_dir = small_free
  monkeypatch.setattr(pretrained, "MAX_BYTES", path.stat().st_size - 1)
  with pytest.raises(pretrained.PretrainedError, match="over the"):
    pretrained.save(str(tmp_path / "big.npz"), pretrained.load(str(path)))
  code, output = cli.run(
      release_cli, f"--workdir={tiny_run}", f"--out={tmp_path / 'big.npz'}",
      "--dtype=float16", f"--data_dir={data_dir}",
      f"--prepared_dir={prepared_dir}",
      f"--check_clips={','.join(TINY_CHECK)}")
  assert code == 1 and "over the" in output, output
  assert not any(tmp_path.iterdir())


def test_release_refuses_results_of_another_evaluation(released, tiny_run,
                                                       tmp_path):
  _, data_dir = released
  results = tmp_path / "results.json"
  results.write_text(json.dumps({"source": "bvh_clips", "model": "memmlp41"}))
  code, output = cli.run(
      release_cli, f"--workdir={tiny_run}", f"--out={tmp_path / 'm.npz'}",
      f"--data_dir={data_dir}", f"--results={results}",
      f"--check_clips={','.join(TINY_CHECK)}")
  assert code == 1 and "not the free-protocol results" in output, output
  assert not (tmp_path / "m.npz").exists()


def test_resolve_prefers_the_workdir_then_the_shipped_file(tmp_path,
                                                          monkeypatch):
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path / "model.npz"))
  assert pretrained.resolve("runs/mine") == "runs/mine"
  with pytest.raises(pretrained.PretrainedError, match="pass --workdir"):
    pretrained.resolve(None)
  (tmp_path / "model.npz").write_bytes(b"")
  assert pretrained.resolve(None) == str(tmp_path / "model.npz")
  monkeypatch.delenv(pretrained.ENV_VAR)
  assert pretrained.shipped_path() == pretrained.SHIPPED


def _model_files():
  """The tiny release (of the trained tiny run: slow) always; the
  repository's file once it ships one (a rollout of real clips through the
  full-size model: slow)."""
  shipped = [pytest.param("shipped", marks=pytest.mark.slow)]
  return [pytest.param("tiny", marks=pytest.mark.slow)] + (
      shipped if SHIPPED.exists() else [])


@pytest.fixture(params=_model_files())
def model_file(request):
  """(release file, data_dir of its check clips)."""
  if request.param == "tiny":
    return request.getfixturevalue("released")
  if not (DATA / "cmu_mocap_asfamc").is_dir():
    pytest.skip(f"no free data at {DATA} (set MEMMLP_DATA) for the check")
  return SHIPPED, str(DATA)


def test_the_cards_check_recomputes_from_the_file(model_file):
  path, data_dir = model_file
  release = pretrained.load(str(path))  # the checksum is verified
  clips, body = pretrained.check_clips(data_dir, release.check["clips"])
  scores = pretrained.check_scores(release.config.model, release.params,
                                   clips, body)
  assert scores["mpjpe"] == pytest.approx(release.check["mpjpe"], abs=0.05)
  assert scores["mpjre"] == pytest.approx(release.check["mpjre"], abs=0.05)
  card = (path.parent / "README.md").read_text()
  assert pretrained.recorded_sha256(str(path)) in card
  assert (f"MPJPE {release.check['mpjpe']:.3f} cm, MPJRE "
          f"{release.check['mpjre']:.3f} deg") in card


@pytest.mark.slow
def test_release_cli_smoke(tmp_path):
  """The release program itself, once: a folder that is no run is named,
  and nothing is written."""
  result = subprocess.run(
      [sys.executable, "-m", "experiments.release",
       f"--workdir={tmp_path / 'none'}", f"--out={tmp_path / 'm.npz'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1, result.stderr[-2000:]
  assert f"--workdir {tmp_path / 'none'}" in result.stderr
  assert "no run config" in result.stderr
  assert not (tmp_path / "m.npz").exists()
