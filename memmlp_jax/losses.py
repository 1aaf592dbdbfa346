"""Training losses (DESIGN 3, paper 3.3) and their weighting.

Mem-MLP family (cfg.arch == "mlp"), on whole windows (B, T, .):
  rot        distance of 6D rotations, all 22 joints            (eq. 1)
  rot_vel    distance of their frame-to-frame differences         (eq. 2)
  pos        distance of global joint positions                   (eq. 3)
  lower_vel  distance of frame-to-frame position differences of the
             lower-body joints (skeleton.LOWER)                   (eq. 4)
The position terms exist only when the model predicts positions
(cfg.multi_head). "distance" is mean |d| (l1) or mean d^2 (l2; AGRoL's).

Weighting (eq. 5):
  learned: sum_i exp(-s_i) L_i + s_i, homoscedastic log-variances s_i
    (Kendall et al. 2018), trained with the network. They live in their own
    pytree, `init_log_vars(cfg)` -> {"rot": 0., ...}, which the trainer keeps
    next to the model params (e.g. {"model": params, "loss": log_vars}), gives
    to the optimizer without weight decay, and logs.
  fixed: sum_i w_i L_i with cfg.loss_weights (rot, rot_vel, pos, lower_vel);
    the paper's grid-searched values were lost in extraction.

AvatarPoser (cfg.arch == "avatarposer"), on the window's last frame, with its
own fixed weights: root orientation L1 x 0.02, joint rotations L1, and L1 of
forward-kinematics positions relative to the root (its FK loss; zero root
translation on both sides, so no translation is predicted or needed). The
skeleton the targets were computed on must be passed.
"""

from typing import Any

import jax
import jax.numpy as jnp

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.models import configs

Array = jax.Array
TERMS = ("rot", "rot_vel", "pos", "lower_vel")
AVATARPOSER_WEIGHTS = {"root_rot": 0.02, "rot": 1.0, "fk_pos": 1.0}


def distance(pred: Array, target: Array, kind: str = "l1") -> Array:
  diff = pred - target
  return jnp.mean(jnp.abs(diff)) if kind == "l1" else jnp.mean(diff * diff)


def velocity(x: Array) -> Array:
  """Frame-to-frame differences along axis 1 of (B, T, ...)."""
  return x[:, 1:] - x[:, :-1]


def lower_body(pos: Array) -> Array:
  """(B, T, 66) positions -> (B, T, 9, 3) of the lower-body joints."""
  joints = pos.reshape(pos.shape[:-1] + (skeleton_lib.NUM_JOINTS, 3))
  return joints[..., skeleton_lib.LOWER, :]


def fk_positions(rot6d: Array, skeleton: skeleton_lib.Skeleton) -> Array:
  """(..., 132) local 6D rotations -> (..., 22, 3) positions, root at origin."""
  local = geometry.rot6d_to_matrix(
      rot6d.reshape(rot6d.shape[:-1] + (skeleton_lib.NUM_JOINTS, 6)))
  offsets = jnp.asarray(skeleton.offsets, jnp.float32)
  _, positions = geometry.forward_kinematics(
      local, jnp.zeros(rot6d.shape[:-1] + (3,), rot6d.dtype),
      skeleton.parents, offsets)
  return positions - positions[..., :1, :]


def mlp_terms(cfg: configs.ModelConfig, outputs: dict[str, Any],
              rot6d: Array, pos: Array) -> dict[str, Array]:
  """The loss terms of an MLP-family model; targets (B, T, 132), (B, T, 66)."""
  kind = cfg.loss_distance
  pred_rot = outputs["rot6d"]
  terms = {"rot": distance(pred_rot, rot6d, kind),
           "rot_vel": distance(velocity(pred_rot), velocity(rot6d), kind)}
  if cfg.predicts_positions:
    pred_pos = outputs["pos"]
    terms["pos"] = distance(pred_pos, pos, kind)
    terms["lower_vel"] = distance(velocity(lower_body(pred_pos)),
                                  velocity(lower_body(pos)), kind)
  return terms


def avatarposer_terms(outputs: dict[str, Any], rot6d: Array,
                      skeleton: skeleton_lib.Skeleton) -> dict[str, Array]:
  """AvatarPoser's terms on the last frame; targets are whole windows."""
  pred = outputs["rot6d"][:, -1]
  target = rot6d[:, -1]
  return {
      "root_rot": distance(pred[..., :6], target[..., :6]),
      "rot": distance(pred[..., 6:], target[..., 6:]),
      "fk_pos": distance(fk_positions(pred, skeleton),
                         fk_positions(target, skeleton)),
  }


def init_log_vars(cfg: configs.ModelConfig) -> dict[str, Array]:
  """Initial learned log-variances s_i = 0 (weight 1); {} when not learned."""
  if cfg.arch != "mlp" or cfg.loss_weighting != "learned":
    return {}
  names = TERMS if cfg.predicts_positions else TERMS[:2]
  return {name: jnp.zeros((), jnp.float32) for name in names}


def combine(cfg: configs.ModelConfig, terms: dict[str, Array],
            log_vars: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
  """(total loss, the weight each term got)."""
  if cfg.arch == "avatarposer":
    weights = {k: jnp.float32(AVATARPOSER_WEIGHTS[k]) for k in terms}
    return sum(weights[k] * terms[k] for k in terms), weights
  if cfg.loss_weighting == "learned":
    if set(log_vars) != set(terms):
      raise ValueError(f"{cfg.name}: log_vars {sorted(log_vars)} do not match "
                       f"loss terms {sorted(terms)}; use init_log_vars(cfg)")
    weights = {k: jnp.exp(-log_vars[k]) for k in terms}
    total = sum(weights[k] * terms[k] + log_vars[k] for k in terms)
    return total, weights
  fixed = dict(zip(TERMS, cfg.loss_weights))
  weights = {k: jnp.float32(fixed[k]) for k in terms}
  return sum(weights[k] * terms[k] for k in terms), weights


def model_loss(cfg: configs.ModelConfig, outputs: dict[str, Any],
               rot6d: Array, pos: Array, log_vars: dict[str, Array],
               skeleton: skeleton_lib.Skeleton | None = None
               ) -> tuple[Array, dict[str, Array]]:
  """Total training loss and metrics {"loss", "loss/<term>", "weight/<term>"}.

  Args:
    cfg: the model's config.
    outputs: the model's output dict.
    rot6d: target rotations (B, T, 132) of the window.
    pos: target global positions (B, T, 66) of the window.
    log_vars: learned log-variances (init_log_vars), {} for fixed weights.
    skeleton: the body of the targets; required by avatarposer's FK term.
  """
  if cfg.arch == "avatarposer":
    if skeleton is None:
      raise ValueError(f"{cfg.name}: the FK position loss needs the skeleton "
                       "the targets were computed on")
    terms = avatarposer_terms(outputs, rot6d, skeleton)
  else:
    terms = mlp_terms(cfg, outputs, rot6d, pos)
  total, weights = combine(cfg, terms, log_vars)
  metrics = {"loss": total}
  metrics.update({f"loss/{k}": v for k, v in terms.items()})
  metrics.update({f"weight/{k}": v for k, v in weights.items()})
  return total, metrics


def vqvae_loss(cfg: configs.ModelConfig, outputs: dict[str, Array],
               rot6d: Array) -> tuple[Array, dict[str, Array]]:
  """Stage 1: rotation reconstruction (eq. 1) + codebook + beta * commitment.

  `outputs` is VQVAE's output dict; metrics carry the codebook perplexity and
  usage of the batch.
  """
  recon = distance(outputs["rot6d"], rot6d, cfg.loss_distance)
  total = (recon + outputs["codebook_loss"]
           + cfg.vq_commitment * outputs["commitment_loss"])
  return total, {"loss": total, "loss/recon": recon,
                 "loss/codebook": outputs["codebook_loss"],
                 "loss/commitment": outputs["commitment_loss"],
                 "vq/perplexity": outputs["perplexity"],
                 "vq/usage": outputs["usage"]}
