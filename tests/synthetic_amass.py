"""Small AMASS clips and an SMPL-H model file with the real keys and shapes.

AMASS and SMPL-H are licensed, so tests write look-alikes: the model's
``J_regressor`` picks one planted vertex per joint, so the rest joints it
yields are known independently of the loader's arithmetic.
"""

import os

import numpy as np

from memmlp_jax import skeleton as skeleton_lib

NUM_VERTICES = 6890
NUM_SMPLH_JOINTS = 52


def smplh_parents() -> np.ndarray:
  """SMPL-H's 52 parents: the 22 body joints, then 15 finger joints a hand."""
  parents = [2**32 - 1] + list(skeleton_lib.PARENTS[1:])
  for wrist in (20, 21):
    for _ in range(5):
      parents += [wrist, len(parents), len(parents) + 1]
  return np.array(parents, dtype=np.int64)


def rest_joints() -> np.ndarray:
  """(52, 3): a slightly taller SMPL body, finger joints anywhere."""
  rng = np.random.default_rng(7)
  body = skeleton_lib.SMPL_NEUTRAL.rest_positions() * 1.04
  return np.concatenate([body, rng.normal(size=(30, 3)) * 0.1])


def write_body_model(path, *, drop=(), parents=None):
  """An SMPL-H-shaped model.npz whose rest joints are `rest_joints()`."""
  rng = np.random.default_rng(0)
  v_template = rng.normal(size=(NUM_VERTICES, 3)) * 0.3
  planted = np.arange(NUM_SMPLH_JOINTS) * 100
  v_template[planted] = rest_joints()
  regressor = np.zeros((NUM_SMPLH_JOINTS, NUM_VERTICES))
  regressor[np.arange(NUM_SMPLH_JOINTS), planted] = 1.0
  kintree = np.stack([smplh_parents() if parents is None else parents,
                      np.arange(NUM_SMPLH_JOINTS)])
  arrays = {
      "v_template": v_template, "J_regressor": regressor,
      "kintree_table": kintree,
      "weights": np.full((NUM_VERTICES, NUM_SMPLH_JOINTS),
                         1.0 / NUM_SMPLH_JOINTS),
      "f": rng.integers(0, NUM_VERTICES, size=(13776, 3)),
      "shapedirs": np.zeros((NUM_VERTICES, 3, 16)),
  }
  os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
  np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
  return path


def clip_arrays(num_frames: int, fps: float = 120.0, seed: int = 0) -> dict:
  """AMASS clip arrays: smooth random body rotations, a walk along +x."""
  rng = np.random.default_rng(seed)
  t = np.arange(num_frames)[:, None] / fps
  phase = rng.uniform(0, 2 * np.pi, size=156)
  poses = 0.3 * np.sin(2 * np.pi * 0.8 * t + phase)
  poses[:, :3] = [np.pi / 2, 0.0, 0.0]  # upright: SMPL's Y up -> world Z up
  trans = np.concatenate([1.2 * t, 0 * t, 0.95 + 0 * t], axis=1)
  return {
      "poses": poses, "trans": trans,
      "mocap_framerate": np.array(fps), "betas": np.zeros(16),
      "gender": np.array("male"), "dmpls": np.zeros((num_frames, 8)),
  }


def write_clip(path, num_frames: int = 40, fps: float = 120.0, seed: int = 0,
               drop=(), **overrides):
  """Writes an AMASS-style ``*_poses.npz``; `overrides` replace arrays."""
  arrays = clip_arrays(num_frames, fps, seed)
  arrays.update(overrides)
  os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
  np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
  return path
