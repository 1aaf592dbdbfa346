"""Keep freed host memory for reuse instead of returning it to the kernel.

XLA on CPU allocates each execution's temporaries as one large block (about
280 MB for one MLP block's forward and backward at batch 256, several GB for
a whole train step). glibc serves any block over its mmap threshold (32 MB at
most) with a fresh `mmap` and unmaps it when it is freed, so every step
first-touches its whole working set again: measured here, 73,000 page faults
per MLP-block step and about a third of the step's CPU time in the kernel.
Serving large blocks from one heap that is never trimmed removes that
(benchmarks/README.md has the numbers).

Call `reuse_freed_memory()` at the start of a program, before JAX runs
anything: the arena limit only applies to threads that have not allocated
yet. The price is that the process keeps its peak heap until it exits, which
is what a training or benchmark process wants. Set MEMMLP_KEEP_HOST_MEMORY=0
to leave the allocator alone.
"""

import ctypes
import ctypes.util
import os

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# mallopt takes an int; glibc stores it as a size_t, so -1 is "never".
_TRIM_NEVER = -1
_TOP_PAD = 512 * 2**20  # grow the heap in 512 MiB steps.


def reuse_freed_memory() -> bool:
  """Sets glibc to serve every block from one untrimmed heap.

  Returns True if the settings were applied, False where they do not apply
  (not glibc, or disabled with MEMMLP_KEEP_HOST_MEMORY=0).
  """
  if os.environ.get("MEMMLP_KEEP_HOST_MEMORY", "1") == "0":
    return False
  name = ctypes.util.find_library("c")
  if name is None:
    return False
  try:
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl, macOS: no mallopt.
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  settings = ((_M_MMAP_MAX, 0),  # no block of its own mapping...
              (_M_ARENA_MAX, 1),  # ...so all threads share the main heap,
              (_M_TRIM_THRESHOLD, _TRIM_NEVER),  # which is not handed back,
              (_M_TOP_PAD, _TOP_PAD))
  return all(mallopt(param, value) == 1 for param, value in settings)
