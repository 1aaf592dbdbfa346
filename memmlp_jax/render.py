"""Fast GIFs of bodies: orthographic projection drawn with numpy and PIL.

The matplotlib 3-D figure of memmlp_jax/viz.py takes about a second per
frame; this draws the same poses at 640 px per panel in a few milliseconds:

- every bone is a capsule (a thick round-capped segment, outlined), drawn
  far to near, shaded by depth; the head is a ball;
- the tracked devices (headset and controllers) are small oriented markers,
  a wedge pointing where the device points with a tick along its up;
- the camera follows the body's root over the floor (a grid with the
  body's shadow), so the body fills the panel;
- several sequences (prediction, ground truth) are panels side by side,
  each with its title.

Positions are the project's Z-up world in metres. Drawn at twice the size
and reduced, for smooth edges.
"""

import functools
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

LEFT_COLOR = (214, 69, 65)
RIGHT_COLOR = (52, 120, 198)
CENTER_COLOR = (90, 90, 96)
DEVICE_COLOR = (236, 164, 0)
DEVICE_OUTLINE = (120, 80, 0)
BACKGROUND = (250, 250, 247)
FLOOR_LINE = (214, 214, 208)
SHADOW = (200, 200, 194)
_SUPERSAMPLE = 2
_FLOOR_STEP = 0.5  # metres between grid lines
_VIEW_HEIGHT = 2.3  # metres of world shown top to bottom


def bone_colors(joint_names: Sequence[str]) -> list:
  """RGB of the bone ending at each joint: left red, right blue."""
  return [LEFT_COLOR if n.startswith("left") else
          RIGHT_COLOR if n.startswith("right") else CENTER_COLOR
          for n in joint_names]


def bone_radii(joint_names: Sequence[str]) -> np.ndarray:
  """Capsule radius (m) of the bone ending at each joint, by body part."""
  radii = []
  for name in joint_names:
    if any(k in name for k in ("spine", "neck", "pelvis", "collar")):
      radii.append(0.045)
    elif any(k in name for k in ("hip", "knee", "shoulder")):
      radii.append(0.035)
    else:
      radii.append(0.028)
  return np.asarray(radii)


def camera(azimuth: float, elevation: float) -> np.ndarray:
  """(3, 3) rows: the screen's right, up and the viewing direction (world).

  Azimuth is measured as matplotlib's 3-D axes measure it (degrees about +Z
  from +X to the camera), so the two renderers frame a body alike.
  """
  az, el = np.radians(azimuth), np.radians(elevation)
  to_camera = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                        np.sin(el)])
  forward = -to_camera
  right = np.cross(forward, [0.0, 0.0, 1.0])
  right /= np.linalg.norm(right)
  up = np.cross(right, forward)
  return np.stack([right, up, forward])


class _Panel:
  """Projects world points into one panel of ``size`` pixels."""

  def __init__(self, view: np.ndarray, size: int, center: np.ndarray):
    self.view, self.size, self.center = view, size, center
    self.scale = size / _VIEW_HEIGHT

  def project(self, points: np.ndarray):
    """(..., 3) -> pixel x, y (..., 2) and depth (...,) (larger = farther)."""
    local = (points - self.center) @ self.view.T
    xy = np.stack([self.size / 2 + local[..., 0] * self.scale,
                   self.size / 2 - local[..., 1] * self.scale], -1)
    return xy, local[..., 2]


@functools.lru_cache(maxsize=None)
def _font(size: int):
  return ImageFont.load_default(size=size)


def _shade(color, nearness: float):
  """Darker far away: nearness in [0, 1]."""
  k = 0.72 + 0.28 * nearness
  return tuple(int(c * k) for c in color)


def _capsule(draw, a, b, radius, fill, outline):
  for color, r in ((outline, radius + max(2.0, 0.15 * radius)), (fill, radius)):
    draw.line([tuple(a), tuple(b)], fill=color, width=int(round(2 * r)))
    for p in (a, b):
      draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=color)


def _draw_floor(draw, panel: _Panel, extent: float):
  cx, cy = panel.center[0], panel.center[1]
  start_x = np.floor((cx - extent) / _FLOOR_STEP) * _FLOOR_STEP
  start_y = np.floor((cy - extent) / _FLOOR_STEP) * _FLOOR_STEP
  count = int(2 * extent / _FLOOR_STEP) + 2
  for k in range(count):
    x, y = start_x + k * _FLOOR_STEP, start_y + k * _FLOOR_STEP
    for line in (((x, cy - extent, 0.0), (x, cy + extent, 0.0)),
                 ((cx - extent, y, 0.0), (cx + extent, y, 0.0))):
      xy, _ = panel.project(np.asarray(line))
      draw.line([tuple(xy[0]), tuple(xy[1])], fill=FLOOR_LINE,
                width=_SUPERSAMPLE)


def _draw_device(draw, panel: _Panel, rotation, position, pixel_scale):
  """Two wedges along the device's forward (+Z of its joint frame), one
  across it and one up, so it reads from any side."""
  left, up, forward = rotation[:, 0], rotation[:, 1], rotation[:, 2]
  tip = position + 0.14 * forward
  for side in (0.05 * left, 0.05 * up):
    xy, _ = panel.project(np.stack([tip, position + side, position - side]))
    draw.polygon([tuple(p) for p in xy], fill=DEVICE_COLOR,
                 outline=DEVICE_OUTLINE, width=max(1, int(pixel_scale)))


def render_frame(poses: Sequence[np.ndarray], parents: Sequence[int], *,
                 colors, radii, titles, view, size: int,
                 devices=None, extent: float = 1.6) -> Image.Image:
  """One frame: each pose (J, 3) in its panel; devices (rotations (D,3,3),
  positions (D,3)) drawn in every panel."""
  big = size * _SUPERSAMPLE
  image = Image.new("RGB", (size * len(poses), size))
  sub = Image.new("RGB", (big, big))  # one canvas, cleared per panel
  font = _font(14 * _SUPERSAMPLE)
  order_parents = np.asarray(parents)
  for k, (pose, title) in enumerate(zip(poses, titles)):
    center = np.array([pose[0, 0], pose[0, 1], _VIEW_HEIGHT / 2 - 0.15])
    panel = _Panel(view, big, center)
    sub.paste(BACKGROUND, (0, 0, big, big))
    d = ImageDraw.Draw(sub)
    _draw_floor(d, panel, extent)
    bones = np.arange(1, len(parents))
    # Shadows: the bones flattened onto the floor.
    flat = pose * [1.0, 1.0, 0.0]
    shadow_xy, _ = panel.project(flat)
    for j in bones:
      d.line([tuple(shadow_xy[order_parents[j]]), tuple(shadow_xy[j])],
             fill=SHADOW, width=int(2 * radii[j] * panel.scale))
    xy, depth = panel.project(pose)
    bone_depth = (depth[bones] + depth[order_parents[bones]]) / 2
    span = max(float(np.ptp(depth)), 1e-6)
    for j in bones[np.argsort(-bone_depth)]:
      nearness = (depth.max() - (depth[j] + depth[order_parents[j]]) / 2) / span
      _capsule(d, xy[order_parents[j]], xy[j], radii[j] * panel.scale,
               _shade(colors[j], nearness), (40, 40, 44))
    head = pose[15] + [0.0, 0.0, 0.08] if len(pose) > 15 else pose[-1]
    head_xy, _ = panel.project(head)
    r = 0.09 * panel.scale
    d.ellipse([head_xy[0] - r, head_xy[1] - r, head_xy[0] + r,
               head_xy[1] + r], fill=CENTER_COLOR, outline=(40, 40, 44),
              width=_SUPERSAMPLE * 2)
    if devices is not None:
      for rotation, position in zip(*devices):
        if np.isfinite(position).all() and np.isfinite(rotation).all():
          _draw_device(d, panel, rotation, position, _SUPERSAMPLE)
    if title:
      d.text((big / 2, 12 * _SUPERSAMPLE), title, fill=(30, 30, 30),
             font=font, anchor="mt")
    image.paste(sub.reduce(_SUPERSAMPLE), (k * size, 0))
  return image


def _palette(image: Image.Image) -> Image.Image:
  """One GIF palette for all frames: the first frame's colours, with every
  drawing colour and its depth shades sure to be in it."""
  swatch = [BACKGROUND, FLOOR_LINE, SHADOW, DEVICE_COLOR, DEVICE_OUTLINE]
  for color in (LEFT_COLOR, RIGHT_COLOR, CENTER_COLOR):
    swatch += [_shade(color, k / 7) for k in range(8)]
  strip = Image.new("RGB", (image.width, 8 * len(swatch)))
  for i, color in enumerate(swatch):
    strip.paste(color, (0, 8 * i, image.width, 8 * i + 8))
  both = Image.new("RGB", (image.width, image.height + strip.height))
  both.paste(image, (0, 0))
  both.paste(strip, (0, image.height))
  return both.quantize(colors=160, method=Image.Quantize.MEDIANCUT)


def checked_sequences(sequences, num_joints: int, titles=None):
  """(float64 (N, J, 3) arrays, one title each), or ValueError naming the
  sequence that is empty, mis-shaped or not finite."""
  sequences = [np.asarray(s, np.float64) for s in sequences]
  for i, seq in enumerate(sequences):
    if seq.ndim != 3 or seq.shape[1:] != (num_joints, 3) or not len(seq):
      raise ValueError(f"sequence {i} has shape {seq.shape}, expected "
                       f"(N>0, {num_joints}, 3)")
    if not np.isfinite(seq).all():
      raise ValueError(f"sequence {i} has non-finite positions")
  titles = list(titles) if titles is not None else [""] * len(sequences)
  if len(titles) != len(sequences):
    raise ValueError(f"{len(titles)} titles for {len(sequences)} sequences")
  return sequences, titles


def animate(sequences: Sequence[np.ndarray], parents: Sequence[int],
            out_path: str, *, joint_names: Optional[Sequence[str]] = None,
            titles: Optional[Sequence[str]] = None, devices=None,
            fps: float = 60.0, gif_fps: float = 15.0, max_frames: int = 300,
            size: int = 640, elevation: float = 20.0,
            azimuth: float = -70.0) -> int:
  """Writes an animated GIF of pose sequences side by side.

  Args:
    sequences: (N_i, J, 3) positions, Z up, metres; shorter ones hold their
      last frame.
    parents: J parent indices (root -1).
    out_path: the .gif to write (folders are created).
    joint_names: J names: sides choose colours, body parts capsule sizes.
    titles: one title per sequence.
    devices: optional (rotations (N, D, 3, 3), positions (N, D, 3)) of the
      tracked devices (canonical joint frames; NaN where lost), drawn in
      every panel.
    fps: frame rate of the sequences; gif_fps: of the GIF (subsampled).
    max_frames: cap on the GIF's frames (long clips show their start).
    size: pixels of each (square) panel.
    elevation, azimuth: the camera's direction in degrees.

  Returns:
    The number of frames written.
  """
  sequences, titles = checked_sequences(sequences, len(parents), titles)
  num_joints = len(parents)
  names = list(joint_names) if joint_names else [""] * num_joints
  colors, radii = bone_colors(names), bone_radii(names)
  stride = max(1, int(round(fps / gif_fps)))
  length = max(len(s) for s in sequences)
  frames = np.arange(0, length, stride)[:max_frames]
  view = camera(azimuth, elevation)
  images = []
  for f in frames:
    poses = [s[min(f, len(s) - 1)] for s in sequences]
    frame_devices = None
    if devices is not None:
      index = min(f, len(devices[0]) - 1)
      frame_devices = (devices[0][index], devices[1][index])
    images.append(render_frame(poses, parents, colors=colors, radii=radii,
                               titles=titles, view=view, size=size,
                               devices=frame_devices))
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  palette = _palette(images[0])
  quantized = [im.quantize(palette=palette, dither=Image.Dither.NONE)
               for im in images]
  quantized[0].save(out_path, save_all=True, append_images=quantized[1:],
                    duration=int(round(1000 / gif_fps)), loop=0,
                    optimize=False, disposal=1)
  return len(frames)
