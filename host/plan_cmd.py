"""``microtrain plan``: will training fit this board, and what is the best schedule that does?"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from ..compiler.errors import DataError, MicrotrainError
from . import report as rp
from .schedule_options import memory_options, schedule_options

COMPARE_KINDS = ("none", "bias", "sparse", "last-k", "full", "fg")
REMEDIES = ("master", "stochastic")
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}


def parse_bytes(text: str | int | None, flag: str) -> int | None:
    """``300000``, ``64K``, ``64KiB``, ``1.5M`` -> bytes (K = 1024). None stays None."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise MicrotrainError(f"{flag} {text!r}: expected a byte count like 300000, 64K, 320KiB or 1M")
    v = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if v <= 0:
        raise MicrotrainError(f"{flag} {text!r}: must be > 0")
    return v


def plan_warnings(graph, plan, options: dict[str, Any]) -> list[str]:
    """Warnings about a schedule that plans but may not train well."""
    out = list(plan.warnings)
    trained = plan.trainable_layers
    if trained and not plan.layers[-1].trainable:
        out.append(f"classifier frozen ({plan.layers[-1].node}): training may not converge")
    if any(lt.method == "fg" for lt in trained):
        from ..compiler.train_int import Int8Trainer

        tr = Int8Trainer(graph, plan, remedy=options.get("remedy", "master"))
        for w in tr.warnings:
            if w not in out:
                out.append(w)
    return out


def build_report(qgraph, plan, board, sram: int | None, flash: int | None, options: dict[str, Any],
                 algorithms=None) -> tuple[dict[str, Any], Any]:
    """Plan ``plan`` on ``qgraph`` and judge it against the board (or the given budgets)."""
    from ..compiler.memory.memplan import plan_memory

    mp = plan_memory(qgraph, plan, algorithms=algorithms, board=board, **options)
    sram_cap = sram if sram is not None else board.usable_sram_bytes
    flash_cap = flash if flash is not None else board.usable_flash_bytes
    flash_total = mp.flash_params_bytes + mp.code_bytes_estimate
    j = mp.to_json()
    j["sram"]["capacity_bytes"] = sram_cap
    j["sram"]["headroom_bytes"] = sram_cap - mp.peak_bytes
    j["sram"]["board_bytes"] = board.sram_bytes
    j["flash"]["capacity_bytes"] = flash_cap
    j["flash"]["total_bytes"] = flash_total
    j["flash"]["headroom_bytes"] = flash_cap - flash_total
    j["flash"]["board_bytes"] = board.flash_bytes
    j["fits"] = bool(mp.peak_bytes <= sram_cap and flash_total <= flash_cap)
    j["fits_sram"] = bool(mp.peak_bytes <= sram_cap)
    j["fits_flash"] = bool(flash_total <= flash_cap)
    j["trainable_params"] = plan.num_trainable_params
    pk = j["peak"]
    j["peak_op"] = {"step": pk["step"], "op": pk["op"], "node": pk["node"], "kind": pk.get("kind"),
                    "live": [b["name"] for b in pk["live"]]}
    return j, mp


def overhead(train: dict[str, Any], base: dict[str, Any], mp_train, mp_base) -> dict[str, int]:
    """The training overhead of a schedule over inference only, split by what it is: persistent
    (trainable params, master copies, optimizer state, accumulators), arena (saved tensors,
    masks, gradients, scratch at the training phase's widest step) and stack."""
    out: dict[str, int] = {}
    for k, v in train["sram"]["persistent"].items():
        d = v - base["sram"]["persistent"].get(k, 0)
        if d:
            out[k] = d
    live = _training_peak(mp_train)
    for k, v in live.items():
        if k in ("saved", "mask", "gradient", "scratch", "loss"):
            out[f"arena_{k}"] = v
    out["arena_growth"] = max(0, mp_train.arena_bytes - mp_base.arena_bytes)
    out["stack_growth"] = max(0, mp_train.stack_bytes - mp_base.stack_bytes)
    out["total"] = train["sram"]["peak_bytes"] - base["sram"]["peak_bytes"]
    return out


def _training_peak(mp) -> dict[str, int]:
    """Arena bytes by kind at the widest step of the training phase (loss onward)."""
    steps = [s.index for s in mp.model.steps if s.kind not in ("input", "forward")]
    if not steps:
        return {}
    k = max(steps, key=lambda i: (mp.arena.live_bytes(i), -i))
    out: dict[str, int] = {}
    for b in mp.arena.live_at(k):
        kind = mp.model.kinds.get(b.name, "?")
        out[kind] = out.get(kind, 0) + b.size
    return out


def _load(model: str, data: str | None, calib: int, show: bool):
    """The int8 graph to plan (float models are quantized: with the data when given, else with
    synthetic calibration samples, which changes scales, never memory)."""
    import numpy as np

    from ..compiler.inspect import precision
    from ..compiler.quantize import quantize_graph
    from .cli import _guard, load_model_file

    with rp.progress(f"reading {model}", show):
        graph = load_model_file(model)
    ds = None
    if data is not None:
        with rp.progress(f"loading {data}", show), _guard("unexpected-data", DataError, f"{data}: could not load data"):
            from .data import load_data

            ds = load_data(data, graph)
    if precision(graph) != "float32":
        return graph, graph, ds
    if ds is not None:
        x = ds.x_train[:min(calib, len(ds.x_train))]
    else:
        t = graph.tensors[graph.inputs[0]]  # IR layout (NHWC): quantize_graph takes either layout
        shape = (8,) + tuple(t.shape[1:])
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with rp.progress("quantizing", show):
        return graph, quantize_graph(graph, x), ds


def smallest_fit(peak: int, flash_total: int) -> str:
    from .boards import all_boards

    fits = sorted((b for b in all_boards() if b.usable_sram_bytes >= peak and b.usable_flash_bytes >= flash_total),
                  key=lambda b: (b.usable_sram_bytes, b.usable_flash_bytes))
    if fits:
        b = fits[0]
        return f"smallest board that fits: {b.name} ({rp.fmt_bytes(b.usable_sram_bytes)} usable SRAM)"
    return "no known board fits it"


@click.command("plan", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               short_help="Plan SRAM and flash of training on a board; compare or search schedules.")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--board", "board_name", required=True, metavar="B", help="Target board (see `microtrain boards`).")
@schedule_options
@click.option("--remedy", type=click.Choice(REMEDIES), default="master", show_default=True,
              help="Sub-LSB update remedy of backprop int8 weights: an int16 master copy of the trained "
                   "rows (2 bytes per trained weight) or stochastic rounding (4 bytes of PRNG state).")
@click.option("--accumulate", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Gradient accumulation over K samples (its accumulators are persistent SRAM).")
@click.option("--sram", "sram", metavar="BYTES", default=None,
              help="SRAM budget instead of the board's usable SRAM (e.g. 96K, 300000).")
@click.option("--flash", "flash", metavar="BYTES", default=None,
              help="Flash budget instead of the board's usable flash.")
@click.option("--compare", is_flag=True,
              help="Plan none / bias / sparse / last-k / full / fg side by side (defaults of each kind).")
@click.option("--search", is_flag=True,
              help="Find the best schedule within the budget: contribution analysis by host simulation "
                   "(needs --data), then a budgeted selection checked by the planner.")
@click.option("--data", default=None, metavar="D", help="Data for --search (digits, digits-clean, FILE.npz) and "
                                                         "for quantizing a float model.")
@click.option("--budget", default=None, metavar="BYTES",
              help="--search: SRAM budget (default: --sram, else the board's usable SRAM).")
@click.option("--steps", "search_steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="--search: training steps per probe simulation [default: 1 epoch of the data].")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="--search: probe simulations run in parallel on N local processes.")
@click.option("-o", "--output", "output", default=None, metavar="FILE.json",
              help="--search: write the chosen schedule here (default: schedule-<model>-<budget>.json).")
@click.option("--seed", type=int, default=0, show_default=True, metavar="S", help="--search: simulation seed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--plot", default=None, metavar="FILE.png",
              help="Write a PNG timeline of the arena: buffers by offset over program steps, peak marked.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True, metavar="N",
              help="Samples used to quantize a float model (from --data when given).")
@memory_options
def plan_cmd(model: str, board_name: str, remedy: str, accumulate: int, sram: str | None, flash: str | None,
             compare: bool, search: bool, data: str | None, budget: str | None, search_steps: int | None,
             jobs: int, output: str | None, seed: int, as_json: bool, plot: str | None, calib_samples: int,
             **kw: Any) -> None:
    """Plan every byte of one training step of MODEL on a board.

    The training program of the schedule is laid out step by step (forward, loss, backward,
    updates; forward-gradient passes), every buffer gets its lifetime, and the arena is packed by
    several algorithms (the smallest verified packing wins). The arena computed here is the
    firmware's arena. Reported: flash (parameters, code estimate), persistent SRAM (trained
    parameters, master copies, optimizer state), the arena and the step at its peak with what is
    live there, the stack the program needs on the board's core (worst case of the device loop,
    the generated code and the deepest kernel it calls; the firmware links exactly this stack),
    the lower bound (the most bytes live at one step: no packing beats it), the board's usable
    capacity (SRAM/flash minus its reserved bytes), headroom and whether it fits.

    \b
    Examples:
      microtrain plan examples/digits_cnn.onnx --board nucleo-f411re
      microtrain plan model.onnx --board stm32f746g-disco --bias-last 20 --update -1:1,-3:0.25 --json
      microtrain plan model.onnx --board qemu-m4 --compare
      microtrain plan examples/digits_cnn.onnx --board qemu-m4 --search --data digits --budget 64K
      microtrain plan mnv2.onnx --board stm32f746g-disco --bias-last 20 --update -1:1,-3:0.25 \
          --remedy stochastic --patch auto --scratch lean

    The frozen first layers can run tile by tile (--patch; on by default where it lowers the peak):
    the report then shows the layer-by-layer and the patched SRAM side by side, the grid, the
    split point and the extra multiply-accumulates of the recomputed halos.
    """
    from ..compiler.schedule import Schedule, resolve
    from .boards import get_board
    from .schedule_options import pop_schedule_options, schedule_from_options

    from .schedule_options import pop_memory_options

    mem_kw = pop_memory_options(kw)
    sched_kw = pop_schedule_options(kw)
    schedule = schedule_from_options(**sched_kw)
    board = get_board(board_name)
    sram_b, flash_b = parse_bytes(sram, "--sram"), parse_bytes(flash, "--flash")
    budget_b = parse_bytes(budget, "--budget")
    if search and data is None:
        raise MicrotrainError("--search needs --data (the probe simulations train on it)")
    if not search and (budget is not None or output is not None or search_steps is not None):
        raise MicrotrainError("--budget, --steps and -o/--output apply to --search only")
    if search and compare:
        raise MicrotrainError("give --search or --compare, not both")
    show = not as_json
    options = {"remedy": remedy, "accumulate": accumulate, "momentum": schedule.momentum or 0.0, **mem_kw}
    fgraph, qgraph, ds = _load(model, data, calib_samples, show)
    resolve(schedule, qgraph)  # fail fast on a bad selector

    base_plan = resolve(Schedule("none"), qgraph)
    base, mp_base = build_report(qgraph, base_plan, board, sram_b, flash_b, options)
    if not base["fits"]:
        cap = base["sram"]["capacity_bytes"]
        what = (f"needs {rp.fmt_bytes(base['sram']['peak_bytes'])} SRAM (capacity {rp.fmt_bytes(cap)})"
                if not base["fits_sram"] else
                f"needs {rp.fmt_bytes(base['flash']['total_bytes'])} flash (capacity "
                f"{rp.fmt_bytes(base['flash']['capacity_bytes'])})")
        raise MicrotrainError(f"{model}: inference alone does not fit {board.name}: it {what}; "
                              f"{smallest_fit(base['sram']['peak_bytes'], base['flash']['total_bytes'])}")

    if search:
        from .search_cmd import run_search

        run_search(model, fgraph, qgraph, ds, board, budget_b or sram_b or board.usable_sram_bytes, flash_b,
                   options, search_steps, jobs, output, seed, as_json, show)
        return

    if compare:
        rows = []
        for kind in COMPARE_KINDS:
            p = resolve(Schedule(kind), qgraph)
            j, mp = build_report(qgraph, p, board, sram_b, flash_b, options)
            j["schedule"] = Schedule(kind).to_json()
            j["schedule_description"] = Schedule(kind).describe()
            j["overhead"] = overhead(j, base, mp, mp_base)
            j["warnings"] = plan_warnings(qgraph, p, options)
            rows.append(j)
        result = {"model": model, "board": board.name, "options": options, "schedules": rows}
        if as_json:
            rp.print_json(result)
        else:
            _render_compare(result)
        return

    plan = resolve(schedule, qgraph)
    j, mp = build_report(qgraph, plan, board, sram_b, flash_b, options)
    result = {"model": model, "board": board.name, "schedule": schedule.to_json(),
              "schedule_description": schedule.describe(), "plan": plan.describe(), **j,
              "overhead": overhead(j, base, mp, mp_base), "inference": {"peak_bytes": base["sram"]["peak_bytes"]},
              "warnings": plan_warnings(qgraph, plan, options), "options": options, "plot": plot}
    if plot:
        from ..compiler.memory.render import png_timeline

        with rp.progress(f"writing {plot}", show):
            png_timeline(mp.arena.buffers, mp.arena, plot,
                         title=f"{Path(model).name} on {board.name}: {schedule.kind}, "
                               f"{plan.num_trainable_params:,} trainable params, arena "
                               f"{rp.fmt_bytes(mp.arena_bytes)} ({mp.arena.algorithm}), persistent "
                               f"{rp.fmt_bytes(mp.persistent_bytes)}",
                         step_labels=[s.label for s in mp.model.steps], kinds=mp.model.kinds)
    for w in result["warnings"]:
        click.echo(f"warning: {' '.join(w.split())}", err=True)
    if as_json:
        rp.print_json(result)
        return
    _render_plan(result)


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "-"


def _render_plan(r: dict[str, Any]) -> None:
    con = rp.stdout_console()
    s, f = r["sram"], r["flash"]
    con.print(f"[bold]{rp.esc(r['model'])}[/bold] on [bold]{rp.esc(r['board'])}[/bold]: "
              f"{rp.esc(r['schedule_description'])}", soft_wrap=True)
    con.print(f"{rp.esc(r['plan'])}", soft_wrap=True)
    p = s["persistent"]
    rows = [
        ["flash", "parameters + constants", rp.fmt_bytes(f["params_bytes"]), ""],
        ["", "code (estimate)", rp.fmt_bytes(f["code_bytes_estimate"]), ""],
        ["", "total", rp.fmt_bytes(f["total_bytes"]),
         f"of {rp.fmt_bytes(f['capacity_bytes'])} usable ({_pct(f['total_bytes'], f['capacity_bytes'])})"],
        ["SRAM", "trained parameters", rp.fmt_bytes(p["trainable_params"]), "persistent"],
        ["", "master copies", rp.fmt_bytes(p["master_copies"]), f"persistent, remedy {r['options']['remedy']}"],
        ["", "optimizer + accumulators", rp.fmt_bytes(p["optimizer_state"] + p["grad_accumulators"]), "persistent"],
        ["", "engine state", rp.fmt_bytes(p["engine_state"]), "persistent"],
        ["", "arena", rp.fmt_bytes(s["arena_bytes"]), f"planned by {s['algorithm']}"],
        ["", "stack", rp.fmt_bytes(s["stack_bytes"]), _stack_note(s["stack"])],
        ["", "peak (persistent + arena + stack)", rp.fmt_bytes(s["peak_bytes"]),
         f"of {rp.fmt_bytes(s['capacity_bytes'])} usable ({_pct(s['peak_bytes'], s['capacity_bytes'])})"],
        ["", "lower bound", rp.fmt_bytes(s["lower_bound_bytes"]),
         f"peak is {100.0 * (s['peak_bytes'] / s['lower_bound_bytes'] - 1):.1f}% above" if s["lower_bound_bytes"] else ""],
        ["", "headroom", rp.fmt_bytes(s["headroom_bytes"]), f"flash headroom {rp.fmt_bytes(f['headroom_bytes'])}"],
    ]
    con.print(rp.table(["", "", ("bytes", "right"), ""], rows, header=False))
    pk = r["peak"]
    live = ", ".join(f"{b['name']} {rp.fmt_bytes(b['bytes'])} ({b['kind']})" for b in pk["live"][:6])
    more = f" and {len(pk['live']) - 6} more" if len(pk["live"]) > 6 else ""
    con.print(f"arena peak at step {pk['step']} ({rp.esc(pk.get('label', ''))}): {rp.esc(live)}{more}", soft_wrap=True)
    con.print(_patch_line(r), soft_wrap=True)
    ov = {k: v for k, v in r["overhead"].items() if k != "total" and v}
    con.print("training overhead over inference only: " + rp.esc(rp.fmt_bytes(r["overhead"]["total"]))
              + (" (" + ", ".join(f"{k.replace('_', ' ')} {rp.fmt_bytes(v)}" for k, v in ov.items()) + ")" if ov else ""),
              soft_wrap=True)
    verdict = "[green]fits[/green]" if r["fits"] else "[red]does not fit[/red]"
    con.print(f"{verdict}: {rp.fmt_bytes(s['peak_bytes'])} SRAM of {rp.fmt_bytes(s['capacity_bytes'])}, "
              f"{rp.fmt_bytes(f['total_bytes'])} flash of {rp.fmt_bytes(f['capacity_bytes'])}")
    for w in r["warnings"]:
        con.print(f"warning: {rp.esc(w)}", soft_wrap=True)


def _patch_line(r: dict[str, Any]) -> str:
    """One line on patch-based execution: layer by layer vs patched, grid, split, extra MACs."""
    p = r.get("patch")
    lean = r.get("lean_steps") or []
    tail = f"; lean scratch at {len(lean)} backward step(s)" if lean else ""
    if not p:
        return "patch-based execution: off" + tail
    lbl = p.get("layer_by_layer") or {}
    ch = p.get("chosen")
    if ch is None:
        return f"patch-based execution ({p['mode']}): not used: {rp.esc(p.get('reason', ''))}" + tail
    pat = p.get("patched") or {}
    short = ch["split_after"].rsplit("/", 2)[-2] if ch["split_after"].count("/") >= 2 else ch["split_after"]
    return (f"patch-based execution ({p['mode']}): {ch['grid'][0]}x{ch['grid'][1]} tiles over the first "
            f"{len(ch['nodes'])} nodes (up to {rp.esc(short)}, output {'x'.join(map(str, ch['output_shape']))}); "
            f"SRAM peak {rp.fmt_bytes(lbl.get('peak_bytes', 0))} layer by layer -> "
            f"{rp.fmt_bytes(pat.get('peak_bytes', r['sram']['peak_bytes']))} patched (arena "
            f"{rp.fmt_bytes(lbl.get('arena_bytes', 0))} -> {rp.fmt_bytes(pat.get('arena_bytes', 0))}); "
            f"+{ch['extra_macs']:,} MACs ({100 * ch['overhead']:.1f}% of the forward's {ch['model_macs']:,})" + tail)


def _stack_note(st: dict[str, Any] | None) -> str:
    if not st:
        return ""
    return (f"planned for {st['target']}: device loop {st['base_bytes']} + program {st['program_bytes']} + "
            f"{st['deepest_kernel']} {st['kernel_bytes']} + interrupts {st['interrupt_bytes']}")


def _render_compare(r: dict[str, Any]) -> None:
    con = rp.stdout_console()
    con.print(f"[bold]{rp.esc(r['model'])}[/bold] on [bold]{rp.esc(r['board'])}[/bold]")
    rows = []
    for j in r["schedules"]:
        s, f = j["sram"], j["flash"]
        rows.append([j["schedule"]["kind"], f"{j['trainable_params']:,}", rp.fmt_bytes(s["persistent_bytes"]),
                     rp.fmt_bytes(s["arena_bytes"]), rp.fmt_bytes(s["stack_bytes"]), rp.fmt_bytes(s["peak_bytes"]),
                     rp.fmt_bytes(s["lower_bound_bytes"]), rp.fmt_bytes(f["total_bytes"]), "yes" if j["fits"] else "no",
                     j["peak"].get("label") or "-"])
    con.print(rp.table(["schedule", ("trainable", "right"), ("persistent", "right"), ("arena", "right"),
                        ("stack", "right"), ("SRAM peak", "right"), ("lower bound", "right"), ("flash", "right"),
                        "fits", "arena peak at"], rows))
    cap = r["schedules"][0]["sram"]["capacity_bytes"]
    con.print(f"capacity: {rp.fmt_bytes(cap)} usable SRAM, "
              f"{rp.fmt_bytes(r['schedules'][0]['flash']['capacity_bytes'])} usable flash")
