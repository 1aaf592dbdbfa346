"""Where training metrics go: a CSV file, TensorBoard, the log.

TensorBoard event files are written by the `tensorboard` package's own writer,
which needs no TensorFlow (clu's writers import TensorFlow, which only the
`[export]` extra installs), so a plain `pip install -e .` trains.
"""

import csv
import os
import time

from absl import logging


class CsvWriter:
  """Scalars to a CSV file (step, name, value), appending across restarts.

  Rows after `resume_step` (written by a run that was then killed before its
  next checkpoint) are dropped on open, so the file never holds a step twice.
  """

  def __init__(self, path: str, resume_step: int = 0):
    self._path = path
    rows = []
    if os.path.exists(path):
      with open(path, newline="") as f:
        rows = [r for r in csv.reader(f)][1:]
      rows = [r for r in rows if int(r[0]) <= resume_step]
    with open(path, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["step", "name", "value"])
      writer.writerows(rows)

  def write_scalars(self, step, scalars):
    with open(self._path, "a", newline="") as f:
      writer = csv.writer(f)
      for name, value in sorted(scalars.items()):
        writer.writerow([int(step), name, float(value)])

  def close(self):
    pass


class TensorBoardWriter:
  """Scalars to an events.out.tfevents.* file in `logdir` (no TensorFlow)."""

  def __init__(self, logdir: str):
    from tensorboard import summary  # pylint: disable=g-import-not-at-top
    self._writer = summary.Writer(logdir)

  def write_scalars(self, step, scalars):
    for name, value in sorted(scalars.items()):
      self._writer.add_scalar(name, float(value), step=int(step))
    self._writer.flush()

  def close(self):
    self._writer.close()


class MultiWriter:
  """Writes to each of `writers`."""

  def __init__(self, writers):
    self._writers = list(writers)

  def write_scalars(self, step, scalars):
    for writer in self._writers:
      writer.write_scalars(step, scalars)

  def close(self):
    for writer in self._writers:
      writer.close()


class Progress:
  """Steps/s and the ETA between two logged steps, as `steps_per_sec`."""

  def __init__(self, name: str, start_step: int, num_steps: int):
    self._name = name
    self._num_steps = num_steps
    self._last = (start_step, time.monotonic())

  def __call__(self, step: int) -> dict:
    """Call after step `step` has finished (its outputs read)."""
    last_step, last_time = self._last
    now = time.monotonic()
    self._last = (step, now)
    if step <= last_step or now <= last_time:
      return {}
    rate = (step - last_step) / (now - last_time)
    logging.info("%s: %.3g steps/s, ETA %.0f min", self._name, rate,
                 (self._num_steps - step) / rate / 60)
    return {"steps_per_sec": rate}


def format_metrics(metrics: dict) -> str:
  return ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
