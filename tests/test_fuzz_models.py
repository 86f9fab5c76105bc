"""300 mutated model files through ``microtrain inspect`` (half with ``--json``): each one either
still reads (exit 0; one JSON object with ``--json``) or fails with exit 2 and exactly one ``error:`` line, never a traceback.

The frontends must raise MicrotrainError subclasses themselves: the CLI's catch-all for other
exceptions is a safety net, and this test fails if anything reached it, naming the exception
types and the mutations that produced them (frontend bugs surface here instead of hiding).
Deterministic (fixed seed), in-process, well under a minute.
"""
from __future__ import annotations

import collections
import json
import time

import numpy as np
from click.testing import CliRunner

from microtrain.host.cli import cli, observe_errors
from test_cli import EXAMPLE_ONNX, build_onnx_cnn, build_tflite_cnn

SEED = 20240611
N_CASES = 300
TIME_BUDGET_S = 60.0


def _sources() -> dict[str, bytes]:
    onnx_bytes = EXAMPLE_ONNX.read_bytes() if EXAMPLE_ONNX.exists() else build_onnx_cnn(seed=1)
    return {"onnx": onnx_bytes, "tflite": build_tflite_cnn(seed=1)}


def _mutations(sources: dict[str, bytes], rng: np.random.Generator):
    """Yield (label, filename, bytes). The mix is fixed by the seed."""
    kinds = ["truncate"] * 9 + ["flip"] * 9 + ["splice"] * 3 + ["garbage"] * 2 + ["wrong_ext"] * 2 + ["tfl3_garbage"]
    yield "empty", "empty.onnx", b""
    yield "empty", "empty.tflite", b""
    for i in range(N_CASES - 2):
        kind = kinds[int(rng.integers(len(kinds)))]
        fmt = "onnx" if rng.random() < 0.5 else "tflite"
        src = sources[fmt]
        ext = "." + fmt
        if kind == "truncate":
            cut = int(rng.integers(0, len(src)))
            data = src[:cut]
            label = f"{fmt} truncated at {cut}/{len(src)}"
        elif kind == "flip":
            buf = bytearray(src)
            n = int(rng.integers(1, 9))
            pos = rng.integers(0, len(buf), n)
            for p in pos:
                buf[p] = int(rng.integers(0, 256))
            data = bytes(buf)
            label = f"{fmt} {n} bytes replaced at {sorted(int(p) for p in pos)}"
        elif kind == "splice":
            a, b = sorted(int(x) for x in rng.integers(0, len(src), 2))
            at = int(rng.integers(0, len(src)))
            data = src[:at] + src[a:b] + src[at:]
            label = f"{fmt} chunk [{a}:{b}] inserted at {at}"
        elif kind == "garbage":
            n = int(rng.integers(1, 4096))
            data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            ext = [".onnx", ".tflite", ""][int(rng.integers(3))]
            label = f"{n} random bytes as {ext or 'no extension'}"
        elif kind == "tfl3_garbage":
            n = int(rng.integers(8, 2048))
            data = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            data[4:8] = b"TFL3"
            data = bytes(data)
            label = f"{n} random bytes with a TFL3 identifier"
        else:  # wrong_ext: a valid model under another extension
            other = {"onnx": [".tflite", ".bin", ".pb", ""], "tflite": [".onnx", ".bin", ""]}[fmt]
            ext = other[int(rng.integers(len(other)))]
            data = src
            label = f"valid {fmt} named {ext or 'without extension'}"
        yield label, f"case{i:03d}{ext}", data


def test_fuzz_models(tmp_path):
    rng = np.random.default_rng(SEED)
    runner = CliRunner()
    stats = collections.Counter()
    error_types = collections.Counter()
    leaked: list[str] = []  # non-microtrain exceptions that reached the CLI's catch-all
    bad_output: list[str] = []
    t0 = time.perf_counter()
    slowest = (0.0, "")
    for k, (label, name, data) in enumerate(_mutations(_sources(), rng)):
        path = tmp_path / name
        path.write_bytes(data)
        as_json = k % 2 == 0  # odd cases exercise the table renderer
        t = time.perf_counter()
        with observe_errors() as seen:
            r = runner.invoke(cli, ["inspect", str(path)] + (["--json"] if as_json else []))
        dt = time.perf_counter() - t
        slowest = max(slowest, (dt, label))
        unexpected = [(k, e) for k, e in seen if k != "error"]
        for kind, exc in unexpected:
            leaked.append(f"{kind} {type(exc).__name__}: {' '.join(str(exc).split())[:120]} <- {label}")
            error_types[f"leaked {type(exc).__name__}"] += 1
        if not unexpected:
            for _, exc in seen:
                error_types[type(exc).__name__] += 1
        if "Traceback" in r.output:
            bad_output.append(f"traceback <- {label}")
        if r.exit_code == 0:
            stats["ok"] += 1
            try:
                if as_json:
                    json.loads(r.stdout)
            except ValueError:
                bad_output.append(f"exit 0 without one JSON object <- {label}")
        elif r.exit_code == 2:
            stats["error"] += 1
            lines = r.stderr.strip("\n").split("\n")
            if len(lines) != 1 or not lines[0].startswith("error: ") or r.stdout:
                bad_output.append(f"not one error line: {r.stderr!r} <- {label}")
        else:
            stats[f"exit {r.exit_code}"] += 1
            bad_output.append(f"exit {r.exit_code}: {r.stderr.strip()[:200]!r} <- {label}")
    elapsed = time.perf_counter() - t0
    total = sum(stats.values())
    summary = (f"{total} cases in {elapsed:.1f}s (slowest {slowest[0]:.2f}s: {slowest[1]}); outcomes {dict(stats)}; "
               f"error types {dict(error_types)}; leaked {len(leaked)}")
    print("\nfuzz:", summary)
    for line in leaked[:40]:
        print("  leaked:", line)

    assert total == N_CASES
    assert not bad_output, "\n".join([summary] + bad_output[:30])
    assert not leaked, ("non-MicrotrainError exceptions reached the CLI catch-all (frontend bugs):\n"
                        + "\n".join(leaked[:30]))
    assert stats["error"] >= 0.3 * total, summary  # the mutations really do break most files
    assert stats["ok"] >= 1, summary  # the wrong-extension and harmless-flip cases still read
    assert elapsed < TIME_BUDGET_S, summary
