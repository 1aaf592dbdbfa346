"""The VQ-VAE whose frozen encoder + codebook feed Mem-MLP's memory block.

Per frame (any leading axes): [sparse 54, motion 198] -> encoder (blocks of
LN, Linear, SiLU; `vq_encoder_depth` of them, width `vq_hidden`) -> Linear to a
`vq_code_dim` latent -> nearest codebook entry (straight-through gradients) ->
decoder (the same blocks) -> Linear to the 132 rotation values.

`VQEncoder` (encoder + quantizer) is a submodule named "vq" both here and in
`memmlp.MemMLP`, so stage 2 copies it across unchanged:
  memmlp_params["vq"] = vqvae_params["vq"]
and keeps it bitwise frozen (the model stops its gradient; the optimizer must
also skip it so weight decay does not touch it: see memmlp.trainable_mask).

Quantization uses squared distances and a one-hot matmul rather than a gather,
so the only non-matmul op on the inference path is one argmin over the codebook.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from memmlp_jax import dims
from memmlp_jax.models import blocks
from memmlp_jax.models import configs

Array = jax.Array


def squared_distances(latent: Array, codebook: Array) -> Array:
  """|z - e_k|^2 of `latent` (..., C) to every code of `codebook` (K, C)."""
  return (jnp.sum(latent * latent, axis=-1, keepdims=True)
          - 2.0 * latent @ codebook.T
          + jnp.sum(codebook * codebook, axis=-1))


def quantize(latent: Array, codebook: Array) -> dict[str, Array]:
  """Nearest-code quantization of `latent` (..., C) against `codebook` (K, C).

  Returns quantized (straight-through: forward = code, backward = identity
  to `latent`), codes (the raw nearest codes, no straight-through), indices,
  one_hot (..., K), codebook_loss |sg(z) - e|^2 and commitment_loss
  |z - sg(e)|^2 (means over all elements).
  """
  indices = jnp.argmin(squared_distances(latent, codebook), axis=-1)
  one_hot = jax.nn.one_hot(indices, codebook.shape[0], dtype=latent.dtype)
  codes = one_hot @ codebook
  return dict(
      quantized=latent + jax.lax.stop_gradient(codes - latent),
      codes=codes,
      indices=indices,
      one_hot=one_hot,
      codebook_loss=jnp.mean(jnp.square(jax.lax.stop_gradient(latent) - codes)),
      commitment_loss=jnp.mean(
          jnp.square(latent - jax.lax.stop_gradient(codes))))


def codebook_usage(one_hot: Array) -> dict[str, Array]:
  """Perplexity exp(H(p)) of the code histogram p, and the fraction of codes used.

  Perplexity is 1 when every frame maps to one code and K when all K codes are
  used equally often.
  """
  probs = jnp.mean(one_hot.reshape(-1, one_hot.shape[-1]), axis=0)
  entropy = -jnp.sum(probs * jnp.log(jnp.where(probs > 0, probs, 1.0)))
  return {"perplexity": jnp.exp(entropy),
          "usage": jnp.mean((probs > 0).astype(jnp.float32))}


class VQEncoder(nn.Module):
  """Encoder + codebook: ([sparse, motion]) -> quantize() outputs + latent."""
  cfg: configs.ModelConfig

  @nn.compact
  def __call__(self, sparse: Array, motion: Array) -> dict[str, Array]:
    cfg = self.cfg
    h = jnp.concatenate([sparse, motion], axis=-1)
    for i in range(cfg.vq_encoder_depth):
      h = blocks.LNLinearSiLU(cfg.vq_hidden, name=f"block_{i + 1}")(h)
    latent = nn.Dense(cfg.vq_code_dim, name="latent")(h)
    # Unit-variance codes match the scale of a freshly initialised encoder.
    codebook = self.param("codebook", nn.initializers.normal(1.0),
                          (cfg.vq_codebook_size, cfg.vq_code_dim))
    return {"latent": latent, **quantize(latent, codebook)}


class VQVAE(nn.Module):
  """Stage 1 model: reconstructs the rotations from the quantized code.

  __call__(sparse (..., 54), motion (..., 198)) -> dict with "rot6d"
  (..., 132), the quantize() outputs, "latent", and codebook_usage() stats.
  """
  cfg: configs.ModelConfig

  @nn.compact
  def __call__(self, sparse: Array, motion: Array) -> dict[str, Array]:
    cfg = self.cfg
    out = VQEncoder(cfg, name="vq")(sparse, motion)
    h = out["quantized"]
    for i in range(cfg.vq_decoder_depth):
      h = blocks.LNLinearSiLU(cfg.vq_hidden, name=f"decoder_{i + 1}")(h)
    rot6d = nn.Dense(dims.ROT6D_DIM, name="decoder_out")(h)
    return {"rot6d": rot6d, **out, **codebook_usage(out["one_hot"])}


def init_codebook_from_latents(params, latents: Array, rng: Array):
  """params with the codebook replaced by randomly chosen encoder latents.

  A data-dependent start (as in k-means++ seeding, without the weighting) that
  puts every code where the data is, which avoids dead codes in short runs.
  `latents` (..., C) are encoder outputs on a training batch, e.g.
  `VQVAE.apply(...)["latent"]`.
  """
  flat = latents.reshape(-1, latents.shape[-1])
  size = params["vq"]["codebook"].shape[0]
  picks = jax.random.choice(rng, flat.shape[0], (size,),
                            replace=flat.shape[0] < size)
  vq = {**params["vq"], "codebook": flat[picks]}
  return {**params, "vq": vq}
