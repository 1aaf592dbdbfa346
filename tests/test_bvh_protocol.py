"""Training on one's own BVH folder: the bvh protocol and fine-tuning.

The folder holds real CMU clips rewritten to a collinear rest pose (every
OFFSET on its parent's X axis), as some datasets in the wild are, so they
need the joint map's reference pose, kept in another folder.
"""

import json

import jax
import numpy as np
import pytest

from memmlp_jax import losses
from memmlp_jax import train
from memmlp_jax.data import bvh
from memmlp_jax.data import prepared
from memmlp_jax.data import protocols
from memmlp_jax.models import configs
import test_bvh_rest_pose as rest_pose

CLIPS = ("09_01", "09_02", "09_03", "09_04")  # runs, ~70 frames at 60 fps


@pytest.fixture(scope="module")
def folder_and_map(tmp_path_factory):
  if not rest_pose.CMU_BVH.is_dir():
    pytest.skip(f"no mocap data in {rest_pose.DATA}")
  root = tmp_path_factory.mktemp("own")
  folder, maps = root / "capture", root / "maps"
  folder.mkdir()
  maps.mkdir()
  for clip in CLIPS:
    _, fixed, source, _ = rest_pose._cmu(clip)
    turns = rest_pose._along_x(fixed)
    (folder / f"{clip}.bvh").write_text(rest_pose.turned_frames(
        fixed, source.local_rotations, source.root_translation, turns))
  identity = np.tile(np.eye(3), (1, len(fixed.names), 1, 1))
  (maps / "tpose.bvh").write_text(rest_pose.turned_frames(
      fixed, identity, np.zeros((1, 3)), turns))
  data = json.loads(bvh.CMU_MAP.read_text())
  data["reference"] = {"bvh": "tpose.bvh", "frame": 0}
  (maps / "map.json").write_text(json.dumps(data))
  return str(folder), str(maps / "map.json")


def test_split_by_file_seeded_and_in_the_manifest(folder_and_map, tmp_path):
  folder, map_path = folder_and_map
  out = prepared.ensure_prepared("bvh", folder, str(tmp_path / "prep"),
                                 bvh_map=map_path, split_seed=3, workers=1,
                                 log=lambda _: None)
  manifest = prepared.load_manifest(out)
  split = manifest["split"]
  assert (split["by"], split["seed"], split["map"]) == ("file", 3, map_path)
  assert sorted(split["train"] + split["test"]) == [f"bvh/{c}" for c in CLIPS]
  assert len(split["test"]) == 1 and not manifest["skipped"]
  assert manifest["train"]["clips"] == 3 and manifest["test"]["clips"] == 1
  again = protocols.build("bvh", folder, bvh_map=map_path, split_seed=3)
  assert [c.clip_id for c in again.test] == split["test"]
  tests = {protocols.build("bvh", folder, bvh_map=map_path,
                           split_seed=s).test[0].clip_id for s in range(8)}
  assert len(tests) > 1  # the seed chooses


def test_bad_bvh_protocol_input_is_named(folder_and_map, tmp_path):
  folder, _ = folder_and_map
  with pytest.raises(protocols.ProtocolError, match="needs a joint map"):
    protocols.build("bvh", folder)
  with pytest.raises(protocols.ProtocolError,
                     match=r"nothing\.json: cannot read"):
    protocols.build("bvh", folder, bvh_map=str(tmp_path / "nothing.json"))
  with pytest.raises(protocols.ProtocolError, match="no .bvh files"):
    protocols.build("bvh", str(tmp_path), bvh_map="cmu_bvh")


@pytest.mark.slow  # end to end: prepare the folder, train, fine-tune
def test_train_then_fine_tune_on_the_folder(folder_and_map, tmp_path):
  folder, map_path = folder_and_map
  out = prepared.ensure_prepared("bvh", folder, str(tmp_path / "prep"),
                                 bvh_map=map_path, workers=1,
                                 log=lambda _: None)
  train_split = prepared.load_split(out, "train")
  cfg = configs.get_config("memmlp41", window=8, latent_dim=16, num_blocks=2,
                           head_blocks=1, memory_dim=8, use_vq_code=False)
  options = dict(model=cfg, protocol="bvh", steps=2, batch_size=4,
                 vq_steps=2, vq_batch_size=4, checkpoint_every=2,
                 log_every=1, eval_every=2, eval_batches=0)
  first = str(tmp_path / "first")
  train.train(train.RunConfig(learning_rate=1e-2, final_learning_rate=1e-2,
                              **options), first, train_split)
  _, trained = train.restore(first)
  # Fine-tuning at a vanishing learning rate stays where the run ended,
  # far from where a fresh run of the same seed starts.
  tuned = train.train(
      train.RunConfig(learning_rate=1e-9, final_learning_rate=1e-9,
                      **options), str(tmp_path / "tuned"), train_split,
      start_params={"model": trained, "loss": losses.init_log_vars(cfg)})
  fresh = jax.jit(train.init_memmlp_params, static_argnums=0)(
      cfg, jax.random.PRNGKey(0))
  gap = lambda a, b: max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), a, b)))
  assert gap(tuned["model"], trained) < 1e-6
  assert gap(trained, fresh["model"]) > 1e-3
