"""ASF/AMC motion capture (CMU, HDM05) -> `Motion` on the canonical body.

Format notes: ../shared/data/cmu_mocap_asfamc/README.md. A bone b with ASF
frame C_b (its `axis`) and AMC Euler angles R_b moves as
M_b = M_parent C_b R_b C_b^T, so C_b R_b C_b^T is b's local rotation in a
world-aligned frame; placing joint b at the start of bone b (the end of its
parent bone) turns the ASF into the BVH-like source skeleton that
`retarget.py` serves. The CMU correspondence to the canonical joints (bone
ends, per the README) then reads: canonical joint j <- the bone that starts
at j's point and carries j's children.
"""

import dataclasses
import functools
import pathlib
import re
import zipfile
from typing import (Callable, Dict, Iterable, Iterator, List, NamedTuple,
                    Optional, Tuple)

import numpy as np

from memmlp_jax import geometry
from memmlp_jax import retarget
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import motion as motion_lib

FPS = 120.0  # CMU and HDM05 capture at 120 Hz; AMC files do not say.
# CMU's "ASF units" (inches x 0.45, the ASF's `length 0.45`) in metres.
CMU_UNITS_TO_M = 0.0254 / 0.45
ROOT = "root"

# Canonical joint -> the CMU/HDM05 bone starting at that joint's point.
CMU_JOINT_MAP = {
    "pelvis": "root", "left_hip": "lfemur", "right_hip": "rfemur",
    "spine1": "upperback", "left_knee": "ltibia", "right_knee": "rtibia",
    "spine2": "thorax", "left_ankle": "lfoot", "right_ankle": "rfoot",
    "spine3": "lowerneck", "left_foot": "ltoes", "right_foot": "rtoes",
    "neck": "upperneck", "left_collar": "lclavicle",
    "right_collar": "rclavicle", "head": "head", "left_shoulder": "lhumerus",
    "right_shoulder": "rhumerus", "left_elbow": "lradius",
    "right_elbow": "rradius", "left_wrist": "lwrist", "right_wrist": "rwrist",
}

_ROTATION_DOFS = ("rx", "ry", "rz")
_FRAME_LINE = re.compile(r"^[ \t]*\d+[ \t]*$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Bone:
  name: str
  direction: np.ndarray  # (3,) unit vector, zero pose, ASF axes
  length: float  # ASF length units
  axis: np.ndarray  # (3, 3) the bone frame C_b
  dofs: Tuple[str, ...]  # AMC value order, e.g. ("rx", "rz")


@dataclasses.dataclass(frozen=True, eq=False)
class Asf:
  """A parsed ASF skeleton; `bones` in hierarchy order, parents first."""
  bones: Tuple[Bone, ...]
  parents: Tuple[int, ...]  # index into ("root",) + bones, root -1
  units_to_m: float
  degrees: bool
  root_order: Tuple[str, ...]  # e.g. ("TX", "TY", "TZ", "RX", "RY", "RZ")
  root_axis_order: str  # e.g. "XYZ": rotate about X, then Y, then Z

  @property
  def names(self) -> Tuple[str, ...]:
    return (ROOT,) + tuple(b.name for b in self.bones)

  @functools.cached_property
  def skeleton(self) -> skeleton_lib.Skeleton:
    """Joints at bone starts, world-aligned frames, metres, Y up."""
    offsets = np.zeros((len(self.bones) + 1, 3))
    for i, bone in enumerate(self.bones, start=1):
      parent = self.parents[i]
      if parent > 0:
        parent_bone = self.bones[parent - 1]
        offsets[i] = (parent_bone.direction * parent_bone.length *
                      self.units_to_m)
    return skeleton_lib.Skeleton(self.names, self.parents, offsets)


def _fixed_axes_matrix(angles, order: str, degrees: bool):
  """Rotate about fixed axes in ``order`` (ASF "XYZ": R = Rz Ry Rx)."""
  return geometry.euler_to_matrix(np.asarray(angles, np.float64)[..., ::-1],
                                  order[::-1], degrees=degrees)


def read_text(text_or_path, name: Optional[str]) -> Tuple[str, str]:
  """(text, name for messages) from text (has a newline) or a path."""
  text_or_path = str(text_or_path)
  if "\n" in text_or_path:
    return text_or_path.replace("\r", ""), _name_of(text_or_path, name)
  path = pathlib.Path(text_or_path)
  try:
    data = path.read_bytes()
  except OSError as e:
    raise motion_lib.MotionError(path, f"cannot read: {e.strerror}") from e
  return data.decode("latin-1").replace("\r", ""), name or str(path)


def _name_of(text_or_path, name: Optional[str]) -> str:
  if name:
    return name
  return "<text>" if "\n" in str(text_or_path) else str(text_or_path)


def _floats(values, path, what):
  try:
    return np.array([float(v) for v in values])
  except ValueError as e:
    raise motion_lib.MotionError(path, f"bad number in {what}: {e}") from e


def _parse_bone(lines, path, degrees: bool) -> Bone:
  fields = {}
  for line in lines:
    parts = line.split()
    if parts and parts[0] in ("id", "name", "direction", "length", "axis",
                              "dof"):
      fields[parts[0]] = parts[1:]
  name = (fields.get("name") or ["?"])[0]
  for key in ("name", "direction", "length", "axis"):
    if key not in fields:
      raise motion_lib.MotionError(path, f"bone {name!r} has no {key!r}")
  direction = _floats(fields["direction"], path, f"direction of {name!r}")
  length = _floats(fields["length"], path, f"length of {name!r}")
  axis = fields["axis"]
  if len(direction) != 3 or len(length) != 1 or len(axis) != 4:
    raise motion_lib.MotionError(
        path, f"bone {name!r}: malformed direction/length/axis")
  order = axis[3].upper()
  if sorted(order) != ["X", "Y", "Z"]:
    raise motion_lib.MotionError(path, f"bone {name!r}: bad axis order {order}")
  norm = np.linalg.norm(direction)
  if not norm > 0:
    raise motion_lib.MotionError(path, f"bone {name!r} has a zero direction")
  dofs = tuple(d.lower() for d in fields.get("dof", ()))
  unknown = set(dofs) - {"rx", "ry", "rz", "tx", "ty", "tz", "l"}
  if unknown:
    raise motion_lib.MotionError(path, f"bone {name!r}: unknown dof {unknown}")
  return Bone(name, direction / norm, float(length[0]),
              _fixed_axes_matrix(_floats(axis[:3], path, f"axis of {name!r}"),
                                 order, degrees), dofs)


def parse_asf(text_or_path, name: Optional[str] = None) -> Asf:
  """Parses an ASF skeleton; raises MotionError naming the file."""
  return _parse_asf(*read_text(text_or_path, name))


# A subject's clips share one ASF: parse it (and plan its retargeting) once.
@functools.lru_cache(maxsize=64)
def _parse_asf(text: str, path: str) -> Asf:
  sections: Dict[str, list] = {}
  current = None
  for line in text.split("\n"):
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
      continue
    if stripped.startswith(":"):
      head, _, rest = stripped[1:].partition(" ")
      current = sections.setdefault(head.lower(), [])
      if rest.strip():
        current.append(rest.strip())
    elif current is not None:
      current.append(stripped)
  for required in ("root", "bonedata", "hierarchy"):
    if required not in sections:
      raise motion_lib.MotionError(path,
                                   f"no :{required} section (not an ASF?)")

  units = dict((l.split() + [""])[:2] for l in sections.get("units", []))
  degrees = units.get("angle", "deg").lower().startswith("deg")
  try:
    units_to_m = 0.0254 / float(units.get("length", "1"))
  except (ValueError, ZeroDivisionError) as e:
    raise motion_lib.MotionError(path, f"bad :units length: {e}") from e
  root = {l.split()[0].lower(): l.split()[1:] for l in sections["root"]}
  root_order = tuple(v.upper() for v in root.get("order", ()))
  root_axis_order = "".join(root.get("axis", ["XYZ"])).upper()
  if sorted(root_axis_order) != ["X", "Y", "Z"]:
    raise motion_lib.MotionError(path, f"bad root axis {root_axis_order}")

  bones = {}
  block = None
  for line in sections["bonedata"]:
    if line == "begin":
      block = []
    elif line == "end" and block is not None:
      bone = _parse_bone(block, path, degrees)
      bones[bone.name] = bone
      block = None
    elif block is not None:
      block.append(line)

  children: Dict[str, list] = {}
  for line in sections["hierarchy"]:
    parts = line.split()
    if parts and parts[0] not in ("begin", "end"):
      children.setdefault(parts[0], []).extend(parts[1:])
  ordered, parents = [], [-1]
  stack = [(ROOT, 0)]
  seen = {ROOT}
  while stack:
    parent_name, parent_index = stack.pop(0)
    for child in children.get(parent_name, ()):
      if child not in bones:
        raise motion_lib.MotionError(
            path, f"hierarchy names bone {child!r} that :bonedata does not "
            "define (ASF missing a bone)")
      if child in seen:
        raise motion_lib.MotionError(path, f"bone {child!r} appears twice")
      seen.add(child)
      ordered.append(bones[child])
      parents.append(parent_index)
      stack.append((child, len(ordered)))
  orphans = sorted(set(bones) - seen)
  if orphans:
    raise motion_lib.MotionError(
        path, f"bone(s) {orphans} are not connected to the root in :hierarchy")
  return Asf(tuple(ordered), tuple(parents), units_to_m, degrees, root_order,
             root_axis_order)


def _amc_values(text: str, asf: Asf, path, stride: int, wanted):
  """({bone: (frames, values)}, degrees) of every stride-th AMC frame."""
  first = _FRAME_LINE.search(text)
  if first is None:
    raise motion_lib.MotionError(path, "no frames (not an AMC file?)")
  header, body = text[:first.start()], text[first.start():]
  degrees = asf.degrees
  if ":RADIANS" in header.upper():
    degrees = False
  elif ":DEGREES" in header.upper():
    degrees = True
  counts = {ROOT: len(asf.root_order)}
  counts.update({b.name: len(b.dofs) for b in asf.bones if b.dofs})
  values = _amc_fast(body, counts, stride, wanted)
  if values is None:
    values = {name: v[::stride]
              for name, v in _amc_by_name(body, counts, path).items()}
  return values, degrees


def _amc_fast(body: str, counts, stride: int,
              wanted) -> Optional[Dict[str, np.ndarray]]:
  """Parses AMC frames whose bone lines keep the first frame's order.

  Works per wanted bone on every stride-th frame's lines, in C-speed string
  operations. Returns None when anything differs from that layout (order,
  counts, a bad number, a truncated end); the slow parser then finds and
  names the problem.
  """
  lines = body.rstrip().split("\n")
  layout = []
  for line in lines[1:]:
    parts = line.split()
    if not parts or parts[0].isdigit():
      break
    if parts[0] not in counts or len(parts) != counts[parts[0]] + 1:
      return None
    layout.append(parts[0])
  period = len(layout) + 1
  if not layout or len(set(layout)) != len(layout) or len(lines) % period:
    return None
  frames = len(lines) // period
  try:
    numbers = np.fromstring(" ".join(lines[0::period]), sep=" ")
    if not np.array_equal(numbers, numbers[0] + np.arange(frames)):
      return None
    result = {}
    for i, name in enumerate(layout, start=1):
      if name not in wanted:
        continue
      text = "\n" + "\n".join(lines[i::period * stride])
      values = np.fromstring(text.replace(f"\n{name} ", " "), sep=" ")
      rows = len(range(0, frames, stride))
      if values.size != rows * counts[name]:
        return None
      result[name] = values.reshape(rows, counts[name])
  except ValueError:
    return None
  return result


def _amc_by_name(body: str, counts, path) -> Dict[str, np.ndarray]:
  """Line-by-line AMC parser keyed by bone name, with precise errors."""
  frames = []
  for line in body.split("\n"):
    parts = line.split()
    if not parts:
      continue
    if parts[0].isdigit() and len(parts) == 1:
      if frames and int(parts[0]) != previous + 1:
        raise motion_lib.MotionError(
            path, f"frame number {parts[0]} follows frame {previous}")
      previous = int(parts[0])
      frames.append({})
      continue
    name = parts[0]
    if name not in counts:
      raise motion_lib.MotionError(
          path, f"frame {len(frames)}: bone {name!r} is not in the ASF or has "
          "no dof")
    if len(parts) != counts[name] + 1:
      raise motion_lib.MotionError(
          path, f"frame {len(frames)}: {name!r} has {len(parts) - 1} values, "
          f"the ASF gives it {counts[name]} (truncated file?)")
    frames[-1][name] = _floats(parts[1:], path, f"frame {len(frames)}")
  present = set().union(*frames) if frames else set()
  for index, frame in enumerate(frames, start=1):
    lacking = sorted(present - set(frame))
    if lacking:
      raise motion_lib.MotionError(
          path, f"frame {index} of {len(frames)} lacks {lacking} "
          "(truncated file?)")
  return {name: np.stack([f[name] for f in frames]) for name in present}


def load_source(asf: Asf, amc_text_or_path, *, name: Optional[str] = None,
                fps: float = FPS, stride: int = 1,
                keep: Optional[Iterable[str]] = None) -> retarget.SourceMotion:
  """An AMC clip on its ASF skeleton (world-aligned joints, metres, Y up).

  Only every ``stride``-th frame is read (exact 120 -> 60 fps resampling
  without parsing the frames it drops); the result is at ``fps / stride``.
  With ``keep`` (bone names), only those bones and their ancestors are
  converted, on `retarget.sub_skeleton`.
  """
  joints = (tuple(range(len(asf.names))) if keep is None else
            retarget.needed_joints(asf.skeleton, keep))
  bones = [asf.bones[j - 1] for j in joints if j > 0]
  text, path = read_text(amc_text_or_path, name)
  values, degrees = _amc_values(text, asf, path, stride,
                                {ROOT} | {b.name for b in bones})
  if ROOT not in values:
    raise motion_lib.MotionError(path, "no root lines")
  frames = len(values[ROOT])
  for bone_name, v in values.items():
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
      raise motion_lib.MotionError(
          path, f"NaN/inf value for {bone_name!r} in frame "
          f"{np.flatnonzero(bad)[0] + 1}")
  root = values[ROOT]
  try:
    translation = root[:, [asf.root_order.index(a) for a in ("TX", "TY", "TZ")]]
    root_angles = root[:, [asf.root_order.index(a) for a in ("RX", "RY", "RZ")]]
  except ValueError as e:
    raise motion_lib.MotionError(
        path, f"ASF root order {asf.root_order} lacks a channel") from e
  # Bones without lines or rotational dofs keep zero angles: identity.
  angles = np.zeros((frames, len(bones), 3))
  for i, bone in enumerate(bones):
    for column, dof in enumerate(bone.dofs):
      if dof in _ROTATION_DOFS and bone.name in values:
        angles[:, i, _ROTATION_DOFS.index(dof)] = values[bone.name][:, column]
  axes = np.stack([bone.axis for bone in bones])
  rotations = np.concatenate([
      _fixed_axes_matrix(root_angles, asf.root_axis_order, degrees)[:, None],
      axes @ _fixed_axes_matrix(angles, "XYZ", degrees) @ np.swapaxes(
          axes, -1, -2)], axis=1)
  return retarget.SourceMotion(
      skeleton=retarget.sub_skeleton(asf.skeleton, joints),
      local_rotations=rotations,
      root_translation=translation * asf.units_to_m, fps=fps / stride, up="y")


def load_amc(asf_text_or_path, amc_text_or_path, *, clip_id: str,
             subject: str, source: str, fps: float = FPS,
             asf_name: Optional[str] = None,
             amc_name: Optional[str] = None) -> motion_lib.Motion:
  """An ASF/AMC clip retargeted to the canonical body at 60 fps, Z up.

  Args:
    asf_text_or_path, amc_text_or_path: file contents (text with newlines)
      or paths.
    clip_id, subject, source: the Motion's ids.
    fps: the AMC's frame rate (the files do not store it; CMU/HDM05: 120).
    asf_name, amc_name: what error messages call the files when text is
      given (e.g. "subjects/02.zip:02_01.amc").
  """
  asf = parse_asf(asf_text_or_path, asf_name)
  asf_path = _name_of(asf_text_or_path, asf_name)
  amc_path = _name_of(amc_text_or_path, amc_name)
  if not (np.isfinite(fps) and fps > 0):
    raise motion_lib.MotionError(amc_path, f"invalid frame rate {fps}")
  source_motion = load_source(asf, amc_text_or_path, name=amc_name, fps=fps,
                              stride=retarget.exact_stride(fps, retarget.FPS),
                              keep=CMU_JOINT_MAP.values())
  return retarget.retarget(source_motion, CMU_JOINT_MAP, clip_id=clip_id,
                           subject=subject, source_name=source, path=amc_path,
                           plan=_plan(asf, asf_path))


@functools.lru_cache(maxsize=64)
def _plan(asf: Asf, asf_path: str) -> retarget.Plan:
  joints = retarget.needed_joints(asf.skeleton, CMU_JOINT_MAP.values())
  return retarget.make_plan(retarget.sub_skeleton(asf.skeleton, joints),
                            CMU_JOINT_MAP, "y", asf_path)


class ClipSource(NamedTuple):
  """A clip found in a folder; ``load()`` returns its Motion or raises."""
  clip_id: str
  subject: str
  load: Callable[[], motion_lib.Motion]


def _naming(asf_stem: str, source: Optional[str]) -> Tuple[str, str]:
  """(source, subject) of an ASF: HDM_bd -> (hdm05, bd), 02 -> (cmu, 02)."""
  if asf_stem.startswith("HDM_"):
    return source or "hdm05", asf_stem[len("HDM_"):]
  return source or "cmu", asf_stem


def _pick_asf(amc_stem: str, asf_stems) -> Optional[str]:
  """The ASF of a clip: the only one, else the longest name prefix."""
  if len(asf_stems) == 1:
    return next(iter(asf_stems))
  matches = [s for s in asf_stems if amc_stem.startswith(s + "_")]
  return max(matches, key=len) if matches else None


def zip_members(zip_path: pathlib.Path) -> List[str]:
  """The member names of a zip, MotionError if it cannot be read."""
  try:
    with zipfile.ZipFile(zip_path) as archive:
      return archive.namelist()
  except (OSError, zipfile.BadZipFile) as e:
    raise motion_lib.MotionError(zip_path, f"cannot read zip: {e}") from e


def zip_reader(zip_path: pathlib.Path, member: str) -> Callable[[], str]:
  """A function reading one zip member as text, MotionError if it cannot."""
  def read() -> str:
    try:
      with zipfile.ZipFile(zip_path) as archive:
        return archive.read(member).decode("latin-1")
    except (OSError, zipfile.BadZipFile, KeyError) as e:
      raise motion_lib.MotionError(f"{zip_path}:{member}",
                                   f"cannot read: {e}") from e
  return read


def _file_reader(path: pathlib.Path):
  def read() -> str:
    return read_text(path, None)[0]
  return read


def _clip(clip_name, amc_name, asf_name, asf_stem, read_amc, read_asf, source,
          fps):
  source_name, subject = _naming(asf_stem, source)

  def load() -> motion_lib.Motion:
    return load_amc(read_asf(), read_amc(),
                    clip_id=f"{source_name}/{clip_name}",
                    subject=f"{source_name}/{subject}", source=source_name,
                    fps=fps, asf_name=asf_name, amc_name=amc_name)
  return ClipSource(f"{source_name}/{clip_name}", f"{source_name}/{subject}",
                    load)


def iter_clips(folder, *, source: Optional[str] = None,
               fps: float = FPS) -> Iterator[ClipSource]:
  """Every AMC clip under ``folder``, in per-subject zips or plain folders.

  Each AMC pairs with the ASF in its zip or folder (the only one, or the one
  whose name prefixes the clip's: 02.asf <- 02_01.amc). Clip ids are
  "<source>/<amc name>", subjects "<source>/<ASF name>" (HDM_ dropped);
  ``source`` defaults to "hdm05" for HDM_*.asf, else "cmu". Listing reads
  only zip directories; parsing happens in ``load()``, so a batch job can
  skip a failing clip with its MotionError.
  """
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise motion_lib.MotionError(folder, "no such folder")
  for zip_path in sorted(folder.rglob("*.zip")):
    members = zip_members(zip_path)
    asfs = {pathlib.PurePath(m).stem: m for m in members
            if m.lower().endswith(".asf")}
    for member in sorted(m for m in members if m.lower().endswith(".amc")):
      stem = pathlib.PurePath(member).stem
      asf_stem = _pick_asf(stem, asfs)
      amc_name = f"{zip_path}:{member}"
      if asf_stem is None:
        yield ClipSource(f"{source or 'cmu'}/{stem}",
                         f"{source or 'cmu'}/{zip_path.stem}",
                         _missing_asf(amc_name))
        continue
      yield _clip(stem, amc_name, f"{zip_path}:{asfs[asf_stem]}", asf_stem,
                  zip_reader(zip_path, member),
                  zip_reader(zip_path, asfs[asf_stem]), source, fps)
  for directory in sorted({p.parent for p in folder.rglob("*.amc")}):
    asfs = {p.stem: p for p in directory.glob("*.asf")}
    for amc in sorted(directory.glob("*.amc")):
      asf_stem = _pick_asf(amc.stem, asfs)
      if asf_stem is None:
        yield ClipSource(f"{source or 'cmu'}/{amc.stem}",
                         f"{source or 'cmu'}/{directory.name}",
                         _missing_asf(str(amc)))
        continue
      yield _clip(amc.stem, str(amc), str(asfs[asf_stem]), asf_stem,
                  _file_reader(amc),
                  _file_reader(asfs[asf_stem]), source, fps)


def _missing_asf(amc_name: str):
  def load():
    raise motion_lib.MotionError(amc_name, "no ASF skeleton found next to it")
  return load
