r"""Per-frame latency of the exported streaming step on one CPU thread.

  python -m benchmarks.tflite_latency [--models=memmlp41,agrol_mlp196]
      [--quantize=none,fp16,int8,int8_onepass,int8_dynamic] [--onnx=agrol_mlp41]
      [--threads=1] [--format=md|json] [--json_out=latency.json]

Each model is exported with random weights (latency does not depend on
them) exactly as experiments/export.py exports a trained one, then streamed
frame by frame through the LiteRT interpreter (XNNPACK) via the same runner
that scores exported models (runner.TFLiteStreamer.push): the time per frame
includes copying the new state onto the inputs, which stay in place as on a
headset. The models take turns in rounds, so
load from other processes spreads over all of them. Also measured, in every
round: this machine's single-core fp32 peak, as the best GFLOP/s of
XNNPACK's fully-connected kernel on large matmuls (the best round is
reported), and each model's efficiency (achieved GFLOP/s / peak, both from
the same round, median over rounds).

Which int8 variant pays depends on the CPU's int8 instructions (with AMX
or AVX-512 VNNI int8 is far faster than fp32; with AVX2 alone barely:
docs/export_notes.md), so the report names the host's CPU and those of its
instructions that matter.

JSON: {"host": {"cpu", "instructions"}, "peak_gflops": float, "models":
[{"model", "quantize", "params", "mb", "gflops", "ms_median", "ms_p90",
"ms_p99", "fps", "ms_ratio_vs": {"<model>/<quantize>" of every other row:
its ms / this row's ms}}]}.
"""

import json
import logging as std_logging
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from benchmarks import onnx_reference
from memmlp_jax import host_cpu
from memmlp_jax.export import calibration
from memmlp_jax.export import convert
from memmlp_jax.export import runner
from memmlp_jax.export import sidecar as sidecar_lib
from memmlp_jax.models import configs
from memmlp_jax.models import factory

_MODELS = flags.DEFINE_list(
    "models", ["memmlp41", "memmlp60", "agrol_mlp41", "agrol_mlp196",
               "avatarposer"], "Named model configs to export and time.")
_QUANTIZE = flags.DEFINE_list(
    "quantize", ["none", "fp16", "int8", "int8_onepass", "int8_dynamic"],
    f"Variants to time, of {', '.join(convert.QUANTIZE)} "
    "(memmlp_jax/export/quantize.py).")
_ONNX = flags.DEFINE_list("onnx", ["agrol_mlp41"], "AGRoL-MLP configs also "
                          "timed as ONNX in onnxruntime, in the same rounds.")
_THREADS = flags.DEFINE_integer("threads", 1, "Interpreter threads.")
_FRAMES = flags.DEFINE_integer("frames", 300, "Timed frames per model.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed frames per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Rounds over all models; the "
                               "timed frames are split evenly over them.")
_FORMAT = flags.DEFINE_enum("format", "md", ["md", "json"], "Output format.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the JSON here.")

HEADSET_FPS = 72.0
# Matmul shapes (rows, inputs, outputs) for the peak; the best one counts.
_PEAK_SHAPES = ((256, 1024, 1024), (512, 512, 512), (64, 2048, 2048))


def _matmul_tflite(rows: int, inputs: int, outputs: int) -> bytes:
  weights = np.random.RandomState(0).randn(inputs, outputs).astype(np.float32)
  step = lambda state, x: (state, {"y": x @ weights})
  return convert.convert_step(step, {}, frame_shape=(rows, inputs))


def _time_invoke(run, repeats: int, warmup: int) -> np.ndarray:
  for _ in range(warmup):
    run()
  times = np.empty(repeats)
  for i in range(repeats):
    start = time.perf_counter()
    run()
    times[i] = time.perf_counter() - start
  return times


class _PeakMatmuls:
  """Large fp32 matmuls through TFLite; their best GFLOP/s is the peak."""

  def __init__(self, threads: int):
    from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
    self._runs = []
    for rows, inputs, outputs in _PEAK_SHAPES:
      signature = interpreter.Interpreter(
          model_content=_matmul_tflite(rows, inputs, outputs),
          num_threads=threads).get_signature_runner(sidecar_lib.SIGNATURE)
      x = np.random.RandomState(1).randn(rows, inputs).astype(np.float32)
      self._runs.append((2.0 * rows * inputs * outputs,
                         lambda r=signature, x=x: r(frame=x)))

  def gflops(self) -> float:
    return max(flops / np.median(_time_invoke(run, 10, 2)) / 1e9
               for flops, run in self._runs)


def _random_walk(frames: int, seed: int) -> np.ndarray:
  """Smooth random sparse frames: calibration input for latency runs."""
  rng = np.random.RandomState(seed)
  return np.cumsum(rng.randn(frames, 54) * 0.02, axis=0).astype(np.float32)


class _Candidate:
  """One exported model (random weights) streaming random frames."""

  def __init__(self, name: str, quantize: str, threads: int, workdir: str):
    cfg = configs.get_config(name)
    variables = convert.random_variables(cfg)
    state, step = convert.streaming_step(cfg, variables)
    representative = None
    if quantize in convert.CALIBRATED:
      representative = calibration.rollout_samples(
          cfg, variables, [_random_walk(120, seed) for seed in range(4)],
          frames=120, per_sequence=8)
    tflite, sidecar = convert.export_model(cfg, variables, quantize=quantize,
                                           representative=representative)
    path = os.path.join(workdir, f"{name}_{quantize}.tflite")
    sidecar_lib.save(tflite, sidecar, path)
    self.row = {"model": name, "quantize": quantize,
                "params": factory.count_params(cfg)["total"],
                "mb": len(tflite) / 2**20,
                "gflops": convert.step_flops(step, state) / 1e9}
    self._streamer = runner.TFLiteStreamer(path, num_threads=threads)
    self._streamer.reset()
    self._frames = np.random.RandomState(0).randn(64, 54).astype(np.float32)
    self._count = 0
    self.ms = []
    self.round_medians = []

  def _step(self):
    frame = self._frames[self._count % len(self._frames)] * 0.3
    self._streamer.push(frame)
    self._count += 1

  def time(self, frames: int, warmup: int):
    ms = 1e3 * _time_invoke(self._step, frames, warmup)
    self.ms.extend(ms)
    self.round_medians.append(float(np.median(ms)))

  def result(self) -> dict:
    median = float(np.median(self.ms))
    return {**self.row, "ms_median": median,
            "ms_p90": float(np.percentile(self.ms, 90)),
            "ms_p99": float(np.percentile(self.ms, 99)), "fps": 1e3 / median}

  def efficiency(self, round_peaks) -> float:
    """Median over rounds of achieved GFLOP/s / that round's peak.

    Within a round the model and the peak matmuls see about the same
    machine load, so the ratio stays meaningful on a busy machine.
    """
    return float(np.median([self.row["gflops"] / ms * 1e3 / peak for ms, peak
                            in zip(self.round_medians, round_peaks)]))


class _OnnxCandidate(_Candidate):
  """A peer's ONNX AGRoL-MLP in onnxruntime, one window per frame."""

  def __init__(self, name: str, threads: int):  # pylint: disable=super-init-not-called
    cfg = configs.get_config(name)
    variables = convert.random_variables(cfg)
    model = onnx_reference.agrol_onnx(cfg, variables["params"])
    self._session = onnx_reference.onnx_session(model, threads)
    state, step = convert.streaming_step(cfg, variables)
    self.row = {"model": name, "quantize": "onnxruntime",
                "params": factory.count_params(cfg)["total"],
                "mb": len(model) / 2**20,
                "gflops": convert.step_flops(step, state) / 1e9}
    frames = np.random.RandomState(0).randn(64 + cfg.window, 54).astype(
        np.float32) * 0.3
    self._windows = np.stack([frames[i:i + cfg.window]
                              for i in range(64)])[:, None]
    self._count = 0
    self.ms = []
    self.round_medians = []

  def _step(self):
    self._session.run(None, {"sparse": self._windows[self._count % 64]})
    self._count += 1


def label(row) -> str:
  return f"{row['model']}/{row['quantize']}"


def with_ratios(rows) -> list[dict]:
  """Each row with "ms_ratio_vs": {other row's label: its ms / this ms}."""
  return [{**row, "ms_ratio_vs": {label(other): other["ms_median"]
                                  / row["ms_median"]
                                  for other in rows if other is not row}}
          for row in rows]


def markdown(host: dict, peak: float, rows, efficiencies) -> str:
  """The table; FLOP-bound ms at `peak`, efficiency as measured per round."""
  lines = [f"Host: {host['cpu']} ({', '.join(host['instructions']) or 'none'}"
           " of the GEMM instructions)",
           f"Single-core fp32 peak (XNNPACK FULLY_CONNECTED, best round): "
           f"{peak:.1f} GFLOP/s", "",
           "| model | quantize | params (M) | MB | GFLOPs/frame | median ms "
           "| p90 ms | p99 ms | FPS | 72 FPS | FLOP-bound ms | efficiency |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r, efficiency in zip(rows, efficiencies):
    bound = r["gflops"] / peak * 1e3
    lines.append(
        f"| {r['model']} | {r['quantize']} | {r['params'] / 1e6:.2f} | "
        f"{r['mb']:.2f} | {r['gflops']:.3f} | {r['ms_median']:.2f} | "
        f"{r['ms_p90']:.2f} | {r['ms_p99']:.2f} | {r['fps']:.0f} | "
        f"{'yes' if r['fps'] >= HEADSET_FPS else 'no'} | {bound:.2f} | "
        f"{efficiency:.0%} |")
  fp32 = {r["model"]: (r, e) for r, e in zip(rows, efficiencies)
          if r["quantize"] == "none"}
  ours = {label(r): r for r in rows}
  if "memmlp41/none" in ours:
    ratios = ours["memmlp41/none"]["ms_ratio_vs"]
    lines += ["", "memmlp41 fp32 against the others of this run (their ms / "
              "ours; above 1: memmlp41 is faster): " + ", ".join(
                  f"{k} {v:.2f}" for k, v in ratios.items())]
  if "memmlp41" in fp32:
    ours, efficiency = fp32["memmlp41"]
    lines += ["", f"memmlp41 fp32: {ours['ms_median']:.2f} ms = "
              f"{1 / efficiency:.2f} x its FLOP-bound time (per round)"]
    if "agrol_mlp196" in fp32:
      speedup = fp32["agrol_mlp196"][0]["ms_median"] / ours["ms_median"]
      lines[-1] += f", {speedup:.2f} x faster than agrol_mlp196"
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The converter logs every SavedModel it writes on the way.
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
  logging.set_verbosity(logging.WARNING)
  unknown = sorted(set(_MODELS.value + _ONNX.value) - set(configs.NAMES))
  if unknown:
    raise app.UsageError(f"--models/--onnx: unknown {unknown}; known: "
                         f"{', '.join(configs.NAMES)}")
  bad = sorted(set(_QUANTIZE.value) - set(convert.QUANTIZE))
  if bad:
    raise app.UsageError(f"--quantize: unknown {bad}; known: "
                         f"{', '.join(convert.QUANTIZE)}")
  with tempfile.TemporaryDirectory() as workdir:
    candidates = [_Candidate(name, quantize, _THREADS.value, workdir)
                  for name in _MODELS.value for quantize in _QUANTIZE.value]
    candidates += [_OnnxCandidate(name, _THREADS.value)
                   for name in _ONNX.value]
    matmuls = _PeakMatmuls(_THREADS.value)
    # Rounds interleave the models (and the peak), so that other load on
    # the machine spreads over all of them rather than hitting one.
    round_peaks = []
    per_round = max(1, _FRAMES.value // _ROUNDS.value)
    for _ in range(_ROUNDS.value):
      round_peaks.append(matmuls.gflops())
      for candidate in candidates:
        candidate.time(per_round, _WARMUP.value)
  peak = max(round_peaks)
  rows = with_ratios([candidate.result() for candidate in candidates])
  host = host_cpu.describe()
  report = json.dumps({"host": host, "peak_gflops": peak, "models": rows},
                      indent=1)
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      f.write(report)
  if _FORMAT.value == "json":
    print(report)
  else:
    print(markdown(host, peak, rows, [c.efficiency(round_peaks)
                                for c in candidates]))


if __name__ == "__main__":
  app.run(main)
