r"""Trains and evaluates model variants with one budget; writes ablation tables.

  python -m experiments.ablate --flagfile=experiments/flags/ablate.flags

Each --variant is "label:model[:field=value...]": a named config of
memmlp_jax.models.configs with fields overridden (values as Python literals),
e.g. "no_memory:memmlp41:use_memory=False". A field may also be one of the
training recipe's (memmlp_jax.ablation.RECIPE_FIELDS), e.g.
"own:memmlp41:memory_source='own'", or a peer's own optimizer. Every
variant trains with the same budget (--steps, --batch_size, --vq_steps, ...)
for every seed of --seeds, in WORKDIR/<label> (one seed) or
WORKDIR/<label>/seed_<s>, then is evaluated online on the protocol's test
split (experiments.evaluate) into results.json (+ .md, .png) there.
Each --table is "Title:label,label,..." and becomes one Markdown table of
--out, in the paper's column order, once per average (AGRoL's per-sequence
mean, frame-weighted, frames from T-1 on); without --table, one table lists
all. With several seeds a cell is "mean ± sample standard deviation", and
WORKDIR/ablation.json holds every seed's numbers.

Resumable: a variant whose results.json exists for the same run
configuration is skipped; an interrupted one resumes from its latest
checkpoint (memmlp_jax.train). The work is memmlp_jax/ablation.py's; this
app parses the flags and runs the loop.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from memmlp_jax import ablation
from memmlp_jax import checkpoints
from memmlp_jax import cli_flags
from memmlp_jax import evaluation
from memmlp_jax import host_memory
from memmlp_jax import train
from memmlp_jax.data import prepared

FLAGS = flags.FLAGS
_BUDGET = ablation.Budget()


def _shared(kind, name, default, help_text):
  """A flag experiments.train or experiments.evaluate defines too (directly):
  whichever app is imported first defines it, and a later direct definition
  may replace this one (allow_override), so the apps import into one process
  (the tests call main in-process); main re-applies this app's defaults."""
  return cli_flags.define(kind, name, default, help_text,
                          allow_override=True)


_DEFAULTS = {
    **cli_flags.workdir(help_text="Root folder; one run per variant."),
    **cli_flags.clip_source(protocol=_BUDGET.protocol,
                            data_dir=cli_flags.free_data_dir()),
    "out": cli_flags.define("string", "out", None, "Markdown file of the "
                            "ablation tables (default WORKDIR/ablation.md)."),
    "steps": _shared("integer", "steps", _BUDGET.steps,
                     "Stage-2 steps of every variant."),
    "batch_size": _shared("integer", "batch_size", _BUDGET.batch_size,
                          "Stage-2 batch of every variant."),
    "decay_at": _shared("float", "decay_at", _BUDGET.decay_at,
                        "Fraction of steps before the lr decay."),
    "vq_steps": _shared("integer", "vq_steps", _BUDGET.vq_steps,
                        "VQ-VAE steps (variants with a code)."),
    "vq_batch_size": _shared("integer", "vq_batch_size",
                             _BUDGET.vq_batch_size, "VQ-VAE batch."),
    "augment": _shared("list", "augment", list(_BUDGET.augment),
                       "Training augmentations: yaw, mirror (or none)."),
    "checkpoint_every": _shared("integer", "checkpoint_every",
                                _BUDGET.checkpoint_every,
                                "Checkpoint period (steps)."),
    "log_every": _shared("integer", "log_every", _BUDGET.log_every,
                         "Logging period (steps)."),
    "ik": _shared("bool", "ik", False,
                  "Also evaluate multi-head variants with IK."),
}
_VARIANTS = flags.DEFINE_multi_string("variant", [],
                                      "label:model[:field=value...]")
_TABLES = flags.DEFINE_multi_string("table", [], "Title:label,label,...")
_USE_PREPARED = flags.DEFINE_bool("use_prepared", False, "Use --prepared_dir "
                                  "as it is (no source check, no "
                                  "preparation).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; every variant trains once "
                           "per seed.")


def _budget() -> ablation.Budget:
  return ablation.Budget(
      protocol=FLAGS.protocol, steps=FLAGS.steps,
      batch_size=FLAGS.batch_size, decay_at=FLAGS.decay_at,
      vq_steps=FLAGS.vq_steps, vq_batch_size=FLAGS.vq_batch_size,
      augment=tuple(FLAGS.augment), checkpoint_every=FLAGS.checkpoint_every,
      log_every=FLAGS.log_every)


def _splits():
  """(train split, scorable test clips, skeleton) of --protocol."""
  prepared_dir = FLAGS.prepared_dir or os.path.join("prepared",
                                                    FLAGS.protocol)
  try:
    if not _USE_PREPARED.value:
      prepared.ensure_prepared(
          FLAGS.protocol, FLAGS.data_dir, prepared_dir,
          body_model=FLAGS.body_model, lists_dir=FLAGS.lists_dir,
          fetch_missing=False, log=logging.info)
    train_split = prepared.load_split(prepared_dir, "train")
    clips, skeleton = evaluation.split_clips(
        prepared.load_split(prepared_dir, "test"))
  except (ValueError, OSError) as e:
    raise app.UsageError(f"--protocol {FLAGS.protocol} / --prepared_dir "
                         f"{prepared_dir}: {e}") from None
  clips, _ = evaluation.scorable(clips)
  return train_split, clips, skeleton


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  host_memory.reuse_freed_memory()
  checkpoints.quiet_orbax_logs()
  budget = _budget()
  try:
    variants = [ablation.parse_variant(v) for v in _VARIANTS.value]
    if not variants:
      raise ValueError("give at least one --variant")
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
      raise ValueError(f"--variant labels repeat: {labels}")
    tables = [ablation.parse_table(t, labels) for t in _TABLES.value] or [
        ("All variants", labels)]
    seeds = ablation.parse_seeds(_SEEDS.value)
    configs_by_label = {v.label: {s: ablation.run_config(v, s, budget)
                                  for s in seeds}
                        for v in variants}
  except (ValueError, TypeError) as e:
    raise app.UsageError(str(e)) from None
  train_split, clips, skeleton = _splits()
  results = {}
  for variant in variants:
    with_ik = [False, True] if (FLAGS.ik and
                                variant.model.predicts_positions) else [False]
    for seed in seeds:
      config = configs_by_label[variant.label][seed]
      workdir = ablation.variant_dir(FLAGS.workdir, variant.label, seed,
                                     seeds)
      for use_ik in with_ik:
        label = variant.label + ("+ik" if use_ik else "")
        name = label + (f" (seed {seed})" if len(seeds) > 1 else "")
        done = ablation.finished(
            os.path.join(workdir, ablation.results_name(use_ik)), config)
        if done is not None:
          print(f"{name}: finished earlier, skipping")
        else:
          print(f"{name}: training and evaluating")
          try:
            done = ablation.run_variant(variant, config, workdir,
                                        train_split, clips, skeleton, use_ik)
          except train.ConfigMismatchError as e:
            raise app.UsageError(f"{name}: {e}") from None
          print(f"{variant.label}: {evaluation.timing_line(done)}")
        results.setdefault(label, []).append(done)
  ik_rows = [label for label in results if label.endswith("+ik")]
  if ik_rows:
    tables.append(("With IK refinement", ik_rows))
  out = FLAGS.out or os.path.join(FLAGS.workdir, "ablation.md")
  text = ablation.tables_markdown(tables, results,
                                  budget.describe(seeds, len(clips)))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(text)
  with open(os.path.join(FLAGS.workdir, "ablation.json"), "w",
            encoding="utf-8") as f:
    json.dump(ablation.summary_json(results), f, indent=1)
  print(text)


if __name__ == "__main__":
  app.run(main)
