"""BVH files in the wild: rest poses that are not T-poses, a reference pose,
position channels below the root, the shipped joint-map presets.

Real CMU BVH clips are rewritten with other rest poses (every joint frame
turned, OFFSETs and rotations changed so that every world position and
every bone's world orientation stays the same in every frame); with the
reference set to the same physical pose they must load as the original.
"""

import json
import os
import pathlib
import zipfile

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from memmlp_jax import geometry
from memmlp_jax import retarget
from memmlp_jax import skeleton as skeleton_lib
from memmlp_jax.data import bvh
from memmlp_jax.data import motion as motion_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = (REPO / os.environ.get("MEMMLP_DATA", "../shared/data")).resolve()
CMU_BVH = DATA / "cmu_mocap_bvh"
CMU_ASFAMC = DATA / "cmu_mocap_asfamc"
needs_data = pytest.mark.skipif(not CMU_BVH.is_dir(),
                                reason=f"no mocap data in {DATA}")
_X = np.array([1.0, 0.0, 0.0])
_ORDER = "ZYX"  # the CMU release's rotation channel order


def write_bvh(names, parents, offsets, channels, values, frame_time):
  """BVH text; joints in ``names`` order (parents first, depth first)."""
  lines = ["HIERARCHY"]

  def joint(j, depth):
    pad = "  " * depth
    lines.append(f"{pad}{'ROOT' if parents[j] < 0 else 'JOINT'} {names[j]}")
    lines.extend([pad + "{", f"{pad}  OFFSET " + " ".join(
        f"{v:.9f}" for v in offsets[j]),
                  f"{pad}  CHANNELS {len(channels[j])} "
                  f"{' '.join(channels[j])}"])
    children = [c for c, p in enumerate(parents) if p == j]
    for child in children:
      joint(child, depth + 1)
    if not children:
      lines.extend([f"{pad}  End Site", pad + "  {",
                    f"{pad}    OFFSET 1 0 0", pad + "  }"])
    lines.append(pad + "}")

  joint(0, 0)
  rows = [" ".join(f"{v:.9f}" for v in row) for row in values]
  return "\n".join(lines + ["MOTION", f"Frames: {len(rows)}",
                            f"Frame Time: {frame_time:.9f}"] + rows) + "\n"


def _channels(names, positions):
  rotation = tuple(f"{a}rotation" for a in _ORDER)
  return [(("Xposition", "Yposition", "Zposition") if name in positions
           else ()) + rotation for name in names]


def turned_frames(parsed: bvh.Bvh, local, root, turns) -> str:
  """The motion with joint j's frame turned by turns[j] (G'_j = G_j Q_j).

  OFFSETs become Q_parent^T o and local rotations Q_parent^T L Q_j, so every
  world position and bone is unchanged; the zero pose becomes the physical
  pose whose world rotations are Q_j^T.
  """
  parents = parsed.parents
  parent_turns = np.array([turns[p] if p >= 0 else np.eye(3)
                           for p in parents])
  offsets = np.einsum("jba,jb->ja", parent_turns, parsed.offsets)
  new_local = np.swapaxes(parent_turns, -1, -2) @ local @ turns
  angles = geometry.matrix_to_euler(new_local, _ORDER, degrees=True)
  values = np.concatenate([root, angles.reshape(len(local), -1)], axis=1)
  return write_bvh(parsed.names, parents, offsets,
                   _channels(parsed.names, parsed.names[:1]), values,
                   parsed.frame_time)


def _along_x(parsed: bvh.Bvh):
  """Turns putting every OFFSET on its parent's X axis (collinear bones)."""
  turns = []
  for j in range(len(parsed.names)):
    children = [parsed.offsets[c] for c, p in enumerate(parsed.parents)
                if p == j and np.linalg.norm(parsed.offsets[c]) > 0]
    if not children:  # any turn keeps zero offsets on the X axis
      turns.append(Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix())
      continue
    direction = children[0] / np.linalg.norm(children[0])
    for other in children[1:]:
      np.testing.assert_allclose(np.cross(direction, other), 0, atol=1e-9)
    if direction @ _X < -0.9:  # antiparallel: turn through +Z first
      turns.append(geometry.rotation_between(np.array([0.0, 0, 1]), direction)
                   @ geometry.rotation_between(_X, np.array([0.0, 0, 1])))
    else:
      turns.append(geometry.rotation_between(_X, direction))
  return np.array(turns)


def _pose_turns(parsed: bvh.Bvh, local_pose):
  """Turns making the physical pose ``local_pose`` (J, 3, 3) the zero pose."""
  world, _ = geometry.forward_kinematics(local_pose, np.zeros(3),
                                         parsed.parents, parsed.offsets)
  return np.swapaxes(world, -1, -2)


def _a_pose(parsed: bvh.Bvh):
  pose = np.tile(np.eye(3), (len(parsed.names), 1, 1))
  for name, angle in (("LeftArm", -40.0), ("RightArm", 40.0)):  # arms down
    pose[parsed.names.index(name)] = Rotation.from_euler(
        "z", angle, degrees=True).as_matrix()
  return pose


def _cmu(clip):
  with zipfile.ZipFile(CMU_BVH / "subjects" / f"{clip[:2]}.zip") as archive:
    text = archive.read(f"{clip}.bvh").decode("latin-1")
  raw = bvh.parse_bvh(text)
  fixed = bvh.cmu_repair(CMU_ASFAMC)(raw, f"cmu_bvh/{clip}", clip)
  source = bvh.to_source(fixed, 1.0, "y")  # file units
  # Repaired frame k is the file's frame k + dropped.
  return text, fixed, source, len(raw.values) - len(fixed.values)


def _map(tmp_path, reference=None, name="map.json"):
  data = json.loads(bvh.CMU_MAP.read_text())
  if reference is not None:
    data["reference"] = reference
  path = tmp_path / name
  path.write_text(json.dumps(data))
  return bvh.load_joint_map(path)


def _load(text, joint_map, repair=None, clip="07_01"):
  # The repair finds the subject's ASF thorax by the clip id.
  return bvh.load_bvh(text, joint_map, clip_id=f"cmu_bvh/{clip}",
                      subject=f"cmu_bvh/{clip[:2]}", source="cmu_bvh",
                      name="clip.bvh", repair=repair)


def _assert_same(motion, expected):
  np.testing.assert_allclose(motion.local_rotations, expected.local_rotations,
                             atol=1e-5)
  np.testing.assert_allclose(motion.root_translation,
                             expected.root_translation, atol=1e-5)
  np.testing.assert_allclose(motion_lib.features(motion)["sparse"],
                             motion_lib.features(expected)["sparse"],
                             atol=1e-5)


@needs_data
@pytest.mark.parametrize("clip", ["07_01", "02_04"])
def test_rest_pose_invariance_on_cmu_clips(tmp_path, clip):
  text, fixed, source, dropped = _cmu(clip)
  repair = bvh.cmu_repair(CMU_ASFAMC)
  original = _load(text, _map(tmp_path), repair, clip)
  frame = len(fixed.values) // 2
  at_frame = _load(text, _map(tmp_path, {"frame": frame + dropped}), repair,
                   clip)
  world, _ = source.source_pose()
  rests = {
      "along_x": _along_x(fixed),
      "a_pose": _pose_turns(fixed, _a_pose(fixed)),
      "frame": np.swapaxes(world[frame], -1, -2),
  }
  identity = np.tile(np.eye(3), (1, len(fixed.names), 1, 1))
  for rest, turns in rests.items():
    rewritten = turned_frames(fixed, source.local_rotations,
                              source.root_translation, turns)
    # The original's zero pose (a T-pose), written with the same turns.
    (tmp_path / f"{rest}_tpose.bvh").write_text(
        turned_frames(fixed, identity, np.zeros((1, 3)), turns))
    t_pose = _map(tmp_path, {"bvh": f"{rest}_tpose.bvh", "frame": 0})
    _assert_same(_load(rewritten, t_pose), original)
    _assert_same(_load(rewritten, _map(tmp_path, {"frame": frame})), at_frame)
    if rest == "along_x":
      with pytest.raises(motion_lib.MotionError,
                         match=r"clip\.bvh: the zero pose is not a standing "
                         r"body pose: its joints lie on one line .*"
                         r'"reference"'):
        _load(rewritten, _map(tmp_path))


@needs_data
def test_a_reference_turned_about_up_changes_nothing(tmp_path):
  text, fixed, source, _ = _cmu("07_01")
  turned = np.tile(np.eye(3), (1, len(fixed.names), 1, 1))
  turned[0, 0] = Rotation.from_euler("y", 90, degrees=True).as_matrix()
  (tmp_path / "turned.bvh").write_text(turned_frames(
      fixed, turned, np.array([[5.0, 17.0, -3.0]]),
      np.tile(np.eye(3), (len(fixed.names), 1, 1))))
  repair = bvh.cmu_repair(CMU_ASFAMC)
  # The CMU file's raw skeleton lacks the repaired thorax: compare against
  # the repaired text, which the reference file shares.
  rewritten = turned_frames(fixed, source.local_rotations,
                            source.root_translation,
                            np.tile(np.eye(3), (len(fixed.names), 1, 1)))
  _assert_same(_load(rewritten, _map(tmp_path, {"bvh": "turned.bvh",
                                                "frame": 0})),
               _load(text, _map(tmp_path), repair))


@needs_data
def test_root_path_in_a_child_joints_position_channels(tmp_path):
  """A static root above Hips, whose own channels carry the walk."""
  text, fixed, source, _ = _cmu("07_01")
  names = ("joint_Root",) + fixed.names
  parents = (-1,) + tuple(p + 1 for p in fixed.parents)
  offsets = np.concatenate([np.zeros((1, 3)), fixed.offsets])
  offsets[1] = (70.9, 0.0, 0.0)  # 4 m in CMU units, overridden by channels
  values = np.concatenate([np.zeros((len(fixed.values), 3)), fixed.values],
                          axis=1)
  rewritten = write_bvh(names, parents, offsets, _channels(names, ("Hips",)),
                        values, fixed.frame_time)
  joint_map = _map(tmp_path)
  motion = _load(rewritten, joint_map)
  original = _load(text, joint_map, bvh.cmu_repair(CMU_ASFAMC))
  np.testing.assert_allclose(motion.root_translation,
                             original.root_translation, atol=1e-9)
  plan = retarget.make_plan(source.skeleton.scaled(joint_map.units_to_m),
                            joint_map.joints, "y", "x")
  path = fixed.values[::2, :3] * joint_map.units_to_m  # the 60 fps frames
  source_m = np.linalg.norm(np.diff(path, axis=0), axis=-1).sum()
  loaded_m = np.linalg.norm(np.diff(motion.root_translation, axis=0),
                            axis=-1).sum()
  print(f"07_01: pelvis travels {source_m:.3f} m in the source, "
        f"{loaded_m:.3f} m loaded, leg ratio {plan.scale:.4f}")
  assert source_m > 2.0
  assert loaded_m == pytest.approx(source_m * plan.scale, rel=1e-9)


def test_position_channels_replace_the_offset_axis_by_axis():
  text = write_bvh(
      ("Root", "Child"), (-1, 0), np.array([[0.0, 0, 0], [4.0, 5.0, 6.0]]),
      [("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation",
        "Yrotation"), ("Yposition", "Zrotation", "Xrotation", "Yrotation")],
      np.array([[1.0, 2.0, 3.0, 0, 0, 0, -7.0, 0, 0, 0],
                [1.0, 2.0, 3.0, 90.0, 0, 0, 8.0, 0, 0, 0]]), 0.5)
  source = bvh.to_source(bvh.parse_bvh(text), 0.5, "y")
  _, points = source.source_pose()
  np.testing.assert_allclose(points[:, 0], [[0.5, 1.0, 1.5]] * 2)
  # Child: OFFSET x and z, the channel's y; the root's Z turn takes +X to +Y.
  np.testing.assert_allclose(points[:, 1] - points[:, 0],
                             [[2.0, -3.5, 3.0], [-4.0, 2.0, 3.0]], atol=1e-12)


# --- Bad maps: named errors, no traceback ------------------------------------


def _tiny_map(tmp_path, reference, text=None):
  names = {n: n for n in skeleton_lib.JOINT_NAMES}
  path = tmp_path / "tiny.json"
  path.write_text(json.dumps({"joints": names, "units_to_m": 1.0, "up": "y",
                              "reference": reference}))
  if text is not None:
    (tmp_path / "ref.bvh").write_text(text)
  return path


def _canonical_text(frames=3, rename=None, offsets_scale=1.0):
  """The canonical body as a BVH (metres, Y up), random small rotations."""
  body = skeleton_lib.SMPL_NEUTRAL
  names = [rename.get(n, n) if rename else n for n in body.names]
  rng = np.random.default_rng(0)
  values = np.concatenate([rng.uniform(-0.2, 0.2, (frames, 3)),
                           rng.uniform(-30, 30, (frames, 3 * len(names)))],
                          axis=1)
  values[:, 1] += 0.9
  order = _depth_first(body.parents)
  return write_bvh([names[j] for j in order],
                   [order.index(body.parents[j]) if body.parents[j] >= 0
                    else -1 for j in order],
                   body.offsets[order] * offsets_scale,
                   _channels([names[j] for j in order], names[:1]),
                   values, 1 / 60)


def _depth_first(parents):
  order = []

  def visit(j):
    order.append(j)
    for c, p in enumerate(parents):
      if p == j:
        visit(c)

  visit(0)
  return order


@pytest.mark.parametrize("reference, ref_text, problem", [
    ({"frame": -1}, None, '"reference" must be'),
    ({"frame": 1.5}, None, '"reference" must be'),
    ({"frame": 0, "file": "x.bvh"}, None, '"reference" must be'),
    ({"bvh": "absent.bvh", "frame": 0}, None,
     "reference file 'absent.bvh': .*absent.bvh: cannot read"),
    ({"bvh": "ref.bvh", "frame": 3}, _canonical_text(),
     r"reference frame 3 is out of range: reference file .*ref\.bvh has 3 "
     r"frame\(s\)"),
    ({"bvh": "ref.bvh", "frame": 0}, "not a bvh",
     "reference file 'ref.bvh': .*not a BVH file"),
])
def test_bad_reference_in_the_map(tmp_path, reference, ref_text, problem):
  path = _tiny_map(tmp_path, reference, ref_text)
  with pytest.raises(motion_lib.MotionError, match=f"tiny.json: {problem}"):
    bvh.load_joint_map(path)


@pytest.mark.parametrize("reference, ref_text, problem", [
    ({"frame": 3}, None,
     r"clip\.bvh: reference frame 3 is out of range: this file has 3"),
    ({"bvh": "ref.bvh", "frame": 0}, _canonical_text(offsets_scale=1.1),
     r"clip\.bvh: the reference file .*ref\.bvh of joint map .*tiny\.json "
     r"has another skeleton than this file: joint 'left_hip' has OFFSET"),
    ({"bvh": "ref.bvh", "frame": 0},
     _canonical_text(rename={"head": "Head"}),
     r"has another skeleton than this file: joints \["),
])
def test_reference_that_does_not_fit_the_clip(tmp_path, reference, ref_text,
                                              problem):
  joint_map = bvh.load_joint_map(_tiny_map(tmp_path, reference, ref_text))
  with pytest.raises(motion_lib.MotionError, match=problem):
    bvh.load_bvh(_canonical_text(), joint_map, clip_id="t/c", subject="t/s",
                 source="t", name="clip.bvh")


def test_reference_frame_that_is_no_standing_pose(tmp_path):
  text = _canonical_text()
  lying = text.split("\n")
  first = lying.index("MOTION") + 3
  row = lying[first].split()
  row[3:6] = ["0", "0", "90"]  # Z, Y, X rotation: lying on its back
  lying[first] = " ".join(row)
  joint_map = bvh.load_joint_map(_tiny_map(tmp_path, {"frame": 0}))
  with pytest.raises(motion_lib.MotionError,
                     match=r"clip\.bvh: the reference pose \(frame 0 of this "
                     r"file\) is not a standing body pose: its legs do not "
                     r"point down"):
    bvh.load_bvh("\n".join(lying), joint_map, clip_id="t/c", subject="t/s",
                 source="t", name="clip.bvh")


# --- Presets ------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["mixamo", "generic"])
def test_preset_loads_a_bvh_in_its_naming(preset):
  """The canonical body written with the preset's names (and units, and
  its unmapped joints left out) follows its source bone for bone."""
  joint_map = bvh.load_joint_map(preset)
  for name, source in joint_map.joints.items():
    for side in ("left", "right"):
      if name.startswith(side + "_"):
        assert side.title() in source, (name, source)
  body = skeleton_lib.SMPL_NEUTRAL
  kept = [j for j, n in enumerate(body.names) if joint_map.joints[n]]
  offsets = body.offsets.copy()
  parents = list(body.parents)
  for j, name in enumerate(body.names):
    if not joint_map.joints[name]:  # children hang from the grandparent
      for c in body.children(j):
        offsets[c] += offsets[j]
        parents[c] = parents[j]
  names = [joint_map.joints[body.names[j]] for j in kept]
  order = [kept[i] for i in _depth_first(
      [kept.index(parents[j]) if parents[j] >= 0 else -1 for j in kept])]
  rng = np.random.default_rng(1)
  values = np.concatenate([rng.uniform(-20, 20, (4, 3)),
                           rng.uniform(-30, 30, (4, 3 * len(kept)))], axis=1)
  values[:, 1] += 90.0
  text = write_bvh(
      [joint_map.joints[body.names[j]] for j in order],
      [order.index(parents[j]) if parents[j] >= 0 else -1 for j in order],
      offsets[order] / joint_map.units_to_m,
      _channels([joint_map.joints[body.names[j]] for j in order],
                (names[0],)), values, 1 / 60)
  motion = bvh.load_bvh(text, joint_map, clip_id="p/c", subject="p/s",
                        source="p", name=f"{preset}.bvh")
  source = bvh.to_source(bvh.parse_bvh(text), joint_map.units_to_m, "y")
  plan = retarget.make_plan(source.skeleton, joint_map.joints, "y", "x")
  angles = retarget.bone_angles(motion, source, plan)
  assert len(angles) >= 20
  assert max(a.max() for a in angles.values()) < 1e-4  # degrees
  _, points = motion.global_pose()
  head, pelvis = body.names.index("head"), 0
  assert (points[:, head, 2] > points[:, pelvis, 2]).all()
