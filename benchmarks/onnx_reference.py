r"""The peers' deployment path on this machine: AGRoL-MLP in onnxruntime.

  python -m benchmarks.onnx_reference [--models=agrol_mlp41,agrol_mlp196]
      [--threads=1] [--rounds=10] [--frames=300]

The paper ships its model as ONNX run on one CPU core; the project's reference
latencies (AGRoL-MLP-41 5.8 ms, AGRoL-MLP-196 25.8 ms per frame) are the
peers' PyTorch models exported to ONNX and run by onnxruntime. This writes
AGRoL's MLP as the graph torch.onnx.export emits for it (MatMul + Add for
each nn.Linear on (B, T, D), Conv with a 1-wide kernel for the Conv1d over
frames, LayerNormalization, Sigmoid * x for SiLU) with our agrol_mlp
parameters, checks it against our JAX model, and times one window per frame
(the peers recompute the whole window at every frame) on --threads threads,
in rounds interleaved with our exported memmlp41 and agrol_mlp41 TFLite
steps, so one run gives the ratios. Random weights: latency does not depend
on them.
"""

import logging as std_logging
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from memmlp_jax import dims
from memmlp_jax.export import convert
from memmlp_jax.export import runner
from memmlp_jax.export import sidecar as sidecar_lib
from memmlp_jax.models import configs


def _define_flags():
  """The program's flags, defined only when it runs.

  The tests import this module for agrol_onnx and onnx_session beside the
  apps, whose --tflite is another flag.
  """
  global _MODELS, _TFLITE, _THREADS, _FRAMES, _ROUNDS  # pylint: disable=global-statement
  _MODELS = flags.DEFINE_list("models", ["agrol_mlp41", "agrol_mlp196"],
                              "AGRoL-MLP configs to write as ONNX and time.")
  _TFLITE = flags.DEFINE_list("tflite", ["memmlp41", "agrol_mlp41"],
                              "Our exported steps timed in the same rounds.")
  _THREADS = flags.DEFINE_integer("threads", 1, "Threads of both runtimes.")
  _FRAMES = flags.DEFINE_integer("frames", 300, "Timed frames per model.")
  _ROUNDS = flags.DEFINE_integer("rounds", 10, "Rounds over all models.")


_MODELS = _TFLITE = _THREADS = _FRAMES = _ROUNDS = None

OPSET = 17  # LayerNormalization


def agrol_onnx(cfg: configs.ModelConfig, params) -> bytes:
  """AGRoL-MLP (no memory, one Linear rotation head) as an ONNX model.

  Input "sparse" (1, T, 54), output "rot6d" (1, T, 132), laid out as the
  PyTorch module is: batch-major (B, T, D), the time mix a Conv over the T
  channels.
  """
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import helper  # pylint: disable=g-import-not-at-top
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  if cfg.arch != "mlp" or cfg.uses_memory or cfg.multi_head or cfg.head_blocks:
    raise ValueError(f"{cfg.name}: only AGRoL-MLP configs (no memory, one "
                     "Linear rotation head) are written as ONNX")
  nodes, weights = [], []

  def const(name, value):
    weights.append(numpy_helper.from_array(
        np.asarray(value, np.float32), name))
    return name

  def linear(x, dense, name):
    y = f"{name}_matmul"
    nodes.append(helper.make_node("MatMul", [x, const(f"{name}.w",
                                                      dense["kernel"])], [y]))
    nodes.append(helper.make_node("Add", [y, const(f"{name}.b",
                                                   dense["bias"])], [name]))
    return name

  def layer_norm(x, norm, name):
    nodes.append(helper.make_node(
        "LayerNormalization",
        [x, const(f"{name}.g", norm["scale"]), const(f"{name}.b",
                                                     norm["bias"])],
        [name], axis=-1, epsilon=1e-5))
    return name

  def silu(x, name):
    nodes.append(helper.make_node("Sigmoid", [x], [f"{name}_sigmoid"]))
    nodes.append(helper.make_node("Mul", [x, f"{name}_sigmoid"], [name]))
    return name

  def add(a, b, name):
    nodes.append(helper.make_node("Add", [a, b], [name]))
    return name

  h = linear("sparse", params["embed"], "embed")
  for i in range(1, cfg.num_blocks + 1):
    block, prefix = params[f"block_{i}"], f"block_{i}"
    mix = block["time_mix"]
    # Conv1d(T, T, 1): weight (T_out, T_in, 1); ours is (T_in, T_out).
    nodes.append(helper.make_node(
        "Conv", [layer_norm(h, block["norm_time"], f"{prefix}.ln0"),
                 const(f"{prefix}.conv.w",
                       np.asarray(mix["kernel"]).T[:, :, None]),
                 const(f"{prefix}.conv.b", mix["bias"])],
        [f"{prefix}.conv"], kernel_shape=[1]))
    h = add(h, silu(f"{prefix}.conv", f"{prefix}.act0"), f"{prefix}.res0")
    dense = linear(layer_norm(h, block["norm_dense"], f"{prefix}.ln1"),
                   block["dense"], f"{prefix}.fc")
    h = add(h, silu(dense, f"{prefix}.act1"), f"{prefix}.res1")
  linear(h, params["rot_head"]["out"], "rot6d")
  window = cfg.window
  graph = helper.make_graph(
      nodes, cfg.name,
      [helper.make_tensor_value_info("sparse", onnx.TensorProto.FLOAT,
                                     [1, window, dims.SPARSE_DIM])],
      [helper.make_tensor_value_info("rot6d", onnx.TensorProto.FLOAT,
                                     [1, window, dims.ROT6D_DIM])],
      weights)
  model = helper.make_model(graph,
                            opset_imports=[helper.make_opsetid("", OPSET)])
  onnx.checker.check_model(model)
  return model.SerializeToString()


def onnx_session(model: bytes, threads: int):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = threads
  options.inter_op_num_threads = 1
  options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
  options.graph_optimization_level = (
      onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL)
  return onnxruntime.InferenceSession(model, options,
                                      providers=["CPUExecutionProvider"])


def _timed(run, frames: int) -> list[float]:
  run()  # warm-up
  times = []
  for i in range(frames):
    start = time.perf_counter()
    run(i)
    times.append(time.perf_counter() - start)
  return times


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
  logging.set_verbosity(logging.WARNING)
  for name in _MODELS.value + _TFLITE.value:
    if name not in configs.NAMES:
      raise app.UsageError(f"unknown model {name!r}; known: "
                           f"{', '.join(configs.NAMES)}")
  longest = max(configs.get_config(n).window for n in _MODELS.value)
  inputs = np.random.RandomState(0).randn(64 + longest, 54).astype(
      np.float32) * 0.3
  runners = {}
  for name in _MODELS.value:
    cfg = configs.get_config(name)
    session = onnx_session(agrol_onnx(cfg, convert.random_variables(cfg)[
        "params"]), _THREADS.value)
    windows = np.stack([inputs[i:i + cfg.window] for i in range(64)])[:, None]
    runners[f"{name} (ONNX, onnxruntime)"] = (
        lambda i=0, s=session, w=windows: s.run(None, {"sparse": w[i % 64]}))
  with tempfile.TemporaryDirectory() as workdir:
    for name in _TFLITE.value:
      cfg = configs.get_config(name)
      tflite, sidecar = convert.export_model(cfg, convert.random_variables(cfg))
      path = os.path.join(workdir, f"{name}.tflite")
      sidecar_lib.save(tflite, sidecar, path)
      streamer = runner.TFLiteStreamer(path, num_threads=_THREADS.value)
      streamer.reset()
      runners[f"{name} (ours, TFLite step)"] = (
          lambda i=0, s=streamer: s.push(inputs[i % 64]))
    times = {name: [] for name in runners}
    per_round = max(1, _FRAMES.value // _ROUNDS.value)
    for _ in range(_ROUNDS.value):
      for name, run in runners.items():
        times[name] += _timed(run, per_round)
  medians = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
  print(f"onnxruntime and LiteRT, {_THREADS.value} thread(s), ms per frame\n")
  print("| model | median ms | p90 ms |\n|---|---|---|")
  for name, t in times.items():
    print(f"| {name} | {medians[name]:.2f} | "
          f"{1e3 * np.percentile(t, 90):.2f} |")
  reference = medians.get("agrol_mlp41 (ONNX, onnxruntime)")
  ours = medians.get("memmlp41 (ours, TFLite step)")
  if reference and ours:
    print(f"\nmemmlp41 (TFLite) / AGRoL-MLP-41 (onnxruntime): "
          f"{ours / reference:.2f}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
