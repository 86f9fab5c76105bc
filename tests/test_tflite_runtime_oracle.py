"""tests/test_tflite_exact.py again, with tflite-runtime 2.14 as the oracle.

tflite-runtime 2.14 (the interpreter TFLM users validate against, and whose reference int8
FULLY_CONNECTED is the integer kernel) only runs with numpy < 2, so it lives in its own venv,
``.venv-tflrt`` (``make oracle``). This test runs the whole exactness suite there, as a subprocess,
with ``MT_TFLITE_ORACLE=tflite_runtime``: the same derandomized hypothesis cases as the LiteRT run
in this venv. See docs/numerics.md ("Which interpreter").
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ORACLE_PY = REPO / ".venv-tflrt" / "bin" / "python"
TIMEOUT_S = 240

# Environment that must not leak from this interpreter (or from pytest-xdist) into the oracle venv.
_SCRUB = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__",
          "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST", "PYTEST_VERSION")


def _oracle_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _SCRUB and not k.startswith(("PYTEST_XDIST_", "COV_CORE_"))}
    env["MT_TFLITE_ORACLE"] = "tflite_runtime"
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no second writer of tests/__pycache__ next to this run
    env["PATH"] = os.pathsep.join([str(ORACLE_PY.parent), env.get("PATH", os.defpath)])
    return env


def _summary(output: str) -> dict[str, int]:
    """Counts from pytest's final line, e.g. ``1 failed, 18 passed, 2 skipped in 9.8s``."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip().strip("=").strip()
        if re.search(r"\bin [\d.]+s\b", line) and re.search(r"\d+ \w+", line):
            pairs = re.findall(r"(\d+) (\w+)", line.split(" in ")[0])
            return {{"errors": "error", "warnings": "warning"}.get(w, w): int(n) for n, w in pairs}
    return {}


@pytest.mark.slow
def test_exact_against_tflite_runtime_reference_kernels():
    if not ORACLE_PY.exists():
        msg = (f"{ORACLE_PY.relative_to(REPO)} not found: run `make oracle` to create the tflite-runtime 2.14 "
               "venv (numpy < 2) that tests/test_tflite_exact.py is also checked against")
        if os.environ.get("CI") or os.environ.get("MT_REQUIRE_TFLITE_RUNTIME") == "1":
            pytest.fail(msg)
        pytest.skip(msg)

    cmd = [str(ORACLE_PY), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_tflite_exact.py"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=_oracle_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"tflite-runtime oracle run exceeded {TIMEOUT_S} s: {' '.join(cmd)}\n...\n{out[-4000:]}")

    tail = "\n".join(proc.stdout.splitlines()[-60:])
    counts = _summary(proc.stdout)
    where = f"`MT_TFLITE_ORACLE=tflite_runtime {' '.join(cmd)}` (exit {proc.returncode}, {counts}):\n...\n{tail}"
    assert proc.returncode == 0, f"failed: {where}"
    assert counts.get("passed", 0) > 0, f"no passed tests reported: {where}"
    for bad in ("failed", "error", "skipped", "xfailed", "xpassed", "deselected"):
        assert counts.get(bad, 0) == 0, f"{counts[bad]} {bad}: every case must run and pass: {where}"
