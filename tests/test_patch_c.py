"""The patched frozen stage in the generated C (compiler/codegen/emit.py ``patch_stage``) against the
numpy engine, integer for integer.

A patched program runs the stage (compiler/patch.py) as one step function looping over the tiles:
gather the tile's input region, each node's full-layer kernel on the tile buffers with the tile's
geometry (per-axis int16 tables in flash, the params struct copied to the stack when a pad
differs), crops where a node reads less than is held, scatter into the whole stage output. Here:

* the native C engine with patch on, the numpy engine with the same PatchStage, and the numpy
  engine layer by layer take the same steps on the same samples: every step's loss / correct /
  skipped, the final trained tensors, master copies, velocities and PRNG state, and the logits of
  mt_infer (before and after training) are equal -- on random architectures (strides, valid/same
  padding, depthwise with multipliers, inverted residuals, forks, max pool; grids 2x2 .. 3x3; backprop
  and forward gradient on a batch), on examples/digits_cnn.onnx (planner-chosen split for a grid) and
  on MobileNetV2-w0.35 with ``patch="auto"``;
* the arena high-water mark of the native run equals the planned arena;
* one patched program on the emulated Cortex-M4 (qemu-m4): the protocol session's metrics, the
  checkpoint and INFER equal the engines, arena high-water mark = plan, stack within the plan.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MICROTRAIN_CACHE", str(ROOT / "build" / "native"))

import cbuild  # noqa: E402
from models.random_arch import quantized, random_spec  # noqa: E402

from microtrain.compiler.codegen import generate  # noqa: E402
from microtrain.compiler.ir import Node  # noqa: E402
from microtrain.compiler.codegen.native import NativeTrainer  # noqa: E402
from microtrain.compiler.memory.memplan import _bp_nodes  # noqa: E402
from microtrain.compiler.patch import PatchError, build_stage, find_stages, stage_input_tensor  # noqa: E402
from microtrain.compiler.schedule import FGOptions, Schedule, resolve  # noqa: E402
from microtrain.compiler.train_int import Int8Trainer, int8_samples  # noqa: E402

SANITIZE = cbuild.SANITIZE
STEPS = 3 if SANITIZE else 6

#: schedules whose body is frozen (only the classifier trains): (Schedule, engine options)
SCHEDS = {
    "lastk1": (Schedule("last-k", last=1), dict(lr=0.05, remedy="stochastic")),
    "sparse-fc": (Schedule("sparse", bias_last=1, update={-1: 1.0}),
                  dict(lr=0.05, remedy="master", loss_input="acc", momentum=0.5)),
    "fg-fc": (Schedule("fg", bias_last=1, update={-1: 1.0}, fg=FGOptions(m=2, batch=3)),
              dict(lr=0.05, fg_lr=0.05, remedy="master", loss_input="acc")),
}


def frozen_stage(graph, plan, grid):
    """The longest patchable frozen stage of ``graph`` under ``plan`` on ``grid``."""
    trained = {lt.node for lt in plan.layers if lt.trainable}
    from microtrain.compiler.program import build_program

    bp = _bp_nodes(build_program(graph, plan))
    frozen = [n.name for n in graph.nodes if n.name not in trained and n.name not in bp]
    inp = stage_input_tensor(graph)
    for nodes in reversed(find_stages(graph, inp, frozen)):
        try:
            return build_stage(graph, nodes, grid, inp)
        except PatchError:
            continue
    raise AssertionError(f"no frozen stage fits grid {grid}")


def run_three(graph, plan, patch, x_float, y, kw: dict, steps: int = STEPS, what: str = ""):
    """C (patched) vs numpy (same stage) vs numpy (layer by layer): every step and the end state."""
    gkw = {k: v for k, v in kw.items() if k != "seed"}
    gen = generate(graph, plan, patch=patch, lr_schedule="cosine", **gkw)
    stage = gen.memory.patch
    assert stage is not None, what
    tkw = dict(kw, lr_schedule="cosine", total_steps=steps)
    eng = NativeTrainer(graph, plan, generated=gen, sanitize=SANITIZE, seed=kw.get("seed", 0), total_steps=steps)
    eng.lib.mt_arena_high_water.restype = ctypes.c_uint32
    eng.lib.mt_arena_paint()
    ref = Int8Trainer(graph, plan, patch=stage, **tkw)
    lbl = Int8Trainer(graph, plan, **tkw)
    b = ref.samples_per_step
    assert b == eng.samples_per_step
    ref.prepare_batches(1, b)
    lbl.prepare_batches(1, b)
    n = steps * b
    reps = -(-n // len(y))
    x = int8_samples(ref, np.concatenate([x_float] * reps)[:n])
    yy = np.concatenate([y] * reps)[:n]
    # inference before training: mt_infer of the patched program = the layer-by-layer logits
    np.testing.assert_array_equal(eng.logits(x[:4]), lbl.logits(x[:4]), err_msg=f"{what} logits at init")
    for t in range(steps):
        xs, ys = x[t * b:(t + 1) * b], yy[t * b:(t + 1) * b]
        e, r, lb = eng.step(xs, ys), ref.step(xs, ys), lbl.step(xs, ys)
        got = (e.loss_q16, e.correct, e.samples, e.skipped)
        assert got == (r.loss_q16, r.correct, r.samples, r.skipped) == \
            (lb.loss_q16, lb.correct, lb.samples, lb.skipped), f"{what} step {t}"
    params, masters, vel = eng.params, eng.masters, eng.velocity
    for name in ref.params:
        np.testing.assert_array_equal(params[name], ref.params[name], err_msg=f"{what} {name}")
        np.testing.assert_array_equal(ref.params[name], lbl.params[name], err_msg=f"{what} {name} (layer by layer)")
    for name, m in ref.masters.items():
        np.testing.assert_array_equal(masters[name].reshape(m.shape), m, err_msg=f"{what} master {name}")
        np.testing.assert_array_equal(m, lbl.masters[name], err_msg=f"{what} master {name} (layer by layer)")
    for name, v in ref._velocity.items():
        np.testing.assert_array_equal(vel[name].reshape(v.shape), v, err_msg=f"{what} velocity {name}")
    assert eng.rng_state == ref.rng_state == lbl.rng_state, what
    assert eng.t == steps
    np.testing.assert_array_equal(eng.logits(x[:8]), lbl.logits(x[:8]), err_msg=f"{what} logits")
    np.testing.assert_array_equal(ref.logits(x[:8]), lbl.logits(x[:8]), err_msg=f"{what} logits (numpy)")
    # the arena the run touched is the planned arena, to the byte (tile buffers included)
    assert eng.lib.mt_arena_high_water() == gen.manifest["arena_bytes"] == gen.memory.arena_bytes, what
    moved = [nm for nm in ref.params if not np.array_equal(ref.params[nm], graph.tensors[nm].data)]
    assert moved, f"{what}: nothing trained"
    return gen


def _check_source(gen) -> None:
    """One step function runs the stage; geometry in const int16 tables; no params structs in RAM."""
    src = gen.files["mt_model.c"]
    stage = gen.memory.patch
    r, c = stage.grid
    assert len(re.findall(r"^/\* \d+: patch ", src, re.M)) == 1
    assert "static void mt_region_copy(" in src
    for name, rows in (("pt_rows", r), ("pt_cols", c)):
        m = re.search(rf"static const int16_t {name}\[(\d+)\]\[\d+\]", src)
        assert m is None or int(m.group(1)) == rows
    assert not re.search(r"^static mt_(conv|dw_conv|pool|add|relu)_params", src, re.M)  # only const ones
    assert "mt_depthwise_conv2d_fwd_s8_inplace" not in src.split(": patch ", 1)[1].split("\n}\n", 1)[0]
    sys.path.insert(0, str(ROOT / "tools"))
    from lint_c import violations

    assert violations(src, "mt_model.c") == []


# ---- random architectures ------------------------------------------------------------------------
ARCH = [  # (seed, grid, schedule): residual blocks, forks, strides, valid pads, dw multipliers, max pool
    (11, (2, 2), "lastk1"),     # block(+skip) -> conv3x3/2 -> conv3x3/2 valid -> dw relu6
    (2, (3, 2), "sparse-fc"),   # two inverted residual blocks (skip)
    (4, (2, 3), "fg-fc"),       # conv1x1, block, conv3x3, fork /2 (forward gradient on a batch of 3)
    (17, (2, 2), "lastk1"),     # conv3x3 valid, max pool, fork /2
    (9, (3, 3), "sparse-fc"),   # dw m2, block(+skip, relu)
    (36, (2, 2), "fg-fc"),      # dw valid m2 relu6, dw, fork
    (23, (3, 2), "lastk1"),     # pw, dw valid, fork /2
    (3, (2, 2), "sparse-fc"),   # block /2, dw, dw m2
    (13, (2, 2), "fg-fc"),      # fork (relu6), max pool
]


@pytest.mark.parametrize("seed,grid,sched", ARCH, ids=[f"arch{s}-{g[0]}x{g[1]}-{k}" for s, g, k in ARCH])
def test_random_architectures_patched_c_equal_numpy(seed, grid, sched):
    graph, x, y = quantized(random_spec(seed))
    schedule, kw = SCHEDS[sched]
    plan = resolve(schedule, graph)
    stage = frozen_stage(graph, plan, grid)
    assert stage.grid == grid and len(stage.tiles) == grid[0] * grid[1]
    gen = run_three(graph, plan, stage, x, y, dict(kw, seed=7), what=f"arch {seed} {grid} {sched}")
    assert gen.memory.patch is stage
    _check_source(gen)


def test_tile_kernel_scratch_is_the_planned_scratch():
    """The pointwise kernels inside the tile loop get the scratch the planner laid out for the patch
    steps (generated mt_check_scratch, compiled in)."""
    graph, _, _ = quantized(random_spec(11))
    schedule, kw = SCHEDS["lastk1"]
    plan = resolve(schedule, graph)
    gen = generate(graph, plan, patch=frozen_stage(graph, plan, (2, 2)), **kw)
    eng = NativeTrainer(graph, plan, generated=gen, sanitize=SANITIZE, extra_flags=("-DMT_CHECK_SCRATCH",))
    eng.lib.mt_check_scratch.restype = ctypes.c_int32
    assert eng.lib.mt_check_scratch() == -1
    assert gen.files["mt_model.c"].count("mt_pointwise_conv2d_fwd_s8_scratch_bytes") >= 2


def with_standalone_relu(graph, op: str):
    """``graph`` with a standalone ``op`` (relu / relu6; its own output quantization, a rescale,
    unless a pool reads it) after the first conv2d (the frontend fuses activations, so the random
    models have none)."""
    from microtrain.compiler.ir import QParams, Tensor, verify

    g = graph.copy()
    k, conv = next((i, n) for i, n in enumerate(g.nodes) if n.op == "conv2d")
    y = g.tensors[conv.outputs[0]]
    pooled = any(n.op in ("max_pool2d", "avg_pool2d") for n in g.consumers(y.name))  # pools keep the quant
    q = QParams(np.float32(y.quant.s * (1.0 if pooled else 1.37)), y.quant.zp if pooled else y.quant.zp // 2)
    out = g.add_tensor(Tensor(g.fresh_name(y.name + "_act"), y.shape, "int8", quant=q))
    g.rename_tensor_uses(y.name, out.name)
    g.nodes.insert(k + 1, Node(op, g.fresh_name(conv.name + "_act"), [y.name], [out.name], {}))
    return verify(g)


@pytest.mark.parametrize("seed,op,grid", [(17, "relu6", (2, 2)), (11, "relu", (3, 2))])
def test_standalone_relu_in_the_stage(seed, op, grid):
    from microtrain.compiler.ops import registry  # noqa: F401 - the op is registered

    graph, x, y = quantized(random_spec(seed))
    g = with_standalone_relu(graph, op)
    schedule, kw = SCHEDS["lastk1"]
    plan = resolve(schedule, g)
    stage = frozen_stage(g, plan, grid)
    assert op in [g.node(n).op for n in stage.nodes]
    gen = run_three(g, plan, stage, x, y, dict(kw, seed=2), what=f"arch {seed} + {op}")
    assert "mt_relu_fwd_s8(" in gen.files["mt_model.c"].split(": patch ", 1)[1].split("\n}\n", 1)[0]


# ---- the example model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.host.data import load_data

    fmodel = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
    qmodel = quantize_graph(fmodel, load_data("digits-clean", fmodel).x_train[:64])
    task = load_data("digits", fmodel)
    return qmodel, task.x_train[:64], np.asarray(task.y_train[:64], np.int64)


@pytest.mark.parametrize("grid,longest", [((2, 2), False), ((2, 2), True), ((3, 2), True), ((2, 4), True)])
def test_example_model_patched_c_equals_numpy(digits, grid, longest):
    """The planner's split for a grid (``patch=(R, C)``), and the longest frozen stage (the three
    convs, and the max pool when the grid fits its output) given as a PatchStage."""
    graph, x, y = digits
    plan = resolve(Schedule("last-k", last=1), graph)
    patch = frozen_stage(graph, plan, grid) if longest else grid
    gen = run_three(graph, plan, patch, x, y, dict(lr=0.05, remedy="master", seed=3), what=f"digits {grid}")
    assert gen.memory.patch.grid == grid
    if longest:
        assert [graph.node(n).op for n in gen.memory.patch.nodes][:3] == ["conv2d"] * 3
    _check_source(gen)


# ---- MobileNetV2 ------------------------------------------------------------------------------------
@pytest.mark.skipif(SANITIZE, reason="large model: the example and random architectures cover the sanitizers")
def test_mobilenetv2_auto_patch_c_equals_numpy(tmp_path):
    """MobileNetV2-w0.35 at 64x64, the classifier trained: the planner patches the first blocks
    (auto) and the program gives the integers of the layer-by-layer numpy engine."""
    pytest.importorskip("torch")
    from models.mobilenetv2 import build_mobilenetv2_onnx

    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph

    res = 64
    g = load_model(build_mobilenetv2_onnx(tmp_path / "m.onnx", width=0.35, resolution=res))
    x = np.random.default_rng(0).standard_normal((6, 3, res, res)).astype(np.float32)
    q = quantize_graph(g, x)
    y = np.arange(6) % 10
    plan = resolve(Schedule("last-k", last=1), q)
    gen = run_three(q, plan, "auto", x, y, dict(lr=0.05, remedy="stochastic", seed=1), steps=3, what="mobilenetv2")
    stage = gen.memory.patch
    assert len(stage.nodes) >= 3 and stage.grid[0] * stage.grid[1] > 1
    assert gen.memory.patching["chosen"] is not None
    assert gen.memory.arena_bytes < gen.memory.patching["layer_by_layer"]["arena_bytes"]
    _check_source(gen)


# ---- the emulated board --------------------------------------------------------------------------
@pytest.mark.skipif(SANITIZE, reason="QEMU run")
def test_patched_program_on_qemu_m4(digits, tmp_path):
    """A patched program on qemu-m4 (DSP kernels): 4 protocol steps equal the numpy engines (patched
    and layer by layer), the checkpoint equals the native engine's, INFER the numpy logits; the arena
    high-water mark is the planned arena and the stack stays within the plan."""
    import test_device_firmware as tdf

    from microtrain.compiler.codegen import firmware as fw

    target, steps, seed = "qemu-m4", 4, 5
    tdf._tools(target)
    graph, xf, y = digits
    plan = resolve(Schedule("last-k", last=1), graph)
    kw = dict(lr=0.05, remedy="stochastic", lr_schedule="cosine")
    stage = frozen_stage(graph, plan, (2, 2))  # conv1..conv3, max pool: halos, effective pads
    gen = generate(graph, plan, patch=stage, **kw)
    assert gen.memory.patch is stage and len(stage.nodes) == 4
    ref = Int8Trainer(graph, plan, patch=stage, seed=seed, total_steps=steps, **kw)
    lbl = Int8Trainer(graph, plan, seed=seed, total_steps=steps, **kw)
    host = NativeTrainer(graph, plan, generated=gen, seed=seed, total_steps=steps)
    x = int8_samples(ref, xf[:steps + 1])
    image = fw.build_image(gen, target, tmp_path / "img")
    dev = tdf.start(target, image, tmp_path)
    man = gen.manifest
    try:
        h = dev.request("HELLO").fields()
        assert h["model_hash"].decode() == gen.hash and h["arena_size"] == man["arena_bytes"]
        stack = fw.stack_bytes_of(gen, target)
        assert h["stack_size"] == stack
        tdf.is_ack(dev.request("INIT", seed=seed, total_steps=steps, session=7, count=0, trace=0))
        for t in range(steps):
            data = x[t].tobytes()
            tdf.is_ack(dev.request("SAMPLE", data, total=len(data), offset=0, label=int(y[t]), slot=0, reserved=0))
            m = dev.request("TRAIN", step=t).fields()
            r, lb = ref.step(x[t:t + 1], y[t:t + 1]), lbl.step(x[t:t + 1], y[t:t + 1])
            host.step(x[t:t + 1], y[t:t + 1])
            assert (m["step"], m["loss_q16"], m["correct"], m["skipped"]) == (t + 1, r.loss_q16, r.correct, r.skipped)
            assert (r.loss_q16, r.correct) == (lb.loss_q16, lb.correct)
        ck = tdf.params_get(dev, man["params_bytes"], 200)
        assert ck == host.checkpoint()
        data = x[steps].tobytes()
        tdf.is_ack(dev.request("SAMPLE", data, total=len(data), offset=0, label=int(y[steps]), slot=0, reserved=0))
        inf = dev.request("INFER").fields()
        want = lbl.logits(x[steps][None])[0].astype(np.int8)
        assert inf["data"] == want.tobytes() == ref.logits(x[steps][None])[0].astype(np.int8).tobytes()
        m = dev.request("METRICS_GET").fields()
        assert m["arena_hwm"] == man["arena_bytes"], (m["arena_hwm"], man["arena_bytes"])
        assert 0 < m["stack_hwm"] <= stack, (m["stack_hwm"], stack)
    finally:
        dev.close()
    if shutil.which("arm-none-eabi-gcc"):  # the static worst case of this very image is within the plan
        sys.path.insert(0, str(ROOT / "tools"))
        import stack_usage as su

        assert su.image_stack(gen, target)["total_bytes"] <= stack


@pytest.mark.skipif(SANITIZE, reason="already inside the sanitized run")
def test_under_sanitizers():
    """The tile loop's region copies and kernel calls under ASan/UBSan (a few programs)."""
    proc = cbuild.run_sanitized_pytest(Path(__file__), "-k", "arch11 or arch4 or arch9 or relu or example",
                                       timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:]
