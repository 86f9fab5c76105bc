"""`microtrain plan`: the report, --json keys, --compare, --plot, --search and one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from microtrain.host.cli import cli

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "examples" / "digits_cnn.onnx")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_plan_json_has_the_documented_keys():
    r = run("plan", MODEL, "--board", "nucleo-f411re", "--json")
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    for k in ("board", "schedule", "fits", "peak_op", "warnings", "sram", "flash"):
        assert k in j, k
    for k in ("persistent_bytes", "arena_bytes", "stack_bytes", "peak_bytes", "lower_bound_bytes", "capacity_bytes"):
        assert isinstance(j["sram"][k], int), k
    for k in ("params_bytes", "code_bytes_estimate", "capacity_bytes"):
        assert isinstance(j["flash"][k], int), k
    # the planned stack is part of the SRAM the board must hold (the board's reserve no longer has one)
    assert j["sram"]["peak_bytes"] == j["sram"]["persistent_bytes"] + j["sram"]["arena_bytes"] + j["sram"]["stack_bytes"]
    assert j["sram"]["stack"]["stack_bytes"] == j["sram"]["stack_bytes"] > 0 and j["sram"]["stack"]["target"] == "cortex-m4+dsp"
    assert j["sram"]["lower_bound_bytes"] <= j["sram"]["peak_bytes"]
    assert j["fits"] is True


def test_plan_table_and_budget_override():
    r = run("plan", MODEL, "--board", "nucleo-f411re")
    assert r.exit_code == 0 and "fits" in r.stdout and "lower bound" in r.stdout
    r = run("plan", MODEL, "--board", "nucleo-f411re", "--schedule", "full", "--sram", "8K", "--json")
    j = json.loads(r.stdout)
    assert j["sram"]["capacity_bytes"] == 8192 and j["fits"] is False


def test_plan_warns_on_frozen_classifier():
    r = run("plan", MODEL, "--board", "qemu-m4", "--schedule", "sparse", "--update", "0:1", "--bias-last", "0",
            "--json")
    assert r.exit_code == 0
    assert any("classifier frozen" in w for w in json.loads(r.stdout)["warnings"])


def test_plan_compare_orders_schedules():
    r = run("plan", MODEL, "--board", "qemu-m4", "--compare", "--json")
    j = json.loads(r.stdout)
    kinds = [s["schedule"]["kind"] for s in j["schedules"]]
    assert kinds == ["none", "bias", "sparse", "last-k", "full", "fg"]
    peak = {s["schedule"]["kind"]: s["sram"]["peak_bytes"] for s in j["schedules"]}
    assert peak["none"] < peak["bias"] <= peak["sparse"] < peak["full"]
    assert peak["fg"] < peak["sparse"]  # no backward pass


def test_plan_plot_writes_png(tmp_path):
    out = tmp_path / "mem.png"
    r = run("plan", MODEL, "--board", "qemu-m4", "--plot", str(out), "--json")
    assert r.exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, msg", [
    (["--board", "no-such-board"], "board"),
    (["--board", "qemu-m4", "--sram", "lots"], "--sram"),
    (["--board", "qemu-m4", "--search"], "--data"),
    (["--board", "qemu-m4", "--budget", "4K"], "--search"),
    (["--board", "qemu-m4", "--update", "-9:1"], "layer"),
])
def test_plan_errors_are_one_line(args, msg):
    r = CliRunner().invoke(cli, ["plan", MODEL, *args])
    assert r.exit_code == 2, r.output
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and msg in err[0], r.stderr


def test_inference_that_cannot_fit_names_a_board_that_would():
    r = CliRunner().invoke(cli, ["plan", MODEL, "--board", "qemu-m4", "--sram", "512"])
    assert r.exit_code == 2
    assert "inference alone does not fit" in r.stderr and "smallest board that fits" in r.stderr


def test_search_writes_a_schedule_that_fits(tmp_path):
    out = tmp_path / "s.json"
    r = run("plan", MODEL, "--board", "qemu-m4", "--search", "--data", "digits", "--budget", "4K",
            "--steps", "150", "--jobs", "2", "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert j["fits"] and j["peak_bytes"] <= 4096
    saved = json.loads(out.read_text())
    assert saved["kind"] in ("sparse", "bias")
    r = run("plan", MODEL, "--board", "qemu-m4", "--schedule", f"@{out}", "--json")
    assert json.loads(r.stdout)["sram"]["peak_bytes"] == j["peak_bytes"]
