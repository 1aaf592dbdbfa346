r"""Per-frame latency of the exported streaming step on one CPU thread.

  python -m benchmarks.tflite_latency [--models=memmlp41,agrol_mlp196]
      [--quantize=none,fp16,int8] [--threads=1] [--format=md|json]

Each model is exported with random weights (latency does not depend on
them) exactly as experiments/export.py exports a trained one, then streamed
frame by frame through the LiteRT interpreter (XNNPACK) via the same runner
that scores exported models: the time per frame includes feeding the state in
and reading it back, as on a headset. Also measured: this machine's
single-core fp32 peak, as the best GFLOP/s of XNNPACK's fully-connected
kernel on large matmuls, and each model's efficiency (achieved / peak).

JSON: {"peak_gflops": float, "models": [{"model", "quantize", "params", "mb",
"gflops", "ms_median", "ms_p90", "ms_p99", "fps"}]}.
"""

import json
import logging as std_logging
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from memmlp_jax import export
from memmlp_jax.models import configs

_MODELS = flags.DEFINE_list(
    "models", ["memmlp41", "memmlp60", "agrol_mlp41", "agrol_mlp196",
               "avatarposer"], "Named model configs to export and time.")
_QUANTIZE = flags.DEFINE_list("quantize", list(export.QUANTIZE),
                              "Variants to time: none (fp32), fp16, int8.")
_THREADS = flags.DEFINE_integer("threads", 1, "Interpreter threads.")
_FRAMES = flags.DEFINE_integer("frames", 300, "Timed frames per model.")
_WARMUP = flags.DEFINE_integer("warmup", 30, "Untimed frames first.")
_FORMAT = flags.DEFINE_enum("format", "md", ["md", "json"], "Output format.")

HEADSET_FPS = 72.0
# Matmul shapes (rows, inputs, outputs) for the peak; the best one counts.
_PEAK_SHAPES = ((256, 1024, 1024), (512, 512, 512), (64, 2048, 2048))


def _matmul_tflite(rows: int, inputs: int, outputs: int) -> bytes:
  weights = np.random.RandomState(0).randn(inputs, outputs).astype(np.float32)
  step = lambda state, x: (state, {"y": x @ weights})
  return export.convert_step(step, {}, frame_shape=(rows, inputs))


def _time_invoke(run, repeats: int, warmup: int) -> np.ndarray:
  for _ in range(warmup):
    run()
  times = np.empty(repeats)
  for i in range(repeats):
    start = time.perf_counter()
    run()
    times[i] = time.perf_counter() - start
  return times


def peak_gflops(threads: int) -> float:
  """Best fp32 GFLOP/s of one TFLite FULLY_CONNECTED over a few shapes."""
  from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
  best = 0.0
  for rows, inputs, outputs in _PEAK_SHAPES:
    model = interpreter.Interpreter(
        model_content=_matmul_tflite(rows, inputs, outputs),
        num_threads=threads)
    runner = model.get_signature_runner(export.SIGNATURE)
    x = np.random.RandomState(1).randn(rows, inputs).astype(np.float32)
    seconds = np.median(_time_invoke(lambda: runner(frame=x), 20, 3))
    best = max(best, 2.0 * rows * inputs * outputs / seconds / 1e9)
  return best


def measure(name: str, quantize: str, threads: int, frames: int,
            warmup: int, workdir: str) -> dict:
  """Exports `name` with random weights and times its step."""
  cfg = configs.get_config(name)
  variables = export.random_variables(cfg)
  state, step = export.streaming_step(cfg, variables)
  flops = export.step_flops(step, state)
  tflite, sidecar = export.export_model(cfg, variables, quantize=quantize)
  path = os.path.join(workdir, f"{name}_{quantize}.tflite")
  export.save(tflite, sidecar, path)
  streamer = export.TFLiteStreamer(path, num_threads=threads)
  sparse = np.random.RandomState(0).randn(warmup + frames, 54) * 0.3
  sparse = sparse.astype(np.float32)
  carry = [streamer.init_state()]
  frame_index = iter(range(len(sparse)))

  def run():
    carry[0], _ = streamer.step(carry[0], sparse[next(frame_index)])

  ms = 1e3 * _time_invoke(run, frames, warmup)
  median = float(np.median(ms))
  return {"model": name, "quantize": quantize,
          "params": configs.count_params(cfg)["total"],
          "mb": len(tflite) / 2**20, "gflops": flops / 1e9,
          "ms_median": median, "ms_p90": float(np.percentile(ms, 90)),
          "ms_p99": float(np.percentile(ms, 99)), "fps": 1e3 / median}


def markdown(peak: float, rows) -> str:
  lines = [f"Single-core fp32 peak (XNNPACK FULLY_CONNECTED): {peak:.1f} "
           "GFLOP/s", "",
           "| model | quantize | params (M) | MB | GFLOPs/frame | median ms "
           "| p90 ms | p99 ms | FPS | 72 FPS | FLOP-bound ms | efficiency |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    bound = r["gflops"] / peak * 1e3
    efficiency = r["gflops"] / (r["ms_median"] / 1e3) / peak
    lines.append(
        f"| {r['model']} | {r['quantize']} | {r['params'] / 1e6:.2f} | "
        f"{r['mb']:.2f} | {r['gflops']:.3f} | {r['ms_median']:.2f} | "
        f"{r['ms_p90']:.2f} | {r['ms_p99']:.2f} | {r['fps']:.0f} | "
        f"{'yes' if r['fps'] >= HEADSET_FPS else 'no'} | {bound:.2f} | "
        f"{efficiency:.0%} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The converter logs every SavedModel it writes on the way.
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
  logging.set_verbosity(logging.WARNING)
  unknown = sorted(set(_MODELS.value) - set(configs.NAMES))
  if unknown:
    raise app.UsageError(f"--models: unknown {unknown}; known: "
                         f"{', '.join(configs.NAMES)}")
  bad = sorted(set(_QUANTIZE.value) - set(export.QUANTIZE))
  if bad:
    raise app.UsageError(f"--quantize: unknown {bad}; known: "
                         f"{', '.join(export.QUANTIZE)}")
  peak = peak_gflops(_THREADS.value)
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    for name in _MODELS.value:
      for quantize in _QUANTIZE.value:
        rows.append(measure(name, quantize, _THREADS.value, _FRAMES.value,
                            _WARMUP.value, workdir))
  if _FORMAT.value == "json":
    print(json.dumps({"peak_gflops": peak, "models": rows}, indent=1))
  else:
    print(markdown(peak, rows))


if __name__ == "__main__":
  app.run(main)
