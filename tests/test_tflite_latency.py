"""benchmarks.tflite_latency: the host it names, the ratios it gives."""

import json

import pytest

from benchmarks import tflite_latency
import cli

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
  assert tflite_latency.host_cpu(X86) == {
      "cpu": "Intel(R) Xeon(R) Platinum 8488C",
      "instructions": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                       "amx_int8"]}
  arm = tflite_latency.host_cpu(ARM)
  assert arm["instructions"] == ["asimd", "asimddp", "i8mm"]
  assert arm["cpu"]  # the platform's name where cpuinfo has none
  assert tflite_latency.host_cpu("")["instructions"] == []


def test_each_row_gets_every_other_rows_ms_over_its_own():
  rows = tflite_latency.with_ratios([
      {"model": "a", "quantize": "none", "ms_median": 4.0},
      {"model": "a", "quantize": "int8", "ms_median": 2.0},
      {"model": "b", "quantize": "none", "ms_median": 3.0}])
  assert rows[0]["ms_ratio_vs"] == {"a/int8": 0.5, "b/none": 0.75}
  assert rows[1]["ms_ratio_vs"] == {"a/none": 2.0, "b/none": 1.5}
  assert set(rows[2]["ms_ratio_vs"]) == {"a/none", "a/int8"}


@pytest.mark.slow
def test_the_json_report_has_the_host_and_the_ratios(tmp_path):
  out = tmp_path / "latency.json"
  code, output = cli.run(tflite_latency, "--models=avatarposer",
                         "--quantize=none,fp16", "--onnx=", "--frames=4",
                         "--rounds=2", "--warmup=1", f"--json_out={out}")
  assert code == 0, output[-2000:]
  report = json.loads(out.read_text())
  assert report["host"] == tflite_latency.host_cpu()
  assert report["peak_gflops"] > 0
  fp32, fp16 = report["models"]
  assert fp32["ms_ratio_vs"] == {
      "avatarposer/fp16": pytest.approx(fp16["ms_median"] / fp32["ms_median"])}
  assert "Host: " in output and "| avatarposer | fp16 |" in output
