"""Tests for training: resume, frozen VQ, learning, data parallel, the CLI."""

import dataclasses
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import types

import jax
import numpy as np
import optax
import pytest

from experiments import train as train_cli
from memmlp_jax import checkpoints
from memmlp_jax import run_config
from memmlp_jax import skeleton
from memmlp_jax import train
from memmlp_jax.data import prepared
from memmlp_jax.models import configs
from memmlp_jax.models import vqvae

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_FLAGS = REPO / "experiments" / "flags" / "tiny.flags"
TINY = dict(window=16, latent_dim=32, num_blocks=2, head_blocks=1,
            memory_dim=16, vq_hidden=32, vq_codebook_size=32)


def _synthetic_split(frames=600, seed=0):
  rng = np.random.default_rng(seed)
  clips = [types.SimpleNamespace(clip_id=f"c{i}", subject="s", start=i * 100,
                                 length=100) for i in range(frames // 100)]
  return types.SimpleNamespace(
      sparse=rng.normal(size=(frames, 54)).astype(np.float32),
      rot6d=rng.normal(size=(frames, 132)).astype(np.float32),
      pos=rng.normal(size=(frames, 66)).astype(np.float32),
      clips=clips, skeleton=skeleton.SMPL_NEUTRAL)


def _config(**kwargs):
  model = configs.get_config("memmlp41", **TINY)
  defaults = dict(model=model, steps=4, batch_size=8, vq_steps=4,
                  vq_batch_size=8, eval_batches=0, log_every=2)
  return train.RunConfig(**{**defaults, **kwargs})


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------- run config


def test_workdir_of_another_config_is_refused(tmp_path):
  config = _config()
  train.check_workdir(str(tmp_path), config)  # empty workdir: fine
  train.save_config(str(tmp_path), config)
  train.check_workdir(str(tmp_path), train.RunConfig(
      **{**config.__dict__, "checkpoint_every": 7, "stage": "memmlp"}))
  other = _config(batch_size=16, model=configs.get_config(
      "memmlp41", **{**TINY, "num_blocks": 4}))
  with pytest.raises(train.ConfigMismatchError) as e:
    train.check_workdir(str(tmp_path), other)
  message = str(e.value)
  assert str(tmp_path) in message
  assert "batch_size: saved 8, now 16" in message
  assert "model.num_blocks: saved 2, now 4" in message
  assert train.load_config(str(tmp_path)) == config


def test_bad_run_config_values_are_named():
  with pytest.raises(ValueError, match="steps must be >= 1"):
    _config(steps=0)
  with pytest.raises(ValueError, match="decay_at"):
    _config(decay_at=1.5)
  with pytest.raises(ValueError, match="unknown augmentation"):
    _config(augment=("spin",))
  with pytest.raises(ValueError, match="no VQ code"):
    _config(stage="vqvae", model=configs.get_config("agrol_mlp41"))


def test_learning_rate_schedules():
  config = _config(steps=1000, decay_at=0.8, vq_steps=100)
  lr = train.memmlp_schedule(config)
  assert float(lr(0)) == pytest.approx(3e-4)
  assert float(lr(799)) == pytest.approx(3e-4)
  assert float(lr(801)) == pytest.approx(3e-5)
  vq_lr = train.vqvae_schedule(config)
  base = config.vq_learning_rate
  for step, factor in ((19, 1), (21, 0.2), (51, 0.04), (71, 0.008)):
    assert float(vq_lr(step)) == pytest.approx(base * factor), step


# ---------------------------------------------------------------- stage 2


@pytest.mark.slow
def test_vq_encoder_and_codebook_stay_bitwise_frozen():
  config = _config(weight_decay=0.1, learning_rate=1e-2)
  split = _synthetic_split()
  vq = train.build_stage("vqvae", config, split).init_params()["vq"]
  stage = train.build_stage("memmlp", config, split, vq)
  state = train.init_state(stage.init_params(), stage.optimizer)
  before = jax.device_get(state["params"])
  step = jax.jit(train.make_train_step("memmlp", stage.model, config,
                                       stage.optimizer, split.skeleton))
  sampler = train.dataset.WindowSampler(split, config.model.window, 8, 0)
  for i in range(3):
    state, _ = step(state, sampler.batch(i))
  after = jax.device_get(state["params"])
  assert _leaves_equal(after["model"]["vq"], vq)
  assert not np.array_equal(after["model"]["embed"]["kernel"],
                            before["model"]["embed"]["kernel"])
  assert not _leaves_equal(after["loss"], before["loss"])


@pytest.mark.slow
def test_micro_batches_give_the_full_batch_step():
  """Without random draws in the loss (no memory), k equal micro-batches
  give the full batch's gradient, so the same step to float rounding; with
  the memory's random alpha they give another, finite step."""
  split = _synthetic_split()

  def gradient(config):
    """Minus the gradient of one step: SGD at rate 1 from the init."""
    vq = (train.build_stage("vqvae", config, split).init_params()["vq"]
          if config.model.uses_vq else None)
    stage = train.build_stage("memmlp", config, split, vq)
    sgd = optax.sgd(1.0)
    params = stage.init_params()
    state = train.init_state(params, sgd)
    step = jax.jit(train.make_train_step("memmlp", stage.model, config, sgd,
                                         split.skeleton))
    sampler = train.dataset.WindowSampler(split, config.model.window, 8, 0)
    state, metrics = step(state, sampler.batch(0))
    return (jax.tree.map(np.subtract, jax.device_get(state["params"]),
                         jax.device_get(params)), jax.device_get(metrics))

  no_memory = configs.get_config("memmlp41", **TINY, use_memory=False)
  whole, metrics = gradient(_config(model=no_memory))
  sliced, sliced_metrics = gradient(_config(model=no_memory,
                                            micro_batches=4))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-7),
               sliced, whole)
  np.testing.assert_allclose(sliced_metrics["loss"], metrics["loss"],
                             rtol=1e-5)
  params, _ = gradient(_config(micro_batches=2))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  with pytest.raises(ValueError, match="micro_batches must be >= 1 and "
                     "divide batch_size 8, got 3"):
    _config(micro_batches=3)


def test_short_run_on_real_data(small_free, tiny_run):
  """The session's tiny.flags run: stage 1 uses its codebook; stage 2
  lowers every loss term."""
  _, prepared_dir = small_free
  train_split = prepared.load_split(prepared_dir, "train")
  config = checkpoints.load_config(str(tiny_run))
  workdir = str(tiny_run)
  sampler = train.dataset.WindowSampler(train_split, config.model.window, 64,
                                        123)
  batch = sampler.batch(0)
  current, _ = train.dataset.split_window(batch)
  vq = train.trained_vq(config, workdir, train_split)
  encode = jax.jit(lambda params, sparse, motion: vqvae.VQEncoder(
      config.model).apply({"params": params}, sparse, motion))
  codes = encode(vq, current["sparse"],
                 np.concatenate([current["rot6d"], current["pos"]], -1))
  perplexity = float(vqvae.codebook_usage(codes["one_hot"])["perplexity"])
  assert perplexity > 8, perplexity  # of 32 codes, over 1024 frames
  # Every loss on the same fixed batch, before and after training.
  cfg = config.model
  stage = train.build_stage("memmlp", config, train_split)
  _, trained = train.restore(workdir)
  params_after = {"model": trained, "loss": {}}
  params_before = jax.jit(train.init_memmlp_params, static_argnums=0)(
      cfg, jax.random.PRNGKey(0), trained["vq"])
  evaluate = jax.jit(lambda params: train.memmlp_loss(
      stage.model, config, {**params, "loss": params_before["loss"]}, batch,
      jax.random.PRNGKey(0), train=False)[1])
  losses = {}
  for name, params in (("before", params_before), ("after", params_after)):
    metrics = evaluate(params)
    losses[name] = {k: float(v) for k, v in metrics.items()
                    if k.startswith("loss/")}
  assert set(losses["after"]) == {"loss/rot", "loss/rot_vel", "loss/pos",
                                  "loss/lower_vel"}
  for term, value in losses["after"].items():
    assert value < losses["before"][term], (term, losses)


# ---------------------------------------------------------- data parallel

_DATA_PARALLEL = textwrap.dedent("""
    import jax, numpy as np
    from tests import test_train as t
    from memmlp_jax import train
    assert jax.device_count() == 2, jax.devices()
    # The memory block without the VQ code: no stage-1 model to build.
    config = t._config(batch_size=8, model=t.configs.get_config(
        "memmlp41", **t.TINY, use_vq_code=False))
    split = t._synthetic_split()
    stage = train.build_stage("memmlp", config, split)
    sampler = train.dataset.WindowSampler(split, config.model.window, 8, 0,
                                          train.dataset.Augment(True, True))
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = train.make_mesh(devices)
      step = train.jit_train_step(train.make_train_step(
          "memmlp", stage.model, config, stage.optimizer, split.skeleton),
          mesh)
      state = jax.device_put(train.init_state(stage.init_params(),
                                              stage.optimizer),
                             jax.sharding.NamedSharding(
                                 mesh, jax.sharding.PartitionSpec()))
      for i in range(3):
        batch = train.shard_batch(mesh, sampler, i)
        assert len(batch["pos"].sharding.device_set) == len(devices)
        state, metrics = step(state, batch)
      results.append(jax.device_get(state["params"]))
    one, two = results
    worst = max(float(np.max(np.abs(a - b))) for a, b in
                zip(jax.tree.leaves(one), jax.tree.leaves(two)))
    changed = max(float(np.max(np.abs(a - b))) for a, b in
                  zip(jax.tree.leaves(one),
                      jax.tree.leaves(stage.init_params())))
    print("max difference", worst, "max change", changed)
    assert worst < 1e-5 and changed > 1e-4, (worst, changed)
""")


@pytest.mark.slow
def test_two_devices_equal_one_device():
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": (
      os.environ.get("XLA_FLAGS", "")
      + " --xla_force_host_platform_device_count=2")}
  result = subprocess.run([sys.executable, "-c", _DATA_PARALLEL], cwd=REPO,
                          env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "max difference" in result.stdout


# -------------------------------------------------------------------- CLI


def _cli(*args, env=None):
  return subprocess.Popen(
      [sys.executable, "-m", "experiments.train", *args], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_params(workdir):
  return jax.device_get(train.restore(workdir)[1])


@pytest.mark.slow
def test_kill_9_then_resume_ends_bitwise_equal(small_free, tiny_run,
                                               tmp_path, caplog):
  """tiny_run is the uninterrupted run of the same flags.

  The killed run is a program; it resumes in-process, as tiny_run ran.
  """
  import cli  # pylint: disable=g-import-not-at-top
  data_dir, prepared_dir = small_free
  common = [f"--flagfile={TINY_FLAGS}", f"--data_dir={data_dir}",
            f"--prepared_dir={prepared_dir}"]
  killed = tmp_path / "killed"
  process = _cli(*common, f"--workdir={killed}")
  # Kill once stage 2 has a checkpoint but has not finished.
  checkpoints = killed / "memmlp" / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and process.poll() is None:
    if checkpoints.is_dir() and any(p.name.isdigit()
                                    for p in checkpoints.iterdir()):
      break
    time.sleep(0.05)
  assert process.poll() is None, "the run ended before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.communicate()
  assert not (checkpoints / "60").exists()
  # At INFO on absl's own logger: an in-process app may have set it higher.
  with caplog.at_level("INFO", logger="absl"):
    code, out = cli.run(train_cli, *common, f"--workdir={killed}")
  assert code == 0, out
  assert "resuming from the checkpoint at step" in caplog.text
  assert _leaves_equal(_final_params(killed), _final_params(tiny_run))


@pytest.mark.slow
def test_fine_tuning_records_the_run_it_starts_from(small_free, tiny_run,
                                                    tmp_path):
  import cli  # pylint: disable=g-import-not-at-top
  data_dir, prepared_dir = small_free
  workdir = tmp_path / "tuned"
  code, out = cli.run(train_cli, f"--flagfile={TINY_FLAGS}",
                      f"--data_dir={data_dir}",
                      f"--prepared_dir={prepared_dir}", f"--workdir={workdir}",
                      f"--init_from={tiny_run}", "--steps=2",
                      "--checkpoint_every=2", "--eval_every=2",
                      # Another loss, the same parameters: allowed.
                      "--model_override=last_frame_share=0.5")
  assert code == 0, out
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["init_from"] == str(tiny_run)
  assert checkpoints.latest_step(str(workdir / "memmlp")) == 2
  assert not (workdir / "vqvae").exists()  # stage 1 is tiny_run's
  # Other parameters: refused, naming the run, before any work.
  code, out = cli.run(train_cli, f"--flagfile={TINY_FLAGS}",
                      f"--data_dir={data_dir}",
                      f"--prepared_dir={prepared_dir}",
                      f"--workdir={tmp_path / 'other'}",
                      f"--init_from={tiny_run}", "--model_override=num_blocks=3")
  assert code != 0 and f"--init_from {tiny_run}" in out, out
  assert "other parameters" in out
  assert not (tmp_path / "other" / "memmlp").exists()


def test_cli_rejects_bad_input_before_any_work(tmp_path):
  # Here, not at the top: _DATA_PARALLEL imports this file as tests.test_train,
  # where the tests' own modules are not on the path.
  import cli  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  code, out = cli.run(train_cli, f"--workdir={workdir}", "--steps=0")
  assert code != 0 and "steps must be >= 1" in out
  assert "Traceback" not in out
  missing = tmp_path / "no_such_data"
  code, out = cli.run(train_cli, f"--workdir={workdir}",
                      f"--data_dir={missing}")
  assert code != 0 and str(missing) in out and "Traceback" not in out
  code, out = cli.run(train_cli, f"--workdir={workdir}", "--protocol=s1",
                      f"--data_dir={tmp_path}")
  assert code != 0 and "--body_model" in out and "Traceback" not in out
  train.save_config(str(workdir), _config())
  code, out = cli.run(train_cli, f"--workdir={workdir}",
                      f"--data_dir={tmp_path}")
  assert code != 0 and "another configuration" in out
  assert "Traceback" not in out
  assert not (workdir / "memmlp").exists()
  with open(workdir / "config.json") as f:
    assert json.load(f)["batch_size"] == 8


def test_a_runs_train_command_rebuilds_its_config(tmp_path):
  """Every field a run changed has a flag that its train command sets."""
  import cli  # pylint: disable=g-import-not-at-top  (see above)
  config = train.RunConfig(
      model=configs.get_config("memmlp41", alpha_per="sample"),
      augment=("yaw", "mirror"), memory_source="own", start_share=0.25,
      vq_augment=True, vq_weight_decay=1e-4, vq_restart_until=0.8)
  workdir = tmp_path / "run"
  command = run_config.train_command(config, str(workdir))
  args = [shlex.split(line)[0] for line in command.split(" \\\n")[1:]]
  # A saved run that differs in the seed alone: train names every field in
  # which the command's config differs from it, and starts nothing.
  train.save_config(str(workdir), dataclasses.replace(config, seed=7))
  code, out = cli.run(train_cli, *args)
  assert code != 0, out
  assert out.strip().endswith("Differences: seed: saved 7, now 0"), out
  assert not (workdir / "vqvae").exists()
