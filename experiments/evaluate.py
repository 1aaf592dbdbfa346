r"""Evaluates a trained run: the paper's metrics on a test split or BVH files.

  python -m experiments.evaluate --workdir=runs/memmlp41 --out=out/free.json \
      --protocol=free --data_dir=../shared/data [--ik] [--offline]
  python -m experiments.evaluate --workdir=runs/memmlp41 --out=out/bvh.json \
      --bvh_dir=DIR --bvh_map=MAP.json

Runs the online rollout (memmlp_jax.rollout: causal, one frame at a time,
the memory fed with the model's own previous predictions) over every test
sequence and scores it with AGRoL's metrics (memmlp_jax.metrics). Writes
  OUT            results.json: the metrics (mpjre deg; mpjpe, hand/upper/
                 lower/root pe cm; mpjve cm/s; jitter and gt_jitter
                 10^2 m/s^3), sequences, frames, model, params, gflops,
                 nan_frames, ik, mode, timing, per-sequence scores;
  OUT.md         the Markdown table in the paper's column order;
  OUT.png        per-sequence x per-joint position error heatmap (cm),
and prints the table and a timing line.

--ik refines the rotations towards the position branch (memmlp_jax.ik).
--offline runs AGRoL's non-overlapping-window protocol instead of the online
rollout (for peers without memory; it sees future frames, and its table is
labelled so). --tflite=model.tflite streams the sequences through an
exported model instead of JAX.

Sequences shorter than the window are evaluated like any other (the first
frame fills the window); ones under 4 frames cannot give jitter and are
skipped with a reason in results.json. Lost (non-finite) input frames are
held (see memmlp_jax.rollout) and counted in nan_frames.
"""

import dataclasses
import json
import os
import time

from absl import app
from absl import flags
import jax
import matplotlib
import numpy as np

from memmlp_jax import export
from memmlp_jax import ik
from memmlp_jax import metrics
from memmlp_jax import rollout
from memmlp_jax import train
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import prepared
from memmlp_jax.data import protocols
from memmlp_jax.models import configs

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training run to evaluate.")
flags.DEFINE_string("out", None, "results.json to write (.md and .png next "
                    "to it).")
flags.DEFINE_enum("protocol", None, protocols.NAMES,
                  "Evaluate on this protocol's test split.")
flags.DEFINE_string("data_dir", os.environ.get("MEMMLP_DATA"),
                    "Data root of --protocol (default $MEMMLP_DATA).")
flags.DEFINE_string("prepared_dir", None, "Prepared dataset folder "
                    "(default prepared/<protocol>; reused when up to date).")
flags.DEFINE_string("body_model", None, "AMASS protocols: SMPL-H model.npz.")
flags.DEFINE_string("lists_dir", None, "Protocol s1: folder of list files.")
flags.DEFINE_string("bvh_dir", None, "Evaluate on every .bvh in this folder.")
flags.DEFINE_string("bvh_map", None, "Joint-map JSON for --bvh_dir.")
flags.DEFINE_bool("ik", False, "Refine rotations by IK towards the position "
                  "branch.")
flags.DEFINE_bool("offline", False, "AGRoL's offline protocol "
                  "(non-overlapping windows) instead of the online rollout.")
flags.DEFINE_string("tflite", None, "Run this exported .tflite model instead "
                    "of JAX (online only).")
flags.DEFINE_integer("lanes", 16, "Sequences run in parallel by the rollout.")


@dataclasses.dataclass
class Clip:
  """One test sequence: inputs and ground truth at 60 fps."""
  name: str
  sparse: np.ndarray  # (N, 54)
  rot6d: np.ndarray  # (N, 132)
  pos: np.ndarray  # (N, 66)


def protocol_clips(protocol: str, data_dir: str, prepared_dir: str, **opts):
  """(clips, skeleton) of a protocol's test split, prepared once."""
  folder = prepared.ensure_prepared(protocol, data_dir, prepared_dir, **opts)
  split = prepared.load_split(folder, "test")
  clips = []
  for span in split.clips:
    rows = slice(span.start, span.start + span.length)
    clips.append(Clip(span.clip_id, np.asarray(split.sparse[rows]),
                      np.asarray(split.rot6d[rows]),
                      np.asarray(split.pos[rows])))
  return clips, split.skeleton


def bvh_clips(bvh_dir: str, map_path: str):
  """(clips, skeleton, skipped) of every .bvh file in a folder."""
  from memmlp_jax.data import bvh  # pylint: disable=g-import-not-at-top
  joint_map = bvh.load_joint_map(map_path)
  names = sorted(n for n in os.listdir(bvh_dir) if n.lower().endswith(".bvh"))
  if not names:
    raise ValueError(f"{bvh_dir}: no .bvh files")
  clips, skipped, skeleton = [], [], None
  for name in names:
    path = os.path.join(bvh_dir, name)
    stem = os.path.splitext(name)[0]
    try:
      motion = bvh.load_bvh(path, joint_map, clip_id=f"bvh/{stem}",
                            subject="bvh", source="bvh")
      features = motion_lib.features(motion)
    except (ValueError, OSError) as e:  # MotionError is a ValueError
      skipped.append({"clip": name, "reason": str(e)})
      continue
    skeleton = motion.skeleton
    clips.append(Clip(f"bvh/{stem}", features["sparse"], features["rot6d"],
                      features["pos"]))
  return clips, skeleton, skipped


def scorable(clips):
  """(clips long enough for every metric, [{"clip", "reason"}] of the rest)."""
  keep = [c for c in clips if len(c.sparse) >= metrics.MIN_FRAMES]
  skipped = [{"clip": c.name, "reason": f"{len(c.sparse)} frames; the "
              f"metrics need at least {metrics.MIN_FRAMES}"}
             for c in clips if len(c.sparse) < metrics.MIN_FRAMES]
  return keep, skipped


def predict(cfg, variables, clips, *, offline: bool, tflite: str | None,
            lanes: int):
  """One pose dict per clip (rollout_sequences' format)."""
  sequences = [c.sparse for c in clips]
  if tflite:
    streamer = export.TFLiteStreamer(tflite)
    return [export.predict_sequence(tflite, s, streamer=streamer)
            for s in sequences]
  model = configs.build(cfg)
  if offline:
    return rollout.offline_sequences(model, variables, cfg, sequences)
  return rollout.rollout_sequences(model, variables, cfg, sequences, lanes)


def gflops(cfg, variables) -> float:
  """XLA's cost analysis of one compiled streaming step, in GFLOPs."""
  state, step = export.streaming_step(cfg, variables)
  return export.step_flops(step, state) / 1e9


def heatmap(per_joint, names, path: str, title: str):
  """Per-sequence x per-joint position error (cm) as a PNG."""
  errors = np.asarray(per_joint)
  height = max(3.0, 0.18 * len(names) + 1.5)
  fig, ax = plt.subplots(figsize=(10, height))
  image = ax.imshow(errors, aspect="auto", cmap="magma")
  ax.set_xticks(range(errors.shape[1]))
  ax.set_xticklabels(range(errors.shape[1]), fontsize=7)
  ax.set_xlabel("joint")
  ax.set_yticks(range(len(names)))
  ax.set_yticklabels(names, fontsize=6)
  ax.set_title(title, fontsize=9)
  fig.colorbar(image, ax=ax, label="mean position error (cm)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _fail(message: str):
  raise app.UsageError(message)


def _check_flags():
  if not FLAGS.workdir or not FLAGS.out:
    _fail("--workdir and --out are required")
  if bool(FLAGS.protocol) == bool(FLAGS.bvh_dir):
    _fail("give either --protocol (with --data_dir) or --bvh_dir (with "
          "--bvh_map)")
  if FLAGS.protocol and not FLAGS.data_dir:
    _fail("--protocol needs --data_dir (or $MEMMLP_DATA)")
  if FLAGS.bvh_dir and not FLAGS.bvh_map:
    _fail("--bvh_dir needs --bvh_map (a joint-map JSON)")
  if FLAGS.tflite and (FLAGS.offline or FLAGS.ik):
    _fail("--tflite runs the online step only; drop --offline and --ik")


def _restore(workdir: str):
  try:
    return train.restore(workdir)
  except (FileNotFoundError, OSError, ValueError, KeyError) as e:
    _fail(f"--workdir {workdir}: cannot restore a trained model ({e})")


def _load(skipped):
  if FLAGS.protocol:
    prepared_dir = FLAGS.prepared_dir or os.path.join("prepared",
                                                      FLAGS.protocol)
    try:
      clips, skeleton = protocol_clips(
          FLAGS.protocol, FLAGS.data_dir, prepared_dir,
          body_model=FLAGS.body_model, lists_dir=FLAGS.lists_dir)
    except (ValueError, OSError) as e:
      _fail(f"--protocol {FLAGS.protocol}: {e}")
    return clips, skeleton
  try:
    clips, skeleton, bad = bvh_clips(FLAGS.bvh_dir, FLAGS.bvh_map)
  except (ValueError, OSError) as e:
    _fail(f"--bvh_dir/--bvh_map: {e}")
  skipped += bad
  if not clips:
    _fail(f"--bvh_dir {FLAGS.bvh_dir}: no file could be loaded: "
          + "; ".join(f"{s['clip']}: {s['reason']}" for s in bad))
  return clips, skeleton


def evaluate(cfg, variables, clips, skeleton, *, use_ik: bool,
             offline: bool, tflite: str | None, lanes: int):
  """Scores every clip; returns (summary, per-sequence rows, timing)."""
  timing = {}
  start = time.perf_counter()
  poses = predict(cfg, variables, clips, offline=offline, tflite=tflite,
                  lanes=lanes)
  timing["predict_s"] = time.perf_counter() - start
  if use_ik:
    start = time.perf_counter()
    for clip, pose in zip(clips, poses):
      pose["rot6d"] = ik.refine(pose["rot6d"], pose["pos"],
                                clip.sparse[:, rollout.HEAD_POSITION],
                                skeleton)
    timing["ik_s"] = time.perf_counter() - start
  start = time.perf_counter()
  rows = []
  for clip, pose in zip(clips, poses):
    # Score against the tracked head; where it was lost, the held input
    # is what the model saw, so the ground truth's head stands in.
    head = clip.pos[:, 3 * 15:3 * 16]
    scores = metrics.sequence_metrics(pose["rot6d"], clip.rot6d, clip.pos,
                                      head, skeleton)
    scores["nan_frames"] = int(np.sum(pose["lost"]))
    rows.append({"clip": clip.name, "frames": len(clip.sparse), **scores})
  timing["metrics_s"] = time.perf_counter() - start
  summary = metrics.average(rows)
  summary["nan_frames"] = int(sum(r["nan_frames"] for r in rows))
  return summary, rows, timing


def mode_label(offline: bool, use_ik: bool, tflite: str | None) -> str:
  mode = ("offline (AGRoL non-overlapping windows, sees future frames)"
          if offline else "online (causal rollout)")
  if tflite:
    mode += ", TFLite"
  return mode + (", IK" if use_ik else "")


def write_outputs(path: str, results: dict, rows, title: str) -> str:
  """results.json, the Markdown table and the heatmap; returns the table."""
  base = os.path.splitext(path)[0]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  table = metrics.markdown_table({title: results})
  table += (f"\n\nGT jitter {results['gt_jitter']:.2f}; "
            f"{results['sequences']} sequences, {results['frames']} frames; "
            f"{results['mode']}.\n")
  with open(base + ".md", "w", encoding="utf-8") as f:
    f.write(table)
  heatmap([r["per_joint"] for r in rows], [r["clip"] for r in rows],
          base + ".png", f"{title}: {results['mode']}")
  serialisable = {**results, "per_sequence": [
      {k: (v.tolist() if isinstance(v, np.ndarray) else v)
       for k, v in r.items()} for r in rows]}
  with open(path, "w", encoding="utf-8") as f:
    json.dump(serialisable, f, indent=1)
  return table


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _check_flags()
  started = time.perf_counter()
  cfg, params = _restore(FLAGS.workdir)
  variables = {"params": params}
  if FLAGS.offline and (cfg.uses_memory or cfg.output_frames != cfg.window):
    _fail(f"--offline: {cfg.name} has a memory carry or predicts only the "
          "last frame; AGRoL's offline protocol fits whole-window models "
          "without memory")
  if FLAGS.ik and not cfg.predicts_positions:
    _fail(f"--ik: {cfg.name} has no position branch to refine towards")
  skipped = []
  clips, skeleton = _load(skipped)
  clips, short = scorable(clips)
  skipped += short
  if not clips:
    _fail("no sequence with at least 4 frames to evaluate")
  load_s = time.perf_counter() - started
  summary, rows, timing = evaluate(
      cfg, variables, clips, skeleton, use_ik=FLAGS.ik,
      offline=FLAGS.offline, tflite=FLAGS.tflite, lanes=FLAGS.lanes)
  frames = sum(len(c.sparse) for c in clips)
  timing = {"load_s": load_s, **timing,
            "total_s": time.perf_counter() - started}
  results = {
      **summary, "sequences": len(clips), "frames": frames,
      "model": cfg.name,
      "params": int(sum(x.size for x in jax.tree.leaves(params))),
      "gflops": gflops(cfg, variables), "ik": FLAGS.ik,
      "offline": FLAGS.offline, "mode": mode_label(FLAGS.offline, FLAGS.ik,
                                                  FLAGS.tflite),
      "source": FLAGS.protocol or FLAGS.bvh_dir, "skipped": skipped,
      "timing": timing}
  title = cfg.name + (" + IK" if FLAGS.ik else "")
  if FLAGS.offline:
    title += " (offline)"
  print(write_outputs(FLAGS.out, results, rows, title))
  print(f"timing: {len(clips)} sequences, {frames} frames in "
        f"{timing['total_s']:.1f} s (load {load_s:.1f} s, predict "
        f"{timing['predict_s']:.1f} s"
        + (f", ik {timing['ik_s']:.1f} s" if "ik_s" in timing else "")
        + f", metrics {timing['metrics_s']:.1f} s); "
        f"{frames / timing['predict_s']:.0f} frames/s predicted")
  if skipped:
    print(f"skipped {len(skipped)}: " + "; ".join(
        f"{s['clip']} ({s['reason']})" for s in skipped))


if __name__ == "__main__":
  app.run(main)
