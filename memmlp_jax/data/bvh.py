"""BVH motion capture with a joint map -> `Motion` on the canonical body.

A BVH's joint frames are world-aligned in its zero pose, which is what
`retarget.py` expects, so any channel order, frame time and standing zero
pose (T-pose, arms down, ...) retargets the same way. Rotation channels
compose in the order listed (``Zrotation Xrotation Yrotation``: R = Rz Rx
Ry). Position channels, on the root or any other joint, give the joint's
translation from its parent along their axes, replacing the OFFSET's
component there (the OFFSET is then the rest value only), as Blender's
importer reads them; the root's thus give its position. End Sites are not
needed.

The joint map is JSON:
``{"joints": {canonical joint: BVH joint or null}, "units_to_m": f,
"up": "y"|"z", "reference": {"frame": K} | {"bvh": path, "frame": K}}``;
null means the source has no such joint (its local rotation is the
identity). The optional "reference" names the pose the alignment is taken
from instead of the zero pose: frame K (counted from 0 in the file) of each
clip, or of another BVH file with the same skeleton (a path relative to the
map file). It must be a standing body (docs/user_guide.md, "Reference
pose"). `maps/` holds ready maps, named by their stem (`PRESETS`):
`cmu_bvh.json`, the CMU BVH release in ../shared/data/cmu_mocap_bvh (whose
conversion defect `cmu_repair` fixes); `mixamo.json`, Mixamo's
``mixamorig:`` names; `generic.json`, the common Hips/Spine/Chest/Neck/Head/
LeftUpLeg naming.
"""

import dataclasses
import json
import math
import pathlib
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np

from memmlp_jax import geometry
from memmlp_jax import retarget
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import asfamc
from memmlp_jax.data import motion as motion_lib

MAPS_DIR = pathlib.Path(__file__).parent / "maps"
CMU_MAP = MAPS_DIR / "cmu_bvh.json"
# Joint maps shipped in maps/, by the name `load_joint_map` also accepts.
PRESETS = {p.stem: p for p in sorted(MAPS_DIR.glob("*.json"))}


@dataclasses.dataclass(frozen=True, eq=False)
class Reference:
  """The joint map's reference pose: frame ``frame`` of each clip, or of the
  file ``path`` when given (``bvh``: that file parsed, only the frame kept).
  """
  frame: int
  path: Optional[str] = None
  bvh: Optional["Bvh"] = None


@dataclasses.dataclass(frozen=True)
class JointMap:
  """A validated joint map; ``name`` is what error messages call it."""
  joints: Dict[str, Optional[str]]
  units_to_m: float
  up: str
  name: str = "<joint map>"
  reference: Optional[Reference] = None


def load_joint_map(path_or_dict, name: Optional[str] = None) -> JointMap:
  """Reads and checks a joint map (a JSON file, a `PRESETS` name such as
  "mixamo", or an already parsed dict).

  Raises MotionError naming the map on unknown or missing canonical joints,
  two canonical joints on one source joint, bad units or up axis, a bad
  "reference" (see `_load_reference`).
  """
  if isinstance(path_or_dict, dict):
    data, name = path_or_dict, name or "<joint map>"
    folder = pathlib.Path(".")
  else:
    path = pathlib.Path(path_or_dict)
    if not path.exists() and str(path_or_dict) in PRESETS:
      path = PRESETS[str(path_or_dict)]
    name = name or str(path)
    folder = path.parent
    try:
      data = json.loads(path.read_text())
    except OSError as e:
      raise motion_lib.MotionError(
          name, f"cannot read: {e.strerror} (a joint map is a JSON file or "
          f"one of the shipped maps {sorted(PRESETS)})") from e
    except json.JSONDecodeError as e:
      raise motion_lib.MotionError(name, f"not valid JSON: {e}") from e
  if not isinstance(data, dict) or not isinstance(data.get("joints"), dict):
    raise motion_lib.MotionError(
        name, 'a joint map is {"joints": {canonical: source or null}, '
        '"units_to_m": number, "up": "y" or "z"}')
  unknown_keys = sorted(set(data) - {"joints", "units_to_m", "up",
                                     "reference"})
  if unknown_keys:
    raise motion_lib.MotionError(name, f"unknown key(s) {unknown_keys}")
  units = data.get("units_to_m")
  if (isinstance(units, bool) or not isinstance(units, (int, float)) or
      not math.isfinite(units) or units <= 0):
    raise motion_lib.MotionError(
        name, f"units_to_m must be a positive number, got {units!r}")
  up = data.get("up")
  if up not in ("y", "z"):
    raise motion_lib.MotionError(name, f'up must be "y" or "z", got {up!r}')
  retarget.check_joint_map(data["joints"], name)
  reference = (None if "reference" not in data else
               _load_reference(data["reference"], folder, name))
  return JointMap(dict(data["joints"]), float(units), up, name, reference)


def _load_reference(entry, folder: pathlib.Path, name: str) -> Reference:
  """The map's "reference": {"frame": K} or {"bvh": path, "frame": K}.

  A "bvh" path is relative to ``folder`` (the map file's); that file is read
  here, once for every clip. Raises MotionError naming the map: not such a
  dict, K not a whole number >= 0, the file unreadable or not a BVH, K past
  its last frame.
  """
  form = ('"reference" must be {"frame": K} or {"bvh": "file.bvh", '
          '"frame": K} with K a frame number from 0')
  if (not isinstance(entry, dict) or set(entry) - {"bvh", "frame"} or
      isinstance(entry.get("frame"), bool) or
      not isinstance(entry.get("frame"), int) or entry["frame"] < 0 or
      not isinstance(entry.get("bvh", ""), str)):
    raise motion_lib.MotionError(name, f"{form}, got {entry!r}")
  frame = entry["frame"]
  if "bvh" not in entry:
    return Reference(frame)
  path = folder / entry["bvh"]
  try:
    parsed = parse_bvh(path)
  except motion_lib.MotionError as e:
    raise motion_lib.MotionError(
        name, f"reference file {entry['bvh']!r}: {e}") from e
  _check_frame(frame, len(parsed.values), name, f"reference file {path}")
  return Reference(frame, str(path), dataclasses.replace(
      parsed, values=parsed.values[frame:frame + 1]))


def _check_frame(frame: int, frames: int, name, what: str) -> None:
  if frame >= frames:
    raise motion_lib.MotionError(
        name, f"reference frame {frame} is out of range: {what} has "
        f"{frames} frame(s), numbered from 0")


@dataclasses.dataclass(frozen=True, eq=False)
class Bvh:
  """A parsed BVH in its own units; joints in file order, parents first."""
  names: Tuple[str, ...]
  parents: Tuple[int, ...]
  offsets: np.ndarray  # (J, 3)
  channels: Tuple[Tuple[str, ...], ...]  # per joint, e.g. ("Zrotation", ...)
  frame_time: float
  values: np.ndarray  # (frames, channels)

  @property
  def fps(self) -> float:
    return frame_rate(self.frame_time)

  def channel_index(self, joint: int) -> int:
    """Column of the joint's first channel."""
    return sum(len(c) for c in self.channels[:joint])


def frame_rate(frame_time: float) -> float:
  """Frames per second of a 'Frame Time:'; a rounded decimal is undone.

  Files print the frame time to a few digits (".0083333" for 120 fps), so a
  rate within 0.01% of a whole number of fps is that number; this also lets
  120 -> 60 fps stay an exact stride instead of an interpolation.
  """
  fps = 1.0 / frame_time
  whole = round(fps)
  return float(whole) if whole and abs(fps - whole) < 1e-4 * fps else fps


def _parse_hierarchy(tokens, path):
  """(names, parents, offsets, channels) from the HIERARCHY tokens."""
  names, parents, offsets, channels = [], [], [], []
  stack = []  # joint index per open brace; -1 for an End Site
  i = 0

  def expect(what):
    nonlocal i
    if i >= len(tokens) or tokens[i] != what:
      found = tokens[i] if i < len(tokens) else "end of file"
      raise motion_lib.MotionError(path, f"expected {what!r}, found {found!r}")
    i += 1

  def numbers(count, what):
    nonlocal i
    try:
      values = [float(t) for t in tokens[i:i + count]]
    except ValueError as e:
      raise motion_lib.MotionError(path, f"bad number in {what}: {e}") from e
    if len(values) != count:
      raise motion_lib.MotionError(path, f"truncated {what}")
    i += count
    return values

  while i < len(tokens):
    token = tokens[i]
    if token in ("ROOT", "JOINT"):
      if token == "ROOT" and names:
        raise motion_lib.MotionError(path,
                                     "more than one ROOT is not supported")
      name = tokens[i + 1] if i + 1 < len(tokens) else ""
      if name in names:
        raise motion_lib.MotionError(path, f"joint {name!r} appears twice")
      i += 2
      expect("{")
      parent = stack[-1] if stack else -1
      if token == "JOINT" and parent < 0:
        raise motion_lib.MotionError(path, f"JOINT {name!r} outside a joint")
      expect("OFFSET")
      offsets.append(numbers(3, f"OFFSET of {name!r}"))
      expect("CHANNELS")
      count = numbers(1, f"CHANNELS of {name!r}")[0]
      joint_channels = tuple(tokens[i:i + int(count)])
      i += int(count)
      bad = [c for c in joint_channels
             if c.lower() not in ("xposition", "yposition", "zposition",
                                  "xrotation", "yrotation", "zrotation")]
      if bad or len(joint_channels) != int(count):
        raise motion_lib.MotionError(
            path, f"joint {name!r}: bad CHANNELS {bad or joint_channels}")
      names.append(name)
      parents.append(parent)
      channels.append(joint_channels)
      stack.append(len(names) - 1)
    elif token == "End":
      i += 2  # "End Site"
      expect("{")
      expect("OFFSET")
      numbers(3, "End Site OFFSET")
      stack.append(-1)
    elif token == "}":
      if not stack:
        raise motion_lib.MotionError(path, "unbalanced '}' in HIERARCHY")
      stack.pop()
      i += 1
    else:
      raise motion_lib.MotionError(path, f"unexpected {token!r} in HIERARCHY")
  if stack or not names:
    raise motion_lib.MotionError(path, "HIERARCHY is incomplete")
  return (tuple(names), tuple(parents), np.array(offsets, np.float64),
          tuple(channels))


def parse_bvh(path_or_text, name: Optional[str] = None,
              stride: int = 1) -> Bvh:
  """Parses a BVH file; only every ``stride``-th frame's values are kept.

  Raises MotionError naming the file: malformed hierarchy, missing or invalid
  frame time, frame count not matching the data (truncated), NaN/inf values.
  """
  text, path = asfamc.read_text(path_or_text, name)
  head, marker, motion = text.partition("MOTION")
  if not marker or "HIERARCHY" not in head:
    raise motion_lib.MotionError(path, "no HIERARCHY/MOTION (not a BVH file?)")
  names, parents, offsets, channels = _parse_hierarchy(
      head.split("HIERARCHY", 1)[1].split(), path)
  lines = motion.strip().split("\n")
  header = {}
  for line in lines[:2]:
    key, _, value = line.partition(":")
    header[key.strip().lower()] = value.strip()
  try:
    frames = int(header["frames"])
  except (KeyError, ValueError) as e:
    raise motion_lib.MotionError(path, "missing or bad 'Frames:' line") from e
  try:
    frame_time = float(header["frame time"])
  except (KeyError, ValueError) as e:
    raise motion_lib.MotionError(
        path, "missing or bad 'Frame Time:' line (unknown frame rate)") from e
  if not (math.isfinite(frame_time) and frame_time > 0):
    raise motion_lib.MotionError(
        path, f"invalid Frame Time {header['frame time']!r}: must be a "
        "positive number of seconds")
  rows = [l for l in lines[2:] if l.strip()]
  width = sum(len(c) for c in channels)
  if len(rows) != frames:
    raise motion_lib.MotionError(
        path, f"'Frames: {frames}' but {len(rows)} frame lines "
        "(truncated file?)")
  kept = rows[::stride]
  try:
    values = np.fromstring(" ".join(kept), sep=" ")
  except ValueError as e:
    raise motion_lib.MotionError(path, f"bad number in MOTION: {e}") from e
  if values.size != len(kept) * width:
    raise motion_lib.MotionError(
        path, f"frame lines hold {values.size} numbers, expected "
        f"{len(kept)} x {width} channels (truncated or malformed)")
  values = values.reshape(len(kept), width)
  bad = ~np.isfinite(values).all(axis=1)
  if bad.any():
    raise motion_lib.MotionError(
        path, f"NaN/inf values in frame {np.flatnonzero(bad)[0] * stride}")
  return Bvh(names, parents, offsets, channels, stride / frame_rate(frame_time),
             values)


def _rotations(bvh: Bvh, joints) -> np.ndarray:
  """(frames, len(joints), 3, 3) local rotations from the rotation channels."""
  frames = len(bvh.values)
  rotations = np.tile(np.eye(3), (frames, len(joints), 1, 1))
  # Joints sharing a channel order are converted together.
  groups: Dict[str, list] = {}
  for i, j in enumerate(joints):
    joint_channels = bvh.channels[j]
    start = bvh.channel_index(j)
    columns = [(c[0].upper(), start + k) for k, c in enumerate(joint_channels)
               if c.lower().endswith("rotation")]
    if not columns:
      continue
    order = "".join(axis for axis, _ in columns)
    # Missing axes come last with zero angle, which leaves R unchanged.
    order += "".join(a for a in "XYZ" if a not in order)
    groups.setdefault(order, []).append((i, [c for _, c in columns]))
  for order, members in groups.items():
    angles = np.zeros((frames, len(members), 3))
    for m, (_, columns) in enumerate(members):
      angles[:, m, :len(columns)] = bvh.values[:, columns]
    matrices = geometry.euler_to_matrix(angles, order, degrees=True)
    rotations[:, [i for i, _ in members]] = matrices
  return rotations


def _position_columns(bvh: Bvh, joint: int):
  """[(axis 0-2, value column)] of the joint's position channels."""
  start = bvh.channel_index(joint)
  return [("xyz".index(c[0].lower()), start + k)
          for k, c in enumerate(bvh.channels[joint])
          if c.lower().endswith("position")]


def to_source(bvh: Bvh, units_to_m: float, up: str,
              keep: Optional[Iterable[str]] = None) -> retarget.SourceMotion:
  """The BVH as a retargeting source, in metres.

  A joint's position channels replace its OFFSET along their axes in every
  frame (the root's become ``root_translation``, others ``moving_offsets``).
  With ``keep`` (joint names), only those joints and their ancestors are
  converted, on `retarget.sub_skeleton`.
  """
  offsets = bvh.offsets * units_to_m
  translation = np.zeros((len(bvh.values), 3))
  root_columns = _position_columns(bvh, 0)
  if root_columns:
    offsets = offsets.copy()
    for axis, column in root_columns:
      translation[:, axis] = bvh.values[:, column] * units_to_m
      offsets[0, axis] = 0.0  # the channel gives the root's position
  skeleton = skeleton_lib.Skeleton(bvh.names, bvh.parents, offsets)
  joints = (tuple(range(len(bvh.names))) if keep is None else
            retarget.needed_joints(skeleton, keep))
  moving = None
  animated = [(i, _position_columns(bvh, j)) for i, j in enumerate(joints)
              if j > 0 and _position_columns(bvh, j)]
  if animated:
    moving = np.tile(offsets[list(joints)], (len(bvh.values), 1, 1))
    for i, columns in animated:
      for axis, column in columns:
        moving[:, i, axis] = bvh.values[:, column] * units_to_m
  return retarget.SourceMotion(
      skeleton=retarget.sub_skeleton(skeleton, joints),
      local_rotations=_rotations(bvh, joints), root_translation=translation,
      fps=bvh.fps, up=up, moving_offsets=moving)


Repair = Callable[[Bvh, str, str], Bvh]


def load_bvh(path_or_text, joint_map: JointMap, *, clip_id: str,
             subject: str, source: str, name: Optional[str] = None,
             repair: Optional[Repair] = None) -> motion_lib.Motion:
  """A BVH clip retargeted to the canonical body at 60 fps, Z up.

  The alignment comes from the joint map's reference pose (default the zero
  pose); a reference frame counts the file's frame lines from 0, before any
  repair.

  Args:
    path_or_text: a path, or the file's text (with newlines).
    joint_map: from `load_joint_map`.
    clip_id, subject, source: the Motion's ids.
    name: what error messages call the file when text is given.
    repair: optional fix-up of the parsed file, ``repair(bvh, clip_id, path)``
      (e.g. `cmu_repair`); it sees every frame.
  """
  path = name or ("<text>" if "\n" in str(path_or_text) else str(path_or_text))
  reference = joint_map.reference
  own_frame = reference is not None and reference.bvh is None
  if repair is None and not own_frame:
    # Skip parsing the frames an exact downsampling drops.
    stride = retarget.exact_stride(_peek_fps(path_or_text, path), retarget.FPS)
    raw = bvh = parse_bvh(path_or_text, path, stride)
  else:
    raw = parse_bvh(path_or_text, path)
    bvh = raw if repair is None else repair(raw, clip_id, path)
    stride = retarget.exact_stride(bvh.fps, retarget.FPS)
    bvh = dataclasses.replace(bvh, values=bvh.values[::stride],
                              frame_time=stride / bvh.fps)
  absent = sorted({s for s in joint_map.joints.values() if s is not None} -
                  set(bvh.names))
  if absent:
    raise motion_lib.MotionError(
        path, f"joint map {joint_map.name} names joint(s) {absent} that this "
        f"BVH does not have; it has {list(bvh.names)}")
  keep = [s for s in joint_map.joints.values() if s is not None]
  source_motion = to_source(bvh, joint_map.units_to_m, joint_map.up, keep)
  plan = None
  if reference is not None:
    if own_frame:
      _check_frame(reference.frame, len(raw.values), path, "this file")
      row, where = raw.values[reference.frame:reference.frame + 1], "this file"
    else:
      _check_same_skeleton(raw, reference.bvh, path, reference.path,
                           joint_map.name)
      row, where = reference.bvh.values, reference.path
    pose = to_source(dataclasses.replace(bvh, values=row), joint_map.units_to_m,
                     joint_map.up, keep).pose(
                         0, f"the reference pose (frame {reference.frame} of "
                         f"{where})")
    plan = retarget.make_plan(source_motion.skeleton, joint_map.joints,
                              joint_map.up, path, pose)
  return retarget.retarget(source_motion, joint_map.joints, clip_id=clip_id,
                           subject=subject, source_name=source, path=path,
                           plan=plan)


def _check_same_skeleton(clip: Bvh, reference: Bvh, path, reference_path,
                         map_name) -> None:
  """Raises MotionError naming the clip unless both files share a skeleton:
  joints, parents, channels and OFFSETs (but where position channels replace
  them)."""
  def differs(problem):
    raise motion_lib.MotionError(
        path, f"the reference file {reference_path} of joint map {map_name} "
        f"has another skeleton than this file: {problem}")

  if clip.names != reference.names:
    differs(f"joints {list(reference.names)} there, {list(clip.names)} here")
  for j, name in enumerate(clip.names):
    if clip.parents[j] != reference.parents[j]:
      differs(f"joint {name!r} has another parent")
    if clip.channels[j] != reference.channels[j]:
      differs(f"joint {name!r} has CHANNELS {list(reference.channels[j])} "
              f"there, {list(clip.channels[j])} here")
    fixed = [a for a in range(3)
             if a not in dict(_position_columns(clip, j))]
    if not np.allclose(clip.offsets[j, fixed], reference.offsets[j, fixed],
                       rtol=1e-6, atol=1e-6):
      differs(f"joint {name!r} has OFFSET {reference.offsets[j].tolist()} "
              f"there, {clip.offsets[j].tolist()} here")


def _peek_fps(path_or_text, path) -> float:
  """The frame rate from the 'Frame Time:' line, to skip unneeded frames."""
  text = str(path_or_text)
  if "\n" not in text:
    try:
      with open(text, "rb") as f:
        text = f.read(1 << 16).decode("latin-1")
    except OSError as e:
      raise motion_lib.MotionError(path, f"cannot read: {e.strerror}") from e
  _, _, rest = text.partition("Frame Time:")
  try:
    frame_time = float(rest.split("\n", 1)[0])
  except ValueError:
    return 1.0  # not readable here; parse_bvh reports it on the full file
  return frame_rate(frame_time) if frame_time > 0 else 1.0


def iter_clips(folder, joint_map: JointMap, *, source: str,
               repair: Optional[Repair] = None
               ) -> Iterator[asfamc.ClipSource]:
  """Every BVH under ``folder``: in zips (one per subject) or plain folders.

  Clip ids are "<source>/<file stem>"; the subject is "<source>/<zip stem>"
  for zipped files and "<source>/<folder name>" for plain ones. Listing reads
  only zip directories; ``load()`` parses.
  """
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise motion_lib.MotionError(folder, "no such folder")
  for zip_path in sorted(folder.rglob("*.zip")):
    members = asfamc.zip_members(zip_path)
    for member in sorted(m for m in members if m.lower().endswith(".bvh")):
      yield _clip(f"{source}/{pathlib.PurePath(member).stem}",
                  f"{source}/{zip_path.stem}", f"{zip_path}:{member}",
                  asfamc.zip_reader(zip_path, member), joint_map, repair)
  for bvh_path in sorted(folder.rglob("*.bvh")):
    yield _clip(f"{source}/{bvh_path.stem}", f"{source}/{bvh_path.parent.name}",
                str(bvh_path), lambda p=bvh_path: asfamc.read_text(p, None)[0],
                joint_map, repair)


def _clip(clip_id, subject, name, read, joint_map,
          repair) -> asfamc.ClipSource:
  def load() -> motion_lib.Motion:
    return load_bvh(read(), joint_map, clip_id=clip_id, subject=subject,
                    source=clip_id.split("/", 1)[0], name=name, repair=repair)
  return asfamc.ClipSource(clip_id, subject, load)


# --- The CMU BVH release (../shared/data/cmu_mocap_bvh/README.md) ---

# Joints the release leaves at the Spine1 (thorax start) instead of its end.
_CMU_THORAX_CHILDREN = ("Neck", "LeftShoulder", "RightShoulder")
# Thorax / upperback length over the 18 ASFs in ../shared/data (README).
_CMU_THORAX_OVER_UPPERBACK = 1.012
# A capture glitch moves the root faster than this (README's criterion).
_CMU_GLITCH_SPEED_M_S = 15.0
_CMU_GLITCH_SEARCH_FRAMES = 10


def cmu_repair(asfamc_dir=None, units_to_m: float = asfamc.CMU_UNITS_TO_M
               ) -> Repair:
  """The repair the CMU BVH release needs, as a `load_bvh` ``repair``.

  1. drops frame 0 (an added T-pose, not motion);
  2. restores the thorax the converter dropped: Neck, LeftShoulder and
     RightShoulder get the subject's thorax vector, from its ASF in
     ``asfamc_dir`` (../shared/data/cmu_mocap_asfamc) when there, else
     1.012 x the Spine1 offset;
  3. drops capture glitches at a clip's start: frames before a root jump
     faster than 15 m/s within the first 10 motion frames (07_12: 1 frame,
     09_10: 4 frames).
  """
  asfamc_dir = None if asfamc_dir is None else pathlib.Path(asfamc_dir)

  def repair(bvh: Bvh, clip_id: str, path: str) -> Bvh:
    subject = clip_id.rsplit("/", 1)[-1].split("_")[0]
    offsets = bvh.offsets.copy()
    missing = [n for n in _CMU_THORAX_CHILDREN + ("Spine1",)
               if n not in bvh.names]
    if missing:
      raise motion_lib.MotionError(
          path, f"not the CMU BVH skeleton: no joint(s) {missing}")
    thorax = _asf_thorax(asfamc_dir, subject)
    if thorax is None:
      thorax = _CMU_THORAX_OVER_UPPERBACK * offsets[bvh.names.index("Spine1")]
    for name in _CMU_THORAX_CHILDREN:
      j = bvh.names.index(name)
      if np.allclose(offsets[j], 0.0):
        offsets[j] = thorax
    values = bvh.values[1:]
    root = values[:_CMU_GLITCH_SEARCH_FRAMES + 1, :3] * units_to_m
    speed = np.linalg.norm(np.diff(root, axis=0), axis=-1) / bvh.frame_time
    jumps = np.flatnonzero(speed > _CMU_GLITCH_SPEED_M_S)
    start = int(jumps[-1]) + 1 if len(jumps) else 0
    return dataclasses.replace(bvh, offsets=offsets, values=values[start:])

  return repair


def _asf_thorax(asfamc_dir, subject: str) -> Optional[np.ndarray]:
  """The subject's thorax vector (ASF units) from its ASF, if present."""
  if asfamc_dir is None:
    return None
  candidates = [asfamc_dir / "subjects" / f"{subject}.zip",
                asfamc_dir / f"{subject}.zip"]
  for zip_path in candidates:
    if zip_path.is_file():
      text = asfamc.zip_reader(zip_path, f"{subject}.asf")()
      break
  else:
    plain = list(asfamc_dir.rglob(f"{subject}.asf"))
    if not plain:
      return None
    text = plain[0].read_bytes().decode("latin-1")
  asf = asfamc.parse_asf(text, f"{subject}.asf")
  thorax = [b for b in asf.bones if b.name == "thorax"]
  return thorax[0].direction * thorax[0].length if thorax else None


def iter_cmu_clips(bvh_dir, asfamc_dir=None
                   ) -> Iterator[asfamc.ClipSource]:
  """The CMU BVH clips (ids "cmu_bvh/07_01"), repaired, at 60 fps."""
  return iter_clips(bvh_dir, load_joint_map(CMU_MAP), source="cmu_bvh",
                    repair=cmu_repair(asfamc_dir))
