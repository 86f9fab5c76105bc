"""Device commands: ``flash``, ``train``, ``run``, ``pull``, ``push``.

A device is anything that speaks the serial protocol: an emulated board (QEMU, its UART on a TCP
socket), the firmware built for this host (a pseudo-terminal) or a real board (a serial port).
``train`` drives it through the same training loop as ``simulate`` (same sample order for the
same seed and data), so a device run ends with the weights ``simulate`` computes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..compiler.errors import MicrotrainError
from . import report as rp
from .schedule_options import memory_options, schedule_options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _port_option(f):
    return click.option("--port", "port", required=True, metavar="URL",
                        help="The device: socket://HOST:PORT (emulated boards; printed by flash), a serial "
                             "device (/dev/ttyACM0, /dev/pts/N, COM3) or any pyserial URL.")(f)


def _link_options(f):
    f = click.option("--timeout", type=click.FloatRange(min=0.01), default=None, metavar="S",
                     help="Seconds to wait for a reply before sending a request again. [default: 0.25, "
                          "longer for slow training steps]")(f)
    return f


# ---- flash ---------------------------------------------------------------------------------------
@click.command("flash", context_settings=CONTEXT, short_help="Build a compiled program and start it on its board.")
@click.argument("project", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--stop", "stop_", is_flag=True, help="Emulated boards: stop the emulator started for DIR.")
@click.option("--tcp-port", type=click.IntRange(1, 65535), default=None, metavar="P",
              help="Emulated boards: the TCP port of the UART. [default: a free port]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def flash_cmd(project: str, stop_: bool, tcp_port: int | None, as_json: bool) -> None:
    """Put the program compiled into DIR (microtrain compile) on its board.

    Emulated boards (qemu-m4, qemu-m7, qemu-rv32, qemu-rv32-virt): build the firmware image and
    start QEMU in the background with the board's UART on a TCP port; prints the device URL
    (socket://127.0.0.1:PORT) for `microtrain train --port`. Flashing again replaces the running
    emulator; --stop ends it. Real boards: `pio run -t upload` in DIR (needs PlatformIO and the
    board's platform, which PlatformIO downloads).

    \b
    Examples:
      microtrain compile examples/digits_cnn.onnx --board qemu-m4 --data digits -o out/m4
      microtrain flash out/m4
      microtrain train --port socket://127.0.0.1:40123 --data digits --steps 500
      microtrain flash out/m4 --stop
    """
    from . import devices
    from .boards import get_board

    if stop_:
        st = devices.stop(project)
        if as_json:
            rp.print_json({"stopped": st is not None, "state": st})
        else:
            click.echo(f"stopped pid {st['pid']} ({st['board']})" if st else f"{project}: no emulator running")
        return
    prog = devices.load_program(project)
    board = get_board(prog.board)
    if board.qemu is None:
        _flash_real(prog, board, as_json)
        return
    with rp.progress(f"building and starting {board.name}", not as_json):
        st = devices.start_emulator(prog, board, port=tcp_port)
    if as_json:
        rp.print_json(st)
    else:
        click.echo(st["url"])


def _flash_real(prog, board, as_json: bool) -> None:
    import shutil
    import subprocess

    pio = shutil.which("pio") or shutil.which("platformio")
    if pio is None:
        raise MicrotrainError(f"{board.name}: flashing a real board needs PlatformIO (pip install platformio); "
                              f"then: pio run -t upload -d {prog.dir}")
    if not (prog.dir / "platformio.ini").is_file():
        raise MicrotrainError(f"{prog.dir}: no platformio.ini; compile again with this microtrain")
    p = subprocess.run([pio, "run", "-t", "upload", "-d", str(prog.dir)])
    if p.returncode != 0:
        raise MicrotrainError(f"{board.name}: pio run -t upload failed (exit {p.returncode}); see its output above")
    if as_json:
        rp.print_json({"board": board.name, "uploaded": True})


# ---- train ---------------------------------------------------------------------------------------
def _train_options(f):
    f = click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, metavar="E",
                     help="Passes over the training split. [default: 1 when --steps is not given]")(f)
    f = click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Training steps (instead of --epochs).")(f)
    f = click.option("--seed", type=int, default=0, show_default=True, metavar="S",
                     help="Seeds the shuffling and the forward-gradient stream (as in simulate).")(f)
    f = click.option("--log", "log", metavar="FILE.jsonl", default=None,
                     help="Append one JSON line per step: step, loss, correct, running accuracy, cycles.")(f)
    f = click.option("--plot", "plot", metavar="FILE.png", default=None,
                     help="Write a PNG of the loss and running accuracy over the steps.")(f)
    f = click.option("--save-params", "save_params", metavar="FILE.npz", default=None,
                     help="Write every trained tensor pulled from the device (and its scales) to .npz, "
                          "as simulate --save-params does.")(f)
    f = click.option("--checkpoint", "checkpoint", metavar="FILE", default=None,
                     help="Keep the device checkpoint in FILE (updated every --checkpoint-every steps "
                          "and at the end; `microtrain push` loads it back).")(f)
    f = click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True,
                     metavar="K", help="Pull a checkpoint every K steps (the resume point after a reset).")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")(f)
    return f


@click.command("train", context_settings=CONTEXT, short_help="Stream data to a device and train it.")
@_port_option
@click.option("--data", "data", metavar="D", required=True,
              help="Training/test data: digits, digits-clean, or a .npz file (x_train, y_train, x_test, y_test).")
@click.option("--project", "project", metavar="DIR", default=None,
              help="The compiled folder of the device's program. [default: found by the hash the device "
                   "announces]")
@_train_options
@_link_options
def train_cmd(port: str, data: str, project: str | None, **kw: Any) -> None:
    """Train the program running on the device at --port with --data, over the serial bridge.

    The host streams samples in the order `microtrain simulate` uses for the same --seed, the
    device trains on each as it arrives, and test accuracy is measured ON the device before and
    after (one INFER per test sample). The link survives corrupted and lost bytes (retries, the
    device never trains a sample twice) and device resets (the last checkpoint is pushed back and
    the steps since are replayed). At the end the checkpoint is pulled (--checkpoint) and the
    trained tensors saved (--save-params).

    \b
    Examples:
      microtrain train --port socket://127.0.0.1:40123 --data digits --steps 500
      microtrain train --port /dev/ttyACM0 --data my.npz --epochs 2 --checkpoint run.mtck --log run.jsonl
    """
    from . import devices
    from .bridge import Bridge

    bridge = Bridge(port)
    if kw.get("timeout"):
        bridge.reply_timeout = kw["timeout"]
    with bridge:
        info = bridge.hello()
        prog = devices.load_program(project) if project else devices.find_program(info["model_hash"])
        result = _train_on_device(bridge, prog, data, **kw)
    _report(result, kw["as_json"])


def _train_on_device(bridge, prog, data: str, *, steps: int | None, epochs: float | None, seed: int,
                     log: str | None, plot: str | None, save_params: str | None, checkpoint: str | None,
                     checkpoint_every: int, as_json: bool, timeout: float | None = None,
                     ds=None, extra: dict | None = None) -> dict[str, Any]:
    from ..compiler import driver
    from ..compiler.errors import DataError
    from .cli import _guard, _save_params, _write_plot
    from .device_trainer import DeviceTrainer

    if epochs is not None and steps is not None:
        raise MicrotrainError("give --epochs or --steps, not both")
    show = not as_json
    if ds is None:
        with rp.progress(f"loading {data}", show), _guard("unexpected-data", DataError, f"{data}: could not load data"):
            from .data import load_data

            ds = load_data(data, prog.graph)
    console = rp.stderr_console()
    events: list[dict] = []

    def on_event(what: str, detail: str) -> None:
        events.append({"event": what, "detail": detail, "time": time.time()})
        if show:
            console.print(f"[yellow]{what}[/yellow]: {rp.esc(detail)}", soft_wrap=True)

    bridge.on_event = on_event
    logf = open(log, "a", buffering=1) if log else None  # noqa: SIM115 - closed in finally; line-buffered
    trainer_box: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        def make(total: int):
            tr = DeviceTrainer(bridge, prog.gen, seed=seed, total_steps=total, checkpoint_every=checkpoint_every,
                               checkpoint_path=checkpoint, on_event=on_event)
            trainer_box["tr"] = tr
            return tr

        total = driver.step_count(len(ds.y_train), driver.fg_samples_per_step(prog.plan), steps, epochs)
        correct_window: list[int] = []

        def on_step_log(t: int, r) -> None:
            correct_window.append(r.correct)
            if len(correct_window) > 100:
                correct_window.pop(0)
            if logf is not None:
                m = trainer_box["tr"].metrics
                logf.write(json.dumps({"step": t + 1, "loss": r.loss / 65536.0, "correct": r.correct,
                                       "samples": r.samples, "running_acc": sum(correct_window) /
                                       (len(correct_window) * r.samples), "cycles": int(m.get("cycles", 0)),
                                       "retries": bridge.stats.retries, "resets": trainer_box["tr"].resets}) + "\n")

        if show and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}"), TimeRemainingColumn(),
                          console=console, transient=True) as bar:
                task = bar.add_task("device: evaluating before training", total=total, loss="-", acc="-")
                phases = {"before": "device: evaluating before training", "train": "device training",
                          "after": "device: evaluating after training"}

                def on_step(t: int, r) -> None:
                    on_step_log(t, r)
                    acc = sum(correct_window) / (len(correct_window) * r.samples)
                    bar.update(task, completed=t + 1, loss=f"{r.loss / 65536.0:.3f}", acc=f"{acc:.0%}")

                res = driver.run(make, prog.plan, ds, steps=steps, epochs=epochs, seed=seed, on_step=on_step,
                                 on_phase=lambda ph: bar.update(task, description=phases[ph]))
        else:
            res = driver.run(make, prog.plan, ds, steps=steps, epochs=epochs, seed=seed, on_step=on_step_log)
        tr = res.trainer
        with rp.progress("pulling the checkpoint", show):
            tr.finish()
            final = bridge.metrics()
    finally:
        if logf is not None:
            logf.close()
    saved = _save_params(save_params, tr) if save_params else None
    hist = res.history
    if plot:
        with rp.progress(f"writing {plot}", show):
            _write_plot(plot, hist, None, f"{bridge.url}: {prog.plan.schedule.describe()}")
    seconds = time.perf_counter() - t0
    result = {
        "port": bridge.url, "board": (bridge.info or {}).get("board"), "hash": prog.gen.hash,
        "project": str(prog.dir), "data": ds.name, "train_samples": int(len(ds.y_train)),
        "test_samples": int(len(ds.y_test)),
        "accuracy_before": float(res.acc_before), "accuracy_after": float(res.acc_after),
        "steps": int(hist.steps), "samples": int(hist.samples), "seed": int(seed),
        "schedule": prog.plan.schedule.to_json(), "schedule_description": prog.plan.schedule.describe(),
        "final_running_accuracy": float(hist.running_acc[-1]) if hist.steps else None,
        "loss_curve": [float(v) / 65536.0 for v in hist.loss[:: max(1, hist.steps // 1000)]],
        "device": {"step": int(final["step"]), "samples_trained": int(final["count"]),
                   "trace": f"{final['trace']:08x}", "cycles_last_step": int(final["cycles"]),
                   "cycles_total": int(final["total_cycles"]), "arena_hwm_bytes": int(final["arena_hwm"]),
                   "arena_bytes": int(prog.gen.manifest["arena_bytes"]), "stack_hwm_bytes": int(final["stack_hwm"]),
                   "stack_bytes": int((bridge.info or {}).get("stack_size", 0))},
        "link": bridge.stats.to_json(), "resets": int(tr.resets), "events": events,
        "checkpoint": checkpoint, "saved_params": save_params, "saved_tensors": saved, "plot": plot, "log": log,
        "seconds": seconds,
    }
    if extra:
        result.update(extra)
    return result


def _report(r: dict[str, Any], as_json: bool) -> None:
    if as_json:
        rp.print_json(r)
        return
    con = rp.stdout_console()
    d, link = r["device"], r["link"]
    con.print(f"[bold]{rp.esc(r['port'])}[/bold]  {rp.esc(r.get('board') or '?')}, program {r['hash']}, "
              f"data {rp.esc(r['data'])}", soft_wrap=True)
    rows = [
        ["accuracy before", rp.fmt_pct(r["accuracy_before"]), "measured on the device"],
        ["accuracy after", rp.fmt_pct(r["accuracy_after"]), "measured on the device"],
        ["steps", f"{r['steps']:,}", f"{r['samples']:,} samples, seed {r['seed']}, {r['seconds']:.1f} s"],
        ["device", f"{d['samples_trained']:,}", f"samples trained (trace {d['trace']}), "
                                                f"{d['cycles_last_step']:,} cycles in the last step"],
        ["arena", rp.fmt_bytes(d["arena_hwm_bytes"]), f"high-water mark, planned {d['arena_bytes']:,} B"],
        ["stack", rp.fmt_bytes(d["stack_hwm_bytes"]), f"high-water mark of {d['stack_bytes']:,} B"],
        ["link", f"{link['requests']:,}", f"requests, {link['retries']:,} retries, {r['resets']} device resets"],
    ]
    if r.get("checkpoint"):
        rows.append(["checkpoint", "", r["checkpoint"]])
    if r.get("saved_params"):
        rows.append(["saved params", str(len(r["saved_tensors"])), r["saved_params"]])
    con.print(rp.table(["", ("", "right"), ""], rows, header=False))


# ---- run -----------------------------------------------------------------------------------------
@click.command("run", context_settings=CONTEXT,
               short_help="Compile, flash and train in one go (emulated boards).")
@click.argument("model", metavar="MODEL")
@click.option("--board", "board_name", required=True, metavar="B",
              help="An emulated board: qemu-m4, qemu-m7, qemu-rv32, qemu-rv32-virt.")
@click.option("--data", "data", metavar="D", required=True,
              help="Training/test data: digits, digits-clean, or a .npz file (x_train, y_train, x_test, y_test).")
@schedule_options
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True, metavar="N",
              help="Training samples used to quantize a float model (as simulate).")
@click.option("-o", "--output", "output", default=None, metavar="DIR",
              help="Keep the compiled folder here. [default: a folder under build/run/]")
@_train_options
@_link_options
@memory_options
def run_cmd(model: str, board_name: str, data: str, calib_samples: int, output: str | None, **kw: Any) -> None:
    """Compile MODEL for an emulated board, start it, and train it over the serial bridge.

    Takes simulate's model, data, schedule and training options: the device ends with the
    trainable tensors `microtrain simulate --save-params` writes for the same options, and its
    test accuracy (measured on the device) equals the simulated one. The emulator is stopped at
    the end.

    \b
    Examples:
      microtrain run examples/digits_cnn.onnx --board qemu-m4 --data digits --steps 300
      microtrain run examples/digits_cnn.onnx --board qemu-m7 --data digits --schedule bias --json
    """
    from ..compiler.codegen import generate
    from ..compiler.codegen.project import write_project
    from ..compiler.errors import DataError
    from ..compiler.inspect import precision
    from ..compiler.quantize import quantize_graph
    from ..compiler.schedule import resolve
    from . import devices
    from .boards import get_board
    from .bridge import Bridge
    from .cli import _guard, load_model_file
    from .schedule_options import pop_schedule_options, schedule_from_options

    from .schedule_options import pop_memory_options

    mem_kw = pop_memory_options(kw)
    schedule = schedule_from_options(**pop_schedule_options(kw))
    board = get_board(board_name)
    if board.qemu is None:
        raise MicrotrainError(f"run: {board.name} is not an emulated board; use compile, flash and train "
                              f"(emulated: qemu-m4, qemu-m7, qemu-rv32, qemu-rv32-virt)")
    show = not kw["as_json"]
    with rp.progress(f"reading {model}", show):
        graph = load_model_file(model)
    resolve(schedule, graph)
    with rp.progress(f"loading {data}", show), _guard("unexpected-data", DataError, f"{data}: could not load data"):
        from .data import load_data

        ds = load_data(data, graph)
    if precision(graph) == "float32":
        n = min(calib_samples, len(ds.x_train))
        with rp.progress(f"quantizing with {n} calibration samples", show):
            qgraph = quantize_graph(graph, ds.x_train[:n])
    else:
        qgraph = graph
    plan = resolve(schedule, qgraph)
    if plan.num_trainable_params == 0:
        raise MicrotrainError(f"schedule {schedule.kind}: nothing is trained")
    gen_kwargs = {"momentum": schedule.momentum or 0.0, "remedy": "master", "loss_input": "int8",
                  "board": board.name, **mem_kw}
    with rp.progress("generating C", show):
        gen = generate(qgraph, plan, **gen_kwargs)
    out = Path(output) if output else Path("build") / "run" / f"{board.name}-{gen.hash}"
    with rp.progress(f"writing {out}", show):
        paths = write_project(gen, board, out, force=output is None)
        devices.save_program(paths[0].parent, qgraph, plan, gen_kwargs, gen.hash)
    prog = devices.load_program(paths[0].parent)
    with rp.progress(f"building and starting {board.name}", show):
        st = devices.start_emulator(prog, board)
    if show:
        click.echo(f"{board.name} running at {st['url']} (pid {st['pid']})", err=True)
    try:
        bridge = Bridge(st["url"])
        if kw.get("timeout"):
            bridge.reply_timeout = kw["timeout"]
        with bridge:
            bridge.hello()
            result = _train_on_device(bridge, prog, data, ds=ds, extra={"model": model}, **kw)
    finally:
        devices.stop(prog.dir)
    _report(result, kw["as_json"])


# ---- pull / push ---------------------------------------------------------------------------------
@click.command("pull", context_settings=CONTEXT, short_help="Copy the device's checkpoint (or its tensors) to a file.")
@_port_option
@click.argument("file", metavar="FILE")
@click.option("--project", "project", metavar="DIR", default=None,
              help="The compiled folder (for FILE.npz). [default: found by the device's model hash]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def pull_cmd(port: str, file: str, project: str | None, as_json: bool) -> None:
    """Read the checkpoint of the device at --port into FILE.

    FILE.npz: the trained tensors and their scales (as simulate --save-params writes them);
    any other name: the raw checkpoint (model hash, step, PRNG state, trained tensors, master
    copies, velocities), which `microtrain push` loads back.
    """
    from .bridge import Bridge
    from .device_trainer import write_atomic

    with Bridge(port) as b:
        info = b.hello()
        if not info["session_active"]:
            raise MicrotrainError(f"{port}: the device has no training session since its boot; nothing to pull "
                                  f"(its parameters are the flashed ones)")
        data = b.params_get()
    out: dict[str, Any] = {"port": port, "file": file, "bytes": len(data), "hash": info["model_hash"],
                           "step": int.from_bytes(data[24:28], "little")}
    if file.endswith(".npz"):
        from . import devices
        from .cli import _save_params
        from .device_trainer import CheckpointView

        prog = devices.load_program(project) if project else devices.find_program(info["model_hash"])
        view = CheckpointView()
        view.gen, view.ref, view.graph = prog.gen, prog.gen.trainer, prog.gen.trainer.graph
        view.plan = prog.gen.trainer.plan
        view.checkpoint = lambda: data
        out["tensors"] = _save_params(file, view)
    else:
        write_atomic(file, data)
    if as_json:
        rp.print_json(out)
    else:
        click.echo(f"{file}: {len(data):,} bytes, step {out['step']} of program {info['model_hash']}")


@click.command("push", context_settings=CONTEXT, short_help="Load a checkpoint file into the device.")
@_port_option
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def push_cmd(port: str, file: str, as_json: bool) -> None:
    """Write checkpoint FILE (from `pull` or `train --checkpoint`) into the device at --port.

    The checkpoint must be of the program the device runs (its model hash is checked here and by
    the device). A device without a training session gets one (seed 0, 1 step) first.
    """
    from .bridge import Bridge

    try:
        data = Path(file).read_bytes()
    except OSError as e:
        raise MicrotrainError(f"{file}: {e.strerror or e}") from e
    if len(data) < 32 or data[:4] != b"MTCK":
        raise MicrotrainError(f"{file}: not a microtrain checkpoint (no MTCK header)")
    ck_hash = data[8:24].decode("ascii", "replace")
    with Bridge(port) as b:
        info = b.hello()
        if ck_hash != info["model_hash"]:
            raise MicrotrainError(f"{file}: checkpoint of program {ck_hash}, the device runs {info['model_hash']}")
        if len(data) != info["params_bytes"]:
            raise MicrotrainError(f"{file}: {len(data)} bytes, the device's checkpoint is {info['params_bytes']}")
        if not info["session_active"]:
            b.init(0, 1, 1)
        b.params_set(data)
    out = {"port": port, "file": file, "bytes": len(data), "step": int.from_bytes(data[24:28], "little")}
    if as_json:
        rp.print_json(out)
    else:
        click.echo(f"{port}: loaded {file} ({len(data):,} bytes, step {out['step']})")


COMMANDS = (flash_cmd, train_cmd, run_cmd, pull_cmd, push_cmd)
