"""The ``microtrain`` command line.

Output contract: results on stdout (a rich table, or exactly one JSON object with ``--json``);
progress and errors on stderr. Exit codes: 0 success; 2 a problem with the input (every
:class:`MicrotrainError`: missing/corrupt model, unsupported op, bad data, unknown board) or with
the command line; 1 an internal error (a bug). Errors are one line, ``error: <message>``; the
traceback is shown only with ``--debug``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import click
import numpy as np

from ..compiler.errors import DataError, MicrotrainError, ModelFormatError
from . import report as rp
from .schedule_options import memory_options, schedule_options

from . import __version__

HINT = "rerun with --debug for the traceback"

# ---- error observation (tests use this to see which exception types reach the handlers) ---------

#: Each observer is a list that receives ``(kind, exception)`` for every error the CLI turns into a
#: message. kind: "error" (a MicrotrainError reached the top), "unexpected-load" (a non-microtrain
#: exception while reading a model file), "unexpected-data" (same, while reading data),
#: "internal" (a non-microtrain exception anywhere else).
_observers: list[list[tuple[str, BaseException]]] = []


@contextlib.contextmanager
def observe_errors() -> Iterator[list[tuple[str, BaseException]]]:
    seen: list[tuple[str, BaseException]] = []
    _observers.append(seen)
    try:
        yield seen
    finally:
        _observers.remove(seen)


def _notify(kind: str, exc: BaseException) -> None:
    for seen in _observers:
        seen.append((kind, exc))


def _one_line(text: object) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= 2000 else s[:1997] + "..."


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if isinstance(ctx.obj, dict) and "debug" in ctx.obj:
            return bool(ctx.obj["debug"])
        ctx = ctx.parent
    return False


@contextlib.contextmanager
def _guard(kind: str, wrap: Callable[[str], MicrotrainError], what: str) -> Iterator[None]:
    """Turn a non-microtrain exception raised in the block into ``wrap(message)`` (unless --debug)."""
    try:
        yield
    except (MicrotrainError, click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except Exception as e:  # noqa: BLE001 - the point is to catch what frontends let through
        _notify(kind, e)
        if _debug():
            raise
        raise wrap(f"{what}: {type(e).__name__}: {_one_line(e)}; {HINT}") from e


class _Group(click.Group):
    """Root group: maps exceptions from any subcommand to one-line errors and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except MicrotrainError as e:
            _notify("error", e)
            if _debug():
                raise
            click.echo(f"error: {_one_line(e)}", err=True)
            ctx.exit(getattr(e, "exit_code", 2))
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # noqa: BLE001
            _notify("internal", e)
            if _debug():
                raise
            click.echo(f"error: internal error ({type(e).__name__}: {_one_line(e)}); {HINT}", err=True)
            ctx.exit(1)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="microtrain", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compile ONNX/TFLite models into int8 on-device training programs for microcontrollers.

    \b
    Examples:
      microtrain boards
      microtrain inspect examples/digits_cnn.onnx --data digits

    Exit codes: 0 success, 2 bad input (model, data, board, options), 1 internal error.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# ---- boards ------------------------------------------------------------------------------------

@cli.command("boards", context_settings=CONTEXT, short_help="List boards, or show one board.")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def boards_cmd(name: str | None, as_json: bool) -> None:
    """List the supported boards, or show one board (NAME is case-insensitive; aliases work).

    Shows the core, ISA features, SRAM, flash and clock of each board; emulated (QEMU) boards
    are marked. With NAME, also the reserved memory, the usable budget and the build/emulation
    settings.

    \b
    Examples:
      microtrain boards
      microtrain boards disco_f746ng --json
    """
    from .boards import all_boards, get_board

    if name is not None:
        b = get_board(name)
        if as_json:
            rp.print_json({"board": b.to_json()})
            return
        _render_board(b)
        return
    boards = all_boards()
    if as_json:
        rp.print_json({"boards": [b.to_json() for b in boards]})
        return
    rows = []
    for b in boards:
        feats = [b.isa] + (["dsp"] if b.dsp else []) + ([f"fpu:{b.fpu}"] if b.fpu != "none" else [])
        rows.append([
            b.name, b.core, " ".join(feats),
            rp.fmt_bytes(b.sram_bytes), rp.fmt_bytes(b.flash_bytes), rp.fmt_hz(b.clock_hz),
            f"qemu {b.qemu.machine}" if b.qemu else (b.platformio.board if b.platformio else ""),
        ])
    t = rp.table(["board", "core", "ISA / features", ("SRAM", "right"), ("flash", "right"),
                  ("clock", "right"), "build / emulator"], rows)
    rp.stdout_console().print(t)


def _render_board(b) -> None:
    d = b.to_json()
    rows = [
        ["name", b.name], ["aliases", ", ".join(b.aliases) or "-"], ["description", b.description],
        ["mcu", b.mcu or "-"], ["core", b.core], ["isa", b.isa],
        ["features", f"dsp={'yes' if b.dsp else 'no'} fpu={b.fpu}"], ["clock", rp.fmt_hz(b.clock_hz)],
        ["SRAM", f"{rp.fmt_bytes(b.sram_bytes)} ({b.sram_bytes:,} B), reserved "
                 f"{rp.fmt_bytes(b.reserved_sram_bytes)}, usable {rp.fmt_bytes(b.usable_sram_bytes)}"],
        ["flash", f"{rp.fmt_bytes(b.flash_bytes)} ({b.flash_bytes:,} B), reserved "
                  f"{rp.fmt_bytes(b.reserved_flash_bytes)}, usable {rp.fmt_bytes(b.usable_flash_bytes)}"],
    ]
    if d["platformio"]:
        p = d["platformio"]
        rows.append(["platformio", f"platform={p['platform']} board={p['board']} framework={p['framework']}"])
    if b.qemu:
        q = b.qemu
        rows.append(["qemu", f"{b.qemu_binary} -M {q.machine}" + (f" -cpu {q.cpu}" if q.cpu else "")
                     + f"; flash 0x{q.flash_base:08x}, RAM 0x{q.ram_base:08x}, UART 0x{q.uart:08x}"
                     + (f" ({q.uart_kind})" if q.uart_kind else "")])
    rows.append(["file", str(b.path)])
    rp.stdout_console().print(rp.table(["field", "value"], rows))


# ---- inspect -----------------------------------------------------------------------------------

def load_model_file(path: str):
    """Read a model with the frontends; any non-microtrain exception becomes a ModelFormatError."""
    with _guard("unexpected-load", ModelFormatError, f"{path}: could not read the model"):
        from ..compiler.frontend import load_model

        return load_model(path)


@cli.command("inspect", context_settings=CONTEXT,
             short_help="Per-layer model summary; float vs int8 accuracy with --data.")
@click.argument("model", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--data", "data", metavar="D",
              help="Evaluate on a dataset: digits, digits-clean, or a .npz file "
                   "(x_train, y_train, x_test, y_test). Quantizes float models (PTQ) and "
                   "reports float vs int8 test accuracy.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              metavar="N", help="Training samples used to calibrate post-training quantization.")
def inspect_cmd(model: str, as_json: bool, data: str | None, calib_samples: int) -> None:
    """Summarize a model per layer: op, shapes, parameters, MACs and bytes, with totals.

    MODEL is an .onnx or .tflite file; float32 and int8 models are accepted. With --data, a float
    model is quantized to int8 with calibration data, and the float and int8 test accuracy and
    their top-1 agreement are reported (int8 models: int8 accuracy only).

    \b
    Examples:
      microtrain inspect examples/digits_cnn.onnx
      microtrain inspect examples/digits_cnn.onnx --data digits --json
      microtrain inspect model.tflite --data my_data.npz
    """
    from ..compiler.inspect import inspect_graph

    show = not as_json
    with rp.progress(f"reading {model}", show):
        graph = load_model_file(model)
    summary = inspect_graph(graph)
    result: dict[str, Any] = {"model": model, **summary}
    if data is not None:
        result["accuracy"] = _accuracy(graph, data, calib_samples, show)
    if as_json:
        rp.print_json(result)
        return
    _render_inspect(result)


def _accuracy(graph, data: str, calib_samples: int, show: bool) -> dict[str, Any]:
    """Test accuracy of ``graph`` on ``data``: float32 vs its PTQ int8 version when the graph is float,
    the int8 accuracy alone when it already is int8. Fractions in [0, 1]."""
    from ..compiler.inspect import precision
    from ..compiler.quantize import predict, quantize_graph

    with rp.progress(f"loading {data}", show), _guard("unexpected-data", DataError, f"{data}: could not load data"):
        from .data import load_data

        ds = load_data(data, graph)
    out: dict[str, Any] = {"data": ds.name, "description": ds.description, "test_samples": int(len(ds.y_test))}
    if precision(graph) == "float32":
        n = min(calib_samples, len(ds.x_train))
        out["calib_samples"] = int(n)
        with rp.progress(f"quantizing with {n} calibration samples", show):
            qgraph = quantize_graph(graph, ds.x_train[:n])
        with rp.progress("evaluating float32 and int8", show):
            f_pred = predict(graph, ds.x_test)
            q_pred = predict(qgraph, ds.x_test)
        out["float32"] = float(np.mean(f_pred == ds.y_test))
        out["int8"] = float(np.mean(q_pred == ds.y_test))
        out["agreement"] = float(np.mean(f_pred == q_pred))
    else:
        with rp.progress("evaluating int8", show):
            q_pred = predict(graph, ds.x_test)
        out["calib_samples"] = 0
        out["float32"] = None
        out["int8"] = float(np.mean(q_pred == ds.y_test))
        out["agreement"] = None
    return out


def _render_inspect(r: dict[str, Any]) -> None:
    con = rp.stdout_console()
    tot = r["totals"]
    fmt = r.get("format") or "model"
    con.print(f"[bold]{rp.esc(r['model'])}[/bold]  {fmt}, {r['precision']}, {tot['layers']} layers")
    for kind in ("inputs", "outputs"):
        for t in r[kind]:
            src = (f"  (source {t['source_layout']} {rp.fmt_shape([t['source_shape']])})"
                   if t.get("source_layout") and t.get("source_shape") != t["shape"] else "")
            con.print(f"  {kind[:-1]:<6} {rp.esc(t['name'])}  {rp.fmt_shape([t['shape']])} {t['dtype']}{src}")
    rows = [[l["index"], l["name"], l["op"] + (f"+{l['act']}" if l.get("act") not in (None, "none") else ""),
             rp.fmt_shape(l["input_shapes"]), rp.fmt_shape(l["output_shapes"]),
             f"{l['params']:,}", f"{l['macs']:,}", f"{l['param_bytes']:,}"] for l in r["layers"]]
    footer = ["", "total", "", "", "", f"{tot['params']:,}", f"{tot['macs']:,}", f"{tot['param_bytes']:,}"]
    con.print()
    con.print(rp.table([("#", "right"), "layer", "op", "input", "output", ("params", "right"),
                        ("MACs", "right"), ("param bytes", "right")], rows, footer=footer))
    con.print()
    con.print(f"params {tot['params']:,}   MACs {rp.fmt_count(tot['macs'])}   "
              f"weights float32 {rp.fmt_bytes(tot['weight_bytes_float32'])}, "
              f"int8 {rp.fmt_bytes(tot['weight_bytes_int8'])}   "
              f"largest activation {rp.fmt_bytes(tot['max_activation_bytes'])}")
    acc = r.get("accuracy")
    if acc:
        con.print()
        con.print(f"[bold]accuracy[/bold] on {rp.esc(acc['data'])}, test split of {acc['test_samples']} samples "
                  f"({rp.esc(acc['description'])})", soft_wrap=True)
        ptq = acc["float32"] is not None
        rows = [
            ["float32", rp.fmt_pct(acc["float32"]), "" if ptq else "(int8 model: no float reference)"],
            ["int8", rp.fmt_pct(acc["int8"]),
             f"PTQ, {acc['calib_samples']} calibration samples" if ptq else "model as given"],
            ["agreement", rp.fmt_pct(acc["agreement"]), "int8 vs float32 top-1" if ptq else ""],
        ]
        con.print(rp.table(["", ("", "right"), ""], rows, header=False))


# ---- simulate ----------------------------------------------------------------------------------

#: most points of ``loss_curve`` in ``simulate --json``; longer runs are averaged in equal buckets
LOSS_CURVE_POINTS = 1000


def _downsample(v: np.ndarray, limit: int = LOSS_CURVE_POINTS) -> tuple[list[float], int]:
    """``v`` as floats, or the means of consecutive buckets of ``stride`` values when longer than
    ``limit`` (the last bucket may be shorter). Returns (points, stride)."""
    v = np.asarray(v, dtype=np.float64)
    if v.size <= limit:
        return [float(x) for x in v], 1
    stride = int(np.ceil(v.size / limit))
    return [float(v[i:i + stride].mean()) for i in range(0, v.size, stride)], stride


def _moving_average(v: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start)."""
    v = np.asarray(v, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])
    hi = np.arange(1, v.size + 1)
    lo = np.maximum(hi - window, 0)
    return (c[hi] - c[lo]) / (hi - lo)


def _run_int8(qgraph, plan, ds, steps: int | None, epochs: float | None, seed: int, show: bool,
              accumulate: int = 1, engine: str = "numpy", mem_kw: dict | None = None):
    """:func:`~microtrain.compiler.train_int.train_int8` with progress on stderr: a spinner per
    phase and, on a terminal, a rich progress bar over the training steps."""
    from ..compiler import driver
    from ..compiler import train_int as ti

    mem_kw = dict(mem_kw or {})
    if mem_kw.get("patch", "off") != "off" and engine == "numpy" and accumulate == 1:
        from ..compiler.memory.memplan import plan_memory

        # the stage the device program would run (simulated tile by tile: the same integers)
        mem_kw["patch"] = plan_memory(qgraph, plan, momentum=plan.schedule.momentum or 0.0, **mem_kw).patch
    elif accumulate != 1:
        mem_kw["patch"] = "off"
    console = rp.stderr_console()
    if not (show and console.is_terminal):
        return ti.train_int8(qgraph, plan, ds, steps=steps, epochs=epochs, seed=seed, accumulate=accumulate,
                             engine=engine, **mem_kw)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = driver.step_count(len(ds.y_train), driver.fg_samples_per_step(plan), steps, epochs)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("int8: evaluating before training", total=total, loss="-")
        phases = {"before": "int8: evaluating before training", "train": "int8 training",
                  "after": "int8: evaluating after training"}
        return ti.train_int8(
            qgraph, plan, ds, steps=steps, epochs=epochs, seed=seed, accumulate=accumulate, engine=engine, **mem_kw,
            on_phase=lambda ph: bar.update(task, description=phases[ph]),
            on_step=lambda t, r: bar.update(task, completed=t + 1, loss=f"{r.loss:.3f}"))


def _save_params(path: str, trainer) -> list[str]:
    """Write every trained tensor of ``trainer`` (full tensors, graph dtypes) and its scales
    (``<name>.scale``, float32) to ``path`` atomically: a temp file in the same folder, renamed."""
    import os
    import tempfile

    arrays: dict[str, np.ndarray] = {}
    nodes = {n.name: n for n in trainer.graph.nodes}
    for lt in trainer.plan.layers:
        node = nodes[lt.node]
        for role, name in (("weight", lt.weight), ("bias", lt.bias)):
            if name is None or name not in trainer.params:
                continue
            arrays[name] = np.asarray(trainer.params[name])
            arrays[f"{name}.scale"] = np.asarray(trainer._scales(node, role, lt.cout), dtype=np.float32)
    target = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise MicrotrainError(f"--save-params {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".microtrain-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, arrays)
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise MicrotrainError(f"--save-params {path}: {e.strerror or e}") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return sorted(arrays)


def _write_npz(f, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` without the wall-clock: members in name order, fixed timestamps, so the same
    tensors always give the same bytes (the C and numpy engines' files compare byte for byte)."""
    import io
    import zipfile

    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, buf.getvalue())


def _write_plot(path: str, hist, float_hist, title: str) -> None:
    """PNG: moving-average loss and running accuracy per step (int8, and the float twin if given)."""
    import os
    import tempfile

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    window = max(1, min(100, hist.steps // 20 or 1))
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    try:
        for h, label in ((hist, "int8"), (float_hist, "float twin")):
            if h is None or not h.steps:
                continue
            x = np.arange(1, h.steps + 1)
            ax1.plot(x, _moving_average(h.loss, window), label=label)
            ax2.plot(x, h.running_acc, label=label)
        ax1.set_ylabel(f"loss (moving average, {window} steps)")
        ax2.set_ylabel("running accuracy (last 100 steps)")
        ax2.set_xlabel("step")
        ax2.set_ylim(0, 1)
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=8)
        fig.tight_layout()
        target = os.path.abspath(os.path.expanduser(path))
        folder = os.path.dirname(target)
        if not os.path.isdir(folder):
            raise MicrotrainError(f"--plot {path}: folder {folder} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=".microtrain-", suffix=".png.tmp", dir=folder)
        os.close(fd)
        try:
            fig.savefig(tmp, format="png", dpi=100)
            os.replace(tmp, target)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise MicrotrainError(f"--plot {path}: {e.strerror or e}") from e
    finally:
        plt.close(fig)


@cli.command("simulate", context_settings=CONTEXT,
             short_help="Train on the host with the bit-exact int8 engine; compare with the float twin.")
@click.argument("model", metavar="MODEL")
@click.option("--data", "data", metavar="D", required=True,
              help="Training/test data: digits, digits-clean, or a .npz file (x_train, y_train, x_test, y_test).")
@schedule_options
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, metavar="E",
              help="Passes over the training split. [default: 1 when --steps is not given]")
@click.option("--steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Training steps (instead of --epochs).")
@click.option("--seed", type=int, default=0, show_default=True, metavar="S",
              help="Seeds the shuffling and the forward-gradient stream (same for int8 and float).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--plot", "plot", metavar="FILE.png", default=None,
              help="Write a PNG of the loss (moving average) and running accuracy over the steps.")
@click.option("--save-params", "save_params", metavar="FILE.npz", default=None,
              help="Write every trainable tensor after training (int8 weights, int32 biases, by tensor "
                   "name) and its scales (<name>.scale) to an .npz file.")
@click.option("--accumulate", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Backprop: average the gradients of K samples per update (gradient accumulation; "
                   "the trained slices' gradients stay live between samples).")
@click.option("--engine", type=click.Choice(["numpy", "c"]), default="numpy", show_default=True,
              help="int8 engine: numpy (the reference) or c (the generated C program + firmware kernels "
                   "built with the host gcc; same integers, much faster).")
@click.option("--no-float", "no_float", is_flag=True,
              help="Skip the float twin (float models only; int8 models never have one).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              metavar="N", help="Training samples used to calibrate post-training quantization.")
@memory_options
def simulate_cmd(model: str, data: str, epochs: float | None, steps: int | None, seed: int, accumulate: int,
                 engine: str, as_json: bool,
                 plot: str | None, save_params: str | None, no_float: bool, calib_samples: int,
                 **kw: Any) -> None:
    """Simulate on-device training on the host: what the firmware will compute, bit for bit.

    MODEL (.onnx or .tflite) is loaded; a float model is quantized to int8 (PTQ, calibrated on the
    first --calib-samples training samples), an int8 model is used as is. The schedule is resolved
    against the model (its warnings go to stderr) and trained with the numpy int8 engine, batch-1
    SGD (batch --fg-batch for forward gradient) with cosine learning-rate decay. Unless --no-float,
    the float model is also trained with the float twin of the same schedule, steps and seed.
    Reports test accuracy before and after training.

    With --json: one object with accuracy_before, accuracy_after, float_accuracy_after (null
    without a float twin), steps, schedule, trainable_params, loss_curve, warnings, seed and more.
    loss_curve holds the int8 engine's per-step training loss (nats); runs longer than 1000 steps
    are averaged in equal buckets of loss_curve_stride consecutive steps (at most 1000 points).

    \b
    Examples:
      microtrain simulate examples/digits_cnn.onnx --data digits
      microtrain simulate examples/digits_cnn.onnx --data digits --schedule bias --steps 500 --json
      microtrain simulate model.tflite --data my.npz --update -1:1,-2:0.5 --plot curve.png
    """
    from ..compiler.inspect import precision
    from ..compiler.quantize import quantize_graph
    from ..compiler.schedule import resolve
    from .schedule_options import pop_memory_options, pop_schedule_options, schedule_from_options

    mem_kw = pop_memory_options(kw)
    sched_kw = pop_schedule_options(kw)
    if epochs is not None and steps is not None:
        raise MicrotrainError("give --epochs or --steps, not both")
    schedule = schedule_from_options(**sched_kw)
    show = not as_json

    with rp.progress(f"reading {model}", show):
        graph = load_model_file(model)
    is_float = precision(graph) == "float32"
    resolve(schedule, graph)  # fail fast on a bad --update / count, before PTQ and data
    with rp.progress(f"loading {data}", show), _guard("unexpected-data", DataError, f"{data}: could not load data"):
        from .data import load_data

        ds = load_data(data, graph)

    n_calib = 0
    if is_float:
        n_calib = min(calib_samples, len(ds.x_train))
        with rp.progress(f"quantizing with {n_calib} calibration samples", show):
            qgraph = quantize_graph(graph, ds.x_train[:n_calib])
    else:
        qgraph = graph
    plan = resolve(schedule, qgraph)
    warnings = list(plan.warnings)
    for w in warnings:
        click.echo(f"warning: {_one_line(w)}", err=True)

    if engine == "c" and accumulate != 1:
        raise MicrotrainError(f"--engine c --accumulate {accumulate}: the C engine applies every step's gradient; "
                              "use --engine numpy for gradient accumulation")
    res = _run_int8(qgraph, plan, ds, steps, epochs, seed, show, accumulate, engine, mem_kw)
    for w in res.trainer.warnings:
        if w not in warnings:
            warnings.append(w)
            click.echo(f"warning: {_one_line(w)}", err=True)
    hist = res.history

    twin = None
    if is_float and not no_float:
        from ..compiler.train_float import train_float_twin

        with rp.progress(f"training the float twin ({hist.steps} steps)", show):
            twin = train_float_twin(graph, resolve(schedule, graph), ds, steps=hist.steps, seed=seed,
                                    accumulate=accumulate)

    saved = _save_params(save_params, res.trainer) if save_params else None
    if plot:
        with rp.progress(f"writing {plot}", show):
            _write_plot(plot, hist, twin.history if twin else None,
                        f"{model}: {schedule.describe()}")

    curve, stride = _downsample(hist.loss)
    result: dict[str, Any] = {
        "model": model, "precision": "float32" if is_float else "int8",
        "data": ds.name, "train_samples": int(len(ds.y_train)), "test_samples": int(len(ds.y_test)),
        "calib_samples": int(n_calib),
        "accuracy_before": float(res.acc_before), "accuracy_after": float(res.acc_after),
        "float_accuracy_before": float(twin.acc_before) if twin else None,
        "float_accuracy_after": float(twin.acc_after) if twin else None,
        "steps": int(hist.steps), "samples": int(hist.samples), "seed": int(seed), "accumulate": int(accumulate),
        "engine": engine,
        "lr": res.trainer.lrs, "schedule": schedule.to_json(), "schedule_description": schedule.describe(),
        "trainable_params": int(plan.num_trainable_params), "params_by_method": plan.params_by_method(),
        "plan": plan.describe(),
        "final_running_accuracy": float(hist.running_acc[-1]) if hist.steps else None,
        "loss_curve": curve, "loss_curve_stride": stride,
        "fg_skipped": int(hist.skipped), "seconds": float(hist.seconds),
        "float_seconds": float(twin.history.seconds) if twin else None,
        "warnings": warnings, "plot": plot, "saved_params": save_params, "saved_tensors": saved,
    }
    if as_json:
        rp.print_json(result)
        return
    _render_simulate(result)


def _render_simulate(r: dict[str, Any]) -> None:
    con = rp.stdout_console()
    con.print(f"[bold]{rp.esc(r['model'])}[/bold]  {r['precision']}, data {rp.esc(r['data'])} "
              f"({r['train_samples']} train / {r['test_samples']} test samples)", soft_wrap=True)
    if r["float_accuracy_after"] is not None:
        fl = f"{rp.fmt_pct(r['float_accuracy_after'])} (before {rp.fmt_pct(r['float_accuracy_before'])})"
    else:
        fl = "- (" + ("--no-float" if r["precision"] == "float32" else "int8 model: no float twin") + ")"
    lr = ", ".join(f"{m} {v:g}" for m, v in r["lr"].items() if r["params_by_method"].get(m)) or "-"
    rows = [
        ["accuracy before", rp.fmt_pct(r["accuracy_before"]),
         "int8 " + (f"PTQ, {r['calib_samples']} calibration samples" if r["calib_samples"] else "model as given")],
        ["accuracy after", rp.fmt_pct(r["accuracy_after"]), "int8 engine (numpy integer reference)"],
        ["float after", fl, "float twin, same schedule, steps and seed"],
        ["steps", f"{r['steps']:,}", f"{r['samples']:,} samples, seed {r['seed']}, {r['seconds']:.1f} s"],
        ["trainable params", f"{r['trainable_params']:,}", r["plan"]],
        ["schedule", r["schedule"]["kind"], f"lr used: {lr}"],
        ["warnings", str(len(r["warnings"])), "" if r["warnings"] else "-"],
    ]
    if r["saved_params"]:
        rows.append(["saved params", str(len(r["saved_tensors"])), r["saved_params"]])
    if r["plot"]:
        rows.append(["plot", "", r["plot"]])
    con.print(rp.table(["", ("", "right"), ""], rows, header=False))
    con.print(f"schedule: {rp.esc(r['schedule_description'])}", soft_wrap=True)
    for w in r["warnings"]:
        con.print(f"warning: {rp.esc(w)}", soft_wrap=True)


def _register() -> None:
    from .plan_cmd import plan_cmd
    from .compile_cmd import compile_cmd

    from .device_cmd import COMMANDS

    cli.add_command(plan_cmd)
    cli.add_command(compile_cmd)
    for cmd in COMMANDS:
        cli.add_command(cmd)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="microtrain")


if __name__ == "__main__":
    main()
