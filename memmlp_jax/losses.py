"""Training losses (docs/design.md §3, paper 3.3) and their weighting.

Mem-MLP family (cfg.arch == "mlp"), on whole windows (B, T, .):
  rot        distance of 6D rotations, all 22 joints            (eq. 1)
  rot_vel    distance of their frame-to-frame differences         (eq. 2)
  pos        distance of global joint positions                   (eq. 3)
  lower_vel  distance of frame-to-frame position differences of the
             lower-body joints (skeleton.LOWER)                   (eq. 4)
The position terms exist only when the model predicts positions
(cfg.multi_head). "distance" is mean |d| (l1), mean d^2 (l2) or the mean
per-joint Euclidean norm of d (l2norm: AGRoL's own MLP loss). Switches of the
recipe study (docs/training.md): cfg.rot_vel_loss=False drops eq. 2 (AGRoL's
own recipe); cfg.last_frame_share moves that share of each term's weight onto
the window's last frame, the one the online rollout outputs; cfg.fk_loss adds
  fk_pos     L1 of root-relative forward-kinematics positions of the
             predicted rotations (AvatarPoser's FK term; what MPJPE scores)

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

import functools
from typing import Any

import jax
import jax.numpy as jnp

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.models import configs

Array = jax.Array
TERMS = ("rot", "rot_vel", "pos", "lower_vel")
AVATARPOSER_WEIGHTS = {"root_rot": 0.02, "rot": 1.0, "fk_pos": 1.0}


def distance(pred: Array, target: Array, kind: str = "l1", group: int = 1,
             last_share: float = 0.0) -> Array:
  """Mean distance of (B, T, C) arrays (any shape when last_share is 0).

  group: features per joint (6 for 6D, 3 for positions), the vectors whose
    norm l2norm takes. last_share: weight of the last frame (axis 1) in the
    mean over frames; the other frames share the rest equally.
  """
  diff = pred - target
  if kind == "l1":
    error = jnp.abs(diff)
  elif kind == "l2":
    error = diff * diff
  else:
    # A norm whose gradient is 0, not NaN, where a vector's error is exactly
    # 0 (the root-relative pelvis position always is).
    squared = jnp.sum(jnp.square(
        diff.reshape(diff.shape[:-1] + (-1, group))), axis=-1)
    positive = squared > 0
    error = jnp.where(positive,
                      jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
  if not last_share:
    return jnp.mean(error)
  per_frame = jnp.mean(error.reshape(error.shape[:2] + (-1,)), axis=(0, 2))
  return ((1.0 - last_share) * jnp.mean(per_frame[:-1])
          + last_share * per_frame[-1])


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


def term_names(cfg: configs.ModelConfig) -> tuple[str, ...]:
  """The loss terms an MLP-family model's config switches on, in order."""
  names = ("rot",) + (("rot_vel",) if cfg.rot_vel_loss else ())
  if cfg.predicts_positions:
    names += ("pos", "lower_vel")
  names += ("fk_pos",) if cfg.fk_loss else ()
  return names + (("output_vel",) if cfg.output_vel_loss else ())


def mlp_terms(cfg: configs.ModelConfig, outputs: dict[str, Any],
              rot6d: Array, pos: Array,
              skeleton: skeleton_lib.Skeleton | None = None
              ) -> dict[str, Array]:
  """The loss terms of an MLP-family model; targets (B, T, 132), (B, T, 66).

  `skeleton` (the targets' body) is needed only by cfg.fk_loss.
  """
  measure = functools.partial(distance, kind=cfg.loss_distance,
                              last_share=cfg.last_frame_share)
  pred_rot = outputs["rot6d"]
  terms = {"rot": measure(pred_rot, rot6d, group=6)}
  if cfg.rot_vel_loss:
    terms["rot_vel"] = measure(velocity(pred_rot), velocity(rot6d), group=6)
  if cfg.predicts_positions:
    pred_pos = outputs["pos"]
    terms["pos"] = measure(pred_pos, pos, group=3)
    lower = lambda x: lower_body(x).reshape(x.shape[:2] + (-1,))
    terms["lower_vel"] = measure(velocity(lower(pred_pos)),
                                 velocity(lower(pos)), group=3)
  if cfg.fk_loss:
    if skeleton is None:
      raise ValueError(f"{cfg.name}: fk_loss needs the skeleton the targets "
                       "were computed on")
    flat = lambda x: x.reshape(x.shape[:2] + (-1,))
    terms["fk_pos"] = distance(flat(fk_positions(pred_rot, skeleton)),
                               flat(fk_positions(rot6d, skeleton)),
                               last_share=cfg.last_frame_share)
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


def output_velocity(now: Array, before: Array, target_now: Array,
                    target_before: Array, valid: Array,
                    skeleton: skeleton_lib.Skeleton) -> Array:
  """L1 of the online output's FK-position velocity against the truth's.

  now, before: (B, 132) the output frame and the (stop-gradient) output one
  frame earlier; targets alike; valid: (B,) False where there was no
  earlier output (a clip's first frame).
  """
  moved = fk_positions(now, skeleton) - fk_positions(before, skeleton)
  truth = (fk_positions(target_now, skeleton)
           - fk_positions(target_before, skeleton))
  error = jnp.mean(jnp.abs(moved - truth), axis=(-2, -1))
  weight = valid.astype(error.dtype)
  return jnp.sum(error * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def init_log_vars(cfg: configs.ModelConfig) -> dict[str, Array]:
  """Initial learned log-variances s_i = 0 (weight 1); {} when not learned."""
  if cfg.arch != "mlp" or cfg.loss_weighting != "learned":
    return {}
  return {name: jnp.zeros((), jnp.float32) for name in term_names(cfg)}


def combine(cfg: configs.ModelConfig, terms: dict[str, Array],
            log_vars: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
  """(total loss, the weight each term got)."""
  if cfg.arch == "avatarposer":
    weights = {k: jnp.float32(AVATARPOSER_WEIGHTS.get(k, 1.0)) for k in terms}
    return sum(weights[k] * terms[k] for k in terms), weights
  if cfg.loss_weighting == "learned":
    if set(log_vars) != set(terms):
      raise ValueError(f"{cfg.name}: log_vars {sorted(log_vars)} do not match "
                       f"loss terms {sorted(terms)}; use init_log_vars(cfg)")
    weights = {k: jnp.exp(-log_vars[k]) for k in terms}
    total = sum(weights[k] * terms[k] + log_vars[k] for k in terms)
    return total, weights
  # The FK term, an addition to the paper's four, has weight 1.
  fixed = {**dict(zip(TERMS, cfg.loss_weights)), "fk_pos": 1.0,
           "output_vel": 1.0}
  weights = {k: jnp.float32(fixed[k]) for k in terms}
  return sum(weights[k] * terms[k] for k in terms), weights


def model_loss(cfg: configs.ModelConfig, outputs: dict[str, Any],
               rot6d: Array, pos: Array, log_vars: dict[str, Array],
               skeleton: skeleton_lib.Skeleton | None = None,
               extra_terms: dict[str, Array] | None = None
               ) -> tuple[Array, dict[str, Array]]:
  """Total training loss and metrics {"loss", "loss/<term>", "weight/<term>"}.

  Args:
    cfg: the model's config.
    outputs: the model's output dict.
    rot6d: target rotations (B, T, 132) of the window.
    pos: target global positions (B, T, 66) of the window.
    log_vars: learned log-variances (init_log_vars), {} for fixed weights.
    skeleton: the body of the targets; required by avatarposer's FK term.
    extra_terms: terms the caller computed (output_vel needs the model's
      previous output), combined like the others.
  """
  if cfg.arch == "avatarposer":
    if skeleton is None:
      raise ValueError(f"{cfg.name}: the FK position loss needs the skeleton "
                       "the targets were computed on")
    terms = avatarposer_terms(outputs, rot6d, skeleton)
  else:
    terms = mlp_terms(cfg, outputs, rot6d, pos, skeleton)
  terms.update(extra_terms or {})
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
