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

So this step computes both for the new frame only (``MemMLP.embed_frames``
and ``MemMLP.sparse_memory``) and carries the T rows of
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

import jax
import jax.numpy as jnp

from memmlp_jax import rollout
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.models import configs
from memmlp_jax.models import memmlp


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
  return memmlp.cacheable(cfg)


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


def step(cfg: configs.ModelConfig, variables, state: State, frame):
  """``rollout.step`` for a ``supports(cfg)`` model, from the cached state.

  The model computes every piece (``MemMLP.embed_frames``,
  ``sparse_memory`` and ``from_embedded``): the forward pass has one
  definition.
  """
  model = memmlp.MemMLP(cfg)
  apply = lambda method, *args: model.apply(variables, *args, method=method)
  frame, lost = rollout.clean_frame(frame, state.held)
  # Rows of the new frame and of a zero frame (the first step's memory).
  both = jnp.concatenate([frame, jnp.zeros_like(frame)], axis=0)
  new_memory, zero_memory = jnp.split(
      apply(memmlp.MemMLP.sparse_memory, both), 2)
  new_embedded = apply(memmlp.MemMLP.embed_frames, frame)
  window = rollout.push(state.window, frame, state.started)
  embedded = rollout.push(state.embedded, new_embedded, state.started)
  started = state.started[:, None, None, None]
  previous = jnp.where(started, state.sparse_memory, zero_memory[:, None])
  out = apply(memmlp.MemMLP.from_embedded, embedded, state.window,
              state.prev_motion, previous)
  rot6d, pos = out["rot6d"], out["pos"]
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
