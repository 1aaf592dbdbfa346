"""The two-pass int8 block Linear: exact split, exact integer pass, small error."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memmlp_jax import fake_quant
from memmlp_jax import two_pass
from memmlp_jax.export import convert
from memmlp_jax.models import blocks
from memmlp_jax.models import configs


def _block(features=64, seed=0):
  block = blocks.MLPBlock()
  x = 3.0 * jax.random.normal(jax.random.key(seed), (12, 2, features))
  variables = block.init(jax.random.key(seed + 1), x)
  # Trained LayerNorms are far from the identity: give them scales and
  # offsets of several sizes.
  params = jax.tree.map(np.array, variables["params"])
  rng = np.random.default_rng(seed)
  norm = params["norm_dense"]
  norm["scale"] = rng.lognormal(0.0, 1.0, features).astype(np.float32)
  norm["bias"] = rng.normal(0.0, 0.5, features).astype(np.float32)
  return block, {"params": params}, x


def test_the_split_is_exact_and_its_integer_pass_is_not_rounded():
  y = 127.0 * jnp.tanh(jax.random.normal(jax.random.key(0), (50, 32)) * 0.1)
  hi, lo = two_pass.split(y)
  np.testing.assert_array_equal(hi[:, :-2] + lo[:, :-2], y)
  assert float(jnp.abs(lo).max()) <= 0.5
  # The sentinel columns give every integer row the range [-128, 127]:
  # LiteRT's per-row int8 (simulated) then holds it exactly.
  np.testing.assert_array_equal(fake_quant.int8_rows(hi), hi)
  assert (fake_quant.int8_rows(y) != y).any()


def test_the_scaled_layer_norm_stays_within_the_integer_range():
  # The worst row for |x_hat|: one channel far from all the others.
  features = 512
  spike = jnp.zeros((1, features)).at[0, 7].set(1e3)
  noisy = jax.random.normal(jax.random.key(1), (200, features)) * 5.0 + 2.0
  for x in (spike, -spike, noisy):
    y = two_pass.scaled_normalize(x, 1e-5)
    assert float(jnp.abs(y).max()) <= two_pass.HI_LIMIT


def test_two_passes_round_far_less_than_one():
  block, variables, x = _block()
  exact = np.asarray(block.apply(variables, x))
  errors = {}
  for mode in ("int8", "int8_onepass"):
    with fake_quant.simulated(mode, weights=False):
      errors[mode] = np.abs(np.asarray(block.apply(variables, x))
                            - exact).max()
  assert 0 < errors["int8"] < errors["int8_onepass"] / 30, errors


def test_the_float_rewrite_is_the_block():
  block, variables, x = _block(seed=3)
  with two_pass.exported():
    rewritten = block.apply(variables, x)
  np.testing.assert_allclose(rewritten, block.apply(variables, x), atol=1e-4,
                             rtol=1e-5)


def _op_counts(tflite: bytes) -> collections.Counter:
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
  return collections.Counter(
      flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
      for op in model.subgraphs[0].operators)


@pytest.mark.parametrize("name", ["memmlp41", "agrol_mlp41"])
def test_only_the_int8_export_has_two_passes_in_either_order(name):
  """The int8 graph is traced under an interceptor: a jitted step traced
  before (fp32) or after (fp32 again) must neither hide it nor inherit it.
  memmlp41 goes through cached_step, AGRoL-MLP through rollout's step."""
  cfg = configs.get_config(name, latent_dim=32, num_blocks=2)
  variables = convert.random_variables(cfg)
  counts = [_op_counts(convert.export_model(cfg, variables, quantize=q)[0])
            for q in ("none", "int8", "none")]
  blocks_count = cfg.num_blocks + 2 * cfg.head_blocks if name == "memmlp41" \
      else cfg.num_blocks
  assert counts[0] == counts[2]
  assert counts[0]["ROUND"] == 0
  assert counts[1]["ROUND"] == blocks_count
  assert (counts[1]["FULLY_CONNECTED"]
          == counts[0]["FULLY_CONNECTED"] + blocks_count)
