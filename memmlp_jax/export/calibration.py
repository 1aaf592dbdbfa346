"""Calibration data for int8 export: real steps with their memory state.

A streaming step's inputs are a frame and the carried state, and the state
of a memory model holds its own previous prediction. Calibrating on frames
with a zero or random state would give the quantizer ranges the model never
sees, so ``rollout_samples`` runs the exported step itself (JAX, float32) over
training clips, from a random frame of each clip with the state a headset
session starting there would have, and keeps the inputs of some of its
steps, the first (empty memory) included.

The samples are the converter's representative dataset and the data
``quantize.smooth`` scales the activations by.
"""

from typing import Sequence

import jax
import numpy as np

from memmlp_jax.export import convert

Samples = list[dict[str, np.ndarray]]


def rollout_samples(cfg, variables, sequences: Sequence[np.ndarray], *,
                    frames: int = 180, per_sequence: int = 12,
                    seed: int = 0) -> Samples:
  """Inputs of the exported step ({tensor name: array}) along real rollouts.

  Each sequence of at least ``frames`` frames is streamed for ``frames``
  steps from a random start; ``per_sequence`` of those steps, the first
  always among them, are kept with the state the step received.
  """
  initial, step = convert.streaming_step(cfg, variables)

  @jax.jit
  def run(clip):
    def body(state, frame):
      return step(state, frame[None])[0], state
    return jax.lax.scan(body, initial, clip)[1]

  rng = np.random.default_rng(seed)
  samples = []
  for sequence in sequences:
    sequence = np.asarray(sequence, np.float32)
    if len(sequence) < frames:
      continue
    start = rng.integers(0, len(sequence) - frames + 1)
    clip = sequence[start:start + frames]
    states = run(clip)
    chosen = np.concatenate([[0], rng.choice(np.arange(1, frames),
                                             per_sequence - 1, replace=False)])
    for t in np.sort(chosen):
      state = jax.tree.map(lambda x, t=t: np.asarray(x[t]), states)
      sample = {"frame": clip[t][None]}
      sample.update(convert.state_layout(state))
      samples.append(sample)
  if not samples:
    raise ValueError(f"no sequence of at least {frames} frames to calibrate "
                     "on")
  return samples


def training_samples(cfg, variables, split, *, clips: int = 24,
                     frames: int = 180, seed: int = 0) -> Samples:
  """``rollout_samples`` over ``clips`` random clips of a prepared training
  split at least ``frames`` long: what ``experiments.export`` calibrates on."""
  order = np.random.default_rng(seed).permutation(len(split.clips))
  sequences = [split.sparse[span.start:span.start + span.length]
               for span in (split.clips[i] for i in order)]
  sequences = [s for s in sequences if len(s) >= frames]
  return rollout_samples(cfg, variables, sequences[:clips], frames=frames)
