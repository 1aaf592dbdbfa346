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
