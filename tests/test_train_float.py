"""The float twin (compiler/train_float.py): program semantics, sparse rows, the forward-gradient
stream and update, and learning on the digits last-mile task.

Program semantics are checked against ``reference_grads``, a plain reverse pass over the graph
written here (independent of compiler/program.py): every gradient taken at the pre-step weights.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from microtrain.compiler.interpreter import Interpreter
from microtrain.compiler.ir import Graph, Node, Tensor, verify
from microtrain.compiler.ops import registry
from microtrain.compiler.ops.loss import softmax_cross_entropy_float
from microtrain.compiler.program import build_program
from microtrain.compiler.quantize import to_ir_layout
from microtrain.compiler.schedule import FGOptions, Schedule, resolve
from microtrain.compiler.train_float import (FloatTrainer, evaluate, fg_walk, fmix32, perturbation_seed,
                                             rademacher, train, train_float_twin, xorshift32)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ONNX = ROOT / "examples" / "digits_cnn.onnx"


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from microtrain.compiler.frontend import load_model

    return load_model(str(EXAMPLE_ONNX))


@pytest.fixture(scope="module")
def task(digits):
    """The shifted digits task with samples in the IR layout (NHWC)."""
    from microtrain.host.data import load_data

    ds = load_data("digits", digits)
    return dataclasses.replace(ds, x_train=to_ir_layout(ds.x_train, digits),
                               x_test=to_ir_layout(ds.x_test, digits), layout="NHWC")


@pytest.fixture(scope="module")
def res_graph() -> Graph:
    """x[1,6,6,2] -> conv 3x3 (4)+relu = c1 -> depthwise x2 (8)+relu -> conv 1x1 (4) -> add(., c1)+relu
    -> maxpool 2x2 -> mean -> reshape [1,4] -> fc (3) -> softmax. c1 fans out (residual)."""
    g = Graph(name="res", inputs=["x"], outputs=["p"])
    rng = np.random.default_rng(7)

    def act(name, shape):
        g.add_tensor(Tensor(name, shape, "float32"))

    def const(name, shape, scale=0.5):
        g.add_tensor(Tensor(name, shape, "float32", data=(scale * rng.standard_normal(shape)).astype(np.float32)))

    act("x", (1, 6, 6, 2))
    const("c1.w", (4, 3, 3, 2)); const("c1.b", (4,)); act("c1", (1, 6, 6, 4))
    const("dw.w", (1, 3, 3, 8)); const("dw.b", (8,)); act("dw", (1, 6, 6, 8))
    const("pw.w", (4, 1, 1, 8)); const("pw.b", (4,)); act("pw", (1, 6, 6, 4))
    act("sum", (1, 6, 6, 4)); act("pool", (1, 3, 3, 4)); act("gap", (1, 1, 1, 4)); act("flat", (1, 4))
    const("fc.w", (3, 4)); const("fc.b", (3,)); act("z", (1, 3)); act("p", (1, 3))
    pad = {"pad": (1, 1, 1, 1), "stride": (1, 1), "dilation": (1, 1)}
    g.nodes = [
        Node("conv2d", "c1", ["x", "c1.w", "c1.b"], ["c1"], {**pad, "act": "relu"}),
        Node("depthwise_conv2d", "dw", ["c1", "dw.w", "dw.b"], ["dw"], {**pad, "act": "relu6"}),
        Node("conv2d", "pw", ["dw", "pw.w", "pw.b"], ["pw"], {"act": "none"}),
        Node("add", "sum", ["pw", "c1"], ["sum"], {"act": "relu"}),
        Node("max_pool2d", "pool", ["sum"], ["pool"], {"ksize": (2, 2), "stride": (2, 2)}),
        Node("mean", "gap", ["pool"], ["gap"], {"axes": (1, 2), "keepdims": True}),
        Node("reshape", "flat", ["gap"], ["flat"], {"shape": (1, 4)}),
        Node("fully_connected", "fc", ["flat", "fc.w", "fc.b"], ["z"], {"act": "none"}),
        Node("softmax", "sm", ["z"], ["p"], {}),
    ]
    return verify(g)


def res_samples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6, 6, 2)).astype(np.float32), rng.integers(0, 3, n)


def reference_grads(graph: Graph, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and dL/dparam of every weight/bias of conv/fc layers, by a plain reverse pass over
    ``graph`` (trailing softmax replaced by the loss), every gradient at the graph's constants."""
    env = Interpreter(graph).run(x, keep_all=True)
    nodes = [n for n in graph.nodes if n.op != "softmax"]
    loss, gz = softmax_cross_entropy_float(env[nodes[-1].outputs[0]], y)
    grads = {nodes[-1].outputs[0]: gz}
    pgrads = {}
    for n in reversed(nodes):
        op = registry.get(n.op)
        need = {k for k, i in enumerate(n.inputs) if i and i not in graph.inputs
                and (k in op.param_inputs or not graph.tensors[i].is_const)}
        xs = [graph.tensors[i].data if graph.tensors[i].is_const else env[i] for i in n.inputs]
        out = op.backward_float(n, xs, [env[o] for o in n.outputs], [grads[o] for o in n.outputs], need)
        for k, gk in out.items():
            name = n.inputs[k]
            if k in op.param_inputs:
                pgrads[name] = gk
            else:
                grads[name] = grads[name] + gk if name in grads else gk
    return loss, pgrads


def with_params(graph: Graph, params: dict[str, np.ndarray]) -> Graph:
    g = graph.copy()
    for name, v in params.items():
        g.tensors[name].data = np.asarray(v, dtype=np.float32)
    return g


def constants(graph: Graph) -> dict[str, np.ndarray]:
    return {n: t.data.copy() for n, t in graph.tensors.items() if t.is_const}


# ---- the perturbation stream -------------------------------------------------------------------
def test_xorshift32_and_seed_golden():
    assert xorshift32(1) == 270369  # Marsaglia 13/17/5 from state 1
    assert fmix32(1) == 0x514E28B7 and fmix32(0) == 0  # MurmurHash3 fmix32
    # pinned: the int8 engine (C) must regenerate these
    assert [perturbation_seed(0, 0, 1), perturbation_seed(0, 0, 2), perturbation_seed(1, 0, 1),
            perturbation_seed(0, 1, 1)] == [4215923267, 2146026480, 2174810681, 202132762]
    assert all(perturbation_seed(s, t, i) != 0 for s in range(3) for t in range(50) for i in range(1, 4))


def test_rademacher_bits():
    z = rademacher(1, 40)
    assert z.dtype == np.int8 and z.shape == (40,)
    d0, d1 = xorshift32(1), xorshift32(xorshift32(1))
    expect = [1 if (d0 >> e) & 1 else -1 for e in range(32)] + [1 if (d1 >> e) & 1 else -1 for e in range(8)]
    assert z.tolist() == expect
    long = rademacher(perturbation_seed(5, 17, 2), 10_000)
    np.testing.assert_array_equal(long[:333], rademacher(perturbation_seed(5, 17, 2), 333))
    assert set(np.unique(long)) == {-1, 1} and abs(long.mean()) < 0.05
    assert rademacher(3, 0).size == 0
    with pytest.raises(ValueError):
        rademacher(0, 4)


def test_fg_walk_order(res_graph):
    plan = resolve(Schedule("fg", update={1: 0.5, -1: 1.0}, bias_last=2), res_graph)
    walk = fg_walk(res_graph, plan)
    assert [(s.tensor, s.axis, s.rows, s.shape, s.offset) for s in walk] == [
        ("dw.w", 3, 4, (1, 3, 3, 4), 0),
        ("pw.b", 0, 4, (4,), 36),
        ("fc.w", 0, 3, (3, 4), 40),
        ("fc.b", 0, 3, (3,), 52),
    ]


# ---- backprop: program semantics -----------------------------------------------------------------
def test_full_step_equals_reference_backprop(res_graph):
    """One streaming step of schedule full = SGD with every gradient taken at the pre-step weights
    (fan-out of c1 summed, masks of relu/relu6, max-pool routing, trailing softmax -> loss)."""
    before = constants(res_graph)
    x, y = res_samples(1)
    lr = 0.3
    tr = FloatTrainer(res_graph, Schedule("full"), lr=lr)
    r = tr.step(x, y)
    loss, pg = reference_grads(res_graph, x, y)
    assert r.loss == pytest.approx(loss, rel=1e-12)
    assert set(tr.params) == set(pg) == {"c1.w", "c1.b", "dw.w", "dw.b", "pw.w", "pw.b", "fc.w", "fc.b"}
    for name, g in pg.items():
        np.testing.assert_allclose(tr.params[name], before[name].astype(np.float64) - lr * g, rtol=1e-12,
                                   atol=1e-15, err_msg=name)
    for name, v in before.items():  # the input graph is never modified
        np.testing.assert_array_equal(res_graph.tensors[name].data, v)


def test_update_order_grad_input_reads_pre_update_weights(digits, task):
    """grad_input of a layer runs before its update: fc1's gradient flows through the old fc2 weight.
    Reordering the program (fc2 updates first) changes the result."""
    sched = Schedule("last-k", last=2)
    plan = resolve(sched, digits)
    prog = build_program(digits, plan)
    kinds = [(s.kind, s.node, s.attrs.get("input")) for s in prog.backward_steps]
    # the weight update after the input gradient; the bias update (not read by it) comes first
    assert kinds.index(("grad_input", "/fc2/Gemm", 0)) < kinds.index(("update", "/fc2/Gemm", 1))
    assert kinds.index(("update", "/fc2/Gemm", 2)) < kinds.index(("grad_input", "/fc2/Gemm", 0))
    x, y = task.x_train[:1], task.y_train[:1]
    lr = 0.05
    _, pg = reference_grads(digits, x, y)
    tr = FloatTrainer(digits, plan, lr=lr, program=prog)
    tr.step(x, y)
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        expect = digits.tensors[name].data.astype(np.float64) - lr * pg[name]
        np.testing.assert_allclose(tr.params[name], expect, rtol=1e-12, atol=1e-15, err_msg=name)

    steps = list(prog.steps)
    ups = [s for s in steps if s.kind == "update" and s.node == "/fc2/Gemm"]
    wrong = [s for s in steps if s not in ups]
    gi = next(k for k, s in enumerate(wrong) if s.kind == "grad_input" and s.node == "/fc2/Gemm")
    wrong[gi:gi] = ups
    bad = FloatTrainer(digits, plan, lr=lr, program=dataclasses.replace(prog, steps=wrong))
    bad.step(x, y)
    np.testing.assert_array_equal(bad.params["fc2.weight"], tr.params["fc2.weight"])
    assert np.max(np.abs(bad.params["fc1.weight"] - tr.params["fc1.weight"])) > 1e-6


def test_program_reads_are_enforced(res_graph):
    """A backward step sees only what it lists in ``reads``: dropping the weight from a grad_input's
    reads makes the step fail instead of silently reading it."""
    plan = resolve(Schedule("last-k", last=2), res_graph)
    prog = build_program(res_graph, plan)
    steps = [dataclasses.replace(s, reads=[r for r in s.reads if r != "fc.w"])
             if s.kind == "grad_input" and s.node == "fc" else s for s in prog.steps]
    tr = FloatTrainer(res_graph, plan, lr=0.1, program=dataclasses.replace(prog, steps=steps))
    x, y = res_samples(1)
    with pytest.raises(RuntimeError, match="does not list"):
        tr.step(x, y)


def test_sparse_rows_leave_other_rows_untouched(res_graph):
    sched = Schedule("sparse", update={1: 0.5, 2: 0.5, -1: 0.5}, bias_last=2)
    plan = resolve(sched, res_graph)
    assert [(lt.weight_rows, lt.bias_rows) for lt in plan.layers] == [(0, 0), (4, 0), (2, 4), (2, 3)]
    before = constants(res_graph)
    x, y = res_samples(4, seed=1)
    lr = 0.2
    tr = FloatTrainer(res_graph, plan, lr=lr)
    tr.step(x[:1], y[:1])
    _, pg = reference_grads(res_graph, x[:1], y[:1])
    for name, idx, rows_idx in (("dw.w", np.s_[..., :4], np.s_[..., 4:]), ("pw.w", np.s_[:2], np.s_[2:]),
                                ("fc.w", np.s_[:2], np.s_[2:])):
        np.testing.assert_allclose(tr.params[name][idx], before[name][idx] - lr * pg[name][idx], rtol=1e-12,
                                   atol=1e-15, err_msg=name)
    for j in range(1, 4):
        tr.step(x[j:j + 1], y[j:j + 1])
    p = tr.params
    for name, trained, frozen in (("dw.w", np.s_[..., :4], np.s_[..., 4:]), ("pw.w", np.s_[:2], np.s_[2:]),
                                  ("fc.w", np.s_[:2], np.s_[2:])):
        np.testing.assert_array_equal(p[name][frozen], before[name][frozen])  # exactly, as stored
        assert np.all(np.any(p[name][trained] != before[name][trained], axis=tuple(
            a for a in range(p[name].ndim) if a != (3 if name == "dw.w" else 0))))
    assert set(p) == {"dw.w", "pw.w", "pw.b", "fc.w", "fc.b"}
    for name in ("pw.b", "fc.b"):
        assert np.all(p[name] != before[name])
    g = tr.trained_graph()
    for name in ("c1.w", "c1.b", "dw.b"):
        np.testing.assert_array_equal(g.tensors[name].data, before[name])
    for name, v in before.items():
        np.testing.assert_array_equal(res_graph.tensors[name].data, v)


def test_accumulate_and_momentum(res_graph):
    x, y = res_samples(2, seed=2)
    lr = 0.1
    _, g1 = reference_grads(res_graph, x[:1], y[:1])
    _, g2 = reference_grads(res_graph, x[1:], y[1:])
    tr = FloatTrainer(res_graph, Schedule("last-k", last=2), lr=lr, accumulate=2)
    tr.step(x[:1], y[:1])
    for name, v in tr.params.items():  # nothing applied after 1 of 2 samples
        np.testing.assert_array_equal(v, res_graph.tensors[name].data.astype(np.float64))
    tr.step(x[1:], y[1:])
    for name in ("pw.w", "pw.b", "fc.w", "fc.b"):
        np.testing.assert_allclose(tr.params[name], res_graph.tensors[name].data - lr * (g1[name] + g2[name]) / 2,
                                   rtol=1e-12, atol=1e-15, err_msg=name)

    mu = 0.9
    tr = FloatTrainer(res_graph, Schedule("sparse", update={-1: 0.5}), lr=lr, momentum=mu)
    tr.step(x[:1], y[:1])
    w1 = tr.params["fc.w"].copy()
    tr.step(x[1:], y[1:])
    assert tr._velocity["fc.w"].shape == (2, 4)  # state for the trained slice only
    _, g2b = reference_grads(with_params(res_graph, {"fc.w": w1}), x[1:], y[1:])
    w0 = res_graph.tensors["fc.w"].data.astype(np.float64)
    np.testing.assert_allclose(tr.params["fc.w"][:2], w1[:2] - lr * (mu * g1["fc.w"][:2] + g2b["fc.w"][:2]),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(tr.params["fc.w"][2:], w0[2:])


def test_lr_schedules(res_graph):
    tr = FloatTrainer(res_graph, Schedule("fg"), lr=0.2, lr_schedule="cosine", total_steps=100)
    assert tr.lr_at("fg", 0) == 0.2 and tr.lr_at("fg", 100) == 0.0 and tr.lr_at("fg", 500) == 0.0
    assert tr.lr_at("fg", 50) == pytest.approx(0.1)
    assert FloatTrainer(res_graph, Schedule("hybrid")).lrs == {"bp": 0.01, "fg": 0.01}
    assert FloatTrainer(res_graph, Schedule("bias")).lrs["bp"] == 0.1
    assert FloatTrainer(res_graph, Schedule("sparse", lr=0.03)).lrs["bp"] == 0.03
    assert FloatTrainer(res_graph, Schedule("fg", lr=0.004)).lrs["fg"] == 0.004
    with pytest.raises(ValueError, match="total_steps"):
        FloatTrainer(res_graph, Schedule("full"), lr_schedule="cosine")
    with pytest.raises(ValueError, match="lr_schedule"):
        FloatTrainer(res_graph, Schedule("full"), lr_schedule="step")


# ---- forward gradient ---------------------------------------------------------------------------
def test_fg_step_equals_reference_spsa(res_graph):
    """One sign-m-SPSA step against a direct evaluation: z from the seeded stream in walk order,
    eps = 2% of max|w| per tensor, L on the batch, w -= lr * sum(sign * z) / m; weights restored
    exactly between perturbations."""
    fg = FGOptions(m=3, eps=0.02, batch=3)
    sched = Schedule("fg", update={-1: 1.0, 1: 0.5}, bias_last=2, fg=fg)
    seed, lr = 11, 0.05
    x, y = res_samples(3, seed=3)
    tr = FloatTrainer(res_graph, sched, lr=lr, seed=seed)
    tr.t = 4  # the stream depends on the step index
    tr.step(x, y)
    walk = fg_walk(res_graph, tr.plan)
    n = sum(s.size for s in walk)
    w0 = {s.tensor: res_graph.tensors[s.tensor].data.astype(np.float64) for s in walk}
    eps = {k: 0.02 * np.max(np.abs(v)) for k, v in w0.items()}
    g = {k: np.zeros_like(v) for k, v in w0.items()}
    for i in range(1, fg.m + 1):
        z = rademacher(perturbation_seed(seed, 4, i), n)
        losses = []
        for sign in (1.0, -1.0):
            p = {k: v.copy() for k, v in w0.items()}
            for s in walk:
                p[s.tensor][s.index] += sign * eps[s.tensor] * z[s.offset:s.offset + s.size].reshape(s.shape)
            zlog = Interpreter(with_params(res_graph, p)).run(x, keep_all=True)["z"]
            losses.append(softmax_cross_entropy_float(zlog, y)[0])
        assert losses[0] != losses[1]
        for s in walk:
            g[s.tensor][s.index] += np.sign(losses[0] - losses[1]) * z[s.offset:s.offset + s.size].reshape(s.shape)
    for k in w0:
        np.testing.assert_allclose(tr.params[k], w0[k] - lr * g[k] / fg.m, rtol=1e-12, atol=1e-15, err_msg=k)
    np.testing.assert_array_equal(tr.params["dw.w"][..., 4:], w0["dw.w"][..., 4:])


def test_fg_zero_eps_tensor_is_excluded(res_graph):
    g = res_graph.copy()
    g.tensors["pw.b"].data = np.zeros(4, np.float32)
    sched = Schedule("fg", update={-1: 1.0}, bias_last=2)
    tr = FloatTrainer(g, sched, lr=0.05)
    ref = FloatTrainer(res_graph, sched, lr=0.05)
    assert tr.fg_excluded == ["pw.b"] and ref.fg_excluded == []
    assert [(s.tensor, s.offset) for s in tr.walk] == [(s.tensor, s.offset) for s in ref.walk]
    x, y = res_samples(1, seed=4)
    for _ in range(3):
        tr.step(x, y)
    np.testing.assert_array_equal(tr.params["pw.b"], np.zeros(4))
    assert np.any(tr.params["fc.w"] != g.tensors["fc.w"].data)


# ---- the digits last-mile task -------------------------------------------------------------------
def test_backprop_last_layer_digits(digits, task):
    """Float backprop of the classifier (weight + bias), batch 1, 2 epochs: 48% -> >= 80%."""
    r = train_float_twin(digits, Schedule("last-k"), task, epochs=2, seed=0)
    assert 0.45 <= r.acc_before <= 0.52
    assert r.acc_after >= 0.80, r.acc_after
    h = r.history
    assert h.steps == 2 * len(task.y_train) and h.samples_per_step == 1
    assert h.running_acc[-1] > h.running_acc[99] and np.mean(h.loss[-200:]) < np.mean(h.loss[:200])


def test_forward_gradient_classifier_digits(digits, task):
    """sign-3-SPSA on the classifier (weight + bias), batch 4, as many steps as 2 backprop epochs:
    >= +15 points."""
    sched = Schedule("fg", update={-1: 1.0}, bias_last=1, fg=FGOptions(batch=4))
    r = train_float_twin(digits, sched, task, steps=2 * len(task.y_train), seed=0)
    assert r.trainer.lr_schedule == "cosine"
    assert r.acc_after >= r.acc_before + 0.15, (r.acc_before, r.acc_after)


def test_hybrid_digits(digits, task):
    """Hybrid: classifier by backprop, fc1 bias by forward gradient, in the same steps."""
    sched = Schedule("hybrid", bias_last=2)
    plan = resolve(sched, digits)
    assert [(lt.method, lt.weight_rows, lt.bias_rows) for lt in plan.layers[-2:]] == [("fg", 0, 32),
                                                                                        ("bp", 10, 10)]
    r = train_float_twin(digits, plan, task, epochs=2, seed=0)
    assert r.acc_after >= 0.80, r.acc_after
    p = r.trainer.params
    assert set(p) == {"fc1.bias", "fc2.weight", "fc2.bias"}
    assert np.max(np.abs(p["fc1.bias"] - digits.tensors["fc1.bias"].data)) > 1e-3
    assert r.history.skipped < r.history.steps  # most perturbations decide


def test_determinism(digits, task):
    sched = Schedule("hybrid", bias_last=2)
    runs = [train_float_twin(digits, sched, task, steps=200, seed=s) for s in (3, 3, 4)]
    a, b, c = (r.trainer for r in runs)
    np.testing.assert_array_equal(runs[0].history.loss, runs[1].history.loss)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert any(np.any(a.params[k] != c.params[k]) for k in a.params)
    assert runs[0].acc_after == runs[1].acc_after


def test_train_and_evaluate_api(digits, task):
    """train() streams per-epoch permutations; source-layout (NCHW) samples are accepted."""
    tr = FloatTrainer(digits, Schedule("bias", bias_last=1), lr=0.1)
    nchw = np.ascontiguousarray(task.x_test.transpose(0, 3, 1, 2))
    assert evaluate(tr, nchw, task.y_test) == evaluate(tr, task.x_test, task.y_test)
    h = train(tr, task.x_train[:50], task.y_train[:50], epochs=2, shuffle_seed=1,
              x_eval=task.x_test, y_eval=task.y_test, eval_every=40)
    assert h.steps == 100 and [e[0] for e in h.evals] == [40, 80, 100]
    assert h.loss.shape == h.running_acc.shape == (100,) and tr.t == 100
    with pytest.raises(ValueError, match="exactly one"):
        train(tr, task.x_train, task.y_train)
