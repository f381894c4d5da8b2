"""The host description every finished run and study records: fields, flags from /proc/cpuinfo, and
its one-line form in the report."""

from __future__ import annotations

from mnistlab.core import host

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse avx avx2 fma bmi2

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse avx avx2 fma bmi2
"""


def test_the_host_names_its_cpu_the_kernel_flags_it_has_and_torchs_choice(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(CPUINFO)
    monkeypatch.setattr(host, "Path", lambda _: fake)
    host.describe.cache_clear()
    try:
        got = host.describe()
    finally:
        host.describe.cache_clear()
    assert got["cpu"] == "AMD EPYC 7B13" and got["flags"] == ["avx2", "fma"]  # no AVX-512, no bf16
    assert got["cores"] >= 1 and got["kernels"] in ("DEFAULT", "AVX2", "AVX512") and got["torch"]
    line = host.summary_line(got)
    assert line.startswith("AMD EPYC 7B13 (avx2 fma), ") and line.endswith(f"kernels {got['kernels']}")


def test_a_host_without_cpuinfo_still_describes_itself(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "Path", lambda _: tmp_path / "missing")
    host.describe.cache_clear()
    try:
        got = host.describe()
    finally:
        host.describe.cache_clear()
    assert got["flags"] == [] and got["cpu"] and "no AVX2" in host.summary_line(got)
