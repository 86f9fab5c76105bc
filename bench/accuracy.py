"""Accuracy of the training schedules on the built-in digits last-mile task with the example model,
int8 engine against the float twin, 3 seeds (mean +- std), and the acceptance comparisons.
Prints one JSON object (and writes it with --out; README.md quotes bench/results/accuracy.json).

    python bench/accuracy.py [--seeds 0 1 2] [--jobs 2] [--out bench/results/accuracy.json]

Every run starts from the same PTQ model (200 calibration samples of the shifted training split),
trains batch-1 SGD with cosine decay on the shifted digits training split (1257 samples; one
epoch = 1257 backprop steps) and reports test accuracy (540 samples). Forward gradient runs get
up to 10x the backprop run's steps (--fg-factor); a step of forward gradient is one sign-m-SPSA
update on --fg-batch samples, so steps and samples are both reported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the default last-mile subset: all biases and the classifier's weights
SUBSET = {"bias_last": "all", "update": {-1: 1.0}}
#: the classifier alone (weights + bias): the forward-gradient comparison's subset
CLASSIFIER = {"bias_last": 1, "update": {-1: 1.0}}
#: forward-gradient recipe (sign-m-SPSA): chosen by the sweep recorded in the README
FG = {"m": 3, "eps": 0.03, "batch": 16, "lr": 0.003, "factor": 10}
HYBRID = {"m": 3, "eps": 0.02, "batch": 1, "fg_lr": 0.001}


def _setup():
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.host.data import load_data

    g = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
    d = load_data("digits", g)
    return g, quantize_graph(g, d.x_train[:200]), d


_CACHE: dict = {}


def run(job: dict) -> dict:
    from microtrain.compiler.schedule import FGOptions, Schedule
    from microtrain.compiler.train_float import train_float_twin
    from microtrain.compiler.train_int import train_int8

    if "g" not in _CACHE:
        _CACHE["g"], _CACHE["q"], _CACHE["d"] = _setup()
    g, q, d = _CACHE["g"], _CACHE["q"], _CACHE["d"]
    kw = dict(job["schedule"])
    fg = kw.pop("fg", None)
    sched = Schedule(kw.pop("kind"), fg=FGOptions(**fg) if fg else None, **kw)
    t0 = time.perf_counter()
    opts = {k: v for k, v in job.get("train", {}).items()}
    if job["engine"] == "int8":
        r = train_int8(q, sched, d, steps=job.get("steps"), seed=job["seed"], **opts)
    else:
        opts.pop("qas", None)
        r = train_float_twin(g, sched, d, steps=job.get("steps"), seed=job["seed"], **opts)
    return {**job, "acc_before": r.acc_before, "acc_after": r.acc_after, "steps_run": r.history.steps,
            "samples": r.history.samples, "seconds": round(time.perf_counter() - t0, 2)}


def jobs(seeds: list[int]) -> list[dict]:
    epoch = 1257
    out = []
    sparse = {"kind": "sparse", **SUBSET}
    sparse_cls = {"kind": "sparse", **CLASSIFIER}
    fg = {"kind": "fg", **CLASSIFIER, "fg": {"m": FG["m"], "eps": FG["eps"], "batch": FG["batch"]}}
    hybrid = {"kind": "hybrid", "bias_last": "all", "update": {-1: 1.0}, "bp_last": 1,
              "fg": {"m": HYBRID["m"], "eps": HYBRID["eps"], "batch": HYBRID["batch"]}}
    for s in seeds:
        out += [
            {"name": "sparse", "engine": "int8", "schedule": sparse, "seed": s},
            {"name": "sparse", "engine": "float", "schedule": sparse, "seed": s},
            {"name": "sparse_qas_off", "engine": "int8", "schedule": sparse, "seed": s, "train": {"qas": False}},
            {"name": "sparse_stochastic", "engine": "int8", "schedule": sparse, "seed": s,
             "train": {"remedy": "stochastic"}},
            {"name": "sparse_classifier", "engine": "int8", "schedule": sparse_cls, "seed": s},
            {"name": "fg", "engine": "int8", "schedule": fg, "seed": s, "steps": FG["factor"] * epoch,
             "train": {"lr": FG["lr"]}},
            {"name": "fg", "engine": "float", "schedule": fg, "seed": s, "steps": FG["factor"] * epoch,
             "train": {"lr": FG["lr"]}},
            {"name": "hybrid", "engine": "int8", "schedule": hybrid, "seed": s, "train": {"fg_lr": HYBRID["fg_lr"]}},
            {"name": "hybrid", "engine": "float", "schedule": hybrid, "seed": s, "train": {"fg_lr": HYBRID["fg_lr"]}},
            {"name": "bias", "engine": "int8", "schedule": {"kind": "bias"}, "seed": s},
            {"name": "last-k", "engine": "int8", "schedule": {"kind": "last-k", "last": 2}, "seed": s},
            {"name": "full", "engine": "int8", "schedule": {"kind": "full"}, "seed": s},
        ]
    return out


def _stats(xs: list[float]) -> dict:
    return {"mean": round(statistics.fmean(xs), 4), "std": round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0,
            "runs": [round(x, 4) for x in xs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    todo = jobs(a.seeds)
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        results = []
        for i, r in enumerate(ex.map(run, todo), 1):
            results.append(r)
            print(f"[{i}/{len(todo)}] {r['name']:<18} {r['engine']:<5} seed {r['seed']}: "
                  f"{100 * r['acc_after']:.1f}% ({r['seconds']} s)", file=sys.stderr)
    table: dict[str, dict] = {}
    for r in results:
        t = table.setdefault(f"{r['name']}/{r['engine']}", {"name": r["name"], "engine": r["engine"],
                                                             "schedule": r["schedule"], "train": r.get("train", {}),
                                                             "steps": r["steps_run"], "samples": r["samples"], "acc": []})
        t["acc"].append(r["acc_after"])
    zero = _stats([r["acc_before"] for r in results if r["name"] == "sparse" and r["engine"] == "int8"])
    rows = {k: {**{kk: vv for kk, vv in v.items() if kk != "acc"}, "accuracy": _stats(v["acc"])} for k, v in table.items()}
    m = {k: v["accuracy"]["mean"] for k, v in rows.items()}
    checks = {
        "int8_sparse_within_1.5_of_float": {"int8": m["sparse/int8"], "float": m["sparse/float"],
                                            "gap_points": round(100 * (m["sparse/float"] - m["sparse/int8"]), 2),
                                            "ok": m["sparse/float"] - m["sparse/int8"] <= 0.015},
        "qas_on_not_worse_than_off": {"on": m["sparse/int8"], "off": m["sparse_qas_off/int8"],
                                      "ok": m["sparse/int8"] >= m["sparse_qas_off/int8"]},
        "fg_within_5_of_sparse_same_subset": {
            "subset": "classifier weights + bias", "fg": m["fg/int8"], "sparse": m["sparse_classifier/int8"],
            "steps_ratio": round(rows["fg/int8"]["steps"] / rows["sparse_classifier/int8"]["steps"], 2),
            "samples_ratio": round(rows["fg/int8"]["samples"] / rows["sparse_classifier/int8"]["samples"], 2),
            "gap_points": round(100 * (m["sparse_classifier/int8"] - m["fg/int8"]), 2),
            "ok": m["sparse_classifier/int8"] - m["fg/int8"] <= 0.05},
        "hybrid_within_3_of_sparse": {"hybrid": m["hybrid/int8"], "sparse": m["sparse/int8"],
                                      "gap_points": round(100 * (m["sparse/int8"] - m["hybrid/int8"]), 2),
                                      "ok": m["sparse/int8"] - m["hybrid/int8"] <= 0.03},
        "weight_schedules_beat_zero_shot_by_20": {
            k: {"gain_points": round(100 * (v - zero["mean"]), 2), "ok": v - zero["mean"] >= 0.20}
            for k, v in m.items() if k.endswith("/int8") and not k.startswith("bias/")},
    }
    out = {"task": "digits (shifted) last-mile, examples/digits_cnn.onnx, PTQ int8", "seeds": a.seeds,
           "zero_shot": zero, "schedules": rows, "checks": checks, "fg_recipe": FG, "hybrid_recipe": HYBRID,
           "seconds": round(time.perf_counter() - t0, 1)}
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
