r"""Full-body motion from a headset recording or a mocap clip, as BVH.

  python -m experiments.predict --workdir=RUN --input=REC.csv \
      --output=OUT.bvh [--npz=OUT.npz] [--gif=OUT.gif] [--height=1.62]

The input kind follows its extension:
- .csv: a headset recording (memmlp_jax/data/tracking.py; --csv_* flags give
  the engine's conventions, default Unity's);
- .bvh with --bvh_map (a joint-map JSON), .amc with --asf, .npz (AMASS) with
  --body_model: mocap, whose head and wrists become the tracking input and
  whose full body is the ground truth drawn next to the prediction.

The output is the predicted body (a recording animates the canonical body,
or --body_model's, scaled by --height; mocap keeps its loader's body), one
frame per input frame after the first, at 60 fps, its root placed so the
head meets the tracked head. Lost tracking (NaN or flagged samples) follows
memmlp_jax.rollout: the last tracked input is held until tracking returns.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from memmlp_jax import checkpoints
from memmlp_jax import geometry
from memmlp_jax import hand_ik
from memmlp_jax import host_memory
from memmlp_jax import metrics
from memmlp_jax import rollout
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax import render
from memmlp_jax.data import bvh_writer
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import tracking
from memmlp_jax.models import factory

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training run to predict with.")
flags.DEFINE_string("input", None, "Recording (.csv) or mocap (.bvh, .amc, "
                    ".npz) to predict from.")
flags.DEFINE_string("output", None, "BVH file to write.")
flags.DEFINE_string("npz", None, "Optional .npz of the prediction (local "
                    "rotations, joint positions, root translation, lost).")
flags.DEFINE_string("gif", None, "Optional animated GIF of the prediction "
                    "(next to the ground truth for mocap input).")
flags.DEFINE_float("height", None, "Recordings only: the user's standing "
                   "head height above the floor in metres (about eye level, "
                   "what the headset reads when standing upright); the body's "
                   "head-to-feet height (1.496 m for the canonical body) is "
                   "scaled to it.")
flags.DEFINE_string("bvh_map", None, "Joint-map JSON for a .bvh input, or a "
                    "shipped map's name (cmu_bvh, mixamo, generic); see "
                    "docs/user_guide.md.")
flags.DEFINE_string("asf", None, "Skeleton (.asf) for an .amc input.")
flags.DEFINE_float("amc_fps", 120.0, "Frame rate of an .amc input.")
flags.DEFINE_string("body_model", None, "SMPL-H model.npz: needed for AMASS "
                    "input; for a recording, the body to animate (default "
                    "the canonical SMPL neutral body).")
flags.DEFINE_enum("csv_preset", "unity", sorted(tracking.PRESETS),
                  "Engine conventions of a .csv recording; the --csv_* flags "
                  "below override single fields.")
flags.DEFINE_enum("csv_up", None, ["y", "z"], "Up axis of the recording.")
flags.DEFINE_enum("csv_handedness", None, ["left", "right"],
                  "Handedness of the recording's axes.")
flags.DEFINE_enum("csv_quat_order", None, list(tracking.QUAT_ORDERS),
                  "Order of the quaternion columns.")
flags.DEFINE_enum("csv_units", None, sorted(tracking.UNITS_TO_M),
                  "Position units of the recording.")
flags.DEFINE_enum("csv_time_units", "s", sorted(tracking.TIME_UNITS_TO_S),
                  "Units of the recording's time column.")
flags.DEFINE_list("wrist_offset", ["0", "0", "0"], "Right wrist position in "
                  "the right controller's frame (x,y,z in --csv_units; "
                  "mirrored for the left hand).")
flags.DEFINE_enum("bvh_units", "m", sorted(bvh_writer.UNITS_PER_M),
                  "Units of the written BVH.")
flags.DEFINE_enum("bvh_order", "ZYX", list(bvh_writer.ROTATION_ORDERS),
                  "Rotation channel order of the written BVH.")
flags.DEFINE_enum("bvh_up", "y", ["y", "z"], "Up axis of the written BVH.")
flags.DEFINE_bool("pin_hands", False, "Pin the wrists to the tracked ones "
                  "(two-bone IK on shoulder, elbow and wrist after the model, "
                  "memmlp_jax/hand_ik.py).")

_MOCAP_EXTENSIONS = (".bvh", ".amc", ".npz")


def csv_conventions() -> tracking.Conventions:
  """The preset, with the fields the --csv_* flags set replaced."""
  preset = tracking.PRESETS[FLAGS.csv_preset]
  try:
    offset = tuple(float(v) for v in FLAGS.wrist_offset)
  except ValueError:
    raise app.UsageError(
        f"--wrist_offset needs three numbers, got {FLAGS.wrist_offset}")
  try:
    return tracking.Conventions(
        up=FLAGS.csv_up or preset.up,
        handedness=FLAGS.csv_handedness or preset.handedness,
        quat_order=FLAGS.csv_quat_order or preset.quat_order,
        units=FLAGS.csv_units or preset.units,
        time_units=FLAGS.csv_time_units, wrist_offset=offset)
  except ValueError as e:
    raise app.UsageError(str(e))


def load_mocap(path: str) -> motion_lib.Motion:
  """A mocap clip on the canonical body at 60 fps, by file extension."""
  extension = os.path.splitext(path)[1].lower()
  name = os.path.splitext(os.path.basename(path))[0]
  ids = {"clip_id": f"input/{name}", "subject": "input/user",
         "source": "input"}
  if extension == ".bvh":
    from memmlp_jax.data import bvh  # pylint: disable=g-import-not-at-top
    if not FLAGS.bvh_map:
      raise app.UsageError("a .bvh input needs --bvh_map (a joint-map JSON "
                           f"or one of {sorted(bvh.PRESETS)})")
    return bvh.load_bvh(path, bvh.load_joint_map(FLAGS.bvh_map), **ids)
  if extension == ".amc":
    from memmlp_jax.data import asfamc  # pylint: disable=g-import-not-at-top
    if not FLAGS.asf:
      raise app.UsageError("an .amc input needs --asf (its skeleton file)")
    return asfamc.load_amc(FLAGS.asf, path, fps=FLAGS.amc_fps, **ids)
  from memmlp_jax.data import amass  # pylint: disable=g-import-not-at-top
  if not FLAGS.body_model:
    raise app.UsageError("an AMASS .npz input needs --body_model "
                         "(the SMPL-H model.npz)")
  return amass.load_amass(path, amass.load_body_model(FLAGS.body_model))


def load_input(path: str):
  """(rotations (N,3,3,3), positions (N,3,3), ground truth Motion or None)."""
  extension = os.path.splitext(path)[1].lower()
  if extension == ".csv":
    recording = tracking.load_tracking_csv(path, csv_conventions())
    return recording.rotations, recording.positions, None
  if extension not in _MOCAP_EXTENSIONS:
    raise app.UsageError(f"--input {path}: unknown extension {extension!r}; "
                         "expected .csv, .bvh, .amc or .npz")
  if FLAGS.height is not None:
    raise app.UsageError("--height applies to .csv recordings; mocap input "
                         "is already on the canonical body")
  truth = load_mocap(path)
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


def predict(workdir: str, rotations, positions, body, scale: float):
  """Runs the model over the sparse signals; returns (rot6d (N-1,132), lost).

  Positions are divided by ``scale`` so the model sees a body of the size
  it was trained on (``body`` unscaled).
  """
  cfg, params = checkpoints.restore(workdir)
  model, variables = factory.build(cfg), {"params": params}
  sparse = motion_lib.sparse_from_tracking(rotations, positions / scale)
  state = rollout.init_state(cfg, 1, skeleton=body.scaled(1.0 / scale))
  _, poses = rollout.rollout(model, variables, state, sparse[None])
  return np.asarray(poses["rot6d"][0]), np.asarray(poses["lost"][0])


def output_body(truth):
  """(body to animate, its scale from the base body).

  Mocap keeps the body its loader put it on. A recording animates the
  canonical body (or --body_model's), scaled to --height.
  """
  if truth is not None:
    return truth.skeleton, 1.0
  base = skeleton_lib.SMPL_NEUTRAL
  if FLAGS.body_model:
    from memmlp_jax.data import amass  # pylint: disable=g-import-not-at-top
    base = amass.load_body_model(FLAGS.body_model)
  scale = FLAGS.height / base.height() if FLAGS.height else 1.0
  return base.scaled(scale), scale


def write_outputs(result: motion_lib.Motion, lost, truth, devices) -> None:
  """The BVH, and the --npz and --gif when asked for.

  ``devices``: the tracked (rotations, positions) per output frame, drawn
  as markers in the GIF.
  """
  bvh_writer.write_bvh(FLAGS.output, result, units=FLAGS.bvh_units,
                       order=FLAGS.bvh_order, up=FLAGS.bvh_up)
  _, joints = result.global_pose()
  body = result.skeleton
  if FLAGS.npz:
    np.savez(FLAGS.npz,
             local_rotations=result.local_rotations.astype(np.float32),
             positions=joints.astype(np.float32),
             root_translation=result.root_translation.astype(np.float32),
             lost=lost, fps=result.fps, joint_names=np.array(body.names),
             parents=np.array(body.parents), offsets=body.offsets)
  if FLAGS.gif:
    sequences, titles = [joints], ["prediction"]
    if truth is not None:
      sequences.append(truth.global_pose()[1][1:])
      titles.append("ground truth")
    render.animate(sequences, body.parents, FLAGS.gif, devices=devices,
                   joint_names=body.names, titles=titles)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # Checkpoint-library chatter.
  host_memory.reuse_freed_memory()
  for name in ("workdir", "input", "output"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  if FLAGS.height is not None and not 0.5 < FLAGS.height < 2.5:
    raise app.UsageError(f"--height {FLAGS.height} m is not a plausible "
                         "standing head height")

  start = time.perf_counter()
  try:
    rotations, positions, truth = load_input(FLAGS.input)
    body, scale = output_body(truth)
  except motion_lib.MotionError as e:
    sys.exit(f"error: {e}")
  loaded = time.perf_counter()
  try:
    rot6d, lost = predict(FLAGS.workdir, rotations, positions, body, scale)
  except FileNotFoundError as e:
    sys.exit(f"error: --workdir {FLAGS.workdir}: {e}")
  if FLAGS.pin_hands:
    rot6d = hand_ik.pin_sequence(rot6d, rotations[1:], positions[1:], body)
  predicted = time.perf_counter()

  name = os.path.splitext(os.path.basename(FLAGS.input))[0]
  result = predicted_motion(rot6d, held_head(positions[1:, 0]), body, name)
  if truth is not None:
    scores = metrics.sequence_metrics(
        rot6d, motion_lib.features(truth)["rot6d"],
        truth.global_pose()[1][1:], positions[1:, 0], body)
    print(f"against the ground truth: MPJPE {scores['mpjpe']:.2f} cm, "
          f"MPJRE {scores['mpjre']:.2f} deg, jitter {scores['jitter']:.2f}")
  write_outputs(result, lost, truth, (rotations[1:], positions[1:]))
  done = time.perf_counter()
  frames = len(rot6d)
  print(f"{frames} frames ({frames / tracking.FPS:.1f} s at 60 fps, "
        f"{int(lost.sum())} with lost tracking): load {loaded - start:.2f} s, "
        f"predict {predicted - loaded:.2f} s "
        f"({frames / (predicted - loaded):.0f} frames/s incl. compilation), "
        f"write {done - predicted:.2f} s -> {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
