"""Fetches the free CMU ASF/AMC clips from the CMU site when they are absent.

A new user runs the free protocol without the shared data folder: the CMU
clips of the free split are downloaded from the official site
(``http://mocap.cs.cmu.edu/subjects/NN/NN.asf`` and ``.../NN_TT.amc``) into
``<data_dir>/cmu_mocap_asfamc/subjects/NN.zip``, the same layout as the
shared copy, so one loader reads both. Each zip is written atomically, the
folder gets its final name only when every subject is in, and a rerun
resumes where an interrupted one stopped. HDM05 and the CMU BVH conversion
are not on the CMU site; their clips are reported missing instead.
"""

import io
import os
import urllib.error
import urllib.request
import zipfile
from typing import Callable, Iterable

from memmlp_jax.data import protocols

CMU_BASE_URL = "http://mocap.cs.cmu.edu/subjects"
FOLDER = "cmu_mocap_asfamc"
_README = """\
# CMU Graphics Lab Motion Capture Database (ASF/AMC), downloaded

Fetched by memmlp_jax from {base_url}: one zip per subject
(`subjects/NN.zip` with `NN.asf` and its `NN_TT.amc` clips). Treat the clips
as 120 fps.

CMU's terms: "This dataset of motions is free for all uses." Acknowledge:
"The data used in this project was obtained from mocap.cs.cmu.edu. The
database was created with funding from NSF EIA-0196217."
"""


class DownloadError(OSError):
  """A file could not be fetched or is not what was expected."""


def _fetch(url: str, timeout: float) -> bytes:
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response:
      return response.read()
  except urllib.error.HTTPError as e:
    raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
  except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, "reason", e)
    raise DownloadError(f"{url}: cannot download ({reason})") from None


def _check(url: str, data: bytes, marker: bytes, kind: str):
  # A site answering 200 with an HTML error page must not become "data".
  if marker not in data[:65536]:
    raise DownloadError(f"{url}: not an {kind} file (no {marker.decode()} "
                        f"in the {len(data)} bytes received)")


def _subject_zip(subject: str, trials: list[str], base_url: str, out_path: str,
                 timeout: float):
  files = {}
  url = f"{base_url}/{subject}/{subject}.asf"
  files[f"{subject}.asf"] = _fetch(url, timeout)
  _check(url, files[f"{subject}.asf"], b":bonedata", "ASF")
  for trial in trials:
    url = f"{base_url}/{subject}/{trial}.amc"
    files[f"{trial}.amc"] = _fetch(url, timeout)
    _check(url, files[f"{trial}.amc"], b":DEGREES", "AMC")
  buffer = io.BytesIO()
  # Fast compression: the text shrinks ~3x at level 1 too.
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED,
                       compresslevel=1) as archive:
    for name, data in files.items():
      archive.writestr(name, data)
  tmp_path = f"{out_path}.tmp-{os.getpid()}"
  with open(tmp_path, "wb") as f:
    f.write(buffer.getvalue())
  os.replace(tmp_path, out_path)


def _has_members(path: str, names: Iterable[str]) -> bool:
  try:
    with zipfile.ZipFile(path) as archive:
      return set(names) <= set(archive.namelist())
  except (OSError, zipfile.BadZipFile):
    return False


def fetch_cmu_asfamc(folder: str, trials: Iterable[str],
                     base_url: str = CMU_BASE_URL, timeout: float = 60.0,
                     log: Callable[[str], None] = print) -> str:
  """Downloads CMU trials ("02_01", ...) into `folder` as per-subject zips.

  Subjects whose zip already holds all their trials are not fetched again.

  Returns:
    `folder`.

  Raises:
    DownloadError naming the URL and the problem.
  """
  by_subject: dict[str, list[str]] = {}
  for trial in sorted(set(trials)):
    by_subject.setdefault(trial.split("_")[0], []).append(trial)
  partial = folder + ".partial"
  subjects_dir = os.path.join(partial, "subjects")
  os.makedirs(subjects_dir, exist_ok=True)
  for number, (subject, subject_trials) in enumerate(by_subject.items(), 1):
    out_path = os.path.join(subjects_dir, f"{subject}.zip")
    wanted = [f"{subject}.asf"] + [f"{t}.amc" for t in subject_trials]
    if _has_members(out_path, wanted):
      continue
    log(f"downloading CMU subject {subject} ({len(subject_trials)} clips, "
        f"{number}/{len(by_subject)}) from {base_url}")
    _subject_zip(subject, subject_trials, base_url, out_path, timeout)
  with open(os.path.join(partial, "README.md"), "w", encoding="utf-8") as f:
    f.write(_README.format(base_url=base_url))
  os.replace(partial, folder)
  return folder


def free_cmu_trials(split_file: str) -> list[str]:
  """The CMU ASF/AMC trials ("02_01", ...) a free split file names."""
  split = protocols.read_split_file(split_file)
  return sorted(clip_id.split("/", 1)[1]
                for clips in split.values() for clip_id in clips
                if clip_id.split("/", 1)[0] == "cmu")


def ensure_cmu_asfamc(data_dir: str, base_url: str = CMU_BASE_URL,
                      log: Callable[[str], None] = print) -> str:
  """`<data_dir>/cmu_mocap_asfamc`, downloading the free clips if absent."""
  folder = os.path.join(data_dir, FOLDER)
  if not os.path.isdir(folder):
    log(f"{folder} is absent: fetching the free CMU clips")
    try:
      os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
      raise DownloadError(f"{data_dir}: cannot create the data folder "
                          f"({e.strerror})") from None
    fetch_cmu_asfamc(folder, free_cmu_trials(protocols.FREE_SPLIT_FILE),
                     base_url, log=log)
  return folder
