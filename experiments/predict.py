r"""Full-body motion from a headset recording or a mocap clip, as BVH.

  python -m experiments.predict --input=REC.csv --output=OUT.bvh \
      [--workdir=RUN] [--npz=OUT.npz] [--gif=OUT.gif] [--height=1.62]

Without --workdir the shipped model runs (pretrained/README.md).

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
The work is done by memmlp_jax/predict.py; this app maps flags onto it.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from memmlp_jax import cli_flags
from memmlp_jax import hand_ik
from memmlp_jax import host_memory
from memmlp_jax import metrics
from memmlp_jax import predict as predict_lib
from memmlp_jax import pretrained
from memmlp_jax.data import bvh_writer
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import tracking

FLAGS = flags.FLAGS
_DEFAULTS = cli_flags.model_workdir("to predict with")
_DEFAULTS["input"] = cli_flags.define(
    "string", "input", None,
    "Recording (.csv) or mocap (.bvh, .amc, .npz) to predict from.")
flags.DEFINE_string("output", None, "BVH file to write.")
_DEFAULTS["npz"] = cli_flags.define(
    "string", "npz", None,
    "Optional .npz of the prediction (local rotations, joint positions, root "
    "translation, lost).")
flags.DEFINE_string("gif", None, "Optional animated GIF of the prediction "
                    "(next to the ground truth for mocap input).")
_DEFAULTS["height"] = cli_flags.define(
    "float", "height", None,
    "Recordings only: the user's standing head height above the floor in "
    "metres (about eye level, what the headset reads when standing upright); "
    "the body's head-to-feet height (1.496 m for the canonical body) is "
    "scaled to it.")
_DEFAULTS["bvh_map"] = cli_flags.define(
    "string", "bvh_map", None,
    "Joint-map JSON for a .bvh input, or a shipped map's name (cmu_bvh, "
    "mixamo, generic); see docs/user_guide.md.")
flags.DEFINE_string("asf", None, "Skeleton (.asf) for an .amc input.")
flags.DEFINE_float("amc_fps", 120.0, "Frame rate of an .amc input.")
_DEFAULTS["body_model"] = cli_flags.define(
    "string", "body_model", None,
    "SMPL-H model.npz: needed for AMASS input; for a recording, the body to "
    "animate (default the canonical SMPL neutral body).")
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
_DEFAULTS["wrist_offset"] = cli_flags.define(
    "list", "wrist_offset", ["0", "0", "0"],
    "Right wrist position in the right controller's frame (x,y,z in "
    "--csv_units; mirrored for the left hand).")
flags.DEFINE_enum("bvh_units", "m", sorted(bvh_writer.UNITS_PER_M),
                  "Units of the written BVH.")
flags.DEFINE_enum("bvh_order", "ZYX", list(bvh_writer.ROTATION_ORDERS),
                  "Rotation channel order of the written BVH.")
flags.DEFINE_enum("bvh_up", "y", ["y", "z"], "Up axis of the written BVH.")
_DEFAULTS["pin_hands"] = cli_flags.define(
    "bool", "pin_hands", False,
    "Pin the wrists to the tracked ones (two-bone IK on shoulder, elbow and "
    "wrist after the model, memmlp_jax/hand_ik.py).")

def _csv_conventions() -> tracking.Conventions:
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


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # Checkpoint-library chatter.
  host_memory.reuse_freed_memory()
  for name in ("input", "output"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  if FLAGS.height is not None and not 0.5 < FLAGS.height < 2.5:
    raise app.UsageError(f"--height {FLAGS.height} m is not a plausible "
                         "standing head height")

  try:
    source = pretrained.resolve(FLAGS.workdir)
  except pretrained.PretrainedError as e:
    sys.exit(f"error: {e}")

  start = time.perf_counter()
  try:
    conventions = (_csv_conventions()
                   if FLAGS.input.lower().endswith(".csv") else None)
    rotations, positions, truth = predict_lib.load_input(
        FLAGS.input, conventions, height=FLAGS.height,
        bvh_map=FLAGS.bvh_map, asf=FLAGS.asf, amc_fps=FLAGS.amc_fps,
        body_model=FLAGS.body_model)
    body, scale = predict_lib.output_body(
        truth, body_model=FLAGS.body_model, height=FLAGS.height)
  except predict_lib.InputError as e:
    raise app.UsageError(f"--{e}")
  except motion_lib.MotionError as e:
    sys.exit(f"error: {e}")
  loaded = time.perf_counter()
  try:
    rot6d, lost = predict_lib.predict(source, rotations, positions, body,
                                      scale)
  except (FileNotFoundError, pretrained.PretrainedError) as e:
    sys.exit(f"error: {e}")
  if FLAGS.pin_hands:
    rot6d = hand_ik.pin_sequence(rot6d, rotations[1:], positions[1:], body)
  predicted = time.perf_counter()

  name = os.path.splitext(os.path.basename(FLAGS.input))[0]
  result = predict_lib.predicted_motion(
      rot6d, predict_lib.held_head(positions[1:, 0]), body, name)
  if truth is not None:
    scores = metrics.sequence_metrics(
        rot6d, motion_lib.features(truth)["rot6d"],
        truth.global_pose()[1][1:], positions[1:, 0], body)
    print(f"against the ground truth: MPJPE {scores['mpjpe']:.2f} cm, "
          f"MPJRE {scores['mpjre']:.2f} deg, jitter {scores['jitter']:.2f}")
  predict_lib.write_outputs(
      result, lost, truth, (rotations[1:], positions[1:]),
      output=FLAGS.output, npz=FLAGS.npz, gif=FLAGS.gif,
      units=FLAGS.bvh_units, order=FLAGS.bvh_order, up=FLAGS.bvh_up)
  done = time.perf_counter()
  frames = len(rot6d)
  print(f"{frames} frames ({frames / tracking.FPS:.1f} s at 60 fps, "
        f"{int(lost.sum())} with lost tracking): load {loaded - start:.2f} s, "
        f"predict {predicted - loaded:.2f} s "
        f"({frames / (predicted - loaded):.0f} frames/s incl. compilation), "
        f"write {done - predicted:.2f} s -> {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
