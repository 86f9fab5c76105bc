"""What a training step keeps in memory, and when: the device timeline of a training program.

:func:`memory_model` turns an int8 graph and a resolved schedule into

  * the *device timeline*: the steps the firmware executes for one training step, in order
    (forward of every node; the loss; the backward steps of the training program; for forward
    gradient one perturbed forward pass, which the device repeats 2m times with the same
    footprint, and the update);
  * buffer records ``(name, bytes, first, last, align, region)`` for the planner
    (:mod:`microtrain.compiler.memory.planner`); region ``arena`` is planned, ``persistent``
    (SRAM that lives across steps) and ``flash`` are summed;
  * the kind of every buffer, for reports and timelines.

Placement (what lives where):

  flash       every parameter's initial value (int8 weights, int32 biases: frozen ones are
              read from here forever, trained ones are copied to SRAM at boot), the prepared
              forward/backward constants (per-channel multiplier + shift, QAS factors), the
              cosine lr table; plus code (estimated per kernel used).
  persistent  trained parameters: the trained rows of a conv/fc weight (leading output
              channels, contiguous in OHWI / [out, in]; the frozen rows stay in flash), the whole
              weight of a trained depthwise layer (its channels are the innermost axis), the whole
              bias vector of a layer with trained bias entries; int16 master copies (remedy
              "master" and every forward-gradient weight); momentum velocities (int32); gradient
              accumulators (``accumulate > 1``); PRNG state, forward-gradient seed/signs; the
              engine's own state.
  arena       activations (int8), saved tensors (inputs of trained layers, max-pool operands),
              ReLU masks (bit-packed, 1 bit per element), gradients (int16 mantissa per element
              + an int32 exponent), kernel scratch, the int32 logit accumulators of the loss.

In-place rules (each one a statement about the C kernels, tested against the reference):
  * reshape is a view: its output *is* its input buffer;
  * relu / relu6 (standalone) overwrite their input when nothing reads it later;
  * add writes over one operand of the same shape when nothing reads that operand later
    (elementwise: output element i depends only on input element i);
  * depthwise convolution (depth multiplier 1, output no larger than input) writes over its input
    when nothing reads the input later, row-buffered as in MIT's engine: output rows are computed
    into a ring of pending rows (scratch) and committed over the input once no later output row
    reads the input bytes they cover (:func:`depthwise_inplace_rows`).

Step indices: ``first`` is the step that writes a buffer (the sample input: step 0), ``last``
the last step that reads it; scratch lives for its own step only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..ir import Graph
from ..patch import PatchStage, act_inputs
from ..program import LINEAR_OPS, TrainingProgram, build_program, grad_name, mask_name
from ..schedule import FGOptions, TrainPlan
from .planner import Buffer

#: kinds of buffers (reports, timeline colours)
KINDS = ("input", "activation", "saved", "mask", "gradient", "scratch", "loss", "tile")
#: bytes of the engine's own state in SRAM (step counter, lr, seeds, metrics, pointers)
ENGINE_STATE_BYTES = 64
#: a gradient tensor's exponent (int32) stored next to its int16 mantissas
GRAD_EXP_BYTES = 4
INPLACE_OPS = ("reshape", "relu", "relu6", "add", "depthwise_conv2d")


@dataclass
class DeviceStep:
    """One kernel call (or engine action) of the device timeline."""

    index: int
    kind: str  # forward | loss | grad_input | update | fg_perturb | fg_forward | fg_loss | fg_update
    node: str
    op: str
    reads: list[str]
    writes: list[str]
    scratch: int = 0  # bytes of kernel scratch at this step
    key: tuple | None = None  # backward steps: (kind, node, input position) of the program step

    @property
    def label(self) -> str:
        short = self.node.rsplit("/", 2)[-2] if self.node.count("/") >= 2 else self.node
        return f"{self.kind}:{self.op}" + (f" {short}" if short else "")


@dataclass
class MemoryModel:
    graph: Graph
    plan: TrainPlan
    program: TrainingProgram
    steps: list[DeviceStep]
    buffers: list[Buffer]  # arena buffers only (one per alias group)
    kinds: dict[str, str]  # arena buffer -> kind
    members: dict[str, list[str]]  # arena buffer -> tensors sharing it (in-place / views)
    persistent: dict[str, int]  # category -> bytes
    flash: dict[str, int]  # category -> bytes
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def persistent_bytes(self) -> int:
        return sum(self.persistent.values())

    @property
    def flash_params_bytes(self) -> int:
        return sum(v for k, v in self.flash.items() if k != "code")


def step_key(s) -> tuple[str, str, int]:
    """(kind, node, input position) of a backward program step: names it across timelines."""
    return (s.kind, s.node, int(s.attrs.get("input", -1)))


def _numel(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape[1:])) if len(shape) > 1 else int(math.prod(shape))


def _bytes_of(graph: Graph, t: str) -> int:
    ten = graph.tensors[t]
    item = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "float32": 4}.get(ten.dtype, 4)
    return _numel(ten.shape) * item


def _align4(n: int) -> int:
    return (n + 3) & ~3


def grad_bytes(numel: int) -> int:
    """Bytes of a gradient tensor: int16 mantissas + an int32 exponent."""
    return _align4(2 * numel) + GRAD_EXP_BYTES


def mask_bytes(numel: int) -> int:
    return (numel + 7) // 8


# ---------------------------------------------------------------------------------------------
# Kernel scratch (mirrors the C companions mt_<op>_<pass>_scratch_bytes and the engine's layout)
# ---------------------------------------------------------------------------------------------
def is_pointwise(graph: Graph, node) -> bool:
    """A conv2d that runs as the 1x1 fast path (mt_pointwise_conv2d_*): 1x1 kernel, stride 1,
    no padding."""
    a = node.attrs
    return (node.op == "conv2d" and tuple(graph.tensors[node.inputs[1]].shape[1:3]) == (1, 1)
            and tuple(a.get("stride", (1, 1))) == (1, 1) and tuple(a.get("pad", (0, 0, 0, 0))) == (0, 0, 0, 0))


def scratch_layout(graph: Graph, kind: str, node, attrs: dict, *, has_update: bool = False,
                   fanout: bool = False, lean: bool = False) -> list[tuple[str, int]]:
    """The scratch of one step's kernel call as named parts (bytes, each a multiple of 4, laid
    out in this order). The emitted C (compiler/codegen) uses the same layout.

      forward   none (the kernels that need working memory keep it on the stack);
      grad_input  linear ops: one int32 accumulator per input element (``acc``, the single-pass
                form of the kernels) and, when an update of the same layer still reads the
                output gradient, a separate int16 copy of the scaled gradient (``gs``; else it
                overwrites the gradient); a second fan-out contribution: a gradient temporary
                (``tmp``, added into the first with mt_grad_add_s16);
      update    weights: one int32 accumulator per trained weight element (``acc``: the slice's
                exponent is its max); biases: none (three passes over g).
    ``lean``: no ``acc`` (the kernel computes every sum twice: the max, then the mantissas).
    Loss steps are laid out where the timeline is built."""
    parts: list[tuple[str, int]] = []
    if kind == "grad_input":
        x = node.inputs[attrs.get("input", 0)]
        if node.op in LINEAR_OPS and not lean:
            parts.append(("acc", 4 * _numel(graph.tensors[x].shape)))
            if has_update:
                parts.append(("gs", _align4(2 * _numel(graph.tensors[node.outputs[0]].shape))))
        if fanout:
            parts.append(("tmp", grad_bytes(_numel(graph.tensors[x].shape))))
    elif kind == "update" and attrs["input"] == 1 and not lean:
        w = graph.tensors[node.inputs[1]]
        axis = LINEAR_OPS[node.op]
        per_row = int(math.prod(w.shape)) // w.shape[axis]
        parts.append(("acc", 4 * attrs["rows"] * per_row))
    return parts


def scratch_bytes(graph: Graph, kind: str, node, attrs: dict, **kw: bool) -> int:
    """Total scratch bytes of :func:`scratch_layout`."""
    return sum(b for _, b in scratch_layout(graph, kind, node, attrs, **kw))


def loss_layout(classes: int, batch: int, acc: bool, grad: bool) -> list[tuple[str, int]]:
    """Scratch of a softmax cross-entropy step: the int32 accumulators when the loss reads the
    final layer's input (``acc``), the kernel's int32 buffer (``buf``) and, when the gradient has
    no buffer of its own (reported / perturbed losses), an int16 gradient (``grad``)."""
    parts = [("acc", 4 * classes * batch)] if acc else []
    parts.append(("buf", 4 * classes * batch))
    if grad:
        parts.append(("grad", _align4(2 * classes * batch)))
    return parts


def depthwise_inplace_rows(h_in: int, w_in: int, h_out: int, w_out: int, channels: int, stride: int,
                           pad_top: int) -> int:
    """Pending output rows an in-place depthwise convolution needs (its scratch is this many
    output rows): output row j is computed into the ring, then every pending row whose bytes end
    at or before the first input byte output row j+1 reads is committed (rows are written in
    order; the first input row of output row r is ``max(0, r*stride - pad_top)``, increasing in r).
    Returns 0 when the output does not fit in the input's bytes (not in place)."""
    row_in, row_out = w_in * channels, w_out * channels
    if h_out * row_out > h_in * row_in:
        return 0
    pending: list[int] = []
    most = 0
    for j in range(h_out):
        pending.append(j)
        most = max(most, len(pending))
        need = max(0, (j + 1) * stride - pad_top) * row_in if j + 1 < h_out else h_in * row_in
        while pending and (pending[0] + 1) * row_out <= need:
            pending.pop(0)
    return most


def _depthwise_inplace_scratch(graph: Graph, node) -> int:
    x = graph.tensors[node.inputs[0]].shape
    y = graph.tensors[node.outputs[0]].shape
    if len(x) != 4 or x[3] != y[3]:
        return 0
    rows = depthwise_inplace_rows(x[1], x[2], y[1], y[2], x[3], node.attrs.get("stride", (1, 1))[0],
                                  node.attrs.get("pad", (0, 0, 0, 0))[0])
    return rows * y[2] * y[3]


# ---------------------------------------------------------------------------------------------
# The timeline
# ---------------------------------------------------------------------------------------------
def memory_model(graph: Graph, plan: TrainPlan, remedy: str = "master", momentum: float = 0.0,
                 accumulate: int = 1, lr_schedule: str = "cosine", inplace: bool = True,
                 program: TrainingProgram | None = None, loss_input: str = "int8",
                 patch: PatchStage | None = None, lean: frozenset | set = frozenset()) -> MemoryModel:
    """The device timeline and buffer records of one training step of ``graph`` (int8 IR) under
    ``plan``. ``remedy``/``momentum``/``accumulate``/``lr_schedule``/``loss_input`` as the int8
    engine's options; ``inplace=False`` turns the in-place rules off (for comparisons).

    Batches: a forward-gradient step reads B samples. The input and the values of the frozen
    prefix are then held for all B samples (the perturbed passes re-read them), as are the
    values after it when nothing is backpropagated (the unperturbed forward runs on the batch);
    with a backprop head (hybrid) the head runs one sample at a time (batch-1 buffers, reused
    for each sample), and each perturbed pass runs on the batch.

    ``patch``: the frozen stage runs tile by tile (:mod:`microtrain.compiler.patch`): its steps
    (kind ``patch``) are one tile's gather of its input region, its nodes on per-tile buffers
    (``tile:<tensor>``, sized for the largest tile; ``tile:crop:<k>:<tensor>`` where a node reads
    a cropped copy) and the scatter of its output region; the stage input and output are held
    whole across them (the device repeats them for every tile). ``lean``: backward steps, as
    :func:`step_key` tuples, whose linear-op kernel runs without its int32 accumulator scratch
    (two passes: the max, then the mantissas; the same integers)."""
    program = program or build_program(graph, plan)
    fg = plan.schedule.fg or FGOptions()
    nodes = {n.name: n for n in graph.nodes}
    fg_layers = [lt for lt in plan.layers if lt.method == "fg" and lt.trainable]
    B = fg.batch if fg_layers else 1

    steps: list[DeviceStep] = []

    def add(kind: str, node: str, op: str, reads: list[str], writes: list[str], scratch: int = 0) -> DeviceStep:
        s = DeviceStep(len(steps), kind, node, op, [r for r in reads if r], list(writes), scratch)
        steps.append(s)
        return s

    # the device input: the host quantizes float samples (a leading quantize node is the boundary)
    fwd = [s for s in program.steps if s.kind == "forward"]
    inp = graph.inputs[0]
    if fwd and fwd[0].op == "quantize" and fwd[0].reads == [inp]:
        inp = fwd[0].writes[0]
        fwd = fwd[1:]
    add("input", "", "sample", [], [inp])
    trained = {lt.node for lt in plan.layers if lt.trainable}
    start = next((k for k, s in enumerate(fwd) if s.node in trained), len(fwd))
    has_bp = any(s.kind == "loss" for s in program.steps)
    final = graph.producer(program.logits)
    # tensors held for the whole batch (see the docstring)
    batched = {inp} | {w for s in fwd[:start] for w in s.writes}
    if not has_bp:
        batched |= {w for s in fwd[start:] for w in s.writes}
    classes = _numel(graph.tensors[program.logits].shape)

    def loss_reads(logits: list[str], batch: int, grad: bool) -> tuple[list[str], int]:
        """What the loss reads, and its scratch: the int8 logits, or the final layer's input
        for its int32 accumulators (computed into the scratch)."""
        acc = loss_input == "acc" and final is not None
        sc = sum(b for _, b in loss_layout(classes, batch, acc, grad))
        return ([final.inputs[0]] if acc else logits), sc

    mask_of = {t: m for m, t in program.masks.items()}
    stage_nodes = set(patch.nodes) if patch is not None else set()
    patch_span: tuple[int, int] | None = None
    for s in fwd:
        if s.node in stage_nodes:
            if patch_span is None:
                patch_span = _patch_steps(graph, patch, add, nodes)
            continue
        writes = list(s.writes) + [mask_of[o] for o in s.writes if o in mask_of]
        add("forward", s.node, s.op, s.reads, writes, scratch_bytes(graph, "forward", nodes[s.node], {}))
    bwd = [s for s in program.steps if s.kind in ("loss", "grad_input", "update")]
    fused = gap_fusions(graph, program)
    absorbed = {id(s) for f in fused.values() for s in f.absorbed}
    written_grads: set[str] = set()
    # an update of the node's weight after its input gradient still reads the output gradient
    w_updated = {s.node for s in bwd if s.kind == "update" and s.attrs.get("input") == 1}
    if not has_bp and fg_layers:  # the reported loss of the unperturbed forward, on the batch
        reads, sc = loss_reads([program.logits], B, True)
        add("loss", "", "softmax_cross_entropy", reads, [], sc)
    for s in bwd:
        if s.kind == "loss":
            reads, sc = loss_reads([program.logits], 1, False)
            add("loss", "", "softmax_cross_entropy", reads, s.writes, sc)
            written_grads.update(s.writes)
            continue
        if id(s) in absorbed:
            continue
        node = nodes[s.node]
        if id(s) in fused:  # global mean <- 1x1 conv, one kernel: no [H*W, C] gradient tensor
            f = fused[id(s)]
            key = ("fused_gap", f.mean.name, f.conv.name)
            reads = [r for r in s.reads if not r.startswith("mask:")] + f.reads
            st = add("grad_input", f.conv.name, "mean_pointwise", reads, [f.writes],
                     fused_gap_scratch(graph, f.conv, single_pass=key not in lean))
            st.key = key
            written_grads.add(f.writes)
            continue
        if s.kind == "grad_input":
            g = s.writes[0]
            sc = scratch_bytes(graph, s.kind, node, s.attrs, has_update=s.node in w_updated,
                               fanout=g in written_grads, lean=step_key(s) in lean)  # fan-out: a second contribution
            written_grads.add(g)
            add("grad_input", s.node, s.op, s.reads, s.writes, sc).key = step_key(s)
        else:
            add("update", s.node, s.op, s.reads, [],
                scratch_bytes(graph, s.kind, node, s.attrs, lean=step_key(s) in lean)).key = step_key(s)

    # forward gradient: one perturbed pass from the first trained node to the final FC's int32
    # accumulators (the device runs it 2m times per step with this same footprint)
    if fg_layers:
        add("fg_perturb", "", "fg_perturb", [], [])
        produced = {w for s in fwd[start:] for w in s.writes}

        def pert(t: str) -> str:  # inside the perturbed pass, values from `start` on are its own
            return f"{t}~p" if t in produced else t

        for s in fwd[start:]:
            if s.node == final.name:
                add("fg_forward", s.node, "fully_connected_acc", [pert(r) for r in s.reads],
                    ["fg:acc"])
                break
            add("fg_forward", s.node, s.op, [pert(r) for r in s.reads],
                [f"{w}~p" for w in s.writes], scratch_bytes(graph, "forward", nodes[s.node], {}))
        add("fg_loss", "", "softmax_cross_entropy_acc", ["fg:acc"], [],
            sum(b for _, b in loss_layout(classes, B, False, True)))
        add("fg_update", "", "fg_update", [], [])

    # lifetimes per tensor
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for s in steps:
        for w in s.writes:
            first.setdefault(w, s.index)
            last.setdefault(w, s.index)
        for r in s.reads:
            if r in first:
                last[r] = max(last[r], s.index)

    # repeated regions: the perturbed pass runs 2m times, and with a batch the backprop head runs
    # once per sample; what such a region reads from before it must outlive the whole region
    regions = []
    if fg_layers:
        k0 = next(s.index for s in steps if s.kind == "fg_perturb")
        regions.append((k0, steps[-1].index))
    if has_bp and B > 1:
        head = [s.index for s in steps if s.kind == "forward" and s.node in {f.node for f in fwd[start:]}]
        bwd_idx = [s.index for s in steps if s.kind in ("loss", "grad_input", "update")]
        if head and bwd_idx:
            regions.append((min(head), max(bwd_idx)))
    if patch_span is not None:  # the tile loop: its whole input and output outlive every tile
        lo, hi = patch_span
        last[patch.input] = max(last[patch.input], hi)
        first[patch.output] = min(first[patch.output], lo)
    for lo, hi in regions:
        for s in steps[lo:hi + 1]:
            for r in s.reads:
                if r in first and first[r] < lo:
                    last[r] = max(last[r], hi)

    # bytes per tensor (arena tensors only: params and the label are not in first)
    def tensor_bytes(t: str) -> int:
        if t.startswith("mask:"):
            return mask_bytes(_numel(graph.tensors[t[5:]].shape))
        if t.startswith("grad:"):
            return grad_bytes(_numel(graph.tensors[t[5:]].shape))
        if t == "fg:acc":
            return 4 * classes * B
        if t.startswith("tile:crop:"):
            k, _, base = t[len("tile:crop:"):].partition(":")
            return patch.crop_bytes(base, int(k))
        if t.startswith("tile:"):
            return patch.tile_bytes(t[5:])
        base = t[:-2] if t.endswith("~p") else t
        n = _bytes_of(graph, base)
        return n * B if t.endswith("~p") or t in batched else n

    # in-place aliasing: root buffer per tensor, decided in timeline order
    root: dict[str, str] = {t: t for t in first}
    members: dict[str, list[str]] = {t: [t] for t in first}
    group_last = dict(last)

    def find(t: str) -> str:
        while root[t] != t:
            t = root[t]
        return t

    def join(out: str, into: str) -> None:
        r = find(into)
        root[out] = r
        members[r] += members.pop(out)
        group_last[r] = max(group_last[r], group_last.pop(out))

    inplace_log: list[tuple[int, str, str]] = []
    saved_set = set(program.saved)
    if inplace:
        for s in steps:
            if s.kind not in ("forward", "fg_forward") or s.op not in INPLACE_OPS:
                continue
            out = s.writes[0]
            if s.op == "reshape":
                join(out, s.reads[0])
                inplace_log.append((s.index, out, s.reads[0]))
                continue
            if s.op == "depthwise_conv2d":
                x = s.reads[0]
                ring = _depthwise_inplace_scratch(graph, nodes[s.node])
                r = find(x)
                if ring and group_last[r] == s.index and first[r] < s.index and r not in saved_set:
                    join(out, x)
                    inplace_log.append((s.index, out, x))
                    s.scratch += ring
                continue
            cands = s.reads[:1] if s.op in ("relu", "relu6") else s.reads[:2]
            for x in cands:
                if x not in root or tensor_bytes(x) != tensor_bytes(out):
                    continue
                r = find(x)
                if group_last[r] == s.index and first[r] < s.index:
                    join(out, x)
                    inplace_log.append((s.index, out, x))
                    break

    # arena buffers: one per alias group
    buffers: list[Buffer] = []
    kinds: dict[str, str] = {}
    saved = set(program.saved)
    for r, ms in members.items():
        size = max(tensor_bytes(t) for t in ms)
        f = min(first[t] for t in ms)
        lst = max(last[t] for t in ms)
        buffers.append(Buffer(r, size, f, lst, 4, "arena"))
        kinds[r] = _kind(r, ms, saved, steps[f].kind)
    for s in steps:
        if s.scratch:
            name = f"scratch@{s.index}:{s.op}"
            buffers.append(Buffer(name, _align4(s.scratch), s.index, s.index, 4, "arena"))
            kinds[name] = "scratch"

    persistent, flash = _static_memory(graph, plan, fg_layers, remedy, momentum, accumulate, lr_schedule, fg)
    opts = {"remedy": remedy, "momentum": momentum, "accumulate": accumulate, "inplace": inplace,
            "lr_schedule": lr_schedule, "fg_batch": B, "inplace_log": inplace_log, "loss_input": loss_input,
            "start": start, "batched": batched, "input": inp, "patch": patch, "lean": frozenset(lean)}
    return MemoryModel(graph, plan, program, steps, buffers, kinds, members, persistent, flash, opts)


@dataclass
class GapFusion:
    """The backward of ``mean`` (global average pool) <- ``conv`` (1x1, its weights not trained)
    as one kernel (mt_mean_pointwise_bwd_s16): the mean's input gradient, the conv's activation
    mask, bias update and input gradient. ``absorbed``: the program steps it replaces besides the
    mean's input gradient."""

    mean: Any
    conv: Any
    absorbed: list
    reads: list[str]
    writes: str
    bias_rows: int


def gap_fusions(graph: Graph, program: TrainingProgram) -> dict[int, GapFusion]:
    """Fusable mean <- pointwise conv backward pairs, keyed by ``id`` of the mean's grad_input
    program step. The conv must be a 1x1 conv whose output only the mean reads, whose weights are
    not trained and whose input gradient is computed (the gradient path continues)."""
    nodes = {n.name: n for n in graph.nodes}
    steps = program.steps
    out: dict[int, GapFusion] = {}
    for i, s in enumerate(steps):
        if s.kind != "grad_input" or s.op != "mean":
            continue
        mean = nodes[s.node]
        x = mean.inputs[0]
        conv = graph.producer(x)
        if conv is None or not is_pointwise(graph, conv) or len(graph.consumers(x)) != 1 or len(mean.outputs) != 1:
            continue
        if len(graph.consumers(conv.inputs[0])) != 1:  # its input gradient has other contributions
            continue
        if len(graph.tensors[x].shape) != 4 or graph.tensors[x].shape[0] != 1:
            continue
        mine = [t for t in steps[i + 1:] if t.node == conv.name and t.kind in ("grad_input", "update")]
        if any(t.kind == "update" and t.attrs.get("input") == 1 for t in mine):
            continue  # its weight update reads the [H*W, C] gradient
        gin = [t for t in mine if t.kind == "grad_input"]
        if len(gin) != 1:
            continue
        # nothing else may touch the gradient between (it is only ever the conv's)
        between = steps[i + 1:steps.index(gin[0])]
        if any(t.node != conv.name and (grad_name(x) in t.reads or grad_name(x) in t.writes) for t in between):
            continue
        bias = [t for t in mine if t.kind == "update" and t.attrs.get("input") == 2]
        reads = [r for r in gin[0].reads if r != grad_name(x)]
        out[id(s)] = GapFusion(mean, conv, gin + bias, reads, gin[0].writes[0],
                               bias[0].attrs["rows"] if bias else 0)
    return out


def fused_gap_scratch(graph: Graph, conv, single_pass: bool) -> int:
    """Bytes of mt_mean_pointwise_bwd_s16's scratch (its _scratch_bytes companion): int32 [Cin],
    int16 [N*C] (4-aligned), single pass: + P + ceil(P*Cin/8) bytes (P = N*H*W)."""
    x = graph.tensors[conv.inputs[0]].shape
    y = graph.tensors[conv.outputs[0]].shape
    n, p, cin, c = x[0], x[0] * x[1] * x[2], x[3], y[3]
    b = 4 * cin + _align4(2 * n * c)
    if single_pass:
        b += p + (p * cin + 7) // 8
    return _align4(b)


def _patch_steps(graph: Graph, patch: PatchStage, add, nodes) -> tuple[int, int]:
    """The steps of one tile of a patched stage; returns (first, last) step index. The gather
    step also writes the stage output (the tiles fill it in), the scatter step reads the stage
    input (every tile reads it)."""
    lo = add("patch", "", "tile_gather", [patch.input], [f"tile:{patch.input}", patch.output]).index
    crops = {(op.node, k) for t in patch.tiles for op in t.ops for k, c in enumerate(op.crop) if c}
    for name in patch.nodes:
        node = nodes[name]
        reads = []
        for k, x in enumerate(act_inputs(node, graph)):
            if (name, k) in crops:
                c = f"tile:crop:{k}:{name}"
                add("patch", name, "tile_crop", [f"tile:{x}"], [c])
                reads.append(c)
            else:
                reads.append(f"tile:{x}")
        add("patch", name, node.op, reads, [f"tile:{o}" for o in node.outputs],
            scratch_bytes(graph, "forward", node, {}))
    hi = add("patch", "", "tile_scatter", [f"tile:{patch.output}", patch.input], []).index
    return lo, hi


def _kind(root: str, ms: list[str], saved: set[str], first_kind: str) -> str:
    if root.startswith("tile:"):
        return "tile"
    if root.startswith("grad:"):
        return "gradient"
    if root.startswith("mask:"):
        return "mask"
    if root == "fg:acc":
        return "loss"
    if first_kind == "input":
        return "input"
    if any(m in saved for m in ms):
        return "saved"
    return "activation"


# ---------------------------------------------------------------------------------------------
# Persistent SRAM and flash
# ---------------------------------------------------------------------------------------------
def _static_memory(graph: Graph, plan: TrainPlan, fg_layers, remedy: str, momentum: float, accumulate: int,
                   lr_schedule: str, fg: FGOptions) -> tuple[dict[str, int], dict[str, int]]:
    nodes = {n.name: n for n in graph.nodes}
    pers = {"trainable_params": 0, "master_copies": 0, "optimizer_state": 0, "grad_accumulators": 0,
            "engine_state": ENGINE_STATE_BYTES}
    trained_w = 0
    for lt in plan.layers:
        if not lt.trainable:
            continue
        w = graph.tensors[lt.weight]
        if lt.weight_rows:
            n = lt.weight_rows * lt.row_params
            trained_w += n
            pers["trainable_params"] += n if lt.op in ("conv2d", "fully_connected") else int(math.prod(w.shape))
            if lt.method == "fg" or remedy == "master":
                pers["master_copies"] += _align4(2 * n)
            if accumulate > 1 and lt.method == "bp":
                pers["grad_accumulators"] += grad_bytes(n)
        if lt.bias_rows and lt.bias:
            pers["trainable_params"] += 4 * lt.cout
            if accumulate > 1 and lt.method == "bp":
                pers["grad_accumulators"] += grad_bytes(lt.bias_rows)
    pers["trainable_params"] = _align4(pers["trainable_params"])
    if momentum:
        pers["optimizer_state"] += 4 * sum(lt.num_params for lt in plan.layers)
    if remedy == "stochastic" or fg_layers:
        pers["optimizer_state"] += 4  # xorshift32 state / fg seed
    if fg_layers:
        pers["optimizer_state"] += _align4(fg.m)  # the m signs of a step

    flash = {"weights": 0, "biases": 0, "constants": 0}
    for n in graph.nodes:
        for k, t in enumerate(n.inputs):
            if not t or not graph.tensors[t].is_const:
                continue
            ten = graph.tensors[t]
            nb = int(math.prod(ten.shape)) * {"int8": 1, "int32": 4, "int16": 2}.get(ten.dtype, 4)
            flash["biases" if ten.dtype == "int32" else "weights"] += nb
        if n.op in LINEAR_OPS:
            cout = graph.tensors[n.outputs[0]].shape[-1]
            flash["constants"] += 8 * cout + 16  # multiplier + shift per channel, zero points, clamps
    for lt in plan.layers:
        if lt.trainable:
            flash["constants"] += 8 * lt.cout  # QAS factors per channel
    if lr_schedule == "cosine":
        flash["constants"] += 2 * 257
    flash["code"] = code_estimate(graph, plan, fg_layers)
    return pers, flash


#: code bytes per C kernel (Thumb-2, -Os, Cortex-M4 with the DSP variants where one exists), by op
#: and pass ("fwd", "bwd" = input gradient, "update" = weight rows), each counted once however often
#: it is called; pseudo-ops: "bias" (bias update), "engine" (loss, gradient format, lr schedule,
#: activation masks; "update": the per-weight update chain every weight-update kernel shares), "fg"
#: (perturb / sign update). Measured with arm-none-eabi-size of `ld -r --gc-sections` closures of
#: each kernel's entry (its DSP variant where one exists), shared code counted once (the 1x1
#: kernels wrap the fully-connected ones); cross-checked by bench/flash.py.
KERNEL_CODE = {
    ("conv2d", "fwd"): 5916, ("pointwise_conv2d", "fwd"): 180, ("depthwise_conv2d", "fwd"): 4036,
    ("fully_connected", "fwd"): 3740, ("add", "fwd"): 910, ("relu", "fwd"): 332, ("relu6", "fwd"): 332,
    ("max_pool2d", "fwd"): 408, ("avg_pool2d", "fwd"): 470, ("mean", "fwd"): 436, ("softmax", "fwd"): 700,
    ("pad", "fwd"): 346, ("reshape", "fwd"): 0, ("quantize", "fwd"): 0, ("dequantize", "fwd"): 0,
    ("conv2d", "bwd"): 4776, ("pointwise_conv2d", "bwd"): 168, ("depthwise_conv2d", "bwd"): 5486,
    ("fully_connected", "bwd"): 2726, ("add", "bwd"): 992, ("relu", "bwd"): 46, ("relu6", "bwd"): 46,
    ("max_pool2d", "bwd"): 846, ("avg_pool2d", "bwd"): 1040, ("mean", "bwd"): 578, ("pad", "bwd"): 192,
    ("reshape", "bwd"): 0,
    ("conv2d", "update"): 5920, ("pointwise_conv2d", "update"): 180, ("depthwise_conv2d", "update"): 1454,
    ("fully_connected", "update"): 5184, ("bias", "update"): 1066,
    ("engine", "update"): 3898,  # the per-weight update chain the weight-update kernels share
    ("engine", "bp"): 432,  # gradient headroom/renormalize, ReLU mask pack/apply
    ("fg", "weights"): 1248, ("fg", "biases"): 950, ("fg", "loss"): 744,  # update+perturb s8 / s32, acc loss
}
#: the program's fixed code: softmax cross-entropy, Q31 gradient scaling, lr schedule, mt_init,
#: mt_infer/mt_eval, checkpoint get/set, the step driver
ENGINE_CODE = 2650
#: forward-gradient driver (perturbation passes, loss differences, sign updates)
FG_CODE = 300
#: generated code (and the flash parameter structs) per call site: a forward op (inlined in the
#: training step and in mt_infer; once more in the perturbed passes of forward gradient), a backward
#: step, and per trained tensor (copy to SRAM, update with lr/QAS/remedy, checkpoint get/set)
CALL_CODE = {"forward": 158, "forward_fg": 212, "backward": 76, "tensor": 230, "fg_tensor": 265}


def code_estimate(graph: Graph, plan: TrainPlan, fg_layers) -> int:
    """Flash bytes of the generated program's code: the kernels it calls, the engine, and its call
    sites (Cortex-M4, -Os; calibrated on bench/flash.py, within 10% of the measured total flash
    of the example model)."""
    nodes = {n.name: n for n in graph.nodes}

    def kop(node) -> str:
        return "pointwise_conv2d" if is_pointwise(graph, node) else node.op

    used: set[tuple[str, str]] = set()
    n_fwd = 0
    for n in graph.nodes:
        op = kop(n)
        used.add((op, "fwd"))
        n_fwd += n.op not in ("reshape", "quantize", "dequantize")
    prog = build_program(graph, plan)
    bwd = [s for s in prog.backward_steps if s.op != "reshape"]
    layers = {lt.node: lt for lt in plan.layers}
    for s in bwd:
        op = kop(nodes[s.node]) if s.node in nodes else s.op
        lt = layers.get(s.node)
        if s.kind == "update" and lt is not None:
            if lt.bias_rows:
                used.add(("bias", "update"))
            if not lt.weight_rows:
                continue
        p = "update" if s.kind == "update" else "bwd"
        used.add((op, p))
        if op == "pointwise_conv2d":  # the 1x1 kernels run on the fully-connected ones
            used.add(("fully_connected", p))
    trained = [lt for lt in plan.layers if lt.trainable]
    bp = [lt for lt in trained if lt.method == "bp"]
    fg = [lt for lt in trained if lt.method == "fg"]
    if bp:
        used.add(("engine", "bp"))
    if any(p == "update" and op != "bias" for op, p in used):
        used.add(("engine", "update"))
    code = ENGINE_CODE + CALL_CODE["backward"] * len(bwd)
    code += CALL_CODE["tensor"] * sum((lt.weight_rows > 0) + (lt.bias_rows > 0) for lt in bp)
    if fg_layers or fg:
        used.add(("fg", "loss"))
        if any(lt.weight_rows for lt in fg):
            used.add(("fg", "weights"))
        if any(lt.bias_rows for lt in fg):
            used.add(("fg", "biases"))
        code += FG_CODE + CALL_CODE["forward_fg"] * n_fwd
        code += CALL_CODE["fg_tensor"] * sum((lt.weight_rows > 0) + (lt.bias_rows > 0) for lt in fg)
    else:
        code += CALL_CODE["forward"] * n_fwd
    code += sum(KERNEL_CODE.get(k, 400) for k in used)
    return code
