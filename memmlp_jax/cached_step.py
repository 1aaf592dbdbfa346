"""The streaming step of Mem-MLP with its per-frame sparse work cached.

Same poses and carried motion as ``rollout.step`` (tested to float32
rounding) with less work per frame, for the exported headset model. Two
things in a Mem-MLP step depend on one sparse frame alone, and the windows
they read only shift by one frame per step:

- the input embedding of each frame of the current window;
- in each memory block, the sparse projection of each frame of the previous
  window times its share of the fusion Linear: with the default residual
  fusion and concat combine, ``fuse(concat(h_s, blend)) =
  h_s @ W[:F] + blend @ W[F:] + b``, and ``h_s`` is per frame.

So this step computes both for the new frame only and carries the T rows of
each in its state (memmlp41: 23 of 363 MFLOP per frame). The motion half
cannot be cached: the previous predicted window is new at every step.

State (a pytree; batch B):
  window         (B, T, 54)    the last T inputs; it is also the memory's
                 previous sparse window at the next step (``rollout.State``
                 carries that copy twice, as window and prev_sparse)
  embedded       (B, T, D)     embedding of each row of ``window``
  sparse_memory  (B, T, M, D)  h_s @ W[:F] of each row of ``window``, for
                 each of the M memory blocks
  prev_motion    (B, T, 198)   the previous predicted window
  held, started, offsets       as ``rollout.State``

Before the first frame ``window`` is zeros (as ``prev_sparse`` there), so the
memory rows the first step reads are those of a zero frame, computed in the
step (one row) rather than stored: every initial state leaf is a constant.
"""

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from memmlp_jax import dims
from memmlp_jax import rollout
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.models import blocks
from memmlp_jax.models import configs
from memmlp_jax.models import memmlp
from memmlp_jax.models import vqvae


class State(NamedTuple):
  window: jax.Array
  embedded: jax.Array
  sparse_memory: jax.Array
  prev_motion: jax.Array
  held: jax.Array
  started: jax.Array
  offsets: Optional[jax.Array] = None


def supports(cfg: configs.ModelConfig) -> bool:
  """Whether ``cfg`` has the memory block whose sparse half can be cached."""
  return (cfg.uses_memory and cfg.memory_kind == "block"
          and cfg.memory_fusion == "residual"
          and cfg.memory_combine == "concat")


def init_state(cfg: configs.ModelConfig, batch: int,
               skeleton=skeleton_lib.SMPL_NEUTRAL) -> State:
  """The state before the first frame (see ``rollout.init_state``)."""
  base = rollout.init_state(cfg, batch, skeleton)
  memories = len(cfg.fusion_layers)
  return State(
      window=base.window,
      embedded=jnp.zeros((batch, cfg.window, cfg.latent_dim)),
      sparse_memory=jnp.zeros((batch, cfg.window, memories, cfg.latent_dim)),
      prev_motion=base.prev_motion, held=base.held, started=base.started,
      offsets=base.offsets)


def _apply(module, params, *args):
  return module.apply({"params": params}, *args)


def _sparse_memory(cfg, params, sparse):
  """(..., 54) -> (..., M, D): h_s @ W[:F] of every memory block."""
  width = cfg.memory_dim
  rows = []
  for layer in cfg.fusion_layers:
    h_s = _apply(blocks.ProjectLNSiLU(width),
                 params[f"memory_{layer}"]["sparse"], sparse)
    rows.append(h_s @ params[f"fuse_{layer}"]["kernel"][:width])
  return jnp.stack(rows, axis=-2)


def _forward(cfg, params, embedded, prev_sparse, prev_motion, sparse_memory):
  """MemMLP.__call__ at inference from the cached rows (batch-major in/out)."""
  time_major = lambda x: jnp.swapaxes(x, 0, 1)
  h, s, m = map(time_major, (embedded, prev_sparse, prev_motion))
  sparse_memory = time_major(sparse_memory)
  width, alpha = cfg.memory_dim, cfg.memory_alpha
  code = None
  if cfg.uses_vq:
    code = _apply(vqvae.VQEncoder(cfg), params["vq"], s, m)["codes"]
  for i in range(1, cfg.num_blocks + 1):
    h = _apply(blocks.MLPBlock(), params[f"block_{i}"], h)
    if i not in cfg.fusion_layers:
      continue
    memory = params[f"memory_{i}"]
    blend = alpha * _apply(blocks.ProjectLNSiLU(width), memory["motion"], m)
    if cfg.use_vq_code:
      blend = blend + (1.0 - alpha) * _apply(blocks.ProjectLNSiLU(width),
                                             memory["code"], code)
    fuse = params[f"fuse_{i}"]
    h = (h + sparse_memory[..., cfg.fusion_layers.index(i), :]
         + (blend @ fuse["kernel"][width:] + fuse["bias"]))
  rot6d = _apply(memmlp.Head(cfg.head_blocks, dims.ROT6D_DIM),
                 params["rot_head"], h)
  pos = None
  if cfg.multi_head:
    pos = time_major(_apply(memmlp.Head(cfg.head_blocks, dims.POS_DIM),
                            params["pos_head"], h))
  return time_major(rot6d), pos


def step(cfg: configs.ModelConfig, variables, state: State, frame):
  """``rollout.step`` for a ``supports(cfg)`` model, from the cached state."""
  params = variables["params"]
  frame, lost = rollout.clean_frame(frame, state.held)
  # Rows of the new frame and of a zero frame (the first step's memory).
  both = jnp.concatenate([frame, jnp.zeros_like(frame)], axis=0)
  new_memory, zero_memory = jnp.split(_sparse_memory(cfg, params, both), 2)
  new_embedded = _apply(nn.Dense(cfg.latent_dim), params["embed"],
                        frame)
  window = rollout.push(state.window, frame, state.started)
  embedded = rollout.push(state.embedded, new_embedded, state.started)
  started = state.started[:, None, None, None]
  previous = jnp.where(started, state.sparse_memory, zero_memory[:, None])
  rot6d, pos = _forward(cfg, params, embedded, state.window,
                        state.prev_motion, previous)
  positions = pos
  if positions is None:
    positions = rollout.window_positions(rot6d, window, state.offsets)
  new_state = state._replace(
      window=window, embedded=embedded,
      sparse_memory=rollout.push(state.sparse_memory, new_memory,
                                 state.started),
      prev_motion=jnp.concatenate([rot6d, positions], axis=-1),
      held=frame, started=jnp.ones_like(state.started))
  pose = {"rot6d": rot6d[:, -1], "pos": None if pos is None else pos[:, -1],
          "lost": lost}
  return new_state, pose
