r"""Where a model's online jitter comes from (memmlp_jax.diagnostics).

  python -m experiments.diagnose_jitter --protocol=free \
      --data_dir=../shared/data --out=jitter.json \
      --workdir=runs/ablate_cpu/agrol_mlp41 --workdir=runs/ablate_cpu/memmlp41
  python -m experiments.diagnose_jitter --bvh_dir=DIR --bvh_map=MAP.json \
      --out=jitter.json --workdir=RUN

For each run, predicts the whole window at every frame of the protocol's
test clips, or of a folder of BVH files (the first --clips of them; clips
with lost frames or shorter than the longest window + 3 are left out) and
prints one Markdown row: the jitter of the online output (the window's last
row) and of the estimates 10, 20, ... rows back, the jitter within windows,
how far one frame's estimate moves between two successive windows (cm), the
last row's MPJPE and the ground truth's jitter; each per clip over the
frames from T-1 on (whole windows; the start-up frames are left out), then
averaged over clips. For a memory model a second row feeds the memory the
true previous window, as training does: the gap between the two rows is what
feeding back its own predictions costs. Writes the rows as JSON to --out and the table next to
it (.md).
"""

import json
import os

from absl import app
from absl import flags
import numpy as np

from memmlp_jax import checkpoints
from memmlp_jax import diagnostics
from memmlp_jax import evaluation
from memmlp_jax import host_memory
from memmlp_jax import metrics
from memmlp_jax.data import protocols
from memmlp_jax.models import factory

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("workdir", [], "Training runs to diagnose.")
flags.DEFINE_string("out", None, "JSON to write (.md next to it).")
flags.DEFINE_enum("protocol", None, protocols.NAMES,
                  "Diagnose on this protocol's test split.")
flags.DEFINE_string("bvh_dir", None, "Or on every .bvh in this folder.")
flags.DEFINE_string("bvh_map", None, "Joint-map JSON for --bvh_dir.")
flags.DEFINE_string("data_dir", os.environ.get("MEMMLP_DATA"),
                    "Data root of --protocol (default $MEMMLP_DATA).")
flags.DEFINE_string("prepared_dir", None, "Prepared dataset folder "
                    "(default prepared/<protocol>).")
flags.DEFINE_string("body_model", None, "AMASS protocols: SMPL-H model.npz.")
flags.DEFINE_string("lists_dir", None, "Protocol s1: folder of list files.")
flags.DEFINE_integer("clips", 0, "Diagnose the first N test clips (0: all).")
flags.DEFINE_bool("teacher_forcing", True, "For memory models, also a row "
                  "with the memory reading the true previous window (as in "
                  "training) instead of the model's own prediction.")

_BACK = (0, 10, 20, 30, 40)  # rows back from the last


def _restore(workdir: str):
  try:
    return checkpoints.restore(workdir)
  except (FileNotFoundError, OSError, ValueError, KeyError) as e:
    raise app.UsageError(f"--workdir {workdir}: cannot restore a trained "
                         f"model ({e})")


def diagnose(workdir: str, cfg, params, clips, skeleton,
             teacher: bool = False) -> dict:
  """One row of the table: the run's report averaged over clips.

  ``teacher``: the memory reads the true previous window, not its own.
  """
  model, variables = factory.build(cfg), {"params": params}
  rows = [cfg.window - 1 - back for back in _BACK if back < cfg.window]
  reports = []
  for clip in clips:
    motion = np.concatenate([clip.rot6d, clip.pos], axis=-1)
    windows = diagnostics.window_predictions(
        model, variables, cfg, clip.sparse,
        teacher_motion=motion if teacher else None)
    report = diagnostics.row_report(
        windows, clip.pos[:, evaluation.HEAD_COLUMNS], skeleton, rows,
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
  back = [f"{b} back" if b else "last row (online)" for b in _BACK]
  lines = ["| run | memory reads | " + " | ".join(back) + " | within windows "
           "| revision (cm) | last-row MPJPE (cm) | GT |",
           "| --- | --- |" + " --- |" * (len(back) + 4)]
  for r in results:
    cells = [f"{r['row_jitter'][str(b)]:.2f}" if str(b) in r["row_jitter"]
             else "-" for b in _BACK]
    memory = r["memory_input"] if r["uses_memory"] else "-"
    lines.append(f"| {os.path.basename(r['run'].rstrip('/'))} ({r['model']})"
                 f" | {memory} | {' | '.join(cells)} | "
                 f"{r['within_window_jitter']:.2f} | {r['revision_cm']:.2f} | "
                 f"{r['mpjpe_cm']:.2f} | {r['gt_jitter']:.2f} |")
  return "\n".join(lines)


def _load():
  """(clips, skeleton) of --protocol's test split or of --bvh_dir."""
  try:
    clips, skeleton, _ = evaluation.load_clips(
        protocol=FLAGS.protocol, data_dir=FLAGS.data_dir,
        prepared_dir=FLAGS.prepared_dir, body_model=FLAGS.body_model,
        lists_dir=FLAGS.lists_dir, bvh_dir=FLAGS.bvh_dir,
        bvh_map=FLAGS.bvh_map)
  except ValueError as e:
    raise app.UsageError(str(e))
  return clips, skeleton


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir or not FLAGS.out:
    raise app.UsageError("--workdir (one or more) and --out are required")
  if bool(FLAGS.protocol) == bool(FLAGS.bvh_dir):
    raise app.UsageError("give either --protocol (with --data_dir) or "
                         "--bvh_dir (with --bvh_map)")
  if FLAGS.protocol and not FLAGS.data_dir:
    raise app.UsageError("--protocol needs --data_dir (or $MEMMLP_DATA)")
  if FLAGS.bvh_dir and not FLAGS.bvh_map:
    raise app.UsageError("--bvh_dir needs --bvh_map (a joint-map JSON)")
  if FLAGS.clips < 0:
    raise app.UsageError("--clips must be >= 0")
  host_memory.reuse_freed_memory()
  runs = [(w, *_restore(w)) for w in FLAGS.workdir]  # fail before any work
  clips, skeleton = _load()
  clips = [c for c in clips if np.isfinite(c.sparse).all()]
  clips = clips[:FLAGS.clips] if FLAGS.clips else clips
  # Every run sees the same clips: long enough for windows inside them.
  longest = max(cfg.window for _, cfg, _ in runs)
  clips = [c for c in clips if len(c.sparse) >= longest + 3]
  if not clips:
    raise app.UsageError(f"no clean clip of at least {longest + 3} frames "
                         "to diagnose")
  results = []
  for w, cfg, params in runs:
    results.append(diagnose(w, cfg, params, clips, skeleton))
    if cfg.uses_memory and FLAGS.teacher_forcing:
      results.append(diagnose(w, cfg, params, clips, skeleton, teacher=True))
  table = markdown(results)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  with open(os.path.splitext(FLAGS.out)[0] + ".md", "w",
            encoding="utf-8") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
