"""Ablations: model variants trained with one budget, and their tables.

The library side of experiments/ablate.py (which parses the flags and runs
the loop): what a variant is, the run configuration every variant trains
with, training and evaluating one (resuming), and the Markdown tables and
JSON summary over seeds.

A variant is "label:model[:field=value...]": a named config of
memmlp_jax.models.configs with fields overridden (values as Python
literals), where a field may also be one of the training recipe's
(RECIPE_FIELDS of memmlp_jax.train.RunConfig).
"""

import dataclasses
import json
import os
import time

import numpy as np

from memmlp_jax import checkpoints
from memmlp_jax import evaluation
from memmlp_jax import metrics
from memmlp_jax import train
from memmlp_jax.models import configs

# Training-recipe fields a variant may set (the rest of the budget is shared).
RECIPE_FIELDS = ("memory_source", "memory_noise", "start_share",
                 "loss_weight_lr", "optimizer", "learning_rate",
                 "final_learning_rate", "weight_decay", "vq_augment",
                 "vq_weight_decay", "vq_restart_until", "fake_quant")

# The averages each table is written for: (title, key in a results dict;
# None for AGRoL's per-sequence mean, the results' own columns).
AVERAGES = (("per-sequence mean (AGRoL's)", None),
            ("frame-weighted", "frame_weighted"),
            ("frames from T-1 on", "from_window"))


@dataclasses.dataclass(frozen=True)
class Variant:
  label: str
  model: configs.ModelConfig
  recipe: tuple[tuple[str, object], ...] = ()


@dataclasses.dataclass(frozen=True)
class Budget:
  """What every variant shares: protocol, steps, batches, logging."""
  protocol: str = "free"
  steps: int = 1000
  batch_size: int = 256
  decay_at: float = 0.8
  vq_steps: int = 400
  vq_batch_size: int = 256
  augment: tuple[str, ...] = ()
  checkpoint_every: int = 100
  log_every: int = 50

  def describe(self, seeds, test_sequences: int) -> str:
    """The sentence above the tables."""
    return (f"Every variant: {self.steps} steps at batch {self.batch_size} "
            f"(VQ-VAE {self.vq_steps} steps at batch {self.vq_batch_size} "
            f"where used), seeds {', '.join(map(str, seeds))}, protocol "
            f"{self.protocol}; online rollout on {test_sequences} test "
            "sequences.")


def parse_variant(spec: str) -> Variant:
  """"label:model[:field=value...]" -> Variant; ValueError when malformed."""
  parts = spec.split(":")
  if len(parts) < 2 or not parts[0] or not parts[1]:
    raise ValueError(f"--variant {spec!r}: expected "
                     "label:model[:field=value...]")
  try:
    overrides = configs.parse_overrides(parts[2:])
    recipe = tuple((k, overrides.pop(k)) for k in RECIPE_FIELDS
                   if k in overrides)
    return Variant(parts[0], configs.get_config(parts[1], **overrides),
                   recipe)
  except (ValueError, TypeError) as e:
    raise ValueError(f"--variant {spec!r}: {e}") from None


def parse_table(spec: str, labels) -> tuple[str, list[str]]:
  """"Title:label,label,..." -> (title, labels); ValueError when malformed
  or naming a label that is not a variant's."""
  title, sep, names = spec.rpartition(":")
  rows = [n.strip() for n in names.split(",") if n.strip()]
  if not sep or not title or not rows:
    raise ValueError(f"--table {spec!r}: expected Title:label,label,...")
  unknown = [r for r in rows if r not in labels]
  if unknown:
    raise ValueError(f"--table {title!r}: no --variant labelled {unknown}")
  return title, rows


def parse_seeds(items) -> list[int]:
  """["0", "1"] -> [0, 1]; ValueError unless distinct integers >= 0."""
  try:
    seeds = [int(s) for s in items]
  except ValueError:
    raise ValueError(f"--seeds {list(items)}: not integers") from None
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise ValueError(f"--seeds {list(items)}: give distinct seeds >= 0")
  return seeds


def run_config(variant: Variant, seed: int,
               budget: Budget) -> train.RunConfig:
  """The one budget every variant trains with, and the variant's recipe."""
  return train.RunConfig(
      model=variant.model, protocol=budget.protocol, steps=budget.steps,
      batch_size=budget.batch_size, seed=seed, decay_at=budget.decay_at,
      augment=tuple(a for a in budget.augment if a != "none"),
      vq_steps=budget.vq_steps, vq_batch_size=budget.vq_batch_size,
      checkpoint_every=budget.checkpoint_every, log_every=budget.log_every,
      eval_every=budget.steps, eval_batches=0, **dict(variant.recipe))


def variant_dir(root: str, label: str, seed: int, seeds) -> str:
  """ROOT/<label> with one seed, ROOT/<label>/seed_<s> with several."""
  workdir = os.path.join(root, label)
  return os.path.join(workdir, f"seed_{seed}") if len(seeds) > 1 else workdir


def results_name(use_ik: bool) -> str:
  return "results_ik.json" if use_ik else "results.json"


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
  """Trains (resuming) and evaluates one variant; writes and returns its
  results (results.json, or results_ik.json, with .md and .png)."""
  started = time.perf_counter()
  train.train(config, workdir, train_split)
  train_s = time.perf_counter() - started
  cfg, params = checkpoints.restore(workdir)
  results, rows = evaluation.evaluate(cfg, params, clips, skeleton,
                                      use_ik=use_ik)
  results["timing"]["train_s"] = train_s
  results.update(source=config.protocol, run_config=config.to_json())
  evaluation.write_outputs(os.path.join(workdir, results_name(use_ik)),
                           results, rows,
                           variant.label + (" + IK" if use_ik else ""))
  return results


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
  """`tables`: (title, labels); `results`: label -> per-seed results."""
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
