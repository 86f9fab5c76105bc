"""The random architecture generator (tests/models/random_arch.py) and the int8 engine on it.

For fixed seeds and a few hypothesis-drawn architectures: the ONNX model is valid and the
frontend reads it as onnx's reference evaluator runs it; the PTQ'd graph verifies and has the
spec's conv/fc layers; every schedule of ``SCHEDULES`` (sparse, bias, last-k, full, fg, hybrid
with both remedies and both loss inputs) trains 3 steps, changes at least one trained parameter
and nothing outside the trained slices. Over a range of seeds, the generator covers every layer
kind and the IR ops the C code generator must handle.
"""
from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings

from microtrain.compiler.frontend import load_model
from microtrain.compiler.ir import verify
from microtrain.compiler.schedule import FG_KINDS, LAYER_OPS, Schedule, conv_fc_layers, resolve
from microtrain.compiler.train_int import Int8Trainer, int8_samples
from models.onnx_helpers import run_ir
from models.random_arch import (FEATURES, IR_OPS, MAX_MACS, N_TRAIN, SCHEDULES, arch_strategy, build,
                                float_graph, quantized, random_spec, samples)

#: 0-4 plus seeds picked so that the fixed set alone covers every feature and IR op
FIXED_SEEDS = (0, 1, 2, 3, 4, 27, 36, 43)
COVERAGE_SEEDS = range(30)
STEPS = 3
SCHEDULE_IDS = [s[0] for s in SCHEDULES]


@functools.lru_cache(maxsize=None)
def _model(seed: int):
    spec = random_spec(seed)
    return (spec,) + quantized(spec)


def _train(q, x, y, skw: dict, tkw: dict, steps: int = STEPS) -> tuple[Int8Trainer, dict]:
    """``steps`` steps of an Int8Trainer; returns it and the initial values of its trained tensors."""
    tr = Int8Trainer(q, Schedule(**skw), **tkw)
    tr.prepare_batches(1, tr.samples_per_step)
    xi = int8_samples(tr, x)
    before = {k: v.copy() for k, v in tr.params.items()}
    b = tr.samples_per_step
    assert steps * b <= len(y)
    for i in range(steps):
        r = tr.step(xi[i * b:(i + 1) * b], y[i * b:(i + 1) * b])
        assert r.samples == b
        assert 0 <= r.loss_q16 and np.isfinite(r.loss)
    assert tr.t == steps
    return tr, before


def _check_trained(tr: Int8Trainer, before: dict, what: str) -> None:
    changed = [k for k, v in before.items() if not np.array_equal(v, tr.params[k])]
    assert changed, f"{what}: no trained parameter changed in {STEPS} steps ({sorted(before)})"
    for name, s in tr.slices.items():
        a, b = before[name].copy(), tr.params[name].copy()
        a[s.index] = 0
        b[s.index] = 0
        assert np.array_equal(a, b), f"{what}: {name} changed outside its trained rows [0, {s.rows})"
        assert b.dtype == before[name].dtype


def _check_quantized(spec, q, x, y) -> None:
    verify(q)
    acts = [t for t in q.tensors.values() if not t.is_const]
    assert {t.dtype for t in acts} <= {"int8", "float32"}
    assert {q.tensors[i].dtype for i in q.inputs} == {"float32"}  # io="float": quantize at the boundary
    layers = conv_fc_layers(q)
    assert len(layers) == spec.num_linear >= 2
    assert layers[-1].op == "fully_connected" and layers[-1].attrs.get("act", "none") == "none"
    for n in layers:
        w = q.tensors[n.inputs[1]]
        assert w.dtype == "int8" and q.tensors[n.inputs[2]].dtype == "int32"
        cout = w.shape[LAYER_OPS[n.op]]
        assert w.quant.scale.size == (cout if spec.per_channel else 1)
    assert x.dtype == np.float32 and x.shape == (len(y),) + tuple(spec.input_shape)
    assert y.dtype == np.int64 and y.min() >= 0 and y.max() < spec.num_classes


# ---------------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------------
def test_random_spec_is_deterministic(tmp_path):
    for seed in (0, 5):
        a, b = random_spec(seed), random_spec(seed)
        assert a == b
        assert open(build(a, tmp_path / "a.onnx"), "rb").read() == open(build(b, tmp_path / "b.onnx"), "rb").read()
    assert random_spec(0) != random_spec(1)


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_model_reads_and_quantizes(seed, tmp_path):
    spec = random_spec(seed)
    assert spec.macs < MAX_MACS
    path = build(spec, tmp_path / f"arch_{seed}.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == \
        ["N", *spec.input_shape]
    # the frontend's float graph computes what the ONNX reference evaluator computes
    from onnx.reference import ReferenceEvaluator

    fg = load_model(path)
    assert len(conv_fc_layers(fg)) == spec.num_linear
    xs = samples(spec, 4, 1)
    want = ReferenceEvaluator(model).run(None, {"input": xs})[0]
    got = run_ir(fg, {"input": xs})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max()))
    spec_, q, x, y = _model(seed)
    _check_quantized(spec, q, x, y)
    assert len(y) == N_TRAIN


@pytest.mark.parametrize("sched", SCHEDULES, ids=SCHEDULE_IDS)
@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_schedule_trains(seed, sched):
    sid, skw, tkw = sched
    spec, q, x, y = _model(seed)
    plan = resolve(Schedule(**skw), q)
    assert plan.trainable_layers and plan.layers[-1].trainable, plan.describe()
    if skw["kind"] in FG_KINDS:
        assert any(lt.method == "fg" and lt.trainable for lt in plan.layers), plan.describe()
    tr, before = _train(q, x, y, skw, tkw)
    _check_trained(tr, before, f"{spec.describe()} [{sid}]")


def test_schedules_valid_for_every_architecture():
    """SCHEDULES resolve on every architecture (no index/count errors, the classifier trained)."""
    for seed in COVERAGE_SEEDS:
        spec = random_spec(seed)
        g = float_graph(spec)
        for sid, skw, tkw in SCHEDULES:
            plan = resolve(Schedule(**skw), g)
            assert len(plan.layers) == spec.num_linear
            assert plan.layers[-1].trainable, (sid, spec.describe())
            assert set(tkw) <= {"lr", "fg_lr", "seed", "remedy", "loss_input", "momentum"}


def test_generator_covers_every_layer_kind():
    seen: set[str] = set()
    ops: set[str] = set()
    for seed in COVERAGE_SEEDS:
        spec = random_spec(seed)
        seen |= spec.features()
        ops |= {n.op for n in float_graph(spec).nodes}
    assert set(FEATURES) - seen == set(), f"features never generated in seeds {COVERAGE_SEEDS}"
    assert set(IR_OPS) - ops == set(), f"IR ops never generated in seeds {COVERAGE_SEEDS}"
    # the fixed seeds alone exercise every feature and op too
    fixed = set().union(*(random_spec(s).features() for s in FIXED_SEEDS))
    assert set(FEATURES) <= fixed, set(FEATURES) - fixed
    fixed_ops = set().union(*({n.op for n in _model(s)[1].nodes} for s in FIXED_SEEDS))
    assert set(IR_OPS) <= fixed_ops, set(IR_OPS) - fixed_ops


@settings(max_examples=5, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=arch_strategy())
def test_hypothesis_architectures_train(spec):
    assert spec.macs < MAX_MACS and spec.num_linear >= 2
    q, x, y = quantized(spec)
    _check_quantized(spec, q, x, y)
    for sid, skw, tkw in SCHEDULES:
        tr, before = _train(q, x, y, skw, tkw)
        _check_trained(tr, before, f"{spec.describe()} [{sid}]")
