"""Two-pass int8 block Linears: the chosen int8 export's arithmetic.

LiteRT's int8 Linear (dynamic range, XNNPACK) rounds each input row to 256
levels between the row's minimum and maximum, afresh at every frame. On
Mem-MLP that rounding is the whole of the int8 jitter (the kernels' int8
costs nothing; docs/export_notes.md), and no rescaling of the parameters
shrinks it enough. So each MLP block's ``LayerNorm -> Dense`` runs as two
int8 passes of one int8 kernel, whose sum carries about 16 bits of the
input:

  y  = (x - mean) * rstd / g       the LayerNorm without its affine, scaled
                                   so that |y| <= 127 (|x_hat| <= sqrt(D)
                                   for any row, so g = sqrt(D) / 127);
  hi = round(y), lo = y - hi       integers in [-127, 127] and the rest,
                                   in [-0.5, 0.5];
  out = [hi, 127, -128] @ K + b'  +  [lo, 0, 0] @ K,
        K = [g * diag(gamma) W; 0; 0],  b' = beta W + b.

The two appended "sentinel" columns (zero rows of K) pin every ``hi`` row's
range to [-128, 127]: LiteRT's row scale is then exactly 1 and ``hi`` is
quantized without error. Only ``lo`` is rounded, to 1/255 of its range of
about 1, so the input error is about 1/256 of the one-pass int8's. The
LayerNorm's affine is folded into K and b' (exact in real arithmetic),
which saves two ops per block.

Float32 arithmetic is unchanged up to rounding: ``hi + lo == y``. The
``exported`` context traces the blocks this way for conversion (LiteRT does
the int8 rounding); ``simulated`` also rounds as LiteRT does, in float,
for JAX rollouts of the int8 model (benchmarks/int8_noise.py). No
calibration data is needed: g comes from the LayerNorm's bound alone.
"""

import contextlib
import math

import flax.linen as nn
import jax.numpy as jnp

from memmlp_jax.models import blocks

# hi's row range [-128, 127] gives LiteRT's asymmetric int8 scale 1, zero
# point 0.
SENTINELS = (127.0, -128.0)
HI_LIMIT = 127.0


def input_scale(features: int) -> float:
  """g: the LayerNorm output's bound sqrt(D) over ``HI_LIMIT``."""
  return math.sqrt(features) / HI_LIMIT


def folded_kernel(norm_params, dense_params):
  """(K, b') of one block: the LayerNorm affine and g folded into the
  Dense, the sentinel rows appended (zeros)."""
  gamma, beta = norm_params["scale"], norm_params["bias"]
  kernel, bias = dense_params["kernel"], dense_params["bias"]
  g = input_scale(kernel.shape[0])
  folded = (g * gamma)[:, None] * kernel
  sentinel_rows = jnp.zeros((len(SENTINELS), kernel.shape[1]), kernel.dtype)
  return jnp.concatenate([folded, sentinel_rows]), beta @ kernel + bias


def scaled_normalize(x, epsilon: float):
  """(x - mean) * rstd / g over the last axis: ``blocks.layer_norm``
  without the affine, in as many ops (1/g scales the per-row rstd)."""
  mean, rstd = blocks.ln_statistics(x, epsilon)
  return (x - mean) * (rstd * (1.0 / input_scale(x.shape[-1])))


def split(y):
  """(hi, lo) rows with the sentinel columns appended: hi + lo == y.

  The sentinels are appended to y first: they are integers, so they stay in
  hi and leave zeros in lo, and one concatenation serves both (each costs
  about as much as an elementwise op).
  """
  lead = y.shape[:-1] + (len(SENTINELS),)
  padded = jnp.concatenate(
      [y, jnp.broadcast_to(jnp.asarray(SENTINELS, y.dtype), lead)], axis=-1)
  hi = jnp.round(padded)
  return hi, padded - hi


def two_pass_dense(y, kernel, bias, *, rows=None, kernel_int8=None):
  """hi @ K + b' + lo @ K; ``rows``/``kernel_int8`` round as LiteRT does
  (None: the float graph that the converter quantizes)."""
  hi, lo = split(y)
  if rows is not None:
    hi, lo = rows(hi), rows(lo)
  if kernel_int8 is not None:
    kernel = kernel_int8(kernel)
  return (jnp.dot(hi, kernel) + bias) + jnp.dot(lo, kernel)


def _block_part(context) -> str | None:
  """"norm" / "dense" for an MLP block's LayerNorm -> Dense call, else None."""
  module = context.module
  if (context.method_name != "__call__"
      or not isinstance(module.parent, blocks.MLPBlock)):
    return None
  if isinstance(module, blocks.LayerNorm) and module.name == "norm_dense":
    return "norm"
  if isinstance(module, nn.Dense) and module.name == "dense":
    return "dense"
  return None


def _interceptor(rows, kernel_int8):

  def intercept(next_fun, args, kwargs, context):
    part = _block_part(context)
    if part is None or context.module.is_initializing():
      return next_fun(*args, **kwargs)
    if part == "norm":
      return scaled_normalize(args[0], context.module.epsilon)
    block = context.module.parent.variables["params"]
    kernel, bias = folded_kernel(block["norm_dense"], block["dense"])
    return two_pass_dense(args[0], kernel, bias, rows=rows,
                          kernel_int8=kernel_int8)

  return intercept


@contextlib.contextmanager
def exported():
  """Within it, Flax applies trace the MLP blocks' LayerNorm -> Dense as
  the two passes, unrounded: what the converter turns into int8 Linears."""
  with nn.intercept_methods(_interceptor(None, None)):
    yield


@contextlib.contextmanager
def simulated(rows, kernel_int8):
  """As ``exported``, with LiteRT's rounding of the rows and the kernel
  (fake_quant.int8_rows, fake_quant.int8_channels) done in float."""
  with nn.intercept_methods(_interceptor(rows, kernel_int8)):
    yield
