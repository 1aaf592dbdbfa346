"""notebooks/quickstart.ipynb runs top to bottom on a tiny trained run.

The run is trained here with experiments/flags/tiny.flags on the free
protocol restricted to two CMU subjects, as a new user's first run would be.
"""

import os
import pathlib
import subprocess
import sys

import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = (REPO / os.environ.get("MEMMLP_DATA", "../shared/data")).resolve()
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
SUBJECTS = ("02.zip", "35.zip")  # the notebook streams 02_01


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """(workdir, data_dir) of a run of the tiny flags on two CMU subjects."""
  if not (DATA / "cmu_mocap_asfamc").is_dir():
    pytest.skip(f"no mocap data at {DATA}")
  root = tmp_path_factory.mktemp("tiny")
  subjects = root / "data" / "cmu_mocap_asfamc" / "subjects"
  subjects.mkdir(parents=True)
  for name in SUBJECTS:
    (subjects / name).symlink_to(DATA / "cmu_mocap_asfamc" / "subjects" / name)
  workdir = root / "run"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       f"--flagfile={REPO / 'experiments' / 'flags' / 'tiny.flags'}",
       f"--data_dir={root / 'data'}", f"--prepared_dir={root / 'prepared'}",
       f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, root / "data"


def test_quickstart_notebook_executes(tiny_run, tmp_path, monkeypatch):
  workdir, data_dir = tiny_run
  monkeypatch.setenv("MEMMLP_WORKDIR", str(workdir))
  monkeypatch.setenv("MEMMLP_DATA", str(data_dir))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(
      notebook, timeout=600, kernel_name="python3",
      resources={"metadata": {"path": str(tmp_path)}}).execute()

  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs)
  assert "cmu/02_01" in text and "ms per frame" in text
  assert "MPJPE" in text
  images = [o for o in outputs if o.output_type == "display_data"]
  assert any("image/png" in o.data for o in images)  # per-joint errors
  assert any("image/gif" in o.data for o in images)  # the animation
  assert (tmp_path / "quickstart.gif").stat().st_size > 0
