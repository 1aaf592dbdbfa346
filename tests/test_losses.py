"""Tests of memmlp_jax.losses: the terms, the weighting, AvatarPoser's and stage 1's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from memmlp_jax import losses
from memmlp_jax import skeleton
from memmlp_jax.models import configs

LOWER = [0, 1, 2, 4, 5, 7, 8, 10, 11]


def _targets(seed, batch=2, window=5):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((batch, window, 132)).astype(np.float32),
          rng.standard_normal((batch, window, 66)).astype(np.float32))


def _reference_terms(pred_rot, pred_pos, rot, pos, power):
  dist = lambda a, b: np.mean(np.abs(a - b) ** power)
  vel = lambda x: x[:, 1:] - x[:, :-1]
  lower = lambda p: p.reshape(p.shape[:2] + (22, 3))[:, :, LOWER]
  return {"rot": dist(pred_rot, rot), "rot_vel": dist(vel(pred_rot), vel(rot)),
          "pos": dist(pred_pos, pos),
          "lower_vel": dist(vel(lower(pred_pos)), vel(lower(pos)))}


@pytest.mark.parametrize("distance,power", [("l1", 1), ("l2", 2)])
def test_terms_match_their_definitions(distance, power):
  cfg = configs.get_config("memmlp41", loss_distance=distance)
  pred_rot, pred_pos = _targets(0)
  rot, pos = _targets(1)
  terms = losses.mlp_terms(cfg, {"rot6d": pred_rot, "pos": pred_pos}, rot, pos)
  want = _reference_terms(pred_rot, pred_pos, rot, pos, power)
  assert set(terms) == set(want)
  for name, value in want.items():
    np.testing.assert_allclose(terms[name], value, rtol=1e-5, err_msg=name)


def test_lower_body_velocity_ignores_the_upper_body():
  cfg = configs.get_config("memmlp41")
  rot, pos = _targets(2)
  moved = pos.reshape(2, 5, 22, 3).copy()
  moved[:, :, skeleton.UPPER] += np.random.default_rng(3).standard_normal(
      moved[:, :, skeleton.UPPER].shape)
  terms = losses.mlp_terms(cfg, {"rot6d": rot, "pos": moved.reshape(2, 5, 66)},
                           rot, pos)
  assert float(terms["lower_vel"]) == 0.0
  assert float(terms["pos"]) > 0.1


def test_single_head_models_have_rotation_terms_only():
  cfg = configs.get_config("agrol_mlp41")
  rot, pos = _targets(4)
  terms = losses.mlp_terms(cfg, {"rot6d": rot, "pos": None}, rot, pos)
  assert sorted(terms) == ["rot", "rot_vel"]
  assert sorted(losses.init_log_vars(cfg)) == ["rot", "rot_vel"]
  assert losses.init_log_vars(configs.get_config("avatarposer")) == {}


def test_learned_weighting_is_kendall_and_its_optimum_is_log_loss():
  cfg = configs.get_config("memmlp41")
  terms = {"rot": 0.5, "rot_vel": 0.1, "pos": 2.0, "lower_vel": 0.03}
  terms = {k: jnp.float32(v) for k, v in terms.items()}
  log_vars = {k: jnp.float32(s) for k, s in
              zip(losses.TERMS, (0.0, 1.0, -0.5, 2.0))}
  total, weights = losses.combine(cfg, terms, log_vars)
  want = sum(np.exp(-float(log_vars[k])) * float(terms[k])
             + float(log_vars[k]) for k in terms)
  np.testing.assert_allclose(total, want, rtol=1e-6)
  np.testing.assert_allclose(weights["pos"], np.exp(0.5), rtol=1e-6)
  # d total / d s_i = 1 - exp(-s_i) L_i vanishes at s_i = log L_i.
  optimum = {k: jnp.log(v) for k, v in terms.items()}
  grads = jax.grad(lambda s: losses.combine(cfg, terms, s)[0])(optimum)
  for k in terms:
    np.testing.assert_allclose(grads[k], 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="do not match loss terms"):
    losses.combine(cfg, terms, {"rot": jnp.float32(0.0)})


def test_fixed_weights_mode():
  cfg = configs.get_config("memmlp41", loss_weighting="fixed",
                           loss_weights=(1.0, 2.0, 3.0, 4.0))
  pred_rot, pred_pos = _targets(5)
  rot, pos = _targets(6)
  total, metrics = losses.model_loss(
      cfg, {"rot6d": pred_rot, "pos": pred_pos}, rot, pos,
      losses.init_log_vars(cfg))
  assert losses.init_log_vars(cfg) == {}
  want = _reference_terms(pred_rot, pred_pos, rot, pos, 1)
  expected = sum(w * want[k] for k, w in zip(losses.TERMS, (1, 2, 3, 4)))
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert float(metrics["weight/lower_vel"]) == 4.0
  np.testing.assert_allclose(metrics["loss/pos"], want["pos"], rtol=1e-5)


def _rot6d_of(rotations):
  """(..., 3, 3) -> (..., 6) first two columns."""
  return np.concatenate([rotations[..., :, 0], rotations[..., :, 1]], axis=-1)


def test_avatarposer_loss_last_frame_and_fk():
  cfg = configs.get_config("avatarposer", window=3)
  body = skeleton.SMPL_NEUTRAL
  rotations = Rotation.random(2 * 3 * 22, random_state=0).as_matrix()
  rot = _rot6d_of(rotations).reshape(2, 3, 132).astype(np.float32)
  pos = np.zeros((2, 3, 66), np.float32)
  exact = {"rot6d": rot[:, -1:], "pos": None}
  total, metrics = losses.model_loss(cfg, exact, rot, pos, {}, body)
  assert float(total) == pytest.approx(0.0, abs=1e-6)
  # Only the last frame counts.
  earlier = rot.copy()
  earlier[:, :-1] += 1.0
  assert float(losses.model_loss(cfg, exact, earlier, pos, {}, body)[0]
               ) == pytest.approx(0.0, abs=1e-6)
  # A wrong root orientation costs 0.02 x its L1, plus its FK effect.
  tilted = rot[:, -1:].copy()
  tilted[..., :6] = _rot6d_of(Rotation.from_euler("x", 0.3).as_matrix()
                              @ rotations.reshape(2, 3, 22, 3, 3)[:, -1:, 0])
  _, metrics = losses.model_loss(cfg, {"rot6d": tilted, "pos": None}, rot, pos,
                                 {}, body)
  assert float(metrics["loss/rot"]) == 0.0
  assert float(metrics["weight/root_rot"]) == pytest.approx(0.02)
  assert float(metrics["loss/fk_pos"]) > 0.01
  with pytest.raises(ValueError, match="needs the skeleton"):
    losses.model_loss(cfg, exact, rot, pos, {})


def test_fk_positions_are_root_relative_forward_kinematics():
  body = skeleton.SMPL_NEUTRAL
  identity = np.tile(_rot6d_of(np.eye(3)), 22)[None].astype(np.float32)
  got = np.asarray(losses.fk_positions(identity, body))[0]
  rest = body.rest_positions()
  np.testing.assert_allclose(got, rest - rest[0], atol=1e-6)


def test_vqvae_loss_combines_reconstruction_codebook_commitment():
  cfg = configs.get_config("memmlp41", vq_commitment=0.25)
  rot, _ = _targets(7)
  out = {"rot6d": rot + 0.5, "codebook_loss": jnp.float32(2.0),
         "commitment_loss": jnp.float32(2.0), "perplexity": jnp.float32(3.0),
         "usage": jnp.float32(0.5)}
  total, metrics = losses.vqvae_loss(cfg, out, rot)
  np.testing.assert_allclose(total, 0.5 + 2.0 + 0.25 * 2.0, rtol=1e-6)
  assert float(metrics["vq/perplexity"]) == 3.0
