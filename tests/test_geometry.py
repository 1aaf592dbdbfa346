"""Rotations and FK, cross-checked against scipy, in NumPy and under jit."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib

ORDERS = ["".join(p) for p in itertools.permutations("XYZ")]


@pytest.fixture(name="rots")
def _rots():
  return Rotation.random(64, random_state=0)


def test_rot6d_is_first_two_columns(rots):
  m = rots.as_matrix()
  six = geometry.matrix_to_rot6d(m)
  np.testing.assert_allclose(six[:, :3], m[:, :, 0])
  np.testing.assert_allclose(six[:, 3:], m[:, :, 1])


@pytest.mark.parametrize("gram_schmidt", [True, False])
def test_rot6d_roundtrip(rots, gram_schmidt):
  m = rots.as_matrix()
  back = geometry.rot6d_to_matrix(geometry.matrix_to_rot6d(m), gram_schmidt)
  np.testing.assert_allclose(back, m, atol=1e-12)


def test_rot6d_gram_schmidt_makes_a_rotation():
  raw = np.random.default_rng(0).normal(size=(32, 6))
  m = geometry.rot6d_to_matrix(raw)
  np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2),
                             np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)
  # The first column keeps the first input direction.
  np.testing.assert_allclose(
      m[:, :, 0], raw[:, :3] / np.linalg.norm(raw[:, :3], axis=-1,
                                              keepdims=True), atol=1e-12)


def test_axis_angle_matches_scipy(rots):
  aa = rots.as_rotvec()
  np.testing.assert_allclose(geometry.axis_angle_to_matrix(aa),
                             rots.as_matrix(), atol=1e-12)
  np.testing.assert_allclose(geometry.matrix_to_axis_angle(rots.as_matrix()),
                             aa, atol=1e-9)


def test_axis_angle_near_zero_and_pi():
  aa = np.array([[0.0, 0.0, 0.0], [1e-9, 0.0, 0.0], [np.pi - 1e-7, 0, 0],
                 [0.0, 0.0, np.pi]])
  np.testing.assert_allclose(geometry.axis_angle_to_matrix(aa),
                             Rotation.from_rotvec(aa).as_matrix(), atol=1e-9)
  back = geometry.matrix_to_axis_angle(geometry.axis_angle_to_matrix(aa))
  np.testing.assert_allclose(geometry.axis_angle_to_matrix(back),
                             Rotation.from_rotvec(aa).as_matrix(), atol=1e-9)


def test_quaternion_matches_scipy(rots):
  xyzw = rots.as_quat()
  wxyz = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=-1)
  np.testing.assert_allclose(geometry.quat_to_matrix(wxyz), rots.as_matrix(),
                             atol=1e-12)
  q = geometry.matrix_to_quat(rots.as_matrix())
  wxyz = np.where(wxyz[:, :1] < 0, -wxyz, wxyz)
  np.testing.assert_allclose(q, wxyz, atol=1e-9)


@pytest.mark.parametrize("order", ORDERS)
def test_euler_matches_scipy(rots, order):
  angles = np.random.default_rng(1).uniform(-180, 180, size=(64, 3))
  expected = Rotation.from_euler(order, angles, degrees=True).as_matrix()
  np.testing.assert_allclose(
      geometry.euler_to_matrix(angles, order, degrees=True), expected,
      atol=1e-12)
  back = geometry.matrix_to_euler(rots.as_matrix(), order)
  np.testing.assert_allclose(geometry.euler_to_matrix(back, order),
                             rots.as_matrix(), atol=1e-9)


@pytest.mark.parametrize("order", ["XYZ", "ZYX", "YXZ"])
def test_euler_gimbal_lock_roundtrip(order):
  angles = np.array([[0.3, np.pi / 2, -0.4], [1.0, -np.pi / 2, 0.5]])
  m = geometry.euler_to_matrix(angles, order)
  back = geometry.matrix_to_euler(m, order)
  np.testing.assert_allclose(geometry.euler_to_matrix(back, order), m,
                             atol=1e-7)


def test_euler_rejects_bad_order():
  with pytest.raises(ValueError, match="permutation"):
    geometry.euler_to_matrix(np.zeros(3), "XXY")


def test_rotation_between_and_kabsch():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(2, 16, 3))
  r = geometry.rotation_between(a, b)
  b_unit = b / np.linalg.norm(b, axis=-1, keepdims=True)
  a_unit = a / np.linalg.norm(a, axis=-1, keepdims=True)
  np.testing.assert_allclose(np.einsum("nij,nj->ni", r, a_unit), b_unit,
                             atol=1e-12)
  # Opposite directions still give a proper rotation.
  r = geometry.rotation_between(np.array([1.0, 0, 0]), np.array([-1.0, 0, 0]))
  np.testing.assert_allclose(r @ [1.0, 0, 0], [-1.0, 0, 0], atol=1e-12)
  truth = Rotation.random(random_state=3).as_matrix()
  points = rng.normal(size=(5, 3))
  np.testing.assert_allclose(geometry.kabsch(points, points @ truth.T), truth,
                             atol=1e-12)


def test_slerp_matches_scipy():
  keys = Rotation.random(11, random_state=4)
  m = keys.as_matrix()
  out = geometry.slerp_resample(m, src_fps=50.0, dst_fps=60.0)
  times = np.arange(len(out)) / 60.0
  assert times[-1] <= 10 / 50.0 + 1e-9 and len(out) == 13
  expected = Slerp(np.arange(11) / 50.0, keys)(times).as_matrix()
  np.testing.assert_allclose(out, expected, atol=1e-9)
  # An integer ratio is plain striding.
  np.testing.assert_allclose(geometry.slerp_resample(m, 120, 60), m[::2],
                             atol=1e-12)
  x = np.arange(10.0)[:, None]
  np.testing.assert_allclose(geometry.linear_resample(x, 30, 60)[:, 0],
                             np.arange(19) / 2.0)


def test_forward_kinematics_matches_loop():
  skel = skeleton_lib.SMPL_NEUTRAL
  rng = np.random.default_rng(5)
  local = Rotation.random(3 * 22, random_state=6).as_matrix().reshape(
      3, 22, 3, 3)
  trans = rng.normal(size=(3, 3))
  glob, pos = geometry.forward_kinematics(local, trans, skel.parents,
                                          skel.offsets)
  for f in range(3):
    g = [None] * 22
    p = [None] * 22
    for j, parent in enumerate(skel.parents):
      if parent < 0:
        g[j], p[j] = local[f, j], trans[f] + skel.offsets[0]
      else:
        g[j] = g[parent] @ local[f, j]
        p[j] = p[parent] + g[parent] @ skel.offsets[j]
    np.testing.assert_allclose(glob[f], np.stack(g), atol=1e-12)
    np.testing.assert_allclose(pos[f], np.stack(p), atol=1e-12)
  rest = geometry.forward_kinematics(
      np.broadcast_to(np.eye(3), (22, 3, 3)), np.zeros(3), skel.parents,
      skel.offsets)[1]
  np.testing.assert_allclose(rest, skel.rest_positions(), atol=1e-12)


def test_jax_jit_and_vmap_agree_with_numpy(rots):
  m = rots.as_matrix().astype(np.float32)
  six = geometry.matrix_to_rot6d(m)
  jitted = jax.jit(geometry.rot6d_to_matrix)(jnp.asarray(six))
  assert isinstance(jitted, jax.Array)
  np.testing.assert_allclose(np.asarray(jitted), m, atol=1e-5)
  aa = jax.vmap(geometry.matrix_to_axis_angle)(jnp.asarray(m))
  np.testing.assert_allclose(np.asarray(aa), rots.as_rotvec(), atol=1e-4)
  skel = skeleton_lib.SMPL_NEUTRAL
  local = jnp.asarray(np.broadcast_to(m[:22], (4, 22, 3, 3)))
  fk = jax.jit(lambda r, t: geometry.forward_kinematics(
      r, t, skel.parents, skel.offsets))
  g, p = fk(local, jnp.zeros((4, 3)))
  g_np, p_np = geometry.forward_kinematics(np.asarray(local, np.float64),
                                           np.zeros((4, 3)), skel.parents,
                                           skel.offsets)
  np.testing.assert_allclose(np.asarray(p), p_np, atol=1e-5)
  np.testing.assert_allclose(np.asarray(g), g_np, atol=1e-5)
  euler = jax.jit(lambda r: geometry.matrix_to_euler(r, "ZXY"))(jnp.asarray(m))
  np.testing.assert_allclose(
      geometry.euler_to_matrix(np.asarray(euler, np.float64), "ZXY"), m,
      atol=1e-5)
