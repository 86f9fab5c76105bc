"""``microtrain compile``: emit the C training program of a model for a board, as a buildable folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..compiler.errors import MicrotrainError
from . import report as rp
from .schedule_options import memory_options, schedule_options

REMEDIES = ("master", "stochastic")
LOSS_INPUTS = ("int8", "acc")


@click.command("compile", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               short_help="Generate the C training program for a board (a folder `make` builds).")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--board", "board_name", required=True, metavar="B",
              help="Target board (see `microtrain boards`): picks the toolchain, core flags and DSP kernels.")
@schedule_options
@click.option("--remedy", type=click.Choice(REMEDIES), default="master", show_default=True,
              help="Sub-LSB update remedy of backprop int8 weights: an int16 master copy of the trained "
                   "rows (2 bytes per trained weight) or stochastic rounding (4 bytes of PRNG state).")
@click.option("--loss-input", "loss_input", type=click.Choice(LOSS_INPUTS), default="int8", show_default=True,
              help="What the loss reads: the int8 logits (as inference sees them) or the classifier's int32 "
                   "accumulators (a finer loss gradient).")
@click.option("--data", default=None, metavar="D",
              help="Calibration data for quantizing a float model (digits, digits-clean, FILE.npz); without "
                   "it a float model is calibrated on synthetic samples (fine for memory, not for accuracy).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True, metavar="N",
              help="Samples of --data used to quantize a float model.")
@click.option("-o", "--output", "output", required=True, metavar="DIR",
              help="Output folder. Replaced when it is empty or a previous `microtrain compile` output.")
@click.option("--force", is_flag=True,
              help="Replace DIR even if it holds other files (they are deleted).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@memory_options
def compile_cmd(model: str, board_name: str, remedy: str, loss_input: str, data: str | None, calib_samples: int,
                output: str, force: bool, as_json: bool, **kw: Any) -> None:
    """Generate the C of one on-device training program and write a folder that builds it.

    MODEL (.onnx or .tflite; float models are quantized with --data, like `plan`) is lowered to
    the int8 training program of the schedule and emitted as mt_model.c / mt_model.h: parameters
    in flash, trained rows in SRAM, every activation, gradient and scratch buffer at its planned
    offset in one static arena of exactly the size `microtrain plan` reports. The folder DIR gets
    the program, the firmware kernels the board needs (with the DSP variants on Cortex-M4/M7/M33),
    a README.md on the C API (mt_init, mt_train_step, mt_infer, mt_eval, mt_params_get/set) and a
    Makefile for the board's cross compiler: `make -C DIR` builds libmtmodel.a (-Os), `make -C DIR
    size` prints its sizes. The same model, schedule and options always give the same bytes.

    Reported: the files, the arena (= sram.arena_bytes of `plan`), persistent SRAM, the flash
    estimate (parameters + code) and the model hash stamped into the code and its checkpoints.

    \b
    Examples:
      microtrain compile examples/digits_cnn.onnx --board nucleo-f411re -o out/digits
      make -C out/digits && make -C out/digits size
      microtrain compile examples/digits_cnn.onnx --board qemu-rv32 --schedule fg -o out/fg --json
      microtrain compile model.onnx --board stm32f746g-disco --data my.npz \\
          --bias-last 20 --update -1:1,-3:0.25 --remedy stochastic -o out/mnv2
      microtrain compile model.tflite --board raspberry-pi-pico --schedule @schedule.json -o out/pico
    """
    from ..compiler.codegen import generate
    from ..compiler.codegen.project import write_project
    from ..compiler.schedule import resolve
    from .boards import get_board
    from .plan_cmd import _load, plan_warnings
    from .schedule_options import pop_schedule_options, schedule_from_options

    from .schedule_options import pop_memory_options

    mem_kw = pop_memory_options(kw)
    schedule = schedule_from_options(**pop_schedule_options(kw))
    board = get_board(board_name)
    show = not as_json
    _, qgraph, _ = _load(model, data, calib_samples, show)
    plan = resolve(schedule, qgraph)
    if plan.num_trainable_params == 0:
        raise MicrotrainError(f"schedule {schedule.kind}: nothing is trained; compile emits training programs "
                              f"(use sparse, bias, last-k, full, fg or hybrid)")
    options = {"remedy": remedy, "accumulate": 1, "momentum": schedule.momentum or 0.0}
    gen_kwargs = {"momentum": schedule.momentum or 0.0, "remedy": remedy, "loss_input": loss_input,
                  "board": board.name, **mem_kw}
    with rp.progress("generating C", show):
        gen = generate(qgraph, plan, **gen_kwargs)
    with rp.progress(f"writing {output}", show):
        paths = write_project(gen, board, output, force=force)
        from .devices import save_program

        out_dir = paths[0].parent
        paths = sorted([*paths, save_program(out_dir, qgraph, plan, gen_kwargs, gen.hash)], key=str)
    mp = gen.memory
    flash_total = mp.flash_params_bytes + mp.code_bytes_estimate
    peak = mp.peak_bytes
    warnings = plan_warnings(qgraph, plan, options)
    result = {
        "model": model, "board": board.name, "core": board.core, "output": str(out_dir),
        "hash": gen.hash, "schedule": schedule.to_json(), "schedule_description": schedule.describe(),
        "trainable_params": plan.num_trainable_params,
        "files": [str(p.relative_to(out_dir)) for p in paths],
        "sram": {"arena_bytes": mp.arena_bytes, "persistent_bytes": mp.persistent_bytes,
                 "stack_bytes": mp.stack_bytes, "peak_bytes": peak,
                 "capacity_bytes": board.usable_sram_bytes},
        "flash": {"params_bytes": mp.flash_params_bytes, "code_bytes_estimate": mp.code_bytes_estimate,
                  "total_bytes": flash_total, "capacity_bytes": board.usable_flash_bytes},
        "fits": bool(peak <= board.usable_sram_bytes and flash_total <= board.usable_flash_bytes),
        "options": {"remedy": remedy, "loss_input": loss_input, "lr": gen.trainer.lrs,
                    "momentum": schedule.momentum or 0.0, "qas": gen.trainer.qas},
        "warnings": warnings,
    }
    for w in warnings:
        click.echo(f"warning: {' '.join(w.split())}", err=True)
    if as_json:
        rp.print_json(result)
        return
    _render(result, paths, out_dir)


def _render(r: dict[str, Any], paths: list[Path], out_dir: Path) -> None:
    con = rp.stdout_console()
    s, f = r["sram"], r["flash"]
    con.print(f"[bold]{rp.esc(r['model'])}[/bold] for [bold]{rp.esc(r['board'])}[/bold] ({r['core']}): "
              f"{rp.esc(r['schedule_description'])}", soft_wrap=True)
    kernels = sum(1 for p in paths if p.suffix == ".c" and p.parent.name in ("kernels", "dsp"))
    headers = sum(1 for p in paths if p.suffix == ".h" and p.parent.name == "include")
    rows = [
        ["files", f"{len(paths)}", f"mt_model.c/.h/.json, Makefile, README.md, {headers} headers, "
                                   f"{kernels} kernel sources (in the folder below)"],
        ["model hash", r["hash"], "stamped into the code and its checkpoints"],
        ["SRAM arena", rp.fmt_bytes(s["arena_bytes"]), f"{s['arena_bytes']:,} B = plan's sram.arena_bytes"],
        ["SRAM persistent", rp.fmt_bytes(s["persistent_bytes"]), f"{s['persistent_bytes']:,} B trained rows, "
                                                                  "masters, optimizer, engine state"],
        ["SRAM stack", rp.fmt_bytes(s["stack_bytes"]), f"{s['stack_bytes']:,} B = plan's sram.stack_bytes "
                                                        "(the main stack the program needs)"],
        ["SRAM peak", rp.fmt_bytes(s["peak_bytes"]), f"of {rp.fmt_bytes(s['capacity_bytes'])} usable"],
        ["flash", rp.fmt_bytes(f["total_bytes"]), f"estimate: parameters {rp.fmt_bytes(f['params_bytes'])} + code "
                                                  f"{rp.fmt_bytes(f['code_bytes_estimate'])}, of "
                                                  f"{rp.fmt_bytes(f['capacity_bytes'])} usable"],
    ]
    con.print(rp.table(["", ("", "right"), ""], rows, header=False))
    verdict = "[green]fits[/green]" if r["fits"] else "[red]does not fit[/red]"
    con.print(f"{verdict} {rp.esc(r['board'])}. Build: make -C {rp.esc(str(out_dir))}   "
              f"(sizes: make -C {rp.esc(str(out_dir))} size)", soft_wrap=True)
