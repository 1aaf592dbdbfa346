"""Live streaming over VMC: a headset's three poses in, a full body out.

``Session`` is the whole path without sockets, one datagram at a time:

1. OSC is parsed (memmlp_jax/vmc.py); garbage, unknown addresses, wrong
   argument types and NaN poses are counted and skipped, never raised.
2. A datagram holding ``/VMC/Ext/Hmd/Pos`` closes an input frame, at the
   time of its ``/VMC/Ext/T`` (else the arrival time). Controllers keep
   their latest pose; one silent for longer than ``loss_timeout`` is lost
   tracking. A frame not later than the previous one (out of order or
   duplicated) is dropped.
3. Frames are resampled online to the model's 60 fps grid with the same
   interpolation as a recording (tracking.interpolate), so a stream and the
   recording of it give the same frames; each new grid frame goes through
   the streaming step (TFLite or JAX), lost devices held as in
   memmlp_jax/rollout.py.
4. Every accepted input frame is answered with the newest pose as one VMC
   bundle (root, 22 bones, OK, then T = the input frame's time): at 72 Hz
   input and a 60 fps model, about one answer in six repeats the pose
   before it. Before the first pose (the model's features need two frames)
   the answer is the rest pose under the tracked head.

``serve`` runs a session on a UDP socket without ever blocking on the
receiver; ``replay`` plays a recording as a Performer would and measures the
answers (experiments/live_replay.py).
"""

import dataclasses
import select
import socket
import time
from typing import Callable, Optional

import numpy as np

from memmlp_jax import geometry
from memmlp_jax import hand_ik
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax import vmc
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import tracking

SKIP_REASONS = ("garbage", "unknown_address", "bad_arguments", "non_finite",
                "stale", "extra_controller")


def percentiles(values) -> dict:
  """{"p50", "p90", "p99", "max"} of a list of numbers (None when empty)."""
  if not len(values):
    return {"p50": None, "p90": None, "p99": None, "max": None}
  values = np.asarray(values, np.float64)
  p50, p90, p99 = np.percentile(values, [50, 90, 99])
  return {"p50": float(p50), "p90": float(p90), "p99": float(p99),
          "max": float(values.max())}


# ------------------------------------------------------------- steppers


class JaxStepper:
  """The JAX streaming step (rollout.step) of a training run or a release
  file (pretrained.restore)."""

  def __init__(self, source: str, skeleton=skeleton_lib.SMPL_NEUTRAL):
    # Imported here: a TFLite-only user need not load the training stack.
    from memmlp_jax import pretrained  # pylint: disable=g-import-not-at-top
    from memmlp_jax import rollout  # pylint: disable=g-import-not-at-top
    from memmlp_jax.models import factory  # pylint: disable=g-import-not-at-top
    cfg, params = pretrained.restore(source)
    self._model, self._variables = factory.build(cfg), {"params": params}
    self._step = rollout.step
    self._initial = rollout.init_state(cfg, 1, skeleton=skeleton)
    self.name = f"{cfg.name} (JAX, {source})"
    self._state = self._initial
    for _ in range(2):  # compiles for the initial state and for its own
      self.push(np.zeros(motion_lib.SPARSE_DIM, np.float32))
    self._state = self._initial

  def reset(self):
    """Starts a new stream."""
    self._state = self._initial

  def push(self, frame):
    """(rot6d (132,), lost) of the next frame (54,)."""
    self._state, pose = self._step(self._model, self._variables, self._state,
                                   np.asarray(frame, np.float32)[None])
    return np.asarray(pose["rot6d"][0]), bool(pose["lost"][0])


class TFLiteStepper:
  """An exported step (experiments.export) in LiteRT, state kept in place."""

  def __init__(self, model_path: str, num_threads: int = 1):
    from memmlp_jax.export import runner  # pylint: disable=g-import-not-at-top
    self._streamer = runner.TFLiteStreamer(model_path, num_threads)
    self.name = f"{self._streamer.sidecar['model']} (TFLite " \
        f"{self._streamer.sidecar['quantize']}, {model_path})"
    self._streamer.reset()
    self.push(np.zeros(motion_lib.SPARSE_DIM, np.float32))  # warms up
    self._streamer.reset()

  def reset(self):
    self._streamer.reset()

  def push(self, frame):
    pose = self._streamer.push(frame)
    return np.asarray(pose["rot6d"][0]), bool(pose["lost"][0])


# ------------------------------------------------------------- resampling


class OnlineResampler:
  """Irregular samples -> the grid ``start + k / fps``, as they arrive.

  Each sample emits the grid frames at or before its time, interpolated
  between it and the previous sample exactly as ``tracking.resample`` does
  over a whole recording. A sample up to ``TIME_TOLERANCE`` early still
  counts as on its grid frame: VMC times are float32, which rounds a time
  of a few seconds by about a microsecond.
  """

  TIME_TOLERANCE = 1e-4  # seconds

  def __init__(self, fps: float = tracking.FPS):
    self.fps = fps
    self._start = None
    self._emitted = 0
    self._previous = None

  def push(self, t, rotations, positions, valid):
    """Grid frames [(rotations (3,3,3), positions (3,3))], NaN where lost."""
    sample = (t, rotations, positions, valid)
    if self._previous is None:
      self._start, self._emitted, self._previous = t, 1, sample
      return [(np.where(valid[:, None, None], rotations, np.nan),
               np.where(valid[:, None], positions, np.nan))]
    count = tracking.grid_frames(self._start, t + self.TIME_TOLERANCE,
                                 self.fps)
    grid = self._start + np.arange(self._emitted, count) / self.fps
    previous, self._previous = self._previous, sample
    if not len(grid):
      return []
    self._emitted = count
    pair = [np.stack([a, b]) for a, b in zip(previous, sample)]
    out_rot, out_pos, _ = tracking.interpolate(*pair, grid)
    return list(zip(out_rot, out_pos))


# ------------------------------------------------------------- session


@dataclasses.dataclass(frozen=True)
class Options:
  """How a session reads its input and shapes its output.

  Attributes:
    conventions: the engine conventions of the incoming poses (a preset of
      tracking.PRESETS, with the wrist offset).
    left_serial, right_serial: controller serials; None matches a serial
      containing "left" / "right", else by side of the head the first time
      two controllers are seen.
    loss_timeout: seconds of silence after which a controller is lost.
    pin_hands: pin the wrists to the tracked ones (memmlp_jax/hand_ik.py).
    height: the user's standing head height in metres (None: the canonical
      body), as experiments.predict --height.
  """
  conventions: tracking.Conventions = tracking.PRESETS["unity"]
  left_serial: Optional[str] = None
  right_serial: Optional[str] = None
  loss_timeout: float = 0.1
  pin_hands: bool = False
  height: Optional[float] = None


class Session:
  """One live stream: datagrams in (``handle``), answer datagrams out."""

  def __init__(self, stepper, options: Options = Options(),
               skeleton=skeleton_lib.SMPL_NEUTRAL):
    self._stepper, self._options = stepper, options
    self._scale = options.height / skeleton.height() if options.height else 1.0
    self.body = skeleton.scaled(self._scale)
    self._serials = {"left": options.left_serial,
                     "right": options.right_serial}
    self._controllers = {}  # serial -> (position, quaternion, frame time)
    self._pending = {}  # loose controller messages, for the next frame
    self._last_time = None
    self._resampler = OnlineResampler()
    self._previous = None  # the last grid frame (rotations, scaled positions)
    self._pose = None  # (bone positions, quaternions, tracked)
    self._held_head = None
    self._held_hands = None  # (positions (2, 3), rotations (2, 3, 3))
    self._weights = None
    self.stats = {"datagrams": 0, "frames": 0, "answers": 0, "steps": 0,
                  "lost_steps": 0,
                  "skipped": {reason: 0 for reason in SKIP_REASONS}}

  def _skip(self, reason: str):
    self.stats["skipped"][reason] += 1

  # -- input

  def _read(self, datagram: bytes):
    """(head pose or None, {serial: pose}, time or None) of a datagram."""
    try:
      messages = vmc.parse(datagram)
    except vmc.MalformedPacket as e:
      self._skip(e.reason)
      return None, {}, None
    head, controllers, stamp = None, {}, None
    for address, args in messages:
      try:
        if address == vmc.HMD:
          head = vmc.device_pose(address, args)
        elif address == vmc.CONTROLLER:
          serial, position, quaternion = vmc.device_pose(address, args)
          controllers[serial] = (position, quaternion)
        elif address == vmc.TIME:
          stamp = vmc.frame_time(args)
        else:
          self._skip("unknown_address")
      except vmc.MalformedPacket as e:
        self._skip(e.reason)
    return head, controllers, stamp

  def _world(self, rows: np.ndarray):
    """(3, 7) device poses (engine) -> canonical (rotations, positions)."""
    rotations, positions = tracking.to_world(rows.reshape(1, -1),
                                             self._options.conventions)
    return rotations[0], positions[0]

  def _assign(self, head_row):
    """Names the left and right controllers not named yet."""
    for side in ("left", "right"):
      if self._serials[side] is None:
        named = [s for s in self._controllers if side in s.lower()
                 and s not in self._serials.values()]
        if len(named) == 1:
          self._serials[side] = named[0]
    unnamed = [s for s in self._controllers if s not in self._serials.values()]
    if (self._serials["left"] is None and self._serials["right"] is None
        and len(unnamed) == 2):
      rows = np.zeros((3, 7))
      rows[0] = head_row
      for k, serial in enumerate(unnamed):
        position, quaternion, _ = self._controllers[serial]
        rows[k + 1] = np.concatenate([position, quaternion])
      rotations, positions = self._world(rows)
      # The head joint's +X is the body's left.
      lateral = (positions[1:] - positions[0]) @ rotations[0][:, 0]
      left = int(np.argmax(lateral))
      self._serials["left"], self._serials["right"] = (
          unnamed[left], unnamed[1 - left])

  def _frame_rows(self, head, t):
    """(3, 7) rows in xyzw order and (3,) validity of the frame at ``t``."""
    rows = np.zeros((3, 7))
    rows[0] = np.concatenate([head[1], head[2]])
    valid = np.array([True, False, False])
    for k, side in enumerate(("left", "right"), start=1):
      entry = self._controllers.get(self._serials[side])
      if entry is not None and t - entry[2] <= self._options.loss_timeout:
        rows[k] = np.concatenate(entry[:2])
        valid[k] = True
    if self._options.conventions.quat_order == "wxyz":
      rows[:, 3:] = rows[:, [6, 3, 4, 5]]
    return rows, valid

  # -- output

  def _place(self, local_rotations, rotations, positions):
    """Bones of a predicted pose, head on the tracked head, hands pinned."""
    head = positions[0]
    if np.isfinite(head).all():
      self._held_head = head
    _, fk = geometry.forward_kinematics(local_rotations, np.zeros(3),
                                        self.body.parents, self.body.offsets)
    root = self._held_head - fk[skeleton_lib.HEAD]
    if self._options.pin_hands:
      local_rotations = self._pin(local_rotations, root, rotations, positions)
    return vmc.bones_from_body(local_rotations, root, self.body)

  def _pin(self, local_rotations, root, rotations, positions):
    tracked = (np.isfinite(positions[1:]).all(-1)
               & np.isfinite(rotations[1:]).all((-1, -2)))
    if self._weights is None:
      self._weights = tracked.astype(np.float64)
      self._held_hands = (np.zeros((2, 3)), np.tile(np.eye(3), (2, 1, 1)))
    else:
      self._weights = hand_ik.next_weight(self._weights, tracked,
                                          self._resampler.fps)
    held_pos = np.where(tracked[:, None], positions[1:], self._held_hands[0])
    held_rot = np.where(tracked[:, None, None], rotations[1:],
                        self._held_hands[1])
    self._held_hands = (held_pos, held_rot)
    return hand_ik.pin_hands(local_rotations[None], root[None], held_pos[None],
                             held_rot[None], self._weights[None],
                             self.body)[0]

  def _rest_answer(self, head_position):
    local = np.tile(np.eye(3), (self.body.num_joints, 1, 1))
    local[0] = vmc.REST_ROOT_ROTATION
    _, fk = geometry.forward_kinematics(local, np.zeros(3), self.body.parents,
                                        self.body.offsets)
    return vmc.bones_from_body(local, head_position - fk[skeleton_lib.HEAD],
                               self.body)

  def _advance(self, t, rotations, positions, valid):
    """Runs the model over the grid frames up to ``t``."""
    for frame_rot, frame_pos in self._resampler.push(t, rotations, positions,
                                                     valid):
      scaled = frame_pos / self._scale
      if self._previous is not None:
        sparse = motion_lib.sparse_from_tracking(
            np.stack([self._previous[0], frame_rot]),
            np.stack([self._previous[1], scaled]))[0]
        rot6d, lost = self._stepper.push(sparse)
        self.stats["steps"] += 1
        self.stats["lost_steps"] += int(lost)
        local = geometry.rot6d_to_matrix(
            np.asarray(rot6d, np.float64).reshape(-1, 6))
        self._pose = self._place(local, frame_rot, frame_pos) + (not lost,)
      self._previous = (frame_rot, scaled)

  def handle(self, datagram: bytes, now: float) -> Optional[bytes]:
    """The answer to one datagram (None when it closes no frame).

    ``now`` is the arrival time in seconds (any monotonic clock): the
    frame's time when the datagram carries no /VMC/Ext/T.
    """
    self.stats["datagrams"] += 1
    head, controllers, stamp = self._read(datagram)
    t = now if stamp is None else stamp
    if head is None:
      self._pending.update(controllers)  # loose messages: the next frame's
      return None
    if self._last_time is not None and t <= self._last_time:
      self._skip("stale")
      return None
    self._last_time = t
    self._pending.update(controllers)
    for serial, pose in self._pending.items():
      self._controllers[serial] = pose + (t,)
    self._pending = {}
    self._assign(np.concatenate([head[1], head[2]]))
    extra = [s for s in controllers if s not in self._serials.values()]
    if len(extra) and all(self._serials.values()):
      self.stats["skipped"]["extra_controller"] += len(extra)
    rows, valid = self._frame_rows(head, t)
    rotations, positions = self._world(rows)
    self.stats["frames"] += 1
    self._advance(t, rotations, positions, valid)
    if self._pose is None:
      bone_positions, quaternions = self._rest_answer(positions[0])
      tracked = bool(valid.all())
    else:
      bone_positions, quaternions, tracked = self._pose
      tracked = tracked and bool(valid.all())
    self.stats["answers"] += 1
    return vmc.answer(bone_positions, quaternions, t, tracked)


# ------------------------------------------------------------- sockets


def parse_address(text: str):
  """"HOST:PORT" -> (host, port); raises ValueError with the reason.

  Port 0 asks the system for any free port when listening.
  """
  host, sep, port = str(text).rpartition(":")
  if not sep or not host or not port.isdigit() or not int(port) < 65536:
    raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:39540)")
  return host, int(port)


def serve(session: Session, receiver: socket.socket, send_to,
          duration: float = 0.0, stop: Callable[[], bool] = lambda: False):
  """Answers datagrams from ``receiver`` to ``send_to`` until told to stop.

  Stops after ``duration`` seconds (0: never) or when ``stop()`` is true
  (checked at least every 0.2 s). Sends never block: a datagram the
  system cannot take at once is counted in ``send_failed`` and dropped.

  Returns:
    the session's stats, with "send_failed", "duration_s" and
    "processing_ms" (arrival to sent, per answer) added.
  """
  sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  sender.setblocking(False)
  receiver.setblocking(False)
  processing, failed = [], 0
  start = time.monotonic()
  try:
    while not stop():
      wait = 0.2
      if duration > 0:
        wait = min(wait, start + duration - time.monotonic())
        if wait <= 0:
          break
      if not select.select([receiver], [], [], wait)[0]:
        continue
      while True:  # every datagram already queued, oldest first
        try:
          datagram = receiver.recv(65535)
        except (BlockingIOError, InterruptedError):
          break
        except OSError:  # e.g. an ICMP error queued on the socket
          continue
        arrived = time.perf_counter()
        out = session.handle(datagram, time.monotonic() - start)
        if out is None:
          continue
        try:
          sender.sendto(out, send_to)
        except OSError:  # full buffer, unreachable host: never wait
          failed += 1
          continue
        processing.append((time.perf_counter() - arrived) * 1e3)
  finally:
    sender.close()
  stats = dict(session.stats)
  stats.update(send_failed=failed, duration_s=time.monotonic() - start,
               processing_ms=percentiles(processing))
  return stats


# ------------------------------------------------------------- replay


def replay_frames(times, values, flags, rate: float,
                  conventions: tracking.Conventions):
  """A recording's samples as the frames a Performer would send.

  Args:
    times, values, flags: ``tracking.parse_csv``'s output.
    rate: frames per second to send (resampled as the reader resamples);
      0 sends the recording's own samples.
    conventions: the recording's conventions (and the receiver's preset).

  Returns:
    (times (K,) from 0 s, values (K, 21) engine columns, valid (K, 3)).
  """
  valid = tracking.sample_validity(values, flags)
  times = times - times[0]
  if rate <= 0:
    return times, values, valid
  rotations, positions = tracking.to_world(np.nan_to_num(values), conventions)
  grid = np.arange(tracking.grid_frames(0.0, times[-1], rate)) / rate
  rotations, positions, valid = tracking.interpolate(
      times, rotations, positions, valid, grid)
  values = tracking.from_world(np.nan_to_num(rotations),
                               np.nan_to_num(positions), conventions)
  return grid, values, valid


def performer_frame(t, row, valid, quat_order):
  """One frame of engine columns as the VMC bundle a Performer sends:
  T, the headset, and the controllers that are tracked."""
  poses = np.array(row, np.float64).reshape(3, 7)
  if quat_order == "wxyz":  # VMC sends x, y, z, w
    poses[:, 3:] = poses[:, [4, 5, 6, 3]]
  head = ("HMD", poses[0, :3], poses[0, 3:])
  controllers = [(serial, poses[k, :3], poses[k, 3:])
                 for k, serial in ((1, "left_controller"),
                                   (2, "right_controller")) if valid[k]]
  return vmc.tracking_frame(t, head, controllers)


def replay(times, values, valid, send_to, receiver: socket.socket,
           quat_order: str = "xyzw", grace: float = 1.0):
  """Sends frames at their times, collects the answers.

  Lost controllers are not sent (as a Performer stops sending a device it
  lost); frames whose head is lost are skipped.

  Returns:
    (stats, answers): stats = {"sent", "received", "bones", "latency_ms",
    "dropped", "send_failed", "unmatched", "malformed", "duration_s"};
    answers = {sent time: (bone name -> (position, quaternion))}.
  """
  sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  receiver.setblocking(False)
  sent, answers, latencies = {}, {}, []
  unmatched = malformed = failed = 0

  def receive(until: float):
    nonlocal unmatched, malformed
    while True:
      wait = until - time.perf_counter()
      if not select.select([receiver], [], [], max(wait, 0.0))[0]:
        if wait <= 0:
          return
        continue
      try:
        datagram = receiver.recv(65535)
      except (BlockingIOError, OSError):
        continue
      arrived = time.perf_counter()
      try:
        stamp, bones, _ = vmc.answer_frame(vmc.parse(datagram))
      except vmc.MalformedPacket:
        malformed += 1
        continue
      key = np.float32(stamp)
      if key not in sent or key in answers:
        unmatched += 1
        continue
      answers[key] = bones
      latencies.append((arrived - sent[key]) * 1e3)

  start = time.perf_counter()
  try:
    for t, row, ok in zip(times, values, valid):
      if not ok[0]:
        continue
      receive(start + t)
      key = np.float32(t)
      datagram = performer_frame(float(key), row, ok, quat_order)
      # Stamped before sending: on a busy machine the woken server can run
      # its whole step before sendto returns here.
      sent_at = time.perf_counter()
      try:
        sender.sendto(datagram, send_to)
      except OSError:
        failed += 1
        continue
      sent[key] = sent_at
    deadline = time.perf_counter() + grace
    while len(answers) < len(sent) and time.perf_counter() < deadline:
      receive(min(deadline, time.perf_counter() + 0.05))
  finally:
    sender.close()
  names = set()
  for bones in answers.values():
    names.update(bones)
  stats = {"sent": len(sent), "received": len(answers), "bones": len(names),
           "latency_ms": percentiles(latencies),
           "dropped": len(sent) - len(answers), "send_failed": failed,
           "unmatched": unmatched, "malformed": malformed,
           "duration_s": time.perf_counter() - start}
  return stats, {float(k): v for k, v in answers.items()}


def bodies_from_answers(answers):
  """(times (K,), local rotations (K, 22, 3, 3), positions (K, 22, 3)).

  The answers' bones converted back to the canonical body, in time order;
  joint positions by FK over the bones' own offsets (the body the server
  animated, --height included), the pelvis on the hips.
  """
  times = np.array(sorted(answers))
  positions = np.array([[answers[t][n][0] for n in vmc.BONE_NAMES]
                        for t in times])
  quaternions = np.array([[answers[t][n][1] for n in vmc.BONE_NAMES]
                          for t in times])
  offsets = vmc.body_from_bones(positions[:1], quaternions[:1])[2][0]
  body = skeleton_lib.Skeleton(skeleton_lib.JOINT_NAMES,
                               skeleton_lib.PARENTS, offsets)
  local, root, _ = vmc.body_from_bones(positions, quaternions, body)
  _, joints = geometry.forward_kinematics(local, root, body.parents,
                                          body.offsets)
  return times, local, joints
