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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="microtrain")


if __name__ == "__main__":
    main()
