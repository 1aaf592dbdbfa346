"""Runs an absl app's main in-process, as `python -m module ARGS` would.

  code, output = cli.run(experiments.evaluate, "--workdir=RUN", ...)

The flags are parsed and restored around the call (absl.testing.flagsaver);
the exit code and the text on stdout and stderr are what the program would
give: a UsageError exits 1 with its message, sys.exit("...") exits 1 with
the message, sys.exit(n) exits n. Any other exception propagates: a program
would print a traceback, and the test fails. One subprocess smoke test per
app still starts the real program (``program``), as does a test of an app
whose flags clash with another's in one process.
"""

import contextlib
import io
import pathlib
import subprocess
import sys
import types

from absl import app
from absl import flags
from absl.testing import flagsaver


def run(module: types.ModuleType, *args) -> tuple[int, str]:
  """(exit code, stdout + stderr) of module.main with ``args`` as flags."""
  output = io.StringIO()
  with flagsaver.flagsaver(), contextlib.redirect_stdout(output), \
      contextlib.redirect_stderr(output):
    try:
      argv = flags.FLAGS([module.__name__, *map(str, args)])
      module.main(argv)
      code = 0
    except flags.Error as e:  # what app.run reports for bad flag values
      print(f"FATAL Flags parsing error: {e}", file=output)
      code = 1
    except app.UsageError as e:
      print(f"FATAL Flags parsing error: {e}", file=output)
      code = e.exitcode
    except SystemExit as e:
      if isinstance(e.code, str):
        print(e.code, file=output)
        code = 1
      else:
        code = e.code or 0
  return code, output.getvalue()


REPO = pathlib.Path(__file__).resolve().parent.parent


def program(module: str, *args, timeout: float = 600
            ) -> subprocess.CompletedProcess:
  """``python -m module ARGS`` from the repository root (text output)."""
  return subprocess.run([sys.executable, "-m", module, *map(str, args)],
                        cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, check=False)
