"""VMC bones: Unity's frame and HumanBodyBones; OSC bytes; bad messages."""

import numpy as np
import pytest
from pythonosc import osc_message_builder

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax import vmc

BODY = skeleton_lib.SMPL_NEUTRAL
# Unity's axes (x right, y up, z forward, left-handed) of the Z-up world.
WORLD_TO_UNITY = np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])


def _random_body(rng, frames=5):
  local = geometry.axis_angle_to_matrix(rng.normal(scale=0.5,
                                                   size=(frames, 22, 3)))
  return local, rng.normal(size=(frames, 3))


def _unity_fk(positions, quaternions):
  """World positions as Unity computes them from local bone transforms."""
  rotations = geometry.quat_to_matrix(quaternions[..., [3, 0, 1, 2]])
  world_rot, world_pos = [rotations[:, 0]], [positions[:, 0]]
  for j in range(1, 22):
    p = BODY.parents[j]
    world_pos.append(world_pos[p] + np.einsum("nij,nj->ni", world_rot[p],
                                              positions[:, j]))
    world_rot.append(world_rot[p] @ rotations[:, j])
  return np.stack(world_pos, 1)


def test_bones_place_every_joint_where_the_body_has_it_in_unity_axes():
  local, root = _random_body(np.random.default_rng(0))
  positions, quaternions = vmc.bones_from_body(local, root, BODY)
  _, joints = geometry.forward_kinematics(local, root, BODY.parents,
                                          BODY.offsets)
  np.testing.assert_allclose(_unity_fk(positions, quaternions),
                             joints @ WORLD_TO_UNITY.T, atol=1e-12)


def test_rest_pose_facing_unity_forward_is_identity_with_mirrored_offsets():
  local = np.tile(np.eye(3), (22, 1, 1))
  local[0] = vmc.REST_ROOT_ROTATION
  positions, quaternions = vmc.bones_from_body(local, np.zeros(3), BODY)
  np.testing.assert_allclose(quaternions, np.tile([0, 0, 0, 1.0], (22, 1)),
                             atol=1e-12)
  # The left upper arm hangs off the body's left, Unity's -x.
  left_arm = vmc.BONE_NAMES.index("LeftUpperArm")
  assert positions[left_arm, 0] < -0.05
  np.testing.assert_allclose(positions[1:], BODY.offsets[1:] * [-1, 1, 1])
  # The body faces Unity's +z: the toes are ahead of the ankles.
  assert positions[vmc.BONE_NAMES.index("LeftToes"), 2] > 0.05


def test_bones_convert_back_to_the_body():
  local, root = _random_body(np.random.default_rng(1))
  positions, quaternions = vmc.bones_from_body(local, root, BODY)
  back, back_root, offsets = vmc.body_from_bones(positions, quaternions, BODY)
  np.testing.assert_allclose(back, local, atol=1e-12)
  np.testing.assert_allclose(back_root, root, atol=1e-12)
  np.testing.assert_allclose(offsets[:, 1:], np.broadcast_to(
      BODY.offsets[1:], offsets[:, 1:].shape), atol=1e-12)


def test_answer_bytes_decode_with_python_osc_in_vmc_order():
  rng = np.random.default_rng(2)
  positions, quaternions = rng.normal(size=(22, 3)), rng.normal(size=(22, 4))
  messages = vmc.parse(vmc.answer(positions, quaternions, 12.5, False))
  addresses = [a for a, _ in messages]
  assert addresses == ([vmc.ROOT] + [vmc.BONE] * 22 + [vmc.OK, vmc.TIME])
  assert [args[0] for _, args in messages[1:23]] == list(vmc.BONE_NAMES)
  sent = np.concatenate([positions, quaternions], -1).astype(np.float32)
  np.testing.assert_array_equal(
      np.array([args[1:] for _, args in messages[1:23]], np.float32), sent)
  assert messages[23][1] == (1, 3, 0, 0) and messages[24][1] == (12.5,)


def _message(address, *args):
  builder = osc_message_builder.OscMessageBuilder(address=address)
  for a in args:
    builder.add_arg(a)
  return builder.build().dgram


_ANSWER = vmc.answer(np.zeros((22, 3)), np.zeros((22, 4)), 1.0, True)


@pytest.mark.parametrize("datagram", [b"", b"hello", b"#bundle\0\0\0",
                                      _ANSWER[:100], _ANSWER[:-5]])
def test_garbage_is_refused_as_garbage(datagram):
  with pytest.raises(vmc.MalformedPacket) as raised:
    vmc.parse(datagram)
  assert raised.value.reason == "garbage"


@pytest.mark.parametrize("args, reason", [
    (("h", 1.0, 2.0, 3.0), "bad_arguments"),
    ((1.0,) * 8, "bad_arguments"),
    (("h", 0.0, 1.6, 0.0, 0.0, 0.0, 0.0, True), "bad_arguments"),
    (("h", float("nan"), 1.6, 0.0, 0.0, 0.0, 0.0, 1.0), "non_finite"),
    (("h", 0.0, 1.6, 0.0, 0.0, 0.0, 0.0, 0.0), "non_finite"),
])
def test_bad_device_messages_name_their_reason(args, reason):
  with pytest.raises(vmc.MalformedPacket) as raised:
    vmc.device_pose(vmc.HMD, args)
  assert raised.value.reason == reason
