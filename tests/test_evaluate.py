"""The evaluate CLI on real BVH clips with a tiny trained run; bad input."""

import json
import os
import shutil
import zipfile

from absl import app
from absl import flags
from absl.testing import flagsaver
import numpy as np
from PIL import Image
import pytest

from experiments import evaluate
from memmlp_jax import metrics
from memmlp_jax import train
from memmlp_jax.data import bvh
from memmlp_jax.data import prepared
from memmlp_jax.models import configs

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), os.environ.get("MEMMLP_DATA", "../shared/data"))
BVH_ZIP = os.path.join(DATA, "cmu_mocap_bvh", "subjects", "09.zip")
CLIPS = ("09_01.bvh", "09_02.bvh")  # runs, about 70 frames each at 60 fps
WINDOW = 8


@pytest.fixture(scope="module")
def bvh_dir(tmp_path_factory):
  if not os.path.exists(BVH_ZIP):
    pytest.skip(f"no mocap data at {DATA}")
  folder = tmp_path_factory.mktemp("bvh")
  with zipfile.ZipFile(BVH_ZIP) as z:
    for name in CLIPS:
      (folder / name).write_bytes(z.read(name))
  return str(folder)


@pytest.fixture(scope="module")
def clips(bvh_dir):
  loaded, skeleton, skipped = evaluate.bvh_clips(bvh_dir, str(bvh.CMU_MAP))
  assert not skipped and len(loaded) == 2
  return loaded, skeleton


@pytest.fixture(scope="module")
def run(tmp_path_factory, clips):
  """A tiny Mem-MLP trained for two steps on the clips: a real workdir."""
  loaded, skeleton = clips
  lengths = [len(c.sparse) for c in loaded]
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  split = prepared.Split(
      sparse=np.concatenate([c.sparse for c in loaded]),
      rot6d=np.concatenate([c.rot6d for c in loaded]),
      pos=np.concatenate([c.pos for c in loaded]),
      clips=[prepared.ClipSpan(c.name, "bvh", int(s), n)
             for c, s, n in zip(loaded, starts, lengths)],
      skeleton=skeleton)
  cfg = configs.get_config("memmlp41", window=WINDOW, latent_dim=16,
                           num_blocks=2, head_blocks=1, memory_dim=8,
                           vq_hidden=16, vq_codebook_size=8, vq_code_dim=4)
  config = train.RunConfig(model=cfg, steps=2, batch_size=4, vq_steps=2,
                           vq_batch_size=4, checkpoint_every=1, log_every=1,
                           eval_every=1, eval_batches=0)
  workdir = str(tmp_path_factory.mktemp("run"))
  train.train(config, workdir, split)
  return workdir


def _main(**flag_values):
  with flagsaver.flagsaver():
    flags.FLAGS(["evaluate"] + [f"--{k}={v}" for k, v in flag_values.items()])
    evaluate.main(["evaluate"])


def test_cli_writes_results_table_and_heatmap(run, bvh_dir, tmp_path,
                                              capsys):
  out = tmp_path / "results.json"
  _main(workdir=run, out=out, bvh_dir=bvh_dir, bvh_map=bvh.CMU_MAP)
  results = json.loads(out.read_text())
  for key in metrics.COLUMNS + ("gt_jitter", "sequences", "frames", "model",
                                "params", "gflops", "nan_frames", "timing"):
    assert key in results, key
  assert results["sequences"] == 2 and results["nan_frames"] == 0
  assert results["model"] == "memmlp41" and results["params"] > 0
  assert results["gflops"] > 0 and not results["ik"]
  for key in metrics.COLUMNS:
    assert np.isfinite(results[key]) and results[key] > 0
  assert len(results["per_sequence"][0]["per_joint"]) == 22
  table = (tmp_path / "results.md").read_text()
  assert table.startswith("| Method | MPJRE | MPJPE | MPJVE | Hand PE |")
  assert Image.open(tmp_path / "results.png").size[0] > 100
  printed = capsys.readouterr().out
  assert "| memmlp41 |" in printed and "timing: 2 sequences" in printed

  ik_out = tmp_path / "ik.json"
  _main(workdir=run, out=ik_out, bvh_dir=bvh_dir, bvh_map=bvh.CMU_MAP,
        ik=True)
  refined = json.loads(ik_out.read_text())
  assert refined["ik"] and "IK" in refined["mode"]
  assert refined["mpjpe"] != results["mpjpe"]


def test_workdir_without_checkpoint_is_a_usage_error(run, bvh_dir, tmp_path):
  with pytest.raises(app.UsageError, match="no run config"):
    _main(workdir=tmp_path, out=tmp_path / "r.json", bvh_dir=bvh_dir,
          bvh_map=bvh.CMU_MAP)
  untrained = tmp_path / "untrained"
  untrained.mkdir()
  shutil.copy(os.path.join(run, train.CONFIG_FILE), untrained)
  with pytest.raises(app.UsageError, match="no trained model checkpoint"):
    _main(workdir=untrained, out=tmp_path / "r.json", bvh_dir=bvh_dir,
          bvh_map=bvh.CMU_MAP)


def test_bvh_map_missing_a_joint_is_named(run, bvh_dir, tmp_path):
  data = json.loads(bvh.CMU_MAP.read_text())
  del data["joints"]["head"]
  bad_map = tmp_path / "no_head.json"
  bad_map.write_text(json.dumps(data))
  with pytest.raises(app.UsageError, match="no_head.json.*head"):
    _main(workdir=run, out=tmp_path / "r.json", bvh_dir=bvh_dir,
          bvh_map=bad_map)


def test_flag_combinations_are_checked(run, bvh_dir, tmp_path):
  with pytest.raises(app.UsageError, match="either --protocol"):
    _main(workdir=run, out=tmp_path / "r.json")
  with pytest.raises(app.UsageError, match="--bvh_map"):
    _main(workdir=run, out=tmp_path / "r.json", bvh_dir=bvh_dir)
  with pytest.raises(app.UsageError, match="offline"):
    _main(workdir=run, out=tmp_path / "r.json", bvh_dir=bvh_dir,
          bvh_map=bvh.CMU_MAP, offline=True)


def test_short_and_lost_sequences(run, clips):
  loaded, skeleton = clips
  cfg, params = train.restore(run)
  short = evaluate.Clip("short", *(x[:5] for x in (
      loaded[0].sparse, loaded[0].rot6d, loaded[0].pos)))  # < window
  tiny = evaluate.Clip("tiny", *(x[:3] for x in (
      loaded[0].sparse, loaded[0].rot6d, loaded[0].pos)))
  lost = evaluate.Clip("lost", loaded[1].sparse.copy(), loaded[1].rot6d,
                       loaded[1].pos)
  lost.sparse[10:13, 45:54] = np.nan  # the right hand's tracker drops out
  kept, skipped = evaluate.scorable([short, tiny, lost])
  assert [c.name for c in kept] == ["short", "lost"]
  assert skipped[0]["clip"] == "tiny" and "at least 4" in skipped[0]["reason"]
  summary, rows, _ = evaluate.evaluate(
      cfg, {"params": params}, kept, skeleton, use_ik=False, offline=False,
      tflite=None, lanes=2)
  assert [r["nan_frames"] for r in rows] == [0, 3]
  assert summary["nan_frames"] == 3
  assert all(np.isfinite(summary[k]) for k in metrics.COLUMNS)
