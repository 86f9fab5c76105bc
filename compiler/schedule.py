"""Training schedules: what is trained and how, as plain data, and its resolution against a graph.

A :class:`Schedule` is graph-independent (it is what the user typed or saved); :func:`resolve`
turns it into a :class:`TrainPlan`, the concrete per-layer decision for one graph, which the
program builder (backprop), the forward-gradient driver, the memory planner and the reports read.

Layers. Only conv/fc layers carry trainable parameters: ops ``conv2d``, ``depthwise_conv2d`` and
``fully_connected``, counted in graph (execution) order. A layer index is either non-negative,
counting from the input (0 = first layer), or negative, counting from the output end (-1 = the
classifier). "The last N layers" are the N layers with the highest indices.

Rows. A layer's output channels are the rows of its weight: axis 0 of conv2d ``[Cout,KH,KW,Cin]``
and fully_connected ``[Cout,Cin]`` weights, axis 3 of depthwise ``[1,KH,KW,C*M]`` weights. A
partial update trains rows ``[0, k)`` only; ``k = max(1, ceil(r * Cout))`` computed exactly on the
decimal value of the ratio ``r`` (0.07 * 100 gives 7, where float math gives 8).

Kinds and the selectors each one reads (a selector that does not apply to a kind must keep its
neutral value: 0, empty, None):

  ========  =====================================  ==============================================
  kind      selectors                              trained
  ========  =====================================  ==============================================
  sparse    bias_last, update, last                union of the selections, by backprop
  bias      bias_last                              biases of the last N layers, by backprop
  last-k    last                                   weights+biases of the last K layers, backprop
  full      -                                      every weight and bias, by backprop
  none      -                                      nothing (inference only)
  fg        bias_last, update, last                the sparse selection, by forward gradient
  hybrid    bias_last, update, last, bp_last       last bp_last layers fully by backprop; the
                                                   selection on the other layers by forward grad.
  ========  =====================================  ==============================================

  selections: ``bias_last`` N: biases of the last N layers; ``update`` {index: ratio}: the leading
  rows of those layers' weights; ``last`` K: weights and biases of the last K layers, all rows.

Defaults (applied by the constructor when selectors are None):
  * sparse, fg: when none of bias_last/update/last is given, biases of all layers plus the whole
    classifier weight (``bias_last="all", update={-1: 1.0}``); when any is given, the others are
    empty, so the selection is exactly what was asked for.
  * hybrid: bp_last 1; when none of bias_last/update/last is given, forward gradient on the
    biases of all other layers.
  * bias: all biases. last-k: the last layer.
  * fg, hybrid: ``FGOptions()`` (m 3, eps 0.02, batch 1). Other kinds: ``fg`` is None.
  * lr None (the engine's default for the method), momentum 0, qas True.

Counts (bias_last, last, bp_last) are ints >= 0 or ``"all"``; a count larger than the model's
number of conv/fc layers is an error at :func:`resolve` time (not clamped: a count that does not
match the model usually means the schedule was written for another model).

Every problem raises :class:`ScheduleError` with one line naming the option (CLI spelling, which
maps one-to-one onto the JSON fields: ``--bias-last`` = ``bias_last``, ``--fg-m`` = ``fg.m``).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

from .errors import MicrotrainError
from .ir import Graph

#: Version of the JSON format written by :meth:`Schedule.to_json`.
FORMAT_VERSION = 1
#: Key that marks a JSON object as a microtrain schedule; its value is the format version.
FORMAT_KEY = "microtrain_schedule"

KINDS = ("sparse", "bias", "last-k", "full", "none", "fg", "hybrid")
#: Kinds whose (non-head) layers are trained by forward gradient.
FG_KINDS = ("fg", "hybrid")
#: Ops with a trainable weight (input 1) and optional bias (input 2), and the weight's row axis.
LAYER_OPS = {"conv2d": 0, "depthwise_conv2d": 3, "fully_connected": 0}
#: Count value meaning "every conv/fc layer of the model".
ALL = "all"

Count = Union[int, str]  # int >= 0 or ALL

_SELECTORS: dict[str, tuple[str, ...]] = {
    "sparse": ("bias_last", "update", "last"),
    "bias": ("bias_last",),
    "last-k": ("last",),
    "full": (),
    "none": (),
    "fg": ("bias_last", "update", "last"),
    "hybrid": ("bias_last", "update", "last", "bp_last"),
}
_FLAGS = {"bias_last": "--bias-last", "update": "--update", "last": "--last", "bp_last": "--bp-last",
          "fg": "--fg-m/--fg-eps/--fg-batch", "fg_m": "--fg-m", "fg_eps": "--fg-eps",
          "fg_batch": "--fg-batch", "lr": "--lr", "momentum": "--momentum", "qas": "--no-qas"}
_HINTS = {
    ("bias", "update"): "use --schedule sparse to train weights too",
    ("bias", "last"): "use --schedule sparse --last K to train whole layers too",
    ("last-k", "bias_last"): "use --schedule sparse --last K --bias-last N",
    ("last-k", "update"): "use --schedule sparse --last K --update ...",
    ("full", "bias_last"): "full trains every weight and bias; use --schedule sparse to choose",
    ("full", "update"): "full trains every weight and bias; use --schedule sparse to choose",
    ("full", "last"): "full trains every weight and bias; use --schedule last-k to choose",
}
_KIND_ALIASES = {"lastk": "last-k", "last_k": "last-k", "bias-only": "bias", "forward-gradient": "fg"}


class ScheduleError(MicrotrainError):
    """An invalid schedule: bad option value, option that does not apply, index naming no layer,
    malformed or unknown-version schedule file."""


# ---- option applicability ------------------------------------------------------------------------

def users_of(option: str) -> tuple[str, ...]:
    """Kinds that read ``option`` (a selector, ``bp_last``, ``fg``/``fg_*``, ``lr``/``momentum``/``qas``)."""
    if option in ("fg", "fg_m", "fg_eps", "fg_batch"):
        return FG_KINDS
    if option in ("lr", "momentum", "qas"):
        return tuple(k for k in KINDS if k != "none")
    return tuple(k for k in KINDS if option in _SELECTORS[k])


def not_applicable(option: str, kind: str) -> ScheduleError:
    """The error for ``option`` given with a schedule kind that does not read it."""
    flag = _FLAGS.get(option, option)
    if kind == "none":
        return ScheduleError(f"{flag} does not apply to --schedule none (inference only, nothing is trained)")
    users = users_of(option)
    hint = _HINTS.get((kind, option))
    used = users[0] if len(users) == 1 else f"{', '.join(users[:-1])} or {users[-1]}"
    return ScheduleError(f"{flag} does not apply to --schedule {kind}; it is used by --schedule {used}"
                         + (f" ({hint})" if hint else ""))


def normalize_kind(text: str) -> str:
    """``text`` as one of :data:`KINDS` (case-insensitive, ``_`` for ``-`` accepted)."""
    k = str(text).strip().lower().replace("_", "-")
    k = _KIND_ALIASES.get(k, k)
    if k not in KINDS:
        raise ScheduleError(f"unknown schedule {text!r}; expected one of {', '.join(KINDS)} or @FILE.json")
    return k


# ---- parsing --------------------------------------------------------------------------------------

_INDEX_RE = re.compile(r"^[+-]?\d+$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")

UPDATE_SYNTAX = "INDEX:RATIO[,INDEX:RATIO...] such as -1:1,-2:0.5"


def parse_update(text: str) -> dict[int, float]:
    """Parse ``"-1:1,-2:0.5,-4:25%"`` into ``{-1: 1.0, -2: 0.5, -4: 0.25}`` (order kept).

    Entries are ``INDEX:RATIO`` or ``INDEX`` (ratio 1). INDEX is an integer (negative counts from
    the output end). RATIO is a decimal or a percentage in (0, 1] / (0%, 100%].
    """
    s = str(text).strip()
    if not s:
        raise ScheduleError(f"--update is empty; expected {UPDATE_SYNTAX}")
    out: dict[int, float] = {}
    for raw in s.split(","):
        entry = raw.strip()
        if not entry:
            raise ScheduleError(f"--update {s!r}: empty entry; expected {UPDATE_SYNTAX}")
        idx_text, sep, ratio_text = entry.partition(":")
        idx_text, ratio_text = idx_text.strip(), ratio_text.strip()
        if not _INDEX_RE.match(idx_text):
            raise ScheduleError(f"--update {entry!r}: layer index {idx_text!r} is not an integer; "
                                f"expected {UPDATE_SYNTAX}")
        idx = int(idx_text)
        ratio = _parse_ratio(entry, ratio_text) if sep else 1.0
        if idx in out:
            raise ScheduleError(f"--update {s!r}: layer index {idx} is given twice")
        out[idx] = ratio
    return out


def _parse_ratio(entry: str, text: str) -> float:
    pct = text.endswith("%")
    num = text[:-1].strip() if pct else text
    if not _NUMBER_RE.match(num):
        raise ScheduleError(f"--update {entry!r}: ratio {text!r} is not a number; expected a fraction of "
                            f"output channels in (0, 1] such as 0.5, or a percentage such as 50%")
    r = float(Fraction(num) / 100) if pct else float(num)
    _check_ratio(f"--update {entry!r}", r)
    return r


def _check_ratio(where: str, r: float) -> None:
    if not (math.isfinite(r) and 0.0 < r <= 1.0):
        raise ScheduleError(f"{where}: ratio {r:g} is outside (0, 1]; it is the fraction of the layer's "
                            f"output channels to update (1 = all)")


def parse_count(text: str | int, flag: str) -> Count:
    """A count option (``--bias-last``, ``--last``, ``--bp-last``): an integer >= 0 or ``all``."""
    if isinstance(text, int) and not isinstance(text, bool):
        value: Count = text
    else:
        s = str(text).strip().lower()
        if s == ALL:
            return ALL
        if not _INDEX_RE.match(s):
            raise ScheduleError(f"{flag} {text!r}: expected a number of layers (>= 0) or 'all'")
        value = int(s)
    _check_count(flag, value)
    return value


def _check_count(flag: str, value: Any) -> None:
    if value == ALL:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScheduleError(f"{flag} {value!r}: expected a number of layers (>= 0) or 'all'")
    if value < 0:
        raise ScheduleError(f"{flag} {value}: a number of layers counted from the output end must be >= 0 "
                            f"(to name single layers by negative index use --update)")


def rows_for(ratio: float, channels: int) -> int:
    """Leading rows a ratio selects: ``max(1, ceil(ratio * channels))``, exact in decimal."""
    k = math.ceil(Fraction(repr(float(ratio))) * channels)
    return max(1, min(channels, k))


# ---- the schedule ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FGOptions:
    """Forward gradient (sign-m-SPSA): ``m`` perturbations per step, ``eps`` the perturbation size
    as a fraction of max|w| of each trainable tensor, ``batch`` samples per step."""

    m: int = 3
    eps: float = 0.02
    batch: int = 1

    def __post_init__(self) -> None:
        for name, flag in (("m", "--fg-m"), ("batch", "--fg-batch")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ScheduleError(f"{flag} must be an integer >= 1, got {v!r}")
        e = self.eps
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not (math.isfinite(e) and 0 < e <= 1):
            raise ScheduleError(f"--fg-eps must be in (0, 1] (a fraction of max|w| per tensor; 0.01-0.03 "
                                f"works), got {e!r}")
        object.__setattr__(self, "eps", float(e))

    def to_json(self) -> dict[str, Any]:
        return {"m": self.m, "eps": self.eps, "batch": self.batch}


@dataclass
class Schedule:
    """What is trained and how; see the module docstring for kinds, selectors and defaults.

    Fields left as None take the kind's defaults in ``__post_init__``; after construction every
    field is concrete (counts are ints or ``"all"``, ``update`` a dict, ``fg`` an FGOptions for
    fg/hybrid and None otherwise). Graph-dependent checks (indices, counts vs. layer count) happen
    in :func:`resolve`.
    """

    kind: str
    bias_last: Count | None = None
    update: dict[int, float] | None = None
    last: Count | None = None
    bp_last: Count | None = None
    fg: FGOptions | None = None
    lr: float | None = None  # None: the engine's default for the method
    momentum: float = 0.0
    qas: bool = True

    def __post_init__(self) -> None:
        self.kind = normalize_kind(self.kind)
        k = self.kind
        sels = _SELECTORS[k]
        given = any(getattr(self, s) is not None for s in ("bias_last", "update", "last") if s in sels)
        if k in ("sparse", "fg") and not given:
            self.bias_last, self.update = ALL, {-1: 1.0}
        elif k == "hybrid" and not given:
            self.bias_last = ALL
        elif k == "bias" and self.bias_last is None:
            self.bias_last = ALL
        elif k == "last-k" and self.last is None:
            self.last = 1
        if k == "hybrid" and self.bp_last is None:
            self.bp_last = 1
        self.bias_last = 0 if self.bias_last is None else self.bias_last
        self.last = 0 if self.last is None else self.last
        self.bp_last = 0 if self.bp_last is None else self.bp_last
        self.update = {} if self.update is None else self.update

        for s in ("bias_last", "last", "bp_last"):
            _check_count(_FLAGS[s], getattr(self, s))
        self.update = _check_update(self.update)
        for s in ("bias_last", "update", "last", "bp_last"):
            if s not in sels and getattr(self, s) not in (0, {}):
                raise not_applicable(s, k)

        if k in FG_KINDS:
            self.fg = FGOptions() if self.fg is None else self.fg
            if not isinstance(self.fg, FGOptions):
                raise ScheduleError(f"fg must be FGOptions, got {type(self.fg).__name__}")
        elif self.fg is not None and self.fg != FGOptions():
            raise not_applicable("fg", k)
        else:
            self.fg = None

        if self.lr is not None:
            if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) \
                    or not (math.isfinite(self.lr) and self.lr > 0):
                raise ScheduleError(f"--lr must be a number > 0, got {self.lr!r}")
            self.lr = float(self.lr)
        m = self.momentum
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not (math.isfinite(m) and 0 <= m < 1):
            raise ScheduleError(f"--momentum must be in [0, 1), got {m!r}")
        self.momentum = float(m)
        if not isinstance(self.qas, bool):
            raise ScheduleError(f"qas must be true or false, got {self.qas!r}")
        if k == "none":
            for opt, neutral in (("lr", None), ("momentum", 0.0), ("qas", True)):
                if getattr(self, opt) != neutral:
                    raise not_applicable(opt, k)

    # ---- queries ----------------------------------------------------------------------------
    @property
    def selectors(self) -> tuple[str, ...]:
        """Names of the selector fields this kind reads."""
        return _SELECTORS[self.kind]

    def describe(self) -> str:
        """One line for humans, e.g. ``sparse update by backprop: biases of all conv/fc layers,
        weights of layer -1 (100% of rows); lr engine default, momentum 0, QAS on``."""
        k = self.kind
        if k == "none":
            return "none: inference only, nothing is trained"
        if k == "full":
            head = "full update by backprop: weights and biases of every conv/fc layer"
        elif k == "last-k":
            head = f"last-k by backprop: weights and biases of {_count_text(self.last)}"
        elif k == "bias":
            head = f"bias-only update by backprop: biases of {_count_text(self.bias_last)}"
        elif k == "sparse":
            head = f"sparse update by backprop: {self._selection_text()}"
        elif k == "fg":
            head = f"forward gradient ({self._fg_text()}): {self._selection_text()}"
        else:
            head = (f"hybrid: backprop for weights and biases of {_count_text(self.bp_last)}; "
                    f"forward gradient ({self._fg_text()}) for {self._selection_text()}"
                    + (", outside the backprop layers" if self.bp_last else ""))
        lr = "engine default" if self.lr is None else f"{self.lr:g}"
        return f"{head}; lr {lr}, momentum {self.momentum:g}, QAS {'on' if self.qas else 'off'}"

    def _selection_text(self) -> str:
        parts = []
        if self.last:
            parts.append(f"weights and biases of {_count_text(self.last)}")
        if self.bias_last:
            parts.append(f"biases of {_count_text(self.bias_last)}")
        if self.update:
            parts.append("weights of " + ", ".join(f"layer {i} ({_pct(r)} of rows)" for i, r in self.update.items()))
        return ", ".join(parts) if parts else "nothing"

    def _fg_text(self) -> str:
        fg = self.fg
        return f"sign-{fg.m}-SPSA, eps {_pct(fg.eps)} of max|w|, batch {fg.batch}"

    # ---- JSON -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The schedule as a JSON-ready dict: the version key, the kind, and the fields the kind
        reads (update keys are strings, as JSON requires)."""
        d: dict[str, Any] = {FORMAT_KEY: FORMAT_VERSION, "kind": self.kind}
        for s in self.selectors:
            v = getattr(self, s)
            d[s] = {str(i): r for i, r in v.items()} if s == "update" else v
        if self.fg is not None:
            d["fg"] = self.fg.to_json()
        if self.kind != "none":
            d.update(lr=self.lr, momentum=self.momentum, qas=self.qas)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> "Schedule":
        """Inverse of :meth:`to_json`; ``data`` is a dict or a JSON string. Fields absent from the
        object take their defaults; unknown fields and unknown versions are errors."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as e:
                raise ScheduleError(f"schedule is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ScheduleError(f"schedule JSON must be an object, got {type(data).__name__}")
        if FORMAT_KEY not in data:
            raise ScheduleError(f"not a microtrain schedule: the JSON object has no {FORMAT_KEY!r} version field")
        ver = data[FORMAT_KEY]
        if isinstance(ver, bool) or not isinstance(ver, int):
            raise ScheduleError(f"schedule version {ver!r} is not an integer")
        if ver != FORMAT_VERSION:
            newer = " (written by a newer microtrain)" if ver > FORMAT_VERSION else ""
            raise ScheduleError(f"schedule format version {ver} is not supported{newer}; "
                                f"this microtrain reads version {FORMAT_VERSION}")
        known = {FORMAT_KEY, "kind", "bias_last", "update", "last", "bp_last", "fg", "lr", "momentum", "qas"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ScheduleError(f"unknown schedule field {unknown[0]!r}; expected {', '.join(sorted(known - {FORMAT_KEY}))}")
        if "kind" not in data:
            raise ScheduleError("schedule JSON has no 'kind'")
        if not isinstance(data["kind"], str):
            raise ScheduleError(f"schedule 'kind' must be a string, got {data['kind']!r}")
        kw: dict[str, Any] = {"kind": data["kind"]}
        for s in ("bias_last", "last", "bp_last", "lr"):
            if s in data:
                kw[s] = data[s]
        for s in ("momentum", "qas"):
            if s in data and data[s] is not None:
                kw[s] = data[s]
        if data.get("update") is not None:
            kw["update"] = _update_from_json(data["update"])
        if data.get("fg") is not None:
            fg = data["fg"]
            if not isinstance(fg, dict) or set(fg) - {"m", "eps", "batch"}:
                raise ScheduleError(f"schedule 'fg' must be an object with m, eps, batch; got {fg!r}")
            kw["fg"] = FGOptions(**fg)
        return cls(**kw)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Schedule":
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ScheduleError(f"{p}: cannot read the schedule file ({e.strerror or e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScheduleError(f"{p}: not valid JSON ({e})") from None
        try:
            return cls.from_json(data)
        except ScheduleError as e:
            raise ScheduleError(f"{p}: {e}") from None


def _update_from_json(v: Any) -> dict[int, float]:
    if not isinstance(v, dict):
        raise ScheduleError(f"schedule 'update' must be an object {{\"INDEX\": RATIO}}, got {v!r}")
    out: dict[int, float] = {}
    for key, r in v.items():
        if not _INDEX_RE.match(str(key).strip()):
            raise ScheduleError(f"schedule 'update': key {key!r} is not a layer index")
        i = int(str(key).strip())
        if i in out:
            raise ScheduleError(f"schedule 'update': layer index {i} is given twice")
        out[i] = r
    return out


def _check_update(update: Any) -> dict[int, float]:
    if not isinstance(update, dict):
        raise ScheduleError(f"--update must map layer index to ratio, got {update!r}")
    out: dict[int, float] = {}
    for i, r in update.items():
        if isinstance(i, bool) or not isinstance(i, int):
            raise ScheduleError(f"--update: layer index {i!r} is not an integer")
        if isinstance(r, bool) or not isinstance(r, (int, float)):
            raise ScheduleError(f"--update {i}: ratio {r!r} is not a number")
        _check_ratio(f"--update {i}:{r}", float(r))
        out[i] = float(r)
    return out


def _count_text(c: Count) -> str:
    if c == ALL:
        return "all conv/fc layers"
    return "the last conv/fc layer" if c == 1 else f"the last {c} conv/fc layers"


def _pct(r: float) -> str:
    return f"{r * 100:.4g}%"


# ---- resolution against a graph -------------------------------------------------------------------

@dataclass(frozen=True)
class LayerTrain:
    """The decision for one conv/fc layer.

    ``index`` counts conv/fc layers from the input (0-based), ``rindex = index - count`` from the
    output (-1 = classifier). ``weight_rows``: leading output channels of the weight trained
    (0 = frozen, ``cout`` = all). ``bias_rows``: leading bias entries trained (0 = frozen or no
    bias). ``method``: "bp" or "fg", the method that trains this position (for a frozen layer, the
    one the schedule would use there). ``row_params``: weight elements per output channel.
    """

    node: str
    op: str
    index: int
    rindex: int
    weight_rows: int
    bias_rows: int
    method: str
    cout: int
    row_params: int
    weight: str  # weight tensor name
    bias: str | None  # bias tensor name, None when the layer has no bias

    @property
    def trainable(self) -> bool:
        return self.weight_rows > 0 or self.bias_rows > 0

    @property
    def num_params(self) -> int:
        """Trainable parameter count (weight elements + bias entries)."""
        return self.weight_rows * self.row_params + self.bias_rows

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "index": self.index, "rindex": self.rindex,
                "weight_rows": self.weight_rows, "bias_rows": self.bias_rows, "method": self.method,
                "cout": self.cout, "trainable_params": self.num_params}


@dataclass
class TrainPlan:
    """A schedule resolved for one graph: one :class:`LayerTrain` per conv/fc layer, graph order."""

    schedule: Schedule
    layers: list[LayerTrain]
    warnings: list[str] = field(default_factory=list)

    @property
    def trainable_layers(self) -> list[LayerTrain]:
        return [lt for lt in self.layers if lt.trainable]

    @property
    def earliest_trainable_index(self) -> int | None:
        """Index (from the input) of the first layer with anything trainable; None if none."""
        t = self.trainable_layers
        return t[0].index if t else None

    @property
    def earliest_bp_index(self) -> int | None:
        """Index of the first layer trained by backprop: the backward pass stops there."""
        t = [lt for lt in self.trainable_layers if lt.method == "bp"]
        return t[0].index if t else None

    @property
    def num_trainable_params(self) -> int:
        return sum(lt.num_params for lt in self.layers)

    def params_by_method(self) -> dict[str, int]:
        """Trainable parameters per method: ``{"bp": n, "fg": n}``."""
        out = {"bp": 0, "fg": 0}
        for lt in self.layers:
            out[lt.method] += lt.num_params
        return out

    def layer(self, node: str) -> LayerTrain:
        for lt in self.layers:
            if lt.node == node:
                return lt
        raise KeyError(node)

    def describe(self) -> str:
        """One line: what is trained on this graph."""
        t = self.trainable_layers
        by = self.params_by_method()
        split = ", ".join(f"{m} {n:,}" for m, n in by.items() if n)
        return (f"{len(t)} of {len(self.layers)} conv/fc layers trainable, {self.num_trainable_params:,} "
                f"parameters" + (f" ({split})" if split else ""))

    def to_json(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_json(), "describe": self.schedule.describe(),
                "layers": [lt.to_json() for lt in self.layers],
                "trainable_params": self.num_trainable_params, "params_by_method": self.params_by_method(),
                "earliest_trainable_index": self.earliest_trainable_index, "warnings": list(self.warnings)}


def conv_fc_layers(graph: Graph) -> list:
    """The graph's conv/fc nodes (ops in :data:`LAYER_OPS`) in graph order."""
    return [n for n in graph.nodes if n.op in LAYER_OPS]


def _range_text(n: int) -> str:
    if n == 0:
        return "the model has no conv/fc layers"
    if n == 1:
        return "the model has 1 conv/fc layer (valid: -1 or 0)"
    return f"the model has {n} conv/fc layers (valid: -{n}..-1 or 0..{n - 1})"


def _resolve_count(flag: str, c: Count, n: int) -> int:
    if c == ALL:
        return n
    if c > n:
        raise ScheduleError(f"{flag} {c}: the model has {n} conv/fc layer{'s' if n != 1 else ''} "
                            f"(valid: 0..{n} or all)")
    return c


def resolve(schedule: Schedule, graph: Graph) -> TrainPlan:
    """The per-layer training decision of ``schedule`` on ``graph`` (float or int8 IR).

    Raises ScheduleError when an ``update`` index names no layer, two indices name the same layer,
    or a count exceeds the number of conv/fc layers.
    """
    s = schedule
    nodes = conv_fc_layers(graph)
    n = len(nodes)
    bias_last = _resolve_count("--bias-last", s.bias_last, n)
    last = _resolve_count("--last", s.last, n)
    bp_last = _resolve_count("--bp-last", s.bp_last, n)

    update: dict[int, tuple[int, float]] = {}  # index from input -> (index as given, ratio)
    for i, r in s.update.items():
        j = i if i >= 0 else n + i
        if not 0 <= j < n:
            raise ScheduleError(f"--update {i}: {_range_text(n)}")
        if j in update:
            raise ScheduleError(f"--update {update[j][0]} and {i} both name layer {j} ({nodes[j].name}); "
                                f"give each layer once")
        update[j] = (i, r)

    warnings: list[str] = []
    full = s.kind == "full"
    layers: list[LayerTrain] = []
    for j, node in enumerate(nodes):
        w = graph.tensors[node.inputs[1]]
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        cout = w.shape[LAYER_OPS[node.op]]
        row_params = w.size // cout if cout else 0
        head = s.kind == "hybrid" and j >= n - bp_last
        whole = full or head or j >= n - last
        method = "fg" if s.kind in FG_KINDS and not head else "bp"
        if whole:
            w_rows = cout
        elif j in update:
            w_rows = rows_for(update[j][1], cout)
        else:
            w_rows = 0
        b_rows = cout if bias is not None and (whole or j >= n - bias_last) else 0
        if head and j in update and update[j][1] < 1:
            warnings.append(f"--update {update[j][0]}:{update[j][1]:g} is ignored: layer {j} ({node.name}) is "
                            f"in the backprop head (--bp-last {bp_last}), which trains it fully")
        layers.append(LayerTrain(node.name, node.op, j, j - n, w_rows, b_rows, method, cout, row_params,
                                 node.inputs[1], bias))

    plan = TrainPlan(s, layers, warnings)
    if s.kind != "none":
        if n == 0:
            warnings.append("the model has no conv/fc layers: nothing can be trained")
        elif not plan.trainable_layers:
            warnings.append("the schedule trains nothing on this model")
        elif not layers[-1].trainable:
            warnings.append(f"classifier frozen: training may not converge (layer -1, {layers[-1].node}, "
                            f"has no trainable weight or bias)")
    if s.kind == "hybrid" and n:
        if bp_last == 0:
            warnings.append("hybrid with --bp-last 0 trains everything by forward gradient (same as --schedule fg)")
        elif bp_last == n:
            warnings.append(f"hybrid with --bp-last {bp_last} trains every layer by backprop "
                            f"(no forward gradient; same as --schedule full)")
    return plan
