"""bench/speed.py --quick: runs (C engine, numpy engine, torch when installed, callgrind when
valgrind is installed) and prints one JSON object of the documented shape. No timing thresholds."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs the host C compiler")
def test_speed_quick_json_shape(tmp_path):
    out = tmp_path / "speed.json"
    env = dict(os.environ)
    env.setdefault("MICROTRAIN_CACHE", str(ROOT / "build" / "native"))
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--quick", "--out", str(out)],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    d = json.loads(p.stdout)
    assert json.loads(out.read_text()) == d
    assert d["quick"] is True
    for k in ("cpu", "gcc", "numpy", "torch"):
        assert k in d["machine"]
    assert d["method"]["qemu"] is None
    row = d["example_model"]["rows"]["sparse"]
    m = row["macs_per_step"]
    assert m["forward"] > 0 and m["backward_input"] > 0 and m["backward_weight"] > 0
    assert m["total"] == m["forward"] + m["backward_input"] + m["backward_weight"] + m["forward_gradient"]
    assert set(row["steps_per_s"]) == {"c", "numpy", "torch"}
    assert row["steps_per_s"]["c"] > 0 and row["steps_per_s"]["numpy"] > 0
    assert row["timing"]["c"]["steps"] == row["timing"]["numpy"]["steps"]
    assert row["ratios"]["c_over_numpy"] > 0
    assert row["qemu"] is None
    try:
        import torch  # noqa: F401
    except ImportError:
        assert row["steps_per_s"]["torch"] is None
    else:
        assert row["steps_per_s"]["torch"] > 0 and row["ratios"]["c_over_torch"] > 0
        assert row["timing"]["torch"]["steps"] == row["timing"]["c"]["steps"]
        assert row["torch"]["max_abs_logit_diff_vs_float_interpreter"] < 1e-4
        assert d["machine"]["torch_threads"] == 1
    if shutil.which("valgrind"):
        inst = row["instructions"]
        assert inst["instructions_per_step"] > 0
        assert inst["by_function_exclusive"] and all(f["percent"] >= 0 for f in inst["by_function_exclusive"])
    assert set(d["acceptance"]) >= {"example_sparse_c_over_torch", "example_sparse_c_over_numpy"}
