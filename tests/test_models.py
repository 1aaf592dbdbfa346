"""Tests of memmlp_jax.models: blocks, memory, VQ-VAE, Mem-MLP, baselines, configs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memmlp_jax.models import baselines
from memmlp_jax.models import blocks
from memmlp_jax.models import configs
from memmlp_jax.models import factory
from memmlp_jax.models import memmlp
from memmlp_jax.models import memory
from memmlp_jax.models import vqvae

# A small Mem-MLP with every part present, cheap enough to run in tests.
SMALL = dict(window=6, latent_dim=16, num_blocks=2, head_blocks=1,
             memory_dim=5, vq_hidden=8, vq_codebook_size=7, vq_code_dim=4)


def _block_params(window, width):
  return (window * window + window) + 4 * width + (width * width + width)


def _memmlp_formula(cfg):
  """Closed-form parameter count of an MLP-family config."""
  d, t = cfg.latent_dim, cfg.window
  count = 54 * d + d + cfg.num_blocks * _block_params(t, d)
  branches = (132, 66) if cfg.multi_head else (132,)
  for out in branches:
    count += cfg.head_blocks * _block_params(t, d) + d * out + out
  if cfg.use_memory:
    m = cfg.memory_dim
    proj = lambda fan_in: fan_in * m + m + 2 * m  # Linear + LayerNorm.
    block = proj(54) + proj(198) + proj(64)
    count += len(cfg.fusion_layers) * (block + 2 * m * d + d)
    h = cfg.vq_hidden
    count += (2 * 252 + 252 * h + h) + (2 * h + h * h + h) + (h * 64 + 64)
    count += cfg.vq_codebook_size * 64
  return count


def _init(cfg, seed=0):
  """Random variables shaped like factory.init's.

  Drawn with numpy: compiling the flax initialisers costs XLA ~10 s of CPU per
  model, more than everything else these tests compile.
  """
  shapes = jax.eval_shape(lambda: factory.init(cfg, jax.random.PRNGKey(0))[1])
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype),
      shapes)


def _random(rng, shape):
  return jax.random.normal(jax.random.PRNGKey(rng), shape)


def _small_inputs(cfg, batch=3):
  t = cfg.window
  return dict(sparse=_random(1, (batch, t, 54)),
              prev_sparse=_random(2, (batch, t, 54)),
              prev_motion=_random(3, (batch, t, 198)))


# ------------------------------------------------------------ named configs


@pytest.mark.parametrize("name", ["memmlp41", "memmlp60", "agrol_mlp41",
                                  "agrol_mlp196"])
def test_parameter_counts_match_closed_form(name):
  cfg = configs.get_config(name)
  assert factory.count_params(cfg)["total"] == _memmlp_formula(cfg)


def test_parameter_counts_near_paper():
  counts = {n: factory.count_params(configs.get_config(n))
            for n in configs.NAMES}
  # The paper: Mem-MLP-41 4.10 M, AGRoL-MLP 3.74 M (T=196).
  assert counts["memmlp41"]["total"] == pytest.approx(4.10e6, rel=0.005)
  assert counts["agrol_mlp196"]["total"] == pytest.approx(3.74e6, rel=0.005)
  # AvatarPoser's published size is 4.12 M.
  assert counts["avatarposer"]["total"] == pytest.approx(4.12e6, rel=0.005)
  # The frozen part is exactly the VQ encoder + codebook.
  assert counts["memmlp41"]["frozen"] == 180792
  assert counts["agrol_mlp41"]["frozen"] == 0


@pytest.mark.parametrize("name", configs.NAMES)
def test_output_shapes(name):
  cfg = configs.get_config(name)
  model = factory.build(cfg)
  inputs = factory.dummy_inputs(cfg, batch=2)
  variables = jax.eval_shape(lambda: factory.init(cfg, jax.random.PRNGKey(0))[1])
  out = jax.eval_shape(lambda v: model.apply(v, **inputs, train=False),
                       variables)
  assert out["rot6d"].shape == (2, cfg.output_frames, 132)
  if cfg.predicts_positions:
    assert out["pos"].shape == (2, cfg.window, 66)
  else:
    assert out["pos"] is None


def test_config_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown model 'memmlp42'"):
    configs.get_config("memmlp42")
  with pytest.raises(ValueError, match=r"unknown config fields \['depth'\]"):
    configs.get_config("memmlp41", depth=3)
  with pytest.raises(ValueError, match="memory_kind='rnn'"):
    configs.get_config("memmlp41", memory_kind="rnn")
  with pytest.raises(ValueError, match="memory_layers"):
    configs.get_config("memmlp41", memory_layers=(2, 9))
  cfg = configs.get_config("memmlp41", **SMALL)
  model = factory.build(cfg)
  variables = jax.eval_shape(lambda: factory.init(cfg, jax.random.PRNGKey(0))[1])
  inputs = _small_inputs(cfg)
  with pytest.raises(ValueError, match=r"sparse must have shape \(B, 6, 54\)"):
    jax.eval_shape(model.apply, variables, inputs["sparse"][:, :5],
                   inputs["prev_sparse"], inputs["prev_motion"])
  with pytest.raises(ValueError, match="prev_motion must have shape"):
    jax.eval_shape(model.apply, variables, inputs["sparse"],
                   inputs["prev_sparse"], None)


def test_ablation_switches_change_the_architecture():
  assert configs.get_config("memmlp41").fusion_layers == (2, 4, 6, 8)
  assert configs.get_config("memmlp41", num_blocks=12).fusion_layers == (
      2, 4, 6, 8, 10, 12)
  variants = {
      "no_memory": dict(use_memory=False),
      "no_vq": dict(use_vq_code=False),
      "single_head": dict(multi_head=False),
      "lstm": dict(memory_kind="lstm"),
      "gru": dict(memory_kind="gru"),
      "add": dict(memory_combine="add"),
      "project": dict(memory_fusion="project"),
      "placement": dict(memory_layers=(1,)),
  }
  for label, switch in variants.items():
    cfg = configs.get_config("memmlp41", **{**SMALL, "num_blocks": 4},
                             **switch)
    model = factory.build(cfg)
    variables = jax.eval_shape(
        lambda cfg=cfg: factory.init(cfg, jax.random.PRNGKey(0))[1])
    params = variables["params"]
    out = jax.eval_shape(lambda v, model=model, cfg=cfg: model.apply(
        v, **_small_inputs(cfg), train=False), variables)
    assert out["rot6d"].shape == (3, 6, 132), label
    assert ("pos_head" in params) == cfg.multi_head, label
    assert ("vq" in params) == cfg.uses_vq, label
    memories = sorted(k for k in params if k.startswith("memory_"))
    expected = ([f"memory_{i}" for i in cfg.fusion_layers]
                if cfg.use_memory else [])
    assert memories == expected, label
    if cfg.memory_kind != "block":
      assert "cell" in params[memories[0]], label


# ------------------------------------------------------------------ blocks


def test_layer_norm_matches_flax_values_and_gradients():
  x = _random(0, (5, 3, 16)) * 3.0 + 1.0
  scale, bias = _random(1, (16,)), _random(2, (16,))
  cotangent = _random(3, (5, 3, 16))

  def ours(x, scale, bias):
    return jnp.vdot(blocks.layer_norm(x, scale, bias, 1e-5), cotangent)

  def flax_ln(x, scale, bias):
    y = nn.LayerNorm(epsilon=1e-5).apply(
        {"params": {"scale": scale, "bias": bias}}, x)
    return jnp.vdot(y, cotangent)

  np.testing.assert_allclose(ours(x, scale, bias), flax_ln(x, scale, bias),
                             rtol=1e-5)
  grads = lambda f: jax.jit(jax.grad(f, (0, 1, 2)))(x, scale, bias)
  for got, want in zip(grads(ours), grads(flax_ln)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_mlp_block_is_agrol_block_in_batch_major_terms():
  """The time-major block equals AGRoL's block written on (B, T, D)."""
  window, batch, width = 7, 3, 8
  x = _random(0, (batch, window, width))
  block = blocks.MLPBlock()
  shapes = jax.eval_shape(block.init, jax.random.PRNGKey(1),
                          jnp.swapaxes(x, 0, 1))["params"]
  params = jax.tree.map(lambda p: 0.3 * _random(2, p.shape), shapes)
  got = jnp.swapaxes(
      jax.jit(block.apply)({"params": params}, jnp.swapaxes(x, 0, 1)), 0, 1)

  def ln(v, p):
    mean = v.mean(-1, keepdims=True)
    var = v.var(-1, keepdims=True)
    return (v - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]

  silu = lambda v: v / (1.0 + np.exp(-v))
  x = np.asarray(x, np.float64)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  # Conv1d(T, T, 1): out[b, t, :] = sum_s W[t, s] x[b, s, :] + bias[t].
  conv_weight = p["time_mix"]["kernel"].T
  mixed = np.einsum("ts,bsd->btd", conv_weight, ln(x, p["norm_time"]))
  x = x + silu(mixed + p["time_mix"]["bias"][None, :, None])
  dense = ln(x, p["norm_dense"]) @ p["dense"]["kernel"] + p["dense"]["bias"]
  want = x + silu(dense)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ memory


def _memory_block(**overrides):
  cfg = configs.get_config("memmlp41", **{**SMALL, **overrides})
  block = memory.MemoryBlock(cfg)
  s, m, c = _random(0, (6, 2, 54)), _random(1, (6, 2, 198)), _random(2, (6, 2, 4))
  shapes = jax.eval_shape(lambda: block.init(
      {"params": jax.random.PRNGKey(3)}, s, m, c, alpha=0.5, train=False))
  variables = jax.tree.map(lambda p: 0.3 * _random(4, p.shape), shapes)
  return cfg, block, variables, (s, m, c)


def test_memory_block_alpha_blends_motion_and_code():
  cfg, block, variables, (s, m, c) = _memory_block()
  given = jax.jit(lambda s, m, c, alpha: block.apply(
      variables, s, m, c, alpha=alpha, train=True))
  mean = jax.jit(lambda s, m, c: block.apply(variables, s, m, c, alpha=None,
                                             train=False))
  run = lambda s, m, c, alpha, train: (
      given(s, m, c, jnp.float32(alpha)) if alpha is not None
      else mean(s, m, c))
  assert run(s, m, c, alpha=0.5, train=False).shape == (6, 2,
                                                        2 * cfg.memory_dim)
  other_m, other_c = _random(5, m.shape), _random(6, c.shape)
  # alpha = 1 reads only the motion, alpha = 0 only the code.
  np.testing.assert_array_equal(run(s, m, c, alpha=1.0, train=True),
                                run(s, m, other_c, alpha=1.0, train=True))
  np.testing.assert_array_equal(run(s, m, c, alpha=0.0, train=True),
                                run(s, other_m, c, alpha=0.0, train=True))
  assert not np.allclose(run(s, m, c, alpha=1.0, train=True),
                         run(s, other_m, c, alpha=1.0, train=True))
  # Inference uses the mean alpha; training draws a fresh one per element.
  np.testing.assert_allclose(run(s, m, c, alpha=None, train=False),
                             run(s, m, c, alpha=0.5, train=False), rtol=1e-5,
                             atol=1e-6)
  draw = jax.jit(lambda seed: block.apply(
      variables, s, m, c, alpha=None, train=True,
      rngs={"alpha": jax.random.PRNGKey(seed)}))
  assert not np.allclose(draw(0), draw(1))
  np.testing.assert_array_equal(draw(0), draw(0))
  # The drawn alpha, recovered element by element from the blend half.
  width = cfg.memory_dim
  blend = lambda out: np.asarray(out[..., width:], np.float64)
  at_0 = blend(run(s, m, c, alpha=0.0, train=True))
  at_1 = blend(run(s, m, c, alpha=1.0, train=True))
  usable = np.abs(at_1 - at_0) > 1e-2
  alpha = ((blend(draw(0)) - at_0) / np.where(usable, at_1 - at_0, 1.0))[usable]
  assert alpha.size > 30
  assert np.all((alpha > -1e-3) & (alpha < 1 + 1e-3))
  assert 0.2 < alpha.std() < 0.4 and 0.3 < alpha.mean() < 0.7  # U(0, 1)
  with pytest.raises(Exception, match="alpha"):
    jax.eval_shape(lambda: block.apply(variables, s, m, c, alpha=None,
                                       train=True))  # No "alpha" RNG given.


def test_memory_block_combinations():
  cfg, block, variables, (s, m, c) = _memory_block(memory_combine="add")
  assert block.apply(variables, s, m, c, alpha=0.5,
                     train=False).shape == (6, 2, cfg.memory_dim)
  _, block, variables, (s, m, c) = _memory_block(use_vq_code=False)
  assert "code" not in variables["params"]
  out = block.apply(variables, s, m, None, alpha=0.0, train=True)
  np.testing.assert_array_equal(
      out, block.apply(variables, s, _random(7, m.shape), None, alpha=0.0,
                       train=True))


def _capturing_apply(model, train):
  """Jitted apply that also returns the motion window the memory block read."""

  def apply(variables, inputs, key):
    out, state = model.apply(variables, **inputs, train=train,
                             rngs={"alpha": key}, mutable=["intermediates"])
    (motion,) = state["intermediates"]["memory_motion"]
    return out, jnp.swapaxes(motion, 0, 1)

  return jax.jit(apply)


def test_training_feeds_ground_truth_inference_feeds_own_prediction():
  """What reaches the memory block: the given ground truth in training (blended
  with random alpha), the model's previous output in an autoregressive step."""
  cfg = configs.get_config("memmlp41", **SMALL)
  model, variables = factory.build(cfg), _init(cfg)
  inputs = _small_inputs(cfg)
  ground_truth = inputs["prev_motion"]
  training, inference = (_capturing_apply(model, True),
                         _capturing_apply(model, False))
  key1, key2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)

  out, seen = training(variables, inputs, key1)
  np.testing.assert_array_equal(seen, ground_truth)
  again, _ = training(variables, inputs, key2)
  assert not np.allclose(out["rot6d"], again["rot6d"])  # alpha is random.

  # Inference: step 1 from zeros, step 2 from step 1's own prediction.
  zeros = jnp.zeros_like(ground_truth)
  first, seen = inference(variables, {**inputs, "prev_motion": zeros}, key1)
  np.testing.assert_array_equal(seen, zeros)
  predicted = jnp.concatenate([first["rot6d"], first["pos"]], axis=-1)
  second, seen = inference(variables, {**inputs, "prev_motion": predicted},
                           key1)
  np.testing.assert_array_equal(seen, predicted)
  # Inference ignores the alpha RNG, and the memory really changes the output.
  third, _ = inference(variables, {**inputs, "prev_motion": predicted}, key2)
  np.testing.assert_array_equal(second["rot6d"], third["rot6d"])
  assert not np.allclose(first["rot6d"], second["rot6d"])


def test_model_without_memory_ignores_previous_window():
  cfg = configs.get_config("memmlp41", **SMALL, use_memory=False)
  model, variables = factory.build(cfg), _init(cfg)
  inputs = _small_inputs(cfg)
  apply = jax.jit(lambda v, s, ps, pm: model.apply(v, s, ps, pm, train=True))
  out = apply(variables, inputs["sparse"], None, None)
  out2 = apply(variables, inputs["sparse"], inputs["prev_sparse"],
               inputs["prev_motion"])
  np.testing.assert_array_equal(out["rot6d"], out2["rot6d"])


def test_vq_part_gets_no_gradient_and_is_masked_from_the_optimizer():
  cfg = configs.get_config("memmlp41", **SMALL)
  model = factory.build(cfg)
  params = _init(cfg)["params"]
  inputs = _small_inputs(cfg)

  @jax.jit
  @jax.grad
  def grads(p):
    out = model.apply({"params": p}, **inputs, train=True,
                      rngs={"alpha": jax.random.PRNGKey(1)})
    return jnp.mean(out["rot6d"] ** 2) + jnp.mean(out["pos"] ** 2)

  g = grads(params)
  assert all(np.all(x == 0) for x in jax.tree.leaves(g["vq"]))
  assert any(np.any(x != 0) for x in jax.tree.leaves(g["block_1"]))
  assert any(np.any(x != 0) for x in jax.tree.leaves(g["memory_2"]["code"]))
  mask = memmlp.trainable_mask(params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  assert not any(jax.tree.leaves(mask["vq"]))
  assert all(all(jax.tree.leaves(v)) for k, v in mask.items() if k != "vq")


# ------------------------------------------------------------------ VQ-VAE


def test_quantize_nearest_code_straight_through_and_losses():
  latent = _random(0, (4, 5, 3))
  codebook = _random(1, (9, 3))
  out = vqvae.quantize(latent, codebook)
  brute = np.argmin(((np.asarray(latent)[..., None, :]
                      - np.asarray(codebook)) ** 2).sum(-1), axis=-1)
  np.testing.assert_array_equal(out["indices"], brute)
  np.testing.assert_allclose(out["quantized"], np.asarray(codebook)[brute],
                             rtol=1e-6, atol=1e-6)
  mse = np.mean((np.asarray(latent) - np.asarray(codebook)[brute]) ** 2)
  np.testing.assert_allclose(out["commitment_loss"], mse, rtol=1e-5)
  np.testing.assert_allclose(out["codebook_loss"], mse, rtol=1e-5)

  weights = _random(2, latent.shape)
  # Straight-through: d(quantized)/d(latent) is the identity.
  g = jax.grad(lambda z: jnp.sum(vqvae.quantize(z, codebook)["quantized"]
                                 * weights))(latent)
  np.testing.assert_allclose(g, weights, rtol=1e-6)
  # Commitment pulls only the encoder; the codebook loss moves only codes.
  g_commit = jax.grad(lambda z, e: vqvae.quantize(z, e)["commitment_loss"],
                      (0, 1))(latent, codebook)
  assert np.any(g_commit[0] != 0) and np.all(g_commit[1] == 0)
  g_code = jax.grad(lambda z, e: vqvae.quantize(z, e)["codebook_loss"],
                    (0, 1))(latent, codebook)
  assert np.all(g_code[0] == 0) and np.any(g_code[1] != 0)


def test_codebook_usage_statistics():
  k = 8
  uniform = jax.nn.one_hot(jnp.arange(4 * k) % k, k)
  stats = vqvae.codebook_usage(uniform)
  np.testing.assert_allclose(stats["perplexity"], k, rtol=1e-5)
  np.testing.assert_allclose(stats["usage"], 1.0)
  collapsed = vqvae.codebook_usage(jax.nn.one_hot(jnp.zeros(10, int), k))
  np.testing.assert_allclose(collapsed["perplexity"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(collapsed["usage"], 1 / k)
  half = vqvae.codebook_usage(jax.nn.one_hot(jnp.arange(8) % 2, k))
  np.testing.assert_allclose(half["perplexity"], 2.0, rtol=1e-5)


def test_vqvae_shapes_and_codebook_init_from_latents():
  cfg = configs.get_config("memmlp41", **SMALL)
  model = vqvae.VQVAE(cfg)
  sparse, motion = _random(0, (3, 6, 54)), _random(1, (3, 6, 198))
  params = jax.tree.map(
      lambda p: 0.3 * _random(4, p.shape),
      jax.eval_shape(model.init, jax.random.PRNGKey(2), sparse,
                     motion)["params"])
  apply = jax.jit(lambda p: model.apply({"params": p}, sparse, motion))
  out = apply(params)
  assert out["rot6d"].shape == (3, 6, 132)
  assert out["latent"].shape == (3, 6, 4)
  assert out["indices"].shape == (3, 6)
  seeded = vqvae.init_codebook_from_latents(params, out["latent"],
                                            jax.random.PRNGKey(3))
  codes = np.asarray(seeded["vq"]["codebook"])
  latents = np.asarray(out["latent"]).reshape(-1, 4)
  for code in codes:  # Every code is one of the latents.
    assert np.min(np.abs(latents - code).sum(-1)) == 0
  assert apply(seeded)["usage"] * cfg.vq_codebook_size >= 5
  # The same subtree plugs into Mem-MLP unchanged.
  variables = jax.eval_shape(lambda: factory.init(cfg, jax.random.PRNGKey(0))[1])
  assert (jax.tree.structure(variables["params"]["vq"])
          == jax.tree.structure(seeded["vq"]))


# --------------------------------------------------------------- baselines


def test_avatarposer_predicts_the_last_frame():
  cfg = configs.get_config("avatarposer", window=5, embed_dim=16, num_heads=2,
                           ff_dim=32, num_layers=2)
  model, variables = factory.build(cfg), _init(cfg)
  assert isinstance(model, baselines.AvatarPoser)
  apply = jax.jit(lambda v, x: model.apply(v, x, None, None, train=True))
  sparse = _random(1, (2, 5, 54))
  out = apply(variables, sparse)
  assert out["rot6d"].shape == (2, 1, 132) and out["pos"] is None
  changed = apply(variables, sparse.at[:, -1].add(1.0))
  assert not np.allclose(out["rot6d"], changed["rot6d"])
