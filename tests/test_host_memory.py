"""memmlp_jax.host_memory: the allocator settings and their effect."""

import os
import subprocess
import sys
import textwrap

import pytest

from memmlp_jax import host_memory

# One large temporary block per call, written and freed, like an XLA step's.
_CHILD = textwrap.dedent("""
    import resource, sys
    from memmlp_jax import host_memory
    applied = host_memory.reuse_freed_memory()
    import ctypes, ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    def step():
      block = libc.malloc(64 * 2**20)
      ctypes.memset(block, 1, 64 * 2**20)
      libc.free(block)
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
      step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(applied, faults)
""")


def _run_child(keep: str) -> tuple[bool, int]:
  env = dict(os.environ, MEMMLP_KEEP_HOST_MEMORY=keep)
  out = subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  return out[0] == "True", int(out[1])


def test_freed_blocks_are_reused_without_page_faults():
  applied, faults = _run_child("1")
  if not applied:
    pytest.skip("not glibc: MEMMLP_KEEP_HOST_MEMORY has nothing to set")
  default_applied, default_faults = _run_child("0")
  assert not default_applied
  # glibc's default maps and unmaps the 64 MiB block on every call: at least
  # one fault per page each time, even with 2 MiB transparent huge pages.
  assert default_faults >= 5 * 64 // 2
  assert faults <= default_faults // 20


def test_disabled_by_environment(monkeypatch):
  monkeypatch.setenv("MEMMLP_KEEP_HOST_MEMORY", "0")
  assert host_memory.reuse_freed_memory() is False
