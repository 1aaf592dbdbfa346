r"""Training throughput of the named models on the current JAX backend.

  python -m benchmarks.train_throughput                 # Markdown table
  python -m benchmarks.train_throughput --format=json --models=memmlp41

Per model: parameters, GFLOPs per window (XLA cost analysis of the compiled
train step at --batch_size, divided by the batch; and of the inference forward
pass at batch 1), and the train step's ms/step and windows/s. The step is the
minimum over --repeats timed steps after a warm-up, because the machine may be
shared; the median is reported alongside, and the CPU time the process used
per step (all threads; on an otherwise idle machine wall ~ CPU / cores), which
is the steadier figure when other jobs compete for the cores.

Memory, per model: the peak resident set of a process that trained that model
alone (each model runs in a child process of its own, so one model's peak is
not another's; host_memory.reuse_freed_memory is on, as in training), and
XLA's own plan for the compiled step (arguments + outputs + temporaries,
from memory_analysis). The two differ by what the process holds besides the
step (the runtime, the compiler, allocator slack).

The train step is the one training runs (memmlp_jax.train.make_train_step with
memmlp_optimizer: the model's loss with its learned or fixed weights, AdamW,
the VQ part frozen), jitted with the state donated; the batch is random
T+1-frame crops, which does not change the work done.
"""

import json
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from memmlp_jax import dims
from memmlp_jax import host_memory
from memmlp_jax import losses
from memmlp_jax import skeleton
from memmlp_jax import train
from memmlp_jax.models import configs
from memmlp_jax.models import factory

_MODELS = flags.DEFINE_list("models", list(configs.NAMES), "Models to time.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Windows per train step.")
_MICRO = flags.DEFINE_integer("micro_batches", 1, "Micro-batches per step "
                              "(RunConfig.micro_batches).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps per model.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.")
_FORMAT = flags.DEFINE_enum("format", "markdown", ["markdown", "json"],
                            "Output format.")
_ISOLATE = flags.DEFINE_bool(
    "isolate", True, "Measure each model in a child process of its own, so "
    "its peak resident memory is its own.")


def random_batch(cfg: configs.ModelConfig, batch: int, rng: jax.Array):
  """Random T+1-frame crops, the layout train.make_train_step takes."""
  keys = jax.random.split(rng, 3)
  shape = (batch, cfg.window + 1)
  return {"sparse": jax.random.normal(keys[0], shape + (dims.SPARSE_DIM,)),
          "rot6d": jax.random.normal(keys[1], shape + (dims.ROT6D_DIM,)),
          "pos": jax.random.normal(keys[2], shape + (dims.POS_DIM,)),
          "clip_frame": jnp.full((batch,), cfg.window, jnp.int32)}


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan")))


def _xla_bytes(compiled) -> float:
  """Arguments + outputs + temporaries of XLA's buffer plan (not aliased)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return float("nan")
  return float(stats.argument_size_in_bytes + stats.output_size_in_bytes
               - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


def peak_rss_gb() -> float:
  """This process's peak resident set so far, in GB (Linux: ru_maxrss KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def measure(name: str, batch: int, repeats: int, warmup: int) -> dict:
  cfg = configs.get_config(name)
  rng = jax.random.PRNGKey(0)
  model, variables = factory.init(cfg, rng)
  config = train.RunConfig(model=cfg, batch_size=batch,
                           micro_batches=_MICRO.value)
  optimizer = train.memmlp_optimizer(config)
  state = train.init_state(
      {"model": variables["params"], "loss": losses.init_log_vars(cfg)},
      optimizer)
  step = jax.jit(train.make_train_step("memmlp", model, config, optimizer,
                                       skeleton=skeleton.SMPL_NEUTRAL),
                 donate_argnums=0)
  data = random_batch(cfg, batch, rng)
  compiled = step.lower(state, data).compile()

  inputs = factory.dummy_inputs(cfg, 1)
  forward = jax.jit(lambda v, i: model.apply(v, **i, train=False))
  forward_flops = _flops(forward.lower(variables, inputs).compile())

  times, cpu_times = [], []
  for i in range(warmup + repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    state, metrics = compiled(state, data)
    jax.block_until_ready(metrics)
    if i >= warmup:
      times.append(time.perf_counter() - start)
      cpu_times.append(time.process_time() - cpu_start)
  best = min(times)
  return {
      "model": name,
      "micro_batches": _MICRO.value,
      "params": factory.count_params(cfg)["total"],
      "train_gflops_per_window": _flops(compiled) / batch / 1e9,
      "forward_gflops_per_window": forward_flops / 1e9,
      "ms_per_step": best * 1e3,
      "median_ms_per_step": statistics.median(times) * 1e3,
      "windows_per_s": batch / best,
      "cpu_s_per_step": min(cpu_times),
      "xla_plan_gb": _xla_bytes(compiled) / 1e9,
      "peak_rss_gb": peak_rss_gb(),
  }


def measure_alone(name: str, batch: int, repeats: int, warmup: int) -> dict:
  """measure() in a child process, whose peak memory is this model's."""
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.train_throughput", f"--models={name}",
       f"--batch_size={batch}", f"--repeats={repeats}", f"--warmup={warmup}",
       f"--micro_batches={_MICRO.value}",
       "--format=json", "--noisolate"], capture_output=True, text=True,
      check=False)
  if result.returncode != 0:
    raise RuntimeError(f"{name}: the measuring process failed "
                       f"(exit {result.returncode}): {result.stderr[-2000:]}")
  return json.loads(result.stdout)["models"][0]


def markdown(rows: list[dict], batch: int) -> str:
  lines = [
      f"backend: {jax.default_backend()} ({jax.device_count()} device(s), "
      f"{jax.devices()[0].device_kind}), batch {batch}",
      "",
      "| model | params (M) | train GFLOPs/window | forward GFLOPs/window "
      "| ms/step (min) | ms/step (median) | windows/s | CPU s/step "
      "| peak RSS (GB) | XLA plan (GB) |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    lines.append(
        f"| {r['model']} | {r['params'] / 1e6:.2f} "
        f"| {r['train_gflops_per_window']:.3f} "
        f"| {r['forward_gflops_per_window']:.3f} | {r['ms_per_step']:.0f} "
        f"| {r['median_ms_per_step']:.0f} | {r['windows_per_s']:.1f} "
        f"| {r['cpu_s_per_step']:.2f} | {r['peak_rss_gb']:.2f} "
        f"| {r['xla_plan_gb']:.2f} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = [m for m in _MODELS.value if m not in configs.NAMES]
  if unknown:
    raise app.UsageError(f"--models: unknown {unknown}; known: "
                         f"{', '.join(configs.NAMES)}")
  if _BATCH.value < 1 or _REPEATS.value < 1 or _WARMUP.value < 0:
    raise app.UsageError("--batch_size and --repeats must be >= 1, "
                         "--warmup >= 0")
  host_memory.reuse_freed_memory()
  run = measure_alone if _ISOLATE.value else measure
  rows = [run(m, _BATCH.value, _REPEATS.value, _WARMUP.value)
          for m in _MODELS.value]
  if _FORMAT.value == "json":
    print(json.dumps({"backend": jax.default_backend(),
                      "batch_size": _BATCH.value, "models": rows}, indent=2))
  else:
    print(markdown(rows, _BATCH.value))


if __name__ == "__main__":
  app.run(main)
