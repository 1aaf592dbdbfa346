"""The exported step against the JAX step it came from."""

import jax
import jax.numpy as jnp
import numpy as np

from memmlp_jax import rollout
from memmlp_jax.export import convert
from memmlp_jax.export import runner as runner_lib
from memmlp_jax.models import configs
from memmlp_jax.models import vqvae


def max_abs_difference(reference, exported) -> dict[str, float]:
  """Largest |a - b| per pose output over lists of per-sequence pose dicts."""
  keys = [k for k in ("rot6d", "pos") if reference[0].get(k) is not None]
  return {k: max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k]))))
                 for a, b in zip(reference, exported)) for k in keys}


def code_margin(cfg: configs.ModelConfig, params, state) -> jax.Array:
  """Smallest relative gap between the two nearest VQ codes the step reads.

  Over every row of the previous window in ``state`` (a ``rollout.State`` or
  ``cached_step.State``): (d_2 - d_1) / (|z|^2 + |c_1|^2), the squared
  distances to the nearest and second-nearest codes over the scale of the
  terms they are computed from, so float32 rounding is ~1e-7 on any
  codebook; +inf for models without a VQ code. Where it is a few rounding
  units the argmin is a tie that float rounding may break either way.
  """
  if not cfg.uses_vq:
    return jnp.asarray(jnp.inf)
  sparse = (state.prev_sparse if isinstance(state, rollout.State)
            else state.window)
  latent = vqvae.VQEncoder(cfg).apply({"params": params["vq"]}, sparse,
                                      state.prev_motion)["latent"]
  codebook = jnp.asarray(params["vq"]["codebook"])
  distances = vqvae.squared_distances(latent, codebook)
  nearest = jnp.sort(distances, axis=-1)
  chosen = codebook[jnp.argmin(distances, axis=-1)]
  scale = jnp.sum(latent * latent, axis=-1) + jnp.sum(chosen * chosen, -1)
  return jnp.min((nearest[..., 1] - nearest[..., 0]) / scale)


def step_parity(cfg: configs.ModelConfig, variables, model_path: str,
                sequences, tie_margin: float = 1e-6) -> dict:
  """The exported step against the JAX step it came from, on equal inputs.

  Every frame goes through the JAX step (which carries its own state) and
  through the .tflite given that same JAX state, so conversion error is
  measured per step instead of compounding through the memory's feedback.
  Frames where the VQ code of some memory row is a near-tie (two nearest
  codes within ``tie_margin`` relative, about 8 float32 rounding units, see
  ``code_margin``) are counted, not compared: there either code is a
  correct float32 result.

  Returns {"max": {output name: max |JAX - TFLite|}, "frames": n,
  "near_ties": k}.
  """
  initial, step = convert.streaming_step(cfg, variables)
  step = jax.jit(step)
  margin = jax.jit(lambda state: code_margin(cfg, variables["params"], state))
  streamer = runner_lib.TFLiteStreamer(model_path)
  worst, frames, ties = {}, 0, 0
  for sequence in sequences:
    state = initial
    for frame in np.asarray(sequence, np.float32):
      inputs = {name: np.asarray(leaf)
                for name, leaf in convert.state_layout(state)}
      tflite_state, tflite_pose = streamer.step(inputs, frame)
      tie = float(margin(state)) < tie_margin
      state, pose = step(state, frame[None])
      frames += 1
      if tie:
        ties += 1
        continue
      pairs = [(k, v, tflite_pose[k]) for k, v in pose.items()]
      pairs += [(k, v, tflite_state[k]) for k, v in convert.state_layout(state)]
      for name, ours, theirs in pairs:
        ours = np.asarray(ours)
        if ours.dtype == bool:
          continue
        worst[name] = max(worst.get(name, 0.0),
                          float(np.max(np.abs(ours - theirs))))
  return {"max": worst, "frames": frames, "near_ties": ties}


def code_flips(cfg: configs.ModelConfig, variables, model_path: str,
               sequences) -> dict:
  """How often the free-running TFLite and JAX streams read other VQ codes.

  Both stream every sequence on their own state (the memory fed with their
  own predictions); at every frame the VQ codes of the memory's T rows are
  computed (in JAX) from each stream's state. A code that differs is a
  flip: a near-tie that float rounding broke the other way, or the streams
  already apart.

  Returns {"frames", "frames_any_row": share of frames with some row's code
  different, "newest_row": share of frames whose newest row's code differs,
  "rows": share of all (frame, row) codes that differ}; zeros without a VQ
  code.
  """
  if not cfg.uses_vq:
    return {"frames": 0, "frames_any_row": 0.0, "newest_row": 0.0,
            "rows": 0.0}
  initial, step = convert.streaming_step(cfg, variables)
  step = jax.jit(step)
  names = [name for name, _ in convert.state_layout(initial)]
  treedef = jax.tree.structure(initial)

  @jax.jit
  def codes(state):
    sparse = (state.prev_sparse if isinstance(state, rollout.State)
              else state.window)
    return vqvae.VQEncoder(cfg).apply(
        {"params": variables["params"]["vq"]}, sparse,
        state.prev_motion)["indices"][0]

  streamer = runner_lib.TFLiteStreamer(model_path)
  differ = []
  for sequence in sequences:
    state, tflite_state = initial, streamer.init_state()
    for frame in np.asarray(sequence, np.float32):
      theirs = jax.tree.unflatten(treedef, [tflite_state[n] for n in names])
      differ.append(np.asarray(codes(state) != codes(theirs)))
      state, _ = step(state, frame[None])
      tflite_state, _ = streamer.step(tflite_state, frame)
  differ = np.stack(differ)
  return {"frames": len(differ),
          "frames_any_row": float(differ.any(axis=1).mean()),
          "newest_row": float(differ[:, -1].mean()),
          "rows": float(differ.mean())}
