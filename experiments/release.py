r"""Releases a trained free-protocol run as the shipped model and its card.

  python -m experiments.release --workdir=RUN \
      [--out=pretrained/memmlp41_free.npz] [--dtype=float16] \
      [--data_dir=../shared/data]

Writes OUT (the model's parameters and the run's config in one file,
memmlp_jax/pretrained.py; at most 20 MB), OUT.sha256 (its checksum, verified
whenever it is loaded) and the model card, README.md next to OUT: the data
and their licences, the training budget and recipe, a train command that
reproduces the run's config, the free-test metrics (RUN/results.json of
experiments.evaluate when there is one, else evaluated here) and a check
metric on a few named free test clips, which tests/test_pretrained.py
recomputes from the file. Commit OUT, OUT.sha256 and the card.
"""

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from memmlp_jax import checkpoints
from memmlp_jax import cli_flags
from memmlp_jax import evaluation
from memmlp_jax import host_memory
from memmlp_jax import pretrained
from memmlp_jax import run_config
from memmlp_jax.models import configs
from memmlp_jax.models import factory

FLAGS = flags.FLAGS
_DEFAULTS = {
    **cli_flags.workdir(help_text="The trained free-protocol run to "
                        "release."),
    "out": cli_flags.define(
        "string", "out", os.path.join("pretrained", "memmlp41_free.npz"),
        "The release file to write (its checksum and the card, README.md, "
        "go next to it)."),
    "data_dir": cli_flags.define(
        "string", "data_dir", cli_flags.free_data_dir(),
        "The free protocol's mocap folders (default $MEMMLP_DATA)."),
    "prepared_dir": cli_flags.define(
        "string", "prepared_dir", os.path.join("prepared", "free"),
        "The prepared free dataset, for the evaluation when RUN has no "
        "results.json."),
}
_DTYPE = flags.DEFINE_enum("dtype", "float32", pretrained.DTYPES,
                           "How the parameters are stored.")
_RESULTS = flags.DEFINE_string(
    "results", None, "experiments.evaluate's results.json of RUN on the free "
    "protocol (default RUN/results.json; evaluated here when absent).")
# Whole clips from each source of the free test split: a walk, a jog, a
# CMU BVH walk and an HDM05 squat; about 500 frames in all.
_CHECK_CLIPS = flags.DEFINE_list(
    "check_clips", ["cmu/02_01", "cmu/35_01", "cmu_bvh/09_02",
                    "hdm05/HDM_bd_squat1Reps_002_120"],
    "Free test clips of the card's check metric.")

# Run-config fields that say when the run logged and saved, not what it
# computed: left out of the card's recipe.
_BOOKKEEPING = ("stage", "checkpoint_every", "log_every", "eval_every",
                "eval_batches")

_LICENCES = """\
- **CMU Graphics Lab Motion Capture Database** (`cmu_mocap_asfamc/`,
  `cmu_mocap_bvh/`), mocap.cs.cmu.edu: "This dataset of motions is free for
  all uses. [...] You may include this data in commercially-sold products,
  but you may not resell this data directly, even in converted form."
  Acknowledgment: "The data used in this project was obtained from
  mocap.cs.cmu.edu. The database was created with funding from NSF
  EIA-0196217."
- **HDM05** (`hdm05_cut_asfamc/`), resources.mpi-inf.mpg.de/HDM05: "licensed
  under a Creative Commons Attribution-ShareAlike 3.0 Unported License";
  cite M. Müller, T. Röder, M. Clausen, B. Eberhardt, B. Krüger, A. Weber:
  Documentation Mocap Database HDM05, Technical report CG-2007-2, Universität
  Bonn, 2007, and acknowledge "The data used in this project was obtained
  from HDM05."

The weights are learned from these data; keep both attributions with them.
"""


def _fail(message: str):
  sys.exit(f"error: {message}")


def _restore(workdir: str):
  """(RunConfig, params, step) of a finished free-protocol run."""
  try:
    config, params = checkpoints.restore_run(workdir)
  except (OSError, ValueError, KeyError) as e:
    _fail(f"--workdir {workdir}: cannot restore a trained model ({e})")
  if config.protocol != "free":
    _fail(f"--workdir {workdir}: a {config.protocol} run; the shipped model "
          "is trained on the free protocol (its data may be redistributed)")
  step = checkpoints.latest_step(os.path.join(workdir,
                                              checkpoints.MODEL_STAGE))
  return config, params, step


def _free_test_results(cfg, params, workdir: str):
  """(results, where they come from): RUN's results.json, else evaluated."""
  path = _RESULTS.value or os.path.join(workdir, "results.json")
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
    count = sum(np.size(x) for x in jax.tree.leaves(params))
    # What the commands run by default: the plain online rollout.
    mode = evaluation.mode_label(offline=False, use_ik=False, tflite=None)
    if (results.get("source") != "free" or results.get("model") != cfg.name
        or results.get("params") != count or results.get("mode") != mode):
      _fail(f"{path}: not the free-protocol results of this run's model in "
            f"the {mode} (source {results.get('source')!r}, model "
            f"{results.get('model')!r}, {results.get('params')} params, "
            f"mode {results.get('mode')!r}); pass --results, or remove it "
            "to evaluate here")
    return results, (f"`experiments.evaluate` on the run (its "
                     f"`{os.path.basename(path)}`, float32 weights)")
  try:
    clips, body = evaluation.protocol_clips("free", FLAGS.data_dir,
                                            FLAGS.prepared_dir)
  except (OSError, ValueError) as e:
    _fail(f"no {path} and the free test split cannot be loaded to "
          f"evaluate ({e})")
  clips, _ = evaluation.scorable(clips)
  results, _ = evaluation.evaluate(cfg, params, clips, body)
  return results, "`experiments.evaluate` at release, on the shipped weights"


def _recipe_table(config: run_config.RunConfig) -> str:
  """The run config's fields but the model, the budget and bookkeeping."""
  skip = ("model", "steps", "batch_size", "vq_steps", "vq_batch_size",
          "init_from") + _BOOKKEEPING
  rows = ["| recipe field | value |", "| --- | --- |"]
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if field.name not in skip:
      text = ", ".join(value) if isinstance(value, tuple) else value
      rows.append(f"| {field.name} | {text} |")
  return "\n".join(rows)


def _lineage(
    config: run_config.RunConfig) -> list[tuple[str, run_config.RunConfig]]:
  """[(workdir, RunConfig)] of the runs ``config`` fine-tunes, oldest first."""
  runs = []
  while config.init_from:
    path = config.init_from
    if len(runs) == 16 or any(path == p for p, _ in runs):
      _fail(f"--workdir {FLAGS.workdir}: its --init_from runs loop or go "
            f"deeper than 16 ({path})")
    try:
      config = checkpoints.load_config(path)
    except (OSError, ValueError, KeyError) as e:
      _fail(f"--workdir {FLAGS.workdir} fine-tunes {path}, whose config "
            f"cannot be read ({e}); the card gives that run's recipe too")
    runs.insert(0, (path, config))
  return runs


def _training(release: pretrained.Release, lineage, base: str) -> str:
  """The card's Training section: budget, recipe and the commands."""
  config, window = release.config, release.config.model.window
  runs = [*lineage, (os.path.join("runs", base), config)]
  rows = [f"| run | stage | steps | batch (windows of {window} frames) "
          "| windows seen |", "| --- | --- | --- | --- | --- |"]
  for i, (path, run) in enumerate(runs):
    if i == 0 and run.model.uses_vq:
      seen = run.vq_steps * run.vq_batch_size
      rows.append(f"| `{path}` | 1, VQ-VAE | {run.vq_steps:,} | "
                  f"{run.vq_batch_size} | {seen:,} |")
    rows.append(f"| `{path}` | 2, Mem-MLP{', fine-tuned' if i else ''} | "
                f"{run.steps:,} | {run.batch_size} | "
                f"{run.steps * run.batch_size:,} |")
  if lineage:
    total = sum(run.steps * run.batch_size for _, run in runs)
    rows.append(f"| all | 2 | {sum(run.steps for _, run in runs):,} | | "
                f"{total:,} |")
    how = (f"Stage 2 ran {len(runs)} times, each run starting from the "
           "model of the one before (`--init_from`: its VQ part kept frozen, "
           "the loss weights and the learning-rate schedule started "
           "afresh). ")
  else:
    how = ""
  commands = "\n\n".join(run_config.train_command(run, path)
                         for path, run in runs)
  last = " of the last run" if lineage else ""
  order = ", in order" if lineage else ""
  return f"""\
The free protocol's training split; stage 1 trains the VQ-VAE, stage 2
Mem-MLP with the VQ encoder frozen (docs/training.md). {how}Released at
stage-2 step {release.step:,} of {config.steps:,}{last}.

{chr(10).join(rows)}

{_recipe_table(config)}

Trained by (each run's config.json as flags{order}):

```bash
{commands}
```"""


def card(name: str, size: int, digest: str, release: pretrained.Release,
         results: dict, results_from: str, lineage=()) -> str:
  """The model card (pretrained/README.md) of a release.

  ``lineage``: [(workdir, RunConfig)] of the runs the released one
  fine-tunes, oldest first (``_lineage``).
  """
  cfg = release.config.model
  counts = factory.count_params(cfg)
  model = ", ".join([cfg.name] + [
      f"{k}={v!r}"
      for k, v in run_config.changed_fields(cfg, configs.get_config(cfg.name))])
  check = release.check
  clips = ", ".join(f"`{c}`" for c in check["clips"])
  base = os.path.splitext(name)[0]
  return f"""# The shipped model: {base}

`{name}` is Mem-MLP ({model}): {counts['total']:,} parameters, of which
{counts['frozen']:,} are the frozen VQ-VAE encoder and codebook, trained on
the free protocol: freely licensed mocap only (see "Data and licences").
`experiments.predict`, `evaluate`, `export`, `live` and the notebook run it
when they are given no `--workdir` (nor `--tflite`).

| file | size | stored as | sha256 |
| --- | --- | --- | --- |
| `{name}` | {size:,} bytes ({size / 1e6:.1f} MB) | {release.dtype} | `{digest}` |

`{name}.sha256` holds the same checksum (`sha256sum -c` checks it);
loading the model verifies it and refuses a file that differs.

## Use

```bash
python -m experiments.predict --input=rec.csv --output=out.bvh
python -m experiments.evaluate --protocol=free --data_dir=../shared/data --out=results.json
python -m experiments.export --out=model.tflite
python -m experiments.live --pin_hands
```

`--workdir=RUN` runs a training run instead; `MEMMLP_PRETRAINED=FILE` makes
another release file the default.

## Free-test metrics

From {results_from}: {results['mode']} over the free test split
(`memmlp_jax/data/splits/free.txt`, never trained on), {results['sequences']}
sequences, {results['frames']:,} frames. MPJRE in degrees, position errors in
cm, MPJVE in cm/s, jitter in 10^2 m/s^3 (docs/design.md §5).

{evaluation.averages_table(cfg.name, results)}

## Check

On the whole free test clips {clips}, the shipped weights give
**MPJPE {check['mpjpe']:.3f} cm, MPJRE {check['mpjre']:.3f} deg** (online
rollout, averaged over the clips); `tests/test_pretrained.py` recomputes
this from the file.

## Training

{_training(release, lineage, base)}

## Data and licences

{_LICENCES}"""


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  logging.set_verbosity(logging.WARNING)
  host_memory.reuse_freed_memory()
  checkpoints.quiet_orbax_logs()
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  if not os.path.isdir(out_dir):
    _fail(f"--out: folder {out_dir} does not exist")
  config, params, step = _restore(FLAGS.workdir)
  lineage = _lineage(config)
  params = pretrained.stored(params, _DTYPE.value)  # what the file gives back
  try:
    clips, body = pretrained.check_clips(FLAGS.data_dir, _CHECK_CLIPS.value)
  except (OSError, ValueError) as e:
    _fail(f"--check_clips: {e}")
  check = {"clips": _CHECK_CLIPS.value,
           **pretrained.check_scores(config.model, params, clips, body)}
  results, results_from = _free_test_results(config.model, params,
                                             FLAGS.workdir)
  release = pretrained.Release(config, params, step, _DTYPE.value, check)
  try:
    digest = pretrained.save(FLAGS.out, release)
    pretrained.load(FLAGS.out)  # reads back as every user will
  except pretrained.PretrainedError as e:
    _fail(str(e))
  size = os.path.getsize(FLAGS.out)
  card_path = os.path.join(os.path.dirname(FLAGS.out), "README.md")
  with open(card_path, "w", encoding="utf-8") as f:
    f.write(card(os.path.basename(FLAGS.out), size, digest, release, results,
                 results_from, lineage))
  print(f"wrote {FLAGS.out} ({size / 1e6:.1f} MB, {_DTYPE.value}, step "
        f"{step} of {config.steps}), {pretrained.checksum_path(FLAGS.out)} "
        f"and {card_path}; check MPJPE {check['mpjpe']:.3f} cm on "
        f"{len(clips)} clips, free-test MPJPE {results['mpjpe']:.2f} cm")


if __name__ == "__main__":
  app.run(main)
