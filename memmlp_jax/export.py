"""The streaming step as a TFLite model, and a LiteRT runner for it (docs/design.md §6).

One TFLite signature (``serving_default``) is the streaming step for one
sequence: ``cached_step.step`` for Mem-MLP with the paper's memory block
(the same poses as ``rollout.step``, with the per-frame sparse work carried
in the state instead of recomputed), ``rollout.step`` for every other model:

  inputs   frame (1, 54) and the carried state, one tensor per state leaf;
  outputs  the pose (rot6d (1, 132), pos (1, 66) when the model has a position
           branch, lost (1,)) and the new state, under the same leaf names.

State leaves are named ``state_<field>`` after the step's State fields
(rollout: ``state_window`` (1, T, 54), ``state_prev_sparse`` (1, T, 54),
``state_prev_motion`` (1, T, 198), ``state_held`` (1, 54),
``state_started`` (1,); cached_step: ``state_window``, ``state_embedded``
(1, T, D), ``state_sparse_memory`` (1, T, M, D), ``state_prev_motion``,
``state_held``, ``state_started``); fields that are None are absent.
The JSON sidecar written next to the model (``model.tflite`` ->
``model.json``) lists every input and output with shape and dtype, the state
leaves with their initial values, the window, the model config, the
quantization, a checksum of the parameters and one of the .tflite bytes; the
runner refuses a sidecar that does not describe its model.

The conversion goes jax2tf (native serialization: one XlaCallModule of
StableHLO; jax 0.10 has no other mode) -> TFLiteConverter with builtin ops
only -> LiteRT interpreter, one thread, XNNPACK (the default delegate).

  tflite, sidecar = export.export_model(cfg, variables, quantize="none")
  export.save(tflite, sidecar, "model.tflite")
  runner = export.TFLiteStreamer("model.tflite")
  state = runner.init_state()
  state, pose = runner.step(state, frame)           # frame (54,) or (1, 54)
  runner.reset(); pose = runner.push(frame)         # state kept inside
  poses = export.predict_sequence("model.tflite", sparse)   # (N, 54) in

Why the step is not cut to the last frame: the pose is the window's last
frame, but a memory model's next state carries the whole predicted window
(prev_motion), so every row of every block is needed; see
docs/export_notes.md.
"""

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from memmlp_jax import cached_step
from memmlp_jax import dims
from memmlp_jax import rollout
from memmlp_jax.models import configs
from memmlp_jax.models import factory
from memmlp_jax.models import vqvae

FORMAT = "memmlp_jax.tflite_step/1"
SIGNATURE = "serving_default"
QUANTIZE = ("none", "fp16", "int8")
FRAME = "frame"
STATE_PREFIX = "state_"
POSE_KEYS = ("rot6d", "pos", "lost")

StepFn = Callable[[Any, jax.Array], tuple[Any, dict]]


class ExportError(Exception):
  """The step cannot be expressed with TFLite builtin ops (names the op)."""


class SidecarMismatchError(ValueError):
  """A .tflite file and its JSON sidecar do not describe the same model."""


# --------------------------------------------------------------- the step


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
    state, pose = rollout.step(model, variables, state, frame)
    return state, {k: v for k, v in pose.items() if v is not None}

  return rollout.init_state(cfg, batch=1), step


def _leaf_name(path) -> str:
  parts = []
  for key in path:
    part = getattr(key, "name", None) or getattr(key, "key", None)
    parts.append(str(part if part is not None else getattr(key, "idx", key)))
  return STATE_PREFIX + "_".join(parts)


def state_layout(state) -> list[tuple[str, Any]]:
  """[(tensor name, leaf)] for the non-None leaves of a state pytree."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [(_leaf_name(path), leaf) for path, leaf in leaves]


def _spec(name: str, x) -> dict:
  x = np.asarray(x)
  return {"name": name, "shape": list(x.shape), "dtype": x.dtype.name}


def _initial_value(x) -> dict:
  """A uniform leaf as {"fill": v}; anything else as its nested values."""
  x = np.asarray(x)
  flat = x.reshape(-1)
  if flat.size and np.all(flat == flat[0]):
    return {"fill": flat[0].item()}
  return {"values": x.tolist()}


def _materialize(spec: Mapping, init: Mapping) -> np.ndarray:
  if "fill" in init:
    return np.full(spec["shape"], init["fill"], spec["dtype"])
  return np.asarray(init["values"], spec["dtype"]).reshape(spec["shape"])


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



# ------------------------------------------------------------- conversion


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


def _converter_options(converter, quantize: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if quantize == "fp16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == "int8":
    # Dynamic range: int8 weights, float activations; no calibration data.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def convert_step(step: StepFn, state, *, quantize: str = "none",
                 frame_shape: tuple[int, ...] = (1, dims.SPARSE_DIM)
                 ) -> bytes:
  """The TFLite flatbuffer of ``step`` (its parameters baked in as constants).

  Raises:
    ExportError: an op has no TFLite builtin equivalent (the message names
      it), or ``quantize`` is unknown.
  """
  if quantize not in QUANTIZE:
    raise ExportError(f"quantize={quantize!r} is not one of {QUANTIZE}")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  layout = state_layout(state)
  treedef = jax.tree.structure(state)

  def flat_step(frame, *leaves):
    new_state, pose = step(jax.tree.unflatten(treedef, leaves), frame)
    outputs = dict(pose)
    outputs.update((name, leaf) for name, leaf in state_layout(new_state))
    return outputs

  specs = [tf.TensorSpec(frame_shape, tf.float32, name=FRAME)]
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
  _converter_options(converter, quantize)
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
             for name in POSE_KEYS if name in pose_names]
  return {
      "format": FORMAT,
      "signature": SIGNATURE,
      "model": cfg.name,
      "window": cfg.window,
      "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
      "quantize": quantize,
      "inputs": [_spec(FRAME, frame)] + [_spec(n, x) for n, x in layout],
      "outputs": outputs + [_spec(n, x) for n, x in layout],
      "state": [{**_spec(n, x), "init": _initial_value(x)}
                for n, x in layout],
      "param_checksum": param_checksum(params),
      "tflite_sha256": hashlib.sha256(tflite).hexdigest(),
  }


def export_model(cfg: configs.ModelConfig, variables, *,
                 quantize: str = "none",
                 cached: bool = True) -> tuple[bytes, dict]:
  """(tflite bytes, sidecar) of ``cfg``'s streaming step with ``variables``."""
  state, step = streaming_step(cfg, variables, cached=cached)
  pose_names = jax.eval_shape(
      step, state, jnp.zeros((1, dims.SPARSE_DIM)))[1].keys()
  tflite = convert_step(step, state, quantize=quantize)
  return tflite, make_sidecar(cfg, variables, state, tflite, quantize,
                              pose_names)


def sidecar_path(model_path: str) -> str:
  return os.path.splitext(model_path)[0] + ".json"


def save(tflite: bytes, sidecar: Mapping, model_path: str) -> str:
  """Writes the model and its sidecar; returns the sidecar's path."""
  with open(model_path, "wb") as f:
    f.write(tflite)
  path = sidecar_path(model_path)
  with open(path, "w") as f:
    json.dump(sidecar, f, indent=1)
  return path


# ------------------------------------------------------------------ runner


def load_sidecar(model_path: str) -> dict:
  """The sidecar of ``model_path``, checked against the model's bytes."""
  path = sidecar_path(model_path)
  if not os.path.exists(path):
    raise SidecarMismatchError(f"{path}: no sidecar next to {model_path}")
  try:
    with open(path) as f:
      sidecar = json.load(f)
  except json.JSONDecodeError as e:
    raise SidecarMismatchError(f"{path}: not JSON ({e})") from e
  if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
    raise SidecarMismatchError(f"{path}: not a {FORMAT} sidecar")
  with open(model_path, "rb") as f:
    actual = hashlib.sha256(f.read()).hexdigest()
  if sidecar.get("tflite_sha256") != actual:
    raise SidecarMismatchError(
        f"{path}: describes another model than {model_path} (sha256 "
        f"{str(sidecar.get('tflite_sha256'))[:12]}..., the file has "
        f"{actual[:12]}...)")
  return sidecar


def _check_signature(runner, sidecar: Mapping, model_path: str):
  """The signature's tensors must be the sidecar's, name, shape and dtype."""
  def described(details):
    return {name: (list(d["shape"]), np.dtype(d["dtype"]).name)
            for name, d in details.items()}
  expected_in = {t["name"]: (t["shape"], t["dtype"]) for t in sidecar["inputs"]}
  expected_out = {t["name"]: (t["shape"], t["dtype"])
                  for t in sidecar["outputs"]}
  got_in = described(runner.get_input_details())
  got_out = described(runner.get_output_details())
  for kind, want, got in (("inputs", expected_in, got_in),
                          ("outputs", expected_out, got_out)):
    if want != got:
      raise SidecarMismatchError(
          f"{sidecar_path(model_path)}: its {kind} {want} are not the "
          f"model's {got}")


class TFLiteStreamer:
  """Streams frames through an exported step, like rollout.init_state/step.

  Two ways to drive it:
  - ``step(state, frame)``: the state is a dict of NumPy arrays keyed by the
    sidecar's state names, passed in and returned, as with the JAX step;
  - ``reset()`` then ``push(frame)`` per frame: the state stays in the
    interpreter's tensors, each new state copied in place onto the inputs
    after every frame, as a headset runtime keeps it (about 5% faster per
    frame for memmlp41 than ``step``, which copies the state in and out).
  """

  def __init__(self, model_path: str, num_threads: int = 1):
    from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
    self.sidecar = load_sidecar(model_path)
    self._path, self._threads = model_path, num_threads
    self._runner = interpreter.Interpreter(
        model_path=model_path,
        num_threads=num_threads).get_signature_runner(SIGNATURE)
    _check_signature(self._runner, self.sidecar, model_path)
    self._state_names = [s["name"] for s in self.sidecar["state"]]
    self._inputs = {k: v["index"]
                    for k, v in self._runner.get_input_details().items()}
    self._outputs = {k: v["index"]
                     for k, v in self._runner.get_output_details().items()}
    # push() needs raw tensor access, which LiteRT refuses on an interpreter
    # that a signature runner holds: a second one, made on first reset().
    self._in_place = None

  @property
  def window(self) -> int:
    return self.sidecar["window"]

  def init_state(self) -> dict[str, np.ndarray]:
    """The state before the first frame."""
    return {s["name"]: _materialize(s, s["init"])
            for s in self.sidecar["state"]}

  def step(self, state: Mapping[str, np.ndarray], frame
           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(new state, pose); pose = {"rot6d": (1, 132), "pos"?, "lost": (1,)}."""
    frame = np.asarray(frame, np.float32).reshape(1, -1)
    out = self._runner(**{FRAME: frame}, **state)
    new_state = {name: out[name] for name in self._state_names}
    pose = {k: out[k] for k in POSE_KEYS if k in out}
    return new_state, pose

  def reset(self):
    """Starts a new sequence for ``push``: the initial state, in place."""
    if self._in_place is None:
      from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
      self._in_place = interpreter.Interpreter(model_path=self._path,
                                               num_threads=self._threads)
      self._in_place.allocate_tensors()
    for name, value in self.init_state().items():
      self._in_place.set_tensor(self._inputs[name], value)

  def push(self, frame) -> dict[str, np.ndarray]:
    """The pose of the next frame of the sequence ``reset`` started."""
    interpreter = self._in_place
    if interpreter is None:
      raise RuntimeError("call reset() before the first push()")
    interpreter.set_tensor(self._inputs[FRAME],
                           np.asarray(frame, np.float32).reshape(1, -1))
    interpreter.invoke()
    for name in self._state_names:
      # Views into the interpreter's buffers, dropped before the next
      # invoke (LiteRT refuses to run while one is held).
      interpreter.tensor(self._inputs[name])()[...] = interpreter.tensor(
          self._outputs[name])()
    return {k: interpreter.get_tensor(self._outputs[k])
            for k in POSE_KEYS if k in self._outputs}


def predict_sequence(model_path: str, sparse, num_threads: int = 1,
                     streamer: TFLiteStreamer | None = None) -> dict:
  """Poses of a whole sequence streamed through a .tflite step.

  Args:
    model_path: the exported model (its sidecar next to it).
    sparse: (N, 54) sparse input frames.
    num_threads: interpreter threads.
    streamer: reuse an open runner instead of loading ``model_path`` again.

  Returns:
    {"rot6d": (N, 132), "pos": (N, 66) or None, "lost": (N,)}, the same
    shape as one entry of ``rollout.rollout_sequences``.
  """
  streamer = streamer or TFLiteStreamer(model_path, num_threads)
  streamer.reset()
  poses = [streamer.push(frame) for frame in np.asarray(sparse, np.float32)]
  out = {k: np.concatenate([p[k] for p in poses]) for k in poses[0]}
  out.setdefault("pos", None)
  return out


def predict_sequences(model_path: str, sequences, num_threads: int = 1
                      ) -> list[dict]:
  """``predict_sequence`` for each sequence, like rollout.rollout_sequences."""
  streamer = TFLiteStreamer(model_path, num_threads)
  return [predict_sequence(model_path, s, streamer=streamer)
          for s in sequences]


def max_abs_difference(reference, exported) -> dict[str, float]:
  """Largest |a - b| per pose output over lists of per-sequence pose dicts."""
  keys = [k for k in ("rot6d", "pos") if reference[0].get(k) is not None]
  return {k: max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k]))))
                 for a, b in zip(reference, exported)) for k in keys}


def code_margin(cfg: configs.ModelConfig, params, state) -> jax.Array:
  """Smallest relative gap between the two nearest VQ codes the step reads.

  Over every row of the previous window in ``state`` (a ``rollout.State`` or
  ``cached_step.State``): (d_2 - d_1) / (|z|^2 + |c_1|^2), the squared
  distances to the nearest and second-nearest codes over the scale of the
  terms they are computed from, so float32 rounding is ~1e-7 on any
  codebook; +inf for models without a VQ code. Where it is a few rounding
  units the argmin is a tie that float rounding may break either way.
  """
  if not cfg.uses_vq:
    return jnp.asarray(jnp.inf)
  sparse = (state.prev_sparse if isinstance(state, rollout.State)
            else state.window)
  latent = vqvae.VQEncoder(cfg).apply({"params": params["vq"]}, sparse,
                                      state.prev_motion)["latent"]
  codebook = jnp.asarray(params["vq"]["codebook"])
  distances = vqvae.squared_distances(latent, codebook)
  nearest = jnp.sort(distances, axis=-1)
  chosen = codebook[jnp.argmin(distances, axis=-1)]
  scale = jnp.sum(latent * latent, axis=-1) + jnp.sum(chosen * chosen, -1)
  return jnp.min((nearest[..., 1] - nearest[..., 0]) / scale)


def step_parity(cfg: configs.ModelConfig, variables, model_path: str,
                sequences, tie_margin: float = 1e-6) -> dict:
  """The exported step against the JAX step it came from, on equal inputs.

  Every frame goes through the JAX step (which carries its own state) and
  through the .tflite given that same JAX state, so conversion error is
  measured per step instead of compounding through the memory's feedback.
  Frames where the VQ code of some memory row is a near-tie (two nearest
  codes within ``tie_margin`` relative, about 8 float32 rounding units, see
  ``code_margin``) are counted, not compared: there either code is a
  correct float32 result.

  Returns {"max": {output name: max |JAX - TFLite|}, "frames": n,
  "near_ties": k}.
  """
  initial, step = streaming_step(cfg, variables)
  step = jax.jit(step)
  margin = jax.jit(lambda state: code_margin(cfg, variables["params"], state))
  streamer = TFLiteStreamer(model_path)
  worst, frames, ties = {}, 0, 0
  for sequence in sequences:
    state = initial
    for frame in np.asarray(sequence, np.float32):
      inputs = {name: np.asarray(leaf) for name, leaf in state_layout(state)}
      tflite_state, tflite_pose = streamer.step(inputs, frame)
      tie = float(margin(state)) < tie_margin
      state, pose = step(state, frame[None])
      frames += 1
      if tie:
        ties += 1
        continue
      pairs = [(k, v, tflite_pose[k]) for k, v in pose.items()]
      pairs += [(k, v, tflite_state[k]) for k, v in state_layout(state)]
      for name, ours, theirs in pairs:
        ours = np.asarray(ours)
        if ours.dtype == bool:
          continue
        worst[name] = max(worst.get(name, 0.0),
                          float(np.max(np.abs(ours - theirs))))
  return {"max": worst, "frames": frames, "near_ties": ties}
