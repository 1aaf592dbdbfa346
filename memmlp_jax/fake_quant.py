"""The int8 exports' arithmetic, simulated in float (for QAT and analysis).

Both int8 TFLite variants that keep the motion's recurrence float
(export/quantize.py) run the Linears of the backbone's and the heads' MLP
blocks (``blocks.MLPBlock``'s ``dense``) in LiteRT's dynamic-range int8:
each input row is quantized at run time to int8 with its own scale and zero
point (asymmetric, the range always holding 0), the kernel is int8 per
output channel (symmetric, [-127, 127]), and the products are accumulated
exactly in int32. Every other op stays float.

``simulated(mode)`` makes every such Linear compute exactly that, in float,
inside a Flax apply: the same rounding the exported step does, up to
float32 summation order. Modes: "int8_onepass" rounds the block's input
once (the int8_onepass export); "int8" is the chosen export, two passes of
the same kernel over the input's integer part and its remainder
(two_pass.py). The rounding passes the gradient through unchanged
(straight-through estimator), so ``--fake_quant`` fine-tunes under either.
"""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from memmlp_jax import run_config
from memmlp_jax import two_pass
from memmlp_jax.models import blocks

MODES = run_config.FAKE_QUANT


def _straight_through(x, rounded):
  """``rounded`` forward, the identity's gradient backward."""
  return x + jax.lax.stop_gradient(rounded - x)


def int8_rows(x):
  """Per-row asymmetric int8 of the last axis, as LiteRT quantizes a
  dynamic-range FULLY_CONNECTED's input (range widened to hold 0)."""
  low = jnp.minimum(x.min(axis=-1, keepdims=True), 0.0)
  high = jnp.maximum(x.max(axis=-1, keepdims=True), 0.0)
  scale = jnp.where(high > low, (high - low) / 255.0, 1.0)
  zero_point = jnp.round(-128.0 - low / scale)
  q = jnp.clip(jnp.round(x / scale) + zero_point, -128.0, 127.0)
  return _straight_through(x, (q - zero_point) * scale)


def int8_channels(kernel):
  """Per-output-channel symmetric int8 of a (in, out) kernel."""
  scale = jnp.abs(kernel).max(axis=0, keepdims=True) / 127.0
  scale = jnp.where(scale > 0, scale, 1.0)
  q = jnp.clip(jnp.round(kernel / scale), -127.0, 127.0)
  return _straight_through(kernel, q * scale)


def _is_block_linear(context) -> bool:
  module = context.module
  return (context.method_name == "__call__" and isinstance(module, nn.Dense)
          and isinstance(module.parent, blocks.MLPBlock)
          and module.name == "dense")


def _int8_blocks(activations: bool, weights: bool):
  """An interceptor rounding the block Linears' inputs and/or kernels."""

  def intercept(next_fun, args, kwargs, context):
    if not _is_block_linear(context) or context.module.is_initializing():
      return next_fun(*args, **kwargs)
    module = context.module
    params = module.variables["params"]
    x = int8_rows(args[0]) if activations else args[0]
    kernel = int8_channels(params["kernel"]) if weights else params["kernel"]
    y = jnp.dot(x, kernel)
    return y + params["bias"] if module.use_bias else y

  return intercept


@contextlib.contextmanager
def simulated(mode: str, *, activations: bool = True, weights: bool = True):
  """Within it, Flax applies compute the ``mode`` export's arithmetic.

  ``activations=False`` or ``weights=False`` leaves that side in float: the
  two halves of the int8 error, measured apart (benchmarks/int8_noise.py).
  A jitted function keeps the arithmetic it was traced with: use it inside
  the traced function (as the training loss does), or roll out under
  ``simulated_rollouts``.
  """
  if mode not in MODES:
    raise ValueError(f"fake_quant must be one of {MODES}, got {mode!r}")
  if mode == "none":
    yield
    return
  if mode == "int8":
    with two_pass.simulated(int8_rows if activations else None,
                            int8_channels if weights else None):
      yield
    return
  with nn.intercept_methods(_int8_blocks(activations, weights)):
    yield


@contextlib.contextmanager
def simulated_rollouts(mode: str, **parts):
  """``simulated`` for jitted rollouts (``rollout.step``, evaluation).

  Their jit caches are keyed on the model alone, so a trace made inside
  ``simulated`` would be reused after it ends (and one made before it,
  inside): JAX's caches are cleared on the way in and on the way out.
  Not for use inside a traced function.
  """
  jax.clear_caches()
  try:
    with simulated(mode, **parts):
      yield
  finally:
    jax.clear_caches()
