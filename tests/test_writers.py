"""Training metrics: TensorBoard events without TensorFlow, CSV on resume."""

import subprocess
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from memmlp_jax import writers


def test_tensorboard_scalars_are_written_without_tensorflow(tmp_path):
  code = (
      "import sys; sys.modules['tensorflow'] = None\n"
      "from memmlp_jax import writers\n"
      f"w = writers.TensorBoardWriter({str(tmp_path)!r})\n"
      "w.write_scalars(3, {'train/loss': 1.5}); "
      "w.write_scalars(4, {'train/loss': 1.25}); w.close()\n")
  subprocess.run([sys.executable, "-c", code], check=True)
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  values = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
            for e in events.Tensors("train/loss")]
  assert values == [(3, 1.5), (4, 1.25)]


def test_csv_drops_rows_after_the_resumed_step(tmp_path):
  path = str(tmp_path / "metrics.csv")
  writer = writers.CsvWriter(path)
  for step in (10, 20, 30):
    writer.write_scalars(step, {"loss": step / 10})
  writers.CsvWriter(path, resume_step=20).write_scalars(30, {"loss": 9.0})
  with open(path) as f:
    assert f.read().splitlines() == ["step,name,value", "10,loss,1.0",
                                     "20,loss,2.0", "30,loss,9.0"]
