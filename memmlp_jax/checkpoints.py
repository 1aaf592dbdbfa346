"""Reading and writing a training workdir's checkpoints.

Inference code (evaluate, export, predict, live, diagnostics) reads a trained
run through `restore` alone: it loads config.json and the model's parameters,
nothing of the trainer (no optimizer, losses or dataset).

Workdir layout (written by train.py):
  config.json                 the run's configuration (run_config.RunConfig)
  <stage>/checkpoints/<step>/ orbax checkpoints of the train state
                              {"step", "params": {"model", "loss"}, "opt_state"}
                              (stage 1's params are the VQ-VAE's)
"""

import json
import logging as std_logging
import os

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from memmlp_jax import run_config

# The stage whose checkpoints hold the trained model.
MODEL_STAGE = "memmlp"


def quiet_orbax_logs() -> None:
  """Keeps orbax's INFO lines (about 30 per save or restore) out of the log;
  its warnings and errors still show. For the CLIs, after absl has set up
  logging."""
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= std_logging.WARNING
      or "/orbax/" not in r.pathname)


def load_config(workdir: str) -> run_config.RunConfig:
  """The RunConfig saved in `workdir` (FileNotFoundError if none)."""
  path = os.path.join(workdir, run_config.CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no run config; is {workdir} a training "
                            "workdir?")
  with open(path) as f:
    return run_config.RunConfig.from_json(json.load(f))


def checkpoint_manager(stage_dir: str) -> ocp.CheckpointManager:
  """Keeps the two latest checkpoints; a save in flight when the process dies
  stays in a temporary folder that the next run ignores."""
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(stage_dir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=2))


def latest_step(stage_dir: str) -> int | None:
  """The newest finished checkpoint's step in `stage_dir`, or None."""
  directory = os.path.join(stage_dir, "checkpoints")
  if not os.path.isdir(directory):
    return None
  with ocp.CheckpointManager(os.path.abspath(directory)) as manager:
    return manager.latest_step()


def restore_state(manager: ocp.CheckpointManager, step: int, target):
  """The saved state at `step`, laid out (sharded) like `target`."""
  return manager.restore(step, args=ocp.args.StandardRestore(target))


def restore_params(stage_dir: str, step: int, *path: str):
  """The subtree state["params"][path...] of the checkpoint at `step`.

  Only that subtree is read, at the shapes and dtypes the checkpoint records,
  so no optimizer (or model) has to be rebuilt to describe the target.
  """
  directory = os.path.abspath(os.path.join(stage_dir, "checkpoints"))
  with ocp.CheckpointManager(
      directory, item_handlers=ocp.PyTreeCheckpointHandler()) as manager:
    saved = manager.item_metadata(step)
    subtree = saved["params"]
    for key in path:
      subtree = subtree[key]
    item = {"params": _nest(path, jax.tree.map(
        lambda m: np.zeros(m.shape, m.dtype), subtree))}
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    state = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  params = state["params"]
  for key in path:
    params = params[key]
  return jax.tree.map(jax.numpy.asarray, params)


def _nest(path, value):
  for key in reversed(path):
    value = {key: value}
  return value


def restore_run(workdir: str):
  """(RunConfig, params) of a trained run: the config it was trained with and
  its latest model checkpoint."""
  config = load_config(workdir)
  stage_dir = os.path.join(workdir, MODEL_STAGE)
  step = latest_step(stage_dir)
  if step is None:
    raise FileNotFoundError(f"{stage_dir}: no trained model checkpoint")
  return config, restore_params(stage_dir, step, "model")


def restore(workdir: str):
  """(ModelConfig, params) of a trained run, for evaluation and export.

  The model is `factory.build(cfg)`, called as
  `model.apply({"params": params}, ...)`; params hold the frozen VQ part.
  """
  config, params = restore_run(workdir)
  return config.model, params

