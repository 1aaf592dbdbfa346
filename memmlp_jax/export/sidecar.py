"""The sidecar: the JSON file that describes an exported step.

``model.tflite`` -> ``model.json`` next to it: every input and output with
shape and dtype, the state leaves with their initial values, the window, the
model config, the quantization, a checksum of the parameters and one of the
.tflite bytes. Written by ``convert``, read (and checked against the model's
bytes) by ``runner``; NumPy only, so a runtime needs neither JAX nor
TensorFlow to read it.
"""

import hashlib
import json
import os
from typing import Mapping

import numpy as np

FORMAT = "memmlp_jax.tflite_step/1"
SIGNATURE = "serving_default"
FRAME = "frame"
STATE_PREFIX = "state_"
POSE_KEYS = ("rot6d", "pos", "lost")


class SidecarMismatchError(ValueError):
  """A .tflite file and its JSON sidecar do not describe the same model."""


def spec(name: str, x) -> dict:
  """{"name", "shape", "dtype"} of the tensor ``x`` under ``name``."""
  x = np.asarray(x)
  return {"name": name, "shape": list(x.shape), "dtype": x.dtype.name}


def initial_value(x) -> dict:
  """A uniform leaf as {"fill": v}; anything else as its nested values."""
  x = np.asarray(x)
  flat = x.reshape(-1)
  if flat.size and np.all(flat == flat[0]):
    return {"fill": flat[0].item()}
  return {"values": x.tolist()}


def materialize(tensor: Mapping, init: Mapping) -> np.ndarray:
  """The array ``initial_value`` described, of ``tensor``'s shape, dtype."""
  if "fill" in init:
    return np.full(tensor["shape"], init["fill"], tensor["dtype"])
  return np.asarray(init["values"], tensor["dtype"]).reshape(tensor["shape"])


def sidecar_path(model_path: str) -> str:
  """model.tflite -> model.json."""
  return os.path.splitext(model_path)[0] + ".json"


def save(tflite: bytes, sidecar: Mapping, model_path: str) -> str:
  """Writes the model and its sidecar; returns the sidecar's path."""
  with open(model_path, "wb") as f:
    f.write(tflite)
  path = sidecar_path(model_path)
  with open(path, "w") as f:
    json.dump(sidecar, f, indent=1)
  return path


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
