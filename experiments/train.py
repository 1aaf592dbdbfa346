r"""Trains a model: VQ-VAE (stage 1), then Mem-MLP with it frozen (stage 2).

  python -m experiments.train --flagfile=experiments/flags/free.flags
  python -m experiments.train --flagfile=s1.flags \
      --data_dir=/data/amass --body_model=/models/smplh/male/model.npz
  python -m experiments.train --protocol=bvh --data_dir=MY_BVH \
      --bvh_map=MAP.json --init_from=runs/memmlp41 --workdir=runs/mine

The protocol's data is prepared on first use (cached in --prepared_dir).
Training resumes from the latest checkpoint in --workdir; a workdir that
holds a run of another configuration is refused. --protocol=bvh trains on a
folder of one's own BVH files (--bvh_map, split by file with --split_seed);
--init_from=RUN fine-tunes RUN's trained model on it (same --model and
overrides; stage 1 is skipped, RUN's VQ part kept frozen; the loss weights
start afresh). Multi-host: start the same
command on every host with --coordinator_address, --num_processes and
--process_id (jax.distributed.initialize). See docs/training.md.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax

from memmlp_jax import checkpoints
from memmlp_jax import cli_flags
from memmlp_jax import host_memory
from memmlp_jax import losses
from memmlp_jax import train
from memmlp_jax.data import dataset
from memmlp_jax.data import prepared
from memmlp_jax.data import protocols
from memmlp_jax.models import configs
from memmlp_jax.models import factory

_DEFAULT_DATA = os.environ.get("MEMMLP_DATA", os.path.join("..", "shared",
                                                           "data"))
_DEFAULT = train.RunConfig(model=configs.get_config("memmlp41"))

FLAGS = flags.FLAGS
_DEFAULTS = {
    **cli_flags.workdir(help_text="Checkpoints, config and metrics of the "
                        "run."),
    **cli_flags.clip_source(
        protocol="free", data_dir=_DEFAULT_DATA,
        lists_dir=os.path.join("..", "shared", "protocols", "amass_s1")),
    "split_seed": cli_flags.define(
        "integer", "split_seed", protocols.BVH_SEED,
        "Protocol bvh: seed of the split by file."),
}
_INIT_FROM = flags.DEFINE_string(
    "init_from", None, "A trained run (workdir) whose model stage 2 starts "
    "from: fine-tuning.")
_DEFAULTS["workers"] = cli_flags.define("integer", "workers", 2,
                                        "Processes preparing data.")
_MODEL = flags.DEFINE_enum("model", "memmlp41", configs.NAMES, "Model.")
_OVERRIDES = flags.DEFINE_multi_string(
    "model_override", [], "key=value model-config override (repeatable), "
    "e.g. --model_override=num_blocks=10 --model_override=use_memory=False.")
_STAGE = flags.DEFINE_enum("stage", "all", ("all",) + train.STAGES,
                           "Run both stages, or one alone.")
_STEPS = flags.DEFINE_integer("steps", _DEFAULT.steps, "Stage-2 steps.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _DEFAULT.batch_size,
                                   "Stage-2 global batch (windows).")
_MICRO_BATCHES = flags.DEFINE_integer(
    "micro_batches", _DEFAULT.micro_batches, "Compute each stage-2 batch as "
    "this many equal slices, gradients averaged (~1/k of the activation "
    "memory; each slice draws its own random numbers).")
_SEED = flags.DEFINE_integer("seed", _DEFAULT.seed, "Seed of init and data.")
_LR = flags.DEFINE_float("learning_rate", _DEFAULT.learning_rate,
                         "Stage-2 AdamW learning rate.")
_FINAL_LR = flags.DEFINE_float("final_learning_rate",
                               _DEFAULT.final_learning_rate,
                               "Stage-2 learning rate after the decay.")
_DECAY_AT = flags.DEFINE_float("decay_at", _DEFAULT.decay_at,
                               "Fraction of --steps where the lr drops.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", _DEFAULT.weight_decay,
                                   "AdamW weight decay (model params only).")
_AUGMENT = flags.DEFINE_list("augment", list(_DEFAULT.augment),
                             "Stage-2 augmentations: yaw, mirror (or none).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", _DEFAULT.optimizer,
                               train.OPTIMIZERS, "adamw (decoupled decay) or "
                               "adam (L2 in the gradient, PyTorch's Adam).")
_LOSS_WEIGHT_LR = flags.DEFINE_float(
    "loss_weight_lr", _DEFAULT.loss_weight_lr, "Constant Adam lr of the "
    "learned loss log-variances (0: the model's schedule).")
_MEMORY_SOURCE = flags.DEFINE_enum(
    "memory_source", _DEFAULT.memory_source, train.MEMORY_SOURCES,
    "What the memory reads in training: the true previous window, or the "
    "model's own stop-gradient prediction of it (as at inference).")
_MEMORY_NOISE = flags.DEFINE_float(
    "memory_noise", _DEFAULT.memory_noise,
    "Std of Gaussian noise on the true motion the memory reads.")
_START_SHARE = flags.DEFINE_float(
    "start_share", _DEFAULT.start_share, "Share of crops ending within a "
    "clip's first frames, padded with an empty memory as the rollout starts.")
_FAKE_QUANT = flags.DEFINE_enum(
    "fake_quant", _DEFAULT.fake_quant, train.FAKE_QUANT,
    "int8, int8_onepass: stage 2 computes the block Linears as that int8 "
    "export does (quantization-aware training; fine-tune with --init_from).")
_VQ_AUGMENT = flags.DEFINE_bool("vq_augment", _DEFAULT.vq_augment,
                                "Stage 1 sees stage 2's augmentation.")
_VQ_WEIGHT_DECAY = flags.DEFINE_float(
    "vq_weight_decay", _DEFAULT.vq_weight_decay, "Stage-1 weight decay.")
_VQ_RESTART_UNTIL = flags.DEFINE_float(
    "vq_restart_until", _DEFAULT.vq_restart_until,
    "Dead codes are restarted for this fraction of --vq_steps only.")
_VQ_STEPS = flags.DEFINE_integer("vq_steps", _DEFAULT.vq_steps,
                                 "Stage-1 (VQ-VAE) steps.")
_VQ_BATCH_SIZE = flags.DEFINE_integer("vq_batch_size", _DEFAULT.vq_batch_size,
                                      "Stage-1 batch (windows).")
_VQ_LR = flags.DEFINE_float("vq_learning_rate", _DEFAULT.vq_learning_rate,
                            "Stage-1 Adam lr (x0.2 at 20/50/70% of steps).")
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", _DEFAULT.checkpoint_every, "Checkpoint period (steps).")
_LOG_EVERY = flags.DEFINE_integer("log_every", _DEFAULT.log_every,
                                  "Metrics period (steps).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", _DEFAULT.eval_every,
                                   "Validation period (steps).")
_EVAL_BATCHES = flags.DEFINE_integer(
    "eval_batches", _DEFAULT.eval_batches,
    "Fixed test batches per validation (0: none).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: host:port of process 0 "
    "(jax.distributed.initialize).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "Multi-host: this process's index.")

_AMASS_PROTOCOLS = ("s1", "s2", "s3")


def _parse_overrides(items):
  try:
    return configs.parse_overrides(items)
  except ValueError as e:
    raise app.UsageError(f"--model_override: {e}") from None


def _run_config() -> train.RunConfig:
  augment = tuple(a for a in _AUGMENT.value if a != "none")
  try:
    return train.RunConfig(
        model=configs.get_config(_MODEL.value,
                                 **_parse_overrides(_OVERRIDES.value)),
        protocol=FLAGS.protocol, stage=_STAGE.value, steps=_STEPS.value,
        batch_size=_BATCH_SIZE.value, micro_batches=_MICRO_BATCHES.value,
        seed=_SEED.value,
        learning_rate=_LR.value, final_learning_rate=_FINAL_LR.value,
        decay_at=_DECAY_AT.value, weight_decay=_WEIGHT_DECAY.value,
        augment=augment, optimizer=_OPTIMIZER.value,
        loss_weight_lr=_LOSS_WEIGHT_LR.value,
        memory_source=_MEMORY_SOURCE.value, memory_noise=_MEMORY_NOISE.value,
        start_share=_START_SHARE.value, init_from=_INIT_FROM.value,
        fake_quant=_FAKE_QUANT.value,
        vq_augment=_VQ_AUGMENT.value,
        vq_weight_decay=_VQ_WEIGHT_DECAY.value,
        vq_restart_until=_VQ_RESTART_UNTIL.value,
        vq_steps=_VQ_STEPS.value,
        vq_batch_size=_VQ_BATCH_SIZE.value, vq_learning_rate=_VQ_LR.value,
        checkpoint_every=_CHECKPOINT_EVERY.value, log_every=_LOG_EVERY.value,
        eval_every=_EVAL_EVERY.value, eval_batches=_EVAL_BATCHES.value)
  except (ValueError, TypeError) as e:
    raise app.UsageError(str(e)) from None


def _check_inputs():
  """Names the first missing input; nothing is read or written before."""
  if not os.path.isdir(FLAGS.data_dir):
    raise app.UsageError(f"--data_dir {FLAGS.data_dir}: folder not found")
  if FLAGS.protocol in _AMASS_PROTOCOLS:
    if not FLAGS.body_model:
      raise app.UsageError(f"protocol {FLAGS.protocol} needs --body_model "
                           "(the SMPL-H male model.npz)")
    if not os.path.isfile(FLAGS.body_model):
      raise app.UsageError(f"--body_model {FLAGS.body_model}: file not found")
  if FLAGS.protocol == "s1" and not os.path.isdir(FLAGS.lists_dir):
    raise app.UsageError(f"--lists_dir {FLAGS.lists_dir}: folder not found")
  if FLAGS.protocol == "bvh" and not FLAGS.bvh_map:
    raise app.UsageError("protocol bvh needs --bvh_map (a joint-map JSON, or "
                         "cmu_bvh, mixamo, generic)")


def _start_params(config: train.RunConfig):
  """Stage 2's starting params from --init_from's run, or None."""
  if not config.init_from:
    return None
  if config.stage == "vqvae":
    raise app.UsageError("--init_from starts stage 2; drop --stage=vqvae")
  try:
    cfg, params = train.restore(config.init_from)
  except (FileNotFoundError, OSError, ValueError, KeyError) as e:
    raise app.UsageError(f"--init_from {config.init_from}: cannot restore a "
                         f"trained model ({e})") from None
  # Loss and training switches may differ (fine-tuning with another loss);
  # the parameters must be the same.
  if (cfg.name != config.model.name or factory.param_shapes(cfg)
      != factory.param_shapes(config.model)):
    raise app.UsageError(
        f"--init_from {config.init_from}: its model is {cfg}, with other "
        f"parameters than this run's {config.model}; give the same --model "
        "and architecture --model_override")
  return {"model": params, "loss": losses.init_log_vars(config.model)}


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  host_memory.reuse_freed_memory()
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  config = _run_config()
  _check_inputs()
  try:
    train.check_workdir(FLAGS.workdir, config)
    train.check_batch_size(config.batch_size, train.make_mesh())
    train.check_batch_size(config.vq_batch_size, train.make_mesh())
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  checkpoints.quiet_orbax_logs()
  start_params = _start_params(config)
  prepared_dir = FLAGS.prepared_dir or os.path.join("prepared",
                                                     FLAGS.protocol)
  try:
    prepared.ensure_prepared(
        FLAGS.protocol, FLAGS.data_dir, prepared_dir,
        body_model=FLAGS.body_model,
        lists_dir=FLAGS.lists_dir if FLAGS.protocol == "s1" else None,
        bvh_map=FLAGS.bvh_map, split_seed=FLAGS.split_seed,
        workers=FLAGS.workers, fetch_missing=False, log=logging.info)
    train_split = prepared.load_split(prepared_dir, "train")
    test_split = prepared.load_split(prepared_dir, "test")
    train.train(config, FLAGS.workdir, train_split, test_split,
                start_params=start_params)
  except dataset.WindowError as e:
    raise SystemExit(f"error: {prepared_dir}: {e} (is --data_dir "
                     f"{FLAGS.data_dir} the right folder?)") from None
  except (protocols.ProtocolError, prepared.PreparedError,
          FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  cli_flags.require("workdir")
  app.run(main)
