"""Inverse-kinematics refinement (docs/design.md §4, optional stage).

The position branch of a multi-head model is usually more accurate than
its rotation branch, but only rotations drive a body. This stage starts from
the rotation branch and runs L-BFGS (optax, 15 iterations as in the paper)
per frame on the 22 local rotations (6D, orthonormalised inside), so that
forward kinematics matches the position branch's joints.

The positions are compared relative to the head, the way the metrics place
a body (FK with zero translation, then the head on the tracked head), so
the objective is exactly the position error the metrics will measure
against the position branch. Leaf joints (head, wrists, feet) move no joint
and keep their rotations; twist about a bone is left where it started.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib

ITERATIONS = 15
CHUNK = 1024  # frames per compiled call; longer inputs are chunked


def _head_relative(rot6d, offsets):
  """(22*6,) -> (22, 3) FK positions relative to the head joint."""
  rotations = geometry.rot6d_to_matrix(rot6d.reshape(-1, 6))
  _, positions = geometry.forward_kinematics(
      rotations, jnp.zeros(3, rot6d.dtype), skeleton_lib.PARENTS, offsets)
  return positions - positions[skeleton_lib.HEAD]


def _solve(rot6d, target, offsets, iterations):
  """L-BFGS on one frame; target: (22, 3) head-relative positions."""
  def loss(x):
    return jnp.sum(jnp.square(_head_relative(x, offsets) - target))

  optimizer = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def body(_, carry):
    x, state = carry
    value, grad = value_and_grad(x, state=state)
    updates, state = optimizer.update(grad, state, x, value=value, grad=grad,
                                      value_fn=loss)
    return optax.apply_updates(x, updates), state

  x, _ = jax.lax.fori_loop(0, iterations, body,
                           (rot6d, optimizer.init(rot6d)))
  return geometry.matrix_to_rot6d(
      geometry.rot6d_to_matrix(x.reshape(-1, 6))).reshape(-1)


@functools.partial(jax.jit, static_argnames=("iterations",))
def _refine_chunk(rot6d, target, head, offsets, iterations):
  relative = target.reshape(target.shape[0], -1, 3) - head[:, None]
  solve = functools.partial(_solve, offsets=offsets, iterations=iterations)
  return jax.vmap(solve)(rot6d, relative)


def refine(rot6d, positions, head_position, skeleton=skeleton_lib.SMPL_NEUTRAL,
           iterations: int = ITERATIONS):
  """Rotations adjusted so that FK matches the predicted positions.

  Args:
    rot6d: (N, 132) rotation-branch output (the start).
    positions: (N, 66) position-branch output (the target).
    head_position: (N, 3) the tracked head, where the metrics put the head.
    skeleton: the body the model's targets were computed on.
    iterations: L-BFGS iterations per frame.

  Returns:
    (N, 132) float32 refined local rotations (orthonormal 6D).
  """
  rot6d = np.asarray(rot6d, np.float32)
  positions = np.asarray(positions, np.float32)
  head_position = np.asarray(head_position, np.float32)
  if not (len(rot6d) == len(positions) == len(head_position)):
    raise ValueError(f"ik.refine: {len(rot6d)} rotation frames, "
                     f"{len(positions)} position frames and "
                     f"{len(head_position)} head frames differ")
  offsets = jnp.asarray(skeleton.offsets, jnp.float32)
  num_frames = len(rot6d)
  if num_frames == 0:
    return rot6d
  # Short inputs pad to a power of two, long ones to whole chunks, so few
  # shapes compile.
  chunk = min(CHUNK, 2 ** int(np.ceil(np.log2(num_frames))))
  padded = -(-num_frames // chunk) * chunk
  def pad(x):
    return np.concatenate([x, np.repeat(x[-1:], padded - num_frames, 0)])
  rot6d, positions, head_position = map(pad, (rot6d, positions, head_position))
  chunks = [
      _refine_chunk(rot6d[i:i + chunk], positions[i:i + chunk],
                    head_position[i:i + chunk], offsets, iterations)
      for i in range(0, padded, chunk)]
  return np.asarray(jnp.concatenate(chunks))[:num_frames]
