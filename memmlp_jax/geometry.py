"""Rotations and forward kinematics.

Every function takes NumPy or JAX arrays and returns the same kind, batched
over leading dimensions: loaders run them in float64 NumPy, the model and the
metrics in jitted float32 JAX. Matrices act on column vectors.

Conventions (docs/design.md §1):
- 6D is the first two COLUMNS of the matrix, ``[R[:, 0], R[:, 1]]``
  (Zhou et al. 2019), flattened as (r00, r10, r20, r01, r11, r21).
- Quaternions are (w, x, y, z).
- Euler ``order`` names the axes in channel order and composes intrinsically,
  ``R = R_order[0](a0) @ R_order[1](a1) @ R_order[2](a2)`` (BVH channel
  order; scipy's upper-case sequences). ASF/AMC "XYZ" is ``order="ZYX"`` with
  angles (rz, ry, rx).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1e-8


def _xp(*arrays):
  """jax.numpy if any input is a JAX array or tracer, else numpy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _stack_matrix(xp, rows):
  """3x3 matrices from nine (...,) arrays given row by row."""
  return xp.stack([xp.stack(rows[i:i + 3], axis=-1) for i in (0, 3, 6)],
                  axis=-2)


def matrix_to_rot6d(rotations):
  """(..., 3, 3) -> (..., 6): the first two columns, column after column."""
  xp = _xp(rotations)
  return xp.concatenate([rotations[..., :, 0], rotations[..., :, 1]], axis=-1)


def rot6d_to_matrix(rot6d, gram_schmidt: bool = True):
  """(..., 6) -> (..., 3, 3).

  With ``gram_schmidt`` the two columns are orthonormalised (a valid rotation
  for any input); without it they are used as given and the third column is
  their cross product, which is exact for 6D taken from a rotation and keeps
  a network's raw output visible.
  """
  xp = _xp(rot6d)
  a1, a2 = rot6d[..., 0:3], rot6d[..., 3:6]
  if gram_schmidt:
    b1 = a1 / xp.maximum(xp.linalg.norm(a1, axis=-1, keepdims=True), _EPS)
    a2 = a2 - xp.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / xp.maximum(xp.linalg.norm(a2, axis=-1, keepdims=True), _EPS)
  else:
    b1, b2 = a1, a2
  b3 = xp.cross(b1, b2)
  return xp.stack([b1, b2, b3], axis=-1)


def _skew(xp, v):
  x, y, z = v[..., 0], v[..., 1], v[..., 2]
  zero = xp.zeros_like(x)
  return _stack_matrix(xp, [zero, -z, y, z, zero, -x, -y, x, zero])


def axis_angle_to_matrix(axis_angle):
  """(..., 3) rotation vectors -> (..., 3, 3) (Rodrigues)."""
  xp = _xp(axis_angle)
  angle = xp.linalg.norm(axis_angle, axis=-1)[..., None, None]
  small = angle < 1e-6
  safe = xp.where(small, 1.0, angle)
  k = _skew(xp, axis_angle) / safe
  eye = xp.eye(3, dtype=axis_angle.dtype)
  full = eye + xp.sin(safe) * k + (1.0 - xp.cos(safe)) * (k @ k)
  k_raw = _skew(xp, axis_angle)
  taylor = eye + k_raw + 0.5 * (k_raw @ k_raw)
  return xp.where(small, taylor, full)


def quat_to_matrix(quat):
  """(..., 4) quaternions (w, x, y, z), any norm -> (..., 3, 3)."""
  xp = _xp(quat)
  q = quat / xp.maximum(xp.linalg.norm(quat, axis=-1, keepdims=True), _EPS)
  w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  return _stack_matrix(xp, [
      1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
      2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
      2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
  ])


def matrix_to_quat(rotations):
  """(..., 3, 3) -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

  Picks, per matrix, the best-conditioned of the four standard formulas so
  it is accurate near 180 degrees too.
  """
  xp = _xp(rotations)
  m = rotations
  m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
  trace = m00 + m11 + m22
  candidates = xp.stack([
      xp.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2],
                m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
      xp.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22,
                m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
      xp.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1),
      xp.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22], -1),
  ], axis=-2)
  diag = xp.stack([trace, m00, m11, m22], axis=-1)
  best = xp.argmax(diag, axis=-1)
  q = xp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
  q = q / xp.linalg.norm(q, axis=-1, keepdims=True)
  return xp.where(q[..., :1] < 0, -q, q)


def matrix_to_axis_angle(rotations):
  """(..., 3, 3) -> (..., 3) rotation vectors with angle in [0, pi]."""
  xp = _xp(rotations)
  q = matrix_to_quat(rotations)
  w, v = q[..., :1], q[..., 1:]
  sin_half = xp.linalg.norm(v, axis=-1, keepdims=True)
  angle = 2.0 * xp.arctan2(sin_half, w)
  small = sin_half < 1e-7
  scale = xp.where(small, 2.0, angle / xp.where(small, 1.0, sin_half))
  return v * scale


def _axis_matrix(xp, axis: str, angle):
  c, s = xp.cos(angle), xp.sin(angle)
  one, zero = xp.ones_like(angle), xp.zeros_like(angle)
  if axis == "X":
    rows = [one, zero, zero, zero, c, -s, zero, s, c]
  elif axis == "Y":
    rows = [c, zero, s, zero, one, zero, -s, zero, c]
  else:
    rows = [c, -s, zero, s, c, zero, zero, zero, one]
  return _stack_matrix(xp, rows)


def _check_order(order: str) -> str:
  order = order.upper()
  if len(order) != 3 or set(order) - set("XYZ") or len(set(order)) != 3:
    raise ValueError(f"Euler order must be a permutation of XYZ, got {order!r}")
  return order


def euler_to_matrix(angles, order: str, degrees: bool = False):
  """(..., 3) angles in channel order -> (..., 3, 3), intrinsic composition."""
  xp = _xp(angles)
  order = _check_order(order)
  if degrees:
    angles = angles * (np.pi / 180.0)
  result = _axis_matrix(xp, order[0], angles[..., 0])
  for i in (1, 2):
    result = result @ _axis_matrix(xp, order[i], angles[..., i])
  return result


def matrix_to_euler(rotations, order: str, degrees: bool = False):
  """(..., 3, 3) -> (..., 3) angles such that euler_to_matrix inverts it.

  The middle angle lies in [-pi/2, pi/2]; at gimbal lock the third is 0.
  """
  xp = _xp(rotations)
  order = _check_order(order)
  i, j, k = ("XYZ".index(a) for a in order)
  # Sign of the permutation (i, j, k): +1 for cyclic orders XYZ, YZX, ZXY.
  sign = 1.0 if (j - i) % 3 == 1 else -1.0
  m = rotations
  middle = xp.arcsin(xp.clip(sign * m[..., i, k], -1.0, 1.0))
  first = xp.arctan2(-sign * m[..., j, k], m[..., k, k])
  third = xp.arctan2(-sign * m[..., i, j], m[..., i, i])
  locked = xp.abs(sign * m[..., i, k]) > 1.0 - 1e-9
  first_locked = xp.arctan2(sign * m[..., k, j], m[..., j, j])
  first = xp.where(locked, first_locked, first)
  third = xp.where(locked, 0.0, third)
  angles = xp.stack([first, middle, third], axis=-1)
  return angles * (180.0 / np.pi) if degrees else angles


def rotation_between(source, target):
  """Minimal rotation (..., 3, 3) taking direction ``source`` to ``target``."""
  xp = _xp(source, target)
  a = source / xp.linalg.norm(source, axis=-1, keepdims=True)
  b = target / xp.linalg.norm(target, axis=-1, keepdims=True)
  axis = xp.cross(a, b)
  sin = xp.linalg.norm(axis, axis=-1, keepdims=True)
  cos = xp.sum(a * b, axis=-1, keepdims=True)
  angle = xp.arctan2(sin, cos)
  # Opposite directions: any axis orthogonal to a works.
  helper = xp.where(xp.abs(a[..., :1]) < 0.9,
                    xp.asarray([1.0, 0.0, 0.0], dtype=a.dtype),
                    xp.asarray([0.0, 1.0, 0.0], dtype=a.dtype))
  ortho = xp.cross(a, helper)
  ortho = ortho / xp.linalg.norm(ortho, axis=-1, keepdims=True)
  unit_axis = xp.where(sin > 1e-9, axis / xp.maximum(sin, 1e-12), ortho)
  return axis_angle_to_matrix(unit_axis * angle)


def kabsch(source, target, weights=None):
  """Rotation R (3, 3) minimising sum_i w_i |R source_i - target_i|^2.

  ``source`` and ``target`` are (K, 3) point or direction sets (K >= 2, not
  all collinear for a unique answer). NumPy only: used once per skeleton.
  """
  source = np.asarray(source, np.float64)
  target = np.asarray(target, np.float64)
  w = np.ones(len(source)) if weights is None else np.asarray(weights)
  covariance = (target * w[:, None]).T @ source
  u, _, vt = np.linalg.svd(covariance)
  d = np.sign(np.linalg.det(u @ vt))
  return u @ np.diag([1.0, 1.0, d]) @ vt


def _resample_times(num_frames: int, src_fps: float, dst_fps: float):
  if num_frames < 1 or src_fps <= 0 or dst_fps <= 0:
    raise ValueError(
        f"cannot resample {num_frames} frames from {src_fps} to {dst_fps} fps")
  duration = (num_frames - 1) / src_fps
  count = int(np.floor(duration * dst_fps + 1e-6)) + 1
  position = np.arange(count) * (src_fps / dst_fps)
  low = np.minimum(np.floor(position + 1e-9).astype(int), num_frames - 1)
  high = np.minimum(low + 1, num_frames - 1)
  frac = np.clip(position - low, 0.0, 1.0)
  return low, high, frac


def linear_resample(values, src_fps: float, dst_fps: float):
  """Linear interpolation along axis 0 from ``src_fps`` to ``dst_fps``.

  The output starts at frame 0 and covers the same duration; integer ratios
  (120 -> 60 fps) reduce to exact striding.
  """
  values = np.asarray(values)
  low, high, frac = _resample_times(len(values), src_fps, dst_fps)
  frac = frac.reshape((-1,) + (1,) * (values.ndim - 1))
  return values[low] * (1.0 - frac) + values[high] * frac


def slerp_resample(rotations, src_fps: float, dst_fps: float):
  """Spherical interpolation of (N, ..., 3, 3) rotations along axis 0."""
  rotations = np.asarray(rotations)
  low, high, frac = _resample_times(len(rotations), src_fps, dst_fps)
  q0 = matrix_to_quat(rotations[low])
  q1 = matrix_to_quat(rotations[high])
  dot = np.sum(q0 * q1, axis=-1, keepdims=True)
  q1 = np.where(dot < 0, -q1, q1)
  dot = np.clip(np.abs(dot), 0.0, 1.0)
  t = frac.reshape((-1,) + (1,) * (q0.ndim - 1))
  theta = np.arccos(dot)
  sin_theta = np.sin(theta)
  linear = sin_theta < 1e-6
  safe = np.where(linear, 1.0, sin_theta)
  w0 = np.where(linear, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
  w1 = np.where(linear, t, np.sin(t * theta) / safe)
  return quat_to_matrix(w0 * q0 + w1 * q1).astype(rotations.dtype)


def forward_kinematics(local_rotations, root_translation,
                       parents: Sequence[int], offsets):
  """Global rotations and joint positions of a kinematic tree.

  Args:
    local_rotations: (..., J, 3, 3), joint 0 the root's global orientation.
    root_translation: (..., 3); the root sits at ``root_translation +
      offsets[0]``.
    parents: J parent indices, each smaller than its child, root -1.
    offsets: (J, 3) rest offsets of each joint from its parent.

  Returns:
    (global_rotations (..., J, 3, 3), positions (..., J, 3)).
  """
  xp = _xp(local_rotations, root_translation)
  offsets = xp.asarray(offsets, dtype=local_rotations.dtype)
  rotations = [local_rotations[..., 0, :, :]]
  positions = [root_translation + offsets[0]]
  for j in range(1, len(parents)):
    p = parents[j]
    rotations.append(rotations[p] @ local_rotations[..., j, :, :])
    positions.append(positions[p] + rotations[p] @ offsets[j])
  return xp.stack(rotations, axis=-3), xp.stack(positions, axis=-2)
