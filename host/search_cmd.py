"""``microtrain plan --search``: progress, the report and the schedule file."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import click

from ..compiler.errors import MicrotrainError
from . import report as rp


def _write_schedule(path: str, schedule) -> None:
    """Write atomically: a temp file in the same folder, renamed over ``path``."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise MicrotrainError(f"-o {path}: folder {d} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".schedule-", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(schedule.to_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def short(schedule) -> str:
    """A schedule as the CLI options that give it."""
    j = schedule.to_json()
    parts = [f"--schedule {j['kind']}"]
    if j.get("bias_last"):
        parts.append(f"--bias-last {j['bias_last']}")
    if j.get("update"):
        parts.append("--update " + ",".join(f"{k}:{v:g}" for k, v in j["update"].items()))
    return " ".join(parts)


def run_search(model: str, fgraph, qgraph, ds, board, budget: int, flash_b: int | None, options: dict[str, Any],
               steps: int | None, jobs: int, output: str | None, seed: int, as_json: bool, show: bool) -> None:
    from ..compiler import search as S
    from ..compiler.memory.memplan import plan_memory
    from ..compiler.schedule import Schedule, conv_fc_layers, resolve

    def peak_of(schedule) -> int:
        return plan_memory(qgraph, resolve(schedule, qgraph), board=board, **options).peak_bytes

    n = len(conv_fc_layers(qgraph))
    total = len(S.probes_for(n))
    console = rp.stderr_console()
    bar = None
    if show and console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=console, transient=True)
    task = None

    def on_phase(name: str, count: int) -> None:
        nonlocal task
        if bar is None:
            if show:
                click.echo({"probes": f"contribution analysis: {count} probe simulations ({jobs} job(s))",
                            "select": "selecting within the budget", "confirm": "simulating the choice"}[name],
                           err=True)
            return
        if task is None:
            task = bar.add_task("contribution analysis", total=total)
        bar.update(task, description={"probes": "contribution analysis", "select": "selecting",
                                      "confirm": "simulating the choice"}[name])

    def on_probe(p, acc: float) -> None:
        if bar is not None and task is not None:
            bar.update(task, advance=1)

    if bar is not None:
        bar.start()
    try:
        res = S.search(qgraph, ds, budget, peak_of, steps=steps, seed=seed, remedy=options["remedy"], jobs=jobs,
                       on_probe=on_probe, on_phase=on_phase)
    finally:
        if bar is not None:
            bar.stop()

    chosen = res.chosen.schedule(n)
    if not (res.chosen.k or res.chosen.ratios):
        raise MicrotrainError(f"no trainable schedule fits {rp.fmt_bytes(budget)} of SRAM on {board.name} "
                              f"(inference alone needs {rp.fmt_bytes(peak_of(Schedule('none')))})")
    if output is None:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).stem)
        output = f"schedule-{stem}-{budget // 1024}K.json"
    _write_schedule(output, chosen)
    bias_sched = res.best_bias.schedule(n) if res.best_bias else None
    result = {
        "model": model, "board": board.name, "budget_bytes": budget, "method": res.method,
        "candidates_planned": res.evaluated, "probe_steps": steps, "seed": seed,
        "zero_shot_accuracy": res.zero_shot,
        "schedule": chosen.to_json(), "schedule_description": chosen.describe(),
        "schedule_file": output, "peak_bytes": res.chosen.peak_bytes, "score": res.chosen.score,
        "accuracy": res.chosen_accuracy,
        "fits": res.chosen.peak_bytes <= budget,
        "best_bias_only": None if bias_sched is None else {
            "schedule": bias_sched.to_json(), "schedule_description": bias_sched.describe(),
            "peak_bytes": res.best_bias.peak_bytes, "accuracy": res.bias_accuracy},
        "probes": res.probes, "options": options,
    }
    if as_json:
        rp.print_json(result)
        return
    con = rp.stdout_console()
    con.print(f"[bold]{rp.esc(model)}[/bold] on [bold]{rp.esc(board.name)}[/bold], SRAM budget "
              f"{rp.fmt_bytes(budget)}: {len(res.probes)} probes, {res.evaluated} candidates planned ({res.method})")
    rows = [["chosen", short(chosen), rp.fmt_bytes(res.chosen.peak_bytes), rp.fmt_pct(res.chosen_accuracy)]]
    if bias_sched is not None:
        rows.append(["best bias-only", short(bias_sched), rp.fmt_bytes(res.best_bias.peak_bytes),
                     rp.fmt_pct(res.bias_accuracy)])
    rows.append(["zero-shot", "--schedule none", "", rp.fmt_pct(res.zero_shot)])
    con.print(rp.table(["", "schedule", ("SRAM peak", "right"), ("accuracy", "right")], rows))
    con.print(f"schedule written to {rp.esc(output)}: use it with --schedule @{rp.esc(output)}", soft_wrap=True)
