"""The model factory: a ModelConfig in, its flax module (and variables) out.

  model = factory.build(cfg)
  model, variables = factory.init(cfg, jax.random.PRNGKey(0))
  factory.count_params(cfg)  # {"total": ..., "trainable": ..., "frozen": ...}

The modules (memmlp.py, baselines.py) take a ModelConfig from configs.py;
this module sits above both, so configs.py imports no model and there is no
import circle.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from memmlp_jax import dims
from memmlp_jax.models import baselines
from memmlp_jax.models import configs
from memmlp_jax.models import memmlp


def build(cfg: configs.ModelConfig) -> nn.Module:
  """The flax module for `cfg` (call contract in memmlp.py)."""
  if cfg.arch == "avatarposer":
    return baselines.AvatarPoser(cfg)
  return memmlp.MemMLP(cfg)


def dummy_inputs(cfg: configs.ModelConfig, batch: int = 1) -> dict[str, Any]:
  """Zero inputs of the right shapes, as keyword arguments for init/apply."""
  shape = (batch, cfg.window)
  return dict(
      sparse=jnp.zeros(shape + (dims.SPARSE_DIM,), jnp.float32),
      prev_sparse=(jnp.zeros(shape + (dims.SPARSE_DIM,), jnp.float32)
                   if cfg.uses_memory else None),
      prev_motion=(jnp.zeros(shape + (dims.MOTION_DIM,), jnp.float32)
                   if cfg.uses_memory else None))


def init(cfg: configs.ModelConfig, rng: jax.Array, batch: int = 1):
  """(model, variables) for `cfg` initialised from `rng`."""
  model = build(cfg)
  variables = model.init({"params": rng, "alpha": rng},
                         **dummy_inputs(cfg, batch), train=False)
  return model, variables


def param_shapes(cfg: configs.ModelConfig):
  """The parameter tree of ``cfg`` as shapes (nothing computed)."""
  return jax.eval_shape(lambda: init(cfg, jax.random.PRNGKey(0))[1])["params"]


def count_params(cfg: configs.ModelConfig) -> dict[str, int]:
  """Parameter counts: total, trainable, and frozen (the VQ encoder+codebook)."""
  params = param_shapes(cfg)
  total = sum(x.size for x in jax.tree.leaves(params))
  frozen = sum(x.size for x in jax.tree.leaves(params.get("vq", {})))
  return {"total": total, "trainable": total - frozen, "frozen": frozen}
