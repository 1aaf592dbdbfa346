"""Where online jitter comes from: every row of every predicted window.

The online rollout predicts a whole window of T frames at each step and
keeps only its last row. Row r of the window predicted at frame t is the
model's estimate of frame t - (T - 1 - r), so each frame is estimated T
times, by T successive windows. Comparing these estimates separates two
sources of jitter:

- within a window, frame to frame (``within_window_jitter``): how smooth the
  model's motion is when it predicts a stretch of frames together;
- across windows (``row_jitter`` of the last row, which is the online
  output, against that of earlier rows, and ``revision_cm``: how far the
  estimate of one frame moves from one window to the next): windows
  predicted afresh at every step need not agree with each other, and the
  last row, with no future frames in view, agrees least.

The metrics' conventions apply (metrics.head_aligned_positions: FK of the
rotations, placed by the tracked head of the frame a row estimates).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from memmlp_jax import dims
from memmlp_jax import metrics
from memmlp_jax import rollout
from memmlp_jax.models import factory

# Rows of a window reported, counted back from the last (the online output).
ROWS_BACK = (0, 10, 20, 30, 40)


@functools.partial(jax.jit, static_argnames=("model",))
def _predict_windows(model, variables, windows):
  return model.apply(variables, windows, None, None, alpha=None,
                     train=False)["rot6d"]


@functools.partial(jax.jit, static_argnames=("model",))
def _teacher_windows(model, variables, windows, prev_windows, prev_motion):
  return model.apply(variables, windows, prev_windows, prev_motion,
                     alpha=model.cfg.memory_alpha, train=False)["rot6d"]


@functools.partial(jax.jit, static_argnames=("model",))
def _memory_windows(model, variables, state, sparse):
  def body(state, frame):
    state, _ = rollout.step(model, variables, state, frame[None])
    return state, state.prev_motion[0, :, :rollout.ROT_DIM]

  return jax.lax.scan(body, state, sparse)[1]


def _sliding(values, window: int, shift: int = 0):
  """Row r of window t = values[max(0, t - shift - (window - 1) + r)]."""
  index = (np.arange(len(values))[:, None] - shift - (window - 1)
           + np.arange(window)[None])
  return values[np.maximum(index, 0)]


def window_predictions(model, variables, cfg, sparse, batch: int = 256,
                       teacher_motion=None) -> np.ndarray:
  """(N, T, 132): the whole window the online rollout predicts at each frame.

  ``sparse`` (N, 54) is one clean sequence. Row T-1 of frame t is the online
  output at t; earlier frames are padded with frame 0, as the rollout pads.
  ``teacher_motion`` (N, 198), for memory models: the memory reads the true
  previous window (ground-truth rot6d and positions, as in training, alpha
  at its inference value) instead of the model's own previous prediction;
  frames before the first repeat frame 0.
  """
  sparse = np.asarray(sparse, np.float32)
  if not np.isfinite(sparse).all():
    raise ValueError("window_predictions takes clean input (no lost frames)")
  if cfg.output_frames != cfg.window:
    raise ValueError(f"{cfg.name} predicts only the last frame of a window")
  frames = len(sparse)
  if cfg.uses_memory and teacher_motion is not None:
    inputs = (_sliding(sparse, cfg.window), _sliding(sparse, cfg.window, 1),
              _sliding(np.asarray(teacher_motion, np.float32), cfg.window, 1))
    return _batched(lambda *x: _teacher_windows(model, variables, *x),
                    inputs, batch)
  if cfg.uses_memory:
    # Padded at the end to a bucketed length (one compile per bucket, not
    # per clip); the scan is causal, so the padding changes no real frame.
    padded = np.concatenate([sparse, np.repeat(
        sparse[-1:], rollout.bucket_length(frames) - frames, axis=0)])
    return np.asarray(_memory_windows(model, variables,
                                      rollout.init_state(cfg, batch=1),
                                      jnp.asarray(padded)))[:frames]
  return _batched(lambda x: _predict_windows(model, variables, x),
                  (_sliding(sparse, cfg.window),), batch)


def _batched(predict, inputs, batch: int) -> np.ndarray:
  """``predict`` over the leading axis in whole batches (one compile)."""
  frames = len(inputs[0])
  total = -(-frames // batch) * batch
  inputs = [np.concatenate([x, np.zeros((total - frames,) + x.shape[1:],
                                        x.dtype)]) for x in inputs]
  return np.concatenate([
      np.asarray(predict(*(x[i:i + batch] for x in inputs)))
      for i in range(0, total, batch)])[:frames]


def row_report(windows_rot6d, head_positions, skeleton, rows=None,
               gt_positions=None) -> dict:
  """Jitter of each window row's estimates, within-window jitter, revisions.

  Args:
    windows_rot6d: (N, T, 132) from ``window_predictions``.
    head_positions: (N, 3) the tracked head of each frame.
    skeleton: the body of the targets.
    rows: window rows to report (default: every 10th from the last).
    gt_positions: (N, 66) true joint positions: adds "mpjpe_cm", the last
      row's mean joint position error over the same frames.

  Returns:
    {"row_jitter": {r: jitter of the sequence of row r's estimates},
     "within_window_jitter": mean jitter along the rows of each window that
     lies inside the clip, "revision_cm": mean distance over joints between
     the estimates of one frame by two successive windows (last row and the
     row before it of the next window)}, jitter in 10^2 m/s^3.
  """
  windows_rot6d = np.asarray(windows_rot6d, np.float64)
  head_positions = np.asarray(head_positions, np.float64)
  frames, window = windows_rot6d.shape[:2]
  if window > frames:
    raise ValueError(f"a clip of {frames} frames is shorter than its "
                     f"{window}-frame window")
  rows = range(window - 1, -1, -10) if rows is None else rows
  # Row r of window t estimates frame t - (T - 1 - r); heads to match.
  positions = metrics.head_aligned_positions(
      windows_rot6d, _sliding(head_positions, window), skeleton)
  inside = np.arange(window - 1, frames)  # windows without padding
  report = {"row_jitter": {}}
  for r in rows:
    report["row_jitter"][int(r)] = metrics.jitter(positions[inside, r]) / 100
  report["within_window_jitter"] = float(np.mean(
      [metrics.jitter(positions[t]) for t in inside])) / 100
  # Frame t-1 as estimated by window t-1 (its last row) and by window t.
  moved = np.linalg.norm(positions[inside[1:], -2]
                         - positions[inside[1:] - 1, -1], axis=-1)
  report["revision_cm"] = float(np.mean(moved)) * 100
  if gt_positions is not None:
    truth = np.asarray(gt_positions, np.float64).reshape(frames, -1, 3)
    report["mpjpe_cm"] = float(np.mean(np.linalg.norm(
        positions[inside, -1] - truth[inside], axis=-1))) * 100
  return report


def check_model(cfg) -> None:
  """ValueError unless `cfg`'s model predicts whole windows (rows to
  compare); call it on every run before any work."""
  if cfg.output_frames != cfg.window:
    raise ValueError(f"{cfg.name} predicts only the last frame of a window: "
                     "there are no rows to compare")


def run_report(workdir: str, cfg, params, clips, skeleton,
               teacher: bool = False) -> dict:
  """One row of the table: the run's report averaged over clips.

  ``teacher``: the memory reads the true previous window, not its own.
  """
  check_model(cfg)
  model, variables = factory.build(cfg), {"params": params}
  rows = [cfg.window - 1 - back for back in ROWS_BACK if back < cfg.window]
  reports = []
  for clip in clips:
    motion = np.concatenate([clip.rot6d, clip.pos], axis=-1)
    windows = window_predictions(
        model, variables, cfg, clip.sparse,
        teacher_motion=motion if teacher else None)
    report = row_report(
        windows, clip.pos[:, dims.HEAD_POS_COLUMNS], skeleton, rows,
        gt_positions=clip.pos)
    report["gt_jitter"] = metrics.jitter(clip.pos.reshape(
        len(clip.pos), -1, 3)) / 100
    reports.append(report)
  mean = lambda key: float(np.mean([r[key] for r in reports]))
  return {
      "run": workdir, "model": cfg.name, "window": cfg.window,
      "uses_memory": cfg.uses_memory,
      "memory_input": "ground truth" if teacher else "own predictions",
      "row_jitter": {str(cfg.window - 1 - r): float(np.mean(
          [rep["row_jitter"][r] for rep in reports])) for r in rows},
      "within_window_jitter": mean("within_window_jitter"),
      "revision_cm": mean("revision_cm"), "mpjpe_cm": mean("mpjpe_cm"),
      "gt_jitter": mean("gt_jitter"),
      "clips": len(clips), "frames": int(sum(len(c.sparse) for c in clips))}


def markdown(results) -> str:
  """The reports of run_report as one Markdown table."""
  back = [f"{b} back" if b else "last row (online)" for b in ROWS_BACK]
  lines = ["| run | memory reads | " + " | ".join(back) + " | within windows "
           "| revision (cm) | last-row MPJPE (cm) | GT |",
           "| --- | --- |" + " --- |" * (len(back) + 4)]
  for r in results:
    cells = [f"{r['row_jitter'][str(b)]:.2f}" if str(b) in r["row_jitter"]
             else "-" for b in ROWS_BACK]
    memory = r["memory_input"] if r["uses_memory"] else "-"
    lines.append(f"| {os.path.basename(r['run'].rstrip('/'))} ({r['model']})"
                 f" | {memory} | {' | '.join(cells)} | "
                 f"{r['within_window_jitter']:.2f} | {r['revision_cm']:.2f} | "
                 f"{r['mpjpe_cm']:.2f} | {r['gt_jitter']:.2f} |")
  return "\n".join(lines)
