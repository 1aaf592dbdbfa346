"""Named model configurations and ablation switches (no model code: the
modules are built by factory.py).

  cfg = configs.get_config("memmlp41", num_blocks=10, memory_kind="gru")
  model = factory.build(cfg)

Named configs (docs/design.md §3):
  memmlp41      Mem-MLP, T=41, 8 blocks, memory after blocks 2/4/6/8, two heads.
  memmlp60      the same with T=60.
  agrol_mlp41   AGRoL-MLP: 12 blocks, no memory, a single Linear rotation head.
  agrol_mlp196  the same with AGRoL's own T=196.
  avatarposer   Linear 54->256, 3 post-LN transformer layers (8 heads, FF 2048),
                T=40, last token -> root orientation 6 + joint rotations 126.

Memory-block sizes (`memory_dim`=110 with `memory_combine`="concat" and
`memory_fusion`="residual") are chosen so memmlp41 lands on the paper's 4.10 M
parameters counting the frozen VQ encoder and codebook; see
benchmarks/README.md for the arithmetic.
"""

import ast
import dataclasses
from typing import Any

_CHOICES = {
    "arch": ("mlp", "avatarposer"),
    "memory_kind": ("block", "lstm", "gru"),
    "memory_combine": ("concat", "add"),
    "memory_fusion": ("residual", "project"),
    "loss_weighting": ("learned", "fixed"),
    "loss_distance": ("l1", "l2", "l2norm"),
    "alpha_per": ("element", "sample"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything that fixes a model's architecture and its training loss."""
  name: str
  arch: str = "mlp"
  window: int = 41
  latent_dim: int = 512
  num_blocks: int = 8
  # MLP blocks in each predictor branch before its output Linear.
  head_blocks: int = 2
  # False: rotation branch only (AGRoL-MLP style).
  multi_head: bool = True
  use_memory: bool = True
  memory_kind: str = "block"
  # 1-based backbone blocks after which a memory feature is fused;
  # None = every even-numbered block.
  memory_layers: tuple[int, ...] | None = None
  memory_dim: int = 110
  # How h_s joins the blend of h_m and h_c: concat -> 2*memory_dim, add.
  memory_combine: str = "concat"
  # residual: h += Linear(f)  (= concat(h, f) @ [I; W]); project: Linear(concat(h, f)).
  memory_fusion: str = "residual"
  # Inference-time alpha (the mean of U(0, 1)).
  memory_alpha: float = 0.5
  # Training draws alpha per feature element, or one per window ("sample",
  # the plain reading of the paper's "a random coefficient").
  alpha_per: str = "element"
  use_vq_code: bool = True
  vq_code_dim: int = 64
  vq_codebook_size: int = 512
  vq_hidden: int = 256
  vq_encoder_depth: int = 2
  vq_decoder_depth: int = 2
  vq_commitment: float = 0.25
  # AvatarPoser.
  embed_dim: int = 256
  num_heads: int = 8
  ff_dim: int = 2048
  num_layers: int = 3
  # Loss: learned homoscedastic weights, or these fixed ones
  # (rot, rot_vel, pos, lower_vel).
  loss_weighting: str = "learned"
  loss_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
  # l1: mean |d|; l2: mean d^2; l2norm: mean per-joint L2 norm of the 6D
  # difference (AGRoL's own MLP loss).
  loss_distance: str = "l1"
  # The rotation-velocity term (eq. 2); AGRoL's own MLP recipe has none.
  rot_vel_loss: bool = True
  # Share of every window term's weight put on the window's last frame, the
  # one the online rollout outputs (0: all frames alike, as the paper).
  last_frame_share: float = 0.0
  # Adds AvatarPoser's forward-kinematics term (root-relative positions of
  # the predicted rotations) to an MLP's loss: the quantity MPJPE scores.
  fk_loss: bool = False
  # Adds an L1 term on the velocity of the online output: root-relative FK
  # positions of the window's last frame minus those of the model's own
  # (stop-gradient) prediction one frame earlier, against the true velocity.
  # MPJVE and jitter score exactly this sequence of outputs.
  output_vel_loss: bool = False
  # Dropout in AvatarPoser's transformer layers (its own code: PyTorch's
  # default 0.1); 0 keeps the shared recipe deterministic.
  dropout: float = 0.0

  def __post_init__(self):
    for field, allowed in _CHOICES.items():
      if getattr(self, field) not in allowed:
        raise ValueError(f"model config {self.name!r}: {field}="
                         f"{getattr(self, field)!r} is not one of {allowed}")
    for field in ("window", "latent_dim", "memory_dim", "vq_code_dim",
                  "vq_codebook_size", "vq_hidden", "embed_dim", "num_heads",
                  "ff_dim", "num_layers"):
      if getattr(self, field) < 1:
        raise ValueError(f"model config {self.name!r}: {field} must be >= 1")
    if self.num_blocks < 1 or self.head_blocks < 0:
      raise ValueError(f"model config {self.name!r}: num_blocks must be >= 1 "
                       "and head_blocks >= 0")
    bad = [i for i in self.fusion_layers if not 1 <= i <= self.num_blocks]
    if self.uses_memory and (bad or not self.fusion_layers):
      raise ValueError(f"model config {self.name!r}: memory_layers "
                       f"{self.memory_layers} must be non-empty and within "
                       f"1..{self.num_blocks}")
    if not 0.0 <= self.last_frame_share < 1.0 or not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"model config {self.name!r}: last_frame_share and "
                       "dropout must be in [0, 1)")
    if len(self.loss_weights) != 4:
      raise ValueError(f"model config {self.name!r}: loss_weights needs 4 "
                       "values (rot, rot_vel, pos, lower_vel)")

  @property
  def uses_memory(self) -> bool:
    """Whether the model reads prev_sparse / prev_motion."""
    return self.arch == "mlp" and self.use_memory

  @property
  def uses_vq(self) -> bool:
    """Whether params hold a frozen VQ encoder + codebook under "vq"."""
    return (self.uses_memory and self.memory_kind == "block"
            and self.use_vq_code)

  @property
  def fusion_layers(self) -> tuple[int, ...]:
    if self.memory_layers is not None:
      return tuple(self.memory_layers)
    return tuple(range(2, self.num_blocks + 1, 2))

  @property
  def output_frames(self) -> int:
    """Frames per prediction: the whole window, or 1 (the last) for avatarposer."""
    return 1 if self.arch == "avatarposer" else self.window

  @property
  def predicts_positions(self) -> bool:
    return self.arch == "mlp" and self.multi_head


_NAMED = {
    "memmlp41": dict(window=41),
    "memmlp60": dict(window=60),
    "agrol_mlp41": dict(window=41, num_blocks=12, head_blocks=0,
                        multi_head=False, use_memory=False,
                        loss_distance="l2"),
    "agrol_mlp196": dict(window=196, num_blocks=12, head_blocks=0,
                         multi_head=False, use_memory=False,
                         loss_distance="l2"),
    "avatarposer": dict(arch="avatarposer", window=40, use_memory=False,
                        multi_head=False, loss_weighting="fixed"),
}
NAMES = tuple(_NAMED)


def parse_overrides(items) -> dict[str, Any]:
  """["num_blocks=10", "memory_kind=gru"] -> {"num_blocks": 10, ...}.

  Values are Python literals where they parse as one, else strings; a
  malformed item raises ValueError.
  """
  overrides = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep or not key:
      raise ValueError(f"{item!r} is not field=value")
    try:
      overrides[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      overrides[key] = text
  return overrides


def get_config(name: str, **overrides: Any) -> ModelConfig:
  """The named config with `overrides` (ablation switches) applied."""
  if name not in _NAMED:
    raise ValueError(f"unknown model {name!r}; known: {', '.join(NAMES)}")
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"model {name!r}: unknown config fields {unknown}")
  if "memory_layers" in overrides and overrides["memory_layers"] is not None:
    overrides["memory_layers"] = tuple(int(i) for i in
                                       overrides["memory_layers"])
  return ModelConfig(name=name, **{**_NAMED[name], **overrides})
