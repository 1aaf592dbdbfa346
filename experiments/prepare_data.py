r"""Prepares a protocol's train/test features as a memory-mappable dataset.

  python -m experiments.prepare_data --protocol=free \
      --data_dir=../shared/data --out=prepared/free \
      --preview=cmu/02_01 --preview_out=out/02_01.gif

AMASS protocols take the AMASS root as --data_dir and the user's SMPL-H
male model as --body_model (s1 also --lists_dir, e.g.
../shared/protocols/amass_s1). --protocol=bvh takes a folder of the user's
own BVH files as --data_dir and their joint map as --bvh_map (a JSON file or
a shipped map's name, docs/user_guide.md); its train/test split is by file,
seeded by --split_seed, and written to the prepared folder's manifest. A second run on unchanged sources reuses the
prepared folder. When the free CMU clips are absent from --data_dir they
are downloaded from the CMU site first.
"""

import collections
import os
import sys
import time

from absl import app
from absl import flags

from memmlp_jax import cli_flags
from memmlp_jax import viz
from memmlp_jax.data import download
from memmlp_jax.data import motion as motion_lib
from memmlp_jax.data import prepared
from memmlp_jax.data import protocols

_DEFAULT_DATA = os.environ.get(
    "MEMMLP_DATA", os.path.join(os.path.expanduser("~"), ".cache",
                                "memmlp_jax", "data"))

FLAGS = flags.FLAGS
_DEFAULTS = {
    **cli_flags.clip_source(protocol="free", data_dir=_DEFAULT_DATA,
                            reads_prepared=False),
    "out": cli_flags.define("string", "out", None,
                            "The prepared dataset folder."),
    "split_seed": cli_flags.define(
        "integer", "split_seed", protocols.BVH_SEED,
        "Protocol bvh: seed of the split by file."),
    "workers": cli_flags.define("integer", "workers", 2,
                                "Clip-loading processes."),
}
_DOWNLOAD = flags.DEFINE_bool(
    "download", True, "free: fetch the CMU clips from the CMU site if absent.")
_CMU_URL = flags.DEFINE_string("cmu_url", download.CMU_BASE_URL,
                               "Base URL of the CMU subjects' files.")
_PREVIEW = flags.DEFINE_string(
    "preview", None, "A clip id to render as an animated GIF, e.g. cmu/02_01.")
_PREVIEW_OUT = flags.DEFINE_string("preview_out", None,
                                   "The preview GIF (default: OUT/<clip>.gif).")


class _ProgressBar:
  """One line redrawn per clip on a terminal; a line per 10% otherwise."""

  def __init__(self, stream=sys.stderr, width: int = 30):
    self.stream = stream
    self.width = width
    self.start = time.perf_counter()
    self.tty = stream.isatty()
    self.skipped = 0
    self.last_decile = -1

  def __call__(self, done: int, total: int, clip_id: str, reason):
    if reason:
      self.skipped += 1
      self.stream.write(f"\nskipped {reason}\n" if self.tty else
                        f"skipped {reason}\n")
    filled = self.width * done // total
    line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
            f"clips, {self.skipped} skipped, "
            f"{time.perf_counter() - self.start:.0f} s  {clip_id}")
    if self.tty:
      self.stream.write("\r" + line[:110].ljust(110))
      if done == total:
        self.stream.write("\n")
    elif 10 * done // total > self.last_decile or done == total:
      self.last_decile = 10 * done // total
      self.stream.write(line + "\n")
    self.stream.flush()


def _render_preview(out_dir: str, clip_id: str, gif_path: str):
  for split in protocols.SPLITS:
    data = prepared.load_split(out_dir, split)
    if any(c.clip_id == clip_id for c in data.clips):
      positions = data.clip(clip_id)["pos"].reshape(-1, 22, 3)
      frames = viz.animate_skeletons(
          [positions], data.skeleton.parents, gif_path,
          joint_names=data.skeleton.names,
          titles=[f"{clip_id} ({split})"], fps=prepared.FPS)
      print(f"preview of {clip_id}: {frames} frames -> {gif_path}")
      return
  skipped = {s["clip"]: s["reason"]
             for s in prepared.load_manifest(out_dir)["skipped"]}
  if clip_id in skipped:
    raise app.UsageError(f"--preview: {clip_id} was skipped: "
                         f"{skipped[clip_id]}")
  raise app.UsageError(f"--preview: no clip {clip_id!r} in {out_dir}")


def main(argv):
  cli_flags.use_defaults(_DEFAULTS)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.protocol in ("s1", "s2", "s3") and not FLAGS.body_model:
    raise app.UsageError(f"--protocol={FLAGS.protocol} needs --body_model "
                         "(the SMPL-H male model.npz)")
  start = time.perf_counter()
  try:
    out_dir = prepared.ensure_prepared(
        FLAGS.protocol, FLAGS.data_dir, FLAGS.out,
        body_model=FLAGS.body_model, lists_dir=FLAGS.lists_dir,
        bvh_map=FLAGS.bvh_map, split_seed=FLAGS.split_seed,
        workers=FLAGS.workers, progress=_ProgressBar(),
        fetch_missing=_DOWNLOAD.value, cmu_base_url=_CMU_URL.value)
    manifest = prepared.load_manifest(out_dir)
  except (protocols.ProtocolError, prepared.PreparedError,
          download.DownloadError, motion_lib.MotionError) as e:
    raise app.UsageError(str(e)) from None
  print(f"timing: {FLAGS.protocol} ready in {out_dir} after "
        f"{time.perf_counter() - start:.1f} s")
  for split in protocols.SPLITS:
    print(f"{split}: {manifest[split]['clips']} clips, "
          f"{manifest[split]['frames']} frames at {manifest['fps']} fps")
  print(f"skipped: {len(manifest['skipped'])}")
  by_reason = collections.defaultdict(list)
  for entry in manifest["skipped"]:
    by_reason[entry["reason"]].append(entry["clip"])
  for reason, clips in by_reason.items():
    # Absent folders skip hundreds of clips for one reason: one line each.
    print(f"  {clips[0]}: {reason}" if len(clips) == 1 else
          f"  {len(clips)} clips ({clips[0]}, ...): {reason}")
  if _PREVIEW.value:
    gif_path = _PREVIEW_OUT.value or os.path.join(
        out_dir, _PREVIEW.value.replace("/", "_") + ".gif")
    _render_preview(out_dir, _PREVIEW.value, gif_path)


if __name__ == "__main__":
  cli_flags.require("out")
  app.run(main)
