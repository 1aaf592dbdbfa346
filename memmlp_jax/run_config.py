"""A training run's configuration and the workdir's record of it.

`RunConfig` is everything that determines a run's result; the workdir keeps it
as config.json (written by `save_config`, read by `checkpoints.load_config`)
and a resumed run must compute what the saved one computed (`check_workdir`).
Only numpy-light modules are imported here, so inference code can read a run
without importing the trainer.
"""

import dataclasses
import json
import os
import shlex

import jax

from memmlp_jax.data import dataset
from memmlp_jax.models import configs

STAGES = ("vqvae", "memmlp")
CONFIG_FILE = "config.json"
# Fields of the run config that may change between a run and its resumption:
# they do not change what is computed.
_RESUMABLE_FIELDS = ("stage", "checkpoint_every", "log_every", "eval_every",
                     "eval_batches")
MEMORY_SOURCES = ("truth", "own")
FAKE_QUANT = ("none", "int8", "int8_onepass")  # fake_quant.py's modes
OPTIMIZERS = ("adamw", "adam")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that determines a training run's result."""
  model: configs.ModelConfig
  protocol: str = "free"
  stage: str = "all"
  steps: int = 1000
  batch_size: int = 256
  seed: int = 0
  learning_rate: float = 3e-4
  final_learning_rate: float = 3e-5
  # The lr drops to final_learning_rate after this fraction of `steps`.
  decay_at: float = 0.8
  weight_decay: float = 1e-4
  # adamw: decoupled weight decay; adam: L2 added to the gradient, as
  # PyTorch's Adam(weight_decay=...) in the peers' own code.
  optimizer: str = "adamw"
  # Learning rate of the learned loss log-variances (constant Adam); 0: the
  # model's schedule.
  loss_weight_lr: float = 0.0
  augment: tuple[str, ...] = ()
  # What the memory block reads in training: see train.py's docstring.
  memory_source: str = "truth"
  # Std of Gaussian noise on the true previous motion the memory reads.
  memory_noise: float = 0.0
  # Share of crops that end within a clip's first frames (rollout padding).
  start_share: float = 0.0
  # Stage 2 computes each batch as this many equal micro-batches, their
  # gradients averaged: the same loss on ~1/k of the activation memory, with
  # each micro-batch's random draws (the memory's alpha) its own.
  micro_batches: int = 1
  # The run (workdir) whose trained model stage 2 starts from: fine-tuning,
  # with that run's stage 1 (its VQ part frozen) in place of this one's.
  init_from: str | None = None
  # Stage 2 computes the backbone's and heads' block Linears as that int8
  # export does ("int8", "int8_onepass": quantization-aware training,
  # fake_quant.py).
  fake_quant: str = "none"
  vq_steps: int = 1000
  vq_batch_size: int = 256
  vq_learning_rate: float = 1e-3
  vq_weight_decay: float = 0.0
  # Stage 1 sees the same augmentation as stage 2.
  vq_augment: bool = False
  # Dead codes are restarted for this fraction of vq_steps only, so the
  # decoder trains on the final codebook before stage 2 freezes it.
  vq_restart_until: float = 1.0
  checkpoint_every: int = 500
  log_every: int = 50
  eval_every: int = 500
  eval_batches: int = 4

  def __post_init__(self):
    for name in ("steps", "batch_size", "vq_steps", "vq_batch_size",
                 "checkpoint_every", "log_every", "eval_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.micro_batches < 1 or self.batch_size % self.micro_batches:
      raise ValueError(f"micro_batches must be >= 1 and divide batch_size "
                       f"{self.batch_size}, got {self.micro_batches}")
    if self.eval_batches < 0 or self.seed < 0:
      raise ValueError("eval_batches and seed must be >= 0")
    if not 0.0 < self.decay_at <= 1.0:
      raise ValueError(f"decay_at must be in (0, 1], got {self.decay_at}")
    if not 0.0 <= self.vq_restart_until <= 1.0:
      raise ValueError(f"vq_restart_until must be in [0, 1], got "
                       f"{self.vq_restart_until}")
    if self.memory_source not in MEMORY_SOURCES:
      raise ValueError(f"memory_source must be one of {MEMORY_SOURCES}, got "
                       f"{self.memory_source!r}")
    if self.fake_quant not in FAKE_QUANT:
      raise ValueError(f"fake_quant must be one of {FAKE_QUANT}, got "
                       f"{self.fake_quant!r}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got "
                       f"{self.optimizer!r}")
    if (self.memory_noise < 0 or self.loss_weight_lr < 0
        or not 0.0 <= self.start_share <= 1.0):
      raise ValueError("memory_noise and loss_weight_lr must be >= 0 and "
                       "start_share in [0, 1]")
    if self.stage not in ("all",) + STAGES:
      raise ValueError(
          f"stage must be all, vqvae or memmlp, got {self.stage!r}")
    if self.stage == "vqvae" and not self.model.uses_vq:
      raise ValueError(f"model {self.model.name!r} has no VQ code, so it has "
                       "no vqvae stage")
    dataset.Augment.from_names(self.augment)

  def stages(self) -> tuple[str, ...]:
    """The stages this run executes, in order."""
    if self.stage != "all":
      return (self.stage,)
    return STAGES if self.model.uses_vq else ("memmlp",)

  @property
  def history(self) -> int:
    """Windows before the current one that a stage-2 crop holds."""
    own = self.memory_source == "own" and self.model.uses_memory
    return 2 if own or self.model.output_vel_loss else 1

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self),
            "model": dataclasses.asdict(self.model),
            "augment": list(self.augment)}

  @classmethod
  def from_json(cls, data: dict) -> "RunConfig":
    model = dict(data["model"])
    name = model.pop("name")
    model = {k: tuple(v) if isinstance(v, list) else v
             for k, v in model.items()}
    return cls(**{**data, "model": configs.get_config(name, **model),
                  "augment": tuple(data["augment"])})


def changed_fields(ours, reference) -> list:
  """(field, value) of a dataclass's fields that differ from reference's."""
  return [(f.name, getattr(ours, f.name)) for f in dataclasses.fields(ours)
          if getattr(ours, f.name) != getattr(reference, f.name)]


def train_command(config: RunConfig, workdir: str) -> str:
  """An `experiments.train` command line (one flag a line) that reproduces
  ``config``: every field that differs from the defaults has a flag."""
  named = configs.get_config(config.model.name)
  flags = [f"--protocol={config.protocol}", "--data_dir=../shared/data",
           f"--workdir={workdir}", f"--model={config.model.name}"]
  for name, value in changed_fields(config.model, named):
    text = value if isinstance(value, str) else repr(value)
    flags.append(f"--model_override={name}={text}")
  for name, value in changed_fields(config, RunConfig(model=named)):
    if name == "model":
      continue
    if isinstance(value, bool):
      flags.append(f"--{'' if value else 'no'}{name}")
    elif isinstance(value, tuple):
      flags.append(f"--{name}={','.join(value) or 'none'}")
    else:
      flags.append(f"--{name}={value}")
  return " \\\n    ".join(["python -m experiments.train"]
                            + [shlex.quote(f) for f in flags])


class ConfigMismatchError(ValueError):
  """The workdir holds a run with another configuration."""


def _comparable(config: dict) -> dict:
  """Without the resumable fields; fields a saved config predates (added
  later, with a default that computes what it computed) read as that default."""
  try:
    config = json.loads(json.dumps(RunConfig.from_json(config).to_json()))
  except (KeyError, TypeError, ValueError):
    pass  # Compared as it is; the differences name what is wrong.
  return {k: v for k, v in config.items() if k not in _RESUMABLE_FIELDS}


def same_run(saved: dict, config: "RunConfig") -> bool:
  """Whether a saved run config (JSON) computes what `config` computes."""
  return _comparable(saved) == _comparable(
      json.loads(json.dumps(config.to_json())))


def check_workdir(workdir: str, config: RunConfig) -> None:
  """Raises ConfigMismatchError if `workdir` holds a run of another config."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigMismatchError(f"{path}: unreadable run config ({e})") from e
  # Through JSON, so tuples and lists compare equal.
  ours = _comparable(json.loads(json.dumps(config.to_json())))
  theirs = _comparable(saved)
  diffs = [f"{k}: saved {theirs.get(k)!r}, now {ours.get(k)!r}"
           for k in sorted(set(ours) | set(theirs))
           if k != "model" and ours.get(k) != theirs.get(k)]
  ours_m, theirs_m = ours["model"], theirs.get("model", {})
  diffs += [f"model.{k}: saved {theirs_m.get(k)!r}, now {ours_m.get(k)!r}"
            for k in sorted(set(ours_m) | set(theirs_m))
            if ours_m.get(k) != theirs_m.get(k)]
  if diffs:
    raise ConfigMismatchError(
        f"{workdir} holds a run with another configuration ({path}); use "
        "another --workdir or the same flags. Differences: " + "; ".join(diffs))


def save_config(workdir: str, config: RunConfig) -> None:
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
      json.dump(config.to_json(), f, indent=2, sort_keys=True)
