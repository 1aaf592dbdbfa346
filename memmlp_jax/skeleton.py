"""The body: joint names, kinematic tree and rest offsets.

The canonical body is the SMPL neutral body with betas = 0, 22 joints. Its
numbers are the SMPL template joints as published in
`Murrol/StableMotion` (`data_loaders/amasstools/smpl_neutral_nobetas_24J.npz`,
MIT licence), transcribed in `../shared/data/smpl_skeleton.md`. Offsets are in
SMPL's own frame (Y up, +X the body's left, +Z forward); like AMASS, the root's
global rotation carries the body into the Z-up world.
"""

import dataclasses
from typing import Tuple

import numpy as np

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee",
    "spine2", "left_ankle", "right_ankle", "spine3", "left_foot",
    "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
)
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17,
           18, 19)
NUM_JOINTS = 22

# Tracked joints, in the order of the sparse input (docs/design.md §1).
SPARSE_JOINTS = (15, 20, 21)
HEAD = 15

# AGRoL's joint groups, used by the metrics.
HANDS = (20, 21)
UPPER = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
LOWER = (0, 1, 2, 4, 5, 7, 8, 10, 11)
# Left/right partner of every joint, for mirroring.
MIRROR = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19,
          18, 21, 20)

_SMPL_NEUTRAL_OFFSETS = (
    (-0.00179506, -0.22333343, 0.02821913),  # 0 pelvis (its rest position)
    (0.06951973, -0.09140624, -0.00681534),  # 1 left_hip
    (-0.06767048, -0.09052168, -0.00431982),  # 2 right_hip
    (-0.00253287, 0.10896321, -0.02669631),  # 3 spine1
    (0.03427655, -0.37519863, -0.00449580),  # 4 left_knee
    (-0.03829005, -0.38256902, -0.00885003),  # 5 right_knee
    (0.00548703, 0.13518043, 0.00109247),  # 6 spine2
    (-0.01359570, -0.39796042, -0.04369333),  # 7 left_ankle
    (0.01577376, -0.39841473, -0.04231180),  # 8 right_ankle
    (0.00145701, 0.05292224, 0.02542457),  # 9 spine3
    (0.02635814, -0.05579090, 0.11928840),  # 10 left_foot
    (-0.02537175, -0.04814386, 0.12334795),  # 11 right_foot
    (-0.00277840, 0.21387036, -0.04285703),  # 12 neck
    (0.07884473, 0.12174930, -0.03408960),  # 13 left_collar
    (-0.08175920, 0.11883283, -0.03861528),  # 14 right_collar
    (0.00515184, 0.06496960, 0.05134897),  # 15 head
    (0.09097693, 0.03046891, -0.00886815),  # 16 left_shoulder
    (-0.09601238, 0.03255118, -0.00914307),  # 17 right_shoulder
    (0.25961225, -0.01277210, -0.02745643),  # 18 left_elbow
    (-0.25374198, -0.01332922, -0.02140098),  # 19 right_elbow
    (0.24923363, 0.00898606, -0.00117091),  # 20 left_wrist
    (-0.25529802, 0.00777228, -0.00555920),  # 21 right_wrist
)

# Rotation taking SMPL's Y-up body frame to the Z-up world: +90 deg about X.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclasses.dataclass(frozen=True, eq=False)
class Skeleton:
  """A kinematic tree: names, parents (root -1) and rest offsets (J, 3) m."""
  names: Tuple[str, ...]
  parents: Tuple[int, ...]
  offsets: np.ndarray

  def __post_init__(self):
    offsets = np.asarray(self.offsets, dtype=np.float64)
    j = len(self.names)
    if len(self.parents) != j or offsets.shape != (j, 3):
      raise ValueError(
          f"skeleton with {j} names needs {j} parents and ({j}, 3) offsets, "
          f"got {len(self.parents)} and {offsets.shape}")
    if self.parents[0] != -1 or any(not 0 <= p < i for i, p in
                                     enumerate(self.parents) if i):
      raise ValueError("parents must precede their children, root first")
    if not np.all(np.isfinite(offsets)):
      raise ValueError("skeleton offsets must be finite")
    object.__setattr__(self, "offsets", offsets)

  @property
  def num_joints(self) -> int:
    return len(self.names)

  def children(self, joint: int) -> Tuple[int, ...]:
    return tuple(i for i, p in enumerate(self.parents) if p == joint)

  def rest_positions(self) -> np.ndarray:
    """(J, 3) joint positions in the zero pose (root at offsets[0])."""
    positions = np.zeros_like(self.offsets)
    for j, p in enumerate(self.parents):
      positions[j] = self.offsets[j] + (positions[p] if p >= 0 else 0.0)
    return positions

  def scaled(self, factor: float) -> "Skeleton":
    """The same body uniformly scaled, e.g. to a user's height."""
    if not factor > 0:
      raise ValueError(f"scale factor must be positive, got {factor}")
    return Skeleton(self.names, self.parents, self.offsets * factor)

  def height(self) -> float:
    """Head joint above the lower foot joint in the rest pose (metres)."""
    rest = self.rest_positions()
    return float(rest[HEAD, 1] - min(rest[10, 1], rest[11, 1]))

  def to_json(self) -> dict:
    return {"names": list(self.names), "parents": list(self.parents),
            "offsets": self.offsets.tolist()}

  @classmethod
  def from_json(cls, data: dict) -> "Skeleton":
    return cls(tuple(data["names"]), tuple(int(p) for p in data["parents"]),
               np.asarray(data["offsets"], dtype=np.float64))

  def same_as(self, other: "Skeleton", atol: float = 1e-9) -> bool:
    return (self.names == other.names and self.parents == other.parents and
            np.allclose(self.offsets, other.offsets, atol=atol))


SMPL_NEUTRAL = Skeleton(JOINT_NAMES, PARENTS,
                        np.array(_SMPL_NEUTRAL_OFFSETS, dtype=np.float64))
