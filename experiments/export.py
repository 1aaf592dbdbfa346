r"""Exports a trained run's streaming step to TFLite and checks it against JAX.

  python -m experiments.export --out=model.tflite [--workdir=RUN] \
      [--quantize=none|fp16|int8|int8_onepass|int8_dynamic|int8_full|int8_mixed] \
      [--parity_clips=8] [--calibration_clips=24]

Exports RUN, or the shipped model without --workdir (pretrained/README.md).
Writes model.tflite and its sidecar model.json (memmlp_jax/export/), then
checks it on the first --parity_clips clips of the free protocol's test split:
per step (every frame through the .tflite with JAX's own state as input; the
largest absolute difference of pose and new state) and streamed (both run
free over whole clips; the largest pose difference, both MPJPEs and, with
a VQ code, the share of frames whose codes differ). fp32
fails (exit 1) when the per-step difference exceeds --tolerance (1e-4);
fp16/int8 report the MPJPE change. int8 is the chosen int8 variant (two
int8 passes per block Linear, no calibration); int8_onepass, int8_full and
int8_mixed are calibrated on steps of JAX rollouts over
--calibration_clips clips of the free training split
(memmlp_jax/export/quantize.py says what each keeps float, and why;
docs/export_notes.md what each measures). Frames where the memory's VQ code is a
near-tie (parity.code_margin) are counted and left out of the per-step max:
float rounding may pick either code there.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

from memmlp_jax import cli_flags
from memmlp_jax import metrics
from memmlp_jax import pretrained
from memmlp_jax import rollout
from memmlp_jax.data import prepared
from memmlp_jax.export import calibration
from memmlp_jax.export import convert
from memmlp_jax.export import parity
from memmlp_jax.export import runner
from memmlp_jax.export import sidecar as sidecar_lib
from memmlp_jax.models import factory

FLAGS = flags.FLAGS
_DEFAULTS = {
    **cli_flags.model_workdir("to export"),
    "out": cli_flags.define("string", "out", None, "The .tflite file to "
                            "write (its sidecar goes next to it as "
                            ".json)."),
}
_QUANTIZE = flags.DEFINE_enum(
    "quantize", "none", convert.QUANTIZE,
    "none (fp32); fp16 weights; int8 (the chosen int8: the block Linears "
    "as two dynamic-range int8 passes, the recurrence and output Linears "
    "float); int8_onepass (one pass, activations smoothed); int8_dynamic "
    "(every Linear); int8_full (full integer, calibrated); int8_mixed "
    "(int8_full with the recurrence and output Linears float).")
_DEFAULTS["calibration_clips"] = cli_flags.define(
    "integer", "calibration_clips", 24, "Training clips whose rollouts "
    "calibrate the int8_onepass, int8_full and int8_mixed variants.",
    lower_bound=1)
_DEFAULTS["data_dir"] = cli_flags.define(
    "string", "data_dir", cli_flags.free_data_dir(),
    "The free protocol's mocap folders (default $MEMMLP_DATA).")
# benchmarks.int8_noise defines the same two flags.
_DEFAULTS["prepared"] = cli_flags.define(
    "string", "prepared", os.path.join("prepared", "free"),
    "The prepared free dataset (built there from --data_dir if absent).")
_PARITY_CLIPS = flags.DEFINE_integer("parity_clips", 8, "Test clips streamed "
                                     "for the parity check (0: skip it).")
_MAX_FRAMES = flags.DEFINE_integer("max_frames", 600, "Frames per parity "
                                   "clip at most (streaming is per frame).")
_TOLERANCE = flags.DEFINE_float("tolerance", 1e-4, "fp32: largest allowed "
                                "absolute difference to JAX.")


def _fail(message: str, code: int = 1):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def _parity_clips(count: int, max_frames: int):
  """(split, [(clip span, rows)]) of the first test clips of the free split."""
  folder = prepared.ensure_prepared("free", FLAGS.data_dir, FLAGS.prepared,
                                    fetch_missing=False, log=logging.info)
  split = prepared.load_split(folder, "test")
  clips = [(span, slice(span.start, span.start + min(span.length,
                                                      max_frames)))
           for span in split.clips[:count]]
  return split, clips


def _representative(cfg, variables):
  """Inputs of real steps for the calibrated variants (calibration.py)."""
  folder = prepared.ensure_prepared("free", FLAGS.data_dir, FLAGS.prepared,
                                    fetch_missing=False, log=logging.info)
  return calibration.training_samples(
      cfg, variables, prepared.load_split(folder, "train"),
      clips=FLAGS.calibration_clips)


def _mpjpe(split, clips, poses) -> float:
  per_clip = [metrics.sequence_metrics(
      pose["rot6d"], split.rot6d[rows], split.pos[rows],
      split.sparse[rows][:, rollout.HEAD_POSITION], split.skeleton)
              for (_, rows), pose in zip(clips, poses)]
  return metrics.average(per_clip)["mpjpe"]


def parity_report(cfg, variables, model_path: str, quantize: str) -> bool:
  """Prints the parity figures; returns whether they pass.

  Per step (the .tflite fed JAX's own state at every frame) is the export's
  error and is held to --tolerance in fp32; streamed (each runs on its own
  state over whole clips) adds the memory's feedback, and its MPJPE change
  is what a user of the quantized model sees.
  """
  split, clips = _parity_clips(_PARITY_CLIPS.value, _MAX_FRAMES.value)
  sequences = [np.asarray(split.sparse[rows]) for _, rows in clips]
  per_step = parity.step_parity(cfg, variables, model_path, sequences)
  reference = rollout.rollout_sequences(factory.build(cfg), variables, cfg,
                                        sequences)
  exported = runner.predict_sequences(model_path, sequences)
  streamed = parity.max_abs_difference(reference, exported)
  mpjpe_jax = _mpjpe(split, clips, reference)
  mpjpe_tflite = _mpjpe(split, clips, exported)
  step_max = max(per_step["max"].values())
  print(f"parity on {len(clips)} free test clips ({per_step['frames']} "
        f"frames), {quantize}:\n"
        f"  per step (same inputs): max |TFLite - JAX| {step_max:.2e} over "
        f"pose and state ({per_step['near_ties']} frames with a VQ code "
        "near-tie not compared)\n"
        f"  streamed: max |TFLite - JAX| rot6d {streamed['rot6d']:.2e}, pos "
        f"{streamed.get('pos', 0.0):.2e}; MPJPE JAX {mpjpe_jax:.3f} cm, "
        f"TFLite {mpjpe_tflite:.3f} cm, change "
        f"{mpjpe_tflite - mpjpe_jax:+.3f} cm")
  if cfg.uses_vq:
    # Where the streams part: a near-tie code read the other way is fed
    # back through the memory.
    flips = parity.code_flips(cfg, variables, model_path, sequences)
    print(f"  streamed VQ codes: the two streams read another code in "
          f"{100 * flips['frames_any_row']:.2f}% of the frames for some "
          f"window row, {100 * flips['newest_row']:.2f}% for the newest row")
  return quantize != "none" or step_max <= _TOLERANCE.value


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The converter logs every SavedModel it writes on the way.
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
  logging.set_verbosity(logging.WARNING)
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  if not os.path.isdir(out_dir):
    _fail(f"--out: folder {out_dir} does not exist", 2)
  try:
    config, params = pretrained.restore_run(pretrained.resolve(FLAGS.workdir))
  except (FileNotFoundError, pretrained.PretrainedError) as e:
    _fail(str(e), 2)
  cfg = config.model
  variables = {"params": params}
  representative = None
  if _QUANTIZE.value in convert.CALIBRATED:
    try:
      representative = _representative(cfg, variables)
    except (prepared.PreparedError, OSError, ValueError) as e:
      _fail(f"calibration data: {e}")
  try:
    # A model fine-tuned under the int8 arithmetic is exported as trained.
    tflite, sidecar = convert.export_model(
        cfg, variables, quantize=_QUANTIZE.value,
        representative=representative, smooth=config.fake_quant == "none")
  except convert.ExportError as e:
    _fail(str(e))
  sidecar_file = sidecar_lib.save(tflite, sidecar, FLAGS.out)
  print(f"wrote {FLAGS.out} ({len(tflite) / 2**20:.2f} MiB, {cfg.name}, "
        f"{_QUANTIZE.value}) and {sidecar_file}")
  if _PARITY_CLIPS.value > 0:
    try:
      passed = parity_report(cfg, variables, FLAGS.out, _QUANTIZE.value)
    except (prepared.PreparedError, OSError, ValueError) as e:
      _fail(f"parity check: {e} (--parity_clips=0 skips it)")
    if not passed:
      _fail(f"fp32 parity above the tolerance {_TOLERANCE.value:g}")


if __name__ == "__main__":
  cli_flags.require("out")
  app.run(main)
