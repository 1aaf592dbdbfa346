r"""Live full-body motion over VMC: headset and controllers in, bones out.

  python -m experiments.live [--tflite=model.tflite | --workdir=RUN] \
      [--listen=127.0.0.1:39540] [--send=127.0.0.1:39539] \
      [--preset=unity] [--pin_hands] [--duration=0] [--stats=live.json]

Receives /VMC/Ext/Hmd/Pos and /VMC/Ext/Con/Pos on --listen and answers every
input frame with /VMC/Ext/Root/Pos, /VMC/Ext/Bone/Pos (Unity HumanBodyBones,
local rotations relative to the T-pose, Unity's frame), /VMC/Ext/OK and
/VMC/Ext/T on --send (memmlp_jax/live.py, memmlp_jax/vmc.py). Runs until
--duration seconds have passed or Ctrl-C, then prints (and with --stats
writes) what it received, answered and skipped, and its processing time.
Without --tflite or --workdir the shipped model runs in JAX
(pretrained/README.md).
"""

import json
import socket
import sys

from absl import app
from absl import flags
from absl import logging

from memmlp_jax import cli_flags
from memmlp_jax import host_memory
from memmlp_jax import live
from memmlp_jax import pretrained
from memmlp_jax.data import tracking

FLAGS = flags.FLAGS
_DEFAULTS = {}
_DEFAULTS["listen"] = cli_flags.define(
    "string", "listen", "127.0.0.1:39540",
    "HOST:PORT to receive the tracking on.")
flags.DEFINE_string("send", "127.0.0.1:39539", "HOST:PORT to send the bones "
                    "to (EVMC4U's and VMC4B's default receive port).")
_DEFAULTS["tflite"] = cli_flags.define(
    "string", "tflite", None,
    "Exported step (python -m experiments.export) to run with LiteRT.")
_DEFAULTS.update(cli_flags.model_workdir("to run with JAX instead"))
_DEFAULTS["preset"] = cli_flags.define(
    "enum", "preset", "unity",
    "Engine conventions of the incoming poses (docs/user_guide.md).",
    sorted(tracking.PRESETS))
_DEFAULTS["wrist_offset"] = cli_flags.define(
    "list", "wrist_offset", ["0", "0", "0"],
    "Right wrist position in the right controller's frame (engine axes and "
    "units; mirrored for the left hand).")
flags.DEFINE_string("left_serial", None, "Serial of the left controller "
                    "(default: one whose serial says 'left', else the one on "
                    "the head's left when two are first seen).")
flags.DEFINE_string("right_serial", None, "Serial of the right controller.")
flags.DEFINE_float("loss_timeout", 0.1, "Seconds without a controller "
                   "message after which it counts as lost.")
_DEFAULTS["pin_hands"] = cli_flags.define(
    "bool", "pin_hands", False,
    "Pin the wrists to the tracked controllers (two-bone IK after the model).")
_DEFAULTS["height"] = cli_flags.define(
    "float", "height", None,
    "The user's standing head height in metres, as for experiments.predict "
    "(default: the canonical body).")
flags.DEFINE_float("duration", 0.0, "Seconds to run (0: until Ctrl-C).")
flags.DEFINE_string("stats", None, "Write the run's statistics here (JSON).")


def options() -> live.Options:
  try:
    offset = tuple(float(v) for v in FLAGS.wrist_offset)
    preset = tracking.PRESETS[FLAGS.preset]
    conventions = tracking.Conventions(
        up=preset.up, handedness=preset.handedness,
        quat_order=preset.quat_order, units=preset.units, wrist_offset=offset)
  except ValueError:
    raise app.UsageError("--wrist_offset needs three numbers, got "
                         f"{FLAGS.wrist_offset}") from None
  if FLAGS.height is not None and not 0.5 < FLAGS.height < 2.5:
    raise app.UsageError(f"--height {FLAGS.height} m is not a plausible "
                         "standing head height")
  if not FLAGS.loss_timeout > 0:
    raise app.UsageError("--loss_timeout must be positive")
  if FLAGS.duration < 0:
    raise app.UsageError("--duration must be 0 (until Ctrl-C) or positive")
  return live.Options(conventions, FLAGS.left_serial, FLAGS.right_serial,
                      FLAGS.loss_timeout, FLAGS.pin_hands, FLAGS.height)


def stepper():
  """The model to run: --tflite, --workdir, else the shipped model."""
  if FLAGS.tflite and FLAGS.workdir:
    raise app.UsageError(
        "pass one of --tflite=MODEL.tflite (made by python -m "
        "experiments.export) or --workdir=RUN, not both (neither: the "
        "shipped model)")
  if FLAGS.tflite:
    try:
      return live.TFLiteStepper(FLAGS.tflite)
    except (OSError, ValueError) as e:  # missing file, sidecar mismatch
      sys.exit(f"error: {FLAGS.tflite}: {e}")
  try:
    return live.JaxStepper(pretrained.resolve(FLAGS.workdir))
  except (OSError, ValueError) as e:  # no model, a bad run or release file
    sys.exit(f"error: {e}")


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # python-osc logs a warning per odd packet; the stats count them instead.
  logging.set_verbosity(logging.ERROR)
  host_memory.reuse_freed_memory()
  try:
    listen = live.parse_address(FLAGS.listen)
    send = live.parse_address(FLAGS.send)
  except ValueError as e:
    raise app.UsageError(f"--listen/--send: {e}")
  session_options = options()
  model = stepper()
  receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  try:
    receiver.bind(listen)
  except OSError as e:
    sys.exit(f"error: cannot listen on {FLAGS.listen}: {e}")
  print(f"{model.name}: listening on {FLAGS.listen}, sending to "
        f"{FLAGS.send}" + (" (Ctrl-C stops)" if not FLAGS.duration else ""),
        flush=True)
  session = live.Session(model, session_options)
  try:
    stats = live.serve(session, receiver, send, FLAGS.duration)
  except KeyboardInterrupt:  # Ctrl-C: what was counted so far
    stats = dict(session.stats)
  finally:
    receiver.close()
  stats["model"] = model.name
  skipped = ", ".join(f"{k} {v}" for k, v in stats["skipped"].items() if v)
  timing = stats.get("processing_ms", {})
  print(f"{stats['frames']} frames answered {stats['answers']} times, "
        f"{stats['steps']} model steps ({stats['lost_steps']} with lost "
        f"tracking); skipped: {skipped or 'none'}"
        + (f"; processing p50 {timing['p50']:.2f} ms, p99 "
           f"{timing['p99']:.2f} ms" if timing.get("p50") is not None
           else ""))
  if FLAGS.stats:
    with open(FLAGS.stats, "w") as f:
      json.dump(stats, f, indent=1)


if __name__ == "__main__":
  app.run(main)
