"""Building blocks shared by the Mem-MLP family (docs/design.md §3).

Every block here works on TIME-MAJOR arrays (T, B, C). Keeping the hidden state
time-major through the whole backbone turns AGRoL's 1x1 Conv1D over time (a
T x T mixing of frames) into one plain matmul over a (T, B*C) matrix; on CPU
that runs about five times faster than the same contraction written as an
einsum over (B, T, C) (see benchmarks/README.md). Models transpose once on the
way in and once on the way out.

Parameter layout stays natural: `TimeMix` holds `kernel` (T_in, T_out) and
`bias` (T_out,), i.e. the PyTorch Conv1d(T, T, 1) weight transposed the way a
flax Dense kernel is; `LayerNorm` holds `scale`/`bias` like `flax.linen`.

Only TFLite builtin-friendly ops are used: dot_general, add, mul, rsqrt,
logistic (SiLU = x * sigmoid(x)), mean.
"""

from collections.abc import Callable
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def ln_statistics(x: Array, epsilon: float) -> tuple[Array, Array]:
  """(mean, 1 / std) over the last axis, both from one pass over x."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  mean_sq = jnp.mean(x * x, axis=-1, keepdims=True)
  return mean, jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0)
                             + epsilon)


def _ln_forward(x, scale, bias, epsilon):
  mean, rstd = ln_statistics(x, epsilon)
  normed = (x - mean) * rstd
  return normed * scale + bias, (normed, rstd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: Array, scale: Array, bias: Array, epsilon: float) -> Array:
  """LayerNorm over the last axis; both statistics in one pass over x."""
  return _ln_forward(x, scale, bias, epsilon)[0]


def _ln_fwd(x, scale, bias, epsilon):
  out, (normed, rstd) = _ln_forward(x, scale, bias, epsilon)
  return out, (normed, rstd, scale)


def _ln_bwd(epsilon, residuals, grad):
  del epsilon
  normed, rstd, scale = residuals
  batch_axes = tuple(range(grad.ndim - 1))
  g = grad * scale
  dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
               - normed * jnp.mean(g * normed, axis=-1, keepdims=True))
  return (dx, jnp.sum(grad * normed, axis=batch_axes),
          jnp.sum(grad, axis=batch_axes))


layer_norm.defvjp(_ln_fwd, _ln_bwd)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis (params `scale`, `bias` as flax.linen's).

  Faster to train than `flax.linen.LayerNorm` on CPU (about 2.5x for forward +
  backward, benchmarks/README.md): mean and mean-of-squares come from one pass
  (var = E[x^2] - E[x]^2, float32), and the backward pass is the closed form
  dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * scale, written as
  a custom VJP instead of autodiff's longer chain of reductions. Matches
  flax.linen.LayerNorm to float32 rounding.
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,))
    bias = self.param("bias", nn.initializers.zeros, (features,))
    return layer_norm(x, scale, bias, self.epsilon)


class TimeMix(nn.Module):
  """AGRoL's 1x1 Conv1D over time: y[t] = sum_s x[s] K[s, t] + b[t].

  Input (T, ..., C) time-major; the frames are mixed by one (T, T) matrix,
  the feature axes are untouched.
  """
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    window = x.shape[0]
    kernel = self.param("kernel", self.kernel_init, (window, window))
    bias = self.param("bias", nn.initializers.zeros, (window,))
    flat = x.reshape(window, -1)
    # Contract the time axis of both: (T_in, T_out) x (T_in, N) -> (T_out, N).
    mixed = jax.lax.dot_general(kernel, flat, (((0,), (0,)), ((), ())))
    mixed = mixed + bias[:, None]
    return mixed.reshape(x.shape)


class MLPBlock(nn.Module):
  """AGRoL's MLP block on (T, B, D):

  x += SiLU(TimeMix(LN(x)));  x += SiLU(Linear_DxD(LN(x))).
  """

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = x + nn.silu(TimeMix(name="time_mix")(LayerNorm(name="norm_time")(x)))
    dense = nn.Dense(x.shape[-1], name="dense")
    return x + nn.silu(dense(LayerNorm(name="norm_dense")(x)))


class ProjectLNSiLU(nn.Module):
  """Linear -> LayerNorm -> SiLU: the per-input projection of the memory block."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.silu(LayerNorm()(nn.Dense(self.features)(x)))


class LNLinearSiLU(nn.Module):
  """LayerNorm -> Linear -> SiLU: the VQ-VAE's per-frame MLP block."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.silu(nn.Dense(self.features)(LayerNorm()(x)))
