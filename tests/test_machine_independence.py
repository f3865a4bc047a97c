"""What a model learns must not depend on the machine it was trained on.

OpenBLAS picks its kernels by CPU (SSE3, AVX2, AVX-512, ...) and each sums in its own
order, so two machines fit ALS factors that differ in their last bits. A test that
asserts what a model learned passes on every machine only if that difference cannot
change the answer. The weekly-buyer test once passed on AVX2 machines and failed on
AVX-512 ones: the ranker had too little to learn from, so the last bits decided.

The tests marked ``learned`` are rerun here under every OpenBLAS kernel this CPU can
execute (``OPENBLAS_CORETYPE``), so CI on one machine catches what another would fail.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

ROOT = Path(__file__).resolve().parents[1]
# OpenBLAS kernel names and the CPU flag each needs (x86-64).
KERNELS = {"Prescott": "sse3", "Haswell": "avx2", "SkylakeX": "avx512f"}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _native_kernel() -> str | None:
    """The kernel numpy's OpenBLAS chose here; None when it is not an OpenBLAS that
    picks its kernel at run time."""
    for library in threadpool_info():
        if library.get("internal_api") == "openblas" and library.get("architecture"):
            return str(library["architecture"])
    return None


def _other_kernels() -> list[str]:
    native = _native_kernel()
    flags = _cpu_flags()
    return [name for name, flag in KERNELS.items() if flag in flags and name != native]


def _kernel_in(env: dict[str, str]) -> str | None:
    probe = (
        "import numpy, scipy.linalg;"
        "from threadpoolctl import threadpool_info as t;"
        "print(next((l['architecture'] for l in t() if l.get('internal_api') == 'openblas'"
        " and l.get('architecture')), ''))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip() or None


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="OpenBLAS kernel names are x86-64's"
)
def test_learned_tests_hold_under_every_blas_kernel_of_this_cpu() -> None:
    if _native_kernel() is None:
        pytest.skip("numpy's BLAS is not an OpenBLAS that picks its kernel at run time")
    kernels = _other_kernels()
    if not kernels:
        pytest.skip("this CPU runs no OpenBLAS kernel but its own")
    failures = []
    for kernel in kernels:
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel}
        assert _kernel_in(env) == kernel, f"OPENBLAS_CORETYPE={kernel} was not applied"
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "learned", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            failures.append(f"--- OPENBLAS_CORETYPE={kernel}\n{run.stdout[-3000:]}")
    assert not failures, "\n".join(failures)
