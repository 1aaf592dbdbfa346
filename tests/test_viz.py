"""Tests for memmlp_jax.viz: GIFs of skeleton sequences."""

import numpy as np
from PIL import Image
import pytest

from memmlp_jax import viz

PARENTS = (-1, 0, 0, 1)
NAMES = ("pelvis", "left_hip", "right_hip", "left_knee")


def _walker(num_frames: int, speed: float = 1.0) -> np.ndarray:
  """A four-joint figure sliding along +x at `speed` m/s (60 fps)."""
  rest = np.array([[0, 0, 0.9], [0.1, 0, 0.85], [-0.1, 0, 0.85],
                   [0.1, 0, 0.45]])
  x = speed * np.arange(num_frames) / 60.0
  return rest[None] + np.stack([x, 0 * x, 0 * x], -1)[:, None]


def test_gif_has_expected_frames_and_moves(tmp_path):
  out = tmp_path / "sub" / "walk.gif"
  written = viz.animate_skeletons([_walker(60), _walker(30, 2.0)], PARENTS,
                                  str(out), joint_names=NAMES,
                                  titles=["a", "b"], gif_fps=6)
  assert written == 6  # 60 frames at 60 fps, every 10th.
  with Image.open(out) as gif:
    assert gif.n_frames == written
    assert gif.size[0] > gif.size[1]  # two panels side by side
    gif.seek(0)
    first = np.asarray(gif.convert("RGB"), dtype=np.int32)
    gif.seek(written - 1)
    last = np.asarray(gif.convert("RGB"), dtype=np.int32)
  assert np.abs(first - last).sum() > 0


def test_left_bones_red_right_blue():
  assert viz.bone_colors(NAMES) == [viz.CENTER_COLOR, viz.LEFT_COLOR,
                                    viz.RIGHT_COLOR, viz.LEFT_COLOR]


def test_max_frames_caps_long_clips(tmp_path):
  written = viz.animate_skeletons([_walker(600)], PARENTS,
                                  str(tmp_path / "long.gif"), gif_fps=30,
                                  max_frames=7)
  assert written == 7


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5, 3, 3)), "shape"),
    (np.full((5, 4, 3), np.nan), "non-finite"),
])
def test_bad_sequences_are_refused(tmp_path, bad, message):
  with pytest.raises(ValueError, match=message):
    viz.animate_skeletons([bad], PARENTS, str(tmp_path / "x.gif"))


def test_titles_must_match_sequences(tmp_path):
  with pytest.raises(ValueError, match="titles"):
    viz.animate_skeletons([_walker(5)], PARENTS, str(tmp_path / "x.gif"),
                          titles=["a", "b"])
