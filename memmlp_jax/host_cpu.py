"""Which CPU a measurement ran on, and the instructions that set GEMM speed.

Timings are only comparable within one host, and on this project's hosts
int8 against fp32 depends on the int8 instructions above all: with AMX or
AVX-512 VNNI an int8 GEMM is several times faster than an fp32 one, with
AVX2 alone barely faster (docs/export_notes.md, "Latency"). Benchmarks print
``describe()`` with their numbers.
"""

import platform

# /proc/cpuinfo flags (x86) and features (ARM) that decide how fast int8
# and fp32 GEMMs run.
GEMM_INSTRUCTIONS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                     "avx512_bf16", "avx512_fp16", "amx_int8", "asimd",
                     "asimddp", "i8mm")


def describe(cpuinfo: str | None = None) -> dict:
  """{"cpu": model name, "instructions": the GEMM_INSTRUCTIONS it has}.

  ``cpuinfo``: the text of /proc/cpuinfo (read here when None; where there
  is none, only the platform's processor name is known).
  """
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:
      cpuinfo = ""
  fields = {}
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    fields.setdefault(key.strip().lower(), value.strip())
  present = set((fields.get("flags") or fields.get("features") or "").split())
  cpu = (fields.get("model name") or fields.get("hardware")
         or platform.processor() or platform.machine())
  return {"cpu": cpu,
          "instructions": [i for i in GEMM_INSTRUCTIONS if i in present]}
