"""Training workdirs at their random initialisation, for CLI tests."""

import pathlib

import orbax.checkpoint as ocp

from memmlp_jax import export
from memmlp_jax import losses
from memmlp_jax import train
from memmlp_jax.models import configs


def save_random_run(workdir: pathlib.Path, cfg: configs.ModelConfig):
  """Saves ``cfg`` with random weights at step 1, as training saves a run."""
  config = train.RunConfig(model=cfg, steps=1)
  train.save_config(str(workdir), config)
  params = {"model": export.random_variables(cfg)["params"],
            "loss": losses.init_log_vars(cfg)}
  state = train.init_state(params, train.memmlp_optimizer(config))
  with train.checkpoint_manager(str(workdir / "memmlp")) as manager:
    manager.save(1, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
