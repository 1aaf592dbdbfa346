"""AvatarPoser (Jiang et al. 2022) in the project's model contract (docs/design.md §3).

Linear 54 -> 256, 3 transformer encoder layers as PyTorch's default
nn.TransformerEncoderLayer builds them (post-LN, ReLU feed-forward 2048,
8 heads, no positional encoding, as in AvatarPoser's code), then the LAST
token -> two MLPs (256 -> 256 -> ReLU -> out): the global (root) orientation
6 and the 21 joint rotations 126. Dropout (cfg.dropout, after attention and
in the feed-forward as PyTorch places it) is 0 in the shared recipe and 0.1 in
AvatarPoser's own; it draws from the "dropout" RNG stream when train.

Call as every model (see memmlp.py); prev_sparse, prev_motion and alpha are
ignored. Returns {"rot6d": (B, 1, 132) for the window's last frame,
"pos": None}; the rollout takes [:, -1] as for the others.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from memmlp_jax import dims
from memmlp_jax.models import configs

Array = jax.Array


class EncoderLayer(nn.Module):
  """Post-LN transformer encoder layer (PyTorch's default)."""
  num_heads: int
  ff_dim: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    width = x.shape[-1]
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)
    attn = nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                           name="attention")(x, x)
    x = nn.LayerNorm(epsilon=1e-5, name="norm_attention")(x + drop(attn))
    ff = nn.Dense(self.ff_dim, name="ff_in")(x)
    ff = nn.Dense(width, name="ff_out")(drop(nn.relu(ff)))
    return nn.LayerNorm(epsilon=1e-5, name="norm_ff")(x + drop(ff))


class _Decoder(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.relu(nn.Dense(256, name="hidden")(x))
    return nn.Dense(self.features, name="out")(x)


class AvatarPoser(nn.Module):
  cfg: configs.ModelConfig

  @nn.compact
  def __call__(self, sparse: Array, prev_sparse: Array | None = None,
               prev_motion: Array | None = None, *,
               alpha: Array | float | None = None,
               train: bool = False) -> dict[str, Array | None]:
    del prev_sparse, prev_motion, alpha  # No memory.
    cfg = self.cfg
    if sparse.ndim != 3 or sparse.shape[1:] != (cfg.window,
                                                dims.SPARSE_DIM):
      raise ValueError(f"{cfg.name}: sparse must have shape (B, {cfg.window}, "
                       f"{dims.SPARSE_DIM}), got {sparse.shape}")
    x = nn.Dense(cfg.embed_dim, name="embed")(sparse)
    for i in range(cfg.num_layers):
      x = EncoderLayer(cfg.num_heads, cfg.ff_dim, cfg.dropout,
                       name=f"layer_{i + 1}")(x, train and cfg.dropout > 0)
    last = x[:, -1:]
    root = _Decoder(6, name="root_decoder")(last)
    joints = _Decoder(dims.ROT6D_DIM - 6, name="joint_decoder")(last)
    return {"rot6d": jnp.concatenate([root, joints], axis=-1), "pos": None}
