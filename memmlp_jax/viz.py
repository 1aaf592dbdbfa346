"""Skeleton animations as GIFs, so a person can check motion by eye.

One or several pose sequences (N, J, 3) in the Z-up world (metres) are drawn
side by side, each in its own 3D panel that follows the sequence's root over
the floor (z = 0, drawn as a grid). Left-side bones are red, right-side blue,
the rest black, so mirrored limbs are easy to spot.
"""

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # Renders to files only; never needs a display.
from matplotlib import animation  # pylint: disable=g-import-not-at-top
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from memmlp_jax import render

LEFT_COLOR = "tab:red"
RIGHT_COLOR = "tab:blue"
CENTER_COLOR = "black"
_FLOOR_STEP = 0.5  # metres between floor grid lines


def bone_colors(joint_names: Sequence[str]) -> list[str]:
  """Colour of the bone ending at each joint, by the joint's side."""
  colors = []
  for name in joint_names:
    if name.startswith("left"):
      colors.append(LEFT_COLOR)
    elif name.startswith("right"):
      colors.append(RIGHT_COLOR)
    else:
      colors.append(CENTER_COLOR)
  return colors


def _frame_indices(num_frames: int, fps: float, gif_fps: float,
                   max_frames: int) -> np.ndarray:
  stride = max(1, int(round(fps / gif_fps)))
  return np.arange(0, num_frames, stride)[:max_frames]


def _panel_half_width(positions: np.ndarray) -> float:
  """Half-width of a panel's view: the body's largest reach from its root."""
  reach = np.linalg.norm(positions[..., :2] - positions[:, :1, :2], axis=-1)
  return max(1.0, float(reach.max()) + 0.2)


def _draw_floor(lines, cx: float, cy: float, half: float):
  """Grid lines at fixed world coordinates, so the floor slides as one moves."""
  num = len(lines) // 2
  x0 = np.floor((cx - half) / _FLOOR_STEP) * _FLOOR_STEP
  y0 = np.floor((cy - half) / _FLOOR_STEP) * _FLOOR_STEP
  for k in range(num):
    x = np.clip(x0 + k * _FLOOR_STEP, cx - half, cx + half)
    y = np.clip(y0 + k * _FLOOR_STEP, cy - half, cy + half)
    lines[k].set_data_3d([x, x], [cy - half, cy + half], [0.0, 0.0])
    lines[num + k].set_data_3d([cx - half, cx + half], [y, y], [0.0, 0.0])


def animate_skeletons(sequences: Sequence[np.ndarray],
                      parents: Sequence[int],
                      out_path: str,
                      *,
                      joint_names: Sequence[str] | None = None,
                      titles: Sequence[str] | None = None,
                      fps: float = 60.0,
                      gif_fps: float = 15.0,
                      max_frames: int = 300,
                      elevation: float = 12.0,
                      azimuth: float = -70.0) -> int:
  """Writes an animated GIF of skeleton sequences side by side.

  Args:
    sequences: pose sequences (N_i, J, 3), Z up, metres; shorter ones hold
      their last frame.
    parents: J parent indices (root -1).
    out_path: the .gif to write (folders are created).
    joint_names: J names; "left*"/"right*" choose the bone colours.
    titles: one title per sequence.
    fps: frame rate of the sequences.
    gif_fps: frame rate of the GIF (frames are subsampled to it).
    max_frames: cap on the GIF's frames (long clips show their start).
    elevation: camera elevation in degrees.
    azimuth: camera azimuth in degrees.

  Returns:
    The number of frames written.
  """
  sequences, titles = render.checked_sequences(sequences, len(parents), titles)
  num_joints = len(parents)
  colors = bone_colors(joint_names) if joint_names else (
      [CENTER_COLOR] * num_joints)

  frames = _frame_indices(max(len(s) for s in sequences), fps, gif_fps,
                          max_frames)
  fig = plt.figure(figsize=(4.0 * len(sequences), 4.4), dpi=90)
  fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=0.94, wspace=0.0)
  panels = []
  for k, (seq, title) in enumerate(zip(sequences, titles)):
    ax = fig.add_subplot(1, len(sequences), k + 1, projection="3d")
    ax.view_init(elev=elevation, azim=azimuth)
    ax.set_title(title, fontsize=9)
    ax.set_box_aspect((1.0, 1.0, 1.0), zoom=1.25)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
      axis.set_pane_color((1.0, 1.0, 1.0, 0.0))
    half = _panel_half_width(seq)
    top = max(2.0, float(seq[..., 2].max()) + 0.1)
    bottom = min(0.0, float(seq[..., 2].min()) - 0.1)
    half = max(half, (top - bottom) / 2)
    ax.set_zlim(bottom, bottom + 2 * half)
    ax.tick_params(labelsize=6)
    bones = [ax.plot([], [], [], color=colors[j], lw=2)[0]
             for j in range(1, num_joints)]
    num_lines = int(np.ceil(2 * half / _FLOOR_STEP)) + 1
    floor = [ax.plot([], [], [], color="0.6", lw=0.7)[0]
             for _ in range(2 * num_lines)]
    panels.append((ax, seq, half, bones, floor))

  def draw(frame):
    artists = []
    for ax, seq, half, bones, floor in panels:
      pose = seq[min(frame, len(seq) - 1)]
      cx, cy = pose[0, 0], pose[0, 1]
      ax.set_xlim(cx - half, cx + half)
      ax.set_ylim(cy - half, cy + half)
      _draw_floor(floor, cx, cy, half)
      for j, line in zip(range(1, num_joints), bones):
        p = pose[[parents[j], j]]
        line.set_data_3d(p[:, 0], p[:, 1], p[:, 2])
      artists += bones + floor
    return artists

  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  anim = animation.FuncAnimation(fig, draw, frames=frames, blit=False)
  anim.save(out_path, writer=animation.PillowWriter(fps=gif_fps))
  plt.close(fig)
  return len(frames)
