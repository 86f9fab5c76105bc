"""Patch-based execution of the frozen stage: the first layers of the network, computed tile by tile.

Layer by layer, the early layers of a CNN set the SRAM peak: they are wide (MobileNetV2-w0.35 at
128x128 expands block 2 to 64x64x48 = 192 KiB) while the rest of the network, and in sparse-update
training its whole backward pass, is much smaller. In the frozen prefix of a training program
nothing is saved for the backward pass, so those layers can run on spatial tiles instead
(MCUNetV2's patch-based inference): the stage's output is split into an R x C grid; for each tile,
the region of every tensor of the stage that the tile's output depends on is computed
(receptive field, clipped to the tensor), and the stage's nodes run on those regions, smallest
buffers first to last. Only the stage's input and output are held whole; overlapping halos are
recomputed, which costs extra multiply-accumulates (reported, and bounded by the planner).

Every output element is computed from the same input values by the same integer arithmetic as
layer by layer (per-element requantisation, no state across positions), so a patched stage gives
the same integers. A node runs on a region with *effective* padding: the part of its true padding
that falls inside the region's window (only at the tensor's borders), so its kernel sees exactly
the windows it sees in the full tensor.

    find_stages(graph, plan)          the candidate stages (a prefix of the frozen forward nodes)
    build_stage(graph, nodes, grid)   the tiles of one stage on an R x C grid (regions, pads, MACs)
    run_stage(stage, x, prepared)     the numpy engine's patched execution (bit-exact)

Stage nodes: conv2d (incl. 1x1), depthwise_conv2d, max_pool2d, relu, relu6 and same-shape add, on
4-D NHWC tensors. A tensor read by several nodes of the stage (a residual input) is held for the
union of their regions, and a node that needs less of it reads a cropped copy (``crop``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .errors import MicrotrainError
from .ir import Graph, Node

#: ops a patched stage may contain
STAGE_OPS = ("conv2d", "depthwise_conv2d", "max_pool2d", "relu", "relu6", "add")
#: ops with a spatial window (stride, padding, kernel or pool window)
WINDOW_OPS = ("conv2d", "depthwise_conv2d", "max_pool2d")
#: the largest grid side the planner tries
MAX_GRID = 8
#: default limit on extra MACs (halo recomputation) over the model's layer-by-layer forward MACs
DEFAULT_MAX_OVERHEAD = 0.15


class PatchError(MicrotrainError, ValueError):
    """A requested patch (split, grid) is not possible for this model and schedule."""


@dataclass(frozen=True)
class Region:
    """Rows [y0, y1) x columns [x0, x1) of a tensor (global coordinates, half-open)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return max(0, self.h) * max(0, self.w)

    def union(self, o: "Region | None") -> "Region":
        if o is None:
            return self
        return Region(min(self.y0, o.y0), max(self.y1, o.y1), min(self.x0, o.x0), max(self.x1, o.x1))

    def within(self, o: "Region") -> tuple[int, int]:
        """Offset (rows, columns) of this region inside ``o`` (which contains it)."""
        return self.y0 - o.y0, self.x0 - o.x0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.y0, self.y1, self.x0, self.x1)


def _window(node: Node, graph: Graph) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """(effective kernel extent (h, w), stride (h, w), pads (t, l, b, r)) of a window op."""
    a = node.attrs
    if node.op == "max_pool2d":
        kh, kw = a["ksize"]
        dh = dw = 1
    else:
        w = graph.tensors[node.inputs[1]].shape
        kh, kw = w[1], w[2]
        dh, dw = a.get("dilation", (1, 1))
    sh, sw = a.get("stride", (1, 1))
    return ((kh - 1) * dh + 1, (kw - 1) * dw + 1), (sh, sw), tuple(a.get("pad", (0, 0, 0, 0)))


def act_inputs(node: Node, graph: Graph) -> list[str]:
    """The activation (non-constant) inputs of a node, in input order."""
    return [t for t in node.inputs if t and not graph.tensors[t].is_const]


def need_region(node: Node, graph: Graph, out: Region, x: str) -> Region:
    """The region of input ``x`` that ``node`` reads to compute ``out`` (clipped to ``x``)."""
    shape = graph.tensors[x].shape
    if node.op in WINDOW_OPS:
        (eh, ew), (sh, sw), (t, l, _, _) = _window(node, graph)
        y0, y1 = out.y0 * sh - t, (out.y1 - 1) * sh - t + eh
        x0, x1 = out.x0 * sw - l, (out.x1 - 1) * sw - l + ew
    else:
        y0, y1, x0, x1 = out.y0, out.y1, out.x0, out.x1
    return Region(max(0, y0), min(shape[1], y1), max(0, x0), min(shape[2], x1))


def effective_pads(node: Node, graph: Graph, out: Region, inp: Region) -> tuple[int, int, int, int]:
    """Padding (t, l, b, r) under which ``node`` computes exactly ``out`` from the region ``inp``
    (= :func:`need_region`): the true padding inside the tile's windows, at the tensor borders."""
    if node.op not in WINDOW_OPS:
        return (0, 0, 0, 0)
    (eh, ew), (sh, sw), (t, l, _, _) = _window(node, graph)
    pt = inp.y0 - (out.y0 * sh - t)
    pl = inp.x0 - (out.x0 * sw - l)
    pb = (out.h - 1) * sh + eh - inp.h - pt
    pr = (out.w - 1) * sw + ew - inp.w - pl
    if min(pt, pl, pb, pr) < 0:
        raise AssertionError(f"internal: negative effective padding at {node.name!r}")
    return (pt, pl, pb, pr)


def split_axis(n: int, parts: int) -> list[tuple[int, int]]:
    """[0, n) in ``parts`` contiguous pieces, sizes differing by at most one (larger first)."""
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


def node_macs(node: Node, graph: Graph) -> int:
    from .ops import registry

    try:
        return int(registry.get(node.op).macs(node, graph))
    except KeyError:
        return 0


@dataclass
class TileOp:
    """One node's call in one tile."""

    node: str
    out: Region                 # the region of the node's output it computes
    need: list[Region]          # per activation input: the region it reads
    crop: list[bool]            # per activation input: reads a cropped copy (held region is larger)
    pads: tuple[int, int, int, int]


@dataclass
class Tile:
    index: int
    row: int
    col: int
    regions: dict[str, Region]  # every tensor of the stage (input and output included): held region
    ops: list[TileOp]


@dataclass
class PatchStage:
    """A patched stage: ``nodes`` (graph order) from the whole tensor ``input`` to the whole tensor
    ``output``, computed on the tiles of a ``grid`` (rows, columns) over ``output``."""

    graph: Graph = field(repr=False)
    nodes: list[str]
    input: str
    output: str
    grid: tuple[int, int]
    tiles: list[Tile]
    macs_layer: int             # the stage's MACs layer by layer
    macs_patched: int           # the stage's MACs over all tiles
    model_macs: int             # forward MACs of the whole model, layer by layer

    @property
    def extra_macs(self) -> int:
        return self.macs_patched - self.macs_layer

    @property
    def overhead(self) -> float:
        """Extra MACs of halo recomputation over the model's layer-by-layer forward MACs."""
        return self.extra_macs / max(1, self.model_macs)

    @property
    def tensors(self) -> list[str]:
        """Every tensor a tile holds a region of: the stage input, each node's outputs."""
        out = [self.input]
        nodes = {n.name: n for n in self.graph.nodes}
        for name in self.nodes:
            out += [o for o in nodes[name].outputs if o not in out]
        return out

    def tile_bytes(self, tensor: str) -> int:
        """Bytes of the per-tile buffer of ``tensor``: its largest region over the tiles (int8)."""
        c = self.graph.tensors[tensor].shape[3]
        return max(t.regions[tensor].area for t in self.tiles) * c

    def crop_bytes(self, node: str, k: int) -> int:
        """Bytes of the cropped copy node ``node`` reads of its activation input ``k`` (0: none)."""
        nd = next(n for n in self.graph.nodes if n.name == node)
        x = act_inputs(nd, self.graph)[k]
        c = self.graph.tensors[x].shape[3]
        best = 0
        for t in self.tiles:
            op = next(o for o in t.ops if o.node == node)
            if op.crop[k]:
                best = max(best, op.need[k].area * c)
        return best

    def describe(self) -> str:
        r, c = self.grid
        last = self.nodes[-1]
        return (f"{r}x{c} tiles over {self.output} ({len(self.nodes)} nodes up to {last}), "
                f"+{self.extra_macs:,} MACs ({100 * self.overhead:.1f}% of the forward)")

    def to_json(self) -> dict[str, Any]:
        t = self.graph.tensors[self.output].shape
        return {"grid": list(self.grid), "nodes": list(self.nodes), "split_after": self.nodes[-1],
                "input": self.input, "output": self.output, "output_shape": list(t[1:]),
                "tiles": len(self.tiles), "macs_layer": self.macs_layer, "macs_patched": self.macs_patched,
                "extra_macs": self.extra_macs, "model_macs": self.model_macs,
                "overhead": round(self.overhead, 4),
                "tile_bytes": {k: self.tile_bytes(k) for k in self.tensors}}


# ---------------------------------------------------------------------------------------------
# Which prefixes can be a stage
# ---------------------------------------------------------------------------------------------
def _forward_nodes(graph: Graph, input_tensor: str) -> list[Node]:
    """The graph's nodes after the host boundary (a leading quantize of the graph input)."""
    nodes = list(graph.nodes)
    if nodes and nodes[0].op == "quantize" and nodes[0].outputs[0] == input_tensor:
        nodes = nodes[1:]
    return nodes


def _stage_node_ok(node: Node, graph: Graph) -> bool:
    if node.op not in STAGE_OPS:
        return False
    if any(len(graph.tensors[t].shape) != 4 or graph.tensors[t].dtype != "int8" for t in act_inputs(node, graph)):
        return False
    y = graph.tensors[node.outputs[0]]
    if len(node.outputs) != 1 or len(y.shape) != 4 or y.dtype != "int8":
        return False
    if node.op == "add":
        xs = act_inputs(node, graph)
        return len(xs) == 2 and all(tuple(graph.tensors[x].shape) == tuple(y.shape) for x in xs)
    if node.op == "depthwise_conv2d" or node.op == "conv2d":
        return len(act_inputs(node, graph)) == 1
    return True


def find_stages(graph: Graph, input_tensor: str, frozen_nodes: Iterable[str]) -> list[list[str]]:
    """Candidate stages: node lists ``nodes[:k]`` of the forward pass (from ``input_tensor``, the
    device input) such that every node is a stage op, frozen (in ``frozen_nodes``), and only one
    tensor the prefix produces, 4-D with more than one pixel, is read after it (the stage output),
    while the stage input is not read after it. Shortest first."""
    frozen = set(frozen_nodes)
    fwd = _forward_nodes(graph, input_tensor)
    out: list[list[str]] = []
    produced: list[str] = []
    outputs = set(graph.outputs)
    for k, node in enumerate(fwd):
        if node.name not in frozen or not _stage_node_ok(node, graph):
            break
        if any(x != input_tensor and x not in produced for x in act_inputs(node, graph)):
            break
        produced += node.outputs
        later = {t for n in fwd[k + 1:] for t in n.inputs if t}
        crossing = [t for t in produced if t in later or t in outputs]
        if input_tensor in later or len(crossing) != 1 or crossing[0] in outputs:
            continue
        y = graph.tensors[crossing[0]].shape
        if crossing[0] != node.outputs[0] or y[1] * y[2] < 2:
            continue
        out.append([n.name for n in fwd[:k + 1]])
    return out


def model_macs(graph: Graph) -> int:
    return sum(node_macs(n, graph) for n in graph.nodes)


@dataclass
class _NodeInfo:
    node: Node
    xs: list[str]                   # activation inputs
    y: str
    window: tuple | None            # (extent, stride, pad_lo) per axis (0: rows, 1: columns)
    shapes: list[tuple[int, int]]   # (H, W) of each activation input


def _node_info(graph: Graph, n: Node) -> _NodeInfo:
    xs = act_inputs(n, graph)
    win = None
    if n.op in WINDOW_OPS:
        (eh, ew), (sh, sw), (t, l, _, _) = _window(n, graph)
        win = ((eh, sh, t), (ew, sw, l))
    return _NodeInfo(n, xs, n.outputs[0], win, [tuple(graph.tensors[x].shape[1:3]) for x in xs])


def _axis_pass(infos: list[_NodeInfo], output: str, axis: int, lo: int, hi: int):
    """Intervals along one axis for one tile interval [lo, hi) of the stage output: the held
    interval of every tensor, and per node its output interval and each input's needed interval."""
    held: dict[str, tuple[int, int]] = {output: (lo, hi)}
    need: dict[str, list[tuple[int, int]]] = {}
    for info in reversed(infos):
        a, b = held[info.y]
        if info.window is not None:
            ext, st, pad = info.window[axis]
            a, b = a * st - pad, (b - 1) * st - pad + ext
        rs = []
        for x, shp in zip(info.xs, info.shapes):
            r = (max(0, a), min(shp[axis], b))
            rs.append(r)
            h = held.get(x)
            held[x] = r if h is None else (min(h[0], r[0]), max(h[1], r[1]))
        need[info.node.name] = rs
    return held, need


def _axis_pads(info: _NodeInfo, axis: int, out: tuple[int, int], inp: tuple[int, int]) -> tuple[int, int]:
    if info.window is None:
        return 0, 0
    ext, st, pad = info.window[axis]
    lo = inp[0] - (out[0] * st - pad)
    hi = (out[1] - out[0] - 1) * st + ext - (inp[1] - inp[0]) - lo
    if lo < 0 or hi < 0:
        raise AssertionError(f"internal: negative effective padding at {info.node.name!r}")
    return lo, hi


def build_stage(graph: Graph, nodes: list[str], grid: tuple[int, int], input_tensor: str,
                total_macs: int | None = None) -> PatchStage:
    """The tiles of the stage ``nodes`` (from :func:`find_stages`) on ``grid`` = (rows, columns).
    Receptive fields are separable: each tile's regions combine its row and column intervals."""
    by_name = {n.name: n for n in graph.nodes}
    seq = [by_name[n] for n in nodes]
    infos = [_node_info(graph, n) for n in seq]
    output = seq[-1].outputs[0]
    oh, ow = graph.tensors[output].shape[1:3]
    R, C = int(grid[0]), int(grid[1])
    if R < 1 or C < 1:
        raise PatchError(f"patch grid {R}x{C}: rows and columns must be >= 1")
    if R > oh or C > ow:
        raise PatchError(f"patch grid {R}x{C} is finer than the stage output {oh}x{ow} ({output})")
    per_pixel = {}
    for n in seq:
        y = graph.tensors[n.outputs[0]].shape
        per_pixel[n.name] = node_macs(n, graph) / (y[1] * y[2])
    rows = [_axis_pass(infos, output, 0, a, b) for a, b in split_axis(oh, R)]
    cols = [_axis_pass(infos, output, 1, a, b) for a, b in split_axis(ow, C)]
    tiles: list[Tile] = []
    macs = 0.0
    for i, (hr, nr) in enumerate(rows):
        for j, (hc, nc) in enumerate(cols):
            held = {t: Region(hr[t][0], hr[t][1], hc[t][0], hc[t][1]) for t in hr}
            ops = []
            for info in infos:
                name = info.node.name
                o = held[info.y]
                nd = [Region(a[0], a[1], b[0], b[1]) for a, b in zip(nr[name], nc[name])]
                crop = [held[x] != r for x, r in zip(info.xs, nd)]
                pt, pb = _axis_pads(info, 0, (o.y0, o.y1), (nd[0].y0, nd[0].y1))
                pl, pr = _axis_pads(info, 1, (o.x0, o.x1), (nd[0].x0, nd[0].x1))
                ops.append(TileOp(name, o, nd, crop, (pt, pl, pb, pr)))
                macs += per_pixel[name] * o.area
            tiles.append(Tile(len(tiles), i, j, held, ops))
    layer = sum(node_macs(n, graph) for n in seq)
    return PatchStage(graph, list(nodes), input_tensor, output, (R, C), tiles, layer, int(round(macs)),
                      model_macs(graph) if total_macs is None else total_macs)


# ---------------------------------------------------------------------------------------------
# The numpy engine's patched execution
# ---------------------------------------------------------------------------------------------
def _slice(a: np.ndarray, r: Region, held: Region) -> np.ndarray:
    dy, dx = r.within(held)
    return a[:, dy:dy + r.h, dx:dx + r.w, :]


def tile_node(node: Node, pads: tuple[int, int, int, int]) -> Node:
    """``node`` with its padding replaced by a tile's effective padding."""
    if node.op not in WINDOW_OPS:
        return node
    return Node(node.op, node.name, list(node.inputs), list(node.outputs), {**node.attrs, "pad": tuple(pads)})


def run_stage(stage: PatchStage, x: np.ndarray, forward) -> np.ndarray:
    """The stage output for int8 input ``x`` [N, H, W, C] (the whole stage input), computed tile by
    tile: ``forward(node, xs)`` runs one node (its int8 forward, constants resolved) and returns its
    outputs. Every tile's region of every tensor is computed from the regions before it."""
    g = stage.graph
    by_name = {n.name: n for n in g.nodes}
    oshape = g.tensors[stage.output].shape
    out = np.zeros((x.shape[0],) + tuple(oshape[1:]), dtype=np.int8)
    for tile in stage.tiles:
        vals = {stage.input: _slice(x, tile.regions[stage.input],
                                    Region(0, x.shape[1], 0, x.shape[2]))}
        for op in tile.ops:
            node = by_name[op.node]
            xs = []
            for k, t in enumerate(act_inputs(node, g)):
                v = vals[t]
                xs.append(_slice(v, op.need[k], tile.regions[t]) if op.crop[k] else v)
            y = forward(tile_node(node, op.pads), xs)
            if y.shape[1:3] != (op.out.h, op.out.w):
                raise AssertionError(f"internal: tile {tile.index} node {node.name!r} computed {y.shape[1:3]}, "
                                     f"expected {(op.out.h, op.out.w)}")
            vals[node.outputs[0]] = y
        r = tile.regions[stage.output]
        out[:, r.y0:r.y1, r.x0:r.x1, :] = vals[stage.output]
    return out


def parse_grid(text: str) -> tuple[int, int]:
    """``"4x4"`` / ``"4X2"`` / ``"4"`` -> (rows, columns)."""
    s = str(text).strip().lower().replace("×", "x")
    parts = s.split("x")
    try:
        if len(parts) == 1:
            r = c = int(parts[0])
        elif len(parts) == 2:
            r, c = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise PatchError(f"--patch {text!r}: expected auto, off or a grid RxC such as 4x4") from None
    if not (1 <= r <= 64 and 1 <= c <= 64):
        raise PatchError(f"--patch {text!r}: rows and columns must be in 1..64")
    return r, c


def grids(max_side: int = MAX_GRID) -> list[tuple[int, int]]:
    """Every grid the planner tries: R x C for 1 <= R, C <= max_side, except 1x1."""
    return [(r, c) for r in range(1, max_side + 1) for c in range(1, max_side + 1) if r * c > 1]


def stage_input_tensor(graph: Graph) -> str:
    """The device input: the graph input, or the output of a leading quantize (the host boundary)."""
    inp = graph.inputs[0]
    first = graph.nodes[0] if graph.nodes else None
    if first is not None and first.op == "quantize" and first.inputs[0] == inp:
        return first.outputs[0]
    return inp


__all__ = ["PatchStage", "PatchError", "Region", "Tile", "TileOp", "build_stage", "find_stages", "run_stage",
           "parse_grid", "grids", "stage_input_tensor", "STAGE_OPS", "DEFAULT_MAX_OVERHEAD"]
