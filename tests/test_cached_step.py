"""cached_step.step gives rollout.step's poses and carry, with fewer FLOPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memmlp_jax import cached_step
from memmlp_jax import export
from memmlp_jax import rollout
from memmlp_jax.models import configs
from memmlp_jax.models import factory

SMALL = dict(latent_dim=32, num_blocks=4, memory_dim=16, vq_codebook_size=16,
             vq_hidden=32)


def _frames(count=70):
  rng = np.random.RandomState(0)
  frames = np.cumsum(rng.randn(count, 54) * 0.05, axis=0).astype(np.float32)
  frames[30, 4] = np.nan  # lost tracking: both hold the last valid frame
  return frames


@pytest.mark.parametrize("overrides", [
    {}, {"use_vq_code": False}, {"multi_head": False},
    {"memory_layers": (1, 4), "head_blocks": 0}])
def test_cached_step_equals_rollout_step(overrides):
  cfg = configs.get_config("memmlp41", **SMALL, **overrides)
  assert cached_step.supports(cfg)
  variables = export.random_variables(cfg)
  model = factory.build(cfg)
  reference = rollout.init_state(cfg, batch=1)
  cached = cached_step.init_state(cfg, batch=1)
  step = jax.jit(lambda state, frame: cached_step.step(cfg, variables, state,
                                                       frame))
  for frame in _frames():
    reference, expected = rollout.step(model, variables, reference,
                                       frame[None])
    cached, got = step(cached, frame[None])
    for key, value in expected.items():
      if value is None:
        assert got[key] is None
      elif value.dtype == bool:
        np.testing.assert_array_equal(got[key], value)
      else:
        np.testing.assert_allclose(got[key], value, atol=2e-5)
    # FK of the rotations (no position branch) amplifies rounding a little.
    np.testing.assert_allclose(cached.prev_motion, reference.prev_motion,
                               atol=1e-4)
    np.testing.assert_array_equal(cached.window, reference.prev_sparse)


@pytest.mark.parametrize("name,overrides", [
    ("agrol_mlp41", {}), ("memmlp41", {"memory_kind": "lstm"}),
    ("memmlp41", {"memory_fusion": "project"}),
    ("memmlp41", {"memory_combine": "add"})])
def test_other_models_keep_the_rollout_step(name, overrides):
  cfg = configs.get_config(name, **overrides)
  assert not cached_step.supports(cfg)
  state, _ = export.streaming_step(cfg, None)
  assert isinstance(state, rollout.State)


@pytest.mark.slow
def test_cached_step_does_less_work():
  cfg = configs.get_config("memmlp41")
  variables = jax.tree.map(jnp.asarray, export.random_variables(cfg))
  flops = {cached: export.step_flops(*reversed(
      export.streaming_step(cfg, variables, cached=cached)))
           for cached in (False, True)}
  # Embedding and sparse half of the fusion for 40 of the 41 rows: ~22 MFLOP.
  assert 20e6 < flops[False] - flops[True] < 26e6, flops
