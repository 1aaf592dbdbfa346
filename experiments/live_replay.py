r"""Plays a recording as VMC tracking in real time and measures the answers.

  python -m experiments.live_replay --input=REC.csv \
      [--to=127.0.0.1:39540] [--listen=127.0.0.1:39539] [--rate=72] \
      [--out=STATS.json] [--npz=BODIES.npz]

The loopback test of the live path: start `python -m experiments.live` with
the same ports, then this. The recording (the CSV format experiments.predict
reads, docs/user_guide.md) is resampled to --rate (0: its own samples) and
sent frame by frame as /VMC/Ext/T, /VMC/Ext/Hmd/Pos and /VMC/Ext/Con/Pos;
the answers are matched to the frames by their /VMC/Ext/T. Writes
{"sent", "received", "bones", "latency_ms": {"p50", "p90", "p99", "max"},
"dropped", ...}; --npz keeps the received bones converted back to the
canonical body (times, local_rotations, positions).
"""

import json
import socket
import sys

from absl import app
from absl import flags
import numpy as np

from memmlp_jax import cli_flags
from memmlp_jax import live
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import tracking

FLAGS = flags.FLAGS
_DEFAULTS = {}
_DEFAULTS["input"] = cli_flags.define(
    "string", "input", None,
    "Recording (.csv) to play.")
flags.DEFINE_string("to", "127.0.0.1:39540", "HOST:PORT of the live server.")
_DEFAULTS["listen"] = cli_flags.define(
    "string", "listen", "127.0.0.1:39539",
    "HOST:PORT to receive the bones on (the server's --send).")
flags.DEFINE_float("rate", 72.0, "Frames per second to send; 0 plays the "
                   "recording's own samples.")
_DEFAULTS["preset"] = cli_flags.define(
    "enum", "preset", "unity",
    "Conventions of the recording (the server's --preset).",
    sorted(tracking.PRESETS))
flags.DEFINE_float("grace", 1.0, "Seconds to wait for answers after the "
                   "last frame.")
_DEFAULTS["out"] = cli_flags.define(
    "string", "out", None,
    "Statistics JSON to write.")
_DEFAULTS["npz"] = cli_flags.define(
    "string", "npz", None,
    "Optional .npz of the received bodies.")


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.input:
    raise app.UsageError("--input is required")
  if FLAGS.rate < 0:
    raise app.UsageError("--rate must be 0 (the recording's samples) or "
                         "positive")
  try:
    to = live.parse_address(FLAGS.to)
    listen = live.parse_address(FLAGS.listen)
  except ValueError as e:
    raise app.UsageError(f"--to/--listen: {e}")
  conventions = tracking.PRESETS[FLAGS.preset]
  try:
    with open(FLAGS.input, encoding="utf-8-sig") as f:
      text = f.read()
    frames = live.replay_frames(
        *tracking.parse_csv(text, conventions, FLAGS.input), FLAGS.rate,
        conventions)
  except (OSError, UnicodeDecodeError) as e:
    sys.exit(f"error: {FLAGS.input}: cannot read: {e}")
  except motion_lib.MotionError as e:
    sys.exit(f"error: {e}")
  receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  try:
    receiver.bind(listen)
  except OSError as e:
    sys.exit(f"error: cannot listen on {FLAGS.listen}: {e}")
  try:
    stats, answers = live.replay(*frames, to, receiver,
                                 conventions.quat_order, FLAGS.grace)
  finally:
    receiver.close()
  stats.update(rate=FLAGS.rate, input=FLAGS.input)
  latency = stats["latency_ms"]
  print(f"sent {stats['sent']}, received {stats['received']} "
        f"({stats['bones']} bones), dropped {stats['dropped']}"
        + (f"; latency p50 {latency['p50']:.2f} ms, p90 "
           f"{latency['p90']:.2f} ms, p99 {latency['p99']:.2f} ms"
           if latency["p50"] is not None else "")
        + ("" if stats["received"] else
           f"; nothing came back: is experiments.live running with "
           f"--listen={FLAGS.to} --send={FLAGS.listen}?"))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(stats, f, indent=1)
  if FLAGS.npz and answers:
    times, local, positions = live.bodies_from_answers(answers)
    np.savez(FLAGS.npz, times=times, local_rotations=local,
             positions=positions)


if __name__ == "__main__":
  app.run(main)
