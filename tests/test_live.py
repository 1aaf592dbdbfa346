"""Live VMC: the stream gives predict's bodies; loopback; bad input survives.

The recordings are a real CMU walk's head and wrists written as Unity
recordings; the model is a small random-weight Mem-MLP (the path, not the
poses, is under test).
"""

import importlib
import json
import os
import re
import socket
import sys
import threading
import zipfile

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest

from experiments import predict
from memmlp_jax import geometry
from memmlp_jax import live
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax import vmc
from memmlp_jax.data import tracking
import cli

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), os.environ.get("MEMMLP_DATA", "../shared/data"))
CMU = os.path.join(DATA, "cmu_mocap_asfamc", "subjects", "02.zip")
UNITY = tracking.PRESETS["unity"]


@pytest.fixture(scope="module")
def walk():
  """(times, engine values) of the first 1.5 s of CMU 02_01 at 60 fps."""
  if not os.path.exists(CMU):
    pytest.skip(f"no mocap data at {DATA}")
  from memmlp_jax.data import asfamc  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(CMU) as z:
    clip = asfamc.load_amc(z.read("02.asf").decode("latin-1"),
                           z.read("02_01.amc").decode("latin-1"),
                           clip_id="cmu/02_01", subject="cmu/02",
                           source="cmu")
  rotations, positions = clip.global_pose()
  tracked = list(skeleton_lib.SPARSE_JOINTS)
  frames = 91
  values = tracking.from_world(rotations[:frames, tracked],
                               positions[:frames, tracked], UNITY)
  return np.arange(frames) / clip.fps, values


@pytest.fixture(scope="module")
def run(small_random_run):
  """A small Mem-MLP at random weights. Without the VQ code: VMC carries
  float32, and a random codebook's near-ties would turn float32 rounding
  into a different code (docs/export_notes.md on near-ties)."""
  return small_random_run


@pytest.fixture(scope="module")
def stepper(run):
  return live.JaxStepper(run)


def _frames(times, values, valid=None):
  valid = np.ones((len(times), 3), bool) if valid is None else valid
  return [live.performer_frame(float(np.float32(t)), row, ok, "xyzw")
          for t, row, ok in zip(times, values, valid)]


def _fresh(stepper, **options):
  stepper.reset()
  return live.Session(stepper, live.Options(**options))


def test_online_resampling_is_the_recordings():
  rng = np.random.default_rng(0)
  times = np.cumsum(rng.uniform(0.005, 0.03, size=40))
  rotations = geometry.axis_angle_to_matrix(rng.normal(size=(40, 3, 3)))
  positions = rng.normal(size=(40, 3, 3))
  valid = np.ones((40, 3), bool)
  valid[17, 1] = False
  _, want_rot, want_pos, _ = tracking.resample(times, rotations, positions,
                                               valid)
  resampler = live.OnlineResampler()
  got = [f for i in range(40) for f in resampler.push(
      times[i], rotations[i], positions[i], valid[i])]
  assert len(got) == len(want_rot)
  np.testing.assert_allclose(np.stack([g[0] for g in got]), want_rot,
                             atol=1e-12)
  np.testing.assert_allclose(np.stack([g[1] for g in got]), want_pos,
                             atol=1e-12)


@pytest.mark.parametrize("pin_hands", [False, True])
def test_bones_over_vmc_are_predicts_bodies(walk, run, stepper, tmp_path,
                                            pin_hands):
  times, values = walk
  recording = tmp_path / "walk.csv"
  recording.write_text(tracking.format_csv(times, values, UNITY))
  with flagsaver.flagsaver():
    flags.FLAGS(["predict", f"--workdir={run}", f"--input={recording}",
                 f"--output={tmp_path / 'walk.bvh'}",
                 f"--npz={tmp_path / 'walk.npz'}",
                 f"--pin_hands={pin_hands}"])
    predict.main(["predict"])
  expected = np.load(tmp_path / "walk.npz")["positions"]

  session = _fresh(stepper, pin_hands=pin_hands)
  answers = {}
  for datagram in _frames(times, values):
    stamp, bones, _ = vmc.answer_frame(vmc.parse(session.handle(datagram,
                                                                0.0)))
    answers[stamp] = bones
  assert len(answers) == len(times)
  # Every frame after the first steps the model once, at the 60 fps grid.
  assert session.stats["steps"] == len(times) - 1
  del answers[min(answers)]  # the rest pose, before the model's first pose
  _, _, positions = live.bodies_from_answers(answers)
  np.testing.assert_allclose(positions, expected, atol=1e-4)
  if pin_hands:
    # The wrists are on the tracked ones, or, where a random model leaves
    # them out of the arm's reach, as close as the straight arm gets.
    targets = tracking.to_world(values, UNITY)[1][1:, 1:]
    body = skeleton_lib.SMPL_NEUTRAL
    arm = [np.linalg.norm(body.offsets[[18, 20]], axis=-1).sum(),
           np.linalg.norm(body.offsets[[19, 21]], axis=-1).sum()]
    beyond = np.linalg.norm(targets - positions[:, 16:18], axis=-1) - arm
    miss = np.linalg.norm(targets - positions[:, 20:22], axis=-1)
    np.testing.assert_allclose(miss, np.maximum(beyond, 0.0), atol=1e-4)
    assert (beyond < 0).any()  # the reached case is tested too


@pytest.mark.parametrize("preset", ["unreal", "openxr"])
def test_every_preset_gives_the_same_body(walk, stepper, preset):
  times, values = walk
  bodies = []
  for name, rows in (("unity", values), (preset, tracking.from_world(
      *tracking.to_world(values, UNITY), tracking.PRESETS[preset]))):
    session = _fresh(stepper, conventions=tracking.PRESETS[name])
    answers = dict(vmc.answer_frame(vmc.parse(session.handle(d, 0.0)))[:2]
                   for d in _frames(times[:30], rows[:30]))
    bodies.append(live.bodies_from_answers(answers)[2])
  np.testing.assert_allclose(bodies[1], bodies[0], atol=1e-4)


def test_a_72_hz_stream_is_resampled_and_every_frame_answered(walk, stepper):
  times, values = walk
  frames = live.replay_frames(times, values, np.ones((len(times), 2)), 72.0,
                              UNITY)
  session = _fresh(stepper)
  answered = [session.handle(d, 0.0) for d in _frames(*frames)]
  assert all(a is not None for a in answered)
  assert session.stats["steps"] == len(times) - 1  # 60 fps, not 72


def test_bad_packets_are_counted_skipped_and_the_stream_goes_on(walk,
                                                                stepper):
  times, values = walk
  good = _frames(times[:20], values[:20])
  builder = vmc.message  # python-osc's
  bad = {
      "garbage": b"\x00\x01garbage",
      "unknown_address": vmc.bundle([builder("/VMC/Ext/Blend/Val",
                                             ["A", 1.0])]),
      "bad_arguments": vmc.bundle([builder(vmc.HMD, ["HMD", "x", 1.0])]),
      "non_finite": vmc.bundle([builder(vmc.HMD, vmc.pose_args(
          "HMD", [np.nan, 1.6, 0.0], [0, 0, 0, 1]))]),
  }
  session = _fresh(stepper)
  answers = 0
  for i, datagram in enumerate(good):
    answers += session.handle(datagram, 0.0) is not None
    if i == 10:
      for packet in bad.values():
        assert session.handle(packet, 0.0) is None
      # A duplicate and an out-of-order frame are dropped.
      assert session.handle(good[i], 0.0) is None
      assert session.handle(good[i - 3], 0.0) is None
  assert answers == len(good)
  assert session.stats["steps"] == len(good) - 1
  skipped = session.stats["skipped"]
  assert {k: skipped[k] for k in bad} == {k: 1 for k in bad}
  assert skipped["stale"] == 2


def test_silent_controller_is_lost_after_the_timeout_and_named_by_side(
    walk, stepper):
  times, values = walk
  valid = np.ones((len(times), 3), bool)
  valid[30:, 2] = False  # the right controller stops sending
  datagrams = [vmc.tracking_frame(
      float(t), ("HMD", row[:3], row[3:7]),
      [(serial, row[7 * k:7 * k + 3], row[7 * k + 3:7 * k + 7])
       for k, serial in ((1, "LHR-A"), (2, "LHR-B")) if ok[k]])
               for t, row, ok in zip(times, values, valid)]
  session = _fresh(stepper, loss_timeout=0.06)
  tracked = [vmc.answer_frame(vmc.parse(session.handle(d, 0.0)))[2]
             for d in datagrams]
  # Serials that say nothing: the controller on the head's left is left.
  assert session._serials == {"left": "LHR-A", "right": "LHR-B"}  # pylint: disable=protected-access
  # Lost 60 ms after its last message (frame 29): from frame 33 on, where
  # the model holds it.
  assert tracked[:33] == [True] * 33 and not any(tracked[33:])
  assert session.stats["lost_steps"] == len(times) - 33


def _serve_in_thread(stepper, **options):
  receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  receiver.bind(("127.0.0.1", 0))
  client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  client.bind(("127.0.0.1", 0))
  stop = threading.Event()
  result = {}
  session = _fresh(stepper, **options)
  answer_to = client.getsockname()
  thread = threading.Thread(target=lambda: result.update(live.serve(
      session, receiver, answer_to, stop=stop.is_set)))
  thread.start()
  return receiver.getsockname(), client, stop, thread, result


@pytest.mark.slow
def test_loopback_replay_answers_every_frame_of_a_real_recording(
    walk, stepper, tmp_path):
  times, values = walk
  recording = tmp_path / "walk.csv"
  recording.write_text(tracking.format_csv(times, values, UNITY))
  server, client, stop, thread, served = _serve_in_thread(stepper)
  replay_port = client.getsockname()[1]
  client.close()  # the replay CLI binds it
  try:
    replayed = cli.program(
        "experiments.live_replay", f"--input={recording}",
        f"--to=127.0.0.1:{server[1]}", f"--listen=127.0.0.1:{replay_port}",
        "--rate=72", f"--out={tmp_path / 'stats.json'}",
        f"--npz={tmp_path / 'bodies.npz'}", timeout=120)
  finally:
    stop.set()
    thread.join()
  assert replayed.returncode == 0, replayed.stderr
  assert "sent 109, received 109 (22 bones), dropped 0" in replayed.stdout
  stats = json.loads((tmp_path / "stats.json").read_text())
  assert stats["sent"] == 109  # 1.5 s at 72 Hz, both ends included
  assert stats["received"] == stats["sent"] and stats["dropped"] == 0
  assert stats["bones"] == 22
  assert stats["latency_ms"]["p50"] > 0
  assert served["answers"] == stats["sent"]
  assert sum(served["skipped"].values()) == 0
  bodies = np.load(tmp_path / "bodies.npz")
  assert bodies["positions"].shape == (109, 22, 3)


def test_server_survives_garbage_on_the_wire(walk, stepper):
  times, values = walk
  server, client, stop, thread, served = _serve_in_thread(stepper)
  sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  rng = np.random.default_rng(3)
  try:
    for datagram in _frames(times[:5], values[:5]):
      sender.sendto(rng.bytes(int(rng.integers(1, 300))), server)
      sender.sendto(datagram, server)
    client.settimeout(5.0)
    answers = [client.recv(65535) for _ in range(5)]
  finally:
    stop.set()
    thread.join()
    sender.close()
    client.close()
  assert [vmc.answer_frame(vmc.parse(a))[0] for a in answers] == [
      float(np.float32(t)) for t in times[:5]]
  assert served["datagrams"] == 10 and served["answers"] == 5


@pytest.mark.slow
def test_live_cli_runs_for_its_duration_and_writes_stats(run, tmp_path):
  result = cli.program("experiments.live", f"--workdir={run}",
                       "--listen=127.0.0.1:0", "--duration=0.3", "--pin_hands",
                       f"--stats={tmp_path / 'live.json'}", timeout=120)
  assert result.returncode == 0, result.stderr
  assert "listening on 127.0.0.1:0" in result.stdout
  stats = json.loads((tmp_path / "live.json").read_text())
  assert stats["frames"] == 0 and stats["duration_s"] >= 0.3


@pytest.mark.parametrize("module, args, message", [
    ("experiments.live", ["--tflite=m.tflite", "--workdir=RUN"],
     "one of --tflite.*not both"),
    ("experiments.live", ["--workdir=RUN", "--listen=39540"], "HOST:PORT"),
    ("experiments.live", ["--workdir=RUN", "--wrist_offset=1,x,3"],
     "wrist_offset"),
    ("experiments.live", ["--tflite=missing.tflite"], "missing.tflite"),
    ("experiments.live_replay", [], "--input is required"),
    ("experiments.live_replay", ["--input=BAD"], r"bad\.csv: line 2"),
])
def test_cli_bad_input_is_named_without_a_traceback(tmp_path, module, args,
                                                    message):
  (tmp_path / "bad.csv").write_text("time,a\n0,1\n")
  args = [a.replace("BAD", str(tmp_path / "bad.csv")).replace(
      "RUN", str(tmp_path)) for a in args]
  code, output = cli.run(importlib.import_module(module), *args)
  assert code != 0
  assert "Traceback" not in output, output
  assert re.search(message, output), output


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))
