"""Draw a memory plan: a text timeline for terminals/logs and a PNG for reports.

Both views put program steps on the x axis and buffers in arena-offset order; the step with the
most bytes live (the one that sets the lower bound) is marked. matplotlib is imported only inside
``png_timeline`` (an optional dependency, ``microtrain[plot]``) and drawn with the Agg canvas, so
no GUI backend or global pyplot state is touched.
"""
from __future__ import annotations

import os
import tempfile
from typing import Mapping, Sequence

from .planner import Buffer, Plan, live_profile

__all__ = ["KIND_COLORS", "PEAK_MARKER", "ascii_timeline", "infer_kind", "png_timeline"]

PEAK_MARKER = "peak"

# Buffer kind -> colour (Okabe-Ito colour-blind-safe palette + grey/brown). Order = legend order.
# The kinds of ``lifetimes.KINDS`` come first.
KIND_COLORS: dict[str, str] = {
    "input": "#56B4E9",
    "activation": "#0072B2",
    "saved": "#E69F00",
    "mask": "#F0E442",
    "gradient": "#D55E00",
    "scratch": "#999999",
    "loss": "#CC79A7",
    "param": "#009E73",
    "optimizer": "#8C564B",
    "other": "#4D4D4D",
}

# Fills for kinds not in KIND_COLORS (Paul Tol's muted palette), in sorted-kind order.
_EXTRA_COLORS = ("#332288", "#117733", "#44AA99", "#88CCEE", "#DDCC77", "#882255", "#AA4499")

# Leading name token (before the first '/', ':', '@', '.', '_', '-', space or digit) -> kind.
_PREFIX_KIND: dict[str, str] = {
    "input": "input", "in": "input", "sample": "input",
    "act": "activation", "activation": "activation", "x": "activation", "y": "activation",
    "out": "activation", "fwd": "activation",
    "saved": "saved", "save": "saved", "keep": "saved",
    "mask": "mask", "relumask": "mask",
    "grad": "gradient", "gradient": "gradient", "g": "gradient", "dx": "gradient",
    "dy": "gradient", "dw": "gradient", "db": "gradient", "bwd": "gradient",
    "scratch": "scratch", "tmp": "scratch", "temp": "scratch", "im2col": "scratch", "work": "scratch",
    "loss": "loss", "logits": "loss", "label": "loss", "labels": "loss",
    "param": "param", "params": "param", "w": "param", "weight": "param", "weights": "param",
    "bias": "param", "b": "param", "master": "param",
    "opt": "optimizer", "optimizer": "optimizer", "momentum": "optimizer", "state": "optimizer",
}


def infer_kind(name: str) -> str:
    """Kind of a buffer from its name's leading token (``"grad/conv3"`` -> ``"gradient"``)."""
    token = []
    for ch in name.lower():
        if ch in "/:@._- " or ch.isdigit():
            break
        token.append(ch)
    return _PREFIX_KIND.get("".join(token), "other")


def _kinds_of(buffers: Sequence[Buffer], kinds: Mapping[str, str] | None) -> dict[str, str]:
    kinds = kinds or {}
    return {b.name: kinds.get(b.name) or infer_kind(b.name) for b in buffers}


def _rows(buffers: Sequence[Buffer], plan: Plan) -> list[Buffer]:
    return sorted(buffers, key=lambda b: (plan.offsets[b.name], b.first, b.name))


def _peak(buffers: Sequence[Buffer]) -> tuple[int | None, int]:
    step, live = None, -1
    for s, v in live_profile(buffers):
        if v > live:
            step, live = s, v
    return step, max(live, 0)


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------
def ascii_timeline(buffers: Sequence[Buffer], plan: Plan, width: int = 100) -> str:
    """Text chart: one row per buffer (by offset), one column per step (or per group of steps when
    there are more than ``width``). ``#`` = live; the peak column is drawn with ``:`` and marked
    ``v peak`` above the grid.
    """
    bufs = list(buffers)
    rows = _rows(bufs, plan)
    peak_step, peak_bytes = _peak(bufs)
    ratio = f"{plan.size / plan.lower_bound:.3f}x" if plan.lower_bound else "-"
    head = [
        f"memory plan [{plan.region or '-'}]: arena {plan.size:,} B, lower bound "
        f"{plan.lower_bound:,} B ({ratio}), algorithm {plan.algorithm}, {len(bufs)} buffers",
    ]
    if not bufs:
        return head[0] + "\n(no buffers)\n"
    lo = min(b.first for b in bufs)
    hi = max(b.last for b in bufs)
    nsteps = hi - lo + 1
    per = -(-nsteps // max(1, width))  # steps per column
    ncols = -(-nsteps // per)

    def col(step: int) -> int:
        return (step - lo) // per

    peak_col = col(peak_step) if peak_step is not None else -1
    head.append(f"{PEAK_MARKER} at step {peak_step}: {peak_bytes:,} B live; steps {lo}..{hi}"
                + (f", {per} steps per column" if per > 1 else ""))
    name_w = min(28, max(4, *(len(b.name) for b in rows)))
    off_w = max(6, len(f"{plan.size:,}"))
    size_w = max(5, len(f"{max(b.size for b in rows):,}"))
    left = f"{'offset':>{off_w}} {'size':>{size_w}} {'name':<{name_w}} "
    pad = " " * len(left)

    # Ruler: a tick label every 10 columns, then the peak marker line.
    ruler = [" "] * ncols
    for c in range(0, ncols, 10):
        label = str(lo + c * per)
        if c + len(label) <= ncols:
            ruler[c:c + len(label)] = label
    marker = [" "] * ncols
    if peak_col >= 0:
        text = f"v {PEAK_MARKER}"
        if peak_col + len(text) <= ncols:
            marker[peak_col:peak_col + len(text)] = text
        else:  # no room on the right: put the label left of the 'v'
            start = max(0, peak_col - len(text) + 1)
            marker[start:peak_col + 1] = f"{PEAK_MARKER} v"[-(peak_col + 1 - start):]
    lines = head + [pad + " " + "".join(ruler), pad + " " + "".join(marker), left + "|" + "-" * ncols + "|"]
    for b in rows:
        cells = [":" if c == peak_col else " " for c in range(ncols)]
        for c in range(col(b.first), col(b.last) + 1):
            cells[c] = "#" if b.size else "."
        name = b.name if len(b.name) <= name_w else b.name[:name_w - 1] + "~"
        lines.append(f"{plan.offsets[b.name]:>{off_w},} {b.size:>{size_w},} {name:<{name_w}} "
                     f"|{''.join(cells)}|")
    lines.append(left.replace("offset", "      ").replace("size", "    ").replace("name", "    ")
                 + "|" + "-" * ncols + "|")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# PNG
# ---------------------------------------------------------------------------------------------
def _colors(kinds: set[str]) -> dict[str, str]:
    """Kind -> fill, in legend order: known kinds in ``KIND_COLORS`` order, then unknown ones
    (sorted) from a second palette."""
    out = {k: c for k, c in KIND_COLORS.items() if k in kinds}
    for i, k in enumerate(sorted(kinds - set(KIND_COLORS))):
        out[k] = _EXTRA_COLORS[i % len(_EXTRA_COLORS)]
    return out


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "\u2026"


def _text_color(fill: str) -> str:
    """Black on light fills, white on dark ones (relative luminance of an sRGB hex colour)."""
    r, g, b = (int(fill[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def _tick_steps(lo: int, hi: int, max_ticks: int) -> list[int]:
    n = hi - lo + 1
    stride = max(1, -(-n // max_ticks))
    return list(range(lo, hi + 1, stride))


def png_timeline(buffers: Sequence[Buffer], plan: Plan, path: str | os.PathLike,
                 title: str | None = None,
                 step_labels: Sequence[str] | Mapping[int, str] | None = None,
                 kinds: Mapping[str, str] | None = None) -> str:
    """Write the plan as a PNG: x = program step, y = arena offset (KiB), one box per buffer
    coloured by kind, lines at the arena size and the lower bound, the peak step marked.

    ``step_labels``: op name per step (sequence indexed by step, or {step: label}); shown as
    rotated, thinned tick labels. ``kinds``: {buffer name: kind} overriding ``infer_kind``.
    The file is written to a temporary sibling and renamed. Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    bufs = list(buffers)
    path = os.fspath(path)
    kind_of = _kinds_of(bufs, kinds)
    peak_step, peak_bytes = _peak(bufs)
    lo = min((b.first for b in bufs), default=0)
    hi = max((b.last for b in bufs), default=0)
    nsteps = hi - lo + 1
    kib = 1024.0

    fig_w = min(20.0, max(10.0, 6.0 + 0.1 * nsteps))
    fig_h = 7.0
    dpi = 110
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    top = max(plan.size, plan.lower_bound, 1) / kib
    ymax = top * 1.16  # headroom above the arena line for the peak label
    # Rough plot-area size in pixels (legend and labels take the rest), to decide which boxes
    # are big enough to carry their buffer's name.
    px_per_step = 0.78 * fig_w * dpi / nsteps
    px_per_kib = 0.75 * fig_h * dpi / ymax
    label_font = 7.0
    char_px = 0.6 * label_font * dpi / 72

    # One rectangle per buffer over [first - 0.5, last + 0.5]: a one-step buffer is 1 wide and
    # centred on its step's tick.
    colors = _colors({kind_of[b.name] for b in bufs if b.size})
    for b in _rows(bufs, plan):
        if b.size == 0:
            continue
        kind = kind_of[b.name]
        x, y = b.first - 0.5, plan.offsets[b.name] / kib
        w, h = b.last - b.first + 1, b.size / kib
        fill = colors[kind]
        ax.add_patch(Rectangle((x, y), w, h, facecolor=fill,
                               edgecolor="white",
                               # a white outline would wash out boxes only a few pixels high
                               linewidth=0.4 if min(h * px_per_kib, w * px_per_step) >= 4 else 0))
        if h * px_per_kib >= 2.2 * label_font and w * px_per_step >= char_px * min(len(b.name), 6):
            max_chars = int(w * px_per_step / char_px) - 1
            name = _short(b.name, max(2, max_chars))
            ax.text(x + w / 2, y + h / 2, name, ha="center", va="center", fontsize=label_font,
                    color=_text_color(fill), clip_on=True)

    ax.axhline(plan.size / kib, color="black", linewidth=1.4, zorder=3)
    ax.axhline(plan.lower_bound / kib, color="#B00020", linewidth=1.0, linestyle=(0, (4, 3)),
               zorder=4)
    handles = [Patch(facecolor=c, label=k) for k, c in colors.items()]
    handles += [
        Line2D([], [], color="black", linewidth=1.4,
               label=f"arena {plan.size:,} B ({plan.size / kib:.1f} KiB)"),
        Line2D([], [], color="#B00020", linewidth=1.0, linestyle=(0, (4, 3)),
               label=f"lower bound {plan.lower_bound:,} B ({plan.lower_bound / kib:.1f} KiB)"),
    ]
    if peak_step is not None:
        ax.axvline(peak_step, color="#B00020", linewidth=1.0, linestyle=":", zorder=4)
        right = (peak_step - lo) <= 0.7 * nsteps
        ax.annotate(f"{PEAK_MARKER} at step {peak_step}: {peak_bytes:,} B live",
                    xy=(peak_step, (top + ymax) / 2), xytext=(5 if right else -5, 0),
                    textcoords="offset points", ha="left" if right else "right", va="center",
                    fontsize=9, color="#B00020")
        handles.append(Line2D([], [], color="#B00020", linewidth=1.0, linestyle=":",
                              label=f"peak step {peak_step}"))

    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_ylim(0, ymax)
    ax.set_ylabel("arena offset (KiB)")
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if step_labels is not None:
        labels = (dict(step_labels) if isinstance(step_labels, Mapping)
                  else {i: s for i, s in enumerate(step_labels)})
        ticks = _tick_steps(lo, hi, max_ticks=int(fig_w * 4))
        ax.set_xticks(ticks)
        ax.set_xticklabels([_short(f"{s} {labels[s]}" if s in labels else str(s), 32) for s in ticks],
                           rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
        ax.set_xlabel("program step (op)")
    else:
        ax.set_xlabel("program step")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8,
              frameon=False)
    ratio = f", {plan.size / plan.lower_bound:.3f}x bound" if plan.lower_bound else ""
    ax.set_title(title or f"memory plan [{plan.region or '-'}]: {plan.algorithm}, "
                          f"{len(bufs)} buffers, arena {plan.size:,} B{ratio}", fontsize=11)

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
