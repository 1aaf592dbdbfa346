"""benchmarks.tflite_latency: the host it names, the ratios it gives.

The benchmark runs as a program: its --quantize is a list, experiments.export's
an enum of the same name, so the two cannot share a process.
"""

import json

import pytest

import cli
from memmlp_jax import host_cpu

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16 amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8488C
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes asimddp i8mm
CPU implementer\t: 0x41
"""


def test_the_host_is_named_with_its_gemm_instructions():
  assert host_cpu.describe(X86) == {
      "cpu": "Intel(R) Xeon(R) Platinum 8488C",
      "instructions": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                       "amx_int8"]}
  arm = host_cpu.describe(ARM)
  assert arm["instructions"] == ["asimd", "asimddp", "i8mm"]
  assert arm["cpu"]  # the platform's name where cpuinfo has none
  assert host_cpu.describe("")["instructions"] == []


@pytest.mark.slow
def test_the_report_has_the_host_and_each_rows_ratios(tmp_path):
  out = tmp_path / "latency.json"
  result = cli.program("benchmarks.tflite_latency", "--models=avatarposer",
                       "--quantize=none,fp16", "--onnx=", "--frames=4",
                       "--rounds=2", "--warmup=1", f"--json_out={out}")
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(out.read_text())
  assert report["host"] == host_cpu.describe()
  assert report["peak_gflops"] > 0
  fp32, fp16 = report["models"]
  assert fp32["ms_ratio_vs"] == {
      "avatarposer/fp16": pytest.approx(fp16["ms_median"] / fp32["ms_median"])}
  assert fp16["ms_ratio_vs"] == {
      "avatarposer/none": pytest.approx(fp32["ms_median"] / fp16["ms_median"])}
  assert "Host: " in result.stdout
  assert "| avatarposer | fp16 |" in result.stdout
