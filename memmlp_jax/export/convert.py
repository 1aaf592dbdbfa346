"""The streaming step, and its conversion to TFLite with its sidecar.

``streaming_step`` is the step that is exported: ``cached_step.step`` for
Mem-MLP with the paper's memory block, ``rollout.step`` for every other
model. ``convert_step`` goes jax2tf (native serialization: one XlaCallModule
of StableHLO; jax 0.10 has no other mode) -> TFLiteConverter with builtin
ops only; ``export_model`` adds the sidecar (sidecar.py). The int8 variants
and what each keeps float are in quantize.py; the calibrated ones take a
representative dataset (calibration.rollout_samples).
"""

import dataclasses
import functools
import hashlib
import json
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from memmlp_jax import cached_step
from memmlp_jax import dims
from memmlp_jax import rollout
from memmlp_jax import two_pass
from memmlp_jax.export import quantize as quantize_lib
from memmlp_jax.export import sidecar as sidecar_lib
from memmlp_jax.models import configs
from memmlp_jax.models import factory

# none: float32. fp16: float16 weights. The int8 variants: quantize.py.
QUANTIZE = ("none", "fp16", "int8", "int8_onepass", "int8_dynamic",
            "int8_full", "int8_mixed")
# Variants that need a representative dataset (inputs of real steps).
CALIBRATED = ("int8_onepass", "int8_full", "int8_mixed")

StepFn = Callable[[Any, jax.Array], tuple[Any, dict]]


class ExportError(Exception):
  """The step cannot be expressed with TFLite builtin ops (names the op)."""


def streaming_step(cfg: configs.ModelConfig, variables, *,
                   cached: bool = True) -> tuple[Any, StepFn]:
  """(initial state for one sequence, step(state, frame (1, 54))).

  ``cached``: Mem-MLP with the paper's memory block uses
  ``cached_step.step`` (same poses, less work per frame); other models, or
  ``cached=False``, use ``rollout.step`` itself.
  """
  if cached and cached_step.supports(cfg):
    def step(state, frame):
      state, pose = cached_step.step(cfg, variables, state, frame)
      return state, {k: v for k, v in pose.items() if v is not None}

    return cached_step.init_state(cfg, batch=1), step

  model = factory.build(cfg)

  def step(state, frame):  # pylint: disable=function-redefined
    state, pose = rollout.step_body(model, variables, state, frame)
    return state, {k: v for k, v in pose.items() if v is not None}

  return rollout.init_state(cfg, batch=1), step


def _leaf_name(path) -> str:
  parts = []
  for key in path:
    part = getattr(key, "name", None) or getattr(key, "key", None)
    parts.append(str(part if part is not None else getattr(key, "idx", key)))
  return sidecar_lib.STATE_PREFIX + "_".join(parts)


def state_layout(state) -> list[tuple[str, Any]]:
  """[(tensor name, leaf)] for the non-None leaves of a state pytree."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [(_leaf_name(path), leaf) for path, leaf in leaves]


def param_checksum(params) -> str:
  """sha256 over the parameter leaves' paths, dtypes, shapes and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    leaf = np.ascontiguousarray(np.asarray(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{leaf.dtype.name}{leaf.shape}".encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()


def step_flops(step: StepFn, state,
               frame_shape: tuple[int, ...] = (1, dims.SPARSE_DIM)) -> float:
  """FLOPs of one step from XLA's cost analysis (a multiply-add counts 2)."""
  frame = jnp.zeros(frame_shape, jnp.float32)
  compiled = jax.jit(step).lower(state, frame).compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


def random_variables(cfg: configs.ModelConfig, seed: int = 0) -> dict:
  """Random variables of the right shapes (LayerNorm scales near 1).

  For latency measurements and tests: drawn in NumPy from the shapes alone,
  which avoids compiling the initialisers (tens of seconds on a busy CPU).
  """
  shapes = jax.eval_shape(
      lambda: factory.init(cfg, jax.random.PRNGKey(seed))[1])
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    noise = 0.1 * rng.standard_normal(leaf.shape)
    is_scale = getattr(path[-1], "key", None) == "scale"
    return np.asarray(noise + is_scale, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _unsupported_ops(error_text: str) -> list[str]:
  """Op names the converter could not lower, read from its error text."""
  patterns = (r"'(?:vhlo|stablehlo|mhlo|chlo)\.([a-z_0-9]+?)(?:_v\d+)?' op "
              r"(?:is not part|failed|is neither)",
              r"failed to legalize operation '([^']+)'",
              r"custom_call_target = \"([^\"]+)\"",
              r"\\00(lapack_[a-z0-9_]+|[a-z0-9_]+_ffi)\\00",
              r"(?:Flex|Custom) ops: ([A-Za-z0-9_, ]+)")
  found = []
  for pattern in patterns:
    for match in re.findall(pattern, error_text):
      for name in match.split(", "):
        name = name.strip()
        if name and name not in found and name != "XlaCallModule":
          found.append(name)
  return found


def _converter_options(converter, quantize: str, representative):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if quantize == "fp16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == "int8_dynamic":
    # Dynamic range: int8 weights, activations quantized per row at run
    # time; no calibration data.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  elif quantize == "calibrate":
    # The float model with each tensor's range over the dataset recorded;
    # quantize.quantize_calibrated quantizes it, leaving chosen ops float.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(representative)
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access


def convert_step(step: StepFn, state, *, quantize: str = "none",
                 frame_shape: tuple[int, ...] = (1, dims.SPARSE_DIM),
                 representative=None) -> bytes:
  """The TFLite flatbuffer of ``step`` (its parameters baked in as constants).

  ``representative``: for the ``CALIBRATED`` variants, inputs of real steps
  ([{tensor name: array}], calibration.rollout_samples).

  Raises:
    ExportError: an op has no TFLite builtin equivalent (the message names
      it), ``quantize`` is unknown, or a calibrated variant has no
      representative dataset.
  """
  if quantize not in QUANTIZE:
    raise ExportError(f"quantize={quantize!r} is not one of {QUANTIZE}")
  if quantize in CALIBRATED and not representative:
    raise ExportError(f"quantize={quantize!r} needs a representative "
                      "dataset (calibration.rollout_samples)")
  convert = functools.partial(_convert, step, state, frame_shape=frame_shape,
                              representative=representative)
  if quantize in ("none", "fp16", "int8_dynamic"):
    return convert(quantize)
  float_model = convert("none")
  regions = quantize_lib.float_regions(float_model)
  if quantize in ("int8", "int8_onepass"):
    return quantize_lib.keep_weights_float(
        convert("int8_dynamic"), float_model,
        regions["recurrence_weights"] | regions["output"]
        | regions["per_frame"])
  calibrated = convert("calibrate")
  if quantize == "int8_full":
    return quantize_lib.quantize_calibrated(calibrated)
  return quantize_lib.quantize_calibrated(
      calibrated, regions["recurrence"] | regions["output_ops"])


def _convert(step: StepFn, state, quantize: str, *, frame_shape,
             representative) -> bytes:
  """One converter run: float, fp16, dynamic range or calibrated float."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  layout = state_layout(state)
  treedef = jax.tree.structure(state)

  def flat_step(frame, *leaves):
    new_state, pose = step(jax.tree.unflatten(treedef, leaves), frame)
    outputs = dict(pose)
    outputs.update((name, leaf) for name, leaf in state_layout(new_state))
    return outputs

  specs = [tf.TensorSpec(frame_shape, tf.float32, name=sidecar_lib.FRAME)]
  specs += [tf.TensorSpec(np.shape(leaf), tf.as_dtype(np.asarray(leaf).dtype),
                          name=name) for name, leaf in layout]
  converted = jax2tf.convert(flat_step, with_gradient=False)

  class StepModule(tf.Module):

    @tf.function(input_signature=specs, autograph=False)
    def step(self, *args):
      return converted(*args)

  module = StepModule()
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.step.get_concrete_function()], module)
  _converter_options(converter, quantize, representative)
  try:
    return converter.convert()
  except Exception as e:  # pylint: disable=broad-except
    ops = _unsupported_ops(str(e))
    named = ", ".join(repr(op) for op in ops) or "(unnamed; see the cause)"
    raise ExportError(f"TFLite builtin ops cannot express op {named} of the "
                      "step; rewrite it with supported ops") from e


def make_sidecar(cfg: configs.ModelConfig, params, state, tflite: bytes,
                 quantize: str, pose_names) -> dict:
  """The JSON-ready description of an exported step."""
  layout = state_layout(state)
  frame = np.zeros((1, dims.SPARSE_DIM), np.float32)
  pose_specs = {"rot6d": (1, dims.ROT6D_DIM), "pos": (1, dims.POS_DIM),
                "lost": (1,)}
  outputs = [{"name": name, "shape": list(pose_specs[name]),
              "dtype": "bool" if name == "lost" else "float32"}
             for name in sidecar_lib.POSE_KEYS if name in pose_names]
  return {
      "format": sidecar_lib.FORMAT,
      "signature": sidecar_lib.SIGNATURE,
      "model": cfg.name,
      "window": cfg.window,
      "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
      "quantize": quantize,
      "inputs": ([sidecar_lib.spec(sidecar_lib.FRAME, frame)]
                 + [sidecar_lib.spec(n, x) for n, x in layout]),
      "outputs": outputs + [sidecar_lib.spec(n, x) for n, x in layout],
      "state": [{**sidecar_lib.spec(n, x),
                 "init": sidecar_lib.initial_value(x)} for n, x in layout],
      "param_checksum": param_checksum(params),
      "tflite_sha256": hashlib.sha256(tflite).hexdigest(),
  }


def smoothed(cfg: configs.ModelConfig, variables, representative):
  """``variables`` rescaled as the int8_onepass export smooths them
  (quantize.smooth, with the maxima of the ``representative`` steps)."""
  state, step = streaming_step(cfg, variables)
  names = [name for name, _ in state_layout(state)]
  maxima = quantize_lib.dense_input_maxima(step, state, names, representative)
  return quantize_lib.smooth(variables, maxima)


def two_pass_step(step: StepFn) -> StepFn:
  """``step`` traced with the MLP blocks' Linears as two int8 passes
  (two_pass.py): the graph of the chosen int8 export."""

  def traced(state, frame):
    with two_pass.exported():
      return step(state, frame)

  return traced


def export_model(cfg: configs.ModelConfig, variables, *,
                 quantize: str = "none", cached: bool = True,
                 representative=None, smooth: bool = True
                 ) -> tuple[bytes, dict]:
  """(tflite bytes, sidecar) of ``cfg``'s streaming step with ``variables``.

  ``representative``: inputs of real steps for the calibrated int8
  variants (``CALIBRATED``); "int8_onepass" also smooths the activations
  with them first (quantize.smooth, an exact rewrite of the parameters)
  unless ``smooth`` is False: a model fine-tuned with
  fake_quant="int8_onepass" learned the rounding of its own, unsmoothed
  activations. "int8" needs neither (two_pass.py).
  """
  if quantize == "int8_onepass" and representative and smooth:
    state, step = streaming_step(
        cfg, smoothed(cfg, variables, representative), cached=cached)
  else:
    state, step = streaming_step(cfg, variables, cached=cached)
  if quantize == "int8":
    step = two_pass_step(step)
  pose_names = jax.eval_shape(
      step, state, jnp.zeros((1, dims.SPARSE_DIM)))[1].keys()
  tflite = convert_step(step, state, quantize=quantize,
                        representative=representative)
  return tflite, make_sidecar(cfg, variables, state, tflite, quantize,
                              pose_names)
