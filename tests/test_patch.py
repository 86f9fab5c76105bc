"""Patch-based execution of the frozen stage (compiler/patch.py): receptive fields, the numpy
engine's tiled execution against layer by layer (the same integers), the planner's choice of split
and grid, and `plan --patch`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from microtrain.compiler import patch as P
from microtrain.compiler.frontend import load_model
from microtrain.compiler.memory.memplan import plan_memory
from microtrain.compiler.quantize import quantize_graph
from microtrain.compiler.schedule import Schedule, parse_update, resolve
from microtrain.compiler.train_int import Int8Trainer
from microtrain.host.cli import cli

from models import random_arch as ra

#: the planner issue's MIT-style sparse scheme (as bench/memory.py)
MIT_SCHEME = Schedule("sparse", bias_last=20, update=parse_update("-1:1,-3:0.25,-5:0.25,-6:0.25,-8:0.25"))
KIB = 1024


def _frozen(graph, plan):
    trained = {lt.node for lt in plan.layers if lt.trainable}
    return [n.name for n in graph.nodes if n.name not in trained]


def _check_stage_exact(graph, plan, stage, x):
    """The patched frozen prefix equals the layer-by-layer one, value for value."""
    ref = Int8Trainer(graph, plan).frozen_prefix(x)
    out = Int8Trainer(graph, plan, patch=stage).frozen_prefix(x)
    assert np.array_equal(out[stage.output], ref[stage.output]), stage.describe()
    for k, v in out.items():  # everything the patched run keeps is the same
        assert np.array_equal(v, ref[k]), k


# ---- geometry ------------------------------------------------------------------------------------
def test_split_axis_covers_without_overlap():
    for n in range(1, 40):
        for parts in range(1, min(n, 9) + 1):
            s = P.split_axis(n, parts)
            assert s[0][0] == 0 and s[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(s, s[1:]))
            assert max(b - a for a, b in s) - min(b - a for a, b in s) <= 1


def test_parse_grid():
    assert P.parse_grid("4x4") == (4, 4) and P.parse_grid("3X2") == (3, 2) and P.parse_grid("5") == (5, 5)
    for bad in ("0x2", "x", "2x2x2", "axb", "99x1"):
        with pytest.raises(P.PatchError):
            P.parse_grid(bad)


# ---- the numpy engine: patched == layer by layer -------------------------------------------------
RANDOM_SEEDS = list(range(40))


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_architectures_patched_equals_layer_by_layer(seed):
    """Every patchable stage of a random architecture (strides, padding, depthwise, residual
    blocks, forks, max pools), on several grids, gives the layer-by-layer integers."""
    spec = ra.random_spec(seed)
    g, x, _ = ra.quantized(spec, n_train=8)
    plan = resolve(Schedule("last-k", last=1), g)
    inp = P.stage_input_tensor(g)
    stages = P.find_stages(g, inp, _frozen(g, plan))
    if not stages:
        pytest.skip(f"{spec.describe()}: no patchable frozen stage")
    tr = Int8Trainer(g, plan)
    xi = tr.host_samples(x[:3])
    for nodes in stages:
        oh, ow = g.tensors[g.node(nodes[-1]).outputs[0]].shape[1:3]
        for grid in {(2, 2), (min(3, oh), 1), (1, min(3, ow)), (min(oh, 4), min(ow, 3))}:
            st = P.build_stage(g, nodes, grid, inp)
            _check_stage_exact(g, plan, st, xi)


def test_random_architectures_cover_the_hard_cases():
    """The seeds above include stages with strides, padding, depthwise, residual adds (crops)."""
    seen = set()
    for seed in RANDOM_SEEDS:
        g, _, _ = ra.quantized(ra.random_spec(seed), n_train=8)
        plan = resolve(Schedule("last-k", last=1), g)
        inp = P.stage_input_tensor(g)
        for nodes in P.find_stages(g, inp, _frozen(g, plan)):
            st = P.build_stage(g, nodes, (2, 2), inp)
            for n in nodes:
                nd = g.node(n)
                seen.add(nd.op)
                if nd.attrs.get("stride", (1, 1))[0] > 1:
                    seen.add("stride")
                if any(nd.attrs.get("pad", (0, 0, 0, 0))):
                    seen.add("pad")
            if any(c for t in st.tiles for op in t.ops for c in op.crop):
                seen.add("crop")
    assert {"conv2d", "depthwise_conv2d", "add", "stride", "pad", "crop"} <= seen, seen


@pytest.fixture(scope="module")
def mnv2(mobilenetv2_onnx):
    g = load_model(mobilenetv2_onnx)
    x = np.random.default_rng(0).standard_normal((8, 3, 128, 128)).astype(np.float32)
    return quantize_graph(g, x)


def test_mobilenetv2_patched_prefix_is_exact(mnv2):
    plan = resolve(MIT_SCHEME, mnv2)
    mp = plan_memory(mnv2, plan, remedy="stochastic", patch="auto", scratch="lean")
    assert mp.patch is not None
    x = np.random.default_rng(1).integers(-128, 128, (2, 128, 128, 3)).astype(np.int8)
    for grid in (mp.patch.grid, (8, 8), (3, 5)):
        _check_stage_exact(mnv2, plan, P.build_stage(mnv2, mp.patch.nodes, grid, mp.patch.input), x)


def test_mobilenetv2_mit_scheme_fits_120k_on_f746(mnv2):
    """The acceptance figure: MIT-style sparse update of MobileNetV2-w0.35 at 128x128 on the
    STM32F746G-DISCO plans in <= 120 KiB (persistent + arena) with <= 15% extra MACs."""
    from microtrain.host.boards import get_board

    plan = resolve(MIT_SCHEME, mnv2)
    board = get_board("stm32f746g-disco")
    off = plan_memory(mnv2, plan, remedy="stochastic", board=board)
    mp = plan_memory(mnv2, plan, remedy="stochastic", board=board, patch="auto", scratch="lean")
    assert mp.patch is not None and mp.patch.overhead <= 0.15
    assert mp.persistent_bytes + mp.arena_bytes <= 120 * KIB, (mp.persistent_bytes, mp.arena_bytes)
    assert off.peak_bytes - mp.peak_bytes > 100 * KIB  # layer by layer needs the 192 KiB expansion
    none = plan_memory(mnv2, resolve(Schedule("none"), mnv2), patch="auto")
    assert none.persistent_bytes + none.arena_bytes <= 70 * KIB
    assert mp.patching["layer_by_layer"]["arena_bytes"] == off.arena_bytes


# ---- the planner ---------------------------------------------------------------------------------
def test_auto_respects_the_mac_limit_and_prefers_the_smallest_arena(mnv2):
    plan = resolve(Schedule("none"), mnv2)
    for limit in (0.02, 0.05, 0.15):
        mp = plan_memory(mnv2, plan, patch="auto", patch_max_overhead=limit)
        assert mp.patch is not None and mp.patch.overhead <= limit
    tight = plan_memory(mnv2, plan, patch="auto", patch_max_overhead=0.02).arena_bytes
    loose = plan_memory(mnv2, plan, patch="auto", patch_max_overhead=0.15).arena_bytes
    assert loose <= tight


def test_auto_leaves_models_alone_when_patching_does_not_help():
    g = load_model("examples/digits_cnn.onnx")
    q = quantize_graph(g, np.random.default_rng(0).standard_normal((16,) + tuple(g.tensors[g.inputs[0]].shape[1:]))
                       .astype(np.float32))
    plan = resolve(Schedule("last-k"), q)  # its peak is in the backward pass
    mp = plan_memory(q, plan, patch="auto")
    assert mp.patch is None and mp.patching["chosen"] is None and "not lower" in mp.patching["reason"]
    assert mp.arena_bytes == plan_memory(q, plan).arena_bytes


def test_explicit_grid_without_a_frozen_stage_is_an_error():
    g = load_model("examples/digits_cnn.onnx")
    q = quantize_graph(g, np.random.default_rng(0).standard_normal((16,) + tuple(g.tensors[g.inputs[0]].shape[1:]))
                       .astype(np.float32))
    with pytest.raises(P.PatchError, match="no frozen stage"):
        plan_memory(q, resolve(Schedule("full"), q), patch=(2, 2))


def test_tile_buffers_are_sized_for_the_largest_tile(mnv2):
    plan = resolve(Schedule("none"), mnv2)
    st = P.build_stage(mnv2, P.find_stages(mnv2, P.stage_input_tensor(mnv2), _frozen(mnv2, plan))[5], (3, 5),
                       P.stage_input_tensor(mnv2))
    mp = plan_memory(mnv2, plan, patch=st)
    sizes = {b.name: b.size for b in mp.arena.buffers}
    for t in st.tensors:
        c = mnv2.tensors[t].shape[3]
        assert sizes[f"tile:{t}"] == max(tile.regions[t].area for tile in st.tiles) * c
    assert mp.patch is st


def test_lean_scratch_only_where_it_sets_the_peak(mnv2):
    plan = resolve(MIT_SCHEME, mnv2)
    fast = plan_memory(mnv2, plan, remedy="stochastic", patch="auto")
    lean = plan_memory(mnv2, plan, remedy="stochastic", patch="auto", scratch="lean")
    assert lean.arena_bytes < fast.arena_bytes
    keys = lean.model.options["lean"]
    assert keys and len(keys) < len([s for s in lean.model.steps if s.key is not None])


# ---- CLI -----------------------------------------------------------------------------------------
def test_plan_cli_reports_layer_by_layer_and_patched():
    r = CliRunner().invoke(cli, ["plan", "examples/digits_cnn.onnx", "--board", "qemu-m4", "--schedule", "last-k",
                                  "--patch", "2x2", "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    p = j["patch"]
    assert p["mode"] == "2x2" and p["chosen"]["grid"] == [2, 2]
    assert p["layer_by_layer"]["peak_bytes"] >= j["sram"]["peak_bytes"] - 64
    assert p["chosen"]["extra_macs"] >= 0 and 0 <= p["chosen"]["overhead"] <= 1
    r = CliRunner().invoke(cli, ["plan", "examples/digits_cnn.onnx", "--board", "qemu-m4", "--schedule", "last-k",
                                  "--patch", "2x2"])
    assert r.exit_code == 0 and "layer by layer ->" in r.output


@pytest.mark.parametrize("args,msg", [
    (["--patch", "3y"], "expected auto, off or a grid"),
    (["--patch", "2x2", "--schedule", "full"], "no frozen stage"),
    (["--patch", "40x40", "--schedule", "last-k"], "finer than"),
])
def test_plan_cli_patch_errors_are_one_line(args, msg):
    r = CliRunner().invoke(cli, ["plan", "examples/digits_cnn.onnx", "--board", "qemu-m4", *args])
    assert r.exit_code != 0
    assert msg in r.output and "Traceback" not in r.output
