"""The training-recipe switches: each one computes what its docs say.

The central property: what the memory block reads in training matches what
the online rollout feeds it (padded clip starts, empty memory at frame 0,
its own previous prediction).
"""

import json
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memmlp_jax import evaluation
from memmlp_jax import losses
from memmlp_jax import metrics
from memmlp_jax import rollout
from memmlp_jax import skeleton
from memmlp_jax import train
from memmlp_jax.data import dataset
from memmlp_jax.models import configs
from memmlp_jax.models import factory
from memmlp_jax.models import memory

TINY = dict(window=6, latent_dim=16, num_blocks=2, head_blocks=1,
            memory_dim=8, use_vq_code=False)


def _split(lengths=(40, 9, 25), seed=0):
  rng = np.random.default_rng(seed)
  frames = sum(lengths)
  starts = np.cumsum((0,) + tuple(lengths))[:-1]
  clips = [types.SimpleNamespace(clip_id=f"c{i}", subject="s", start=int(s),
                                 length=n)
           for i, (s, n) in enumerate(zip(starts, lengths))]
  return types.SimpleNamespace(
      sparse=rng.normal(size=(frames, 54)).astype(np.float32),
      rot6d=rng.normal(size=(frames, 132)).astype(np.float32),
      pos=rng.normal(size=(frames, 66)).astype(np.float32),
      clips=clips, skeleton=skeleton.SMPL_NEUTRAL)


def _rollout_windows(sparse, window):
  """The rollout's input window at every step of one clip (padding rule)."""
  state = rollout.init_state(types.SimpleNamespace(
      window=window, uses_memory=False, predicts_positions=True), 1)
  out = []
  for frame in sparse:
    state = state._replace(window=rollout.push(
        state.window, jnp.asarray(frame[None]), state.started),
                           started=jnp.ones((1,), bool))
    out.append(np.asarray(state.window[0]))
  return out


# ------------------------------------------------------------------ crops


def test_start_crops_are_the_rollouts_padded_windows():
  split = _split()
  window = 6
  sampler = dataset.WindowSampler(split, window, 64, seed=1, history=2,
                                  start_share=1.0)
  batch = sampler.batch(0)
  plan = sampler.plan(0)
  assert batch["clip_frame"].min() == 0
  assert batch["clip_frame"].max() <= window + 1  # within span - 1
  checked = 0
  for b in range(64):
    clip = next(c for c in split.clips if c.start == plan.clip_first[b])
    expected = _rollout_windows(
        split.sparse[clip.start:clip.start + clip.length], window)
    frame = int(batch["clip_frame"][b])
    crops = dataset.windows({k: batch[k][b:b + 1] for k in
                             dataset.WINDOW_KEYS}, window)
    for lag, crop in enumerate(reversed(crops)):
      if frame - lag >= 0:
        np.testing.assert_array_equal(crop["sparse"][0],
                                      expected[frame - lag])
        checked += 1
  assert checked > 64


def test_no_start_share_keeps_the_plain_batches():
  split = _split()
  plain = dataset.WindowSampler(split, 6, 16, seed=3).batch(5)
  again = dataset.WindowSampler(split, 6, 16, seed=3, start_share=0.0)
  np.testing.assert_array_equal(plain["sparse"], again.batch(5)["sparse"])
  assert (plain["clip_frame"] >= 6).all()  # every crop lies inside its clip


def test_bad_sampler_options_are_refused():
  with pytest.raises(ValueError, match="history"):
    dataset.WindowSampler(_split(), 6, 4, 0, history=0)
  with pytest.raises(ValueError, match="start_share"):
    dataset.WindowSampler(_split(), 6, 4, 0, start_share=1.5)


# ----------------------------------------------------------------- memory


def _config(**recipe):
  return train.RunConfig(model=configs.get_config("memmlp41", **TINY),
                         batch_size=8, **recipe)


@pytest.mark.slow
def test_memory_is_empty_at_a_clip_start_and_own_prediction_after():
  """At clip frames 0 and 1 the training memory equals the rollout's."""
  config = _config(memory_source="own")
  cfg = config.model
  model, variables = factory.init(cfg, jax.random.PRNGKey(0))
  split = _split(lengths=(12,))
  clip = split.sparse[:12]
  state = rollout.init_state(cfg, 1)
  carries = []
  for frame in clip[:2]:
    carries.append(state)
    state, _ = rollout.step(model, variables, state, clip[None, len(carries)
                                                            - 1])
  span = cfg.window + 2
  for frame in (0, 1):
    index = np.maximum(np.arange(span) - (span - 1) + frame, 0)
    batch = {k: jnp.asarray(getattr(split, k)[index][None])
             for k in dataset.WINDOW_KEYS}
    wins = dataset.windows(batch, cfg.window)
    sparse, motion = train.memory_inputs(
        model, config, variables["params"], wins,
        jnp.asarray([frame], jnp.int32), jax.random.PRNGKey(1),
        skeleton.SMPL_NEUTRAL)
    np.testing.assert_allclose(sparse, carries[frame].prev_sparse, atol=1e-6)
    np.testing.assert_allclose(motion, carries[frame].prev_motion, atol=1e-5)
  assert not np.any(carries[1].prev_motion == 0)  # a real prediction


def test_truth_memory_reads_the_true_window_plus_noise():
  config = _config(memory_noise=0.1)
  split = _split()
  batch = dataset.WindowSampler(split, 6, 8, 0).batch(0)
  wins = dataset.windows(batch, 6)
  sparse, motion = train.memory_inputs(None, config, None, wins,
                                       batch["clip_frame"],
                                       jax.random.PRNGKey(0))
  np.testing.assert_array_equal(sparse, wins[-2]["sparse"])
  noise = np.asarray(motion) - np.concatenate([wins[-2]["rot6d"],
                                               wins[-2]["pos"]], -1)
  assert 0.08 < noise.std() < 0.12


@pytest.mark.slow
def test_every_recipe_trains_and_resumes_bitwise(tmp_path):
  """A run stopped after 2 steps and resumed equals an uninterrupted one."""
  config = _config(memory_source="own", start_share=0.5, memory_noise=0.05,
                   loss_weight_lr=1e-2, steps=4, checkpoint_every=2,
                   log_every=2)
  config = train.RunConfig(**{
      **{f: getattr(config, f) for f in config.__dataclass_fields__},
      "model": configs.get_config("memmlp41", **TINY, alpha_per="sample",
                                  last_frame_share=0.5, fk_loss=True)})
  split = _split()
  whole = train.train(config, str(tmp_path / "whole"), split)
  # The same run stopped after its step-2 checkpoint: the step-4 one is gone.
  train.train(config, str(tmp_path / "split"), split)
  shutil.rmtree(tmp_path / "split" / "memmlp" / "checkpoints" / "4")
  assert train.latest_step(str(tmp_path / "split" / "memmlp")) == 2
  resumed = train.train(config, str(tmp_path / "split"), split)
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  assert set(whole["loss"]) == {"rot", "rot_vel", "pos", "lower_vel",
                                "fk_pos"}


@pytest.mark.slow
def test_loss_weight_lr_moves_the_log_variances_faster():
  split = _split()
  moved = {}
  for lr in (0.0, 0.05):
    config = _config(loss_weight_lr=lr)
    stage = train.build_stage("memmlp", config, split)
    state = train.init_state(stage.init_params(), stage.optimizer)
    step = jax.jit(train.make_train_step("memmlp", stage.model, config,
                                         stage.optimizer, split.skeleton))
    sampler = dataset.WindowSampler(split, 6, 8, 0)
    for i in range(5):
      state, _ = step(state, sampler.batch(i))
    moved[lr] = max(abs(float(v)) for v in state["params"]["loss"].values())
  assert moved[0.05] > 20 * moved[0.0], moved


def test_saved_configs_without_the_new_fields_still_match():
  config = _config()
  saved = json.loads(json.dumps(config.to_json()))
  for field in ("memory_source", "memory_noise", "start_share",
                "loss_weight_lr", "optimizer", "vq_augment"):
    del saved[field]
  for field in ("alpha_per", "last_frame_share", "fk_loss", "rot_vel_loss",
                "dropout"):
    del saved["model"][field]
  assert train.same_run(saved, config)
  assert not train.same_run(saved, _config(memory_source="own"))


def test_bad_recipe_values_are_refused():
  with pytest.raises(ValueError, match="memory_source"):
    _config(memory_source="future")
  with pytest.raises(ValueError, match="optimizer"):
    _config(optimizer="sgd")
  with pytest.raises(ValueError, match="last_frame_share"):
    configs.get_config("memmlp41", last_frame_share=1.0)
  with pytest.raises(ValueError, match="vq_restart_until"):
    _config(vq_restart_until=1.5)


def _vq_state_and_outputs():
  """Four codes of which code 3 is never chosen; eight latents."""
  codebook = jnp.arange(8.0).reshape(4, 2)
  state = {"params": {"vq": {"codebook": codebook}},
           "code_usage": jnp.array([0.3, 0.3, 0.4, 0.0])}
  picks = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
  out = {"one_hot": jax.nn.one_hot(picks, 4)[None],
         "latent": 100.0 + jnp.arange(16.0).reshape(1, 8, 2)}
  return state, out


@pytest.mark.parametrize("step,restarts", [(4, True), (5, False), (9, False)])
def test_dead_codes_restart_only_until_vq_restart_until(step, restarts):
  config = train.RunConfig(model=configs.get_config("memmlp41"), vq_steps=10,
                           vq_restart_until=0.5)
  state, out = _vq_state_and_outputs()
  new, extra = train.VQVAEStage().after_update(config, state, out,
                                               jnp.asarray(step))
  codebook = new["params"]["vq"]["codebook"]
  kept = state["params"]["vq"]["codebook"]
  np.testing.assert_array_equal(codebook[:3], kept[:3])
  assert int(extra["vq/restarted"]) == int(restarts)
  # A restarted code sits on one of the batch's latents; a kept one stays.
  assert bool(jnp.all(codebook[3] >= 100.0)) == restarts
  # Usage is tracked either way (the dead code's is reset when it restarts).
  expected = 0.9 * state["code_usage"] + 0.1 * jnp.array([3, 3, 2, 0]) / 8
  np.testing.assert_allclose(new["code_usage"][:3], expected[:3], rtol=1e-6)


# ----------------------------------------------------------------- losses


def test_last_frame_share_weights_the_last_frame():
  pred = jnp.zeros((2, 4, 6))
  target = jnp.zeros((2, 4, 6)).at[:, -1].set(1.0)
  assert float(losses.distance(pred, target)) == pytest.approx(0.25)
  assert float(losses.distance(pred, target, last_share=0.5)) == (
      pytest.approx(0.5))
  target = jnp.zeros((2, 4, 6)).at[:, 0].set(1.0)
  assert float(losses.distance(pred, target, last_share=0.5)) == (
      pytest.approx(0.5 / 3))


def test_l2norm_is_agrols_per_joint_norm():
  rng = np.random.default_rng(0)
  pred, target = rng.normal(size=(2, 3, 132)), rng.normal(size=(2, 3, 132))
  expected = np.mean(np.linalg.norm((pred - target).reshape(-1, 6), axis=1))
  got = losses.distance(jnp.asarray(pred), jnp.asarray(target), "l2norm", 6)
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_l2norm_gradient_is_finite_where_an_error_is_zero():
  # The root-relative pelvis position is 0 in both prediction and target;
  # a plain norm's gradient there is NaN and poisons the whole step.
  pred = jnp.zeros((2, 3, 66)).at[..., 3:].set(0.5)
  target = jnp.zeros((2, 3, 66))
  grad = jax.grad(lambda p: losses.distance(p, target, "l2norm", 3))(pred)
  assert np.isfinite(np.asarray(grad)).all()
  assert np.all(np.asarray(grad[..., :3]) == 0.0)


def test_agrol_own_terms_and_fk_term():
  own = configs.get_config("agrol_mlp41", loss_distance="l2norm",
                           rot_vel_loss=False)
  assert losses.term_names(own) == ("rot",)
  fk = configs.get_config("memmlp41", fk_loss=True)
  rot = jnp.tile(jnp.asarray([1.0, 0, 0, 0, 1, 0]), (1, 2, 22))
  pos = jnp.zeros((1, 2, 66))
  terms = losses.mlp_terms(fk, {"rot6d": rot, "pos": pos}, rot, pos,
                           skeleton.SMPL_NEUTRAL)
  assert float(terms["fk_pos"]) == 0.0
  with pytest.raises(ValueError, match="skeleton"):
    losses.mlp_terms(fk, {"rot6d": rot, "pos": pos}, rot, pos)


@pytest.mark.parametrize("per", ["sample", "element"])
def test_alpha_draws_per_window_or_per_element(per):
  cfg = configs.get_config("memmlp41", **TINY, alpha_per=per)
  block = memory.MemoryBlock(cfg)
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(cfg.window, 3, 54)), jnp.float32)
  m = jnp.asarray(rng.normal(size=(cfg.window, 3, 198)), jnp.float32)
  params = block.init(jax.random.PRNGKey(0), s, m, None, alpha=1.0,
                      train=False)
  h_m = block.apply(params, s, m, None, alpha=1.0, train=False)[..., 8:]
  drawn = block.apply(params, s, m, None, alpha=None, train=True,
                      rngs={"alpha": jax.random.PRNGKey(1)})[..., 8:]
  alpha = np.asarray(drawn / h_m)  # (T, B, F): the blend is alpha * h_m
  spread = alpha.std(axis=(0, 2))  # across frames and features, per window
  if per == "sample":
    assert spread.max() < 1e-4 and alpha[0, :, 0].std() > 0.01
  else:
    assert spread.min() > 0.1


@pytest.mark.slow
def test_avatarposer_dropout_only_in_training():
  cfg = configs.get_config("avatarposer", num_layers=1, embed_dim=16,
                           ff_dim=32, num_heads=2, dropout=0.5)
  model = factory.build(cfg)
  variables = jax.jit(lambda key: factory.init(cfg, key)[1])(
      jax.random.PRNGKey(0))
  apply = jax.jit(model.apply, static_argnames="train")
  sparse = jnp.ones((2, cfg.window, 54))
  one = apply(variables, sparse, train=False)["rot6d"]
  two = apply(variables, sparse, train=False)["rot6d"]
  np.testing.assert_array_equal(one, two)
  noisy = apply(variables, sparse, train=True,
                rngs={"dropout": jax.random.PRNGKey(1)})["rot6d"]
  assert not np.allclose(noisy, one)


# ---------------------------------------------------------------- metrics


def test_frame_weighted_pools_frames():
  rows = [{"frames": 10, **{k: 1.0 for k in metrics.COLUMNS},
           "gt_jitter": 1.0},
          {"frames": 103, **{k: 2.0 for k in metrics.COLUMNS},
           "gt_jitter": 2.0}]
  pooled = metrics.frame_weighted(rows)
  assert pooled["mpjpe"] == pytest.approx((10 + 206) / 113)
  assert pooled["mpjve"] == pytest.approx((9 + 204) / 111)
  assert pooled["jitter"] == pytest.approx((7 + 200) / 107)


def test_from_window_scores_only_the_steady_frames():
  rng = np.random.default_rng(0)
  clips, poses = [], []
  for n in (30, 8):
    rot6d = np.tile([1.0, 0, 0, 0, 1, 0], (n, 22)).astype(np.float32)
    pos = rng.normal(size=(n, 66)).astype(np.float32)
    clips.append(evaluation.Clip(f"c{n}", np.zeros((n, 54)), rot6d, pos))
    pred = rot6d.copy()
    pred[:5] = np.tile([0.0, 1, 0, -1, 0, 0], 22)  # wrong before T - 1
    poses.append({"rot6d": pred})
  rows = evaluation.window_rows(clips, poses, skeleton.SMPL_NEUTRAL, 6)
  assert [r["clip"] for r in rows] == ["c30"]  # 8 - 5 frames are too few
  full = metrics.sequence_metrics(poses[0]["rot6d"], clips[0].rot6d,
                                  clips[0].pos, clips[0].pos[:, 45:48],
                                  skeleton.SMPL_NEUTRAL)
  assert rows[0]["mpjre"] == pytest.approx(0.0, abs=1e-6)
  assert full["mpjre"] > 1.0


def test_output_velocity_loss_compares_successive_outputs():
  """The term is zero when the outputs move as the truth moves, and masked
  where there is no previous output."""
  rng = np.random.default_rng(0)
  identity = np.tile([1.0, 0, 0, 0, 1, 0], 22).astype(np.float32)
  turned = identity.copy()
  turned[6:12] = [0.0, 1, 0, -1, 0, 0]  # joint 1 turned 90 degrees
  now = jnp.asarray(np.stack([turned, identity]))
  before = jnp.asarray(np.stack([identity, identity]))
  body = skeleton.SMPL_NEUTRAL
  same = losses.output_velocity(now, before, now, before,
                                jnp.asarray([True, True]), body)
  assert float(same) == 0.0
  still = losses.output_velocity(now, before, before, before,
                                 jnp.asarray([True, True]), body)
  masked = losses.output_velocity(now, before, before, before,
                                  jnp.asarray([False, True]), body)
  assert float(still) > 0.0 and float(masked) == 0.0
  del rng


@pytest.mark.slow
def test_output_velocity_recipe_trains_every_model():
  split = _split()
  for name, extra in (("memmlp41", TINY), ("agrol_mlp41", dict(
      window=6, latent_dim=16, num_blocks=2))):
    config = train.RunConfig(model=configs.get_config(
        name, **extra, output_vel_loss=True), batch_size=8)
    assert config.history == 2
    stage = train.build_stage("memmlp", config, split, None)
    state = train.init_state(stage.init_params(), stage.optimizer)
    step = jax.jit(train.make_train_step("memmlp", stage.model, config,
                                         stage.optimizer, split.skeleton))
    sampler = dataset.WindowSampler(split, 6, 8, 0, history=2,
                                    start_share=0.5)
    state, metrics = step(state, sampler.batch(0))
    assert np.isfinite(float(metrics["loss/output_vel"]))


@pytest.mark.slow
@pytest.mark.parametrize("quantized", ["int8", "int8_onepass"])
def test_fake_quant_rounds_the_block_linears_in_the_loss(quantized):
  """fake_quant: the loss of the same params and batch moves a little (the
  block Linears' int8 rounding), and its gradient is finite."""
  split = _split()
  values = {}
  for mode in ("none", quantized):
    config = _config(fake_quant=mode)
    stage = train.build_stage("memmlp", config, split)
    params = stage.init_params()
    batch = dataset.WindowSampler(split, config.model.window + 1, 8,
                                  0).batch(0)
    loss, grads = jax.jit(jax.value_and_grad(
        lambda p, b, c=config, m=stage.model: train.memmlp_loss(
            m, c, p, b, jax.random.PRNGKey(0), train=True)[0]))(params, batch)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    values[mode] = float(loss)
  assert values[quantized] != values["none"]
  assert abs(values[quantized] - values["none"]) < 0.05 * abs(values["none"])
