"""Training schedules: --update parsing, per-kind defaults, JSON round trip, resolution against a
graph (digits CNN and a hand-built depthwise graph), exact ceil rounding, warnings, one-line errors,
and the shared click options."""
from __future__ import annotations

import json
import math
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from microtrain.compiler.ir import Graph, Node, Tensor, verify
from microtrain.compiler.schedule import (ALL, FORMAT_KEY, FGOptions, Schedule, ScheduleError,
                                          parse_count, parse_update, resolve, rows_for)
from microtrain.host.schedule_options import (SCHEDULE_OPTION_NAMES, pop_schedule_options, schedule_from_options,
                                              schedule_options)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ONNX = ROOT / "examples" / "digits_cnn.onnx"

DIGITS_LAYERS = ["/conv1/Conv", "/conv2/Conv", "/conv3/Conv", "/fc1/Gemm", "/fc2/Gemm"]
# (cout, weight elements per output channel) of the digits CNN's conv/fc layers
DIGITS_SHAPES = [(8, 9), (16, 72), (16, 144), (32, 64), (10, 32)]


@pytest.fixture(scope="module")
def digits():
    from microtrain.compiler.frontend import load_model

    return load_model(str(EXAMPLE_ONNX))


@pytest.fixture(scope="module")
def dw_graph() -> Graph:
    """x[1,8,8,3] -> conv2d(6)+relu -> depthwise(x2 = 12) -> conv2d 1x1 (5, no bias) -> mean ->
    reshape [1,5] -> fully_connected(4)."""
    g = Graph(name="dw", inputs=["x"], outputs=["y"])
    rng = np.random.default_rng(0)

    def act(name, shape):
        g.add_tensor(Tensor(name, shape, "float32"))

    def const(name, shape):
        g.add_tensor(Tensor(name, shape, "float32", data=rng.standard_normal(shape).astype(np.float32)))

    act("x", (1, 8, 8, 3))
    const("c1.w", (6, 3, 3, 3)); const("c1.b", (6,)); act("c1", (1, 8, 8, 6))
    const("dw.w", (1, 3, 3, 12)); const("dw.b", (12,)); act("dw", (1, 8, 8, 12))
    const("pw.w", (5, 1, 1, 12)); act("pw", (1, 8, 8, 5))
    act("gap", (1, 1, 1, 5)); act("flat", (1, 5))
    const("fc.w", (4, 5)); const("fc.b", (4,)); act("y", (1, 4))
    pad = {"pad": (1, 1, 1, 1), "stride": (1, 1), "dilation": (1, 1)}
    g.nodes = [
        Node("conv2d", "c1", ["x", "c1.w", "c1.b"], ["c1"], {**pad, "act": "relu"}),
        Node("depthwise_conv2d", "dw", ["c1", "dw.w", "dw.b"], ["dw"], {**pad, "act": "relu"}),
        Node("conv2d", "pw", ["dw", "pw.w"], ["pw"], {"act": "none"}),
        Node("mean", "gap", ["pw"], ["gap"], {"axes": (1, 2), "keepdims": True}),
        Node("reshape", "flat", ["gap"], ["flat"], {"shape": (1, 5)}),
        Node("fully_connected", "fc", ["flat", "fc.w", "fc.b"], ["y"], {"act": "none"}),
    ]
    return verify(g)


def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(ScheduleError) as ei:
        fn(*args, **kw)
    msg = str(ei.value)
    assert msg and "\n" not in msg
    return msg


def rows(plan) -> list[tuple[int, int, str]]:
    return [(lt.weight_rows, lt.bias_rows, lt.method) for lt in plan.layers]


# ---- parsing ------------------------------------------------------------------------------------

def test_parse_update():
    assert parse_update("-1:1,-2:0.5,-4:0.25") == {-1: 1.0, -2: 0.5, -4: 0.25}
    assert list(parse_update(" 0 : .5 , -1 ")) == [0, -1]
    assert parse_update(" 0 : .5 , -1 ") == {0: 0.5, -1: 1.0}  # INDEX alone = ratio 1
    assert parse_update("-2:25%,+3:100%") == {-2: 0.25, 3: 1.0}
    assert parse_update("-1:1e-1") == {-1: 0.1}


@pytest.mark.parametrize("text, needle", [
    ("", "--update is empty"),
    ("  ", "--update is empty"),
    ("-1:1,", "empty entry"),
    ("x:1", "layer index 'x' is not an integer"),
    ("1.5:1", "layer index '1.5' is not an integer"),
    ("-1:abc", "ratio 'abc' is not a number"),
    ("-1:nan", "ratio 'nan' is not a number"),
    ("-1:inf", "ratio 'inf' is not a number"),
    ("-1:", "ratio '' is not a number"),
    ("-1:0", "ratio 0 is outside (0, 1]"),
    ("-1:-0.5", "ratio -0.5 is outside (0, 1]"),
    ("-1:1.5", "ratio 1.5 is outside (0, 1]"),
    ("-1:150%", "ratio 1.5 is outside (0, 1]"),
    ("-1:1,-2:0.5,-1:0.5", "layer index -1 is given twice"),
])
def test_parse_update_errors(text, needle):
    assert needle in one_line_error(parse_update, text)


def test_parse_count():
    assert parse_count("all", "--last") == ALL
    assert parse_count(" ALL ", "--last") == ALL
    assert parse_count("3", "--last") == 3
    assert parse_count(0, "--last") == 0
    assert "must be >= 0" in one_line_error(parse_count, "-1", "--bias-last")
    assert "expected a number of layers" in one_line_error(parse_count, "two", "--bias-last")


def test_rows_for_is_exact_ceil():
    # float products that land just above an integer must not round up
    assert math.ceil(0.07 * 100) == 8 and rows_for(0.07, 100) == 7
    assert math.ceil(0.14 * 100) == 15 and rows_for(0.14, 100) == 14
    assert math.ceil(0.55 * 100) == 56 and rows_for(0.55, 100) == 55
    assert rows_for(0.1, 30) == 3
    assert rows_for(0.5, 7) == 4
    assert rows_for(0.25, 16) == 4
    assert rows_for(0.26, 16) == 5
    assert rows_for(1e-6, 10) == 1  # at least one row
    assert rows_for(1.0, 7) == 7


# ---- construction and defaults ------------------------------------------------------------------

def test_kind_defaults():
    s = Schedule("sparse")
    assert (s.bias_last, s.update, s.last, s.bp_last, s.fg) == (ALL, {-1: 1.0}, 0, 0, None)
    assert (s.lr, s.momentum, s.qas) == (None, 0.0, True)
    # any selector given: the others are empty, not defaulted
    s = Schedule("sparse", update={-2: 0.5})
    assert (s.bias_last, s.update, s.last) == (0, {-2: 0.5}, 0)
    assert Schedule("fg").fg == FGOptions(3, 0.02, 1)
    assert (Schedule("fg").bias_last, Schedule("fg").update) == (ALL, {-1: 1.0})
    h = Schedule("hybrid")
    assert (h.bp_last, h.bias_last, h.update, h.last) == (1, ALL, {}, 0)
    assert Schedule("hybrid", bp_last=2).bias_last == ALL
    assert Schedule("bias").bias_last == ALL
    assert Schedule("last-k").last == 1
    assert Schedule("LAST_K", last=2).kind == "last-k"
    assert Schedule("full").update == {} and Schedule("none").fg is None


@pytest.mark.parametrize("kw, needle", [
    ({"kind": "adam"}, "unknown schedule 'adam'; expected one of sparse, bias, last-k, full, none, fg, hybrid"),
    ({"kind": "bias", "update": {-1: 1.0}}, "--update does not apply to --schedule bias"),
    ({"kind": "last-k", "bias_last": 2}, "--bias-last does not apply to --schedule last-k"),
    ({"kind": "full", "last": 2}, "--last does not apply to --schedule full"),
    ({"kind": "sparse", "bp_last": 1}, "--bp-last does not apply to --schedule sparse; it is used by --schedule hybrid"),
    ({"kind": "sparse", "fg": FGOptions(m=5)}, "does not apply to --schedule sparse; it is used by --schedule fg or hybrid"),
    ({"kind": "none", "lr": 0.1}, "--lr does not apply to --schedule none (inference only"),
    ({"kind": "none", "qas": False}, "--no-qas does not apply to --schedule none"),
    ({"kind": "sparse", "bias_last": -1}, "--bias-last -1: a number of layers counted from the output end must be >= 0"),
    ({"kind": "sparse", "last": 1.5}, "--last 1.5: expected a number of layers"),
    ({"kind": "sparse", "update": {-1: 0.0}}, "ratio 0 is outside (0, 1]"),
    ({"kind": "sparse", "update": {"-1": 1.0}}, "layer index '-1' is not an integer"),
    ({"kind": "sparse", "lr": 0.0}, "--lr must be a number > 0"),
    ({"kind": "sparse", "momentum": 1.0}, "--momentum must be in [0, 1)"),
])
def test_schedule_errors(kw, needle):
    assert needle in one_line_error(Schedule, **kw)


@pytest.mark.parametrize("kw, needle", [
    ({"m": 0}, "--fg-m must be an integer >= 1"),
    ({"batch": 0}, "--fg-batch must be an integer >= 1"),
    ({"eps": 0.0}, "--fg-eps must be in (0, 1]"),
    ({"eps": 2.0}, "--fg-eps must be in (0, 1]"),
])
def test_fg_option_errors(kw, needle):
    assert needle in one_line_error(FGOptions, **kw)


def test_describe_is_one_line():
    for kind in ("sparse", "bias", "last-k", "full", "none", "fg", "hybrid"):
        d = Schedule(kind).describe()
        assert d and "\n" not in d
    d = Schedule("sparse", bias_last=3, update=parse_update("-1:1,-2:0.5")).describe()
    assert d.startswith("sparse update by backprop: biases of the last 3 conv/fc layers")
    assert "layer -2 (50% of rows)" in d and "lr engine default" in d and "QAS on" in d
    assert "sign-3-SPSA, eps 2% of max|w|" in Schedule("fg").describe()
    assert Schedule("none").describe() == "none: inference only, nothing is trained"


# ---- JSON ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("s", [
    Schedule("sparse"),
    Schedule("sparse", bias_last=4, update={-1: 1.0, -2: 0.5, 0: 0.125}, last=1, lr=0.05, momentum=0.9, qas=False),
    Schedule("bias", bias_last=2), Schedule("last-k", last=ALL), Schedule("full"), Schedule("none"),
    Schedule("fg", update={-1: 0.5}, fg=FGOptions(m=5, eps=0.01, batch=4), lr=0.005),
    Schedule("hybrid", bp_last=2, bias_last=ALL, update={-3: 0.25}),
], ids=lambda s: s.kind)
def test_json_round_trip(s, tmp_path):
    d = s.to_json()
    assert d[FORMAT_KEY] == 1 and d["kind"] == s.kind
    text = json.dumps(d)
    assert Schedule.from_json(json.loads(text)) == s
    assert Schedule.from_json(text) == s
    p = tmp_path / "s.json"
    s.save(p)
    assert Schedule.load(p) == s


def test_json_only_fields_the_kind_reads():
    assert Schedule("none").to_json() == {FORMAT_KEY: 1, "kind": "none"}
    assert set(Schedule("bias").to_json()) == {FORMAT_KEY, "kind", "bias_last", "lr", "momentum", "qas"}
    assert Schedule("sparse", update={-1: 1.0}).to_json()["update"] == {"-1": 1.0}
    # a minimal file takes the kind's defaults
    assert Schedule.from_json({FORMAT_KEY: 1, "kind": "fg"}) == Schedule("fg")


@pytest.mark.parametrize("data, needle", [
    ("[1, 2]", "schedule JSON must be an object, got list"),
    ("{", "schedule is not valid JSON"),
    ({"kind": "sparse"}, "not a microtrain schedule: the JSON object has no 'microtrain_schedule' version field"),
    ({FORMAT_KEY: 2, "kind": "sparse"}, "schedule format version 2 is not supported (written by a newer microtrain)"),
    ({FORMAT_KEY: "1", "kind": "sparse"}, "schedule version '1' is not an integer"),
    ({FORMAT_KEY: 1}, "schedule JSON has no 'kind'"),
    ({FORMAT_KEY: 1, "kind": 3}, "schedule 'kind' must be a string"),
    ({FORMAT_KEY: 1, "kind": "sparse", "epochs": 3}, "unknown schedule field 'epochs'"),
    ({FORMAT_KEY: 1, "kind": "sparse", "update": [[-1, 1.0]]}, "schedule 'update' must be an object"),
    ({FORMAT_KEY: 1, "kind": "sparse", "update": {"a": 1.0}}, "key 'a' is not a layer index"),
    ({FORMAT_KEY: 1, "kind": "sparse", "update": {"-1": 1.0, " -1": 0.5}}, "layer index -1 is given twice"),
    ({FORMAT_KEY: 1, "kind": "sparse", "update": {"-1": "half"}}, "ratio 'half' is not a number"),
    ({FORMAT_KEY: 1, "kind": "fg", "fg": {"m": 3, "sigma": 1}}, "schedule 'fg' must be an object with m, eps, batch"),
    ({FORMAT_KEY: 1, "kind": "bias", "update": {"-1": 1.0}}, "--update does not apply to --schedule bias"),
])
def test_json_errors(data, needle):
    assert needle in one_line_error(Schedule.from_json, data)


def test_load_errors(tmp_path):
    assert "cannot read the schedule file" in one_line_error(Schedule.load, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    msg = one_line_error(Schedule.load, bad)
    assert msg.startswith(f"{bad}: not valid JSON")
    old = tmp_path / "v9.json"
    old.write_text(json.dumps({FORMAT_KEY: 9, "kind": "sparse"}))
    assert one_line_error(Schedule.load, old).startswith(f"{old}: schedule format version 9")


# ---- resolve: digits CNN ------------------------------------------------------------------------

def test_resolve_digits_layers(digits):
    plan = resolve(Schedule("full"), digits)
    assert [lt.node for lt in plan.layers] == DIGITS_LAYERS
    assert [lt.op for lt in plan.layers] == ["conv2d"] * 3 + ["fully_connected"] * 2
    assert [lt.index for lt in plan.layers] == [0, 1, 2, 3, 4]
    assert [lt.rindex for lt in plan.layers] == [-5, -4, -3, -2, -1]
    assert [(lt.cout, lt.row_params) for lt in plan.layers] == DIGITS_SHAPES
    assert plan.layers[0].weight == "conv1.weight_1" and plan.layers[-1].bias == "fc2.bias"
    assert plan.num_trainable_params == sum(c * (r + 1) for c, r in DIGITS_SHAPES)
    assert plan.earliest_trainable_index == 0 and plan.warnings == []


def test_resolve_digits_sparse(digits):
    s = Schedule("sparse", bias_last=3, update=parse_update("-1:1,-2:0.5,-4:0.25"))
    plan = resolve(s, digits)
    assert rows(plan) == [(0, 0, "bp"), (4, 0, "bp"), (0, 16, "bp"), (16, 32, "bp"), (10, 10, "bp")]
    assert plan.num_trainable_params == 4 * 72 + 16 + 16 * 64 + 32 + 10 * 32 + 10
    assert plan.earliest_trainable_index == 1 == plan.earliest_bp_index
    assert [lt.node for lt in plan.trainable_layers] == DIGITS_LAYERS[1:]
    # non-negative indices count from the input
    same = resolve(Schedule("sparse", bias_last=3, update={4: 1.0, 3: 0.5, 1: 0.25}), digits)
    assert rows(same) == rows(plan)
    # default sparse: all biases + classifier weight
    assert rows(resolve(Schedule("sparse"), digits)) == [(0, 8, "bp"), (0, 16, "bp"), (0, 16, "bp"),
                                                          (0, 32, "bp"), (10, 10, "bp")]
    # --last trains whole layers and wins over a partial --update on the same layer
    assert rows(resolve(Schedule("sparse", last=2, update={-2: 0.25}), digits))[3:] == [(32, 32, "bp"), (10, 10, "bp")]


def test_resolve_digits_kinds(digits):
    assert rows(resolve(Schedule("bias", bias_last=2), digits)) == [(0, 0, "bp")] * 3 + [(0, 32, "bp"), (0, 10, "bp")]
    assert rows(resolve(Schedule("last-k", last=2), digits)) == [(0, 0, "bp")] * 3 + [(32, 32, "bp"), (10, 10, "bp")]
    none = resolve(Schedule("none"), digits)
    assert none.trainable_layers == [] and none.num_trainable_params == 0 and none.warnings == []
    assert none.earliest_trainable_index is None
    fg = resolve(Schedule("fg"), digits)
    assert {lt.method for lt in fg.layers} == {"fg"}
    assert fg.params_by_method() == {"bp": 0, "fg": 8 + 16 + 16 + 32 + 330}
    assert fg.earliest_bp_index is None and fg.earliest_trainable_index == 0


def test_resolve_digits_hybrid(digits):
    plan = resolve(Schedule("hybrid"), digits)
    assert rows(plan) == [(0, 8, "fg"), (0, 16, "fg"), (0, 16, "fg"), (0, 32, "fg"), (10, 10, "bp")]
    assert plan.earliest_bp_index == 4 and plan.earliest_trainable_index == 0
    assert plan.params_by_method() == {"bp": 330, "fg": 72}
    plan = resolve(Schedule("hybrid", bp_last=2, update={-3: 0.5}), digits)
    assert rows(plan) == [(0, 0, "fg"), (0, 0, "fg"), (8, 0, "fg"), (32, 32, "bp"), (10, 10, "bp")]
    assert plan.warnings == []
    j = json.loads(json.dumps(plan.to_json()))
    assert j["params_by_method"] == {"bp": 32 * 65 + 330, "fg": 8 * 144}
    assert j["layers"][2] == {"node": "/conv3/Conv", "op": "conv2d", "index": 2, "rindex": -3, "weight_rows": 8,
                              "bias_rows": 0, "method": "fg", "cout": 16, "trainable_params": 8 * 144}


@pytest.mark.parametrize("s, needle", [
    (Schedule("sparse", update={-6: 1.0}), "--update -6: the model has 5 conv/fc layers (valid: -5..-1 or 0..4)"),
    (Schedule("sparse", update={5: 1.0}), "--update 5: the model has 5 conv/fc layers (valid: -5..-1 or 0..4)"),
    (Schedule("sparse", update={-1: 1.0, 4: 0.5}), "--update -1 and 4 both name layer 4 (/fc2/Gemm); give each layer once"),
    (Schedule("sparse", bias_last=20), "--bias-last 20: the model has 5 conv/fc layers (valid: 0..5 or all)"),
    (Schedule("last-k", last=6), "--last 6: the model has 5 conv/fc layers (valid: 0..5 or all)"),
    (Schedule("hybrid", bp_last=9), "--bp-last 9: the model has 5 conv/fc layers (valid: 0..5 or all)"),
])
def test_resolve_errors(digits, s, needle):
    assert one_line_error(resolve, s, digits) == needle


def test_resolve_warnings(digits):
    w = resolve(Schedule("sparse", update={-2: 1.0}), digits).warnings
    assert len(w) == 1 and w[0].startswith("classifier frozen: training may not converge") and "/fc2/Gemm" in w[0]
    assert resolve(Schedule("bias", bias_last=0), digits).warnings == ["the schedule trains nothing on this model"]
    assert resolve(Schedule("sparse", bias_last=5), digits).warnings == []
    w = resolve(Schedule("hybrid", bp_last=0), digits).warnings
    assert w == ["hybrid with --bp-last 0 trains everything by forward gradient (same as --schedule fg)"]
    assert "no forward gradient" in resolve(Schedule("hybrid", bp_last=ALL), digits).warnings[0]
    w = resolve(Schedule("hybrid", update={-1: 0.5}), digits).warnings
    assert w == ["--update -1:0.5 is ignored: layer 4 (/fc2/Gemm) is in the backprop head (--bp-last 1), "
                 "which trains it fully"]
    empty = Graph(name="empty")
    assert resolve(Schedule("full"), empty).warnings == ["the model has no conv/fc layers: nothing can be trained"]
    assert "the model has no conv/fc layers" in one_line_error(resolve, Schedule("sparse"), empty)


# ---- resolve: depthwise -------------------------------------------------------------------------

def test_resolve_depthwise(dw_graph):
    plan = resolve(Schedule("sparse", bias_last=ALL, update={1: 0.25, -2: 0.5, -1: 1.0}), dw_graph)
    assert [(lt.node, lt.op, lt.cout, lt.row_params) for lt in plan.layers] == [
        ("c1", "conv2d", 6, 27), ("dw", "depthwise_conv2d", 12, 9), ("pw", "conv2d", 5, 12),
        ("fc", "fully_connected", 4, 5)]
    # depthwise rows are channels of the weight's last axis: ceil(0.25 * 12) = 3
    assert rows(plan) == [(0, 6, "bp"), (3, 12, "bp"), (3, 0, "bp"), (4, 4, "bp")]
    assert plan.layers[2].bias is None  # no bias tensor: bias_rows stays 0 under bias_last=all
    assert plan.num_trainable_params == 6 + (3 * 9 + 12) + 3 * 12 + (4 * 5 + 4)
    assert rows(resolve(Schedule("full"), dw_graph)) == [(6, 6, "bp"), (12, 12, "bp"), (5, 0, "bp"), (4, 4, "bp")]
    assert "valid: -4..-1 or 0..3" in one_line_error(resolve, Schedule("sparse", update={-5: 1.0}), dw_graph)


# ---- click options -----------------------------------------------------------------------------

@click.command()
@click.option("--json", "as_json", is_flag=True)
@schedule_options
def tiny(as_json: bool, **kw):
    assert set(kw) == set(SCHEDULE_OPTION_NAMES)
    s = schedule_from_options(as_json=as_json, **kw)
    click.echo(json.dumps(s.to_json()) if as_json else s.describe())


def run(*args: str):
    return CliRunner().invoke(tiny, ["--json", *args])


def ok(*args: str) -> Schedule:
    res = run(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return Schedule.from_json(res.output)


def test_options_build_schedules():
    assert ok() == Schedule("sparse")
    assert ok("--schedule", "sparse", "--bias-last", "3", "--update", "-1:1,-2:0.5,-4:0.25") == \
        Schedule("sparse", bias_last=3, update={-1: 1.0, -2: 0.5, -4: 0.25})
    assert ok("--update=-2:50%") == Schedule("sparse", update={-2: 0.5})
    assert ok("--schedule", "bias", "--bias-last", "all") == Schedule("bias")
    assert ok("--schedule", "last-k", "--last", "2", "--lr", "0.1", "--momentum", "0.9") == \
        Schedule("last-k", last=2, lr=0.1, momentum=0.9)
    assert ok("--schedule", "fg", "--fg-eps", "0.01", "--last", "1") == \
        Schedule("fg", last=1, fg=FGOptions(eps=0.01))
    assert ok("--schedule", "hybrid", "--bp-last", "2", "--fg-m", "5", "--fg-batch", "2", "--no-qas") == \
        Schedule("hybrid", bp_last=2, fg=FGOptions(m=5, batch=2), qas=False)
    assert ok("--schedule", "none") == Schedule("none")


def test_options_schedule_file(tmp_path):
    s = Schedule("hybrid", bp_last=2, update={-3: 0.25}, lr=0.01)
    p = tmp_path / "sched.json"
    s.save(p)
    assert ok("--schedule", f"@{p}") == s
    assert ok("--schedule", str(p)) == s
    res = run("--schedule", f"@{p}", "--lr", "0.1", "--no-qas")
    assert isinstance(res.exception, ScheduleError)
    assert str(res.exception) == f"--schedule @{p} holds the whole schedule; remove --lr, --no-qas (or edit the file)"
    res = run("--schedule", f"@{tmp_path / 'nope.json'}")
    assert "cannot read the schedule file" in str(res.exception)


@pytest.mark.parametrize("args, needle", [
    (["--schedule", "adam"], "unknown schedule 'adam'"),
    (["--schedule", "bias", "--update", "-1:1"], "--update does not apply to --schedule bias; it is used by "
                                                 "--schedule sparse, fg or hybrid (use --schedule sparse to train weights too)"),
    (["--schedule", "bias", "--last", "0"], "--last does not apply to --schedule bias"),
    (["--schedule", "sparse", "--fg-m", "3"], "--fg-m does not apply to --schedule sparse"),
    (["--schedule", "fg", "--bp-last", "1"], "--bp-last does not apply to --schedule fg"),
    (["--schedule", "none", "--momentum", "0.5"], "--momentum does not apply to --schedule none"),
    (["--update", "-1:2"], "--update '-1:2': ratio 2 is outside (0, 1]"),
    (["--update", "-1:1,-1:1"], "layer index -1 is given twice"),
    (["--bias-last", "-2"], "--bias-last -2: a number of layers counted from the output end must be >= 0"),
    (["--schedule", "fg", "--fg-eps", "0"], "--fg-eps must be in (0, 1]"),
    (["--lr", "-1"], "--lr must be a number > 0"),
])
def test_options_errors(args, needle):
    res = run(*args)
    assert isinstance(res.exception, ScheduleError), (res.output, res.exception)
    assert needle in str(res.exception) and "\n" not in str(res.exception)


def test_options_error_through_cli_group():
    from microtrain.host.cli import _Group

    @click.group(cls=_Group)
    def root():
        pass

    root.add_command(tiny)
    res = CliRunner().invoke(root, ["tiny", "--schedule", "bias", "--update", "-1:1"])
    assert res.exit_code == 2
    assert res.output.strip().startswith("error: --update does not apply to --schedule bias")
    assert len(res.output.strip().splitlines()) == 1


def test_pop_schedule_options():
    kw = {"model": "m.onnx", "schedule": "fg", "fg_m": 4, "lr": None}
    popped = pop_schedule_options(kw)
    assert kw == {"model": "m.onnx"} and popped == {"schedule": "fg", "fg_m": 4, "lr": None}
    assert schedule_from_options(**popped) == Schedule("fg", fg=FGOptions(m=4))


def test_options_help():
    res = CliRunner().invoke(tiny, ["--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for needle in ("--schedule KIND|@FILE.json", "-1 = classifier", "0 = first layer",
                   "ceil(RATIO*C_out)", "--bp-last K|all", "--fg-eps EPS", "--no-qas", "[default: sparse]"):
        assert needle in text, needle
