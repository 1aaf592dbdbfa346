"""TFLite export of the streaming step: parity with JAX, sidecar, bad input.

One tiny Mem-MLP (memory block, VQ code, both heads) with random weights is
saved as a training workdir and exported once by the experiments.export
CLI's main (in-process); the tests stream real CMU frames through it and
through rollout.step. The program itself is started once (slow).
"""

import json
import os
import pathlib
import re
import shutil
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import saved_runs

from experiments import export as export_cli
from memmlp_jax import cached_step
from memmlp_jax import dims
from memmlp_jax import export
from memmlp_jax import rollout
from memmlp_jax import train
from memmlp_jax.data import asfamc
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.models import configs
from memmlp_jax.models import factory
import cli

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = (REPO / os.environ.get("MEMMLP_DATA", "../shared/data")).resolve()
CMU = DATA / "cmu_mocap_asfamc"
TINY = dict(latent_dim=32, num_blocks=2, memory_dim=16, vq_codebook_size=16,
            vq_hidden=32)


def _cmu_sparse(clip="02_01", frames=90):
  subject = clip.split("_")[0]
  with zipfile.ZipFile(CMU / "subjects" / f"{subject}.zip") as archive:
    asf, amc = (archive.read(f"{subject}.asf").decode("latin-1"),
                archive.read(f"{clip}.amc").decode("latin-1"))
  motion = asfamc.load_amc(asf, amc, clip_id=f"cmu/{clip}",
                           subject=f"cmu/{subject}", source="cmu")
  return motion_lib.features(motion)["sparse"][:frames]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(cfg, variables, model path) of the tiny run exported by the CLI."""
  root = tmp_path_factory.mktemp("export")
  saved_runs.save_random_run(root / "run", configs.get_config("memmlp41",
                                                              **TINY))
  path = str(root / "model.tflite")
  code, output = cli.run(export_cli, f"--workdir={root / 'run'}",
                         f"--out={path}", "--parity_clips=0")
  assert code == 0, output[-2000:]
  cfg, params = train.restore(str(root / "run"))
  return cfg, {"params": params}, path


def _jax_stream(cfg, variables, sparse):
  model = factory.build(cfg)
  state = rollout.init_state(cfg, batch=1)
  poses = []
  for frame in sparse:
    state, pose = rollout.step(model, variables, state, frame[None])
    poses.append(jax.tree.map(np.asarray, pose))
  return {k: np.concatenate([p[k] for p in poses]) for k in poses[0]}


@pytest.mark.skipif(not CMU.is_dir(), reason=f"no mocap data in {DATA}")
def test_fp32_matches_jax_on_real_frames_with_lost_tracking(exported):
  cfg, variables, path = exported
  sparse = _cmu_sparse()
  sparse[50, 3] = np.nan  # a lost frame: both must hold the last valid one
  reference = _jax_stream(cfg, variables, sparse)
  streamed = export.predict_sequence(path, sparse)
  assert streamed["rot6d"].shape == (len(sparse), dims.ROT6D_DIM)
  assert streamed["pos"].shape == (len(sparse), dims.POS_DIM)
  difference = export.max_abs_difference([reference], [streamed])
  assert max(difference.values()) <= 1e-4, difference
  np.testing.assert_array_equal(streamed["lost"], reference["lost"])
  assert streamed["lost"][50] and streamed["lost"].sum() == 1
  # The prediction really depends on the input (a constant would pass too).
  assert np.abs(np.diff(streamed["pos"], axis=0)).max() > 1e-3


def test_runner_state_is_the_cached_steps_state(exported):
  cfg, variables, path = exported
  streamer = export.TFLiteStreamer(path)
  initial = streamer.init_state()
  expected = dict(export.state_layout(cached_step.init_state(cfg, batch=1)))
  assert sorted(initial) == sorted(expected) == sorted(
      ["state_window", "state_embedded", "state_sparse_memory",
       "state_prev_motion", "state_held", "state_started"])
  for name, value in expected.items():
    np.testing.assert_array_equal(initial[name], np.asarray(value))
  frame = np.random.RandomState(0).randn(dims.SPARSE_DIM) * 0.1
  state, pose = streamer.step(initial, frame)
  # The very first frame fills the whole window.
  np.testing.assert_allclose(state["state_window"][0],
                             np.tile(frame, (cfg.window, 1)), atol=1e-7)
  assert state["state_prev_motion"].shape == (1, cfg.window,
                                              dims.MOTION_DIM)
  np.testing.assert_allclose(state["state_prev_motion"][0, -1, :132],
                             pose["rot6d"][0], atol=1e-6)


def test_sidecar_describes_the_export(exported):
  cfg, variables, path = exported
  sidecar = json.loads(pathlib.Path(export.sidecar_path(path)).read_text())
  assert sidecar["model"] == "memmlp41" and sidecar["window"] == cfg.window
  assert sidecar["config"]["latent_dim"] == TINY["latent_dim"]
  assert sidecar["quantize"] == "none"
  assert [t["name"] for t in sidecar["outputs"]][:3] == ["rot6d", "pos",
                                                          "lost"]
  assert sidecar["inputs"][0] == {"name": "frame", "shape": [1, 54],
                                  "dtype": "float32"}
  assert sidecar["param_checksum"] == export.param_checksum(variables)
  changed = jax.tree.map(lambda x: x, variables)
  changed["params"]["embed"]["bias"] = changed["params"]["embed"]["bias"] + 1
  assert export.param_checksum(changed) != sidecar["param_checksum"]


def test_sidecar_of_another_model_is_refused(exported, tmp_path):
  _, _, path = exported
  copy = str(tmp_path / "model.tflite")
  shutil.copy(path, copy)
  sidecar = json.loads(pathlib.Path(export.sidecar_path(path)).read_text())

  with pytest.raises(export.SidecarMismatchError, match="no sidecar"):
    export.TFLiteStreamer(copy)

  other = dict(sidecar, tflite_sha256="0" * 64)
  pathlib.Path(export.sidecar_path(copy)).write_text(json.dumps(other))
  with pytest.raises(export.SidecarMismatchError,
                     match="describes another model"):
    export.TFLiteStreamer(copy)

  # Right file hash, but the tensors it lists are not the model's.
  longer = json.loads(json.dumps(sidecar))
  longer["inputs"][1]["shape"] = [1, 60, 54]
  pathlib.Path(export.sidecar_path(copy)).write_text(json.dumps(longer))
  with pytest.raises(export.SidecarMismatchError, match="inputs"):
    export.TFLiteStreamer(copy)


def test_an_op_tflite_cannot_take_is_named():
  def step(state, frame):
    return state, {"rot6d": jnp.fft.fft(frame).real}

  with pytest.raises(export.ExportError, match="'fft'"):
    export.convert_step(step, {})


def test_unknown_quantization_is_refused():
  with pytest.raises(export.ExportError, match="quantize"):
    export.convert_step(lambda s, f: (s, {"rot6d": f}), {}, quantize="int4")


def test_calibrated_variants_need_a_representative_dataset():
  for quantize in export.CALIBRATED:
    with pytest.raises(export.ExportError, match="representative"):
      export.convert_step(lambda s, f: (s, {"rot6d": f}), {},
                          quantize=quantize)


def test_cli_without_checkpoint_says_so(tmp_path):
  train.save_config(str(tmp_path),
                    train.RunConfig(model=configs.get_config("memmlp41")))
  code, output = cli.run(export_cli, f"--workdir={tmp_path}",
                         f"--out={tmp_path / 'm.tflite'}")
  assert code == 2
  assert "no trained model checkpoint" in output
  assert "Traceback" not in output
  assert not (tmp_path / "m.tflite").exists()


def test_cli_parity_reports_both_streams_and_their_code_flips(small_free,
                                                             tmp_path):
  data_dir, prepared_dir = small_free
  saved_runs.save_random_run(tmp_path / "run",
                             configs.get_config("memmlp41", **TINY))
  code, output = cli.run(export_cli, f"--workdir={tmp_path / 'run'}",
                         f"--out={tmp_path / 'm.tflite'}",
                         f"--data_dir={data_dir}",
                         f"--prepared={prepared_dir}", "--parity_clips=2",
                         "--max_frames=40")
  assert code == 0, output[-2000:]
  assert "parity on 2 free test clips (80 frames), none:" in output
  flips = re.search(r"another code in ([0-9.]+)% of the frames for some "
                    r"window row, ([0-9.]+)% for the newest row", output)
  assert flips, output[-2000:]
  assert 0.0 <= float(flips[2]) <= float(flips[1]) <= 100.0


@pytest.mark.slow
def test_cli_smoke(tmp_path):
  """The program itself, once: its flags, its exit code, its message."""
  train.save_config(str(tmp_path),
                    train.RunConfig(model=configs.get_config("memmlp41")))
  result = cli.program("experiments.export", f"--workdir={tmp_path}",
                       f"--out={tmp_path / 'm.tflite'}")
  assert result.returncode == 2, result.stderr[-2000:]
  assert "no trained model checkpoint" in result.stderr + result.stdout
  assert not (tmp_path / "m.tflite").exists()



@pytest.mark.skipif(not CMU.is_dir(), reason=f"no mocap data in {DATA}")
def test_step_parity_compares_every_step_on_jax_state(exported):
  cfg, variables, path = exported
  sparse = _cmu_sparse(frames=30)
  report = export.step_parity(cfg, variables, path, [sparse[:12], sparse])
  assert report["frames"] == 42
  assert report["near_ties"] < report["frames"]
  assert {"rot6d", "pos", "state_prev_motion", "state_window"} <= set(
      report["max"])
  assert max(report["max"].values()) <= 1e-4, report


def test_code_margin_is_the_gap_between_the_two_nearest_codes(exported):
  cfg, variables, _ = exported
  state = cached_step.init_state(cfg, batch=1)
  state = state._replace(prev_motion=jnp.asarray(
      np.random.RandomState(0).randn(*state.prev_motion.shape), jnp.float32))
  margin = float(export.code_margin(cfg, variables["params"], state))
  assert 0.0 <= margin < np.inf
  # The same rows in rollout's state layout give the same margin.
  base = rollout.init_state(cfg, batch=1)._replace(
      prev_sparse=state.window, prev_motion=state.prev_motion)
  assert float(export.code_margin(cfg, variables["params"], base)) == margin
  no_vq = configs.get_config("memmlp41", **TINY, use_vq_code=False)
  assert float(export.code_margin(no_vq, variables["params"], state)) == np.inf


def test_push_carries_the_state_in_place_like_step(exported):
  _, _, path = exported
  streamer = export.TFLiteStreamer(path)
  frames = np.random.RandomState(1).randn(12, dims.SPARSE_DIM) * 0.1
  state, by_step = streamer.init_state(), []
  for frame in frames:
    state, pose = streamer.step(state, frame)
    by_step.append(pose)
  with pytest.raises(RuntimeError, match="reset"):
    streamer.push(frames[0])
  for _ in range(2):  # reset() starts over
    streamer.reset()
    for frame, expected in zip(frames, by_step):
      pose = streamer.push(frame)
      assert sorted(pose) == sorted(expected)
      for key in pose:
        np.testing.assert_array_equal(pose[key], expected[key])
