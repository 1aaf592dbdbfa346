"""Mem-MLP and AGRoL-MLP: the MLP backbone with memory and the predictor heads.

Call (the contract every model in factory.build follows):

  out = model.apply(variables, sparse, prev_sparse, prev_motion,
                    alpha=None, train=False, rngs={"alpha": key})
    sparse       (B, T, 54)  the current window of sparse inputs
    prev_sparse  (B, T, 54)  the window of step t-1 (one frame earlier)
    prev_motion  (B, T, 198) concat(rot6d 132, pos 66) of that window: ground
                 truth in training, the model's previous prediction (zeros
                 before the first) at inference. Both None when
                 cfg.uses_memory is False (they are then ignored).
    alpha        None: U(0, 1) per element from rngs["alpha"] when train, else
                 cfg.memory_alpha; or an array broadcastable to (B, T, 1), or a
                 float, used as given (tests, analysis).
    train        True only in the training step; it only switches alpha.
  -> {"rot6d": (B, T, 132), "pos": (B, T, 66) or None without multi_head}

Architecture (docs/design.md §3): Linear 54 -> D, then N_b MLP blocks; after each block
in cfg.fusion_layers (every even one by default) a memory feature is fused into
the hidden state; then the predictor: per output, head_blocks MLP blocks and a
Linear (rot6d 132; pos 66 when multi_head). Hidden states are time-major
(T, B, D) in between: one transpose in, one out.

Memory fusion ("concatenated to the hidden state and projected back to D"):
  residual (default): h = h + Linear_{F->D}(f), i.e. concat(h, f) @ [I; W] with
    the hidden part of the projection fixed to the identity;
  project: h = Linear_{D+F->D}(concat(h, f)) (a full learned projection, +1.05 M
    parameters for 4 memory blocks at D=512).
The VQ code is computed once per call, shared by all memory blocks, and wrapped
in jax.lax.stop_gradient, so the VQ parameters get zero gradient; use
`trainable_mask` so the optimizer (weight decay) skips them too.

Parameter tree: embed, block_1..block_N, memory_<i>, fuse_<i>, rot_head,
pos_head, vq (frozen encoder + codebook, only when cfg.uses_vq).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from memmlp_jax import dims
from memmlp_jax.models import blocks
from memmlp_jax.models import configs
from memmlp_jax.models import memory
from memmlp_jax.models import vqvae

Array = jax.Array


def _to_time_major(x: Array) -> Array:
  return jnp.swapaxes(x, 0, 1)


def _check_window(name: str, x: Array | None, cfg: configs.ModelConfig,
                  features: int):
  expected = (cfg.window, features)
  if x is None or x.ndim != 3 or x.shape[1:] != expected:
    got = None if x is None else x.shape
    raise ValueError(f"{cfg.name}: {name} must have shape (B, {cfg.window}, "
                     f"{features}), got {got}")


def _time_major_alpha(alpha):
  """(B, T, ...) alpha -> (T, B, ...); floats and scalars pass through."""
  if alpha is None or isinstance(alpha, float) or jnp.ndim(alpha) < 2:
    return alpha
  return _to_time_major(jnp.asarray(alpha))


class Head(nn.Module):
  """`num_blocks` MLP blocks, then a Linear to `features` (time-major)."""
  num_blocks: int
  features: int

  @nn.compact
  def __call__(self, h: Array) -> Array:
    for i in range(self.num_blocks):
      h = blocks.MLPBlock(name=f"block_{i + 1}")(h)
    return nn.Dense(self.features, name="out")(h)


def cacheable(cfg: configs.ModelConfig) -> bool:
  """Whether each fusion has a part that depends on one sparse frame alone.

  True for the paper's memory block with residual fusion and concat combine:
  fuse(concat(h_s, blend)) = h_s @ W[:F] + blend @ W[F:] + b.
  """
  return (cfg.uses_memory and cfg.memory_kind == "block"
          and cfg.memory_fusion == "residual"
          and cfg.memory_combine == "concat")


class FuseDense(nn.Dense):
  """The fusion Linear (a flax Dense), also applied to its input in two parts.

  fuse(concat(a, b)) = leading(a) + trailing(b): the cached streaming step
  computes the sparse part once per frame (the same kernel and bias).
  """

  def leading(self, x: Array) -> Array:
    """x @ kernel[:width of x] (no bias)."""
    kernel = self.get_variable("params", "kernel")
    return x @ kernel[:x.shape[-1]]

  def trailing(self, x: Array) -> Array:
    """x @ kernel[-width of x:] + bias."""
    kernel = self.get_variable("params", "kernel")
    return x @ kernel[kernel.shape[0] - x.shape[-1]:] + self.get_variable(
        "params", "bias")


class MemMLP(nn.Module):
  """Mem-MLP (memory on, two heads) and its ablations, AGRoL-MLP included.

  Besides ``__call__``, the pieces the cached streaming step (cached_step.py)
  calls through ``apply(..., method=...)``: ``embed_frames`` and
  ``sparse_memory`` per frame, ``from_embedded`` for the rest of the forward
  pass. ``__call__`` is ``from_embedded`` of ``embed_frames``: one definition.
  """
  cfg: configs.ModelConfig

  def setup(self):
    cfg = self.cfg
    # Attribute names are the parameter names (the tree checkpoints hold).
    self.embed = nn.Dense(cfg.latent_dim)
    if cfg.uses_memory and cfg.uses_vq:
      self.vq = vqvae.VQEncoder(cfg)
    for i in range(1, cfg.num_blocks + 1):
      setattr(self, f"block_{i}", blocks.MLPBlock())
      if cfg.uses_memory and i in cfg.fusion_layers:
        setattr(self, f"memory_{i}",
                memory.MemoryBlock(cfg) if cfg.memory_kind == "block"
                else memory.RecurrentMemory(cfg))
        setattr(self, f"fuse_{i}", FuseDense(cfg.latent_dim))
    self.rot_head = Head(cfg.head_blocks, dims.ROT6D_DIM)
    if cfg.multi_head:
      self.pos_head = Head(cfg.head_blocks, dims.POS_DIM)

  def __call__(self, sparse: Array, prev_sparse: Array | None = None,
               prev_motion: Array | None = None, *,
               alpha: Array | float | None = None,
               train: bool = False) -> dict[str, Array | None]:
    cfg = self.cfg
    _check_window("sparse", sparse, cfg, dims.SPARSE_DIM)
    s = m = None
    if cfg.uses_memory:
      _check_window("prev_sparse", prev_sparse, cfg, dims.SPARSE_DIM)
      _check_window("prev_motion", prev_motion, cfg, dims.MOTION_DIM)
      s = _to_time_major(prev_sparse)
      m = _to_time_major(prev_motion)
    h = self.embed_frames(_to_time_major(sparse))
    return self._predict(h, s, m, None, alpha=alpha, train=train)

  def embed_frames(self, sparse: Array) -> Array:
    """The input Linear: (..., 54) -> (..., D), frame by frame."""
    return self.embed(sparse)

  def sparse_memory(self, sparse: Array) -> Array:
    """(..., 54) -> (..., M, D): h_s @ W[:F] of each of the M memory blocks.

    The part of each fusion that depends on one sparse frame alone (memory
    block, residual fusion, concat combine only).
    """
    cfg = self.cfg
    if not cacheable(self.cfg):
      raise ValueError(f"{cfg.name}: no cacheable sparse memory")
    rows = [getattr(self, f"fuse_{i}").leading(
        getattr(self, f"memory_{i}").sparse_feature(sparse))
            for i in cfg.fusion_layers]
    return jnp.stack(rows, axis=-2)

  def from_embedded(self, embedded: Array, prev_sparse: Array,
                    prev_motion: Array, sparse_memory: Array,
                    ) -> dict[str, Array | None]:
    """The forward pass after the embedding, from cached rows (inference).

    embedded (B, T, D) ``embed_frames`` of the window; prev_sparse,
    prev_motion as ``__call__``; sparse_memory (B, T, M, D)
    ``sparse_memory`` of prev_sparse. Same output as ``__call__``.
    """
    if not cacheable(self.cfg):
      raise ValueError(f"{self.cfg.name}: no cacheable sparse memory")
    h, s, m, cached = map(_to_time_major, (embedded, prev_sparse, prev_motion,
                                           sparse_memory))
    return self._predict(h, s, m, cached, alpha=None, train=False)

  def _predict(self, h, s, m, cached, *, alpha, train):
    """Time-major hidden (T, B, D) -> the output dict (batch-major)."""
    cfg = self.cfg
    if cfg.uses_memory:
      # Lets tests and the rollout check which motion reaches the memory.
      self.sow("intermediates", "memory_motion", m)
      code = None
      if cfg.uses_vq:
        code = jax.lax.stop_gradient(self.vq(s, m)["codes"])
      alpha = _time_major_alpha(alpha)
    for i in range(1, cfg.num_blocks + 1):
      h = getattr(self, f"block_{i}")(h)
      if not (cfg.uses_memory and i in cfg.fusion_layers):
        continue
      block = getattr(self, f"memory_{i}")
      fuse = getattr(self, f"fuse_{i}")
      if cached is not None:
        # fuse(concat(h_s, blend)) = leading(h_s) + trailing(blend), the
        # first from the cache.
        blend = block.blend(m, code, alpha=alpha, train=train)
        h = (h + cached[..., cfg.fusion_layers.index(i), :]
             + fuse.trailing(blend))
        continue
      if cfg.memory_kind == "block":
        feature = block(s, m, code, alpha=alpha, train=train)
      else:
        feature = block(s, m)
      if cfg.memory_fusion == "residual":
        h = h + fuse(feature)
      else:
        h = fuse(jnp.concatenate([h, feature], axis=-1))
    rot6d = self.rot_head(h)
    pos = None
    if cfg.multi_head:
      pos = _to_time_major(self.pos_head(h))
    return {"rot6d": _to_time_major(rot6d), "pos": pos}


def trainable_mask(params):
  """A pytree of bools like `params`: False for the frozen VQ subtree."""
  return {k: jax.tree.map(lambda _, keep=(k != "vq"): keep, v)
          for k, v in params.items()}
