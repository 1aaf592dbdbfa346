"""Retargeting a source skeleton's motion onto the canonical body (docs/design.md §2).

A source is any kinematic tree whose joint frames are world-aligned in its
zero pose (BVH's convention; `data/asfamc.py` converts ASF bone frames into
it): rest offsets, per-frame local rotations and the root translation. A joint
map names, for every canonical joint, the source joint that sits where it sits
(or None). The source joint's global rotation is the segment S_j that carries
its children, so for canonical joint j with source joint s(j):

1. targets of j = its canonical children that have a source joint (a child
   without one is replaced by its own targets, since it gets an identity
   local rotation); targets whose source point coincides with s(j)'s are left
   out (CMU's clavicles start at the thorax end);
2. A_j maps the canonical rest directions j -> target onto the source's:
   Kabsch for two or more targets, the minimal rotation for one (applied
   after the body-frame alignment B below, which fixes the twist a single
   direction leaves open: for CMU B is about the identity). A joint with
   none (a leaf) gets the body-frame alignment: the rotation taking the
   canonical body's rest axes (up; left = hip to hip, level) onto the
   source's, about the identity for a Y-up source facing +Z like CMU's (so the plain
   rule's "identity for leaves" there) and right for Z-up or other-facing
   sources too; wrists instead inherit their elbow's alignment, as a hand
   continues its forearm whatever the zero pose (arms out or down);
3. G_j = W S_j A_j (W turns a Y-up source Z-up), L_j = G_parent^T G_j; a
   joint without a source joint gets L_j = I. The pelvis follows its source
   point, scaled by canonical / source leg length (hip-knee-ankle) so the
   feet stay near the floor.

So for a canonical bone j -> c whose target c is carried by S_j, the canonical
bone direction equals the source's in every frame.
"""

import dataclasses
from typing import Mapping, Optional, Tuple

import numpy as np

from memmlp_jax import geometry
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import motion as motion_lib

# A hand continues its forearm: in any zero pose its rest frame turns with it.
_INHERITS_ALIGNMENT = {"left_wrist": "left_elbow", "right_wrist": "right_elbow"}
_LEGS = (("left_hip", "left_knee", "left_ankle"),
         ("right_hip", "right_knee", "right_ankle"))
# Source points closer than this (metres) count as the same point.
_COINCIDENT_M = 1e-4
FPS = 60.0  # every Motion's frame rate (docs/design.md §2)
_UP_AXES = {"y": np.array([0.0, 1.0, 0.0]), "z": np.array([0.0, 0.0, 1.0])}


@dataclasses.dataclass(frozen=True, eq=False)
class SourceMotion:
  """A clip on its own skeleton, before retargeting.

  Attributes:
    skeleton: joint names, parents and zero-pose offsets in metres, joint
      frames world-aligned in the zero pose, in the source's own axes.
    local_rotations: (N, J, 3, 3).
    root_translation: (N, 3) metres; the root joint is at
      ``root_translation + skeleton.offsets[0]``.
    fps: frames per second.
    up: the source's up axis, "y" or "z".
    moving_offsets: optional (N, J, 3) per-frame offsets from the parent in
      metres, used instead of ``skeleton.offsets`` (joints below the root
      whose position is animated, as BVH position channels can be).
  """
  skeleton: skeleton_lib.Skeleton
  local_rotations: np.ndarray
  root_translation: np.ndarray
  fps: float
  up: str
  moving_offsets: Optional[np.ndarray] = None

  @property
  def num_frames(self) -> int:
    return len(self.local_rotations)

  def source_pose(self):
    """(global rotations (N, J, 3, 3), positions (N, J, 3)), source axes."""
    if self.moving_offsets is None:
      return geometry.forward_kinematics(
          self.local_rotations, self.root_translation, self.skeleton.parents,
          self.skeleton.offsets)
    rotations = [self.local_rotations[:, 0]]
    positions = [self.root_translation + self.moving_offsets[:, 0]]
    for j, p in enumerate(self.skeleton.parents[1:], 1):
      rotations.append(rotations[p] @ self.local_rotations[:, j])
      positions.append(positions[p] + np.einsum(
          "nab,nb->na", rotations[p], self.moving_offsets[:, j]))
    return np.stack(rotations, axis=1), np.stack(positions, axis=1)

  def world_pose(self):
    """(global rotations (N, J, 3, 3), positions (N, J, 3)), Z-up world."""
    rotations, positions = self.source_pose()
    up = up_rotation(self.up)
    return up @ rotations, positions @ up.T

  def pose(self, frame: int, name: str) -> "Pose":
    """Frame ``frame`` as a reference `Pose` called ``name``."""
    moving = self.moving_offsets
    one = dataclasses.replace(
        self, local_rotations=self.local_rotations[frame:frame + 1],
        root_translation=self.root_translation[frame:frame + 1],
        moving_offsets=None if moving is None else moving[frame:frame + 1])
    rotations, positions = one.source_pose()
    return Pose(rotations[0], positions[0], name)

  def resampled(self, fps: float) -> "SourceMotion":
    """The clip at ``fps`` (slerp for rotations, linear for translation)."""
    if fps == self.fps:
      return self
    stride = exact_stride(self.fps, fps)
    moving = self.moving_offsets
    if stride > 1:
      return dataclasses.replace(
          self, local_rotations=self.local_rotations[::stride],
          root_translation=self.root_translation[::stride], fps=float(fps),
          moving_offsets=None if moving is None else moving[::stride])
    return dataclasses.replace(
        self,
        local_rotations=geometry.slerp_resample(self.local_rotations,
                                                self.fps, fps),
        root_translation=geometry.linear_resample(self.root_translation,
                                                  self.fps, fps),
        fps=float(fps),
        moving_offsets=None if moving is None else geometry.linear_resample(
            moving, self.fps, fps))


@dataclasses.dataclass(frozen=True, eq=False)
class Pose:
  """A reference pose in the source's own axes, over the source's joints.

  Attributes:
    rotations: (J, 3, 3) world rotations of the joint frames.
    positions: (J, 3) world positions, metres.
    name: what error messages call it, e.g. "frame 12 of walk.bvh".
  """
  rotations: np.ndarray
  positions: np.ndarray
  name: str


def needed_joints(skeleton: skeleton_lib.Skeleton,
                  source_names) -> Tuple[int, ...]:
  """The named joints and their ancestors, in skeleton order.

  Retargeting uses nothing else (e.g. not CMU's uncaptured fingers), so
  loaders convert and pose only these.
  """
  needed = set()
  for name in source_names:
    j = skeleton.names.index(name) if name in skeleton.names else -1
    while j >= 0 and j not in needed:
      needed.add(j)
      j = skeleton.parents[j]
  return tuple(sorted(needed))


def sub_skeleton(skeleton: skeleton_lib.Skeleton,
                 joints) -> skeleton_lib.Skeleton:
  """The skeleton restricted to ``joints`` (which hold every one's parent)."""
  index = {j: i for i, j in enumerate(joints)}
  return skeleton_lib.Skeleton(
      tuple(skeleton.names[j] for j in joints),
      tuple(index[skeleton.parents[j]] if skeleton.parents[j] >= 0 else -1
            for j in joints),
      skeleton.offsets[list(joints)])


def exact_stride(src_fps: float, dst_fps: float) -> int:
  """k when ``src_fps`` is exactly k times ``dst_fps`` (k >= 1), else 1.

  Resampling by such a ratio keeps every k-th frame, so loaders can skip
  parsing the others.
  """
  ratio = src_fps / dst_fps
  k = int(round(ratio))
  return k if k >= 1 and abs(ratio - k) < 1e-9 else 1


def up_rotation(up: str) -> np.ndarray:
  """Rotation taking a source with this up axis into the Z-up world."""
  if up == "y":
    return skeleton_lib.Y_UP_TO_Z_UP
  if up == "z":
    return np.eye(3)
  raise ValueError(f"up axis must be 'y' or 'z', got {up!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
  """What retargeting needs per source skeleton, computed once.

  Attributes:
    source_joints: per canonical joint, its source joint index or -1.
    alignments: (22, 3, 3) rest alignments A_j (identity where unmapped).
    scale: canonical / source leg length.
    targets: per canonical joint, the canonical joints its alignment used.
  """
  source_joints: Tuple[int, ...]
  alignments: np.ndarray
  scale: float
  targets: Tuple[Tuple[int, ...], ...]


def check_joint_map(joint_map: Mapping[str, Optional[str]], path) -> None:
  """Canonical names complete and known, pelvis and legs mapped, no sharing."""
  names = skeleton_lib.JOINT_NAMES
  unknown = sorted(set(joint_map) - set(names))
  if unknown:
    raise motion_lib.MotionError(
        path, f"joint map names unknown canonical joint(s) {unknown}; "
        f"canonical joints are {list(names)}")
  missing = [n for n in names if n not in joint_map]
  if missing:
    raise motion_lib.MotionError(
        path, f"joint map lacks canonical joint(s) {missing} "
        "(map them to a source joint or to null)")
  required = ("pelvis",) + _LEGS[0] + _LEGS[1]
  unmapped = [n for n in required if joint_map[n] is None]
  if unmapped:
    raise motion_lib.MotionError(
        path, f"joint map must map {unmapped} (pelvis and legs place the body "
        "and scale it)")
  owners = {}
  for name in names:
    source = joint_map[name]
    if source is None:
      continue
    if not isinstance(source, str):
      raise motion_lib.MotionError(
          path, f"joint map value for {name!r} must be a joint name or null, "
          f"got {source!r}")
    if source in owners:
      raise motion_lib.MotionError(
          path, f"canonical joints {owners[source]!r} and {name!r} are both "
          f"mapped to source joint {source!r}; each source joint can serve "
          "one canonical joint")
    owners[source] = name


def _alignment_targets(joint: int, mapped) -> Tuple[int, ...]:
  """Canonical descendants of ``joint`` reached through unmapped joints."""
  result = []
  for child in skeleton_lib.SMPL_NEUTRAL.children(joint):
    result.extend([child] if mapped[child] else
                  _alignment_targets(child, mapped))
  return tuple(result)


def _hip_frame(rest, left_hip: int, right_hip: int, up_axis) -> np.ndarray:
  """Columns: the body's left (hip to hip, level), up and forward axes."""
  left = rest[left_hip] - rest[right_hip]
  left = left - np.dot(left, up_axis) * up_axis
  left = left / np.linalg.norm(left)
  return np.stack([left, up_axis, np.cross(left, up_axis)], axis=1)


def _body_frame(source_rest, source_joints, up: str) -> np.ndarray:
  """Rotation taking the canonical body's rest axes onto the source's."""
  names = skeleton_lib.JOINT_NAMES
  left, right = names.index("left_hip"), names.index("right_hip")
  canonical = _hip_frame(skeleton_lib.SMPL_NEUTRAL.rest_positions(), left,
                         right, _UP_AXES["y"])
  source = _hip_frame(source_rest, source_joints[left], source_joints[right],
                      _UP_AXES[up])
  return source @ canonical.T


# The legs of a standing reference point down within this angle of -up.
_MAX_LEG_TILT_DEG = 60.0


def standing_problem(points, source_joints, up: str) -> Optional[str]:
  """Why the mapped points are not a standing body, or None if they are.

  A body pose is degenerate for the alignment when its mapped joints lie on
  one line (collinear bones, as a zero pose whose offsets all follow the
  parent's X axis), its hips are not side by side across ``up``, or its
  legs (hip to ankle) do not point down along ``up``.
  """
  mapped = np.array([points[s] for s in source_joints if s >= 0])
  spread = np.linalg.svd(mapped - mapped.mean(axis=0), compute_uv=False)
  if spread[1] <= 1e-3 * spread[0]:
    return "its joints lie on one line (collinear bones)"
  names = skeleton_lib.JOINT_NAMES
  index = lambda n: source_joints[names.index(n)]
  up_axis = _UP_AXES[up]
  left = points[index("left_hip")] - points[index("right_hip")]
  if np.linalg.norm(left - np.dot(left, up_axis) * up_axis) < _COINCIDENT_M:
    return f"its hips are not side by side across up {up!r}"
  legs = sum(points[index(ankle)] - points[index(hip)]
             for hip, _, ankle in _LEGS)
  if np.dot(legs, -up_axis) < np.cos(np.radians(_MAX_LEG_TILT_DEG)) * (
      np.linalg.norm(legs)):
    return f"its legs do not point down along up {up!r}"
  return None


def zero_pose(skeleton: skeleton_lib.Skeleton) -> Pose:
  """The skeleton's zero pose (every joint frame world-aligned)."""
  return Pose(np.tile(np.eye(3), (len(skeleton.names), 1, 1)),
              skeleton.rest_positions(), "the zero pose")


def make_plan(source_skeleton: skeleton_lib.Skeleton,
              joint_map: Mapping[str, Optional[str]], up: str,
              path, reference: Optional[Pose] = None) -> Plan:
  """Rest alignments and leg scale for one source skeleton and joint map.

  ``reference`` is the pose the alignment is taken from (default the zero
  pose). Raises MotionError naming ``path`` when it is not a standing body;
  for the zero pose the message suggests a "reference" in the joint map.
  """
  check_joint_map(joint_map, path)
  up_rotation(up)
  names = skeleton_lib.JOINT_NAMES
  absent = sorted({s for s in joint_map.values() if s is not None} -
                  set(source_skeleton.names))
  if absent:
    raise motion_lib.MotionError(
        path, f"joint map names joint(s) {absent} that the skeleton does not "
        f"have; it has {list(source_skeleton.names)}")
  source_joints = tuple(
      -1 if joint_map[n] is None else source_skeleton.names.index(joint_map[n])
      for n in names)
  mapped = [s >= 0 for s in source_joints]
  canonical_rest = skeleton_lib.SMPL_NEUTRAL.rest_positions()
  pose = zero_pose(source_skeleton) if reference is None else reference
  source_rest = pose.positions
  problem = standing_problem(source_rest, source_joints, up)
  if problem:
    hint = (" (is 'up' right? If the file's zero pose is no standing body, "
            'give the joint map a "reference" pose: a frame where the body '
            "stands upright; see docs/user_guide.md)"
            if reference is None else
            " (it must be a frame where the body stands upright)")
    raise motion_lib.MotionError(
        path, f"{pose.name} is not a standing body pose: {problem}{hint}")
  body = _body_frame(source_rest, source_joints, up)

  alignments = np.tile(np.eye(3), (len(names), 1, 1))
  all_targets = []
  for j in range(len(names)):
    if not mapped[j]:
      all_targets.append(())
      continue
    here = source_rest[source_joints[j]]
    targets = tuple(
        c for c in _alignment_targets(j, mapped)
        if np.linalg.norm(source_rest[source_joints[c]] - here) > _COINCIDENT_M)
    all_targets.append(targets)
    can = canonical_rest[list(targets)] - canonical_rest[j]
    src = source_rest[[source_joints[c] for c in targets]] - here
    can /= np.linalg.norm(can, axis=-1, keepdims=True)
    src /= np.linalg.norm(src, axis=-1, keepdims=True)
    if len(targets) >= 2 and np.linalg.matrix_rank(src, tol=1e-6) >= 2:
      alignments[j] = geometry.kabsch(can, src)
    elif targets:
      alignments[j] = geometry.rotation_between(body @ can[0], src[0]) @ body
    elif names[j] in _INHERITS_ALIGNMENT:
      alignments[j] = alignments[names.index(_INHERITS_ALIGNMENT[names[j]])]
    else:
      alignments[j] = body

  def leg_length(rest, index):
    return np.mean([
        sum(np.linalg.norm(rest[index(b)] - rest[index(a)])
            for a, b in zip(leg[:-1], leg[1:])) for leg in _LEGS])

  source_leg = leg_length(source_rest, lambda n: source_joints[names.index(n)])
  if not source_leg > 0:
    raise motion_lib.MotionError(path, "source legs have zero length")
  scale = leg_length(canonical_rest, names.index) / source_leg
  if reference is not None:
    # A'_j is in the world frame; the joint's own frame turns it by R_j^T.
    frames = np.array([pose.rotations[s] if s >= 0 else np.eye(3)
                       for s in source_joints])
    alignments = np.swapaxes(frames, -1, -2) @ alignments
  return Plan(source_joints, alignments, float(scale), tuple(all_targets))


def apply_plan(plan: Plan, source: SourceMotion):
  """(canonical local rotations (N, 22, 3, 3), root translation (N, 3))."""
  source_rotations, source_positions = source.world_pose()
  parents = skeleton_lib.PARENTS
  globals_ = []
  for j, s in enumerate(plan.source_joints):
    globals_.append(source_rotations[:, s] @ plan.alignments[j] if s >= 0 else
                    globals_[parents[j]])
  global_rotations = np.stack(globals_, axis=1)
  parent_rotations = global_rotations[:, [max(p, 0) for p in parents]]
  local = np.swapaxes(parent_rotations, -1, -2) @ global_rotations
  local[:, 0] = global_rotations[:, 0]
  pelvis = source_positions[:, plan.source_joints[0]] * plan.scale
  return local, pelvis - skeleton_lib.SMPL_NEUTRAL.offsets[0]


def retarget(source: SourceMotion, joint_map: Mapping[str, Optional[str]], *,
             clip_id: str, subject: str, source_name: str, path,
             fps: float = FPS, plan: Optional[Plan] = None
             ) -> motion_lib.Motion:
  """The source clip on the canonical body at ``fps``, validated.

  Args:
    source: the clip on its own skeleton.
    joint_map: canonical joint name -> source joint name or None.
    clip_id, subject, source_name: the Motion's ids.
    path: what error messages name (the source file).
    fps: output frame rate; the source is resampled (slerp) first.
    plan: a precomputed `make_plan` for this skeleton and map.

  Returns:
    A validated `Motion` on `skeleton.SMPL_NEUTRAL`.
  """
  if not (np.isfinite(source.fps) and source.fps > 0):
    raise motion_lib.MotionError(path, f"invalid frame rate {source.fps}")
  if plan is None:
    plan = make_plan(source.skeleton, joint_map, source.up, path)
  if source.num_frames < 2:
    raise motion_lib.MotionError(
        path, f"only {source.num_frames} frame(s); need 2")
  local, translation = apply_plan(plan, source.resampled(fps))
  motion = motion_lib.Motion(
      local_rotations=local, root_translation=translation, fps=float(fps),
      clip_id=clip_id, subject=subject, source=source_name)
  return motion_lib.validate(motion, path)


def bone_angles(motion: motion_lib.Motion, source: SourceMotion, plan: Plan):
  """Per canonical bone, the angle (degrees, per frame) to the source's.

  Returns {(joint, target): (N,) angles} over every canonical joint and each
  of its alignment targets, comparing the canonical direction joint -> target
  with the source's between the mapped points. ``source`` must be at the
  motion's frame rate. Zero for bones that one source segment carries.
  """
  _, canonical = motion.global_pose()
  _, points = source.world_pose()
  result = {}
  for j, targets in enumerate(plan.targets):
    for c in targets:
      a = canonical[:, c] - canonical[:, j]
      b = points[:, plan.source_joints[c]] - points[:, plan.source_joints[j]]
      cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) *
                                 np.linalg.norm(b, axis=-1))
      result[(j, c)] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
  return result
