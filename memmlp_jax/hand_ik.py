"""Hands pinned to the tracked controllers: analytic two-bone IK, per frame.

The model's wrists miss the tracked wrists by centimetres even though those
are its input; a user sees at once when the avatar's hands miss the
controllers. After the model, each arm's shoulder and elbow are rotated so
the wrist reaches the tracked wrist position, and the wrist takes the
tracked orientation:

- the elbow stays in the plane the model put it in (shoulder, elbow, target:
  the model's swivel is kept), on the circle the two bone lengths allow;
- a target beyond the arm's reach first turns the collar bone toward it,
  as far as the excess needs and at most ``MAX_SHRUG`` (a shrug), and is
  then approached along its direction with the arm straight: the arm
  never stretches past its length;
- across tracking loss the pinning fades out (and back in) over
  ``RAMP_SECONDS``, toward the model's own hand, so a lost controller
  neither freezes the hand in the air nor makes it jump.

Unlike the L-BFGS refinement of memmlp_jax/ik.py (which pulls every joint
toward the position branch), only the two arms' shoulder, elbow and wrist
rotations change, in closed form, and the targets are the tracked inputs.
"""

import numpy as np

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib

# (shoulder, elbow, wrist) of the left and right arm.
ARMS = ((16, 18, 20), (17, 19, 21))
RAMP_SECONDS = 0.2
MAX_SHRUG = np.radians(30.0)
_WORLD_DOWN = np.array([0.0, 0.0, -1.0])


def hold_last(values, valid):
  """``values`` (N, ...) with invalid rows replaced by the last valid one.

  Rows before the first valid one take the first valid one; with no valid
  row at all the values are returned unchanged.
  """
  valid = np.asarray(valid, bool)
  if not valid.any():
    return values
  index = np.maximum.accumulate(np.where(valid, np.arange(len(valid)), 0))
  index = np.where(valid[index], index, np.argmax(valid))
  return values[index]


def next_weight(weight, tracked, fps: float, ramp_seconds=RAMP_SECONDS):
  """One frame of the pinning weight: toward 1 while tracked, else 0."""
  step = 1.0 / max(ramp_seconds * fps, 1.0)
  return np.clip(weight + np.where(tracked, step, -step), 0.0, 1.0)


def pin_weights(valid, fps: float, ramp_seconds=RAMP_SECONDS):
  """(N, 2) pinning weights of a sequence from its (N, 2) hand validity.

  Causal, as live streaming computes them: each frame moves the weight one
  ramp step; the first frame starts fully pinned where tracked.
  """
  valid = np.asarray(valid, bool)
  weights = np.zeros(valid.shape)
  weight = valid[0].astype(np.float64)
  for t in range(len(valid)):
    if t:
      weight = next_weight(weight, valid[t], fps, ramp_seconds)
    weights[t] = weight
  return weights


def _normalize(v):
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _blend_rotation(source, target, weight):
  """Rotation ``weight`` of the way from ``source`` to ``target`` (geodesic)."""
  if (weight == 1).all():
    return target
  delta = geometry.matrix_to_axis_angle(np.swapaxes(source, -1, -2) @ target)
  return source @ geometry.axis_angle_to_matrix(weight[..., None] * delta)


def pin_hands(local_rotations, root_translation, target_positions,
              target_rotations, weights, skeleton=skeleton_lib.SMPL_NEUTRAL):
  """Local rotations with the wrists moved onto the targets.

  Args:
    local_rotations: (N, 22, 3, 3) the model's local rotations.
    root_translation: (N, 3) where the body is placed (Z-up world).
    target_positions: (N, 2, 3) tracked left and right wrist positions.
    target_rotations: (N, 2, 3, 3) tracked wrist global rotations.
    weights: (N, 2) how far to pin each hand, 0 (the model's) to 1; rows
      where a weight is 0 may hold anything (NaN included).
    skeleton: the body (its rest offsets give the bone lengths).

  Returns:
    (N, 22, 3, 3) local rotations; only collars, shoulders, elbows and
    wrists change.
  """
  local = np.array(local_rotations, np.float64)
  weights = np.asarray(weights, np.float64)
  global_rotations, positions = geometry.forward_kinematics(
      local, np.asarray(root_translation, np.float64), skeleton.parents,
      skeleton.offsets)
  for side, (s, e, w) in enumerate(ARMS):
    weight = weights[:, side]
    pinned = weight > 0
    shoulder, elbow, wrist = positions[:, s], positions[:, e], positions[:, w]
    target = np.where(pinned[:, None],
                      np.nan_to_num(target_positions[:, side]), wrist)
    target = wrist + weight[:, None] * (target - wrist)
    upper = np.linalg.norm(skeleton.offsets[e])
    lower = np.linalg.norm(skeleton.offsets[w])
    # Out of reach: the collar turns toward the target, by the angle that
    # moves the shoulder about as far as the excess (continuous from 0).
    c = skeleton.parents[s]
    collar = positions[:, c]
    collar_bone = shoulder - collar
    excess = np.linalg.norm(target - shoulder, axis=-1) - upper - lower
    shrug = np.tile(np.eye(3), (len(local), 1, 1))
    if (excess > 0).any():  # skipped when all in reach: live runs per frame
      toward = geometry.matrix_to_axis_angle(geometry.rotation_between(
          collar_bone, target - collar))
      full = np.linalg.norm(toward, axis=-1)
      angle = np.clip(excess / np.linalg.norm(collar_bone, axis=-1), 0.0,
                      np.minimum(MAX_SHRUG, full))
      shrug = geometry.axis_angle_to_matrix(
          toward * (angle / np.maximum(full, 1e-12))[:, None])
    collar_rot = shrug @ global_rotations[:, c]
    shoulder, elbow, wrist = (
        collar + np.einsum("nij,nj->ni", shrug, p - collar)
        for p in (shoulder, elbow, wrist))
    upper_rot, forearm_rot, hand_rot = (
        shrug @ global_rotations[:, j] for j in (s, e, w))
    reach = target - shoulder
    distance = np.clip(np.linalg.norm(reach, axis=-1),
                       abs(upper - lower) + 1e-6, upper + lower)
    along = _normalize(reach)
    # The elbow's side of the reach line: the model's, or down if it had
    # none (a straight arm).
    pole = elbow - shoulder
    pole = pole - np.sum(pole * along, -1, keepdims=True) * along
    down = _WORLD_DOWN - (along @ _WORLD_DOWN)[:, None] * along
    straight = np.linalg.norm(pole, axis=-1, keepdims=True) < 1e-6
    side_dir = _normalize(np.where(straight, down, pole))
    x = (upper ** 2 - lower ** 2 + distance ** 2) / (2 * distance)
    h = np.sqrt(np.maximum(upper ** 2 - x ** 2, 0.0))
    new_elbow = shoulder + along * x[:, None] + side_dir * h[:, None]
    new_wrist = shoulder + along * distance[:, None]

    turn_upper = geometry.rotation_between(elbow - shoulder,
                                           new_elbow - shoulder)
    carried_wrist = shoulder + np.einsum("nij,nj->ni", turn_upper,
                                         wrist - shoulder)
    turn_lower = geometry.rotation_between(carried_wrist - new_elbow,
                                           new_wrist - new_elbow)
    shoulder_rot = turn_upper @ upper_rot
    elbow_rot = turn_lower @ turn_upper @ forearm_rot
    carried_hand = turn_lower @ turn_upper @ hand_rot
    target_rot = np.where(pinned[:, None, None],
                          np.nan_to_num(target_rotations[:, side]),
                          carried_hand)
    hand_rot = _blend_rotation(carried_hand, target_rot, weight)
    keep = ~pinned[:, None, None]
    local[:, c] = np.where(keep, local[:, c], np.swapaxes(
        global_rotations[:, skeleton.parents[c]], -1, -2) @ collar_rot)
    local[:, s] = np.where(keep, local[:, s],
                           np.swapaxes(collar_rot, -1, -2) @ shoulder_rot)
    local[:, e] = np.where(keep, local[:, e],
                           np.swapaxes(shoulder_rot, -1, -2) @ elbow_rot)
    local[:, w] = np.where(keep, local[:, w],
                           np.swapaxes(elbow_rot, -1, -2) @ hand_rot)
  return local


def pin_sequence(rot6d, tracked_rotations, tracked_positions,
                 skeleton=skeleton_lib.SMPL_NEUTRAL, fps: float = 60.0):
  """A predicted sequence with its hands pinned (experiments.predict).

  Args:
    rot6d: (N, 132) predicted local rotations.
    tracked_rotations: (N, 3, 3, 3) tracked head and wrist rotations, NaN
      where lost, for the same frames.
    tracked_positions: (N, 3, 3) their positions.
    skeleton: the body the prediction animates.
    fps: frame rate (for the fade across tracking loss).

  Returns:
    (N, 132) pinned rotations; the body is placed as the metrics place it
    (head on the tracked head, the last tracked head while lost).
  """
  rot6d = np.asarray(rot6d, np.float64)
  local = geometry.rot6d_to_matrix(rot6d.reshape(len(rot6d), -1, 6))
  head = np.asarray(tracked_positions, np.float64)[:, 0]
  head = hold_last(head, np.isfinite(head).all(-1))
  _, fk = geometry.forward_kinematics(local, np.zeros((len(local), 3)),
                                      skeleton.parents, skeleton.offsets)
  root = head - fk[:, skeleton_lib.HEAD]
  hands_rot = np.asarray(tracked_rotations, np.float64)[:, 1:]
  hands_pos = np.asarray(tracked_positions, np.float64)[:, 1:]
  valid = (np.isfinite(hands_pos).all(-1)
           & np.isfinite(hands_rot).all((-1, -2)))
  held_pos = np.stack([hold_last(hands_pos[:, k], valid[:, k])
                       for k in range(2)], 1)
  held_rot = np.stack([hold_last(hands_rot[:, k], valid[:, k])
                       for k in range(2)], 1)
  pinned = pin_hands(local, root, held_pos, held_rot,
                     pin_weights(valid, fps), skeleton)
  return geometry.matrix_to_rot6d(pinned).reshape(len(rot6d), -1)
