"""memmlp_jax.render: GIF panels at 640 px, a camera that follows, devices."""

import numpy as np
from PIL import Image
import pytest

from memmlp_jax import render
from memmlp_jax import skeleton as skeleton_lib

BODY = skeleton_lib.SMPL_NEUTRAL


def _walk(frames, speed=1.0):
  """The canonical body standing, sliding along +x at ``speed`` m/s."""
  rest = BODY.rest_positions() @ skeleton_lib.Y_UP_TO_Z_UP.T
  rest[:, 2] -= rest[:, 2].min()
  x = speed * np.arange(frames) / 60.0
  return rest[None] + np.stack([x, 0 * x, 0 * x], -1)[:, None]


def _frames(path):
  with Image.open(path) as gif:
    out = []
    for k in range(gif.n_frames):
      gif.seek(k)
      out.append(np.asarray(gif.convert("RGB"), np.int32))
  return out


def _device_pixels(image):
  return int(np.all(np.abs(image - render.DEVICE_COLOR) < 30, -1).sum())


def test_two_panels_of_640_px_with_the_tracked_devices(tmp_path):
  walk = _walk(60)
  tracked = list(skeleton_lib.SPARSE_JOINTS)
  devices = (np.tile(np.eye(3), (60, 3, 1, 1)), walk[:, tracked])
  written = render.animate([walk, walk], BODY.parents,
                           str(tmp_path / "sub" / "w.gif"),
                           joint_names=BODY.names, titles=["a", "b"],
                           devices=devices, gif_fps=6)
  assert written == 6
  frames = _frames(tmp_path / "sub" / "w.gif")
  assert len(frames) == 6 and frames[0].shape == (640, 1280, 3)
  # Both panels show the devices; without them there are none.
  assert _device_pixels(frames[0][:, :640]) > 50
  assert _device_pixels(frames[0][:, 640:]) > 50
  render.animate([walk], BODY.parents, str(tmp_path / "plain.gif"),
                 joint_names=BODY.names)
  assert _device_pixels(_frames(tmp_path / "plain.gif")[0]) == 0
  # Left bones are drawn red, right bones blue.
  first = frames[0]
  for color in (render.LEFT_COLOR, render.RIGHT_COLOR):
    assert np.all(np.abs(first - color) < 40, -1).sum() > 200


def test_camera_follows_the_body_and_the_floor_slides(tmp_path):
  render.animate([_walk(120, speed=0.7)], BODY.parents,
                 str(tmp_path / "w.gif"), joint_names=BODY.names, gif_fps=2)
  first, last = _frames(tmp_path / "w.gif")[:2]
  body = lambda im: np.argwhere(np.all(np.abs(im - render.CENTER_COLOR) < 40,
                                       -1))
  # The body stays put in the picture (the camera follows it) ...
  np.testing.assert_allclose(body(first).mean(0), body(last).mean(0),
                             atol=3.0)
  # ... while the floor under it moves.
  floor = lambda im: np.all(np.abs(im - render.FLOOR_LINE) < 8, -1)
  assert (floor(first) != floor(last)).sum() > 500


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5, 3, 3)), "shape"),
    (np.full((5, 22, 3), np.nan), "non-finite"),
])
def test_bad_sequences_are_refused(tmp_path, bad, message):
  with pytest.raises(ValueError, match=message):
    render.animate([bad], BODY.parents, str(tmp_path / "x.gif"))
