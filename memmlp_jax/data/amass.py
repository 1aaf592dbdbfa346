"""AMASS `*_poses.npz` clips on the user's own SMPL-H body model.

AGRoL's convention (docs/design.md §2): the SMPL-H male model with betas = 0;
rest joints = ``J_regressor @ v_template`` (first 22), parents from
``kintree_table``; ``poses[:, :66]`` are the 22 local rotations as axis-angle
(joint 0 the root orientation in AMASS's Z-up world) and ``trans`` the root
translation. Clips at 120 fps keep every 2nd frame, at 60 fps every frame,
at any other integer multiple of 60 every k-th; other rates are resampled to
60 fps (slerp for rotations), never rounded to a stride.
"""

import os
import zipfile

import numpy as np

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import motion as motion_lib

FPS = 60.0
_FRAME_RATE_KEYS = ("mocap_framerate", "mocap_frame_rate")
_MODEL_KEYS = ("v_template", "J_regressor", "kintree_table")


def _open_npz(path, what: str):
  try:
    return np.load(path, allow_pickle=False)
  except FileNotFoundError:
    raise motion_lib.MotionError(path, f"{what} not found") from None
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise motion_lib.MotionError(
        path, f"not a readable {what} (.npz): {e}") from None


def load_body_model(path) -> skeleton_lib.Skeleton:
  """The 22-joint rest skeleton of an SMPL-H ``model.npz`` (betas = 0).

  Args:
    path: the model file, or a folder holding ``male/model.npz`` (as the
      SMPL-H download unpacks) or ``model.npz``.

  Returns:
    A Skeleton with the canonical joint names and parents, offsets in SMPL's
    Y-up body frame (the AMASS root orientation maps it into the Z-up world).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    for candidate in ("male/model.npz", "smplh/male/model.npz", "model.npz"):
      if os.path.isfile(os.path.join(path, candidate)):
        path = os.path.join(path, candidate)
        break
    else:
      raise motion_lib.MotionError(
          path, "folder holds no male/model.npz (the SMPL-H male model)")
  with _open_npz(path, "SMPL-H model") as model:
    missing = [k for k in _MODEL_KEYS if k not in model.files]
    if missing:
      raise motion_lib.MotionError(
          path, f"SMPL-H model lacks {', '.join(missing)} "
          f"(has {', '.join(sorted(model.files))})")
    v_template = np.asarray(model["v_template"], dtype=np.float64)
    regressor = np.asarray(model["J_regressor"], dtype=np.float64)
    kintree = np.asarray(model["kintree_table"])
  j = skeleton_lib.NUM_JOINTS
  if (v_template.ndim != 2 or v_template.shape[1] != 3 or regressor.ndim != 2
      or regressor.shape[0] < j or regressor.shape[1] != len(v_template)):
    raise motion_lib.MotionError(
        path, f"J_regressor {regressor.shape} does not fit v_template "
        f"{v_template.shape}: expected ({j}+, V) and (V, 3)")
  if kintree.ndim != 2 or kintree.shape[0] != 2 or kintree.shape[1] < j:
    raise motion_lib.MotionError(
        path, f"kintree_table has shape {kintree.shape}, expected (2, {j}+)")
  parents = tuple([-1] + [int(p) for p in kintree[0, 1:j]])
  if parents != skeleton_lib.PARENTS:
    raise motion_lib.MotionError(
        path, f"kintree_table parents {parents} are not the SMPL tree "
        f"{skeleton_lib.PARENTS}")
  joints = regressor[:j] @ v_template
  offsets = joints.copy()
  offsets[1:] -= joints[list(parents[1:])]
  return skeleton_lib.Skeleton(skeleton_lib.JOINT_NAMES, parents, offsets)


def ids_from_path(npz_path) -> tuple[str, str]:
  """(clip_id, subject) from AMASS's ``<subset>/<subject>/<name>_poses.npz``.

  E.g. "CMU/01/01_02_poses.npz" -> ("amass/CMU/01/01_02", "amass/CMU/01").
  """
  parts = os.path.normpath(os.fspath(npz_path)).split(os.sep)[-3:]
  name = parts[-1]
  for suffix in ("_poses.npz", ".npz"):
    if name.endswith(suffix):
      name = name[:-len(suffix)]
      break
  subject = "/".join(["amass"] + parts[:-1])
  return f"{subject}/{name}", subject


def _frame_rate(data, path) -> float:
  for key in _FRAME_RATE_KEYS:
    if key in data.files:
      value = np.asarray(data[key])
      if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise motion_lib.MotionError(
            path, f"unknown frame rate: {key} is {value!r}, not a number")
      fps = float(value.reshape(()))
      if not np.isfinite(fps) or fps <= 0:
        raise motion_lib.MotionError(
            path, f"unknown frame rate: {key} = {fps}")
      return fps
  raise motion_lib.MotionError(
      path, f"unknown frame rate: no {' or '.join(_FRAME_RATE_KEYS)} entry")


def _array(data, key: str, path, width: int) -> np.ndarray:
  if key not in data.files:
    raise motion_lib.MotionError(
        path, f"no '{key}' array (has {', '.join(sorted(data.files))})")
  values = np.asarray(data[key], dtype=np.float64)
  if values.ndim != 2 or values.shape[1] < width:
    raise motion_lib.MotionError(
        path, f"'{key}' has shape {values.shape}, expected (frames, "
        f"{width}{'+' if key == 'poses' else ''})")
  bad = ~np.isfinite(values).all(axis=1)
  if bad.any():
    frames = np.flatnonzero(bad)
    raise motion_lib.MotionError(
        path, f"'{key}' holds NaN/inf in {len(frames)} frame(s) (first at "
        f"frame {frames[0]})")
  return values


def to_60fps(rotations: np.ndarray, translation: np.ndarray, fps: float):
  """Rotations (N, J, 3, 3) and translation (N, 3) at ``fps`` -> 60 fps."""
  ratio = fps / FPS
  if abs(ratio - round(ratio)) < 1e-9 and round(ratio) >= 1:
    stride = int(round(ratio))
    return rotations[::stride], translation[::stride]
  return (geometry.slerp_resample(rotations, fps, FPS),
          geometry.linear_resample(translation, fps, FPS))


def load_amass(npz_path, body_model, *, clip_id: str | None = None,
               subject: str | None = None) -> motion_lib.Motion:
  """One AMASS clip as a Motion at 60 fps on the SMPL-H male body.

  Args:
    npz_path: an AMASS ``*_poses.npz`` (keys poses (N, 156), trans (N, 3),
      mocap_framerate, ...).
    body_model: the Skeleton from `load_body_model`, or its model path.
    clip_id: defaults to "amass/<subset>/<subject>/<name>" from the path.
    subject: defaults to "amass/<subset>/<subject>".

  Raises:
    MotionError naming the file: unreadable file, missing or misshapen
    ``poses``/``trans``, NaN/inf values, unknown frame rate, too few frames.
  """
  if not isinstance(body_model, skeleton_lib.Skeleton):
    body_model = load_body_model(body_model)
  default_clip, default_subject = ids_from_path(npz_path)
  with _open_npz(npz_path, "AMASS clip") as data:
    poses = _array(data, "poses", npz_path, 3 * skeleton_lib.NUM_JOINTS)
    trans = _array(data, "trans", npz_path, 3)[:, :3]
    fps = _frame_rate(data, npz_path)
  if len(poses) != len(trans):
    raise motion_lib.MotionError(
        npz_path, f"'poses' has {len(poses)} frames but 'trans' "
        f"{len(trans)}")
  if not len(poses):
    raise motion_lib.MotionError(npz_path, "no frames")
  axis_angle = poses[:, :3 * skeleton_lib.NUM_JOINTS].reshape(
      len(poses), skeleton_lib.NUM_JOINTS, 3)
  rotations, translation = to_60fps(
      geometry.axis_angle_to_matrix(axis_angle), trans, fps)
  motion = motion_lib.Motion(
      local_rotations=rotations, root_translation=translation, fps=FPS,
      clip_id=clip_id or default_clip, subject=subject or default_subject,
      source="amass", skeleton=body_model)
  return motion_lib.validate(motion, npz_path)
