"""Online, causal, autoregressive inference (docs/design.md §4).

One frame of sparse tracking (54 features) in, one full-body pose out:
- the new frame rolls into the window of the last T inputs (the very first
  frame fills the whole window, so a sequence shorter than the window needs
  no special case);
- the model predicts the whole window; the pose is its last frame;
- models with a memory block get the carry (previous sparse window,
  previous predicted window of 132 rotations + 66 positions), zeros before
  the first frame, and the blend coefficient alpha at its mean
  (``cfg.memory_alpha``, 0.5). A memory model without a position branch
  (the "no multi-head" ablation) gets, as the positions of its previous
  window, forward kinematics of its rotations placed by the tracked head,
  exactly as the metrics place them.

``init_state`` / ``step`` serve live input one frame at a time; ``rollout``
runs the same step inside ``jax.lax.scan`` over whole sequences, batched,
and ``rollout_sequences`` packs many sequences of any length into a few
fixed-shape lanes so evaluation compiles once per length bucket.

Lost tracking: a frame with any non-finite value (a tracker lost a hand) is
flagged (``pose["lost"]``) and replaced, value by value, by the last valid
input held still (its rotations and positions, identity rotation velocity,
zero position delta); the rollout carries on. Before any valid frame the
held input is identity rotations at the origin.

Example (a notebook; ``cfg, variables`` would come from a trained run,
here a small freshly initialised model). Compile the step once and call it
every frame:

>>> import functools, jax, numpy as np
>>> from memmlp_jax import rollout
>>> from memmlp_jax.models import configs, factory
>>> cfg = configs.get_config("memmlp41", latent_dim=32, num_blocks=2)
>>> model = factory.build(cfg)
>>> variables = jax.jit(lambda key: factory.init(cfg, key)[1])(
...     jax.random.PRNGKey(0))
>>> step = jax.jit(functools.partial(rollout.step, model))
>>> state = rollout.init_state(cfg, batch=1)
>>> state, pose = step(variables, state, np.zeros((1, 54)))
>>> pose["rot6d"].shape, pose["pos"].shape, bool(pose["lost"][0])
((1, 132), (1, 66), False)
"""

import functools
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memmlp_jax import dims
from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib

SPARSE_DIM = dims.SPARSE_DIM
ROT_DIM = dims.ROT6D_DIM
POS_DIM = dims.POS_DIM
HEAD_POSITION = slice(36, 39)  # the head's world position in a sparse frame
_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Layout of a sparse frame (docs/design.md §1): rotations 6D (18), rotation velocity
# 6D (18), positions (9), position deltas (9), for head, left and right wrist.
# Identity rotations and rotation velocities, zero positions and deltas: the
# values of a tracker held still at the origin.
_STILL = np.concatenate([np.tile(_IDENTITY_6D, 6), np.zeros(18)])
_VELOCITY_SLOTS = np.concatenate([
    np.zeros(18), np.ones(18), np.zeros(9), np.ones(9)]).astype(bool)


class State(NamedTuple):
  """What the step carries from frame to frame (a pytree).

  window: (B, T, 54) the last T inputs, newest last.
  prev_sparse, prev_motion: (B, T, 54), (B, T, 198) the memory carry, or
    None for models without a memory block.
  held: (B, 54) the last valid input, held still (zero velocity).
  started: (B,) whether the window holds a frame yet.
  offsets: (22, 3) rest offsets of the body, for memory models that predict
    no positions (their carry's positions come from FK), else None.
  """
  window: jax.Array
  prev_sparse: Optional[jax.Array]
  prev_motion: Optional[jax.Array]
  held: jax.Array
  started: jax.Array
  offsets: Optional[jax.Array] = None


def init_state(cfg, batch: int, skeleton=skeleton_lib.SMPL_NEUTRAL) -> State:
  """The state before the first frame, for ``batch`` parallel sequences.

  ``skeleton`` is the body the model's targets were computed on; only a
  memory model without a position branch uses it.
  """
  window = cfg.window
  memory = (jnp.zeros((batch, window, SPARSE_DIM)),
            jnp.zeros((batch, window, ROT_DIM + POS_DIM)))
  if not cfg.uses_memory:
    memory = (None, None)
  held = jnp.tile(jnp.asarray(_STILL, jnp.float32), (batch, 1))
  offsets = None
  if cfg.uses_memory and not cfg.predicts_positions:
    offsets = jnp.asarray(skeleton.offsets, jnp.float32)
  return State(window=jnp.zeros((batch, window, SPARSE_DIM)),
               prev_sparse=memory[0], prev_motion=memory[1], held=held,
               started=jnp.zeros((batch,), bool), offsets=offsets)


def _hold(held):
  """The last valid input held still: same pose, no motion."""
  velocity = jnp.asarray(_VELOCITY_SLOTS)
  return jnp.where(velocity, jnp.asarray(_STILL, held.dtype), held)


def clean_frame(frame, held):
  """(frame with non-finite values replaced by ``held`` held still, lost)."""
  frame = jnp.asarray(frame, jnp.float32)
  finite = jnp.isfinite(frame)
  return (jnp.where(finite, frame, _hold(held)),
          ~jnp.all(finite, axis=-1))


def push(window, row, started):
  """``window`` (B, T, ...) with ``row`` (B, ...) appended as its newest row;
  where not ``started`` (B,), ``row`` fills every row."""
  started = started.reshape(started.shape + (1,) * (window.ndim - 1))
  rolled = jnp.concatenate([window[:, 1:], row[:, None]], axis=1)
  return jnp.where(started, rolled,
                   jnp.broadcast_to(row[:, None], window.shape))


def _predict(model, variables, state: State, window):
  if state.prev_sparse is None:
    return model.apply(variables, window, None, None, alpha=None, train=False)
  return model.apply(variables, window, state.prev_sparse, state.prev_motion,
                     alpha=model.cfg.memory_alpha, train=False)


def window_positions(rot6d, window, offsets):
  """(B, T, 66) head-placed FK positions of a predicted window."""
  rotations = geometry.rot6d_to_matrix(
      rot6d.reshape(rot6d.shape[:-1] + (-1, 6)))
  _, positions = geometry.forward_kinematics(
      rotations, jnp.zeros(rot6d.shape[:-1] + (3,), rot6d.dtype),
      skeleton_lib.PARENTS, offsets)
  head = window[..., HEAD_POSITION] - positions[..., skeleton_lib.HEAD, :]
  return (positions + head[..., None, :]).reshape(rot6d.shape[:-1] + (-1,))


def step_body(model, variables, state: State, frame):
  """Consumes one frame per sequence; returns (new state, pose).

  ``step`` is this, jitted. The export traces this one (convert.py): under
  a Flax interceptor (the int8 graph, two_pass.py) a cached trace of the
  jitted ``step`` would bypass it.

  Args:
    model: the Flax module (``factory.build(cfg)``).
    variables: its variables (``{"params": ...}``).
    state: from ``init_state`` or the previous ``step``.
    frame: (B, 54) sparse features of the new frame (NaN = lost).

  Returns:
    (state, pose) with pose = {"rot6d": (B, 132), "pos": (B, 66) or None for
    models without a position branch, "lost": (B,) bool}.
  """
  frame, lost = clean_frame(frame, state.held)
  window = push(state.window, frame, state.started)
  out = _predict(model, variables, state, window)
  pose = {"rot6d": out["rot6d"][:, -1],
          "pos": None if out.get("pos") is None else out["pos"][:, -1],
          "lost": lost}
  prev_sparse = prev_motion = None
  if state.prev_sparse is not None:
    prev_sparse = window
    positions = out.get("pos")
    if positions is None:
      positions = window_positions(out["rot6d"], window, state.offsets)
    prev_motion = jnp.concatenate([out["rot6d"], positions], axis=-1)
  new_state = state._replace(window=window, prev_sparse=prev_sparse,
                             prev_motion=prev_motion, held=frame,
                             started=jnp.ones_like(state.started))
  return new_state, pose


step = jax.jit(step_body, static_argnames=("model",))


def _select(flag, new, old):
  """Per-sequence choice between two states (flag: (B,))."""
  def pick(a, b):
    return jnp.where(flag.reshape(flag.shape + (1,) * (a.ndim - 1)), a, b)
  shared = old.offsets
  chosen = jax.tree.map(pick, new._replace(offsets=None),
                        old._replace(offsets=None))
  return chosen._replace(offsets=shared)


@functools.partial(jax.jit, static_argnames=("model",))
def _scan(model, variables, state, sparse, mask, reset):
  fresh = jax.tree.map(jnp.zeros_like, state)._replace(
      held=jnp.broadcast_to(jnp.asarray(_STILL, jnp.float32),
                            state.held.shape),
      offsets=state.offsets)

  def body(state, inputs):
    frame, valid, restart = inputs
    state = _select(restart, fresh, state)
    new_state, pose = step(model, variables, state, frame)
    pose["lost"] = pose["lost"] & valid
    return _select(valid, new_state, state), pose

  time_major = lambda x: jnp.swapaxes(x, 0, 1)
  state, poses = jax.lax.scan(
      body, state, (time_major(sparse), time_major(mask), time_major(reset)))
  return state, jax.tree.map(time_major, poses)


def rollout(model, variables, state: State, sparse, mask=None, reset=None):
  """``step`` over every frame of a batch, as one compiled ``lax.scan``.

  Args:
    model, variables: as for ``step``.
    state: the initial state (``init_state(cfg, B)``).
    sparse: (B, N, 54) inputs.
    mask: (B, N) bool, False for padding: the state does not advance there
      and the outputs are meaningless.
    reset: (B, N) bool, True where a new sequence starts in a lane (the
      state is re-initialised before that frame).

  Returns:
    (final state, poses) with poses of shape (B, N, ...).
  """
  sparse = jnp.asarray(sparse, jnp.float32)
  shape = sparse.shape[:2]
  mask = jnp.ones(shape, bool) if mask is None else jnp.asarray(mask, bool)
  reset = jnp.zeros(shape, bool) if reset is None else jnp.asarray(reset, bool)
  return _scan(model, variables, state, sparse, mask, reset)


def bucket_length(length: int, minimum: int = 64, steps: int = 16) -> int:
  """Rounds up to one of ``steps`` sizes per octave (at most 1/steps padding).

  Lengths repeat across calls, so each bucket compiles once.
  """
  if length <= minimum:
    return minimum
  octave = 2 ** int(np.floor(np.log2(length)))
  quantum = octave // steps
  return -(-length // quantum) * quantum


def pack_lanes(lengths: Sequence[int], lanes: int):
  """Greedy longest-first assignment of sequences to lanes.

  Returns a list, per lane, of (sequence index, start offset) pairs.
  """
  totals = [0] * lanes
  packing = [[] for _ in range(lanes)]
  for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    lane = int(np.argmin(totals))
    packing[lane].append((index, totals[lane]))
    totals[lane] += lengths[index]
  return packing


def plan_lanes(lengths: Sequence[int], max_lanes: int):
  """(packing, padded length) that runs the fewest padded frames.

  The longest sequence alone sets the scan's length, so more lanes than
  total / longest only add padding. Among lane counts up to ``max_lanes``
  this picks the one with the least (lanes + 1) x padded length: padded
  frames, plus each step's fixed cost counted as one more lane (ties: more
  lanes, which batch better).
  """
  best = None
  for lanes in range(1, max(1, min(max_lanes, len(lengths))) + 1):
    packing = pack_lanes(lengths, lanes)
    padded = bucket_length(max(sum(lengths[i] for i, _ in lane)
                               for lane in packing))
    cost = (lanes + 1) * padded
    if best is None or cost <= best[0]:
      best = (cost, packing, padded)
  return best[1], best[2]


def rollout_sequences(model, variables, cfg, sequences, lanes: int = 16,
                      skeleton=skeleton_lib.SMPL_NEUTRAL):
  """Runs many sequences of any length; returns one pose dict per sequence.

  The sequences are packed end to end into at most ``lanes`` parallel lanes
  (state reset at each sequence start), padded to a bucketed length: the
  total work is close to the total number of frames and shapes repeat
  across calls, so the scan compiles once per bucket.

  Args:
    model, variables, cfg: the model, its variables and its config.
    sequences: list of (N_i, 54) arrays.
    lanes: at most this many sequences are processed in parallel.
    skeleton: the body of the model's targets (see ``init_state``).

  Returns:
    list of dicts {"rot6d": (N_i, 132), "pos": (N_i, 66) or None,
    "lost": (N_i,) bool} as NumPy arrays.
  """
  lengths = [len(s) for s in sequences]
  packing, total = plan_lanes(lengths, lanes)
  lanes = len(packing)
  sparse = np.zeros((lanes, total, SPARSE_DIM), np.float32)
  mask = np.zeros((lanes, total), bool)
  reset = np.zeros((lanes, total), bool)
  for lane, entries in enumerate(packing):
    for index, start in entries:
      end = start + lengths[index]
      sparse[lane, start:end] = sequences[index]
      mask[lane, start:end] = True
      reset[lane, start] = True
  _, poses = rollout(model, variables, init_state(cfg, lanes, skeleton),
                     sparse, mask, reset)
  poses = jax.tree.map(np.asarray, poses)
  results = [None] * len(sequences)
  for lane, entries in enumerate(packing):
    for index, start in entries:
      span = slice(start, start + lengths[index])
      results[index] = {k: None if v is None else v[lane, span]
                        for k, v in poses.items()}
  return results


def offline_plan(length: int, window: int):
  """AGRoL's non-overlapping windows over a sequence of ``length`` frames.

  Windows start at 0, T, 2T, ...; a remainder is covered by one more window
  ending at the last frame (only its new frames are kept); a sequence
  shorter than T is one window with frame 0 repeated in front.

  Returns:
    (starts, source) where ``starts`` are window starts (negative: padded
    with frame 0) and ``source[f] = (window index, offset)`` gives the
    prediction used for frame f.
  """
  if length < window:
    offsets = np.arange(length) + window - length
    return [length - window], np.stack([np.zeros(length, int), offsets], 1)
  starts = list(range(0, length - window + 1, window))
  if starts[-1] + window < length:
    starts.append(length - window)
  frames = np.arange(length)
  index = np.minimum(frames // window, len(starts) - 1)
  return starts, np.stack([index, frames - np.asarray(starts)[index]], 1)


@functools.partial(jax.jit, static_argnames=("model",))
def _predict_windows(model, variables, windows):
  return model.apply(variables, windows, None, None, alpha=None, train=False)


def offline_sequences(model, variables, cfg, sequences, batch: int = 64):
  """AGRoL's offline protocol: every frame from non-overlapping windows.

  This is how AGRoL evaluates its MLP (it sees up to T-1 future frames, so
  it is not causal); it is offered to reproduce peers' numbers. Only models
  that predict whole windows without a memory carry fit it.

  Returns:
    one dict per sequence like ``rollout_sequences`` ("lost" all False: the
    offline protocol takes clean input only).
  """
  if cfg.uses_memory or cfg.output_frames != cfg.window:
    raise ValueError(f"{cfg.name}: the offline protocol needs a model that "
                     "predicts whole windows without memory")
  windows, plans = [], []
  for sequence in sequences:
    starts, source = offline_plan(len(sequence), cfg.window)
    if not np.isfinite(sequence).all():
      raise ValueError("the offline protocol takes no lost (non-finite) "
                       "frames; use the online rollout")
    plans.append((len(windows), source))
    padded = np.concatenate(
        [np.repeat(sequence[:1], max(0, -starts[0]), 0), sequence])
    shift = max(0, -starts[0])
    windows += [padded[s + shift:s + shift + cfg.window] for s in starts]
  windows = np.stack(windows).astype(np.float32)
  total = -(-len(windows) // batch) * batch
  windows = np.concatenate(
      [windows, np.zeros((total - len(windows),) + windows.shape[1:],
                         np.float32)])
  chunks = [_predict_windows(model, variables, windows[i:i + batch])
            for i in range(0, total, batch)]
  outputs = {k: None if chunks[0][k] is None else
             np.concatenate([np.asarray(c[k]) for c in chunks])
             for k in ("rot6d", "pos")}
  results = []
  for first, source in plans:
    rows, cols = first + source[:, 0], source[:, 1]
    result = {k: None if v is None else v[rows, cols]
              for k, v in outputs.items()}
    result["lost"] = np.zeros(len(source), bool)
    results.append(result)
  return results
