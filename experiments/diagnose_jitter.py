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
from memmlp_jax import cli_flags
from memmlp_jax import diagnostics
from memmlp_jax import evaluation
from memmlp_jax import host_memory

FLAGS = flags.FLAGS


class _EveryValueFlag(flags.Flag):
  """A string flag that also keeps every value given, in order.

  --workdir is every other app's string flag (memmlp_jax/cli_flags.py), one
  run; here it may be repeated, one run each. To the other apps this flag is
  the plain string flag it replaces (the last value given wins), so all apps
  still import into one process (the tests call main in-process).
  """

  def __init__(self, name, default, help_text):
    super().__init__(flags.ArgumentParser(), flags.ArgumentSerializer(),
                     name, default, help_text, allow_override=True)
    self.given = ()  # a tuple: flagsaver's shallow copy restores it

  def parse(self, argument):
    super().parse(argument)
    self.given = self.given + (self.value,)

  def unparse(self):
    super().unparse()
    self.given = ()


flags.DEFINE_flag(_EveryValueFlag("workdir", None, "A training run to "
                                  "diagnose; repeat the flag for several."))
flags.declare_key_flag("workdir")
# It replaced any plain --workdir already defined; a later plain definition
# must fail loudly instead of replacing it in turn (cli_flags.define reuses).
FLAGS["workdir"].allow_override = False
_DEFAULTS = cli_flags.clip_source(data_dir=os.environ.get("MEMMLP_DATA"),
                                  bvh_dir=True)
_DEFAULTS["out"] = cli_flags.define("string", "out", None, "JSON to write "
                                    "(.md next to it).")
flags.DEFINE_integer("clips", 0, "Diagnose the first N test clips (0: all).")
flags.DEFINE_bool("teacher_forcing", True, "For memory models, also a row "
                  "with the memory reading the true previous window (as in "
                  "training) instead of the model's own prediction.")

def _restore(workdir: str):
  try:
    return checkpoints.restore(workdir)
  except (FileNotFoundError, OSError, ValueError, KeyError) as e:
    raise app.UsageError(f"--workdir {workdir}: cannot restore a trained "
                         f"model ({e})")


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
  cli_flags.use_defaults({**_DEFAULTS, "workdir": None})
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdirs = list(FLAGS["workdir"].given)
  if not workdirs or not FLAGS.out:
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
  checkpoints.quiet_orbax_logs()
  runs = [(w, *_restore(w)) for w in workdirs]  # fail before any work
  for w, cfg, _ in runs:
    try:
      diagnostics.check_model(cfg)
    except ValueError as e:
      raise app.UsageError(f"--workdir {w}: {e}") from None
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
    results.append(diagnostics.run_report(w, cfg, params, clips, skeleton))
    if cfg.uses_memory and FLAGS.teacher_forcing:
      results.append(diagnostics.run_report(w, cfg, params, clips, skeleton,
                                            teacher=True))
  table = diagnostics.markdown(results)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  with open(os.path.splitext(FLAGS.out)[0] + ".md", "w",
            encoding="utf-8") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  app.run(main)
