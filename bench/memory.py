"""Planned SRAM and flash of one training step: none / bias / sparse / last-k / full / fg, for the
example model and the MobileNetV2-w0.35 128x128 fixture, plus the MIT-style sparse scheme on
STM32F746G-DISCO with its overhead over inference split by kind, layer by layer and with the frozen
stage patched (--patch auto --scratch lean; inference-only patched too). Prints one JSON object.

    python bench/memory.py [--out bench/results/memory.json] [--no-mobilenet]

MobileNetV2 is built with PyTorch (a test dependency) from tests/models/mobilenetv2.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from microtrain.compiler.frontend import load_model  # noqa: E402
from microtrain.compiler.memory.memplan import plan_memory  # noqa: E402
from microtrain.compiler.quantize import quantize_graph  # noqa: E402
from microtrain.compiler.schedule import Schedule, parse_update, resolve  # noqa: E402
from microtrain.host.boards import get_board  # noqa: E402
from microtrain.host.plan_cmd import overhead  # noqa: E402

KINDS = ("none", "bias", "sparse", "last-k", "full", "fg")
#: biases of the last 20 conv layers, the classifier, four pointwise convs of the last blocks at 1/4
MIT_SCHEME = Schedule("sparse", bias_last=20, update=parse_update("-1:1,-3:0.25,-5:0.25,-6:0.25,-8:0.25"))
MIT_REPORTED_PEAK = 141 * 1024  # MIT TTE, MobileNetV2-w0.35, in-place + patch-based (DESIGN.md)


def row(graph, schedule, remedy, **mem):
    t0 = time.perf_counter()
    plan = resolve(schedule, graph)
    mp = plan_memory(graph, plan, remedy=remedy, **mem)
    j = mp.to_json()
    return {"schedule": schedule.kind, "describe": schedule.describe(), "trainable_params": plan.num_trainable_params,
            "remedy": remedy, "persistent_bytes": mp.persistent_bytes, "arena_bytes": mp.arena_bytes,
            "peak_bytes": mp.peak_bytes, "lower_bound_bytes": mp.lower_bound_bytes,
            "peak_over_bound": round(mp.peak_bytes / mp.lower_bound_bytes, 4),
            "flash_params_bytes": mp.flash_params_bytes, "code_bytes_estimate": mp.code_bytes_estimate,
            "peak_op": j["peak"].get("label"), "algorithm": mp.arena.algorithm,
            "patch": None if mp.patch is None else {k: j["patch"]["chosen"][k] for k in
                                                    ("grid", "split_after", "output_shape", "extra_macs", "overhead")},
            "lean_steps": len(j["lean_steps"]),
            "plan_seconds": round(time.perf_counter() - t0, 3)}, mp, j


def table(graph, remedy):
    return [row(graph, Schedule(k), remedy)[0] for k in KINDS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-mobilenet", action="store_true")
    a = ap.parse_args()
    from microtrain.host.data import load_data

    g = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
    q = quantize_graph(g, load_data("digits", g).x_train[:200])
    out = {"example_model": {"model": "examples/digits_cnn.onnx", "remedy_master": table(q, "master"),
                             "remedy_stochastic": table(q, "stochastic")}}
    if not a.no_mobilenet:
        from models.mobilenetv2 import build_mobilenetv2_onnx

        with tempfile.TemporaryDirectory() as d:
            path = build_mobilenetv2_onnx(Path(d) / "mnv2.onnx")
            mg = load_model(str(path))
        x = np.random.default_rng(0).standard_normal((8, 3, 128, 128)).astype(np.float32)
        mq = quantize_graph(mg, x)
        board = get_board("stm32f746g-disco")
        mit, mp, j = row(mq, MIT_SCHEME, "stochastic")
        _, mp0, j0 = row(mq, Schedule("none"), "stochastic")
        jj = {"sram": {"persistent": mp.model.persistent, "peak_bytes": mp.peak_bytes}}
        jj0 = {"sram": {"persistent": mp0.model.persistent, "peak_bytes": mp0.peak_bytes}}
        mit_master, _, _ = row(mq, MIT_SCHEME, "master")
        # patch-based execution of the frozen stage (+ lean backward scratch where it sets the peak)
        patched, mpp, _ = row(mq, MIT_SCHEME, "stochastic", patch="auto", scratch="lean")
        patched_fast, _, _ = row(mq, MIT_SCHEME, "stochastic", patch="auto")
        none_p, mpn, _ = row(mq, Schedule("none"), "stochastic", patch="auto")
        mp_board = plan_memory(mq, resolve(MIT_SCHEME, mq), remedy="stochastic", patch="auto", scratch="lean",
                               board=board)
        out["mobilenetv2_w035_128"] = {
            "model": "MobileNetV2 w0.35 128x128x3, 10 classes (tests/models/mobilenetv2.py)",
            "remedy_stochastic": table(mq, "stochastic"),
            "mit_scheme": {**mit, "board": board.name, "board_sram_bytes": board.sram_bytes,
                           "usable_sram_bytes": board.usable_sram_bytes,
                           "fits_board": mit["peak_bytes"] <= board.sram_bytes,
                           "fits_usable": mit["peak_bytes"] <= board.usable_sram_bytes,
                           "overhead_over_none": overhead(jj, jj0, mp, mp0),
                           "with_master_copies": {"peak_bytes": mit_master["peak_bytes"],
                                                  "persistent_bytes": mit_master["persistent_bytes"]},
                           "mit_tte_reported_peak_bytes": MIT_REPORTED_PEAK,
                           "note": "layer-by-layer execution: the frozen stage's peak (block 2's 64x64x48 "
                                   "expansion, 192 KiB, plus its 32 KiB input) bounds the arena"},
            "mit_scheme_patched": {**patched, "board": board.name,
                                   "persistent_plus_arena_bytes": patched["persistent_bytes"] + patched["arena_bytes"],
                                   "stack_bytes": mp_board.stack_bytes, "peak_with_stack_bytes": mp_board.peak_bytes,
                                   "target_bytes": 120 * 1024,
                                   "meets_target": patched["persistent_bytes"] + patched["arena_bytes"] <= 120 * 1024,
                                   "fast_scratch": {"arena_bytes": patched_fast["arena_bytes"],
                                                    "peak_bytes": patched_fast["peak_bytes"]},
                                   "layer_by_layer_peak_bytes": mit["peak_bytes"],
                                   "mit_tte_reported_peak_bytes": MIT_REPORTED_PEAK},
            "inference_only_patched": {**none_p, "layer_by_layer_peak_bytes": table(mq, "stochastic")[0]["peak_bytes"]},
        }
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
