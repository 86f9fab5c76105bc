"""Rendering helpers for the CLI: rich consoles and tables, number formatting, JSON output.

Contracts:
  * results go to stdout, progress and errors to stderr;
  * ``print_json`` writes exactly one JSON object (plus a newline) and nothing else;
  * ``progress`` shows a spinner only when stderr is a terminal and it is enabled; otherwise it
    is a no-op, so piped output and ``--json`` stay clean.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

#: width used for tables when stdout is not a terminal (pipes, files, tests): wide enough that
#: rows are not folded, so the text stays greppable.
PIPE_WIDTH = 160


def stdout_console() -> Console:
    """A console on the *current* ``sys.stdout`` (resolved per call, so test runners can capture it)."""
    out = sys.stdout
    probe = Console(file=out)
    return Console(file=out, width=None if probe.is_terminal else PIPE_WIDTH, highlight=False)


def esc(text: object) -> str:
    """``text`` made safe to embed in rich markup."""
    return escape(str(text))


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


# ---- numbers ------------------------------------------------------------------------------------

def fmt_bytes(n: int | None) -> str:
    """Bytes in binary units with one decimal where it matters: ``320 KiB``, ``1.5 MiB``, ``812 B``."""
    if n is None:
        return "-"
    n = int(n)
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def fmt_count(n: int | None) -> str:
    """Counts with SI suffixes: ``812``, ``12.3 k``, ``4.56 M``, ``1.20 G``."""
    if n is None:
        return "-"
    n = int(n)
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return str(n)


def fmt_hz(hz: int | None) -> str:
    if hz is None:
        return "-"
    return f"{hz / 1e6:g} MHz" if hz >= 10**6 else f"{hz / 1e3:g} kHz"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def fmt_shape(shapes: Sequence[Sequence[int]]) -> str:
    return ", ".join("[" + "×".join(str(d) for d in s) + "]" for s in shapes)


# ---- tables -------------------------------------------------------------------------------------

def table(columns: Iterable[str | tuple[str, str]], rows: Iterable[Sequence[Any]], title: str | None = None,
          footer: Sequence[Any] | None = None, header: bool = True) -> Table:
    """A plain rich table. ``columns`` are names or ``(name, justify)``; cells are str()-ed and shown
    literally (no rich markup), so names with brackets survive."""
    t = Table(title=title, show_header=header, show_footer=footer is not None, box=None, pad_edge=False,
              header_style="bold")
    cols = [(c, "left") if isinstance(c, str) else c for c in columns]
    for i, (name, justify) in enumerate(cols):
        t.add_column(name, justify=justify, footer=str(footer[i]) if footer is not None else "",
                     no_wrap=True)
    for r in rows:
        t.add_row(*[Text("" if c is None else str(c)) for c in r])
    return t


# ---- JSON ---------------------------------------------------------------------------------------

def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays, tuples, sets and paths into JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def print_json(obj: dict) -> None:
    """Write one JSON object to stdout."""
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


# ---- progress -----------------------------------------------------------------------------------

@contextlib.contextmanager
def progress(message: str, enabled: bool = True) -> Iterator[None]:
    """A transient spinner on stderr while the block runs (only on a terminal)."""
    console = stderr_console()
    if not enabled or not console.is_terminal:
        yield
        return
    with console.status(message, spinner="dots"):
        yield
