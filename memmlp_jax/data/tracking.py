"""Headset recordings: a CSV of head and controller poses -> tracked signals.

A recording has one row per tracking sample, 22 comma-separated columns

  time,
  head_px, head_py, head_pz, <head quaternion, 4 columns>,
  left_px, left_py, left_pz, <left quaternion>,
  right_px, right_py, right_pz, <right quaternion>

optionally followed by two per-hand validity flags ``left_valid,
right_valid`` (1/0 or true/false). The quaternion columns are in
``quat_order`` (``qx,qy,qz,qw`` for "xyzw", ``qw,qx,qy,qz`` for "wxyz"). An
optional header line is skipped; when it uses these names
(``head_qx`` ...) it is checked against ``quat_order``. Lines starting with
``#`` are comments. Any sample rate works, irregular timestamps included.

Engine conventions (see docs/user_guide.md): positions and rotations are
given in the engine's world axes, ``up`` "y" or "z", ``handedness`` "left" or
"right", in ``units``. Each convention has the usual forward axis of its
engines: Y-up left-handed (Unity) looks along +Z, Y-up right-handed (OpenXR)
along -Z, Z-up (Unreal) along +X. A device at identity orientation looks
forward with its up along the world up; its pose is mapped onto the
canonical joint frame (SMPL's: +X the body's left, +Y up, +Z forward), and
the controller's pose onto the wrist through ``wrist_offset``.

The result is resampled to 60 fps in the project's Z-up right-handed metre
world. Samples that are NaN, empty, or flagged invalid stay NaN in every
60 fps frame they influence, so downstream code sees lost tracking.
"""

import dataclasses
from typing import Sequence, Tuple

import numpy as np

from memmlp_jax import geometry
from memmlp_jax.data import motion as motion_lib

FPS = 60.0
DEVICES = ("head", "left", "right")
UNITS_TO_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}
TIME_UNITS_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
QUAT_ORDERS = ("xyzw", "wxyz")
_NUM_POSE_COLUMNS = 1 + 7 * len(DEVICES)
_NUM_COLUMNS_WITH_FLAGS = _NUM_POSE_COLUMNS + 2

# Engine axes -> world axes (world = BASIS @ engine), and the engine's forward.
_BASIS = {
    ("y", "right"): np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64),
    ("y", "left"): np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], np.float64),
    ("z", "right"): np.eye(3),
    ("z", "left"): np.diag([1.0, -1.0, 1.0]),
}
_FORWARD = {
    ("y", "right"): (0.0, 0.0, -1.0),
    ("y", "left"): (0.0, 0.0, 1.0),
    ("z", "right"): (1.0, 0.0, 0.0),
    ("z", "left"): (1.0, 0.0, 0.0),
}
# The device axis pointing to the user's right, mirrored for the left hand.
_LATERAL_AXIS = {"y": 0, "z": 1}


@dataclasses.dataclass(frozen=True)
class Conventions:
  """How a recording's engine writes poses.

  Attributes:
    up: the engine's up axis, "y" or "z".
    handedness: "left" or "right".
    quat_order: "xyzw" or "wxyz", the order of the quaternion columns.
    units: position units, "m", "cm" or "mm".
    time_units: units of the time column, "s", "ms", "us" or "ns".
    wrist_offset: the right wrist's position in the right controller's frame
      (engine axes, ``units``); mirrored across the lateral axis for the left.
  """
  up: str = "y"
  handedness: str = "left"
  quat_order: str = "xyzw"
  units: str = "m"
  time_units: str = "s"
  wrist_offset: Tuple[float, float, float] = (0.0, 0.0, 0.0)

  def __post_init__(self):
    for name, value, allowed in (
        ("up", self.up, ("y", "z")),
        ("handedness", self.handedness, ("left", "right")),
        ("quat_order", self.quat_order, QUAT_ORDERS),
        ("units", self.units, tuple(UNITS_TO_M)),
        ("time_units", self.time_units, tuple(TIME_UNITS_TO_S))):
      if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if len(self.wrist_offset) != 3:
      raise ValueError(f"wrist_offset needs 3 values, got {self.wrist_offset}")

  @property
  def basis(self) -> np.ndarray:
    """(3, 3) orthogonal matrix taking engine axes to world axes."""
    return _BASIS[self.up, self.handedness]

  @property
  def device_to_joint(self) -> np.ndarray:
    """World-frame joint axes of a device at identity: [left, up, forward]."""
    up = np.array([0.0, 0.0, 1.0])
    forward = self.basis @ np.array(_FORWARD[self.up, self.handedness])
    return np.stack([np.cross(up, forward), up, forward], axis=-1)

  def offsets(self) -> np.ndarray:
    """(3, 3) wrist offsets of head (none), left and right, engine axes, m."""
    right = np.asarray(self.wrist_offset, np.float64) * UNITS_TO_M[self.units]
    left = right.copy()
    left[_LATERAL_AXIS[self.up]] *= -1.0
    return np.stack([np.zeros(3), left, right])


PRESETS = {
    "unity": Conventions(up="y", handedness="left", quat_order="xyzw"),
    "unreal": Conventions(up="z", handedness="left", quat_order="xyzw",
                          units="cm"),
    "openxr": Conventions(up="y", handedness="right", quat_order="xyzw"),
}


@dataclasses.dataclass(frozen=True)
class Tracking:
  """Tracked head and wrists at 60 fps in the Z-up right-handed world.

  Attributes:
    rotations: (N, 3, 3, 3) global joint rotations of head, left and right
      wrist (canonical joint frames), NaN where lost.
    positions: (N, 3, 3) their positions in metres, NaN where lost.
    valid: (N, 3) bool, False where a device was lost.
    start_time: the recording time of frame 0, in seconds.
    fps: always 60.
  """
  rotations: np.ndarray
  positions: np.ndarray
  valid: np.ndarray
  start_time: float
  fps: float = FPS

  @property
  def num_frames(self) -> int:
    return len(self.rotations)


def expected_header(quat_order: str, with_flags: bool) -> Tuple[str, ...]:
  """The column names this module writes and checks."""
  names = ["time"]
  for device in DEVICES:
    names += [f"{device}_p{a}" for a in "xyz"]
    names += [f"{device}_q{a}" for a in quat_order]
  if with_flags:
    names += ["left_valid", "right_valid"]
  return tuple(names)


def _parse_value(text: str, path, line_no: int, column: str) -> float:
  text = text.strip()
  if not text:
    return np.nan
  lowered = text.lower()
  if column.endswith("_valid") and lowered in ("true", "false"):
    return float(lowered == "true")
  try:
    return float(text)
  except ValueError:
    raise motion_lib.MotionError(
        path, f"line {line_no}, column {column}: {text!r} is not a number"
    ) from None


def _check_header(fields: Sequence[str], conventions: Conventions, path,
                  line_no: int):
  names = tuple(f.strip().lower() for f in fields)
  ours = {n for order in QUAT_ORDERS for flags in (False, True)
          for n in expected_header(order, flags)}
  if not set(names) <= ours:
    return  # Someone else's names: columns are taken by position.
  want = expected_header(conventions.quat_order, len(names) > _NUM_POSE_COLUMNS)
  if names != want:
    raise motion_lib.MotionError(
        path, f"line {line_no}: header does not match quat_order="
        f"{conventions.quat_order!r}; expected {','.join(want)}")


def parse_csv(text: str, conventions: Conventions, path="<csv>"):
  """Rows of a recording -> times (M,) s, values (M, 21), flags (M, 2).

  Raises MotionError naming ``path`` and the line of the first problem.
  """
  rows, flags, line_numbers = [], [], []
  num_columns = None
  for line_no, line in enumerate(text.splitlines(), start=1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    fields = line.split(",")
    if not rows and num_columns is None and not _is_number(fields[0]):
      _check_header(fields, conventions, path, line_no)
      num_columns = len(fields)
      continue
    if num_columns is None:
      num_columns = len(fields)
    if len(fields) != num_columns or num_columns not in (
        _NUM_POSE_COLUMNS, _NUM_COLUMNS_WITH_FLAGS):
      raise motion_lib.MotionError(
          path, f"line {line_no}: {len(fields)} columns; expected "
          f"{_NUM_POSE_COLUMNS} (time and 3 x position + quaternion) or "
          f"{_NUM_COLUMNS_WITH_FLAGS} (with left_valid,right_valid)")
    names = expected_header(conventions.quat_order,
                            num_columns == _NUM_COLUMNS_WITH_FLAGS)
    values = [_parse_value(f, path, line_no, n) for f, n in zip(fields, names)]
    rows.append(values[:_NUM_POSE_COLUMNS])
    flags.append(values[_NUM_POSE_COLUMNS:] or [1.0, 1.0])
    line_numbers.append(line_no)
  if len(rows) < 2:
    raise motion_lib.MotionError(
        path, f"{len(rows)} tracking sample(s); need at least 2")
  rows = np.asarray(rows, np.float64)
  times = rows[:, 0] * TIME_UNITS_TO_S[conventions.time_units]
  bad = np.flatnonzero(~np.isfinite(times))
  if bad.size:
    raise motion_lib.MotionError(
        path, f"line {line_numbers[bad[0]]}: time is missing or not finite")
  bad = np.flatnonzero(np.diff(times) <= 0)
  if bad.size:
    i = bad[0] + 1
    raise motion_lib.MotionError(
        path, f"line {line_numbers[i]}: time {rows[i, 0]:g} is not after the "
        f"previous sample's {rows[i - 1, 0]:g}; times must increase")
  return times, rows[:, 1:], np.asarray(flags, np.float64)


def _is_number(text: str) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False


def to_world(values: np.ndarray, conventions: Conventions):
  """(M, 21) engine columns -> world (rotations (M,3,3,3), positions (M,3,3)).

  Rotations are the canonical joint frames (see the module docstring);
  positions are the wrists' (the controllers' moved by ``wrist_offset``).
  """
  values = values.reshape(len(values), len(DEVICES), 7)
  position, quat = values[..., :3], values[..., 3:]
  if conventions.quat_order == "xyzw":
    quat = quat[..., [3, 0, 1, 2]]
  basis = conventions.basis
  engine_rotation = geometry.quat_to_matrix(quat)
  world_rotation = basis @ engine_rotation @ basis.T
  joint_rotation = world_rotation @ conventions.device_to_joint
  offset = np.einsum("mdij,dj->mdi", engine_rotation, conventions.offsets())
  scale = UNITS_TO_M[conventions.units]
  world_position = (position * scale + offset) @ basis.T
  return joint_rotation, world_position


def sample_validity(values: np.ndarray, flags: np.ndarray) -> np.ndarray:
  """(M, 3) bool: finite pose with a non-degenerate quaternion, not flagged."""
  poses = values.reshape(len(values), len(DEVICES), 7)
  finite = np.isfinite(poses).all(axis=-1)
  norm = np.linalg.norm(np.nan_to_num(poses[..., 3:]), axis=-1)
  hands_on = np.concatenate([np.ones((len(values), 1)), flags], axis=1) > 0.5
  return finite & (norm > 1e-6) & hands_on


def _slerp(q0, q1, t):
  """Per-row spherical interpolation of (w, x, y, z) quaternions."""
  dot = np.sum(q0 * q1, axis=-1, keepdims=True)
  q1 = np.where(dot < 0, -q1, q1)
  theta = np.arccos(np.clip(np.abs(dot), 0.0, 1.0))
  sin_theta = np.sin(theta)
  linear = sin_theta < 1e-6
  safe = np.where(linear, 1.0, sin_theta)
  w0 = np.where(linear, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
  w1 = np.where(linear, t, np.sin(t * theta) / safe)
  return w0 * q0 + w1 * q1


def interpolate(times, rotations, positions, valid, grid):
  """Samples at ``times`` (sorted, >= 2) -> the pose at each ``grid`` time.

  Positions linearly, rotations by slerp, between the two samples around
  each grid time (times outside the samples take the nearest one). A grid
  frame is valid for a device when the samples it interpolates between are
  (or the sample it falls on is); invalid frames are NaN. ``resample`` and
  the live server's online resampling (memmlp_jax/live.py) share this, so a
  stream and a recording of it give the same frames.
  """
  low = np.clip(np.searchsorted(times, grid, side="right") - 1, 0,
                len(times) - 2)
  high = low + 1
  frac = np.clip((grid - times[low]) / (times[high] - times[low]), 0.0, 1.0)
  eps = 1e-6
  ok = np.where((frac < eps)[:, None], valid[low],
                np.where((frac > 1 - eps)[:, None], valid[high],
                         valid[low] & valid[high]))
  safe_rot = np.where(valid[..., None, None], rotations, np.eye(3))
  safe_pos = np.where(valid[..., None], positions, 0.0)
  t = frac[:, None, None]
  quat = _slerp(geometry.matrix_to_quat(safe_rot[low]),
                geometry.matrix_to_quat(safe_rot[high]), t)
  out_rot = geometry.quat_to_matrix(quat)
  out_pos = safe_pos[low] * (1.0 - t) + safe_pos[high] * t
  out_rot = np.where(ok[..., None, None], out_rot, np.nan)
  out_pos = np.where(ok[..., None], out_pos, np.nan)
  return out_rot, out_pos, ok


def grid_frames(start: float, end: float, fps: float = FPS) -> int:
  """How many frames of the grid ``start + k / fps`` lie at or before ``end``."""
  return int(np.floor((end - start) * fps + 1e-6)) + 1


def resample(times, rotations, positions, valid, fps: float = FPS):
  """Irregular samples -> a regular grid from the first sample at ``fps``.

  A frame is valid for a device when the samples it interpolates between
  are (or the sample it falls on is); invalid frames are NaN.
  """
  grid = times[0] + np.arange(grid_frames(times[0], times[-1], fps)) / fps
  out_rot, out_pos, ok = interpolate(times, rotations, positions, valid, grid)
  return grid, out_rot, out_pos, ok


def from_world(rotations, positions, conventions: Conventions):
  """The inverse of ``to_world``: world joint poses -> (M, 21) engine columns.

  Args:
    rotations: (M, 3, 3, 3) canonical joint frames of head and wrists.
    positions: (M, 3, 3) their world positions (the wrists', not the
      controllers'), metres.

  Returns:
    (M, 21) device position (``units``) and quaternion (``quat_order``) per
    device, what an engine would log or stream.
  """
  basis = conventions.basis
  world_rotation = rotations @ conventions.device_to_joint.T
  engine_rotation = basis.T @ world_rotation @ basis
  offset = np.einsum("mdij,dj->mdi", engine_rotation, conventions.offsets())
  position = (positions @ basis - offset) / UNITS_TO_M[conventions.units]
  quat = geometry.matrix_to_quat(engine_rotation)
  if conventions.quat_order == "xyzw":
    quat = quat[..., [1, 2, 3, 0]]
  return np.concatenate([position, quat], axis=-1).reshape(len(rotations), -1)


def format_csv(times, values, conventions: Conventions) -> str:
  """A recording's text (header, then one row per sample) from engine columns.

  ``times`` in seconds are written in ``time_units``; NaN values are written
  as ``nan``, which the reader takes as lost tracking.
  """
  lines = [",".join(expected_header(conventions.quat_order, False))]
  scale = TIME_UNITS_TO_S[conventions.time_units]
  for time, row in zip(times, values):
    lines.append(",".join([f"{time / scale:.9g}"] +
                          [f"{v:.9g}" for v in row]))
  return "\n".join(lines) + "\n"


def load_tracking_csv(path_or_text, conventions: Conventions = Conventions(),
                      *, path=None) -> Tracking:
  """Reads a recording (a path, or its text with ``path`` for messages)."""
  if path is None and "\n" not in str(path_or_text):
    path = str(path_or_text)
    try:
      with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    except (OSError, UnicodeDecodeError) as e:
      raise motion_lib.MotionError(path, f"cannot read: {e}") from None
  else:
    text, path = str(path_or_text), path or "<csv>"
  times, values, flags = parse_csv(text, conventions, path)
  valid = sample_validity(values, flags)
  if not valid[:, 0].any():
    raise motion_lib.MotionError(path, "the head is never tracked")
  rotations, positions = to_world(np.nan_to_num(values), conventions)
  grid, rotations, positions, valid = resample(
      times, rotations, positions, valid)
  if len(grid) < 2:
    raise motion_lib.MotionError(
        path, f"recording lasts {times[-1] - times[0]:.4f} s; need at least "
        f"two frames at {FPS:g} fps")
  return Tracking(rotations, positions, valid, float(times[0]))
