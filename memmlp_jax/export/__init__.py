"""The streaming step as a TFLite model, its LiteRT runner, parity (docs/design.md §6).

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

The package, one concern per module:

  convert.py  the streaming step, jax2tf -> TFLite, the sidecar's contents
  quantize.py the int8 variants: what each keeps float, smoothing (the
              chosen int8's two-pass Linears: memmlp_jax/two_pass.py)
  calibration.py  inputs of real rollout steps for the calibrated variants
  sidecar.py  the sidecar's format: writing, reading, checking (NumPy only)
  runner.py   the LiteRT runner (NumPy and LiteRT only)
  parity.py   the exported step against the JAX step it came from

  tflite, sidecar = convert.export_model(cfg, variables, quantize="none")
  tflite, sidecar = convert.export_model(cfg, variables, quantize="int8")
  samples = calibration.rollout_samples(cfg, variables, training_sequences)
  tflite, sidecar = convert.export_model(cfg, variables, quantize="int8_full",
                                         representative=samples)
  sidecar_lib.save(tflite, sidecar, "model.tflite")
  streamer = runner.TFLiteStreamer("model.tflite")
  state = streamer.init_state()
  state, pose = streamer.step(state, frame)         # frame (54,) or (1, 54)
  streamer.reset(); pose = streamer.push(frame)     # state kept inside
  poses = runner.predict_sequence("model.tflite", sparse)   # (N, 54) in

The public names are also re-exported here (``export.TFLiteStreamer`` ...)
for the callers written against the single module this package was.

Why the step is not cut to the last frame: the pose is the window's last
frame, but a memory model's next state carries the whole predicted window
(prev_motion), so every row of every block is needed; see
docs/export_notes.md.
"""

# pylint: disable=g-importing-member,useless-import-alias
from memmlp_jax.export.convert import CALIBRATED
from memmlp_jax.export.convert import convert_step
from memmlp_jax.export.convert import export_model
from memmlp_jax.export.convert import ExportError
from memmlp_jax.export.convert import make_sidecar
from memmlp_jax.export.convert import param_checksum
from memmlp_jax.export.convert import QUANTIZE
from memmlp_jax.export.convert import random_variables
from memmlp_jax.export.convert import state_layout
from memmlp_jax.export.convert import step_flops
from memmlp_jax.export.convert import StepFn
from memmlp_jax.export.convert import streaming_step
from memmlp_jax.export.parity import code_margin
from memmlp_jax.export.parity import max_abs_difference
from memmlp_jax.export.parity import step_parity
from memmlp_jax.export.runner import predict_sequence
from memmlp_jax.export.runner import predict_sequences
from memmlp_jax.export.runner import TFLiteStreamer
from memmlp_jax.export.sidecar import FORMAT
from memmlp_jax.export.sidecar import FRAME
from memmlp_jax.export.sidecar import load_sidecar
from memmlp_jax.export.sidecar import POSE_KEYS
from memmlp_jax.export.sidecar import save
from memmlp_jax.export.sidecar import sidecar_path
from memmlp_jax.export.sidecar import SidecarMismatchError
from memmlp_jax.export.sidecar import SIGNATURE
from memmlp_jax.export.sidecar import STATE_PREFIX
