"""Tests of the online rollout: step == scan, windows, memory carry, NaN."""

import dataclasses
import doctest

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memmlp_jax import rollout
from memmlp_jax.models import configs
from memmlp_jax.models import factory


@dataclasses.dataclass(frozen=True)
class TinyConfig:
  window: int = 5
  uses_memory: bool = True
  predicts_positions: bool = True
  memory_alpha: float = 0.5


class TinyModel(nn.Module):
  """A stand-in with the contract's call signature; every input matters."""
  cfg: TinyConfig

  @nn.compact
  def __call__(self, sparse, prev_sparse, prev_motion, *, alpha=None,
               train=False):
    window = self.cfg.window
    mix = self.param("mix", nn.initializers.normal(0.3), (window, window))
    h = jnp.tanh(nn.Dense(16)(sparse))
    h = jnp.einsum("btd,ts->bsd", h, mix)
    if self.cfg.uses_memory:
      h = h + nn.Dense(16)(prev_sparse) + alpha * nn.Dense(16)(prev_motion)
    h = jnp.tanh(h)
    pos = nn.Dense(66)(h) if self.cfg.predicts_positions else None
    return {"rot6d": nn.Dense(132)(h), "pos": pos}


@dataclasses.dataclass(frozen=True)
class _OfflineConfig(TinyConfig):
  name: str = "tiny"
  uses_memory: bool = False
  output_frames: int = 5


def _tiny(**overrides):
  cfg = TinyConfig(**overrides)
  model = TinyModel(cfg)
  batch = (1, cfg.window)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros(batch + (54,)),
                         jnp.zeros(batch + (54,)), jnp.zeros(batch + (198,)),
                         alpha=0.5)
  return cfg, model, variables


def _inputs(batch, frames, seed=0):
  return np.random.default_rng(seed).normal(size=(batch, frames, 54)).astype(
      np.float32)


def _step_loop(model, variables, cfg, sparse):
  state = rollout.init_state(cfg, sparse.shape[0])
  outputs = []
  for t in range(sparse.shape[1]):
    state, pose = rollout.step(model, variables, state, sparse[:, t])
    outputs.append(pose)
  return {k: None if outputs[0][k] is None else np.stack(
      [o[k] for o in outputs], axis=1) for k in outputs[0]}


@pytest.mark.parametrize("overrides", [
    {}, {"uses_memory": False}, {"predicts_positions": False}])
def test_step_equals_scan_frame_by_frame(overrides):
  cfg, model, variables = _tiny(**overrides)
  sparse = _inputs(3, 12)
  streamed = _step_loop(model, variables, cfg, sparse)
  _, scanned = rollout.rollout(model, variables, rollout.init_state(cfg, 3),
                               sparse)
  for key in ("rot6d", "pos"):
    if streamed[key] is None:
      assert scanned[key] is None
      continue
    assert scanned[key].shape == streamed[key].shape
    np.testing.assert_allclose(scanned[key], streamed[key], atol=1e-5)


def test_step_builds_windows_and_carry_by_hand():
  cfg, model, variables = _tiny()
  sparse = _inputs(1, 8)
  outputs = _step_loop(model, variables, cfg, sparse)
  window = cfg.window
  prev_sparse = np.zeros((1, window, 54), np.float32)
  prev_motion = np.zeros((1, window, 198), np.float32)
  for t in range(8):
    # The first frame fills the window; then the last T frames.
    padded = np.concatenate([np.repeat(sparse[:, :1], window, 1),
                             sparse[:, 1:t + 1]], axis=1)[:, -window:]
    out = model.apply(variables, padded, prev_sparse, prev_motion, alpha=0.5)
    np.testing.assert_allclose(outputs["rot6d"][:, t], out["rot6d"][:, -1],
                               atol=1e-5)
    np.testing.assert_allclose(outputs["pos"][:, t], out["pos"][:, -1],
                               atol=1e-5)
    prev_sparse = padded
    prev_motion = np.concatenate([out["rot6d"], out["pos"]], axis=-1)


def test_packed_sequences_equal_separate_rollouts():
  cfg, model, variables = _tiny()
  # Lengths include ones shorter than the window (5), and more sequences
  # than lanes, so lanes hold several sequences back to back.
  lengths = [2, 9, 17, 4, 11, 1, 6]
  rng = np.random.default_rng(1)
  sequences = [rng.normal(size=(n, 54)).astype(np.float32) for n in lengths]
  packed = rollout.rollout_sequences(model, variables, cfg, sequences,
                                     lanes=3)
  for sequence, result in zip(sequences, packed):
    alone = _step_loop(model, variables, cfg, sequence[None])
    assert result["rot6d"].shape == (len(sequence), 132)
    np.testing.assert_allclose(result["rot6d"], alone["rot6d"][0], atol=1e-5)
    np.testing.assert_allclose(result["pos"], alone["pos"][0], atol=1e-5)
    assert not result["lost"].any()


def test_lost_frames_are_flagged_and_held():
  cfg, model, variables = _tiny()
  sparse = _inputs(1, 10)[0]
  lost = sparse.copy()
  lost[4, 36:45] = np.nan  # a tracker loses a hand for two frames
  lost[5, :] = np.inf
  result = rollout.rollout_sequences(model, variables, cfg, [lost])[0]
  np.testing.assert_array_equal(np.flatnonzero(result["lost"]), [4, 5])
  assert np.isfinite(result["rot6d"]).all()
  # Documented behaviour: each lost value comes from the last valid one,
  # held still (identity rotation velocity, zero position delta).
  held = sparse.copy()
  held[4, 36:45] = sparse[3, 36:45]
  held[5] = np.concatenate([sparse[4, :18], np.tile([1, 0, 0, 0, 1, 0], 3),
                            sparse[3, 36:45], np.zeros(9)])
  expected = rollout.rollout_sequences(model, variables, cfg, [held])[0]
  np.testing.assert_allclose(result["rot6d"], expected["rot6d"], atol=1e-5)
  # Frames before the loss are untouched by it.
  clean = rollout.rollout_sequences(model, variables, cfg, [sparse])[0]
  np.testing.assert_allclose(result["rot6d"][:4], clean["rot6d"][:4],
                             atol=1e-6)
  assert not np.allclose(result["rot6d"][4:], clean["rot6d"][4:], atol=1e-3)


def test_padding_does_not_count_as_lost():
  cfg, model, variables = _tiny()
  sparse = _inputs(2, 6)
  mask = np.array([[True] * 6, [True] * 3 + [False] * 3])
  sparse[1, 3:] = np.nan
  _, poses = rollout.rollout(model, variables, rollout.init_state(cfg, 2),
                             sparse, mask)
  assert not np.asarray(poses["lost"]).any()


def test_bucket_length_bounds_padding():
  for length in range(1, 5000, 37):
    bucket = rollout.bucket_length(length)
    assert bucket >= length
    assert bucket <= max(64, length * 17 / 16)
  assert len({rollout.bucket_length(n) for n in range(1025, 2049)}) == 16


def test_plan_lanes_keeps_padding_small():
  # The free test split's clip lengths have one 2326-frame clip among 54.
  lengths = [2326, 1232, 1052, 932] + [300] * 30 + [120] * 20
  packing, padded = rollout.plan_lanes(lengths, 16)
  placed = sorted(i for lane in packing for i, _ in lane)
  assert placed == list(range(len(lengths)))
  assert len(packing) * padded <= 1.15 * sum(lengths)
  assert padded >= 2326


@pytest.mark.slow
def test_real_config_step_equals_scan():
  cfg = configs.get_config("memmlp41", window=6, latent_dim=16, num_blocks=2,
                           memory_dim=8, vq_hidden=16, vq_codebook_size=8,
                           vq_code_dim=4)
  model, variables = factory.init(cfg, jax.random.PRNGKey(0))
  sparse = _inputs(2, 9)
  streamed = _step_loop(model, variables, cfg, sparse)
  _, scanned = rollout.rollout(model, variables, rollout.init_state(cfg, 2),
                               sparse)
  np.testing.assert_allclose(scanned["rot6d"], streamed["rot6d"], atol=1e-5)
  np.testing.assert_allclose(scanned["pos"], streamed["pos"], atol=1e-5)


@pytest.mark.slow
def test_docstring_example_runs():
  failures, tried = doctest.testmod(rollout, verbose=False)
  assert tried > 0 and failures == 0


def test_offline_plan_follows_agrol():
  starts, source = rollout.offline_plan(10, 4)
  assert starts == [0, 4, 6]
  np.testing.assert_array_equal(source[:, 0], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
  np.testing.assert_array_equal(source[:, 1], [0, 1, 2, 3, 0, 1, 2, 3, 2, 3])
  starts, source = rollout.offline_plan(3, 4)  # shorter than the window
  assert starts == [-1]
  np.testing.assert_array_equal(source[:, 1], [1, 2, 3])


def test_offline_sequences_use_non_overlapping_windows():
  _, model, variables = _tiny(uses_memory=False)
  sequences = [_inputs(1, 12, seed=2)[0], _inputs(1, 3, seed=3)[0]]
  long, short = rollout.offline_sequences(
      model, variables, _OfflineConfig(), sequences, batch=2)
  whole = model.apply(variables, sequences[0][None, 5:10], None, None)
  np.testing.assert_allclose(long["rot6d"][5:10], whole["rot6d"][0],
                             atol=1e-5)
  tail = model.apply(variables, sequences[0][None, 7:12], None, None)
  np.testing.assert_allclose(long["rot6d"][10:], tail["rot6d"][0, 3:],
                             atol=1e-5)
  padded = np.concatenate([np.repeat(sequences[1][:1], 2, 0), sequences[1]])
  alone = model.apply(variables, padded[None], None, None)
  np.testing.assert_allclose(short["rot6d"], alone["rot6d"][0, 2:], atol=1e-5)
  with pytest.raises(ValueError, match="without memory"):
    rollout.offline_sequences(
        model, variables, _OfflineConfig(uses_memory=True), sequences)
