r"""Trains and evaluates model variants with one budget; writes ablation tables.

  python -m experiments.ablate --flagfile=experiments/flags/ablate.flags

Each --variant is "label:model[:field=value...]": a named config of
memmlp_jax.models.configs with fields overridden (values as Python literals),
e.g. "no_memory:memmlp41:use_memory=False". A field may also be one of the
training recipe's (RECIPE_FIELDS of memmlp_jax.train.RunConfig), e.g.
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
checkpoint (memmlp_jax.train).
"""

import dataclasses
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from memmlp_jax import evaluation
from memmlp_jax import checkpoints
from memmlp_jax import host_memory
from memmlp_jax import metrics
from memmlp_jax import train
from memmlp_jax.data import prepared
from memmlp_jax.data import protocols
from memmlp_jax.models import configs

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Root folder; one run per variant.")
flags.DEFINE_string("out", None, "Markdown file of the ablation tables "
                    "(default WORKDIR/ablation.md).")
flags.DEFINE_multi_string("variant", [], "label:model[:field=value...]")
flags.DEFINE_multi_string("table", [], "Title:label,label,...")
flags.DEFINE_enum("protocol", "free", protocols.NAMES, "Data protocol.")
flags.DEFINE_string("data_dir", os.environ.get(
    "MEMMLP_DATA", os.path.join("..", "shared", "data")), "Data root.")
flags.DEFINE_string("prepared_dir", None, "Prepared dataset folder (default "
                    "prepared/<protocol>; prepared when missing or stale).")
flags.DEFINE_string("body_model", None, "AMASS protocols: SMPL-H model.npz.")
flags.DEFINE_string("lists_dir", None, "Protocol s1: folder of list files.")
flags.DEFINE_bool("use_prepared", False, "Use --prepared_dir as it is "
                  "(no source check, no preparation).")
flags.DEFINE_integer("steps", 1000, "Stage-2 steps of every variant.")
flags.DEFINE_integer("batch_size", 256, "Stage-2 batch of every variant.")
flags.DEFINE_float("decay_at", 0.8, "Fraction of steps before the lr decay.")
flags.DEFINE_integer("vq_steps", 400, "VQ-VAE steps (variants with a code).")
flags.DEFINE_integer("vq_batch_size", 256, "VQ-VAE batch.")
flags.DEFINE_list("augment", [], "Training augmentations: yaw, mirror "
                  "(or none).")
flags.DEFINE_list("seeds", ["0"], "Seeds; every variant trains once per "
                  "seed.")
flags.DEFINE_integer("checkpoint_every", 100, "Checkpoint period (steps).")
flags.DEFINE_integer("log_every", 50, "Logging period (steps).")
flags.DEFINE_bool("ik", False, "Also evaluate multi-head variants with IK.")


def results_name(use_ik: bool) -> str:
  return "results_ik.json" if use_ik else "results.json"


# Training-recipe fields a variant may set (the rest of the budget is shared).
RECIPE_FIELDS = ("memory_source", "memory_noise", "start_share",
                 "loss_weight_lr", "optimizer", "learning_rate",
                 "final_learning_rate", "weight_decay", "vq_augment",
                 "vq_weight_decay")


@dataclasses.dataclass(frozen=True)
class Variant:
  label: str
  model: configs.ModelConfig
  recipe: tuple[tuple[str, object], ...] = ()


def parse_variant(spec: str) -> Variant:
  """"label:model[:field=value...]" -> Variant; UsageError when malformed."""
  parts = spec.split(":")
  if len(parts) < 2 or not parts[0] or not parts[1]:
    raise app.UsageError(f"--variant {spec!r}: expected "
                         "label:model[:field=value...]")
  try:
    overrides = configs.parse_overrides(parts[2:])
    recipe = tuple((k, overrides.pop(k)) for k in RECIPE_FIELDS
                   if k in overrides)
    return Variant(parts[0], configs.get_config(parts[1], **overrides),
                   recipe)
  except (ValueError, TypeError) as e:
    raise app.UsageError(f"--variant {spec!r}: {e}") from None


def parse_table(spec: str, labels) -> tuple[str, list[str]]:
  title, sep, names = spec.rpartition(":")
  rows = [n.strip() for n in names.split(",") if n.strip()]
  if not sep or not title or not rows:
    raise app.UsageError(f"--table {spec!r}: expected Title:label,label,...")
  unknown = [r for r in rows if r not in labels]
  if unknown:
    raise app.UsageError(f"--table {title!r}: no --variant labelled "
                         f"{unknown}")
  return title, rows


def run_config(variant: Variant, seed: int) -> train.RunConfig:
  """The one budget every variant trains with, and the variant's recipe."""
  return train.RunConfig(
      model=variant.model, protocol=FLAGS.protocol, steps=FLAGS.steps,
      batch_size=FLAGS.batch_size, seed=seed, decay_at=FLAGS.decay_at,
      augment=tuple(a for a in FLAGS.augment if a != "none"),
      vq_steps=FLAGS.vq_steps,
      vq_batch_size=FLAGS.vq_batch_size,
      checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every,
      eval_every=FLAGS.steps, eval_batches=0, **dict(variant.recipe))


def finished(results_path: str, config: train.RunConfig) -> dict | None:
  """The saved results of this exact run configuration, if any."""
  if not os.path.exists(results_path):
    return None
  with open(results_path, encoding="utf-8") as f:
    results = json.load(f)
  saved = results.get("run_config")
  return results if saved and train.same_run(saved, config) else None


def run_variant(variant: Variant, config: train.RunConfig, workdir: str,
                train_split, clips, skeleton, use_ik: bool) -> dict:
  """Trains (resuming) and evaluates one variant; returns its results."""
  started = time.perf_counter()
  train.train(config, workdir, train_split)
  train_s = time.perf_counter() - started
  cfg, params = train.restore(workdir)
  results, rows = evaluation.evaluate(cfg, params, clips, skeleton,
                                      use_ik=use_ik)
  results["timing"]["train_s"] = train_s
  results.update(source=config.protocol, run_config=config.to_json())
  evaluation.write_outputs(os.path.join(workdir, results_name(use_ik)),
                           results, rows,
                           variant.label + (" + IK" if use_ik else ""))
  print(f"{variant.label}: {evaluation.timing_line(results)}")
  return results


AVERAGES = (("per-sequence mean (AGRoL's)", None),
            ("frame-weighted", "frame_weighted"),
            ("frames from T-1 on", "from_window"))


def _average(result: dict, key: str | None) -> dict | None:
  return result if key is None else result.get(key)


def seed_summary(per_seed: list[dict], key: str | None) -> dict | None:
  """{"mean": {...}, "std": {...}, "seeds": n} of one average over seeds."""
  values = [_average(r, key) for r in per_seed]
  if not values or any(v is None for v in values):
    return None
  columns = metrics.COLUMNS + ("gt_jitter",)
  stack = {c: np.array([v[c] for v in values]) for c in columns}
  return {"mean": {c: float(x.mean()) for c, x in stack.items()},
          "std": {c: float(x.std(ddof=1)) if len(x) > 1 else 0.0
                  for c, x in stack.items()},
          "seeds": len(values)}


def seed_table(rows: dict[str, list[dict]], key: str | None) -> str:
  """A Markdown table; cells are mean ± sample std over seeds when n > 1."""
  header = ("| Method | " + " | ".join(metrics.HEADERS[c] for c in
                                        metrics.COLUMNS) + " |")
  lines = [header, "| --- |" + " --- |" * len(metrics.COLUMNS)]
  for name, per_seed in rows.items():
    summary = seed_summary(per_seed, key)
    if summary is None:
      continue
    cells = [f"{summary['mean'][c]:.2f}" + (
        f" ± {summary['std'][c]:.2f}" if summary["seeds"] > 1 else "")
             for c in metrics.COLUMNS]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def tables_markdown(tables, results, budget: str) -> str:
  """`results`: label -> list of per-seed results."""
  parts = [f"# Ablations\n\n{budget}\n"]
  for title, rows in tables:
    for average, key in AVERAGES:
      table = seed_table({r: results[r] for r in rows if r in results}, key)
      parts.append(f"## {title} — {average}\n\n{table}\n")
  return "\n".join(parts)


def summary_json(results) -> dict:
  """label -> every seed's results and their mean/std per average."""
  return {label: {"seeds": [r["run_config"]["seed"] for r in per_seed],
                  **{key or "per_sequence": seed_summary(per_seed, key)
                     for _, key in AVERAGES},
                  "per_seed": [{k: r[k] for k in metrics.COLUMNS
                                + ("gt_jitter", "frame_weighted",
                                   "from_window") if k in r}
                               for r in per_seed]}
          for label, per_seed in results.items()}


def _splits():
  prepared_dir = FLAGS.prepared_dir or os.path.join("prepared",
                                                    FLAGS.protocol)
  try:
    if not FLAGS.use_prepared:
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
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  host_memory.reuse_freed_memory()
  checkpoints.quiet_orbax_logs()
  variants = [parse_variant(v) for v in FLAGS.variant]
  if not variants:
    raise app.UsageError("give at least one --variant")
  labels = [v.label for v in variants]
  if len(set(labels)) != len(labels):
    raise app.UsageError(f"--variant labels repeat: {labels}")
  tables = [parse_table(t, labels) for t in FLAGS.table] or [
      ("All variants", labels)]
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise app.UsageError(f"--seeds {FLAGS.seeds}: not integers") from None
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise app.UsageError(f"--seeds {FLAGS.seeds}: give distinct seeds >= 0")
  try:
    configs_by_label = {v.label: {s: run_config(v, s) for s in seeds}
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
      workdir = os.path.join(FLAGS.workdir, variant.label)
      if len(seeds) > 1:
        workdir = os.path.join(workdir, f"seed_{seed}")
      for use_ik in with_ik:
        label = variant.label + ("+ik" if use_ik else "")
        name = label + (f" (seed {seed})" if len(seeds) > 1 else "")
        done = finished(os.path.join(workdir, results_name(use_ik)), config)
        if done is not None:
          print(f"{name}: finished earlier, skipping")
        else:
          print(f"{name}: training and evaluating")
          try:
            done = run_variant(variant, config, workdir, train_split, clips,
                               skeleton, use_ik)
          except train.ConfigMismatchError as e:
            raise app.UsageError(f"{name}: {e}") from None
        results.setdefault(label, []).append(done)
  ik_rows = [label for label in results if label.endswith("+ik")]
  if ik_rows:
    tables.append(("With IK refinement", ik_rows))
  budget = (f"Every variant: {FLAGS.steps} steps at batch {FLAGS.batch_size} "
            f"(VQ-VAE {FLAGS.vq_steps} steps at batch {FLAGS.vq_batch_size} "
            f"where used), seeds {', '.join(map(str, seeds))}, protocol "
            f"{FLAGS.protocol}; "
            f"online rollout on {len(clips)} test sequences.")
  out = FLAGS.out or os.path.join(FLAGS.workdir, "ablation.md")
  text = tables_markdown(tables, results, budget)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(text)
  with open(os.path.join(FLAGS.workdir, "ablation.json"), "w",
            encoding="utf-8") as f:
    json.dump(summary_json(results), f, indent=1)
  print(text)


if __name__ == "__main__":
  app.run(main)
