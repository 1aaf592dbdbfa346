r"""Evaluates a trained run: the paper's metrics on a test split or BVH files.

  python -m experiments.evaluate --workdir=runs/memmlp41 --out=out/free.json \
      --protocol=free --data_dir=../shared/data [--ik] [--pin_hands] \
      [--offline]
  python -m experiments.evaluate --workdir=runs/memmlp41 --out=out/bvh.json \
      --bvh_dir=DIR --bvh_map=MAP.json

Without --workdir the shipped model is evaluated (pretrained/README.md).
Runs the online rollout (memmlp_jax.rollout: causal, one frame at a time,
the memory fed with the model's own previous predictions) over every test
sequence and scores it with AGRoL's metrics (memmlp_jax.metrics). Writes
  OUT            results.json: the metrics (mpjre deg; mpjpe, hand/upper/
                 lower/root pe cm; mpjve cm/s; jitter and gt_jitter
                 10^2 m/s^3), sequences, frames, model, params, gflops,
                 nan_frames, ik, mode, timing, per-sequence scores, the
                 clips loaded and those skipped ({"clip", "reason"}: a
                 --bvh_dir file that failed to load, a sequence too short);
  OUT.md         the Markdown table in the paper's column order;
  OUT.png        per-sequence x per-joint position error heatmap (cm),
and prints the table and a timing line.

--ik refines the rotations towards the position branch (memmlp_jax.ik).
--pin_hands puts the wrists on the tracked ones after the model (and IK), as
predict and live do (memmlp_jax.hand_ik).
--offline runs AGRoL's non-overlapping-window protocol instead of the online
rollout (for peers without memory; it sees future frames, and its table is
labelled so). --tflite=model.tflite streams the sequences through an
exported model instead of JAX.

Sequences shorter than the window are evaluated like any other (the first
frame fills the window); ones under 4 frames cannot give jitter and are
skipped with a reason in results.json. Lost (non-finite) input frames are
held (see memmlp_jax.rollout) and counted in nan_frames.
"""

import os
import sys
import time

from absl import app
from absl import flags

from memmlp_jax import checkpoints
from memmlp_jax import cli_flags
from memmlp_jax import evaluation
from memmlp_jax import host_memory
from memmlp_jax import pretrained

FLAGS = flags.FLAGS
_DEFAULTS = {
    **cli_flags.model_workdir("to evaluate"),
    **cli_flags.clip_source(data_dir=os.environ.get("MEMMLP_DATA"),
                            bvh_dir=True),
    "out": cli_flags.define("string", "out", None, "results.json to write "
                            "(.md and .png next to it)."),
    "tflite": cli_flags.define("string", "tflite", None, "Run this "
                               "exported .tflite model instead of JAX "
                               "(online only)."),
}
flags.DEFINE_bool("ik", False, "Refine rotations by IK towards the position "
                  "branch.")
_DEFAULTS["pin_hands"] = cli_flags.define(
    "bool", "pin_hands", False,
    "Pin the wrists to the tracked ones after the model (two-bone arm IK).")
flags.DEFINE_bool("offline", False, "AGRoL's offline protocol "
                  "(non-overlapping windows) instead of the online rollout.")
flags.DEFINE_integer("lanes", 16, "Sequences run in parallel by the rollout.")


def _fail(message: str):
  raise app.UsageError(message)


def _check_flags():
  if not FLAGS.out:
    _fail("--out is required")
  if bool(FLAGS.protocol) == bool(FLAGS.bvh_dir):
    _fail("give either --protocol (with --data_dir) or --bvh_dir (with "
          "--bvh_map)")
  if FLAGS.protocol and not FLAGS.data_dir:
    _fail("--protocol needs --data_dir (or $MEMMLP_DATA)")
  if FLAGS.bvh_dir and not FLAGS.bvh_map:
    _fail("--bvh_dir needs --bvh_map (a joint-map JSON)")
  if FLAGS.tflite and (FLAGS.offline or FLAGS.ik):
    _fail("--tflite runs the online step only; drop --offline and --ik")


def _restore(workdir: str | None):
  try:
    return pretrained.restore(pretrained.resolve(workdir))
  except pretrained.PretrainedError as e:  # no model, or a bad release file
    sys.exit(f"error: {e}")
  except (FileNotFoundError, OSError, ValueError, KeyError) as e:
    _fail(f"--workdir {workdir}: cannot restore a trained model ({e})")


def _load(skipped):
  try:
    clips, skeleton, bad = evaluation.load_clips(
        protocol=FLAGS.protocol, data_dir=FLAGS.data_dir,
        prepared_dir=FLAGS.prepared_dir, body_model=FLAGS.body_model,
        lists_dir=FLAGS.lists_dir, bvh_dir=FLAGS.bvh_dir,
        bvh_map=FLAGS.bvh_map)
  except ValueError as e:
    _fail(str(e))
  skipped += bad
  return clips, skeleton


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _check_flags()
  host_memory.reuse_freed_memory()
  checkpoints.quiet_orbax_logs()
  started = time.perf_counter()
  cfg, params = _restore(FLAGS.workdir)
  try:
    evaluation.check_mode(cfg, use_ik=FLAGS.ik, offline=FLAGS.offline)
  except ValueError as e:
    _fail(f"{'--offline' if FLAGS.offline else '--ik'}: {e}")
  skipped = []
  clips, skeleton = _load(skipped)
  loaded = len(clips)
  print(f"loaded {loaded} clip(s), {len(skipped)} skipped")
  clips, short = evaluation.scorable(clips)
  skipped += short
  if not clips:
    _fail("no sequence with at least 4 frames to evaluate")
  load_s = time.perf_counter() - started
  results, rows = evaluation.evaluate(
      cfg, params, clips, skeleton, use_ik=FLAGS.ik,
      pin_hands=FLAGS.pin_hands, offline=FLAGS.offline,
      tflite=FLAGS.tflite, lanes=FLAGS.lanes)
  results["timing"] = {"load_s": load_s, **results["timing"],
                       "total_s": time.perf_counter() - started}
  results.update(source=FLAGS.protocol or FLAGS.bvh_dir, loaded=loaded,
                 skipped=skipped)
  title = (cfg.name + (" + IK" if FLAGS.ik else "")
           + (" + hands pinned" if FLAGS.pin_hands else ""))
  if FLAGS.offline:
    title += " (offline)"
  print(evaluation.write_outputs(FLAGS.out, results, rows, title))
  print(evaluation.timing_line(results))
  if skipped:
    print(f"skipped {len(skipped)}: " + "; ".join(
        f"{s['clip']} ({s['reason']})" for s in skipped))


if __name__ == "__main__":
  app.run(main)
