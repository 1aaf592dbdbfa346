"""Training: state, steps and the loop pieces for both stages.

Stage 1 ("vqvae") trains the VQ-VAE (Adam, lr x0.2 at 20/50/70% of its
steps). Stage 2 ("memmlp") trains the model (AdamW, lr decayed once, late)
with the VQ encoder + codebook copied from stage 1 and frozen: the model stops
their gradient and the optimizer maps their update to zero, so they stay
bitwise equal to stage 1's. Models without a VQ code skip stage 1.

Stage 2's recipe switches (the study in docs/training.md) decide what the
memory block reads during training: the true previous window ("truth", the
paper's), optionally with Gaussian noise on its motion, or ("own") the model's
own stop-gradient prediction of the previous window, as the online rollout
feeds it; `start_share` of the crops end near a clip start, padded and with an
empty memory exactly as the rollout begins a sequence.

Everything a step consumes is a pure function of (seed, step): the batch (see
data/dataset.py) and the random draws (a key folded with the step). A run
killed at any point and restarted from its latest checkpoint therefore ends
with bitwise the same parameters as an uninterrupted one.

Workdir layout:
  config.json                 the run's configuration (checked on resume)
  <stage>/checkpoints/<step>/ orbax checkpoints (params, opt_state, step)
  <stage>/metrics.csv         every logged metric, one row per (step, name)
  <stage>/events.out.tfevents.*  the same for TensorBoard
"""

import dataclasses
import functools
import os
import time
from typing import Any, Callable

from absl import logging
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from memmlp_jax import checkpoints
from memmlp_jax import fake_quant
from memmlp_jax import losses
from memmlp_jax import rollout
from memmlp_jax import run_config
from memmlp_jax import writers
from memmlp_jax.data import dataset
from memmlp_jax.models import configs
from memmlp_jax.models import factory
from memmlp_jax.models import memmlp
from memmlp_jax.models import vqvae

# The run config and the workdir's checkpoints have their own modules
# (inference reads runs without importing the trainer); these names stay here
# for code that builds and trains a run.
RunConfig = run_config.RunConfig
ConfigMismatchError = run_config.ConfigMismatchError
STAGES = run_config.STAGES
MEMORY_SOURCES = run_config.MEMORY_SOURCES
FAKE_QUANT = run_config.FAKE_QUANT
OPTIMIZERS = run_config.OPTIMIZERS
same_run = run_config.same_run
check_workdir = run_config.check_workdir
save_config = run_config.save_config
load_config = checkpoints.load_config
checkpoint_manager = checkpoints.checkpoint_manager
latest_step = checkpoints.latest_step
restore_state = checkpoints.restore_state
restore = checkpoints.restore

# Dead-code restarts in stage 1 (see restart_dead_codes).
CODE_USAGE_DECAY = 0.9
DEAD_CODE_USAGE = 0.1


# ----------------------------------------------------------------- optimizers


def memmlp_schedule(config: RunConfig) -> optax.Schedule:
  """learning_rate, then final_learning_rate after decay_at * steps."""
  return optax.piecewise_constant_schedule(
      config.learning_rate,
      {int(config.decay_at * config.steps):
       config.final_learning_rate / config.learning_rate})


def vqvae_schedule(config: RunConfig) -> optax.Schedule:
  """vq_learning_rate, times 0.2 at 20%, 50% and 70% of vq_steps."""
  return optax.piecewise_constant_schedule(
      config.vq_learning_rate,
      {int(f * config.vq_steps): 0.2 for f in (0.2, 0.5, 0.7)})


def _param_labels(params):
  mask = memmlp.trainable_mask(params["model"])
  return {"model": jax.tree.map(lambda keep: "model" if keep else "frozen",
                                mask),
          "loss": jax.tree.map(lambda _: "log_vars", params["loss"])}


def memmlp_optimizer(config: RunConfig) -> optax.GradientTransformation:
  """AdamW (or Adam) on the model, Adam on the loss log-variances, VQ frozen."""
  schedule = memmlp_schedule(config)
  if config.optimizer == "adamw":
    model = optax.adamw(schedule, weight_decay=config.weight_decay)
  else:
    model = optax.chain(optax.add_decayed_weights(config.weight_decay),
                        optax.adam(schedule))
  return optax.multi_transform(
      {"model": model,
       "log_vars": optax.adam(config.loss_weight_lr or schedule),
       "frozen": optax.set_to_zero()}, _param_labels)


def vqvae_optimizer(config: RunConfig) -> optax.GradientTransformation:
  return optax.adamw(vqvae_schedule(config),
                     weight_decay=config.vq_weight_decay)


# ---------------------------------------------------------------------- state


def init_state(params, optimizer: optax.GradientTransformation) -> dict:
  """The train state: a plain pytree, so orbax saves it as it is."""
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": optimizer.init(params)}


def init_vqvae_params(cfg: configs.ModelConfig, rng, batch):
  """VQ-VAE params with the codebook seeded from encoder latents of `batch`."""
  model = vqvae.VQVAE(cfg)
  init_rng, codebook_rng = jax.random.split(rng)
  current, _ = dataset.split_window(batch)
  params = model.init(init_rng, current["sparse"], _motion(current))["params"]
  latents = model.apply({"params": params}, current["sparse"],
                        _motion(current))["latent"]
  return vqvae.init_codebook_from_latents(params, latents, codebook_rng)


def init_memmlp_params(cfg: configs.ModelConfig, rng, vq_params=None):
  """{"model": model params (VQ part from stage 1), "loss": loss params}."""
  _, variables = factory.init(cfg, rng)
  params = dict(variables["params"])
  if cfg.uses_vq:
    if vq_params is None:
      raise ValueError(f"model {cfg.name!r} needs the stage-1 VQ-VAE params")
    params["vq"] = vq_params
  return {"model": params, "loss": losses.init_log_vars(cfg)}


# ---------------------------------------------------------------------- steps


def _motion(window):
  return jnp.concatenate([window["rot6d"], window["pos"]], axis=-1)


def _step_key(seed: int, step):
  return jax.random.fold_in(jax.random.PRNGKey(seed), step)


def _empty_at_clip_start(sparse, motion, clip_frame, lag: int):
  """(sparse, motion) of a remembered window; zeros where the window it is
  remembered for is a clip's first (its last frame is clip frame lag - 1),
  as the rollout's memory is before the first frame."""
  keep = (clip_frame >= lag)[:, None, None]
  return jnp.where(keep, sparse, 0.0), jnp.where(keep, motion, 0.0)


def _remembered_truth(config: RunConfig, window, clip_frame, lag: int, key):
  """The true window as the memory reads it: + memory_noise on its motion,
  empty at a clip start."""
  sparse, motion = _empty_at_clip_start(window["sparse"], _motion(window),
                                        clip_frame, lag)
  if config.memory_noise:
    noise_key, _ = jax.random.split(key)
    motion = motion + config.memory_noise * jax.random.normal(
        noise_key, motion.shape, motion.dtype)
  return sparse, motion


def previous_output(model, config: RunConfig, params, windows, clip_frame,
                    key):
  """The model's own stop-gradient prediction of the previous window.

  Made in inference mode, as the online rollout makes it; a memory model
  reads the true (+ memory_noise) window before it, empty at a clip start.
  """
  cfg = config.model
  previous = windows[-2]
  older_sparse = older_motion = None
  if cfg.uses_memory:
    older_sparse, older_motion = _remembered_truth(config, windows[-3],
                                                   clip_frame, 2, key)
  out = model.apply({"params": params}, previous["sparse"], older_sparse,
                    older_motion, alpha=cfg.memory_alpha, train=False)
  return jax.tree.map(jax.lax.stop_gradient, out)


def memory_inputs(model, config: RunConfig, params, windows, clip_frame, key,
                  skeleton=None, previous_out=None):
  """(prev_sparse, prev_motion) the memory reads for the newest window.

  "truth": the true previous window (+ memory_noise); "own": the model's own
  stop-gradient prediction of the previous window (`previous_output`, or
  `previous_out` when the caller has it), as the rollout feeds it.
  """
  previous = windows[-2]
  if config.memory_source == "truth":
    return _remembered_truth(config, previous, clip_frame, 1, key)
  out = previous_out
  if out is None:
    out = previous_output(model, config, params, windows, clip_frame, key)
  positions = out["pos"]
  if positions is None:
    positions = rollout.window_positions(
        out["rot6d"], previous["sparse"],
        jnp.asarray(skeleton.offsets, jnp.float32))
  return _empty_at_clip_start(
      previous["sparse"], jnp.concatenate([out["rot6d"], positions], -1),
      clip_frame, 1)


def memmlp_loss(model, config: RunConfig, params, batch, key, train: bool,
                skeleton=None):
  """(total loss, metrics) of the model on a batch of T+history-frame crops,
  every apply computing what ``config.fake_quant``'s export computes."""
  with fake_quant.simulated(config.fake_quant):
    return _memmlp_loss(model, config, params, batch, key, train, skeleton)


def _memmlp_loss(model, config: RunConfig, params, batch, key, train: bool,
                 skeleton):
  cfg = config.model
  windows = dataset.windows(batch, cfg.window)
  current = windows[-1]
  clip_frame = batch["clip_frame"]
  alpha_key, dropout_key, memory_key = jax.random.split(key, 3)
  before = None
  if config.history == 2:
    before = previous_output(model, config, params["model"], windows,
                             clip_frame, memory_key)
  prev_sparse = prev_motion = None
  if cfg.uses_memory:
    prev_sparse, prev_motion = memory_inputs(
        model, config, params["model"], windows, clip_frame, memory_key,
        skeleton, before)
  out = model.apply(
      {"params": params["model"]}, current["sparse"], prev_sparse,
      prev_motion, train=train,
      rngs={"alpha": alpha_key, "dropout": dropout_key})
  extra = {}
  if cfg.output_vel_loss:
    extra["output_vel"] = losses.output_velocity(
        out["rot6d"][:, -1], before["rot6d"][:, -1], current["rot6d"][:, -1],
        windows[-2]["rot6d"][:, -1], clip_frame >= 1, skeleton)
  return losses.model_loss(cfg, out, current["rot6d"], current["pos"],
                           params["loss"], skeleton, extra)


def vqvae_loss(model, cfg: configs.ModelConfig, params, batch):
  """(total loss, (metrics, the VQ-VAE's outputs))."""
  current, _ = dataset.split_window(batch)
  out = model.apply({"params": params}, current["sparse"], _motion(current))
  total, metrics = losses.vqvae_loss(cfg, out, current["rot6d"])
  return total, (metrics, out)


def restart_dead_codes(state, out, key, enabled=True):
  """Moves codes the encoder has stopped choosing onto current latents.

  Plain codebook-loss training collapses onto a handful of codes within a
  few dozen steps on this data (perplexity 32 -> 1.2 of 32 codes). Each code
  keeps a running average of the fraction of frames that pick it; a code
  below DEAD_CODE_USAGE / K is replaced by a random encoder output of the
  batch (the "codebook reset" of Jukebox, Dhariwal et al. 2020). With
  `enabled` false (a traced bool) usage is still tracked but nothing moves.
  """
  usage = state["code_usage"]
  size = usage.shape[0]
  frames = out["one_hot"].reshape(-1, size)
  usage = CODE_USAGE_DECAY * usage + (1 - CODE_USAGE_DECAY) * frames.mean(0)
  dead = (usage < DEAD_CODE_USAGE / size) & enabled
  latent = jax.lax.stop_gradient(out["latent"])
  latents = latent.reshape(-1, latent.shape[-1])
  picks = jax.random.randint(key, (size,), 0, latents.shape[0])
  vq = state["params"]["vq"]
  codebook = jnp.where(dead[:, None], latents[picks], vq["codebook"])
  params = {**state["params"], "vq": {**vq, "codebook": codebook}}
  return ({**state, "params": params,
           "code_usage": jnp.where(dead, 1.0 / size, usage)},
          jnp.sum(dead))


# --------------------------------------------------------------------- stages


class VQVAEStage:
  """Stage 1: the VQ-VAE, its codebook kept in use by dead-code restarts."""
  name = "vqvae"

  def model(self, config: RunConfig):
    return vqvae.VQVAE(config.model)

  def steps(self, config: RunConfig) -> int:
    return config.vq_steps

  def batch_size(self, config: RunConfig) -> int:
    return config.vq_batch_size

  def micro_batches(self, config: RunConfig) -> int:
    del config
    return 1

  def optimizer(self, config: RunConfig) -> optax.GradientTransformation:
    return vqvae_optimizer(config)

  def augment(self, config: RunConfig) -> dataset.Augment:
    return (dataset.Augment.from_names(config.augment) if config.vq_augment
            else dataset.Augment())

  def crops(self, config: RunConfig) -> dict:
    """The WindowSampler options of its training (and validation) crops."""
    del config
    return {"history": 1, "start_share": 0.0}

  def init_params(self, config: RunConfig, train_split, vq_params=None,
                  start_params=None) -> Callable[[], Any]:
    """VQ-VAE params with the codebook seeded from a first batch's latents."""
    del vq_params, start_params
    cfg = config.model
    rng = jax.random.PRNGKey(config.seed)
    sampler = dataset.WindowSampler(train_split, cfg.window,
                                    config.vq_batch_size, config.seed)
    # Jitted: op-by-op initialisation compiles every small op on its own.
    init = jax.jit(lambda batch: init_vqvae_params(cfg, rng, batch))
    return functools.partial(init, sampler.batch(0))

  def extra_state(self, params) -> dict:
    """How often each code is used (a running average), for the restarts."""
    size = params["vq"]["codebook"].shape[0]
    return {"code_usage": jnp.full((size,), 1.0 / size, jnp.float32)}

  def loss(self, model, config: RunConfig, params, batch, step, train: bool,
           skeleton=None):
    """(total, (metrics, the VQ-VAE's outputs)); deterministic."""
    del step, train, skeleton
    return vqvae_loss(model, config.model, params, batch)

  def after_update(self, config: RunConfig, state, out, step):
    """Restarts dead codes on this batch's latents, until vq_restart_until."""
    last = int(config.vq_restart_until * config.vq_steps)
    state, restarted = restart_dead_codes(state, out,
                                          _step_key(config.seed, step),
                                          enabled=step < last)
    return state, {"vq/restarted": restarted}


class MemMLPStage:
  """Stage 2: the model, with the VQ part (if any) from stage 1, frozen."""
  name = "memmlp"

  def model(self, config: RunConfig):
    return factory.build(config.model)

  def steps(self, config: RunConfig) -> int:
    return config.steps

  def batch_size(self, config: RunConfig) -> int:
    return config.batch_size

  def micro_batches(self, config: RunConfig) -> int:
    return config.micro_batches

  def optimizer(self, config: RunConfig) -> optax.GradientTransformation:
    return memmlp_optimizer(config)

  def augment(self, config: RunConfig) -> dataset.Augment:
    return dataset.Augment.from_names(config.augment)

  def crops(self, config: RunConfig) -> dict:
    return {"history": config.history, "start_share": config.start_share}

  def init_params(self, config: RunConfig, train_split, vq_params=None,
                  start_params=None) -> Callable[[], Any]:
    """{"model", "loss"} params: ``start_params`` when given (fine-tuning),
    else fresh ones holding stage 1's ``vq_params``."""
    del train_split
    if start_params is not None:
      return lambda: start_params
    cfg = config.model
    rng = jax.random.PRNGKey(config.seed)
    init = jax.jit(lambda vq: init_memmlp_params(cfg, rng, vq))
    return functools.partial(init, vq_params)

  def extra_state(self, params) -> dict:
    del params
    return {}

  def loss(self, model, config: RunConfig, params, batch, step, train: bool,
           skeleton=None, micro=None):
    """(total, (metrics, None)); random draws from (seed, step[, micro])
    in training (`micro`: the micro-batch's index), a fixed key in
    evaluation."""
    key = (_step_key(config.seed, step) if train
           else jax.random.PRNGKey(0))
    if micro is not None:
      key = jax.random.fold_in(key, micro)
    total, metrics = memmlp_loss(model, config, params, batch, key,
                                 train=train, skeleton=skeleton)
    return total, (metrics, None)

  def after_update(self, config: RunConfig, state, out, step):
    del config, out, step
    return state, {}


# The stages by name, in the order a run executes them (run_config.STAGES).
STAGE_KINDS = {kind.name: kind for kind in (VQVAEStage(), MemMLPStage())}


def make_train_step(kind, model, config: RunConfig,
                    optimizer: optax.GradientTransformation, skeleton=None):
  """train_step(state, batch) -> (state, metrics) for a stage.

  `kind` is a stage (VQVAEStage, MemMLPStage) or its name; `skeleton` is the
  targets' body (avatarposer's FK loss needs it).
  """
  kind = STAGE_KINDS[kind] if isinstance(kind, str) else kind

  micro_batches = kind.micro_batches(config)

  def loss_fn(params, batch, step, **micro):
    return kind.loss(model, config, params, batch, step, train=True,
                     skeleton=skeleton, **micro)

  def micro_batched_grads(params, batch, step):
    """The mean gradient and metrics of `micro_batches` equal slices of the
    batch, one at a time: activations for one slice live at once."""
    parts = jax.tree.map(lambda x: x.reshape(
        (micro_batches, x.shape[0] // micro_batches) + x.shape[1:]), batch)

    def one(indexed):
      index, part = indexed
      grads, (metrics, _) = jax.grad(loss_fn, has_aux=True)(
          params, part, step, micro=index)
      return grads, metrics

    per_part = jax.lax.map(one, (jnp.arange(micro_batches), parts))
    grads, metrics = jax.tree.map(lambda x: x.mean(axis=0), per_part)
    return grads, (metrics, None)

  def train_step(state, batch):
    grad_fn = (jax.grad(loss_fn, has_aux=True) if micro_batches == 1
               else micro_batched_grads)
    grads, (metrics, out) = grad_fn(state["params"], batch, state["step"])
    updates, opt_state = optimizer.update(grads, state["opt_state"],
                                          state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {**state, "step": state["step"] + 1, "params": params,
                 "opt_state": opt_state}
    new_state, extra = kind.after_update(config, new_state, out,
                                         state["step"])
    return new_state, {**metrics, **extra}

  return train_step


def make_eval_step(kind, model, config: RunConfig, skeleton=None):
  """eval_step(params, batch) -> metrics (inference-mode alpha)."""
  kind = STAGE_KINDS[kind] if isinstance(kind, str) else kind

  def eval_step(params, batch):
    return kind.loss(model, config, params, batch, 0, train=False,
                     skeleton=skeleton)[1][0]

  return eval_step


# ------------------------------------------------------------ data parallel


def make_mesh(devices=None) -> Mesh:
  """A 1-D ("data",) mesh over all devices (every process's, multi-host)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def shard_batch(mesh: Mesh, sampler: dataset.WindowSampler, step: int):
  """This process's rows of the global batch, as one global sharded array."""
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  per_process = sampler.batch_size // jax.process_count()
  start = jax.process_index() * per_process
  local = sampler.batch(step, rows=slice(start, start + per_process))
  return {k: jax.make_array_from_process_local_data(
              sharding, v, (sampler.batch_size,) + v.shape[1:])
          for k, v in local.items()}


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ValueError(f"batch size {batch_size} is not divisible by the "
                     f"{mesh.size} devices of the data-parallel mesh")


def jit_train_step(train_step, mesh: Mesh):
  replicated = NamedSharding(mesh, PartitionSpec())
  data = NamedSharding(mesh, PartitionSpec("data"))
  return jax.jit(train_step, in_shardings=(replicated, data),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def jit_eval_step(eval_step, mesh: Mesh):
  replicated = NamedSharding(mesh, PartitionSpec())
  data = NamedSharding(mesh, PartitionSpec("data"))
  return jax.jit(eval_step, in_shardings=(replicated, data),
                 out_shardings=replicated)


# --------------------------------------------------------------------- loop


@dataclasses.dataclass
class Stage:
  """One stage ready to run: its kind, model, steps, data and starting state."""
  kind: Any  # VQVAEStage or MemMLPStage
  model: Any
  steps: int
  batch_size: int
  optimizer: optax.GradientTransformation
  init_params: Callable[[], Any]

  @property
  def name(self) -> str:
    return self.kind.name

  def new_state(self) -> dict:
    """A fresh train state, with what the stage tracks besides."""
    params = self.init_params()
    return {**init_state(params, self.optimizer),
            **self.kind.extra_state(params)}


def build_stage(kind, config: RunConfig, train_split,
                vq_params=None, start_params=None) -> Stage:
  """One stage (a kind or its name); stage 2 starts from ``start_params``
  when given."""
  kind = STAGE_KINDS[kind] if isinstance(kind, str) else kind
  return Stage(kind, kind.model(config), kind.steps(config),
               kind.batch_size(config), kind.optimizer(config),
               kind.init_params(config, train_split, vq_params, start_params))


def run_stage(stage: Stage, config: RunConfig, workdir: str, train_split,
              test_split=None, mesh: Mesh | None = None):
  """Trains one stage to its last step, resuming from its latest checkpoint.

  Returns the stage's final params.
  """
  mesh = make_mesh() if mesh is None else mesh
  check_batch_size(stage.batch_size, mesh)
  cfg = config.model
  stage_dir = os.path.join(workdir, stage.name)
  os.makedirs(stage_dir, exist_ok=True)
  sampler = dataset.WindowSampler(train_split, cfg.window, stage.batch_size,
                                  config.seed, stage.kind.augment(config),
                                  **stage.kind.crops(config))
  replicated = NamedSharding(mesh, PartitionSpec())
  state = jax.jit(stage.new_state, out_shardings=replicated)()
  manager = checkpoint_manager(stage_dir)
  start = manager.latest_step() or 0
  if start:
    logging.info("%s: resuming from the checkpoint at step %d", stage.name,
                 start)
    state = restore_state(manager, start, state)
  if start >= stage.steps:
    manager.close()
    return state["params"]
  # TensorBoard and CSV from process 0; every process logs its own lines.
  writer = writers.MultiWriter(
      [writers.TensorBoardWriter(stage_dir),
       writers.CsvWriter(os.path.join(stage_dir, "metrics.csv"), start)]
      if jax.process_index() == 0 else [])
  train_step = jit_train_step(
      make_train_step(stage.kind, stage.model, config, stage.optimizer,
                      train_split.skeleton), mesh)
  evaluate = _evaluator(stage, config, test_split, mesh)
  progress = writers.Progress(stage.name, start, stage.steps)
  logging.info("%s: %d steps at batch %d on %d device(s), from step %d",
               stage.name, stage.steps, stage.batch_size, mesh.size, start)
  for step in range(start, stage.steps):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = train_step(state, shard_batch(mesh, sampler, step))
    done = step + 1
    log_now = done % config.log_every == 0 or done == stage.steps
    if log_now:
      # Steps are dispatched asynchronously: read the metrics (waiting for
      # the step) before `progress` times it, so steps/s and the ETA are real.
      metrics = jax.device_get(metrics)
    if log_now:
      writer.write_scalars(done, {**{f"train/{k}": v
                                     for k, v in metrics.items()},
                                  **progress(done)})
      logging.info("%s step %d/%d: %s", stage.name, done, stage.steps,
                   writers.format_metrics(metrics))
    if evaluate and (done % config.eval_every == 0 or done == stage.steps):
      val = evaluate(state["params"])
      writer.write_scalars(done, {f"val/{k}": v for k, v in val.items()})
      logging.info("%s step %d validation: %s", stage.name, done,
                   writers.format_metrics(val))
    if done % config.checkpoint_every == 0 or done == stage.steps:
      manager.save(done, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  manager.close()
  writer.close()
  return state["params"]


def _evaluator(stage: Stage, config: RunConfig, test_split, mesh: Mesh):
  """params -> mean metrics over a fixed set of test windows, or None."""
  if test_split is None or config.eval_batches == 0:
    return None
  history = stage.kind.crops(config)["history"]
  sampler = dataset.WindowSampler(test_split, config.model.window,
                                  stage.batch_size, config.seed,
                                  history=history)
  batches = [shard_batch(mesh, sampler, i) for i in range(config.eval_batches)]
  eval_step = jit_eval_step(make_eval_step(stage.kind, stage.model,
                                           config, test_split.skeleton),
                            mesh)

  def evaluate(params):
    metrics = [eval_step(params, b) for b in batches]
    return jax.tree.map(lambda *v: float(np.mean(v)), *jax.device_get(metrics))

  return evaluate


def train(config: RunConfig, workdir: str, train_split, test_split=None,
          mesh: Mesh | None = None, start_params=None):
  """Runs the configured stages; returns the last stage's params.

  ``start_params`` ({"model", "loss"}, e.g. a trained run's) fine-tunes:
  stage 2 starts from them and stage 1 is skipped, their VQ part frozen.
  """
  check_workdir(workdir, config)
  save_config(workdir, config)
  kinds = [STAGE_KINDS[name] for name in config.stages()]
  if start_params is not None:
    kinds = [kind for kind in kinds if not isinstance(kind, VQVAEStage)]
  vq_params = None
  params = None
  for kind in kinds:
    if (isinstance(kind, MemMLPStage) and config.model.uses_vq
        and vq_params is None and start_params is None):
      vq_params = trained_vq(config, workdir, train_split)
    stage = build_stage(kind, config, train_split, vq_params, start_params)
    t0 = time.time()
    params = run_stage(stage, config, workdir, train_split, test_split, mesh)
    logging.info("%s: done in %.1f s", kind.name, time.time() - t0)
    if isinstance(kind, VQVAEStage):
      vq_params = params["vq"]
  return params


def trained_vq(config: RunConfig, workdir: str, train_split):
  """The VQ encoder + codebook of `workdir`'s finished stage 1."""
  stage_dir = os.path.join(workdir, VQVAEStage.name)
  step = latest_step(stage_dir)
  if step != config.vq_steps:
    raise FileNotFoundError(
        f"{stage_dir}: stage 2 needs the finished VQ-VAE of stage 1 (step "
        f"{config.vq_steps}), found {step}; run --stage=vqvae or --stage=all")
  stage = build_stage(STAGE_KINDS["vqvae"], config, train_split)
  target = jax.eval_shape(stage.new_state)
  with checkpoint_manager(stage_dir) as manager:
    return restore_state(manager, step, target)["params"]["vq"]
