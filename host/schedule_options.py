"""Click options that describe a training schedule, shared by simulate / plan / compile.

Usage::

    @cli.command()
    @click.argument("model")
    @schedule_options
    def simulate(model, **kw):
        schedule = schedule_from_options(**kw)   # ScheduleError (exit 2) on a bad combination

Click only checks that numbers are numbers; every semantic check (ranges, options that do not
apply to the chosen kind, malformed --update) raises :class:`ScheduleError` with one line, so all
schedule problems read the same. Options left out are passed as None (``no_qas`` as False); the
per-kind defaults are those of :class:`~microtrain.compiler.schedule.Schedule`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from ..compiler.schedule import (FGOptions, Schedule, ScheduleError, normalize_kind, not_applicable,
                                 parse_count, parse_update, users_of)

#: Keyword arguments :func:`schedule_options` adds to a command (and :func:`schedule_from_options` reads).
SCHEDULE_OPTION_NAMES = ("schedule", "bias_last", "update", "last", "bp_last", "fg_m", "fg_eps", "fg_batch",
                         "lr", "momentum", "no_qas")

DEFAULT_KIND = "sparse"

_FG = FGOptions()

_DEFAULTS_NOTE = (
    "When none of --bias-last/--update/--last is given: sparse and fg train all biases and the "
    "classifier's weights; hybrid trains the last layer by backprop and the other biases by "
    "forward gradient; bias trains all biases; last-k the last layer. When any is given, exactly "
    "the given selection is trained.")

_OPTIONS = [
    click.option(
        "--schedule", "schedule", metavar="KIND|@FILE.json", default=None,
        help="What to train and how. KIND: sparse (backprop on chosen biases and weight rows), bias "
             "(biases only), last-k (last K layers fully), full (everything), none (inference only), "
             "fg (forward gradient: no backward pass, training memory close to inference), hybrid "
             "(forward gradient for the body, backprop for the last layers). @FILE.json (or a path "
             f"ending in .json) loads a saved schedule; no other schedule option may be given with "
             f"it. {_DEFAULTS_NOTE} [default: {DEFAULT_KIND}]"),
    click.option(
        "--bias-last", "bias_last", metavar="N|all", default=None,
        help="Train the biases of the last N conv/fc layers (conv2d, depthwise_conv2d, "
             "fully_connected, counted from the output end), or of all of them. For sparse, bias, "
             "fg, hybrid."),
    click.option(
        "--update", "update", metavar="INDEX:RATIO,...", default=None,
        help="Train weights of chosen conv/fc layers, e.g. -1:1,-2:0.5,-4:25%. INDEX counts conv/fc "
             "layers in graph order: negative from the output end (-1 = classifier, -2 = the one "
             "before), non-negative from the input (0 = first layer). RATIO in (0, 1] (or a "
             "percentage) is the fraction of the layer's output channels trained: the first "
             "ceil(RATIO*C_out) weight rows, at least 1 (for depthwise layers, channels of the "
             "weight's last axis). INDEX alone means RATIO 1. For sparse, fg, hybrid."),
    click.option(
        "--last", "last", metavar="K|all", default=None,
        help="Train weights and biases of the last K conv/fc layers fully. For last-k "
             "[default: 1]; also sparse, fg, hybrid."),
    click.option(
        "--bp-last", "bp_last", metavar="K|all", default=None,
        help="hybrid: the last K conv/fc layers are trained by backprop (weights and biases fully), "
             "the rest of the selection by forward gradient. [default: 1]"),
    click.option(
        "--fg-m", "fg_m", type=int, metavar="M", default=None,
        help=f"Forward gradient: perturbations per step (sign-m-SPSA). [default: {_FG.m}]"),
    click.option(
        "--fg-eps", "fg_eps", type=float, metavar="EPS", default=None,
        help="Forward gradient: perturbation size as a fraction of max|w| of each trainable tensor "
             f"(never below 1 LSB). [default: {_FG.eps:g}]"),
    click.option(
        "--fg-batch", "fg_batch", type=int, metavar="B", default=None,
        help=f"Forward gradient: samples per step. [default: {_FG.batch}]"),
    click.option(
        "--lr", "lr", type=float, metavar="LR", default=None,
        help="Learning rate. [default: the engine's default for the method]"),
    click.option(
        "--momentum", "momentum", type=float, metavar="MU", default=None,
        help="SGD momentum in [0, 1). [default: 0]"),
    click.option(
        "--no-qas", "no_qas", is_flag=True, default=False,
        help="Turn off quantization-aware scaling of the gradients (on by default)."),
]

def schedule_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator adding the schedule options (keyword arguments :data:`SCHEDULE_OPTION_NAMES`)."""
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


def pop_schedule_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the schedule options from a command's ``kwargs`` and return them."""
    return {k: kwargs.pop(k) for k in SCHEDULE_OPTION_NAMES if k in kwargs}


def _given(kw: dict[str, Any]) -> list[str]:
    """Option names (other than --schedule) the user gave."""
    return [k for k in SCHEDULE_OPTION_NAMES[1:] if (kw.get(k) is not None and k != "no_qas") or
            (k == "no_qas" and kw.get(k))]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_file(spec: str) -> bool:
    return spec.startswith("@") or spec.lower().endswith(".json")


def schedule_from_options(**kwargs: Any) -> Schedule:
    """Build the :class:`Schedule` the options describe (other keyword arguments are ignored).

    Raises ScheduleError for an unknown kind, an unreadable/invalid schedule file, any other
    schedule option given together with a file, an option the kind does not read, or a bad value.
    """
    kw = {k: kwargs.get(k) for k in SCHEDULE_OPTION_NAMES}
    spec = kw["schedule"]
    spec = DEFAULT_KIND if spec is None else str(spec).strip()
    given = _given(kw)
    if _is_file(spec):
        path = Path(spec[1:] if spec.startswith("@") else spec).expanduser()
        if given:
            flags = ", ".join(_flag(g) for g in given)
            raise ScheduleError(f"--schedule {spec} holds the whole schedule; remove {flags} "
                                f"(or edit the file)")
        return Schedule.load(path)

    kind = normalize_kind(spec)
    for g in given:
        field = "qas" if g == "no_qas" else g
        if kind not in users_of(field):
            raise not_applicable(field, kind)

    fg = None
    if any(kw[k] is not None for k in ("fg_m", "fg_eps", "fg_batch")):
        fg = FGOptions(m=_FG.m if kw["fg_m"] is None else kw["fg_m"],
                       eps=_FG.eps if kw["fg_eps"] is None else kw["fg_eps"],
                       batch=_FG.batch if kw["fg_batch"] is None else kw["fg_batch"])
    counts = {k: None if kw[k] is None else parse_count(kw[k], _flag(k)) for k in ("bias_last", "last", "bp_last")}
    return Schedule(
        kind,
        update=None if kw["update"] is None else parse_update(kw["update"]),
        fg=fg,
        lr=kw["lr"],
        momentum=0.0 if kw["momentum"] is None else kw["momentum"],
        qas=not kw["no_qas"],
        **counts,
    )


# ---- memory options (plan, simulate, compile, run) ------------------------------------------------
MEMORY_OPTION_NAMES = ("patch", "patch_max_overhead", "scratch")

_MEMORY_OPTIONS = [
    click.option(
        "--patch", "patch", metavar="auto|off|RxC", default="auto", show_default=True,
        help="Patch-based execution of the frozen stage: the first frozen layers run on an R x C grid of "
             "spatial tiles (halos recomputed) so their wide activations never exist whole. auto: the split "
             "point and grid (up to 8x8) with the smallest SRAM, used only when it lowers the peak; off: "
             "layer by layer; RxC (e.g. 4x4): that grid at the best split point."),
    click.option(
        "--patch-max-overhead", "patch_max_overhead", type=click.FloatRange(min=0.0), default=0.15,
        show_default=True, metavar="F",
        help="--patch auto: most extra multiply-accumulates (halo recomputation) allowed, as a fraction of the "
             "model's forward MACs."),
    click.option(
        "--scratch", "scratch", type=click.Choice(("fast", "lean")), default="fast", show_default=True,
        help="Backward kernel scratch: fast gives every conv/fc input gradient and weight update an int32 "
             "accumulator buffer; lean drops it at the steps that would set the SRAM peak (those sums are "
             "computed twice: same integers, more instructions)."),
]


def memory_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator adding --patch, --patch-max-overhead and --scratch (:data:`MEMORY_OPTION_NAMES`)."""
    for opt in reversed(_MEMORY_OPTIONS):
        f = opt(f)
    return f


def pop_memory_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the memory options from ``kwargs``; return them as plan_memory/generate keywords
    (``patch``: "auto", "off" or an (R, C) grid)."""
    from ..compiler.patch import parse_grid

    out = {k: kwargs.pop(k) for k in MEMORY_OPTION_NAMES if k in kwargs}
    p = str(out.get("patch", "auto")).strip().lower()
    out["patch"] = p if p in ("auto", "off") else parse_grid(p)
    return out
