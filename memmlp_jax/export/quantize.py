"""Int8 variants of an exported step: which ops stay float, and why.

Measured on the trained memmlp41 (docs/export_notes.md), the model's
output is sensitive to per-frame noise: int8 activations in one backbone
Dense alone raise the jitter by half, and in the output Linears they move
each frame's pose by millimetres. So the variants differ in where the
activations are quantized:

  int8_dynamic  every Dense with int8 weights and activations quantized per
                row at run time (the converter's dynamic range mode);
  int8_full     post-training full-integer quantization: int8 weights and
                activations everywhere the builtin ops allow, with ranges
                calibrated on steps of real rollouts (calibration.py);
  int8_mixed    int8_full with the recurrence (every op computed from the
                carried prediction before it meets the new frame: the VQ
                encoder, its argmin and code, the memory projections and
                the fusion Linears reading them) and the output Linears in
                float;
  int8_onepass  int8_dynamic for the backbone and head blocks, with the same
                ops as int8_mixed kept float (float weights too), the
                per-frame Linears of the new frame in float (one row each,
                free), and the activations smoothed first (``smooth``);
  int8          the chosen one: int8_onepass with each block Linear run as
                two int8 passes of its kernel, over the integer part of its
                scaled input and over the remainder (memmlp_jax/two_pass.py):
                about 16 bits of the input for two int8 GEMMs, no smoothing
                and no calibration.

The graph is analysed on the converted float model (``float_regions``):
which ops depend on the frame and which on the carried motion, and which
Linears feed the pose with nothing but reshapes in between. Op and tensor
names are those jax2tf gives (the Flax module path), equal across the
float, calibrated and quantized conversions of one step.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Ops that move or select values without computing on them: the Linears
# found by walking back from the pose through these write the pose.
_PASS_THROUGH = {"RESHAPE", "CONCATENATION", "SLICE", "STRIDED_SLICE",
                 "SELECT", "SELECT_V2", "QUANTIZE", "DEQUANTIZE", "GATHER"}
# Rows at most this many: the per-frame Linears of the cached step (the new
# frame's embedding and sparse memory rows).
_PER_FRAME_ROWS = 2


# ------------------------------------------------------------ smoothing


def dense_input_maxima(step: Callable, initial_state, names: Sequence[str],
                       samples) -> dict[tuple, np.ndarray]:
  """{Dense module path: max |input| per input channel} over ``samples``.

  ``step(state, frame)`` is the streaming step, ``initial_state`` a state of
  its structure, ``names`` its leaves' tensor names (convert.state_layout).
  """

  @jax.jit
  def step_maxima(state, frame):
    found = {}

    def record(next_fun, args, kwargs, context):
      if (isinstance(context.module, nn.Dense)
          and context.method_name == "__call__"):
        x = jnp.abs(args[0]).reshape(-1, args[0].shape[-1]).max(axis=0)
        path = "/".join(context.module.path)
        found[path] = jnp.maximum(found.get(path, 0.0), x)
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      step(state, frame)
    return found

  treedef = jax.tree.structure(initial_state)
  maxima = {}
  for sample in samples:
    state = jax.tree.unflatten(treedef, [sample[n] for n in names])
    for path, x in step_maxima(state, sample["frame"]).items():
      maxima[path] = np.maximum(maxima.get(path, 0.0), np.asarray(x))
  return {tuple(path.split("/")): x for path, x in maxima.items()}


def _layer_norm_dense_pairs(params, path=()) -> list[tuple[tuple, tuple]]:
  """(LayerNorm path, Dense path) of every Dense that reads a LayerNorm."""
  if not isinstance(params, dict):
    return []
  pairs = []
  if "norm_dense" in params and "dense" in params:  # blocks.MLPBlock
    pairs.append((path + ("norm_dense",), path + ("dense",)))
  # blocks.LNLinearSiLU (the VQ encoder); ProjectLNSiLU (memory_i) has the
  # same names but applies its Dense first.
  if ("LayerNorm_0" in params and "Dense_0" in params
      and not any(p.startswith("memory_") for p in path)):
    pairs.append((path + ("LayerNorm_0",), path + ("Dense_0",)))
  for key, child in params.items():
    pairs += _layer_norm_dense_pairs(child, path + (key,))
  return pairs


def smooth(variables, maxima: dict[tuple, Any], alpha: float = 0.75):
  """``variables`` with each LayerNorm -> Dense pair rescaled, exactly.

  SmoothQuant (Xiao et al. 2023): the Dense's input channel j is divided by
  s_j = max|x_j|^alpha / max_k |W_jk|^(1 - alpha) (folded into the
  LayerNorm's scale and bias) and its kernel row j multiplied by s_j. The
  float function is unchanged; the int8 one no longer has a few large
  channels setting each row's quantization step (the backbone's inputs have
  a channel maximum ~7 against a median of ~0.5). ``maxima`` from
  ``dense_input_maxima``; alpha 0.75 measured best of 0.5/0.75/0.9.
  """
  params = jax.tree.map(np.array, variables["params"])

  def get(path):
    node = params
    for key in path:
      node = node[key]
    return node

  for norm_path, dense_path in _layer_norm_dense_pairs(params):
    if dense_path not in maxima:
      continue
    norm, dense = get(norm_path), get(dense_path)
    w_max = np.abs(dense["kernel"]).max(axis=1)
    s = (np.maximum(maxima[dense_path], 1e-5) ** alpha
         / np.maximum(w_max, 1e-5) ** (1.0 - alpha)).astype(np.float32)
    norm["scale"] = norm["scale"] / s
    norm["bias"] = norm["bias"] / s
    dense["kernel"] = dense["kernel"] * s[:, None]
  return {**variables, "params": params}


# --------------------------------------------------------- graph analysis


def _model(tflite: bytes):
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  return flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))


def _op_name(model, op) -> str:
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  return flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)


def _signature_tensors(model, which: str) -> dict[str, int]:
  signature = model.signatureDefs[0]
  return {t.name.decode(): t.tensorIndex for t in getattr(signature, which)}


def float_regions(float_tflite: bytes) -> dict[str, set[str]]:
  """Names of what the int8 variants keep float, from the float model.

  Returns {"recurrence": output tensor names of the ops computed from the
  carried motion (``state_prev_motion``) and not from the new frame;
  "recurrence_weights": weight names of its Linears; "output": weight
  names of the Linears that write the pose, "output_ops" their output
  names; "per_frame": weight names of the Linears of at most two rows}.
  """
  model = _model(float_tflite)
  graph = model.subgraphs[0]
  inputs = _signature_tensors(model, "inputs")
  outputs = _signature_tensors(model, "outputs")

  def descendants(source: str) -> set[int]:
    if source not in inputs:  # a model without memory: no recurrence
      return set()
    reached = {inputs[source]}
    for op in graph.operators:  # topologically ordered
      if any(i in reached for i in op.inputs):
        reached.update(op.outputs)
    return reached

  from_frame = descendants("frame")
  from_motion = descendants("state_prev_motion")
  tensor_name = lambda i: graph.tensors[i].name.decode()
  producer = {o: op for op in graph.operators for o in op.outputs}
  regions = {"recurrence": set(), "recurrence_weights": set(),
             "output": set(), "output_ops": set(), "per_frame": set()}
  for op in graph.operators:
    out = op.outputs[0]
    recurrent = out in from_motion and out not in from_frame
    if recurrent:
      regions["recurrence"].add(tensor_name(out))
    if _op_name(model, op) == "FULLY_CONNECTED":
      weight = tensor_name(op.inputs[1])
      rows = int(np.prod(graph.tensors[op.inputs[0]].shape[:-1]))
      if recurrent:
        regions["recurrence_weights"].add(weight)
      if rows <= _PER_FRAME_ROWS:
        regions["per_frame"].add(weight)
  # Walk back from the pose outputs through ops that only move values.
  stack = [outputs[k] for k in ("rot6d", "pos") if k in outputs]
  seen = set()
  while stack:
    tensor = stack.pop()
    op = producer.get(tensor)
    if op is None or tensor in seen:
      continue
    seen.add(tensor)
    name = _op_name(model, op)
    if name == "FULLY_CONNECTED":
      regions["output"].add(tensor_name(op.inputs[1]))
      regions["output_ops"].add(tensor_name(op.outputs[0]))
    elif name in _PASS_THROUGH:
      stack.extend(i for i in op.inputs if i >= 0)
  return regions


def linear_weight_types(tflite: bytes) -> dict[str, str]:
  """{weight name: "float32" | "int8" ...} of every FULLY_CONNECTED."""
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  model = _model(tflite)
  graph = model.subgraphs[0]
  return {graph.tensors[op.inputs[1]].name.decode():
          flatbuffer_utils.type_to_name(
              graph.tensors[op.inputs[1]].type).lower()
          for op in graph.operators
          if _op_name(model, op) == "FULLY_CONNECTED"}


def keep_weights_float(quantized: bytes, float_tflite: bytes,
                       weight_names: set[str]) -> bytes:
  """``quantized`` (dynamic range) with the named Linears' weights float.

  A dynamic-range FULLY_CONNECTED whose weights are float is a plain float
  one: its input is then not quantized either. The float weights are those
  of ``float_tflite``, the same step converted without quantization. Only
  FULLY_CONNECTED weights are matched: the converter may give other
  constants (shapes, folded values) the same generic name.
  """
  from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  model, reference = _model(quantized), _model(float_tflite)

  def linear_weights(flatbuffer) -> dict[str, Any]:
    graph = flatbuffer.subgraphs[0]
    found = {}
    for op in graph.operators:
      if _op_name(flatbuffer, op) != "FULLY_CONNECTED":
        continue
      tensor = graph.tensors[op.inputs[1]]
      name = tensor.name.decode()
      if name in weight_names:
        if found.get(name, tensor) is not tensor:
          raise ValueError(f"two Linears' weights are named {name!r}")
        found[name] = tensor
    return found

  ref_weights = linear_weights(reference)
  missing = weight_names - set(ref_weights)
  if missing:
    raise ValueError(f"weights not in the float model: {sorted(missing)[:3]}")
  for name, tensor in linear_weights(model).items():
    if tensor.type != schema.TensorType.FLOAT32:
      model.buffers[tensor.buffer].data = (
          reference.buffers[ref_weights[name].buffer].data)
      tensor.type = schema.TensorType.FLOAT32
      tensor.quantization = None
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def quantize_calibrated(calibrated: bytes, float_nodes: Sequence[str] = ()
                        ) -> bytes:
  """Full-integer quantization of a calibrated model, ``float_nodes`` left
  float (op output names; inputs and outputs of the model stay float)."""
  from tensorflow.lite.python import convert  # pylint: disable=g-import-not-at-top
  return convert.mlir_quantize(
      calibrated, disable_per_channel=False, fully_quantize=False,
      denylisted_nodes=sorted(float_nodes) or None)
