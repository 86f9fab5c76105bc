"""Emit the C of one planned training program: ``mt_model.h`` and ``mt_model.c``.

The generated code is the device twin of :class:`~microtrain.compiler.train_int.Int8Trainer`:
every host constant comes from an ``Int8Trainer`` built with the same options (so the two
cannot drift apart), every buffer lives at the offset the memory planner chose inside one static
arena of exactly ``MemoryPlan.arena_bytes``, and the program is the planner's device timeline
(:func:`~microtrain.compiler.memory.lifetimes.memory_model`), one C function per step, called in
straight lines by ``mt_train_step``.

What goes where (as the planner counts it):
  flash (``static const``)  initial values of every parameter, frozen rows included; prepared
                            constants (multipliers, shifts, clamps, QAS factors, loss constants)
  SRAM (``static``)         trained rows of conv/fc weights (the kernels read the frozen rows
                            from flash through ``mt_wsplit``), whole trained depthwise weights and
                            bias vectors, master copies, velocities, the engine state
  arena                     activations, saved tensors, masks, gradients, scratch

Public C API (``mt_model.h``): ``mt_init``, ``mt_train_step``, ``mt_infer``, ``mt_eval``,
``mt_params_get`` / ``mt_params_set`` (checkpoint with the model hash), ``mt_step_count``.
The output is deterministic: the same model, schedule and options give the same bytes, stamped
with :data:`GENERATOR` and the model hash.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MicrotrainError
from ..ir import Graph
from ..memory.lifetimes import (GRAD_EXP_BYTES, depthwise_inplace_rows, is_pointwise, loss_layout,
                                scratch_layout)
from ..memory.memplan import MemoryPlan, plan_memory
from ..patch import DEFAULT_MAX_OVERHEAD, WINDOW_OPS, act_inputs
from ..memory.stack import dsp_dispatch, program_kernels, table as stack_table
from ..program import LINEAR_OPS
from ..schedule import Schedule, TrainPlan, resolve
from ..train_int import Int8Trainer

GENERATOR = "microtrain-codegen 1"
CHECKPOINT_MAGIC = b"MTCK"
CHECKPOINT_FORMAT = 1
CHECKPOINT_HEADER = 32  # magic, format, hash (16), step, rng state
SUPPORTED_OPS = ("conv2d", "depthwise_conv2d", "fully_connected", "add", "relu", "relu6", "max_pool2d",
                 "avg_pool2d", "mean", "pad", "reshape")
_I32_MAX = (1 << 31) - 1


class CodegenError(MicrotrainError, ValueError):
    """The program cannot be emitted (one line: what, where, what is supported)."""


@dataclass
class Generated:
    """The emitted sources and what the host needs to drive them."""

    files: dict[str, str]  # file name -> text
    memory: MemoryPlan
    trainer: Int8Trainer  # the host twin whose constants were emitted
    hash: str
    manifest: dict[str, Any] = field(default_factory=dict)  # checkpoint layout, sizes

    @property
    def kernels(self) -> tuple[str, ...]:
        """The kernels the emitted program calls (generic names; MT_KERNEL picks DSP variants)."""
        return called_kernels(self.files["mt_model.c"])


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _numel(shape) -> int:
    return int(math.prod(shape[1:])) if len(shape) > 1 else int(math.prod(shape))


def _a4(n: int) -> int:
    return (n + 3) & ~3


def _c_array(ctype: str, name: str, values, const: bool = True, per_line: int = 24) -> str:
    vals = [int(v) for v in np.asarray(values).ravel().tolist()]
    lines = []
    for i in range(0, len(vals), per_line):
        lines.append("    " + ", ".join(_c_int(v, ctype) for v in vals[i:i + per_line]) + ",")
    body = "\n".join(lines) if lines else "    0,"
    q = "static const " if const else "static "
    return f"{q}{ctype} {name}[{max(len(vals), 1)}] = {{\n{body}\n}};"


def _c_int(v: int, ctype: str = "int32_t") -> str:
    if ctype in ("uint32_t", "uint16_t"):
        return f"{v}u"
    if v == -(1 << 31):
        return "(-2147483647 - 1)"
    return str(v)


def _kernel_names() -> set[str]:
    return {k for t in stack_table()["targets"].values() for k in t["kernels"] if not k.endswith("_dsp")}


def called_kernels(source: str) -> tuple[str, ...]:
    """Public kernels called by the C ``source`` (a direct call or MT_KERNEL(name)); the scratch
    companions ``*_scratch_bytes`` are left out (only the MT_CHECK_SCRATCH test hook calls them)."""
    names = set(re.findall(r"\b(mt_[a-z0-9_]+)\)?\s*\(", source)) & _kernel_names()
    return tuple(sorted(n for n in names if not n.endswith("_scratch_bytes")))


def _check_kernels(source: str, mm) -> None:
    """The planner's list of the program's kernels (memory.stack.program_kernels: what the stack is
    planned for) must hold every kernel the emitted C calls, and kernels with a DSP variant are
    only called through MT_KERNEL (which the planner assumes)."""
    extra = set(called_kernels(source)) - set(program_kernels(mm))
    if extra:
        raise CodegenError(f"internal: the program calls {', '.join(sorted(extra))}, which the stack plan "
                           "(compiler/memory/stack.py program_kernels) does not know")
    direct = [k for k in dsp_dispatch() if re.search(rf"\b{k}\s*\(", source)]
    if direct:
        raise CodegenError(f"internal: {', '.join(direct)} called without MT_KERNEL")


def model_hash(graph: Graph, plan: TrainPlan, options: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over the graph (ops, attributes, tensors: shapes, dtypes,
    quantization, constant data), the resolved plan and the training options."""
    h = hashlib.sha256()
    for n in graph.nodes:
        h.update(repr((n.op, list(n.inputs), list(n.outputs), sorted((k, repr(v)) for k, v in n.attrs.items()))).encode())
    for name in sorted(graph.tensors):
        t = graph.tensors[name]
        h.update(repr((name, tuple(t.shape), t.dtype)).encode())
        if t.quant is not None:
            h.update(np.asarray(t.quant.scale, np.float64).tobytes())
            h.update(np.asarray(t.quant.zero_point, np.int64).tobytes())
        if t.is_const and t.data is not None:
            h.update(np.ascontiguousarray(t.data).tobytes())
    for lt in plan.layers:
        h.update(repr((lt.node, lt.weight_rows, lt.bias_rows, lt.method)).encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# the emitter
# ---------------------------------------------------------------------------------------------
class _Emitter:
    def __init__(self, graph: Graph, plan: TrainPlan, tr: Int8Trainer, mp: MemoryPlan, digest: str):
        self.g, self.plan, self.tr, self.mp, self.hash = graph, plan, tr, mp, digest
        self.mm = mp.model
        self.nodes = {n.name: n for n in graph.nodes}
        self.decls: dict[str, str] = {}  # referenced constants, in first-use order
        self.root = {t: r for r, ms in self.mm.members.items() for t in ms}
        self.batched: set[str] = self.mm.options["batched"]
        self.B = int(self.mm.options["fg_batch"])
        self.ids: dict[str, str] = {}
        # trained parameters: tensor -> (sram symbol, rows kept in SRAM or None for whole)
        self.sram: dict[str, tuple[str, int | None]] = {}
        for name, s in tr.slices.items():
            t = graph.tensors[name]
            whole = s.role == "bias" or s.axis != 0  # bias vectors / depthwise: whole tensor
            self.sram[name] = (f"sram_{self._id(name)}", None if whole or s.rows == t.shape[0] else s.rows)
        self.first_bwd: dict[str, int] = {}
        for st in self.mm.steps:
            if st.kind in ("grad_input", "update"):
                self.first_bwd.setdefault(st.node, st.index)
        # nodes whose weight update follows the input gradient (it still reads the output gradient)
        self.updated = {ps.node for ps in tr.program.steps if ps.kind == "update" and ps.attrs.get("input") == 1}
        self.checks: list[str] = []  # scratch sizes the kernels' *_scratch_bytes companions report

    def check(self, st, expr: str, planned: int, setup: str = "") -> None:
        """Record that the kernel call of step ``st`` needs ``expr`` bytes where the planner laid
        out ``planned`` (compiled into mt_check_scratch() under MT_CHECK_SCRATCH)."""
        self.checks.append(f"    {{ {setup}if (MT_A4({expr}) != {planned}u) {{ return {st.index}; }} }}")

    # ---- names ----
    def _id(self, tensor: str) -> str:
        if tensor not in self.ids:
            self.ids[tensor] = f"t{len(self.ids)}"
        return self.ids[tensor]

    def const(self, name: str, text: str) -> str:
        self.decls.setdefault(name, text)
        return name

    def arr(self, ctype: str, name: str, values) -> str:
        return self.const(name, _c_array(ctype, name, values))

    # ---- arena addresses ----
    def off(self, t: str) -> int:
        return self.mp.arena.offsets[self.root[t]]

    def stride(self, t: str) -> int:
        base = t[:-2] if t.endswith("~p") else t
        ten = self.g.tensors[base]
        return _numel(ten.shape) * np.dtype(ten.dtype).itemsize

    def ptr(self, t: str, ctype: str = "int8_t") -> str:
        off = self.off(t)
        if t in self.batched and not t.endswith("~p"):
            return f"(({ctype} *)(mt_arena_u8 + {off}u + (size_t)j * {self.stride(t)}u))"
        return f"(({ctype} *)(mt_arena_u8 + {off}u))"

    def grad(self, t: str) -> tuple[str, str]:
        """(mantissa pointer, exponent pointer) of gradient buffer ``grad:t``."""
        off = self.off(f"grad:{t}")
        n = _numel(self.g.tensors[t].shape)
        return f"((int16_t *)(mt_arena_u8 + {off}u))", f"((int32_t *)(mt_arena_u8 + {off + _a4(2 * n)}u))"

    def parts(self, step, layout: list[tuple[str, int]]) -> dict[str, str]:
        """Addresses of the named parts of a step's scratch buffer (planned offset + layout)."""
        base = self.mp.arena.offsets.get(f"scratch@{step.index}:{step.op}", -1)
        out, o = {}, 0
        for part, nb in layout:
            out[part] = f"(mt_arena_u8 + {base + o}u)"
            o += nb
        if o and o > _a4(step.scratch):
            raise CodegenError(f"internal: scratch layout of step {step.index} ({o} B) exceeds the plan ({step.scratch} B)")
        return out

    # ---- parameters ----
    def weight(self, name: str) -> tuple[str, str]:
        """(pointer expression to pass as the kernel's weight/bias, mt_wsplit initializer)."""
        ten = self.g.tensors[name]
        ctype = "int8_t" if ten.dtype == "int8" else "int32_t"
        flash = self.arr(ctype, f"flash_{self._id(name)}", ten.data)
        if name not in self.sram:
            return flash, "{NULL, 0}"
        sym, rows = self.sram[name]
        if rows is None:
            return sym, "{NULL, 0}"
        per = int(ten.data.size) // ten.shape[0]
        return sym, f"{{{flash} + {rows * per}, {rows}}}"

    def value(self, t: str, ctype: str = "int8_t") -> str:
        ten = self.g.tensors[t]
        if ten.is_const:
            return self.weight(t)[0]
        return self.ptr(t, ctype)

    def dims(self, t: str, n: str = "n", act: bool = True) -> str:
        """mt_dims initializer of a tensor: {n, h, w, c}; 2-D [N, C] -> {n, 1, 1, c}."""
        shape = tuple(self.g.tensors[t[:-2] if t.endswith("~p") else t].shape)
        if not act:  # constant operand: right-aligned
            s = (1,) * (4 - len(shape)) + shape
            return "{" + ", ".join(str(v) for v in s) + "}"
        if len(shape) == 4:
            return f"{{{n}, {shape[1]}, {shape[2]}, {shape[3]}}}"
        if len(shape) == 2:
            return f"{{{n}, 1, 1, {shape[1]}}}"
        if len(shape) == 3:
            return f"{{{n}, 1, {shape[1]}, {shape[2]}}}"
        return f"{{{n}, 1, 1, {int(math.prod(shape[1:]))}}}"

    def quant(self, key: str, p: dict) -> str:
        m = self.arr("int32_t", f"{key}_mult", p["mult"])
        s = self.arr("int32_t", f"{key}_shift", p["shift"])
        return self.const(f"{key}_q", f"static const mt_per_channel_quant {key}_q = {{{m}, {s}}};")

    # ---- forward steps ----
    def forward(self, st, writes_of) -> list[str]:
        node = self.nodes[st.node]
        p = self.tr.prepared[st.node]
        k = f"n{list(self.nodes).index(st.node)}"
        op = st.op if st.op != "fully_connected_acc" else "fully_connected"
        x = st.reads[0]
        y = st.writes[0] if st.writes else None
        body: list[str] = []
        act_lo, act_hi = p.get("act_min", -128), p.get("act_max", 127)
        if op in ("conv2d", "depthwise_conv2d", "fully_connected"):
            w, split = self.weight(node.inputs[1])
            b = self.weight(node.inputs[2])[0] if len(node.inputs) > 2 and node.inputs[2] else "NULL"
            wt = self.g.tensors[node.inputs[1]]
            q = self.quant(k, p)
            if op == "fully_connected":
                cin, cout = wt.shape[1], wt.shape[0]
                fp = self.const(f"{k}_fc", f"static const mt_fc_params {k}_fc = {{{p['in_zp']}, {p['w_zp']}, "
                                f"{p['out_zp']}, {act_lo}, {act_hi}, {split}}};")
                if st.op == "fully_connected_acc":
                    body.append(f"MT_TRY(MT_KERNEL(mt_fully_connected_acc_s32)(&{fp}, n, {cin}, {self.ptr(x)}, {cout}, {w}, {b}, "
                                f"{self.ptr(y, 'int32_t')}));")
                else:
                    body.append(f"MT_TRY(MT_KERNEL(mt_fully_connected_fwd_s8)(&{fp}, &{q}, n, {cin}, {self.ptr(x)}, "
                                f"{cout}, {w}, {b}, {self.ptr(y)}));")
            else:
                a = node.attrs
                sh, sw = a.get("stride", (1, 1))
                dh, dw = a.get("dilation", (1, 1))
                t, l, bo, r = a.get("pad", (0, 0, 0, 0))
                body.append(f"const mt_dims di = {self.dims(x)}, df = {{{', '.join(map(str, wt.shape))}}}, "
                            f"dout = {self.dims(y)};")
                if op == "conv2d":
                    cp = self.const(f"{k}_conv", f"static const mt_conv_params {k}_conv = {{{p['in_zp']}, {p['out_zp']}, "
                                    f"{{{sh}, {sw}}}, {{{dh}, {dw}}}, {{{t}, {l}, {bo}, {r}}}, {act_lo}, {act_hi}, {split}}};")
                    if is_pointwise(self.g, node):
                        self.check(st, "mt_pointwise_conv2d_fwd_s8_scratch_bytes(&di, &df)", 0,
                                   f"const mt_dims di = {self.dims(x, '1')}, df = {{{', '.join(map(str, wt.shape))}}}; ")
                        body.append(f"MT_TRY(MT_KERNEL(mt_pointwise_conv2d_fwd_s8)(NULL, &{cp}, &{q}, &di, {self.ptr(x)}, "
                                    f"&df, {w}, {b}, &dout, {self.ptr(y)}));")
                    else:
                        body.append(f"MT_TRY(MT_KERNEL(mt_conv2d_fwd_s8)(&{cp}, &{q}, &di, {self.ptr(x)}, &df, {w}, {b}, "
                                    f"&dout, {self.ptr(y)}));")
                else:
                    mult = wt.shape[3] // self.g.tensors[x[:-2] if x.endswith("~p") else x].shape[3]
                    dp = self.const(f"{k}_dw", f"static const mt_dw_conv_params {k}_dw = {{{p['in_zp']}, {p['out_zp']}, "
                                    f"{mult}, {{{sh}, {sw}}}, {{{dh}, {dw}}}, {{{t}, {l}, {bo}, {r}}}, {act_lo}, {act_hi}}};")
                    if self.root[x] == self.root[y]:  # in place, through a ring of output rows
                        xs = self.g.tensors[x[:-2] if x.endswith("~p") else x].shape
                        ysh = self.g.tensors[node.outputs[0]].shape
                        rows = depthwise_inplace_rows(xs[1], xs[2], ysh[1], ysh[2], xs[3], sh, t)
                        ring = self.parts(st, [("ring", _a4(rows * ysh[2] * ysh[3]))])["ring"]
                        self.check(st, f"mt_depthwise_conv2d_fwd_s8_inplace_scratch_bytes(&dout, {rows})",
                                   _a4(rows * ysh[2] * ysh[3]), f"const mt_dims dout = {self.dims(y, '1')}; ")
                        body.append(f"MT_TRY(MT_KERNEL(mt_depthwise_conv2d_fwd_s8_inplace)(&{dp}, &{q}, &di, {self.ptr(x)}, &df, "
                                    f"{w}, {b}, &dout, (int8_t *){ring}, {rows}));")
                    else:
                        body.append(f"MT_TRY(MT_KERNEL(mt_depthwise_conv2d_fwd_s8)(&{dp}, &{q}, &di, {self.ptr(x)}, &df, "
                                    f"{w}, {b}, &dout, {self.ptr(y)}));")
        elif op == "add":
            fields = ("left_shift", "a_zp", "b_zp", "out_zp", "a_mult", "a_shift", "b_mult", "b_shift", "out_mult",
                      "out_shift", "act_min", "act_max")
            ap = self.const(f"{k}_add", f"static const mt_add_params {k}_add = {{"
                            + ", ".join(_c_int(int(p[f])) for f in fields) + "};")
            a_, b_ = node.inputs[0], node.inputs[1]
            ra, rb = st.reads[0], st.reads[1] if len(st.reads) > 1 else st.reads[0]
            da = self.dims(ra, act=not self.g.tensors[a_].is_const)
            db = self.dims(rb, act=not self.g.tensors[b_].is_const)
            body.append(f"const mt_dims da = {da}, db = {db}, dout = {self.dims(y)};")
            body.append(f"MT_TRY(mt_add_fwd_s8(&{ap}, &da, {self.value(ra) if not ra.endswith('~p') else self.ptr(ra)}, "
                        f"&db, {self.value(rb) if not rb.endswith('~p') else self.ptr(rb)}, &dout, {self.ptr(y)}));")
        elif op in ("relu", "relu6"):
            rp = self.const(f"{k}_relu", f"static const mt_relu_params {k}_relu = {{{p['in_zp']}, {p['out_zp']}, "
                            f"{p['mult']}, {p['shift']}, {act_lo}, {act_hi}}};")
            body.append(f"MT_TRY(mt_relu_fwd_s8(&{rp}, n * {self.stride(y)}, {self.ptr(x)}, {self.ptr(y)}));")
        elif op in ("max_pool2d", "avg_pool2d"):
            a = node.attrs
            kh, kw = a["ksize"]
            sh, sw = a.get("stride", (1, 1))
            t, l, bo, r = a.get("pad", (0, 0, 0, 0))
            pp = self.const(f"{k}_pool", f"static const mt_pool_params {k}_pool = {{{{{kh}, {kw}}}, {{{sh}, {sw}}}, "
                            f"{{{t}, {l}, {bo}, {r}}}, {act_lo}, {act_hi}, {int(bool(a.get('count_include_pad', False)))}}};")
            body.append(f"const mt_dims di = {self.dims(x)}, dout = {self.dims(y)};")
            body.append(f"MT_TRY(mt_{op}_fwd_s8(&{pp}, &di, {self.ptr(x)}, &dout, {self.ptr(y)}));")
        elif op == "mean":
            mp = self.const(f"{k}_mean", f"static const mt_mean_params {k}_mean = {{{p['in_zp']}, {p['out_zp']}, "
                            f"{p['count']}, {p['mult']}, {p['shift']}}};")
            body.append(f"const mt_dims di = {self.dims(x)};")
            body.append(f"MT_TRY(mt_mean_fwd_s8(&{mp}, &di, {self.ptr(x)}, {self.ptr(y)}));")
        elif op == "pad":
            pads = [tuple(v) for v in node.attrs["pads"]]
            full = pads if len(pads) == 4 else [pads[0], (0, 0), (0, 0), pads[-1]]
            pd = self.const(f"{k}_pad", f"static const mt_pad_params {k}_pad = {{{{{', '.join(str(a) for a, _ in full)}}}, "
                            f"{{{', '.join(str(b) for _, b in full)}}}, {p['value']}}};")
            body.append(f"const mt_dims di = {self.dims(x)}, dout = {self.dims(y)};")
            body.append(f"MT_TRY(mt_pad_fwd_s8(&{pd}, &di, {self.ptr(x)}, &dout, {self.ptr(y)}));")
        elif op == "reshape":
            if self.root[x] != self.root[y]:
                body.append(f"mt_copy_bytes({self.ptr(y)}, {self.ptr(x)}, (size_t)n * {self.stride(y)}u);")
        else:
            raise CodegenError(f"node {st.node!r}: op {op!r} has no C kernel; supported: {', '.join(SUPPORTED_OPS)}")
        for m in writes_of(st):
            t = m[5:]
            pm = self.tr.prepared[self.g.producer(t).name]
            hi = 128 if self.nodes[self.g.producer(t).name].op == "relu" or \
                self.nodes[self.g.producer(t).name].attrs.get("act") == "relu" else pm["act_max"]
            body.append(f"MT_TRY(mt_act_mask_pack_s8(n * {self.stride(t)}, {self.ptr(t)}, {pm['act_min']}, {hi}, "
                        f"{self.ptr(m, 'uint8_t')}));")
        return body

    # ---- the patched stage (compiler/patch.py): one step function, a loop over the tiles ----
    def patch_geometry(self) -> tuple[dict[str, tuple[str, str]], list[list[int]], list[list[int]]]:
        """The stage's per-tile geometry, split by axis: every value of a tile depends on its grid
        row only (y: rows, heights, top/bottom pads) or on its grid column only (x), so it is kept
        in two int16 tables, ``pt_rows[R][..]`` and ``pt_cols[C][..]`` (flash); a value equal in
        every row (column) is a literal. Returns field -> (y expression, x expression) and the two
        tables. Fields: ``gather_at``/``gather`` (the stage input's region: origin, size),
        ``scatter_at``/``scatter`` (the stage output's), per node ``out:<node>`` (computed region
        size), ``in:<node>`` (size of the region of each activation input it reads), ``pad0``/
        ``pad1:<node>`` (effective pads top/left, bottom/right), per activation input k
        ``coff``/``csrc``/``cflag:<k>:<node>`` (offset of the needed region in the held one, the
        held size, whether the axis is cropped)."""
        stage = self.mp.patch
        R, C = stage.grid
        vals: dict[str, tuple[list, list]] = {}

        def put(name: str, t, yv, xv) -> None:
            ys, xs = vals.setdefault(name, ([None] * R, [None] * C))
            for arr, i, v in ((ys, t.row, int(yv)), (xs, t.col, int(xv))):
                if arr[i] is None:
                    arr[i] = v
                elif arr[i] != v:
                    raise CodegenError(f"internal: patch geometry {name!r} differs along a grid row or column")

        crops = {(op.node, k) for t in stage.tiles for op in t.ops for k, c in enumerate(op.crop) if c}
        for t in stage.tiles:
            ri, ro = t.regions[stage.input], t.regions[stage.output]
            put("gather_at", t, ri.y0, ri.x0)
            put("gather", t, ri.h, ri.w)
            put("scatter_at", t, ro.y0, ro.x0)
            put("scatter", t, ro.h, ro.w)
            for op in t.ops:
                node = self.nodes[op.node]
                put(f"out:{op.node}", t, op.out.h, op.out.w)
                if node.op in WINDOW_OPS:  # elementwise ops read regions of their output's size, unpadded
                    put(f"in:{op.node}", t, op.need[0].h, op.need[0].w)
                    put(f"pad0:{op.node}", t, op.pads[0], op.pads[1])
                    put(f"pad1:{op.node}", t, op.pads[2], op.pads[3])
                for k, x in enumerate(act_inputs(node, self.g)):
                    held, need = t.regions[x], op.need[k]
                    if (need.h, need.w) != (op.need[0].h, op.need[0].w) or \
                            (node.op not in WINDOW_OPS and (need.h, need.w) != (op.out.h, op.out.w)):
                        raise CodegenError(f"internal: node {op.node!r} reads regions of unexpected sizes in a tile")
                    fy, fx = (held.y0, held.y1) != (need.y0, need.y1), (held.x0, held.x1) != (need.x0, need.x1)
                    if bool(op.crop[k]) != (fy or fx):
                        raise CodegenError(f"internal: crop of {op.node!r} input {k} disagrees with its regions")
                    if (op.node, k) not in crops:
                        continue
                    put(f"coff:{k}:{op.node}", t, *need.within(held))
                    put(f"csrc:{k}:{op.node}", t, held.h, held.w)
                    put(f"cflag:{k}:{op.node}", t, fy, fx)
        exprs: dict[str, tuple[str, str]] = {}
        rows: list[list[int]] = [[] for _ in range(R)]
        cols: list[list[int]] = [[] for _ in range(C)]
        for name, (ys, xs) in vals.items():
            e = []
            for arr, table, var in ((ys, rows, "gy"), (xs, cols, "gx")):
                if len(set(arr)) == 1:
                    e.append(str(arr[0]))
                else:
                    if min(arr) < -32768 or max(arr) > 32767:
                        raise CodegenError(f"patch geometry {name!r}: {max(arr)} does not fit int16")
                    e.append(f"{var}[{len(table[0])}]")
                    for i, v in enumerate(arr):
                        table[i].append(v)
            exprs[name] = (e[0], e[1])
        return exprs, rows, cols

    def patch_stage(self, psteps) -> list[str]:
        """The body of the step function that runs the patched stage (the timeline's ``patch``
        steps: gather, per node an optional crop and its kernel, scatter) for every tile of every
        sample ``j .. j+n-1``: the tile's region of the stage input is copied row by row into
        ``tile:<input>``, each node runs its full-layer kernel (same constants, DSP dispatch) on
        the tile buffers with the tile's geometry (dims = region sizes, padding = effective pads:
        the params struct is the const full-layer one, copied to the stack when a pad differs),
        and the output region is copied into the whole stage output."""
        stage = self.mp.patch
        g = self.g
        R, C = stage.grid
        ex, rows, cols = self.patch_geometry()
        ny, nx = len(rows[0]), len(cols[0])
        if ny:
            self.const("pt_rows", f"static const int16_t pt_rows[{R}][{ny}] = {{ /* patch geometry per grid row */\n"
                       + "".join(f"    {{{', '.join(map(str, r))}}},\n" for r in rows) + "};")
        if nx:
            self.const("pt_cols", f"static const int16_t pt_cols[{C}][{nx}] = {{ /* patch geometry per grid column */\n"
                       + "".join(f"    {{{', '.join(map(str, c))}}},\n" for c in cols) + "};")

        def y(f: str) -> str:
            return ex[f][0]

        def x(f: str) -> str:
            return ex[f][1]

        def whole(t: str) -> str:  # sample j + s of a whole tensor
            off = self.off(t)
            if t in self.batched:
                return f"((int8_t *)(mt_arena_u8 + {off}u + (size_t)(j + s) * {self.stride(t)}u))"
            return f"((int8_t *)(mt_arena_u8 + {off}u))"

        def chans(t: str) -> int:
            return int(g.tensors[t].shape[3])

        body = ["int32_t s, ti, tj;", "for (s = 0; s < n; ++s) {", f"    for (ti = 0; ti < {R}; ++ti) {{"]
        ind = "            "
        if ny:
            body += ["        const int16_t *gy = pt_rows[ti];", "        (void)gy;"]
        body.append(f"        for (tj = 0; tj < {C}; ++tj) {{")
        if nx:
            body += [f"{ind}const int16_t *gx = pt_cols[tj];", f"{ind}(void)gx;"]
        inp, out = stage.input, stage.output
        body.append(f"{ind}mt_region_copy({self.ptr(f'tile:{inp}')}, {x('gather')}, 0, 0, {whole(inp)}, "
                    f"{g.tensors[inp].shape[2]}, {y('gather_at')}, {x('gather_at')}, {y('gather')}, {x('gather')}, "
                    f"{chans(inp)});")
        for st in psteps:
            if st.op in ("tile_gather", "tile_scatter"):
                continue
            node = self.nodes[st.node]
            if st.op == "tile_crop":
                k = int(st.writes[0][len("tile:crop:"):].partition(":")[0])
                cond = self._patch_cond(ex, k, node.name)
                src = st.reads[0]
                size = f"in:{node.name}" if node.op in WINDOW_OPS else f"out:{node.name}"
                copy = (f"mt_region_copy({self.ptr(st.writes[0])}, {x(size)}, 0, 0, {self.ptr(src)}, "
                        f"{x(f'csrc:{k}:{node.name}')}, {y(f'coff:{k}:{node.name}')}, {x(f'coff:{k}:{node.name}')}, "
                        f"{y(size)}, {x(size)}, {chans(src[5:])});")
                body.append(f"{ind}{copy}" if cond == "1" else f"{ind}if ({cond}) {{ {copy} }}")
                continue
            xs = []
            for k, r in enumerate(st.reads):
                if r.startswith("tile:crop:"):
                    cond = self._patch_cond(ex, k, node.name)
                    held = self.ptr(f"tile:{act_inputs(node, g)[k]}")
                    xs.append(self.ptr(r) if cond == "1" else f"(({cond}) ? {self.ptr(r)} : {held})")
                else:
                    xs.append(self.ptr(r))
            body += [f"{ind}{b}" for b in self._patch_node(st, node, xs, y, x)]
        body.append(f"{ind}mt_region_copy({whole(out)}, {g.tensors[out].shape[2]}, {y('scatter_at')}, "
                    f"{x('scatter_at')}, {self.ptr(f'tile:{out}')}, {x('scatter')}, 0, 0, {y('scatter')}, "
                    f"{x('scatter')}, {chans(out)});")
        body += ["        }", "    }", "}"]
        return body

    @staticmethod
    def _patch_cond(ex, k: int, node: str) -> str:
        fy, fx = ex[f"cflag:{k}:{node}"]
        if "1" in (fy, fx):
            return "1"
        parts = [f for f in (fy, fx) if f != "0"]
        if not parts:
            raise CodegenError(f"internal: node {node!r} input {k}: a crop step but no tile crops")
        return " || ".join(f"{f} != 0" for f in parts)

    def _patch_node(self, st, node, xs: list[str], y, x) -> list[str]:
        """One node's kernel call on a tile (a block: its dims and params on the stack)."""
        p = self.tr.prepared[node.name]
        k = f"n{list(self.nodes).index(node.name)}"
        op = node.op
        yt = self.ptr(st.writes[0])
        oh, ow = y(f"out:{node.name}"), x(f"out:{node.name}")
        win = node.op in WINDOW_OPS
        ih, iw = (y(f"in:{node.name}"), x(f"in:{node.name}")) if win else (oh, ow)
        cin = self.g.tensors[act_inputs(node, self.g)[0]].shape[3]
        cout = self.g.tensors[node.outputs[0]].shape[3]
        act_lo, act_hi = p.get("act_min", -128), p.get("act_max", 127)
        a = node.attrs
        pads = [y(f"pad0:{node.name}"), x(f"pad0:{node.name}"), y(f"pad1:{node.name}"), x(f"pad1:{node.name}")] \
            if win else ["0"] * 4

        def params(ctype: str, sym: str, var: str) -> tuple[str, list[str]]:
            """(pointer to the params, statements): the const struct, or a stack copy with the tile's pads."""
            full = [str(v) for v in a.get("pad", (0, 0, 0, 0))]
            if pads == full:
                return f"&{sym}", []
            decl = [f"{ctype} {var} = {sym};"]
            sets = [f"{var}.padding.{f} = {v};" for f, v, w in zip(("top", "left", "bottom", "right"), pads, full)
                    if v != w]
            return f"&{var}", decl + sets

        out = ["{"]
        if op in ("conv2d", "depthwise_conv2d"):
            w, split = self.weight(node.inputs[1])
            b = self.weight(node.inputs[2])[0] if len(node.inputs) > 2 and node.inputs[2] else "NULL"
            wt = self.g.tensors[node.inputs[1]]
            q = self.quant(k, p)
            sh, sw = a.get("stride", (1, 1))
            dh, dw = a.get("dilation", (1, 1))
            t, l, bo, r = a.get("pad", (0, 0, 0, 0))
            dims = (f"    const mt_dims di = {{1, {ih}, {iw}, {cin}}}, df = {{{', '.join(map(str, wt.shape))}}}, "
                    f"dout = {{1, {oh}, {ow}, {cout}}};")
            if op == "conv2d":
                cp = self.const(f"{k}_conv", f"static const mt_conv_params {k}_conv = {{{p['in_zp']}, {p['out_zp']}, "
                                f"{{{sh}, {sw}}}, {{{dh}, {dw}}}, {{{t}, {l}, {bo}, {r}}}, {act_lo}, {act_hi}, {split}}};")
                ptr, stmts = params("mt_conv_params", cp, "cp")
                out += [f"    {s}" for s in stmts if not s.startswith("cp.")] + [dims]
                out += [f"    {s}" for s in stmts if s.startswith("cp.")]
                if is_pointwise(self.g, node):  # 1x1, stride 1, no padding: every tile too
                    self.check(st, "mt_pointwise_conv2d_fwd_s8_scratch_bytes(&di, &df)", 0,
                               f"const mt_dims di = {{1, 1, 1, {cin}}}, df = {{{', '.join(map(str, wt.shape))}}}; ")
                    out.append(f"    MT_TRY(MT_KERNEL(mt_pointwise_conv2d_fwd_s8)(NULL, {ptr}, &{q}, &di, {xs[0]}, "
                               f"&df, {w}, {b}, &dout, {yt}));")
                else:
                    out.append(f"    MT_TRY(MT_KERNEL(mt_conv2d_fwd_s8)({ptr}, &{q}, &di, {xs[0]}, &df, {w}, {b}, "
                               f"&dout, {yt}));")
            else:
                mult = wt.shape[3] // cin
                dp = self.const(f"{k}_dw", f"static const mt_dw_conv_params {k}_dw = {{{p['in_zp']}, {p['out_zp']}, "
                                f"{mult}, {{{sh}, {sw}}}, {{{dh}, {dw}}}, {{{t}, {l}, {bo}, {r}}}, {act_lo}, {act_hi}}};")
                ptr, stmts = params("mt_dw_conv_params", dp, "dp")
                out += [f"    {s}" for s in stmts if not s.startswith("dp.")] + [dims]
                out += [f"    {s}" for s in stmts if s.startswith("dp.")]
                out.append(f"    MT_TRY(MT_KERNEL(mt_depthwise_conv2d_fwd_s8)({ptr}, &{q}, &di, {xs[0]}, &df, {w}, {b}, "
                           f"&dout, {yt}));")
        elif op == "max_pool2d":
            kh, kw = a["ksize"]
            sh, sw = a.get("stride", (1, 1))
            t, l, bo, r = a.get("pad", (0, 0, 0, 0))
            pp = self.const(f"{k}_pool", f"static const mt_pool_params {k}_pool = {{{{{kh}, {kw}}}, {{{sh}, {sw}}}, "
                            f"{{{t}, {l}, {bo}, {r}}}, {act_lo}, {act_hi}, {int(bool(a.get('count_include_pad', False)))}}};")
            ptr, stmts = params("mt_pool_params", pp, "pp")
            out += [f"    {s}" for s in stmts if not s.startswith("pp.")]
            out.append(f"    const mt_dims di = {{1, {ih}, {iw}, {cin}}}, dout = {{1, {oh}, {ow}, {cout}}};")
            out += [f"    {s}" for s in stmts if s.startswith("pp.")]
            out.append(f"    MT_TRY(mt_max_pool2d_fwd_s8({ptr}, &di, {xs[0]}, &dout, {yt}));")
        elif op == "add":
            fields = ("left_shift", "a_zp", "b_zp", "out_zp", "a_mult", "a_shift", "b_mult", "b_shift", "out_mult",
                      "out_shift", "act_min", "act_max")
            ap = self.const(f"{k}_add", f"static const mt_add_params {k}_add = {{"
                            + ", ".join(_c_int(int(p[f])) for f in fields) + "};")
            out.append(f"    const mt_dims d = {{1, {oh}, {ow}, {cout}}};")
            out.append(f"    MT_TRY(mt_add_fwd_s8(&{ap}, &d, {xs[0]}, &d, {xs[1]}, &d, {yt}));")
        elif op in ("relu", "relu6"):
            rp = self.const(f"{k}_relu", f"static const mt_relu_params {k}_relu = {{{p['in_zp']}, {p['out_zp']}, "
                            f"{p['mult']}, {p['shift']}, {act_lo}, {act_hi}}};")
            out.append(f"    MT_TRY(mt_relu_fwd_s8(&{rp}, (int32_t){oh} * (int32_t){ow} * {cout}, {xs[0]}, {yt}));")
        else:
            raise CodegenError(f"node {node.name!r}: op {op!r} cannot run in a patched stage")
        out.append("}")
        return out

    # ---- backward steps ----
    def train_params(self, node, k: str) -> str:
        p = self.tr.prepared[node.name]
        _, split = self.weight(node.inputs[1])
        wm = self.arr("int32_t", f"{k}_wmult", p["w_mult"])
        x = self.g.tensors[node.inputs[0]].shape
        if node.op == "fully_connected":
            wt = self.g.tensors[node.inputs[1]].shape
            return self.const(f"{k}_fct", f"static const mt_fc_train_params {k}_fct = {{1, {wt[1]}, {wt[0]}, "
                              f"{p['in_zp']}, {p['w_zp']}, {p['x_mult']}, {p['x_shift']}, {p['x_bits']}, {wm}, "
                              f"{p['w_shift']}, {p['w_bits']}, {split}}};")
        a = node.attrs
        y = self.g.tensors[node.outputs[0]].shape
        wt = self.g.tensors[node.inputs[1]].shape
        t, l, bo, r = a.get("pad", (0, 0, 0, 0))
        return self.const(f"{k}_ct", f"static const mt_conv_train_params {k}_ct = {{{{1, {x[1]}, {x[2]}, {x[3]}}}, "
                          f"{{1, {y[1]}, {y[2]}, {y[3]}}}, {{{wt[1]}, {wt[2]}}}, "
                          f"{{{a.get('stride', (1, 1))[0]}, {a.get('stride', (1, 1))[1]}}}, "
                          f"{{{a.get('dilation', (1, 1))[0]}, {a.get('dilation', (1, 1))[1]}}}, {{{t}, {l}, {bo}, {r}}}, "
                          f"{p['in_zp']}, {p['x_mult']}, {p['x_shift']}, {p['x_bits']}, {wm}, {p['w_shift']}, "
                          f"{p['w_bits']}, {split}}};")

    def kname(self, node) -> str:
        if node.op == "conv2d" and is_pointwise(self.g, node):
            return "pointwise_conv2d"
        return node.op

    def mask_apply(self, st, node) -> list[str]:
        if self.first_bwd.get(node.name) != st.index:
            return []
        y = node.outputs[0]
        m = f"mask:{y}"
        if m not in self.root:
            return []
        g, _ = self.grad(y)
        return [f"MT_TRY(mt_act_mask_apply_s16({_numel(self.g.tensors[y].shape)}, {self.ptr(m, 'uint8_t')}, {g}));"]

    def grad_input(self, st, fanout: bool) -> list[str]:
        node = self.nodes[st.node]
        k = f"n{list(self.nodes).index(st.node)}"
        p = self.tr.prepared[node.name]
        pos = st.attrs_input
        x = node.inputs[pos]
        y = node.outputs[0]
        nx = _numel(self.g.tensors[x].shape)
        body = self.mask_apply(st, node)
        g, ge = self.grad(y)
        gx, gxe = self.grad(x)
        lean = st.key is not None and st.key in self.mm.options.get("lean", ())
        layout = scratch_layout(self.g, "grad_input", node, {"input": pos}, has_update=node.name in self.updated,
                                fanout=fanout, lean=lean)
        sp = self.parts(st, layout)
        if fanout:
            dst, dste = f"((int16_t *){sp['tmp']})", f"((int32_t *)({sp['tmp']} + {_a4(2 * nx)}u))"
        else:
            dst, dste = gx, gxe
        if node.op in LINEAR_OPS:
            tp = self.train_params(node, k)
            w, _ = self.weight(node.inputs[1])
            gs = f"(int16_t *){sp['gs']}" if "gs" in sp else g
            fn = "mt_fully_connected_bwd_input_s16" if node.op == "fully_connected" else "mt_conv2d_bwd_input_s16"
            lay = dict(layout)
            self.check(st, f"{fn}_scratch_bytes(&{tp}, {0 if 'gs' in sp else 1}, {0 if lean else 1})",
                       lay.get("acc", 0) + lay.get("gs", 0))
            acc = "NULL" if lean else f"(int32_t *){sp['acc']}"
            body.append(f"MT_TRY(MT_KERNEL(mt_{self.kname(node)}_bwd_input_s16)(&{tp}, {gs}, {acc}, {g}, *{ge}, "
                        f"{w}, {dst}, {dste}));")
        elif node.op in ("max_pool2d", "avg_pool2d"):
            a = node.attrs
            t, l, bo, r = a.get("pad", (0, 0, 0, 0))
            inv = self.arr("int32_t", f"{k}_invc", p["inv_count"]) if node.op == "avg_pool2d" else "NULL"
            pt = self.const(f"{k}_pt", f"static const mt_pool_train_params {k}_pt = {{{self.dims(x, '1')}, "
                            f"{self.dims(y, '1')}, {{{a['ksize'][0]}, {a['ksize'][1]}}}, "
                            f"{{{a.get('stride', (1, 1))[0]}, {a.get('stride', (1, 1))[1]}}}, {{{t}, {l}, {bo}, {r}}}, "
                            f"{int(bool(a.get('count_include_pad', False)))}, {inv}}};")
            if node.op == "max_pool2d":
                body.append(f"MT_TRY(mt_max_pool2d_bwd_input_s16(&{pt}, {self.ptr(x)}, {g}, *{ge}, {dst}, {dste}));")
            else:
                body.append(f"MT_TRY(mt_avg_pool2d_bwd_input_s16(&{pt}, {g}, *{ge}, {dst}, {dste}));")
        elif node.op == "mean":
            body.append(f"{{ const mt_dims di = {self.dims(x, '1')};")
            body.append(f"  MT_TRY(mt_mean_bwd_input_s16(&di, {p['inv_mult']}, {p['inv_shift']}, {g}, *{ge}, {dst}, {dste})); }}")
        elif node.op == "add":
            body.append(f"{{ const mt_dims dy = {self.dims4(y)}, dx = {self.dims4(x)};")
            body.append(f"  MT_TRY(mt_add_bwd_input_s16(&dy, &dx, {g}, *{ge}, {dst}, {dste})); }}")
        elif node.op == "pad":
            pads = [tuple(v) for v in node.attrs["pads"]]
            full = pads if len(pads) == 4 else [pads[0], (0, 0), (0, 0), pads[-1]]
            bf = self.arr("int32_t", f"{k}_before", [a for a, _ in full])
            body.append(f"{{ const mt_dims dx = {self.dims(x, '1')}, dy = {self.dims(y, '1')};")
            body.append(f"  MT_TRY(mt_pad_bwd_input_s16(&dx, &dy, {bf}, {g}, {dst})); *{dste} = *{ge}; }}")
        elif node.op in ("reshape", "relu", "relu6"):
            body.append(f"mt_copy_bytes({dst}, {g}, {2 * nx}u); *{dste} = *{ge};")
        else:
            raise CodegenError(f"node {st.node!r}: no input gradient kernel for op {node.op!r}")
        if fanout:
            body.append(f"MT_TRY(mt_grad_add_s16({nx}, {gx}, *{gxe}, {dst}, *{dste}, {gx}, {gxe}));")
        return body

    def fused_gap(self, st) -> list[str]:
        """mt_mean_pointwise_bwd_s16: the mean's input gradient, the conv's mask, bias update and
        input gradient in one call (lifetimes.GapFusion), without the [H*W, C] gradient."""
        conv = self.nodes[st.node]
        mean = self.nodes[st.key[1]]
        k = f"n{list(self.nodes).index(conv.name)}"
        pm = self.tr.prepared[mean.name]
        tp = self.train_params(conv, k)
        g, ge = self.grad(mean.outputs[0])
        gx, gxe = self.grad(conv.inputs[0])
        m = f"mask:{conv.outputs[0]}"
        mask = self.ptr(m, "uint8_t") if m in self.root else "NULL"
        w, _ = self.weight(conv.inputs[1])
        single = 0 if st.key in self.mm.options.get("lean", ()) else 1
        scratch = self.parts(st, [("all", _a4(st.scratch))])["all"]
        self.check(st, f"mt_mean_pointwise_bwd_s16_scratch_bytes(&{tp}, {single})", _a4(st.scratch))
        bias = conv.inputs[2] if len(conv.inputs) > 2 else ""
        body = []
        if bias and bias in self.tr.slices:
            rows = self.tr.slices[bias].rows
            decl, u, ss = self.sgd(bias, "bp")
            body.append("{ " + decl)
            body.append(f"  MT_TRY(mt_mean_pointwise_bwd_s16(&{tp}, {pm['inv_mult']}, {pm['inv_shift']}, &{u}, &{ss}, "
                        f"{rows}, (int32_t *){scratch}, {single}, {g}, *{ge}, {mask}, {w}, {self.sram[bias][0]}, "
                        f"{gx}, {gxe})); }}")
        else:
            body.append(f"MT_TRY(mt_mean_pointwise_bwd_s16(&{tp}, {pm['inv_mult']}, {pm['inv_shift']}, NULL, NULL, 0, "
                        f"(int32_t *){scratch}, {single}, {g}, *{ge}, {mask}, {w}, NULL, {gx}, {gxe}));")
        return body

    def dims4(self, t: str) -> str:
        shape = tuple(self.g.tensors[t].shape)
        s = (1,) * (4 - len(shape)) + shape
        return "{" + ", ".join(str(v) for v in s) + "}"

    def sgd(self, name: str, method: str) -> tuple[str, str, str]:
        """(declarations, params var, state var) of one trained slice's update."""
        s = self.tr.slices[name]
        sid = self._id(name)
        um = self.arr("int32_t", f"upd_{sid}_mult", s.upd["mult"])
        kind = "MT_APPLY_BIAS" if s.role == "bias" else ("MT_APPLY_MASTER" if s.master else "MT_APPLY_STOCHASTIC")
        master = f"master_{sid}" if s.master else "NULL"
        vel = f"vel_{sid}" if self.tr.mu_q31 else "NULL"
        m = 0 if method == "bp" else 1
        decl = (f"mt_sgd_params u = {{{um}, {int(s.upd['shift'])}, mt_lr_mult[{m}], mt_lr_shift[{m}], 16, "
                f"{self.tr.mu_q31}}};\n    mt_sgd_state ss = {{{kind}, {master}, &mt_state.rng, {vel}, "
                f"{_c_int(int(s.lo))}, {_c_int(int(s.hi))}}};")
        return decl, "u", "ss"

    def update(self, st) -> list[str]:
        node = self.nodes[st.node]
        pos = st.attrs_input
        name = node.inputs[pos]
        rows = st.attrs_rows
        k = f"n{list(self.nodes).index(st.node)}"
        body = self.mask_apply(st, node)
        g, ge = self.grad(node.outputs[0])
        decl, u, ss = self.sgd(name, "bp")
        body.append("if (mt_lr_mult[0] != 0) {")
        body.append("    " + decl)
        w = self.sram[name][0]
        if pos == 2:
            c = self.g.tensors[name].shape[0]
            pixels = _numel(self.g.tensors[node.outputs[0]].shape) // c
            body.append(f"    MT_TRY(mt_bias_update_s32(&{u}, &{ss}, {pixels}, {c}, {rows}, {g}, *{ge}, {w}, NULL, NULL));")
        else:
            tp = self.train_params(node, k)
            lean = st.key is not None and st.key in self.mm.options.get("lean", ())
            lay = scratch_layout(self.g, "update", node, {"input": 1, "rows": rows}, lean=lean)
            kn = {"fully_connected": "fully_connected", "depthwise_conv2d": "depthwise_conv2d"}.get(node.op, "conv2d")
            if lean:  # two passes over the weight gradient, no accumulator scratch
                acc = "NULL"
            else:
                acc = "(int32_t *)" + self.parts(st, lay)["acc"]
                self.check(st, f"mt_{kn}_update_s8_scratch_bytes(&{tp}, {rows})", dict(lay)["acc"])
            body.append(f"    MT_TRY(MT_KERNEL(mt_{self.kname(node)}_update_s8)(&{tp}, &{u}, &{ss}, {rows}, {acc}, {g}, "
                        f"*{ge}, {self.ptr(node.inputs[0])}, {w}, NULL, NULL));")
        body.append("}")
        return body

    def loss(self, st, batch: int, grad_buf: bool) -> list[str]:
        """Softmax cross-entropy of ``batch`` samples; sets loss_mean and corr[]."""
        C = _numel(self.g.tensors[self.tr.program.logits].shape)
        acc = self.tr.loss_input == "acc"
        lay = loss_layout(C, batch, acc, grad_buf)
        sp = self.parts(st, lay)
        self.check(st, f"mt_softmax_ce_scratch_bytes({batch}, {C})", dict(lay)["buf"])
        p = self.tr._loss_prep(self.tr.loss_input, batch)
        bp = f"{{{p['batch']}, {p['inv_batch_mult']}, {p['inv_batch_shift']}, {p['batch_log2']}}}"
        if grad_buf:
            g, ge = f"(int16_t *){sp['grad']}", "&grad_e"
        else:
            g, ge = self.grad(self.tr.program.logits)
        body = ["int32_t grad_e = 0;"] if grad_buf else []
        lab = "labels + j" if batch == 1 else "labels"
        if acc:
            final = self.tr._final
            fk = f"n{list(self.nodes).index(final.name)}"
            pf = self.tr.prepared[final.name]
            w, split = self.weight(final.inputs[1])
            b = self.weight(final.inputs[2])[0] if len(final.inputs) > 2 and final.inputs[2] else "NULL"
            wt = self.g.tensors[final.inputs[1]].shape
            fp = self.const(f"{fk}_fc", f"static const mt_fc_params {fk}_fc = {{{pf['in_zp']}, {pf['w_zp']}, "
                            f"{pf['out_zp']}, {pf.get('act_min', -128)}, {pf.get('act_max', 127)}, {split}}};")
            cm = self.arr("int32_t", f"ce_acc{batch}_mult", p["mult"])
            cs = self.arr("int32_t", f"ce_acc{batch}_shift", p["shift"])
            cp = self.const(f"ce_acc{batch}", f"static const mt_softmax_ce_acc_params ce_acc{batch} = {{{cm}, {cs}, "
                            f"{p['frac_bits']}, {p['radius']}, {bp}}};")
            body.append(f"MT_TRY(MT_KERNEL(mt_fully_connected_acc_s32)(&{fp}, {batch}, {wt[1]}, {self.ptr(final.inputs[0])}, {wt[0]}, "
                        f"{w}, {b}, (int32_t *){sp['acc']}));")
            body.append(f"MT_TRY(mt_softmax_ce_acc_s32(&{cp}, {batch}, {C}, (int32_t *){sp['buf']}, (int32_t *){sp['acc']}, "
                        f"{lab}, {g}, {ge}, NULL, &mt_loss_mean, mt_corr));")
        else:
            cp = self.const(f"ce_s8_{batch}", f"static const mt_softmax_ce_s8_params ce_s8_{batch} = {{{p['mult']}, "
                            f"{p['left_shift']}, {p['diff_min']}, {bp}}};")
            body.append(f"MT_TRY(mt_softmax_ce_s8(&{cp}, {batch}, {C}, (int32_t *){sp['buf']}, "
                        f"{self.ptr(self.tr.program.logits)}, {lab}, {g}, {ge}, NULL, &mt_loss_mean, mt_corr));")
        return body

    def fg_loss(self, st) -> list[str]:
        C = _numel(self.g.tensors[self.tr.program.logits].shape)
        B = self.B
        lay = loss_layout(C, B, False, True)
        sp = self.parts(st, lay)
        self.check(st, f"mt_softmax_ce_scratch_bytes({B}, {C})", dict(lay)["buf"])
        p = self.tr._loss_prep("acc", B)
        bp = f"{{{p['batch']}, {p['inv_batch_mult']}, {p['inv_batch_shift']}, {p['batch_log2']}}}"
        cm = self.arr("int32_t", f"ce_acc{B}_mult", p["mult"])
        cs = self.arr("int32_t", f"ce_acc{B}_shift", p["shift"])
        cp = self.const(f"ce_acc{B}", f"static const mt_softmax_ce_acc_params ce_acc{B} = {{{cm}, {cs}, "
                        f"{p['frac_bits']}, {p['radius']}, {bp}}};")
        return ["int32_t grad_e = 0;",
                f"MT_TRY(mt_softmax_ce_acc_s32(&{cp}, {B}, {C}, (int32_t *){sp['buf']}, {self.ptr('fg:acc', 'int32_t')}, "
                f"labels, (int16_t *){sp['grad']}, &grad_e, NULL, &mt_loss_mean, NULL));"]


# ---------------------------------------------------------------------------------------------
def _check(graph: Graph, tr: Int8Trainer, accumulate: int) -> None:
    if not tr.slices:
        raise CodegenError(f"schedule {tr.plan.schedule.kind!r} trains nothing: there is no training program to emit "
                           "(choose sparse, bias, last-k, full, fg or hybrid)")
    if accumulate != 1:
        raise CodegenError(f"--accumulate {accumulate}: the C engine applies every step's gradient (accumulate 1); "
                           "gradient accumulation runs in the numpy engine only")
    for s in tr._fwd:
        if s.op not in SUPPORTED_OPS:
            raise CodegenError(f"node {s.node!r}: op {s.op!r} has no C kernel; supported: {', '.join(SUPPORTED_OPS)}")
    if tr.fg.m > 16 and tr.walk:
        raise CodegenError(f"forward gradient m={tr.fg.m}: the C engine supports m <= 16")


def generate(graph: Graph, plan: TrainPlan | Schedule, *, lr: float | None = None, fg_lr: float | None = None,
             momentum: float = 0.0, lr_schedule: str = "cosine", qas: bool | None = None, remedy: str = "master",
             loss_input: str = "int8", accumulate: int = 1, algorithms=None, board: str | None = None,
             patch="off", patch_max_overhead: float = DEFAULT_MAX_OVERHEAD, scratch: str = "fast") -> Generated:
    """Emit ``mt_model.h`` / ``mt_model.c`` for ``graph`` (int8 IR) trained under ``plan``.

    Options are :class:`~microtrain.compiler.train_int.Int8Trainer`'s; the seed and the number of
    steps of the cosine schedule are run-time arguments of ``mt_init``. ``patch``,
    ``patch_max_overhead``, ``scratch``: as :func:`~microtrain.compiler.memory.memplan.plan_memory`
    (the program runs the plan's patched stage tile by tile)."""
    if isinstance(plan, Schedule):
        plan = resolve(plan, graph)
    mp = plan_memory(graph, plan, algorithms=algorithms, remedy=remedy, momentum=momentum, lr_schedule=lr_schedule,
                     loss_input=loss_input, board=_target_board(board), patch=patch,
                     patch_max_overhead=patch_max_overhead, scratch=scratch)
    tr = Int8Trainer(graph, plan, lr=lr, fg_lr=fg_lr, momentum=momentum, seed=0, lr_schedule=lr_schedule,
                     total_steps=1 if lr_schedule == "cosine" else None, qas=qas, remedy=remedy, loss_input=loss_input,
                     program=mp.model.program, patch=mp.patch)
    _check(graph, tr, accumulate)
    options = {"lr": tr.lrs, "momentum": momentum, "lr_schedule": lr_schedule, "qas": tr.qas, "remedy": remedy,
               "loss_input": loss_input, "fg": [tr.fg.m, tr.fg.eps, tr.fg.batch],
               "board": board if board is None or isinstance(board, str) else board.name}
    if mp.patch is not None:  # the program's layout differs: part of its identity
        options["patch"] = [list(mp.patch.grid), mp.patch.nodes[-1]]
    if mp.model.options.get("lean"):
        options["lean"] = sorted(map(list, mp.model.options["lean"]))
    digest = model_hash(graph, plan, options)
    em = _Emitter(graph, plan, tr, mp, digest)
    return _assemble(em, options)


def _target_board(board):
    """The Board whose stack ``gen.memory`` plans (None: no board, or the host build)."""
    if board is None or (isinstance(board, str) and board.strip().lower() == "host"):
        return None
    if isinstance(board, str):
        from ...host.boards import get_board

        return get_board(board)
    return board


def _assemble(em: _Emitter, options: dict) -> Generated:
    g, tr, mm, mp = em.g, em.tr, em.mm, em.mp
    steps = mm.steps
    start = mm.options["start"]
    fwd_nodes = [s.node for s in tr._fwd]
    prefix_nodes = set(fwd_nodes[:start])
    B = em.B
    has_bp = tr._has_bp
    fg_live = bool(tr._fg_live)
    C = _numel(g.tensors[tr.program.logits].shape)
    inp = mm.options["input"]
    in_size = em.stride(inp)
    mask_names = lambda st: [w for w in st.writes if w.startswith("mask:")]  # noqa: E731

    funcs: list[str] = []
    prof_names: list[str] = []  # per step function, for -DMT_PROFILE
    prefix_calls, head_calls, bwd_calls, fg_calls = [], [], [], []
    written: set[str] = set()
    loss_step = None
    fg_loss_step = None
    for st in steps:
        if st.kind == "input":
            continue
        st.attrs_input = None
        st.attrs_rows = None
        if st.kind in ("forward", "fg_forward"):
            body = em.forward(st, mask_names)
        elif st.kind == "patch":  # the patched stage: one function (a tile loop) for all its steps
            if st.op != "tile_gather":
                continue
            body = em.patch_stage([s for s in steps if s.kind == "patch"])
        elif st.kind == "loss":
            loss_step = st
            continue
        elif st.op == "mean_pointwise":  # global mean <- 1x1 conv backward, fused
            written.add(st.writes[0])
            body = em.fused_gap(st)
        elif st.kind in ("grad_input", "update"):
            ps = next(s for s in tr.program.steps if s.kind == st.kind and s.node == st.node
                      and s.reads == [r for r in st.reads] and (s.writes == st.writes or st.kind == "update"))
            st.attrs_input = ps.attrs["input"]
            st.attrs_rows = ps.attrs.get("rows")
            if st.kind == "grad_input":
                fan = st.writes[0] in written
                written.add(st.writes[0])
                body = em.grad_input(st, fan)
            else:
                body = em.update(st)
        elif st.kind == "fg_loss":
            fg_loss_step = st
            continue
        else:  # fg_perturb / fg_update: engine code below
            continue
        fn = f"step{st.index}"
        k = len(prof_names)
        what = (f"patch {mp.patch.grid[0]}x{mp.patch.grid[1]} {mp.patch.nodes[0]}..{mp.patch.nodes[-1]}"
                if st.kind == "patch" else f"{st.kind} {st.op} {st.node}")
        prof_names.append(f"{st.index} {what}")
        funcs.append(f"/* {st.index}: {what} */\nstatic mt_status {fn}(int32_t n, int32_t j)\n{{\n"
                     f"    MT_PROF_ENTER();\n    (void)n;\n    (void)j;\n" + "".join(f"    {b}\n" for b in body)
                     + f"    MT_PROF_LEAVE({k});\n    return MT_OK;\n}}\n")
        if st.kind == "patch":  # the stage is the start of the frozen prefix
            prefix_calls.append(fn)
        elif st.kind == "forward":
            (prefix_calls if st.node in prefix_nodes else head_calls).append(fn)
        elif st.kind == "fg_forward":
            fg_calls.append(fn)
        else:
            bwd_calls.append(fn)

    # loss functions
    if has_bp:
        body = em.loss(loss_step, 1, False)
        funcs.append("/* loss of one sample (backprop) */\nstatic mt_status bp_loss(const int32_t *labels, int32_t j)\n{\n"
                     + "".join(f"    {b}\n" for b in body) + "    return MT_OK;\n}\n")
    elif loss_step is not None:
        body = em.loss(loss_step, B, True)
        funcs.append("/* reported loss of the unperturbed forward (batch) */\n"
                     "static mt_status batch_loss(const int32_t *labels)\n{\n    const int32_t j = 0;\n    (void)j;\n"
                     + "".join(f"    {b}\n" for b in body) + "    return MT_OK;\n}\n")
    if fg_live:
        body = em.fg_loss(fg_loss_step)
        funcs.append("/* loss of a perturbed pass (batch, on the final layer's accumulators) */\n"
                     "static mt_status fg_loss(const int32_t *labels)\n{\n"
                     + "".join(f"    {b}\n" for b in body) + "    return MT_OK;\n}\n")

    # ---- persistent SRAM ----
    sram_decls: list[str] = []
    init_lines: list[str] = []
    ck_parts: list[tuple[str, str, str, int]] = []  # (what, symbol, ctype, count)
    for name, s in tr.slices.items():
        ten = g.tensors[name]
        sym, rows = em.sram[name]
        flash = em.arr("int8_t" if ten.dtype == "int8" else "int32_t", f"flash_{em._id(name)}", ten.data)
        count = int(ten.data.size) if rows is None else rows * (int(ten.data.size) // ten.shape[0])
        ctype = "int8_t" if ten.dtype == "int8" else "int32_t"
        if sym not in [d[1] for d in ck_parts]:
            sram_decls.append(f"static {ctype} {sym}[{count}]; /* {name}{'' if rows is None else f' rows [0, {rows})'} */")
            init_lines.append(f"mt_copy_bytes({sym}, {flash}, sizeof({sym}));")
            ck_parts.append((name, sym, ctype, count))
    for name, s in tr.slices.items():
        sid = em._id(name)
        n_slice = int(tr.params[name][s.index].size)
        if s.master:
            sram_decls.append(f"static int16_t master_{sid}[{n_slice}];")
            src = em.sram[name][0]
            # master = w << 8 over the slice, in slice order (rows of the axis)
            ax = s.axis
            shape = g.tensors[name].shape
            outer = int(math.prod(shape[:ax]))
            inner = int(math.prod(shape[ax + 1:]))
            init_lines.append(f"mt_master_init(master_{sid}, {src}, {outer}, {s.rows}, {shape[ax]}, {inner});")
            ck_parts.append((f"{name}.master", f"master_{sid}", "int16_t", n_slice))
        if tr.mu_q31:
            sram_decls.append(f"static int32_t vel_{sid}[{n_slice}];")
            init_lines.append(f"mt_zero_bytes(vel_{sid}, sizeof(vel_{sid}));")
            ck_parts.append((f"{name}.velocity", f"vel_{sid}", "int32_t", n_slice))

    # ---- forward gradient engine ----
    fg_code = ""
    if fg_live:
        per = []
        upd = []
        for s in tr.walk:
            d = tr.fg_delta[s.tensor]
            sym = em.sram[s.tensor][0]
            shape = g.tensors[s.tensor].shape
            if s.role == "weight" and s.axis == 0:
                inner = int(math.prod(shape[1:]))
                sl = f"{{1, {s.rows}, {shape[0]}, {inner}}}"
            elif s.role == "weight":
                sl = f"{{{int(math.prod(shape[:s.axis]))}, {s.rows}, {shape[s.axis]}, {int(math.prod(shape[s.axis + 1:]))}}}"
            else:
                sl = f"{{1, {s.rows}, {shape[0]}, 1}}"
            sid = em._id(s.tensor)
            if d == 0:
                per.append(f"    mt_rademacher_skip(&z, {s.size}u);")
                upd.append(f"    for (i = 0; i < MT_FG_M; ++i) {{ mt_rademacher_skip(&zc[i], {s.size}u); }}")
                continue
            per.append(f"    {{ const mt_slice sl = {sl};")
            if s.role == "weight":
                per.append(f"      (void)mt_fg_perturb_s8(&sl, master_{sid}, {d}, k, &z, {sym}); }}")
            else:
                per.append(f"      (void)mt_fg_perturb_s32(&sl, {d}, k - prev, &z, {sym}); }}")
            decl, u, ss = em.sgd(s.tensor, "fg")
            fn = "mt_fg_update_s8" if s.role == "weight" else "mt_fg_update_s32"
            upd.append(f"    if (mt_lr_mult[1] == 0) {{\n        for (i = 0; i < MT_FG_M; ++i) {{ mt_rademacher_skip(&zc[i], {s.size}u); }}\n"
                       f"    }} else {{\n        const mt_slice sl = {sl};\n        {decl.replace(chr(10) + '    ', chr(10) + '        ')}\n"
                       f"        MT_TRY({fn}(&{u}, &{ss}, &sl, MT_FG_M, signs, zc, {sym}));\n    }}")
        fg_pass = "".join(f"    MT_TRY({f}(MT_BATCH, 0));\n" for f in fg_calls)
        fg_code = f"""
/* forward gradient: move the perturbed slices from perturbation prev to k (+1, -1, 0) */
static void fg_perturb(uint32_t seed, int32_t k, int32_t prev)
{{
    mt_rademacher z;
    (void)k;
    (void)prev;
    mt_rademacher_init(&z, seed);
{chr(10).join(per)}
}}

/* one perturbed pass on the batch: loss (Q15.16) of the final layer's accumulators */
static mt_status fg_pass(const int32_t *labels, int32_t *loss)
{{
{fg_pass}    MT_TRY(fg_loss(labels));
    *loss = mt_loss_mean;
    return MT_OK;
}}

static mt_status fg_step(const int32_t *labels, int32_t *skipped)
{{
    uint32_t seeds[MT_FG_M];
    int32_t signs[MT_FG_M];
    mt_rademacher zc[MT_FG_M];
    int32_t i;
    *skipped = 0;
    for (i = 0; i < MT_FG_M; ++i) {{
        int32_t lp = 0, lm = 0;
        seeds[i] = mt_fg_perturbation_seed(mt_state.seed, (uint32_t)mt_state.t, (uint32_t)(i + 1));
        fg_perturb(seeds[i], 1, 0);
        MT_TRY(fg_pass(labels, &lp));
        fg_perturb(seeds[i], -1, 1);
        MT_TRY(fg_pass(labels, &lm));
        fg_perturb(seeds[i], 0, -1);
        signs[i] = (lp == lm) ? 0 : ((lp > lm) ? 1 : -1);
        if (lp == lm) {{
            ++*skipped;
        }}
    }}
    for (i = 0; i < MT_FG_M; ++i) {{
        mt_rademacher_init(&zc[i], seeds[i]);
    }}
{chr(10).join(upd)}
    return MT_OK;
}}
"""

    # ---- checkpoint layout ----
    ck_offsets = []
    pos = CHECKPOINT_HEADER
    item = {"int8_t": 1, "int16_t": 2, "int32_t": 4}
    for what, sym, ctype, count in ck_parts:
        ck_offsets.append({"name": what, "symbol": sym, "dtype": ctype[:-2], "count": count, "offset": pos})
        pos += _a4(item[ctype] * count)
    params_bytes = pos
    ck_parts = "".join(f"    {{(uint8_t *){o['symbol']}, {o['offset']}u, (uint32_t)sizeof({o['symbol']})}},\n"
                       for o in ck_offsets) or "    {NULL, 0u, 0u},\n"

    prof_table = "".join(f'    "{n}",\n' for n in prof_names) or '    "",\n'
    prof_n = max(1, len(prof_names))
    lr_bp = tr._lr_q31["bp"]
    lr_fg = tr._lr_q31["fg"]
    cosine = tr.lr_schedule == "cosine"
    prefix = "".join(f"    MT_TRY({f}(nb, 0));\n" for f in prefix_calls)
    head1 = "".join(f"        MT_TRY({f}(1, j));\n" for f in head_calls)
    headb = "".join(f"    MT_TRY({f}(MT_BATCH, 0));\n" for f in head_calls)
    bwd = "".join(f"        MT_TRY({f}(1, j));\n" for f in bwd_calls)
    infer_head = "".join(f"    MT_TRY({f}(1, 0));\n" for f in head_calls)
    logits_ptr = em.ptr(tr.program.logits).replace("(size_t)j", "(size_t)0")

    if has_bp:
        train_core = f"""    for (j = 0; j < MT_BATCH; ++j) {{
{head1}        MT_TRY(bp_loss(labels, j));
        total += mt_loss_mean;
        correct += mt_corr[0];
{bwd}    }}
    m->loss_q16 = (int32_t)((total + MT_BATCH / 2) / MT_BATCH);
"""
    else:
        train_core = f"""{headb}    MT_TRY(batch_loss(labels));
    m->loss_q16 = mt_loss_mean;
    for (j = 0; j < MT_BATCH; ++j) {{
        correct += mt_corr[j];
    }}
"""
    fg_call = "    MT_TRY(fg_step(labels, &skipped));\n" if fg_live else ""
    arena = mp.arena_bytes
    has_master = any(s.master for s in tr.slices.values())
    master_helper_start = "" if has_master else "#if 0 /* no master copies */\n"
    master_helper_end = "" if has_master else "#endif\n"
    hdr = _header(em, options, arena, in_size, C, B, params_bytes, tr, prof_n)
    region_helper = "" if mp.patch is None else _REGION_COPY
    decls = "\n".join(em.decls.values())
    src = f"""/* mt_model.c: training program of model {em.hash}, generated by {GENERATOR}. Do not edit.
 * schedule: {tr.plan.describe() if hasattr(tr.plan, 'describe') else tr.plan.schedule.kind}
 * options: {json.dumps(options, sort_keys=True, default=str)}
 * SRAM: arena {arena} B (planned, {mp.arena.algorithm}), persistent {mp.persistent_bytes} B (planned)
 */
#include "mt_model.h"

#include "mt_dispatch.h"
#include "mt_kernels_fwd.h"
#include "mt_kernels_train.h"
#include "mt_kernels_fused.h"

#define MT_TRY(e) do {{ const mt_status s_ = (e); if (s_ != MT_OK) {{ return s_; }} }} while (0)
#ifndef MT_CYCLES
#define MT_CYCLES() 0u /* a port defines it (e.g. DWT->CYCCNT) to report cycles per step */
#endif
#define MT_FG_M {tr.fg.m if fg_live else 1}

/* ---- flash: parameters (initial values) and prepared constants ---- */
{decls}

/* ---- persistent SRAM ---- */
{chr(10).join(sram_decls)}
static struct {{
    uint32_t seed;
    uint32_t rng;
    int32_t t;
    int32_t total;
}} mt_state;
static int32_t mt_lr_mult[2], mt_lr_shift[2];
static int32_t mt_loss_mean;
static uint8_t mt_corr[MT_BATCH];

/* ---- the arena: every activation, saved tensor, mask, gradient and scratch buffer ---- */
static int32_t mt_arena[MT_ARENA_BYTES / 4];
#define mt_arena_u8 ((uint8_t *)mt_arena)

static void mt_copy_bytes(void *dst, const void *src, size_t n)
{{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    size_t i;
    for (i = 0; i < n; ++i) {{
        d[i] = s[i];
    }}
}}

static void mt_zero_bytes(void *dst, size_t n)
{{
    uint8_t *d = (uint8_t *)dst;
    size_t i;
    for (i = 0; i < n; ++i) {{
        d[i] = 0u;
    }}
}}
{region_helper}
{master_helper_start}static void mt_master_init(int16_t *master, const int8_t *w, int32_t outer, int32_t rows, int32_t channels,
                           int32_t inner)
{{
    int32_t o, r, i, k = 0;
    for (o = 0; o < outer; ++o) {{
        for (r = 0; r < rows; ++r) {{
            for (i = 0; i < inner; ++i) {{
                master[k++] = (int16_t)((int32_t)w[((size_t)o * (size_t)channels + (size_t)r) * (size_t)inner + (size_t)i] * 256);
            }}
        }}
    }}
}}
{master_helper_end}
/* ---- per-step cycle profile (-DMT_PROFILE; bench/device.py) ---- */
#ifdef MT_PROFILE
uint32_t mt_prof_cycles[MT_PROF_STEPS];  /* summed MT_CYCLES() per step function */
uint32_t mt_prof_calls[MT_PROF_STEPS];
const char *const mt_prof_names[MT_PROF_STEPS] = {{
{prof_table}}};
#define MT_PROF_ENTER() const uint32_t mt_prof_c0 = MT_CYCLES()
#define MT_PROF_LEAVE(k) (mt_prof_cycles[k] += MT_CYCLES() - mt_prof_c0, mt_prof_calls[k]++)
#else
#define MT_PROF_ENTER() ((void)0)
#define MT_PROF_LEAVE(k) ((void)0)
#endif

/* ---- the program: one function per device step (compiler/memory/lifetimes.py timeline) ---- */
{chr(10).join(funcs)}{fg_code}
static void mt_step_lr(void)
{{
    static const int32_t base_mult[2] = {{{lr_bp[0]}, {lr_fg[0]}}};
    static const int32_t base_shift[2] = {{{lr_bp[1]}, {lr_fg[1]}}};
    int32_t i;
    for (i = 0; i < 2; ++i) {{
{"        mt_scale_lr_q31(base_mult[i], base_shift[i], mt_cosine_factor_q15(mt_state.t, mt_state.total), &mt_lr_mult[i], &mt_lr_shift[i]);" if cosine else "        mt_lr_mult[i] = base_mult[i];" + chr(10) + "        mt_lr_shift[i] = base_shift[i];"}
    }}
}}

void mt_init(uint32_t seed, int32_t total_steps)
{{
{"".join(f"    {x}{chr(10)}" for x in init_lines)}    mt_state.seed = seed;
    mt_state.rng = mt_fmix32(seed ^ 0x85EBCA6Bu);
    if (mt_state.rng == 0u) {{
        mt_state.rng = 0x9E3779B9u;
    }}
    mt_state.t = 0;
    mt_state.total = total_steps > 0 ? total_steps : 1;
}}

int32_t mt_step_count(void)
{{
    return mt_state.t;
}}

mt_status mt_train_step(const int8_t *x, const int32_t *labels, mt_metrics *m)
{{
    const uint32_t c0 = MT_CYCLES();
    const int32_t nb = MT_BATCH;
    int64_t total = 0;
    int32_t correct = 0, skipped = 0, j;
    (void)total;
    (void)nb;
    for (j = 0; j < MT_BATCH; ++j) {{
        if (labels[j] < 0 || labels[j] >= MT_NUM_CLASSES) {{
            return MT_ERR_ARG;
        }}
    }}
    mt_step_lr();
    mt_copy_bytes({em.ptr(inp).replace("(size_t)j", "(size_t)0")}, x, (size_t)MT_BATCH * MT_INPUT_BYTES);
{prefix}{train_core}{fg_call}    m->correct = correct;
    m->samples = MT_BATCH;
    m->skipped = skipped;
    m->cycles = MT_CYCLES() - c0;
    mt_state.t++;
    return MT_OK;
}}

mt_status mt_infer(const int8_t *x, int8_t *logits)
{{
    const int32_t nb = 1;
    (void)nb;
    mt_copy_bytes({em.ptr(inp).replace("(size_t)j", "(size_t)0")}, x, MT_INPUT_BYTES);
{prefix}{infer_head}    mt_copy_bytes(logits, {logits_ptr}, MT_NUM_CLASSES);
    return MT_OK;
}}

mt_status mt_eval(const int8_t *x, int32_t label, int32_t *predicted, int32_t *correct)
{{
    int8_t logits[MT_NUM_CLASSES];
    int32_t c, best = 0;
    MT_TRY(mt_infer(x, logits));
    for (c = 1; c < MT_NUM_CLASSES; ++c) {{
        if (logits[c] > logits[best]) {{
            best = c;
        }}
    }}
    if (predicted != NULL) {{
        *predicted = best;
    }}
    if (correct != NULL) {{
        *correct = (best == label) ? 1 : 0;
    }}
    return MT_OK;
}}

#ifdef MT_CHECK_SCRATCH
#define MT_A4(n) (((size_t)(n) + 3u) & ~(size_t)3u)
/* Test hook: -1 when every kernel's *_scratch_bytes companion, called with the step's own
 * arguments, equals the scratch the planner laid out for it; else the first step that differs. */
int32_t mt_check_scratch(void);
int32_t mt_check_scratch(void)
{{
{chr(10).join(em.checks)}
    return -1;
}}
#endif

static const uint8_t mt_hash[16] = {{{", ".join(str(b) for b in em.hash.encode())}}};

/* checkpoint image: header [0, 32) ("MTCK", format, model hash, step, PRNG state), then the parts */
typedef struct {{
    uint8_t *p;
    uint32_t off;
    uint32_t n;
}} mt_ck_part;
static const mt_ck_part mt_ck_parts[] = {{
{ck_parts}}};
#define MT_CK_NPARTS (sizeof(mt_ck_parts) / sizeof(mt_ck_parts[0]))
static uint32_t mt_ck_next;     /* next offset mt_params_write accepts (0: none open) */
static uint32_t mt_ck_pending[2]; /* step and PRNG state of the checkpoint being written */

static void mt_ck_header(uint8_t *h)
{{
    const uint32_t format = {CHECKPOINT_FORMAT}u;
    const uint32_t t = (uint32_t)mt_state.t;
    mt_copy_bytes(h, "MTCK", 4);
    mt_copy_bytes(h + 4, &format, 4);
    mt_copy_bytes(h + 8, mt_hash, 16);
    mt_copy_bytes(h + 24, &t, 4);
    mt_copy_bytes(h + 28, &mt_state.rng, 4);
}}

/* overlap of [a, a + n) and [b, b + m): start (absolute) and length; length 0 when disjoint */
static uint32_t mt_overlap(uint32_t a, uint32_t n, uint32_t b, uint32_t m, uint32_t *start)
{{
    const uint32_t lo = a > b ? a : b;
    const uint32_t hi = (a + n) < (b + m) ? (a + n) : (b + m);
    *start = lo;
    return hi > lo ? hi - lo : 0u;
}}

mt_status mt_params_read(uint32_t offset, uint8_t *out, uint32_t n)
{{
    uint8_t h[MT_CK_HEADER_BYTES];
    uint32_t i, lo, k;
    if (out == NULL || offset > MT_PARAMS_BYTES || n > MT_PARAMS_BYTES - offset) {{
        return MT_ERR_ARG;
    }}
    mt_zero_bytes(out, n);
    mt_ck_header(h);
    k = mt_overlap(offset, n, 0u, MT_CK_HEADER_BYTES, &lo);
    if (k != 0u) {{
        mt_copy_bytes(out + (lo - offset), h + lo, k);
    }}
    for (i = 0; i < MT_CK_NPARTS; ++i) {{
        k = mt_overlap(offset, n, mt_ck_parts[i].off, mt_ck_parts[i].n, &lo);
        if (k != 0u) {{
            mt_copy_bytes(out + (lo - offset), mt_ck_parts[i].p + (lo - mt_ck_parts[i].off), k);
        }}
    }}
    return MT_OK;
}}

mt_status mt_params_write(uint32_t offset, const uint8_t *in, uint32_t n)
{{
    uint32_t i, lo, k, format = 0u;
    if (in == NULL || offset > MT_PARAMS_BYTES || n > MT_PARAMS_BYTES - offset) {{
        return MT_ERR_ARG;
    }}
    if (offset == 0u) {{
        mt_ck_next = 0u;
        if (n < MT_CK_HEADER_BYTES || in[0] != 'M' || in[1] != 'T' || in[2] != 'C' || in[3] != 'K') {{
            return MT_ERR_ARG;
        }}
        mt_copy_bytes(&format, in + 4, 4);
        if (format != {CHECKPOINT_FORMAT}u) {{
            return MT_ERR_ARG;
        }}
        for (i = 0; i < 16u; ++i) {{
            if (in[8 + i] != mt_hash[i]) {{
                return MT_ERR_ARG; /* a checkpoint of another model or schedule */
            }}
        }}
        mt_copy_bytes(&mt_ck_pending[0], in + 24, 4);
        mt_copy_bytes(&mt_ck_pending[1], in + 28, 4);
    }} else if (offset != mt_ck_next) {{
        return MT_ERR_ARG; /* chunks come in order, after a valid header */
    }}
    for (i = 0; i < MT_CK_NPARTS; ++i) {{
        k = mt_overlap(offset, n, mt_ck_parts[i].off, mt_ck_parts[i].n, &lo);
        if (k != 0u) {{
            mt_copy_bytes(mt_ck_parts[i].p + (lo - mt_ck_parts[i].off), in + (lo - offset), k);
        }}
    }}
    mt_ck_next = offset + n;
    if (mt_ck_next == MT_PARAMS_BYTES) {{
        mt_state.t = (int32_t)mt_ck_pending[0];
        mt_state.rng = mt_ck_pending[1];
        mt_ck_next = 0u;
    }}
    return MT_OK;
}}

mt_status mt_params_get(uint8_t *out, uint32_t capacity)
{{
    if (out == NULL || capacity < MT_PARAMS_BYTES) {{
        return MT_ERR_ARG;
    }}
    return mt_params_read(0u, out, MT_PARAMS_BYTES);
}}

mt_status mt_params_set(const uint8_t *in, uint32_t size)
{{
    if (size != MT_PARAMS_BYTES) {{
        return MT_ERR_ARG;
    }}
    return mt_params_write(0u, in, size);
}}

/* arena high-water mark: every word gets a position-dependent canary; the mark is the end of the
 * last word that no longer holds its canary (a word rewritten with its own canary value is missed:
 * 1 in 2^32 per word, and only at the very top) */
#define MT_CANARY(i) ((uint32_t)(i) * 0x9E3779B1u + 0x7F4A7C15u)
void mt_arena_paint(void)
{{
    uint32_t i;
    for (i = 0; i < MT_ARENA_BYTES / 4u; ++i) {{
        mt_arena[i] = (int32_t)MT_CANARY(i);
    }}
}}

uint32_t mt_arena_high_water(void)
{{
    uint32_t i = MT_ARENA_BYTES / 4u;
    while (i > 0u && (uint32_t)mt_arena[i - 1u] == MT_CANARY(i - 1u)) {{
        --i;
    }}
    return 4u * i;
}}
"""
    manifest = {"generator": GENERATOR, "hash": em.hash, "arena_bytes": arena, "persistent_bytes": mp.persistent_bytes,
                "params_bytes": params_bytes, "checkpoint": ck_offsets, "batch": B, "classes": C,
                "input_bytes": in_size, "input_shape": list(g.tensors[inp].shape), "options": options,
                "sram_rows": {n: r for n, (_, r) in em.sram.items()}}
    _check_kernels(src, mm)
    files = {"mt_model.h": hdr, "mt_model.c": src, "mt_model.json": json.dumps(manifest, indent=1, sort_keys=True) + "\n"}
    return Generated(files, mp, tr, em.hash, manifest)


#: the patched stage's gather / crop / scatter: a region of NHWC int8 pixels, row by row
_REGION_COPY = """
/* copy h x w pixels of c int8 channels from src (rows of src_w pixels), starting at row sy, column
 * sx, to dst (rows of dst_w pixels) at row dy, column dx (the patched stage's gather, crop, scatter) */
static void mt_region_copy(int8_t *dst, int32_t dst_w, int32_t dy, int32_t dx, const int8_t *src, int32_t src_w,
                           int32_t sy, int32_t sx, int32_t h, int32_t w, int32_t c)
{
    int32_t r;
    for (r = 0; r < h; ++r) {
        mt_copy_bytes(dst + ((size_t)(dy + r) * (size_t)dst_w + (size_t)dx) * (size_t)c,
                      src + ((size_t)(sy + r) * (size_t)src_w + (size_t)sx) * (size_t)c, (size_t)w * (size_t)c);
    }
}
"""


def _header(em: _Emitter, options: dict, arena: int, in_size: int, C: int, B: int, params_bytes: int,
            tr: Int8Trainer, prof_n: int = 1) -> str:
    return f"""/* mt_model.h: training program of model {em.hash}, generated by {GENERATOR}. Do not edit. */
#ifndef MT_MODEL_H
#define MT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "mt_common.h"

#ifdef __cplusplus
extern "C" {{
#endif

#define MT_GENERATOR "{GENERATOR}"
#define MT_MODEL_HASH "{em.hash}"
#define MT_ARENA_BYTES {arena}      /* = sram.arena_bytes of `microtrain plan` */
#define MT_INPUT_BYTES {in_size}    /* one int8 sample, NHWC */
#define MT_NUM_CLASSES {C}
#define MT_BATCH {B}                /* samples per training step */
#define MT_PARAMS_BYTES {params_bytes} /* checkpoint size */
#define MT_PROF_STEPS {prof_n}         /* step functions (-DMT_PROFILE: mt_prof_cycles/calls/names) */
#define MT_CK_HEADER_BYTES 32       /* checkpoint header: "MTCK", format, model hash, step, PRNG state */

/** What one training step reports. */
typedef struct {{
    int32_t loss_q16;  /**< mean loss of the step's samples, Q15.16 nats */
    int32_t correct;   /**< unperturbed predictions equal to the label */
    int32_t samples;   /**< MT_BATCH */
    int32_t skipped;   /**< forward-gradient perturbations with L+ == L- */
    uint32_t cycles;   /**< MT_CYCLES() difference (0 when the port has no counter) */
}} mt_metrics;

/** Trained parameters from flash to SRAM, master copies, optimizer and PRNG state; step 0 of a
 *  run of @p total_steps (the cosine learning-rate schedule). */
void mt_init(uint32_t seed, int32_t total_steps);

/** One training step on MT_BATCH int8 samples @p x (MT_BATCH * MT_INPUT_BYTES) and labels. */
mt_status mt_train_step(const int8_t *x, const int32_t *labels, mt_metrics *m);

/** int8 logits (MT_NUM_CLASSES) of one sample with the current parameters. */
mt_status mt_infer(const int8_t *x, int8_t *logits);

/** Predicted class (first maximal logit) of one sample and whether it equals @p label. */
mt_status mt_eval(const int8_t *x, int32_t label, int32_t *predicted, int32_t *correct);

/** Checkpoint out: MT_PARAMS_BYTES bytes ("MTCK", format, model hash, step, PRNG state, then
 *  every trained tensor, master copy and velocity; layout in mt_model.json). */
mt_status mt_params_get(uint8_t *out, uint32_t capacity);

/** Checkpoint in; MT_ERR_ARG when it is not a checkpoint of this model and schedule. */
mt_status mt_params_set(const uint8_t *in, uint32_t size);

/** Bytes [offset, offset + n) of the checkpoint mt_params_get would write (chunked transfer). */
mt_status mt_params_read(uint32_t offset, uint8_t *out, uint32_t n);

/** Chunked mt_params_set: chunks in order from offset 0, whose chunk holds the whole header
 *  (MT_CK_HEADER_BYTES; checked before anything is written: MT_ERR_ARG for another model's
 *  checkpoint). Each chunk is stored as it arrives; the step and PRNG state take effect with the
 *  chunk that ends at MT_PARAMS_BYTES. */
mt_status mt_params_write(uint32_t offset, const uint8_t *in, uint32_t n);

/** Fill the arena with canaries (mt_init does not); mt_arena_high_water() then reports the end
 *  of the highest arena word written since, in bytes (<= MT_ARENA_BYTES). */
void mt_arena_paint(void);
uint32_t mt_arena_high_water(void);

/** Training steps taken since mt_init (or the loaded checkpoint's). */
int32_t mt_step_count(void);

#ifdef MT_PROFILE
/** Per step function: summed MT_CYCLES(), calls, and "index kind op node" (bench/device.py). */
extern uint32_t mt_prof_cycles[MT_PROF_STEPS];
extern uint32_t mt_prof_calls[MT_PROF_STEPS];
extern const char *const mt_prof_names[MT_PROF_STEPS];
#endif

#ifdef __cplusplus
}}
#endif

#endif /* MT_MODEL_H */
"""
