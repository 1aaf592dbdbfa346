"""Evaluation: a model's predictions over test sequences, scored and written.

The pipeline behind ``experiments/evaluate.py`` and ``experiments/ablate.py``:
prepared clips -> online rollout (or AGRoL's offline windows, or an
exported TFLite step) -> optional IK -> AGRoL's metrics per sequence ->
results.json, a Markdown table and a per-joint error heatmap.
"""

import dataclasses
import json
import os
import time

import jax
from matplotlib import figure
import numpy as np

from memmlp_jax import dims
from memmlp_jax.export import convert as export_convert
from memmlp_jax.export import runner as export_runner
from memmlp_jax import geometry
from memmlp_jax import hand_ik
from memmlp_jax import ik
from memmlp_jax import metrics
from memmlp_jax import rollout
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import bvh
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import prepared
from memmlp_jax.models import factory

HEAD_COLUMNS = dims.HEAD_POS_COLUMNS  # the head joint in a (N, 66) target


@dataclasses.dataclass
class Clip:
  """One test sequence: inputs and ground truth at 60 fps."""
  name: str
  sparse: np.ndarray  # (N, 54)
  rot6d: np.ndarray  # (N, 132)
  pos: np.ndarray  # (N, 66)


def split_clips(split):
  """(clips, skeleton) of a prepared split."""
  clips = []
  for span in split.clips:
    rows = slice(span.start, span.start + span.length)
    clips.append(Clip(span.clip_id, np.asarray(split.sparse[rows]),
                      np.asarray(split.rot6d[rows]),
                      np.asarray(split.pos[rows])))
  return clips, split.skeleton


def protocol_clips(protocol: str, data_dir: str, prepared_dir: str, **opts):
  """(clips, skeleton) of a protocol's test split, prepared once."""
  folder = prepared.ensure_prepared(protocol, data_dir, prepared_dir, **opts)
  return split_clips(prepared.load_split(folder, "test"))


def bvh_clips(bvh_dir: str, map_path: str):
  """(clips, skeleton, skipped) of every .bvh file in a folder."""
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


def load_clips(*, protocol=None, data_dir=None, prepared_dir=None,
               body_model=None, lists_dir=None, bvh_dir=None, bvh_map=None):
  """(clips, skeleton, skipped) of a protocol's test split or a BVH folder.

  The command-line source of the evaluate and diagnose CLIs: ``protocol``
  with ``data_dir`` (prepared once into ``prepared_dir``, default
  prepared/<protocol>), or ``bvh_dir`` with ``bvh_map`` (files that fail to
  load are in ``skipped`` with their reason). Raises ValueError naming the
  flag and what is wrong.
  """
  if protocol:
    try:
      clips, skeleton = protocol_clips(
          protocol, data_dir,
          prepared_dir or os.path.join("prepared", protocol),
          body_model=body_model, lists_dir=lists_dir)
    except (ValueError, OSError) as e:
      raise ValueError(f"--protocol {protocol}: {e}") from e
    return clips, skeleton, []
  try:
    clips, skeleton, skipped = bvh_clips(bvh_dir, bvh_map)
  except (ValueError, OSError) as e:
    raise ValueError(f"--bvh_dir/--bvh_map: {e}") from e
  if not clips:
    raise ValueError(f"--bvh_dir {bvh_dir}: no file could be loaded: "
                     + "; ".join(f"{s['clip']}: {s['reason']}"
                                 for s in skipped))
  return clips, skeleton, skipped


def scorable(clips):
  """(clips long enough for every metric, [{"clip", "reason"}] of the rest)."""
  keep = [c for c in clips if len(c.sparse) >= metrics.MIN_FRAMES]
  skipped = [{"clip": c.name, "reason": f"{len(c.sparse)} frames; the "
              f"metrics need at least {metrics.MIN_FRAMES}"}
             for c in clips if len(c.sparse) < metrics.MIN_FRAMES]
  return keep, skipped


def predict(cfg, variables, clips, skeleton, *, offline: bool,
            tflite: str | None, lanes: int):
  """One pose dict per clip (rollout_sequences' format)."""
  sequences = [c.sparse for c in clips]
  if tflite:
    streamer = export_runner.TFLiteStreamer(tflite)
    return [export_runner.predict_sequence(tflite, s, streamer=streamer)
            for s in sequences]
  model = factory.build(cfg)
  if offline:
    return rollout.offline_sequences(model, variables, cfg, sequences)
  return rollout.rollout_sequences(model, variables, cfg, sequences, lanes,
                                   skeleton)


def gflops(cfg, variables) -> float:
  """XLA's cost analysis of one compiled streaming step, in GFLOPs."""
  state, step = export_convert.streaming_step(cfg, variables)
  return export_convert.step_flops(step, state) / 1e9


def heatmap(per_joint, names, path: str, title: str):
  """Per-sequence x per-joint position error (cm) as a PNG."""
  errors = np.asarray(per_joint)
  height = max(3.0, 0.18 * len(names) + 1.5)
  # A Figure of its own (not pyplot): no global backend is set on import and
  # nothing is left open.
  fig = figure.Figure(figsize=(10, height))
  ax = fig.subplots()
  image = ax.imshow(errors, aspect="auto", cmap="magma")
  ax.set_xticks(range(errors.shape[1]))
  joint_names = (skeleton_lib.JOINT_NAMES
                 if errors.shape[1] == len(skeleton_lib.JOINT_NAMES)
                 else range(errors.shape[1]))
  ax.set_xticklabels(joint_names, fontsize=7, rotation=90)
  ax.set_xlabel("joint")
  ax.set_yticks(range(len(names)))
  ax.set_yticklabels(names, fontsize=6)
  ax.set_title(title, fontsize=9)
  fig.colorbar(image, ax=ax, label="mean position error (cm)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def check_mode(cfg, *, use_ik: bool, offline: bool):
  """Raises ValueError when the model cannot be evaluated this way."""
  if offline and (cfg.uses_memory or cfg.output_frames != cfg.window):
    raise ValueError(
        f"{cfg.name} has a memory carry or predicts only the last frame; "
        "AGRoL's offline protocol fits whole-window models without memory")
  if use_ik and not cfg.predicts_positions:
    raise ValueError(f"{cfg.name} has no position branch for IK to follow")


def tracked_devices(sparse):
  """(rotations (N, 3, 3, 3), positions (N, 3, 3)) of head and wrists.

  Read back from the sparse input features (``motion.sparse_from_tracking``
  lays them out), so NaN where tracking was lost.
  """
  sparse = np.asarray(sparse, np.float64)
  rotations = geometry.rot6d_to_matrix(sparse[:, :18].reshape(-1, 3, 6))
  return rotations, sparse[:, 36:45].reshape(-1, 3, 3)


def evaluate(cfg, params, clips, skeleton, *, use_ik: bool = False,
             pin_hands: bool = False, offline: bool = False,
             tflite: str | None = None, lanes: int = 16):
  """Predicts and scores every clip.

  Args:
    cfg, params: the model (``checkpoints.restore``).
    clips: ``Clip``s with at least ``metrics.MIN_FRAMES`` frames.
    skeleton: the body the targets were computed on.
    use_ik: refine rotations towards the position branch (``ik.refine``).
    pin_hands: put the wrists on the tracked ones after the model (and after
      IK), as ``experiments.predict --pin_hands`` does (``hand_ik``).
    offline: AGRoL's non-overlapping windows instead of the online rollout.
    tflite: stream through this exported model instead of JAX.
    lanes: sequences the rollout runs in parallel.

  Returns:
    (results, rows): the averaged metrics (AGRoL's per-sequence means at
    the top level, "frame_weighted" pooled over frames, "from_window" over
    the frames from T - 1 on, or None when no sequence is that long) with
    sequences, frames, model,
    params, gflops, nan_frames, ik, offline, mode and timing; and one row
    per clip with its metrics, ``per_joint`` errors and ``nan_frames``.
  """
  check_mode(cfg, use_ik=use_ik, offline=offline)
  variables = {"params": params}
  timing = {}
  start = time.perf_counter()
  poses = predict(cfg, variables, clips, skeleton, offline=offline,
                  tflite=tflite, lanes=lanes)
  timing["predict_s"] = time.perf_counter() - start
  if use_ik:
    start = time.perf_counter()
    # Frames are independent: one call over all of them compiles once. The
    # head is placed as the metrics place it.
    refined = ik.refine(
        np.concatenate([p["rot6d"] for p in poses]),
        np.concatenate([p["pos"] for p in poses]),
        np.concatenate([c.pos[:, HEAD_COLUMNS] for c in clips]),
        skeleton)
    ends = np.cumsum([len(c.sparse) for c in clips])
    for pose, rot6d in zip(poses, np.split(refined, ends[:-1])):
      pose["rot6d"] = rot6d
    timing["ik_s"] = time.perf_counter() - start
  if pin_hands:
    start = time.perf_counter()
    for clip, pose in zip(clips, poses):
      pose["rot6d"] = hand_ik.pin_sequence(
          pose["rot6d"], *tracked_devices(clip.sparse), skeleton)
    timing["pin_hands_s"] = time.perf_counter() - start
  start = time.perf_counter()
  rows = []
  for clip, pose in zip(clips, poses):
    # Placed by the ground truth's head, which is the tracked head except
    # where tracking was lost (the model then saw the held input).
    scores = metrics.sequence_metrics(pose["rot6d"], clip.rot6d, clip.pos,
                                      clip.pos[:, HEAD_COLUMNS], skeleton)
    scores["nan_frames"] = int(np.sum(pose["lost"]))
    rows.append({"clip": clip.name, "frames": len(clip.sparse), **scores})
  from_window = window_rows(clips, poses, skeleton, cfg.window)
  timing["metrics_s"] = time.perf_counter() - start
  results = {
      **metrics.average(rows),
      "frame_weighted": metrics.frame_weighted(rows),
      "from_window": ({**metrics.average(from_window),
                       "sequences": len(from_window),
                       "first_frame": cfg.window - 1}
                      if from_window else None),
      "sequences": len(clips),
      "frames": int(sum(len(c.sparse) for c in clips)), "model": cfg.name,
      "params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
      "gflops": gflops(cfg, variables),
      "nan_frames": int(sum(r["nan_frames"] for r in rows)),
      "ik": use_ik, "pin_hands": pin_hands, "offline": offline,
      "mode": mode_label(offline, use_ik, tflite, pin_hands),
      "timing": timing}
  return results, rows


def window_rows(clips, poses, skeleton, window: int):
  """Per-sequence metrics of the frames from T - 1 on (a full input window).

  The rollout pads its first T - 1 windows with the first frame, and a
  memory model's memory starts empty: this isolates the steady state.
  Sequences without MIN_FRAMES frames from there are left out.
  """
  first = window - 1
  rows = []
  for clip, pose in zip(clips, poses):
    if len(clip.sparse) - first < metrics.MIN_FRAMES:
      continue
    scores = metrics.sequence_metrics(
        pose["rot6d"][first:], clip.rot6d[first:], clip.pos[first:],
        clip.pos[first:, HEAD_COLUMNS], skeleton)
    rows.append({"clip": clip.name, "frames": len(clip.sparse) - first,
                 **scores})
  return rows


def averages_table(title: str, results: dict) -> str:
  """The Markdown rows of AGRoL's per-sequence mean and the two other
  averages that results.json holds."""
  rows = {title: results,
          f"{title}, frame-weighted": results["frame_weighted"]}
  if results.get("from_window"):
    rows[f"{title}, frames from T-1 on"] = results["from_window"]
  return metrics.markdown_table(rows)


def timing_line(results) -> str:
  """One line: sequences, frames and where the time went."""
  timing = results["timing"]
  parts = [f"{k[:-2]} {v:.1f} s" for k, v in timing.items()
           if k.endswith("_s") and k != "total_s"]
  total = timing.get("total_s", sum(
      v for k, v in timing.items() if k.endswith("_s")))
  return (f"timing: {results['sequences']} sequences, {results['frames']} "
          f"frames in {total:.1f} s ({', '.join(parts)}); "
          f"{results['frames'] / timing['predict_s']:.0f} frames/s predicted")


def mode_label(offline: bool, use_ik: bool, tflite: str | None,
               pin_hands: bool = False) -> str:
  mode = ("offline (AGRoL non-overlapping windows, sees future frames)"
          if offline else "online (causal rollout)")
  if tflite:
    mode += ", TFLite"
  return (mode + (", IK" if use_ik else "")
          + (", hands pinned" if pin_hands else ""))


def write_outputs(path: str, results: dict, rows, title: str) -> str:
  """results.json, the Markdown table and the heatmap; returns the table."""
  base = os.path.splitext(path)[0]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  table = averages_table(title, results)
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
