"""notebooks/quickstart.ipynb runs top to bottom on a tiny trained run.

The run is the session's tiny_run (tests/conftest.py): experiments/flags/
tiny.flags on the free protocol restricted to two CMU subjects, as a new
user's first run would be.
"""

import pathlib

import nbclient
import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_executes(small_free, tiny_run, tmp_path,
                                      monkeypatch):
  data_dir, _ = small_free
  workdir = tiny_run
  monkeypatch.setenv("MEMMLP_WORKDIR", str(workdir))
  monkeypatch.setenv("MEMMLP_DATA", str(data_dir))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Errors stay in the cells' outputs (not raised) so the check below sees
  # them, with their tracebacks in its message.
  nbclient.NotebookClient(
      notebook, timeout=600, kernel_name="python3", allow_errors=True,
      resources={"metadata": {"path": str(tmp_path)}}).execute()

  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.outputs]
  errors = [f"{o.ename}: {o.evalue}" for o in outputs
            if o.output_type == "error"]
  assert not errors, errors
  text = "".join(o.get("text", "") for o in outputs)
  assert "cmu/02_01" in text and "ms per frame" in text
  assert "MPJPE" in text
  images = [o for o in outputs if o.output_type == "display_data"]
  assert any("image/png" in o.data for o in images)  # per-joint errors
  assert any("image/gif" in o.data for o in images)  # the animation
  assert (tmp_path / "quickstart.gif").stat().st_size > 0
