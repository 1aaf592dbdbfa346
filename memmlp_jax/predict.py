"""Full-body motion from a headset recording or a mocap clip, as BVH.

The library behind experiments/predict.py:

  rotations, positions, truth = predict.load_input(path, conventions)
  body, scale = predict.output_body(truth, height=1.62)
  rot6d, lost = predict.predict(source, rotations, positions, body, scale)
  result = predict.predicted_motion(rot6d, predict.held_head(positions[1:, 0]),
                                    body, "walk")
  predict.write_outputs(result, lost, truth, (rotations[1:], positions[1:]),
                        output="walk.bvh", gif="walk.gif")

The input kind follows its extension: .csv a headset recording
(data/tracking.py); .bvh with a joint map, .amc with its .asf, .npz (AMASS)
with the SMPL-H body model: mocap, whose head and wrists become the tracking
input and whose full body is the ground truth. Input a call cannot use
raises ``InputError``, naming the argument at fault.
"""

import os

import numpy as np

from memmlp_jax import geometry
from memmlp_jax import metrics
from memmlp_jax import pretrained
from memmlp_jax import render
from memmlp_jax import rollout
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import bvh_writer
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import tracking
from memmlp_jax.models import factory

MOCAP_EXTENSIONS = (".bvh", ".amc", ".npz")


class InputError(ValueError):
  """Input the call cannot use; ``argument`` names the argument at fault.

  Its text starts with that name: "bvh_map is needed for a .bvh input ...".
  """

  def __init__(self, argument: str, message: str):
    super().__init__(f"{argument} {message}")
    self.argument = argument


def load_mocap(path: str, *, bvh_map: str | None = None,
               asf: str | None = None, amc_fps: float = 120.0,
               body_model: str | None = None) -> motion_lib.Motion:
  """A mocap clip on the canonical body at 60 fps, by file extension.

  bvh_map: a joint-map JSON or a shipped map's name, for .bvh; asf: the
  skeleton of an .amc (recorded at amc_fps); body_model: the SMPL-H
  model.npz of an AMASS .npz.
  """
  extension = os.path.splitext(path)[1].lower()
  name = os.path.splitext(os.path.basename(path))[0]
  ids = {"clip_id": f"input/{name}", "subject": "input/user",
         "source": "input"}
  if extension == ".bvh":
    from memmlp_jax.data import bvh  # pylint: disable=g-import-not-at-top
    if not bvh_map:
      raise InputError("bvh_map", "is needed for a .bvh input (a joint-map "
                       f"JSON or one of {sorted(bvh.PRESETS)})")
    return bvh.load_bvh(path, bvh.load_joint_map(bvh_map), **ids)
  if extension == ".amc":
    from memmlp_jax.data import asfamc  # pylint: disable=g-import-not-at-top
    if not asf:
      raise InputError("asf", "is needed for an .amc input (its skeleton "
                       "file)")
    return asfamc.load_amc(asf, path, fps=amc_fps, **ids)
  from memmlp_jax.data import amass  # pylint: disable=g-import-not-at-top
  if not body_model:
    raise InputError("body_model", "is needed for an AMASS .npz input (the "
                     "SMPL-H model.npz)")
  return amass.load_amass(path, amass.load_body_model(body_model))


def load_input(path: str, conventions: tracking.Conventions | None, *,
               height: float | None = None, **mocap_options):
  """(rotations (N,3,3,3), positions (N,3,3), ground truth Motion or None).

  conventions: the engine's, for a .csv recording; height applies to
  recordings only; mocap_options: ``load_mocap``'s keyword arguments.
  """
  extension = os.path.splitext(path)[1].lower()
  if extension == ".csv":
    recording = tracking.load_tracking_csv(path, conventions)
    return recording.rotations, recording.positions, None
  if extension not in MOCAP_EXTENSIONS:
    raise InputError("input", f"{path}: unknown extension {extension!r}; "
                     "expected .csv, .bvh, .amc or .npz")
  if height is not None:
    raise InputError("height", "applies to .csv recordings; mocap input is "
                     "already on the canonical body")
  truth = load_mocap(path, **mocap_options)
  rotations, positions = truth.global_pose()
  sparse = list(skeleton_lib.SPARSE_JOINTS)
  return rotations[:, sparse], positions[:, sparse], truth


def held_head(head_positions: np.ndarray) -> np.ndarray:
  """Tracked head per frame, lost frames holding the last tracked position.

  The rollout holds the last valid input the same way (the first frames
  before any tracking take the first tracked position).
  """
  valid = np.isfinite(head_positions).all(axis=-1)
  index = np.where(valid, np.arange(len(valid)), 0)
  index = np.maximum.accumulate(index)
  index = np.where(valid[index], index, np.argmax(valid))
  return head_positions[index]


def predicted_motion(rot6d: np.ndarray, head_positions: np.ndarray,
                     skeleton: skeleton_lib.Skeleton, name: str):
  """The predicted clip, its root placed so the head meets the tracking."""
  local = geometry.rot6d_to_matrix(
      np.asarray(rot6d, np.float64).reshape(len(rot6d), -1, 6))
  placed = metrics.head_aligned_positions(
      np.asarray(rot6d, np.float64), head_positions, skeleton)
  # Root joint position minus its rest offset is the root translation.
  translation = placed[:, 0] - skeleton.offsets[0]
  return motion_lib.Motion(local, translation, tracking.FPS,
                           f"prediction/{name}", "prediction/user",
                           "prediction", skeleton)


def predict(source: str, rotations, positions, body, scale: float):
  """Runs the model over the sparse signals; returns (rot6d (N-1,132), lost).

  ``source``: a training run or a release file (``pretrained.restore``).
  Positions are divided by ``scale`` so the model sees a body of the size
  it was trained on (``body`` unscaled).
  """
  cfg, params = pretrained.restore(source)
  model, variables = factory.build(cfg), {"params": params}
  sparse = motion_lib.sparse_from_tracking(rotations, positions / scale)
  state = rollout.init_state(cfg, 1, skeleton=body.scaled(1.0 / scale))
  _, poses = rollout.rollout(model, variables, state, sparse[None])
  return np.asarray(poses["rot6d"][0]), np.asarray(poses["lost"][0])


def output_body(truth, *, body_model: str | None = None,
                height: float | None = None):
  """(body to animate, its scale from the base body).

  Mocap keeps the body its loader put it on. A recording animates the
  canonical body (or body_model's), scaled to ``height`` (the standing head
  height in metres) when given.
  """
  if truth is not None:
    return truth.skeleton, 1.0
  base = skeleton_lib.SMPL_NEUTRAL
  if body_model:
    from memmlp_jax.data import amass  # pylint: disable=g-import-not-at-top
    base = amass.load_body_model(body_model)
  scale = height / base.height() if height else 1.0
  return base.scaled(scale), scale


def write_outputs(result: motion_lib.Motion, lost, truth, devices, *,
                  output: str, npz: str | None = None,
                  gif: str | None = None, units: str = "m",
                  order: str = "ZYX", up: str = "y") -> None:
  """The BVH (``output``; units, order, up as bvh_writer), npz and gif.

  ``devices``: the tracked (rotations, positions) per output frame, drawn
  as markers in the GIF (next to ``truth`` when it is not None).
  """
  bvh_writer.write_bvh(output, result, units=units, order=order, up=up)
  _, joints = result.global_pose()
  body = result.skeleton
  if npz:
    np.savez(npz,
             local_rotations=result.local_rotations.astype(np.float32),
             positions=joints.astype(np.float32),
             root_translation=result.root_translation.astype(np.float32),
             lost=lost, fps=result.fps, joint_names=np.array(body.names),
             parents=np.array(body.parents), offsets=body.offsets)
  if gif:
    sequences, titles = [joints], ["prediction"]
    if truth is not None:
      sequences.append(truth.global_pose()[1][1:])
      titles.append("ground truth")
    render.animate(sequences, body.parents, gif, devices=devices,
                   joint_names=body.names, titles=titles)
