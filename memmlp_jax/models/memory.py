"""Memory blocks: context from the previous step fed into the backbone.

All inputs are time-major windows of the PREVIOUS step t-1 (T, B, C):
  s: sparse input (54), m: full-body motion (198 = rot6d 132 + pos 66),
  c: quantized VQ code (64) of (s, m) from the frozen VQ encoder.
Which motion arrives is the caller's business: ground truth in training, the
model's own previous prediction (zeros before the first) at inference.

`MemoryBlock` (the paper's, docs/design.md §3): h_s, h_m, h_c = Linear-LN-SiLU(s, m, c);
  b = alpha * h_m + (1 - alpha) * h_c      (element-wise)
  f = concat(h_s, b)   [memory_combine="concat", default]   or   h_s + b  ["add"]
Without the VQ code (use_vq_code=False): b = alpha * h_m, so training keeps the
same randomised trust in the motion input and only the code is removed.
alpha: training draws U(0, 1) from the "alpha" RNG stream, per element or per
window (cfg.alpha_per), unless the caller passes one; inference uses the mean, cfg.memory_alpha (0.5).

`RecurrentMemory` (the supplementary's LSTM/GRU ablation): LayerNorm of
[s, m] -> LSTM or GRU over the T frames of the previous window -> SiLU. The
hidden state starts from a linear projection of that window's last sparse frame
(the cell state of an LSTM from zeros), in training and inference alike, so the
call needs no state beyond the previous window.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from memmlp_jax.models import blocks
from memmlp_jax.models import configs

Array = jax.Array


class MemoryBlock(nn.Module):
  """The paper's memory block; returns the memory feature (T, B, F).

  F = 2 * memory_dim for memory_combine="concat", memory_dim for "add".
  The two halves are methods of their own (``sparse_feature``, ``blend``):
  the cached streaming step computes the sparse half once per frame.
  """
  cfg: configs.ModelConfig

  def setup(self):
    cfg = self.cfg
    self.sparse = blocks.ProjectLNSiLU(cfg.memory_dim)
    self.motion = blocks.ProjectLNSiLU(cfg.memory_dim)
    if cfg.use_vq_code:
      self.code = blocks.ProjectLNSiLU(cfg.memory_dim)

  def sparse_feature(self, s: Array) -> Array:
    """h_s: (..., 54) -> (..., memory_dim); one frame depends on one frame."""
    return self.sparse(s)

  def blend(self, m: Array, c: Array | None, *,
            alpha: Array | float | None, train: bool) -> Array:
    """b = alpha * h_m + (1 - alpha) * h_c (time-major (T, B, memory_dim))."""
    cfg = self.cfg
    h_m = self.motion(m)
    if alpha is None:
      # Time-major (T, B, F): one draw per window broadcasts over T and F.
      shape = (h_m.shape if cfg.alpha_per == "element"
               else (1, h_m.shape[1], 1))
      alpha = (jax.random.uniform(self.make_rng("alpha"), shape)
               if train else cfg.memory_alpha)
    if cfg.use_vq_code:
      return alpha * h_m + (1.0 - alpha) * self.code(c)
    return alpha * h_m

  def __call__(self, s: Array, m: Array, c: Array | None, *,
               alpha: Array | float | None, train: bool) -> Array:
    h_s = self.sparse_feature(s)
    blend = self.blend(m, c, alpha=alpha, train=train)
    if self.cfg.memory_combine == "concat":
      return jnp.concatenate([h_s, blend], axis=-1)
    return h_s + blend


class RecurrentMemory(nn.Module):
  """LSTM/GRU memory over the previous window; returns (T, B, memory_dim)."""
  cfg: configs.ModelConfig

  @nn.compact
  def __call__(self, s: Array, m: Array) -> Array:
    cfg = self.cfg
    x = blocks.LayerNorm(name="norm")(jnp.concatenate([s, m], axis=-1))
    hidden = nn.Dense(cfg.memory_dim, name="init_hidden")(s[-1])
    if cfg.memory_kind == "lstm":
      cell = nn.OptimizedLSTMCell(cfg.memory_dim, name="cell")
      carry = (jnp.zeros_like(hidden), hidden)
    else:
      cell = nn.GRUCell(cfg.memory_dim, name="cell")
      carry = hidden
    out = nn.RNN(cell, time_major=True, name="rnn")(x, initial_carry=carry)
    return nn.silu(out)
