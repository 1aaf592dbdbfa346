r"""Where the int8 exports' jitter comes from, one half at a time.

  python -m benchmarks.int8_noise [--workdir=RUN] [--clip_stride=4]
      [--calibration_clips=24] [--calibration_frames=180]
      [--format=md|json] [--json_out=int8_noise.json]

Rolls a trained model (RUN, or the shipped model without --workdir) over
the free protocol's test split in JAX, in float32 and under
``fake_quant.simulated``, which computes the MLP blocks' Linears as the int8
.tflite files do (docs/export_notes.md shows the two agree over whole
rollouts). The one-pass int8 rows (``int8_onepass``): activations as trained
and as that export smooths them (``convert.smoothed``, calibrated as
``experiments.export`` calibrates), then with only the kernels or only the
inputs rounded; then the chosen two-pass int8 (``int8``, two_pass.py), whole
and with only its inputs rounded. For each row: MPJPE, MPJVE, jitter, and
jitter over float32's.

JSON: {"model", "clips", "frames", "rows": [{"variant", "mpjpe", "mpjve",
"jitter", "jitter_ratio"}]}.
"""

import json
import os

from absl import app
from absl import flags

from memmlp_jax import cli_flags
from memmlp_jax import evaluation
from memmlp_jax import fake_quant
from memmlp_jax import pretrained
from memmlp_jax.data import prepared
from memmlp_jax.export import calibration
from memmlp_jax.export import convert

FLAGS = flags.FLAGS
_DEFAULTS = {
    **cli_flags.model_workdir("to measure"),
    "data_dir": cli_flags.define(
        "string", "data_dir", cli_flags.free_data_dir(),
        "The free protocol's mocap folders (default $MEMMLP_DATA)."),
    "prepared": cli_flags.define(
        "string", "prepared", os.path.join("prepared", "free"),
        "The prepared free dataset (built there from --data_dir if absent)."),
    "clip_stride": cli_flags.define(
        "integer", "clip_stride", 1,
        "Score every n-th test clip (1: the whole split).", lower_bound=1),
    "calibration_clips": cli_flags.define(
        "integer", "calibration_clips", 24, "Training clips whose rollouts "
        "calibrate the smoothing, as experiments.export's.", lower_bound=1),
    "calibration_frames": cli_flags.define(
        "integer", "calibration_frames", 180, "Steps streamed per "
        "calibration clip (clips shorter than this are not used).",
        lower_bound=1),
    "format": cli_flags.define("enum", "format", "md", "Output format.",
                               ["md", "json"]),
    "json_out": cli_flags.define("string", "json_out", None,
                                 "Also write the JSON here."),
}

# (label, fake_quant mode, smoothed, activations rounded, kernels rounded).
VARIANTS = (
    ("float32", "none", False, False, False),
    ("one pass, activations as trained", "int8_onepass", False, True, True),
    ("one pass, smoothed (int8_onepass)", "int8_onepass", True, True, True),
    ("one pass, kernels only (smoothed)", "int8_onepass", True, False, True),
    ("one pass, activations only (smoothed)", "int8_onepass", True, True,
     False),
    ("two passes (int8, the chosen export)", "int8", False, True, True),
    ("two passes, activations only", "int8", False, True, False),
)


def measure(cfg, params, clips, skeleton, smoothed_params) -> list[dict]:
  """One row per ``VARIANTS`` entry."""
  rows = []
  for label, mode, smooth, activations, weights in VARIANTS:
    with fake_quant.simulated_rollouts(mode, activations=activations,
                                       weights=weights):
      results, _ = evaluation.evaluate(
          cfg, smoothed_params if smooth else params, clips, skeleton)
    rows.append({"variant": label, "mpjpe": results["mpjpe"],
                 "mpjve": results["mpjve"], "jitter": results["jitter"]})
  for row in rows:
    row["jitter_ratio"] = row["jitter"] / rows[0]["jitter"]
  return rows


def markdown(rows) -> str:
  lines = ["| variant | MPJPE (cm) | MPJVE (cm/s) | jitter | jitter / float32 |",
           "|---|---|---|---|---|"]
  lines += [f"| {r['variant']} | {r['mpjpe']:.3f} | {r['mpjve']:.2f} | "
            f"{r['jitter']:.2f} | {r['jitter_ratio']:.2f} |" for r in rows]
  return "\n".join(lines)


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out_dir = os.path.dirname(os.path.abspath(FLAGS.json_out or "."))
  if not os.path.isdir(out_dir):
    raise app.UsageError(f"--json_out: folder {out_dir} does not exist")
  try:
    config, params = pretrained.restore_run(pretrained.resolve(FLAGS.workdir))
    folder = prepared.ensure_prepared("free", FLAGS.data_dir, FLAGS.prepared,
                                      fetch_missing=False)
    train_split = prepared.load_split(folder, "train")
    clips, skeleton = evaluation.split_clips(
        prepared.load_split(folder, "test"))
  except (FileNotFoundError, pretrained.PretrainedError, ValueError,
          OSError) as e:
    raise app.UsageError(str(e)) from None
  cfg = config.model
  clips, _ = evaluation.scorable(clips[::FLAGS.clip_stride])
  if not clips:
    raise app.UsageError(f"--clip_stride {FLAGS.clip_stride}: no test clip "
                         "long enough to score")
  variables = {"params": params}
  try:
    samples = calibration.training_samples(
        cfg, variables, train_split, clips=FLAGS.calibration_clips,
        frames=FLAGS.calibration_frames)
  except ValueError as e:
    raise app.UsageError(f"--calibration_frames: {e}") from None
  smoothed = convert.smoothed(cfg, variables, samples)["params"]
  rows = measure(cfg, params, clips, skeleton, smoothed)
  report = {"model": cfg.name, "clips": len(clips),
            "frames": sum(len(c.sparse) for c in clips), "rows": rows}
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
  if FLAGS.format == "json":
    print(json.dumps(report, indent=2))
  else:
    print(f"{cfg.name}, {report['clips']} free test clips "
          f"({report['frames']} frames)\n")
    print(markdown(rows))


if __name__ == "__main__":
  app.run(main)
