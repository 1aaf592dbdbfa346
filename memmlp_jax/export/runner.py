"""The LiteRT runner of an exported step (convert.py writes it).

  runner = runner.TFLiteStreamer("model.tflite")
  state = runner.init_state()
  state, pose = runner.step(state, frame)           # frame (54,) or (1, 54)
  runner.reset(); pose = runner.push(frame)         # state kept inside
  poses = runner.predict_sequence("model.tflite", sparse)   # (N, 54) in

One thread, XNNPACK (LiteRT's default delegate). NumPy and LiteRT only: no
JAX, no TensorFlow.
"""

from typing import Mapping

import numpy as np

from memmlp_jax.export import sidecar as sidecar_lib


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
      raise sidecar_lib.SidecarMismatchError(
          f"{sidecar_lib.sidecar_path(model_path)}: its {kind} {want} are "
          f"not the model's {got}")


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
    self.sidecar = sidecar_lib.load_sidecar(model_path)
    self._path, self._threads = model_path, num_threads
    self._runner = interpreter.Interpreter(
        model_path=model_path,
        num_threads=num_threads).get_signature_runner(sidecar_lib.SIGNATURE)
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
    return {s["name"]: sidecar_lib.materialize(s, s["init"])
            for s in self.sidecar["state"]}

  def step(self, state: Mapping[str, np.ndarray], frame
           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(new state, pose); pose = {"rot6d": (1, 132), "pos"?, "lost": (1,)}."""
    frame = np.asarray(frame, np.float32).reshape(1, -1)
    out = self._runner(**{sidecar_lib.FRAME: frame}, **state)
    new_state = {name: out[name] for name in self._state_names}
    pose = {k: out[k] for k in sidecar_lib.POSE_KEYS if k in out}
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
    interpreter.set_tensor(self._inputs[sidecar_lib.FRAME],
                           np.asarray(frame, np.float32).reshape(1, -1))
    interpreter.invoke()
    for name in self._state_names:
      # Views into the interpreter's buffers, dropped before the next
      # invoke (LiteRT refuses to run while one is held).
      interpreter.tensor(self._inputs[name])()[...] = interpreter.tensor(
          self._outputs[name])()
    return {k: interpreter.get_tensor(self._outputs[k])
            for k in sidecar_lib.POSE_KEYS if k in self._outputs}


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
