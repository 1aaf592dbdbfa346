"""Tests for memmlp_jax.data.download against a local CMU look-alike server.

The server on 127.0.0.1 answers the CMU site's URLs
(``/subjects/NN/NN.asf``, ``/subjects/NN/NN_TT.amc``) with the files of the
shared data's per-subject zips.
"""

import contextlib
import http.server
import os
import pathlib
import threading
import zipfile

import numpy as np
import pytest

from memmlp_jax.data import asfamc
from memmlp_jax.data import download

DATA = pathlib.Path(__file__).resolve().parent.parent / os.environ.get(
    "MEMMLP_DATA", "../shared/data")
CMU = DATA / "cmu_mocap_asfamc"
pytestmark = pytest.mark.skipif(not CMU.is_dir(),
                                reason=f"no CMU data at {CMU}")


class _CmuHandler(http.server.BaseHTTPRequestHandler):
  """Serves /subjects/<NN>/<file> from <data>/cmu_mocap_asfamc/subjects/NN.zip."""
  requests = []
  broken = set()  # paths answered with an HTML page instead of the file

  def do_GET(self):  # pylint: disable=invalid-name
    self.requests.append(self.path)
    parts = self.path.strip("/").split("/")
    body = None
    if len(parts) == 3 and parts[0] == "subjects":
      zip_path = CMU / "subjects" / f"{parts[1]}.zip"
      with contextlib.suppress(OSError, KeyError):
        with zipfile.ZipFile(zip_path) as archive:
          body = archive.read(parts[2])
    if self.path in self.broken:
      body = b"<html><body>Service unavailable</body></html>"
    if body is None:
      self.send_error(404, "Not Found")
      return
    self.send_response(200)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):
    del args


@pytest.fixture(name="server_url")
def fixture_server_url():
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CmuHandler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  _CmuHandler.requests = []
  _CmuHandler.broken = set()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}/subjects"
  finally:
    server.shutdown()
    server.server_close()


def test_download_matches_the_shared_copy_and_loads_the_same(tmp_path,
                                                             server_url):
  folder = tmp_path / "cmu_mocap_asfamc"
  download.fetch_cmu_asfamc(str(folder), ["02_01", "02_03", "93_06"],
                            server_url, log=lambda _: None)
  for subject, members in (("02", ["02.asf", "02_01.amc", "02_03.amc"]),
                           ("93", ["93.asf", "93_06.amc"])):
    with zipfile.ZipFile(folder / "subjects" / f"{subject}.zip") as got, \
        zipfile.ZipFile(CMU / "subjects" / f"{subject}.zip") as shared:
      assert sorted(got.namelist()) == members
      for name in members:
        assert got.read(name) == shared.read(name)
  assert not (tmp_path / "cmu_mocap_asfamc.partial").exists()
  got = {c.clip_id: c for c in asfamc.iter_clips(folder)}
  assert sorted(got) == ["cmu/02_01", "cmu/02_03", "cmu/93_06"]
  shared = {c.clip_id: c for c in asfamc.iter_clips(CMU)}
  a, b = got["cmu/02_01"].load(), shared["cmu/02_01"].load()
  np.testing.assert_array_equal(a.local_rotations, b.local_rotations)
  np.testing.assert_array_equal(a.root_translation, b.root_translation)


def test_ensure_downloads_the_free_split_clips_only_when_absent(
    tmp_path, server_url, monkeypatch):
  monkeypatch.setattr(download, "free_cmu_trials", lambda _: ["93_06"])
  folder = download.ensure_cmu_asfamc(str(tmp_path), server_url,
                                      log=lambda _: None)
  assert os.listdir(os.path.join(folder, "subjects")) == ["93.zip"]
  assert _CmuHandler.requests == ["/subjects/93/93.asf",
                                  "/subjects/93/93_06.amc"]
  download.ensure_cmu_asfamc(str(tmp_path), server_url, log=lambda _: None)
  assert len(_CmuHandler.requests) == 2  # present now: nothing fetched


def test_free_split_names_the_shared_cmu_clips():
  trials = download.free_cmu_trials(download.protocols.FREE_SPLIT_FILE)
  with open(CMU / "clips.tsv", encoding="utf-8") as f:
    shared = sorted(line.split("\t")[1][:-len(".amc")]
                    for line in f.read().splitlines()[1:])
  assert trials == shared


def test_missing_file_names_the_url_and_leaves_no_partial_zip(tmp_path,
                                                              server_url):
  folder = tmp_path / "cmu_mocap_asfamc"
  with pytest.raises(download.DownloadError,
                     match=r"/subjects/02/02_99\.amc: HTTP 404"):
    download.fetch_cmu_asfamc(str(folder), ["02_01", "02_99"], server_url,
                              log=lambda _: None)
  assert not folder.exists()
  assert os.listdir(tmp_path / "cmu_mocap_asfamc.partial" / "subjects") == []


def test_html_instead_of_data_is_refused(tmp_path, server_url):
  _CmuHandler.broken = {"/subjects/93/93_06.amc"}
  with pytest.raises(download.DownloadError, match="not an AMC file"):
    download.fetch_cmu_asfamc(str(tmp_path / "c"), ["93_06"], server_url,
                              log=lambda _: None)


def test_interrupted_download_resumes(tmp_path, server_url):
  folder = tmp_path / "cmu_mocap_asfamc"
  with pytest.raises(download.DownloadError):
    download.fetch_cmu_asfamc(str(folder), ["93_06", "99_01"], server_url,
                              log=lambda _: None)
  fetched = len(_CmuHandler.requests)
  download.fetch_cmu_asfamc(str(folder), ["93_06"], server_url,
                            log=lambda _: None)
  assert len(_CmuHandler.requests) == fetched  # 93 was kept, not refetched
  assert (folder / "subjects" / "93.zip").is_file()


def test_unreachable_server(tmp_path):
  with pytest.raises(download.DownloadError, match="cannot download"):
    download.fetch_cmu_asfamc(str(tmp_path / "c"), ["93_06"],
                              "http://127.0.0.1:9/subjects", timeout=5,
                              log=lambda _: None)
