"""The generated C program (compiler/codegen) against the numpy engine, integer for integer.

For every schedule kind, on the example model and on random architectures: the C engine
(:class:`NativeTrainer`: mt_model.c + firmware kernels, host gcc) and :class:`Int8Trainer` take
the same 50 steps on the same samples; every step's loss / correct / skipped, and at the end every
trained tensor, master copy, velocity, the PRNG state and the logits are equal. The whole file
also runs under ASan/UBSan (fewer steps).
"""
from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cbuild  # noqa: E402
from models.random_arch import SCHEDULES, quantized, random_spec  # noqa: E402

from microtrain.compiler.codegen import CodegenError, generate
from microtrain.compiler.codegen.native import NativeTrainer
from microtrain.compiler.memory.memplan import plan_memory
from microtrain.compiler.schedule import FGOptions, Schedule, resolve
from microtrain.compiler.train_int import Int8Trainer, int8_samples

ROOT = Path(__file__).resolve().parents[1]
SANITIZE = cbuild.SANITIZE
STEPS = 50
os.environ.setdefault("MICROTRAIN_CACHE", str(ROOT / "build" / "native"))


@pytest.fixture(scope="module")
def digits():
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.host.data import load_data

    fmodel = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
    qmodel = quantize_graph(fmodel, load_data("digits-clean", fmodel).x_train[:64])
    task = load_data("digits", fmodel)
    return qmodel, task.x_train, np.asarray(task.y_train, np.int64)


def run_both(graph, schedule: Schedule, x_float, y, kw: dict, steps: int = STEPS, what: str = ""):
    """Step both engines ``steps`` times on the same samples; assert everything equal."""
    kw = dict(kw, lr_schedule="cosine", total_steps=steps)
    ref = Int8Trainer(graph, schedule, **kw)
    eng = NativeTrainer(graph, schedule, sanitize=SANITIZE, **kw)
    b = ref.samples_per_step
    ref.prepare_batches(1, b)
    n = steps * b
    reps = -(-n // len(y))
    x = int8_samples(ref, np.concatenate([x_float] * reps)[:n])
    yy = np.concatenate([y] * reps)[:n]
    skipped = 0
    for t in range(steps):
        xs, ys = x[t * b:(t + 1) * b], yy[t * b:(t + 1) * b]
        r, e = ref.step(xs, ys), eng.step(xs, ys)
        assert (e.loss_q16, e.correct, e.samples, e.skipped) == (r.loss_q16, r.correct, r.samples, r.skipped), \
            f"{what} step {t}"
        skipped += r.skipped
    params, masters, vel = eng.params, eng.masters, eng.velocity
    for name, p in ref.params.items():
        np.testing.assert_array_equal(params[name], p, err_msg=f"{what} {name}")
    for name, m in ref.masters.items():
        np.testing.assert_array_equal(masters[name].reshape(m.shape), m, err_msg=f"{what} master {name}")
    for name, v in ref._velocity.items():
        np.testing.assert_array_equal(vel[name].reshape(v.shape), v, err_msg=f"{what} velocity {name}")
    assert eng.rng_state == ref.rng_state, what
    assert eng.t == ref.t == steps
    np.testing.assert_array_equal(eng.logits(x[:16]), ref.logits(x[:16]), err_msg=f"{what} logits")
    moved = [nm for nm in ref.params if not np.array_equal(ref.params[nm], graph.tensors[nm].data)]
    return ref, eng, moved, skipped


EXAMPLE = [
    ("sparse", Schedule("sparse"), dict(remedy="master")),
    ("sparse-rows-stochastic-acc", Schedule("sparse", bias_last=2, update={0: 0.5, 2: 0.3, -1: 1.0}),
     dict(remedy="stochastic", loss_input="acc")),
    ("bias", Schedule("bias"), dict(remedy="master")),
    ("last-k", Schedule("last-k", last=2), dict(remedy="stochastic")),
    ("full-momentum", Schedule("full"), dict(remedy="master", momentum=0.9)),
    ("fg", Schedule("fg", fg=FGOptions(m=3, batch=4)), dict(remedy="master", fg_lr=0.01)),
    ("fg-rows-momentum", Schedule("fg", update={1: 0.25, -1: 1.0}, bias_last=2, fg=FGOptions(m=3, batch=2)),
     dict(remedy="master", loss_input="acc", momentum=0.5, fg_lr=0.02)),
    ("hybrid", Schedule("hybrid", fg=FGOptions(m=2, batch=2)), dict(remedy="stochastic", fg_lr=0.02)),
]


@pytest.mark.parametrize("case", EXAMPLE, ids=[c[0] for c in EXAMPLE])
def test_example_model_c_equals_numpy(digits, case):
    cid, sched, kw = case
    graph, x, y = digits
    ref, _, moved, _ = run_both(graph, sched, x, y, dict(kw, seed=7, lr=0.05), what=cid)
    assert moved, f"{cid}: nothing trained"


ARCH_SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", ARCH_SEEDS)
@pytest.mark.parametrize("sched", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_random_architectures_c_equal_numpy(seed, sched):
    sid, skw, tkw = sched
    spec = random_spec(seed)
    graph, x, y = quantized(spec)
    skw = dict(skw)
    kind = skw.pop("kind")
    run_both(graph, Schedule(kind, **skw), x, y, dict(tkw), what=f"arch {seed} {sid}")


@pytest.mark.skipif(SANITIZE, reason="large model: the example and random architectures cover the sanitizers")
def test_mobilenetv2_c_equals_numpy(tmp_path):
    """MobileNetV2-w0.35 (32x32) under the MIT-style sparse scheme: in-place depthwise, in-place
    residual adds, pointwise fast paths, weights split SRAM/flash: the same integers."""
    pytest.importorskip("torch")
    from models.mobilenetv2 import build_mobilenetv2_onnx

    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.host.schedule_options import parse_update

    g = load_model(build_mobilenetv2_onnx(tmp_path / "m.onnx", width=0.35, resolution=32))
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    q = quantize_graph(g, x)
    y = np.arange(8) % 10
    sched = Schedule("sparse", bias_last=20, update=parse_update("-1:1,-3:0.25,-5:0.25,-6:0.25,-8:0.25"))
    ref, eng, moved, _ = run_both(q, sched, x, y, dict(remedy="stochastic", seed=1, lr=0.05), steps=4,
                                  what="mobilenetv2")
    assert len(moved) >= 5
    log = eng.gen.memory.model.options["inplace_log"]
    ops = {eng.gen.memory.model.steps[k].op for k, _, _ in log}
    assert {"depthwise_conv2d", "add"} <= ops, ops
    assert any(r is not None for r in eng.gen.manifest["sram_rows"].values())  # a split weight


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_planner_scratch_mirrors_the_kernels(digits, seed):
    """Every step's scratch as the planner laid it out equals what the kernel's *_scratch_bytes
    companion asks for with the same arguments (generated mt_check_scratch, compiled in)."""
    if seed == 0:
        graph = digits[0]
        scheds = [Schedule("full"), Schedule("hybrid"), Schedule("fg", fg=FGOptions(m=2, batch=3))]
    else:
        graph = quantized(random_spec(seed))[0]
        scheds = [Schedule(kind, **{k: v for k, v in skw.items() if k != "kind"})
                  for _, skw, _ in SCHEDULES for kind in [skw["kind"]]][::2]
    for i, sched in enumerate(scheds):
        for loss_input in (("int8", "acc") if seed == 0 else (("int8", "acc")[i % 2],)):
            eng = NativeTrainer(graph, sched, loss_input=loss_input, extra_flags=("-DMT_CHECK_SCRATCH",))
            eng.lib.mt_check_scratch.restype = ctypes.c_int32
            bad = eng.lib.mt_check_scratch()
            assert bad == -1, f"{sched.kind}: step {bad} {eng.gen.memory.model.steps[bad].label}"
            assert eng.gen.files["mt_model.c"].count("MT_A4(") > 2


def test_arena_is_the_planned_arena(digits):
    graph, _, _ = digits
    for sched in (Schedule("sparse"), Schedule("fg", fg=FGOptions(m=2, batch=4)), Schedule("hybrid")):
        plan = resolve(sched, graph)
        gen = generate(graph, plan, remedy="stochastic")
        mp = plan_memory(graph, plan, remedy="stochastic")
        m = re.search(r"#define MT_ARENA_BYTES (\d+)", gen.files["mt_model.h"])
        assert m and int(m.group(1)) == mp.arena_bytes == gen.manifest["arena_bytes"]
        assert "static int32_t mt_arena[MT_ARENA_BYTES / 4];" in gen.files["mt_model.c"]
        assert mp.arena_bytes % 4 == 0


def test_output_is_deterministic_and_stamped(digits):
    graph, _, _ = digits
    a = generate(graph, Schedule("sparse"), remedy="master")
    b = generate(graph, Schedule("sparse"), remedy="master")
    assert a.files == b.files
    assert a.hash in a.files["mt_model.c"] and "microtrain-codegen" in a.files["mt_model.h"]
    c = generate(graph, Schedule("sparse"), remedy="stochastic")
    d = generate(graph, Schedule("bias"), remedy="master")
    assert len({a.hash, c.hash, d.hash}) == 3


def test_checkpoint_round_trip_and_model_check(digits):
    graph, x, y = digits
    kw = dict(remedy="master", momentum=0.5, seed=3, lr=0.05, lr_schedule="cosine", total_steps=20)
    a = NativeTrainer(graph, Schedule("sparse"), sanitize=SANITIZE, **kw)
    xi = a.host_samples(x[:20])
    for t in range(10):
        a.step(xi[t:t + 1], y[t:t + 1])
    ck = a.checkpoint()
    assert ck[:4] == b"MTCK" and a.gen.hash.encode() == ck[8:24]
    b = NativeTrainer(graph, Schedule("sparse"), sanitize=SANITIZE, **kw)
    b.load_checkpoint(ck)
    assert b.t == 10 and b.checkpoint() == ck
    for t in range(10, 20):
        ra, rb = a.step(xi[t:t + 1], y[t:t + 1]), b.step(xi[t:t + 1], y[t:t + 1])
        assert ra == rb
    assert a.checkpoint() == b.checkpoint()
    other = NativeTrainer(graph, Schedule("bias"), sanitize=SANITIZE, **kw)
    with pytest.raises(Exception, match="not a checkpoint of this model"):
        other.load_checkpoint(ck)


def test_generated_code_passes_the_firmware_lint(digits):
    sys.path.insert(0, str(ROOT / "tools"))
    from lint_c import violations

    graph, _, _ = digits
    for sched in (Schedule("sparse"), Schedule("hybrid"), Schedule("fg", fg=FGOptions(m=2, batch=2))):
        gen = generate(graph, sched, remedy="stochastic", momentum=0.5)
        for name in ("mt_model.c", "mt_model.h"):
            assert violations(gen.files[name], name) == []
    # the lint sees through comments and strings but not through code
    assert violations('/* a float comment */ const char *s = "double";') == []
    assert len(violations("static float x;\nint y = 1.5f;\nvoid *p = malloc(4);\n#include <stdio.h>")) == 4


def test_unsupported_options_are_one_line_errors(digits):
    graph, _, _ = digits
    with pytest.raises(CodegenError, match="accumulate"):
        generate(graph, Schedule("sparse"), accumulate=4)


@pytest.mark.skipif(SANITIZE, reason="CLI run")
def test_simulate_engine_c_save_params_byte_identical(tmp_path):
    outs = {}
    for engine in ("numpy", "c"):
        out = tmp_path / f"{engine}.npz"
        p = subprocess.run([sys.executable, "-m", "microtrain.host.cli", "simulate", str(ROOT / "examples" / "digits_cnn.onnx"),
                            "--data", "digits", "--steps", "60", "--no-float", "--engine", engine,
                            "--save-params", str(out), "--json"], capture_output=True, text=True, cwd=tmp_path,
                           env=dict(os.environ))
        assert p.returncode == 0, p.stderr[-2000:]
        outs[engine] = out.read_bytes()
    assert outs["numpy"] == outs["c"]


@pytest.mark.skipif(SANITIZE, reason="already inside the sanitized run")
def test_under_sanitizers():
    proc = cbuild.run_sanitized_pytest(Path(__file__), "-k", "not test_under_sanitizers", timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:]
