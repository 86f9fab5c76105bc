#!/usr/bin/env python3
"""Worst-case stack depth of the firmware, from GCC's own frame sizes and call graph.

    python tools/stack_usage.py            compute the table, print it, say whether the stored one is fresh
    python tools/stack_usage.py --write    regenerate compiler/memory/stack_table.json
    python tools/stack_usage.py --check    exit 1 when compiler/memory/stack_table.json is stale

Method
  Every firmware source (kernels, the DSP variants on DSP cores, the frame codec, the device loop,
  the reference port and a generated program) is compiled with the flags of
  ``compiler/codegen/firmware.py`` (``compile_flags``) plus ``-fstack-usage -fcallgraph-info=su``
  (GCC >= 10): each object gets a ``.su`` (bytes of every function's frame, ``static`` or
  ``dynamic``) and a ``.ci`` (its call graph in VCG format, library calls and indirect calls
  included). Both are taken at ``-O2`` (``firmware.OPT``: images, ``make firmware``) and ``-Os``
  (``project.OPT``: the library build of real boards), and the table keeps the larger number.

  The per-object graphs are merged (static functions stay per object), and checked against the
  objects themselves: every branch relocation out of a function (``objdump -dr``: calls, tail
  calls, library calls) becomes an edge if the graph lacks it (Thumb-1 switch-table helpers are
  called without appearing in the call graph). Library functions (libgcc, libc: memcpy,
  memset, 64-bit division, ...) have no ``.su``; their frames come from the disassembly of a linked
  image (every stack-pointer decrement in the function summed, which bounds any path through it),
  their callees from its branches. An indirect call may reach every function whose address its
  own object takes (local dispatch through a conditional function designator; the firmware passes
  no function pointers between objects). The analysis fails loudly on a dynamic frame (VLA,
  alloca), an indirect call in an object that takes no function's address, recursion, a
  stack-pointer write it cannot read, or a callee it cannot find.

  Depth of a function = its frame + the deepest of its callees. Per target the table holds:

  kernels    every public kernel entry point (the functions of firmware/include/mt_kernels_*.h, the
             ``*_dsp`` variants on DSP cores) with its callees;
  runtime    the other functions generated programs call (library helpers the compiler emits,
             the port's cycle counter), deepest first;
  ports      per reference port (TARGETS: the emulated boards' ports; cores without one use the
             port of their architecture compiled for them): ``calls``, the stack already in use
             where the device loop calls each program entry (reset/start -> main -> mt_device_poll
             -> mt_device_feed -> mt_dev_frame -> mt_dev_train -> mt_train_step, ...: the sum of the
             callers' frames), ``base_bytes`` (their maximum over the entries that run kernels),
             ``device_bytes`` (the deepest path that does not enter the program - frame codec,
             replies, port, boot - and the program's template leaves mt_step_count / mt_arena_*,
             whole), ``interrupt_bytes`` (every interrupt handler that returns: the hardware
             exception frame + its depth, all nested) and ``fatal`` (handlers that end the program,
             not counted). The device loop includes mt_model.h, so it is compiled with every corpus
             program and the largest numbers are kept;
  program    the generated program's own frames (everything in mt_model.c: mt_train_step and the step
             functions it calls, fg_step / fg_pass, mt_eval, mt_infer, mt_init, the checkpoint
             functions), calibrated on a corpus of generated programs (CORPUS: every schedule kind
             and option of the example model; ARCH_SEEDS x ARCH_SCHEDULES: random architectures
             with the ops the example lacks). Per entry, the largest own depth over the corpus once
             the arrays that scale with the program are taken out: ``train_bytes`` per kind (bp,
             fg, hybrid; fg_step keeps ``per_fg_m_bytes`` per perturbation), ``eval_bytes``
             (mt_eval keeps the logits, one byte per class) and ``other_bytes``. The generated code
             is a fixed set of templates and its frames do not grow with the model (GCC shares the
             slots of the inlined steps: MobileNetV2's mt_train_step of 245 steps has the frame of
             the 12-step example's); tests/test_stack.py checks the model on programs outside the
             corpus (other random architectures, MobileNetV2) against their exact static depth.

  The planner (compiler/memory/stack.py) adds: base + program + the deepest kernel or runtime
  helper the program calls, or device_bytes when larger, + interrupt_bytes, rounded up to the
  ABI's stack alignment. ``image_stack(gen, board)`` computes the exact static worst case of one
  image (what tests/test_stack.py compares the plan and the device's measurement with).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "compiler" / "memory" / "stack_table.json"
FORMAT = 1
STACK_FLAGS = ("-fstack-usage", "-fcallgraph-info=su")
OPTS = ("-O2", "-Os")

#: target -> (board whose compiler and target flags are used, reference ports: board of the port
#: (the port's sources and defines)). Targets are what the planner looks up (stack_target()).
TARGETS = {
    "cortex-m4+dsp": ("qemu-m4", ("qemu-m4",)),
    "cortex-m7+dsp": ("qemu-m7", ("qemu-m7",)),
    "cortex-m0plus": ("raspberry-pi-pico", ("qemu-m4",)),
    "rv32imac": ("qemu-rv32-virt", ("qemu-rv32-virt", "qemu-rv32")),
    "rv32imc": ("esp32-c3-devkitm-1", ("qemu-rv32-virt",)),
}
#: per port: the function the reset/start code enters (a naked _start jumping to it on RISC-V),
#: the interrupt handlers that return, the handlers that end the program (not counted)
PORT_ENTRIES = {
    "qemu-mps2": ("mt_reset_handler", ("mt_systick_handler", "mt_uart_rx_handler"), ("fault_handler",)),
    "qemu-riscv-virt": ("mt_c_start", (), ("mt_trap",)),  # mstatus.MIE stays 0: no interrupt is taken
    "qemu-sifive-e": ("mt_c_start", (), ("mt_trap",)),
}
#: Arm exception entry: 8 words pushed + 4 bytes of alignment padding (CCR.STKALIGN). The firmware
#: is integer-only and soft-float, so the FP context (18 more words) is never stacked.
ARM_EXCEPTION_FRAME = 36
#: functions of the generated program the device loop calls
PROGRAM_ENTRIES = ("mt_init", "mt_train_step", "mt_infer", "mt_eval", "mt_params_read", "mt_params_write",
                   "mt_step_count", "mt_arena_paint", "mt_arena_high_water")
#: entries whose code is template (the same in every program, no kernel calls): counted whole
PROGRAM_LEAVES = ("mt_step_count", "mt_arena_paint", "mt_arena_high_water")
#: headers whose functions are the public kernel entry points
KERNEL_HEADERS = ("mt_kernels_fwd.h", "mt_kernels_train.h", "mt_kernels_dsp.h", "mt_kernels_fused.h")


class StackError(RuntimeError):
    """The analysis cannot bound the stack (one line: what and where)."""


# ---------------------------------------------------------------------------------------------
# building objects with GCC's stack and call-graph output
# ---------------------------------------------------------------------------------------------
def _mt():
    """The microtrain modules the tool builds on (firmware flags and sources, the build cache)."""
    from microtrain.compiler.codegen import firmware as fw
    from microtrain.compiler.codegen import native

    return fw, native


@functools.lru_cache(maxsize=None)
def compiler_version(cc: str) -> str:
    out = subprocess.run([cc, "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    return f"{cc} {out}"


@dataclass
class Unit:
    """One compiled source: object, .su, .ci (paths in the cache)."""

    source: str  # firmware-relative path, or "mt_model.c"
    obj: Path

    @property
    def ci(self) -> Path:
        return self.obj.with_suffix(".ci")

    @property
    def su(self) -> Path:
        return self.obj.with_suffix(".su")


def _compile(cc: str, flags: list[str], sources: list[tuple[str, Path, list[str]]], includes: list[Path],
             tag: str) -> list[Unit]:
    """Compile (name, path, extra flags) with ``flags`` + STACK_FLAGS into a cached directory."""
    fw, native = _mt()
    dirs = dict.fromkeys([*includes, *(p.parent for _, p, _ in sources)])  # private headers next to sources too
    inc = sorted(p for d in dirs for p in d.glob("*.h"))
    key = native._digest(compiler_version(cc).encode(), " ".join(flags).encode(),
                         *(f"{n}\0{' '.join(x)}".encode() + p.read_bytes() for n, p, x in sources),
                         *(str(h).encode() + h.read_bytes() for h in inc))
    out = native.cache_dir() / "stack" / f"{tag}-{key}"
    units = [Unit(n, out / (Path(n).stem + ".o")) for n, _, _ in sources]
    if out.is_dir():
        return units

    def build(tmp: Path, dest: Path) -> None:
        dest.mkdir()

        def one(item: tuple[str, Path, list[str]]) -> None:
            n, p, extra = item
            cmd = [cc, *flags, *STACK_FLAGS, *extra, *(f"-I{d}" for d in includes), "-c", str(p),
                   "-o", str(dest / (Path(n).stem + ".o"))]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=dest)
            if r.returncode != 0:
                raise StackError(f"compile failed: {' '.join(cmd)}\n{r.stdout}{r.stderr}")

        with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as ex:
            list(ex.map(one, sources))

    try:
        native._atomic(out, build)
    except OSError:  # a concurrent build finished first
        if not out.is_dir():
            raise
    return units


# ---------------------------------------------------------------------------------------------
# the call graph
# ---------------------------------------------------------------------------------------------
_NODE = re.compile(r'^node: \{ title: "([^"]*)" label: "([^"]*)"(.*)\}\s*$')
_EDGE = re.compile(r'^edge: \{ sourcename: "([^"]*)" targetname: "([^"]*)"')
_FRAME = re.compile(r"\\n(\d+) bytes \(([a-z,]+)\)$")


@dataclass
class Func:
    key: str          # "name" (global) or "unit|path:name" (static)
    name: str         # symbol name (as in the object / ELF)
    frame: int
    origin: str       # unit source, or "library"
    callees: set[str] = field(default_factory=set)


class Graph:
    """Functions and their callees across units; library functions filled in from an ELF."""

    def __init__(self, objdump: str) -> None:
        self.objdump = objdump
        self.funcs: dict[str, Func] = {}
        self.pending: dict[str, set[str]] = {}  # caller key -> external callee names (unresolved)

    def aliases(self, unit: Unit) -> dict[str, str]:
        """Symbol -> the function whose section it shares, for functions that are not their
        section's own (identical code folding makes step12 an alias of step1 in .text.step1, and the
        call graph names the alias)."""
        text = object_dump(self.objdump, [unit.obj])[unit.obj][0]
        by_section: dict[str, list[str]] = {}
        for line in text.splitlines():
            m = re.match(r"^[0-9a-f]+ .{6}F (\S+)\s+[0-9a-f]+ (?:\.hidden )?(\S+)$", line)
            if m:
                by_section.setdefault(m.group(1), []).append(m.group(2))
        out = {}
        for sec, names in by_section.items():
            own = re.sub(r"^\.text\.((startup|unlikely|hot|exit)\.)?", "", sec)
            if own in names:
                out.update({n: own for n in names if n != own})
        return out

    # -- .ci files
    def add_unit(self, unit: Unit) -> None:
        if not unit.ci.is_file():
            raise StackError(f"{unit.source}: no call graph ({unit.ci.name}); the compiler must be GCC >= 10")
        local: dict[str, str] = {}
        edges: list[tuple[str, str]] = []
        for line in unit.ci.read_text().splitlines():
            m = _NODE.match(line)
            if m:
                title, label, _ = m.groups()
                f = _FRAME.search(label)
                if title == "__indirect_call":
                    continue  # reported at its edge
                if f is None:
                    continue  # an external: resolved by name
                size, kind = int(f.group(1)), f.group(2)
                name = title.rsplit(":", 1)[-1]
                if kind != "static":
                    raise StackError(f"{unit.source}: {name} has a {kind} stack frame (VLA or alloca); "
                                     "the stack cannot be bounded")
                key = f"{unit.source}|{title}" if ":" in title else title
                if key in self.funcs:
                    raise StackError(f"{name} is defined twice ({self.funcs[key].origin}, {unit.source})")
                self.funcs[key] = Func(key, name, size, unit.source)
                local[title] = key
                continue
            m = _EDGE.match(line)
            if m:
                edges.append((m.group(1), m.group(2)))
        alias = None
        for src, dst in edges:
            if dst not in local and dst != "__indirect_call":
                alias = self.aliases(unit) if alias is None else alias
                path, _, name = dst.rpartition(":")
                if name in alias:
                    dst = f"{path}:{alias[name]}" if path else alias[name]
                    dst = dst if dst in local else alias[name]
            caller = local.get(src)
            if caller is None:
                raise StackError(f"{unit.source}: call graph edge from unknown function {src!r}")
            if dst == "__indirect_call":
                self._indirect(unit, caller, local)
                continue
            if dst in local:
                self.funcs[caller].callees.add(local[dst])
            else:
                self.pending.setdefault(caller, set()).add(dst)

    def _indirect(self, unit: Unit, caller: str, local: dict[str, str]) -> None:
        """An indirect call may reach any function whose address its own object takes (a local
        dispatch such as ``(c->stoch ? upd_s : upd_m)(...)``; function pointers are not passed
        between firmware objects): those become its callees. None taken: it cannot be bounded."""
        taken = address_taken(self.objdump, unit)
        if not taken:
            raise StackError(f"{unit.source}: {self.funcs[caller].name} makes an indirect call and its object "
                             "takes no function's address; the stack cannot be bounded")
        by_name = {self.funcs[k].name: k for k in local.values()}
        for name in sorted(taken):
            if name in by_name:
                self.funcs[caller].callees.add(by_name[name])
            else:
                self.pending.setdefault(caller, set()).add(name)

    def resolve(self, library: "Library") -> None:
        """Bind external callees to global functions, or to library functions of ``library``."""
        for caller, names in self.pending.items():
            for n in names:
                self.funcs[caller].callees.add(self._global(n, library, self.funcs[caller].name))
        self.pending.clear()

    def _global(self, name: str, library: "Library", who: str) -> str:
        if name in self.funcs:
            return name
        lib = library.function(name, who)
        if name not in self.funcs:
            self.funcs[name] = Func(name, name, lib.frame, "library")
            for c in lib.callees:
                self.funcs[name].callees.add(self._global(c, library, name))
        return name

    # -- depths
    def depth(self, key: str, memo: dict[str, int] | None = None, stack: tuple[str, ...] = ()) -> int:
        memo = {} if memo is None else memo
        if key in memo:
            return memo[key]
        if key in stack:
            cyc = " -> ".join(self.funcs[k].name for k in stack[stack.index(key):] + (key,))
            raise StackError(f"recursion: {cyc}; the stack cannot be bounded")
        f = self.funcs[key]
        d = f.frame + max((self.depth(c, memo, stack + (key,)) for c in f.callees), default=0)
        memo[key] = d
        return d

    def worst_path(self, key: str) -> list[str]:
        memo: dict[str, int] = {}
        path = [key]
        while self.funcs[path[-1]].callees:
            path.append(max(sorted(self.funcs[path[-1]].callees), key=lambda c: self.depth(c, memo)))
        return [self.funcs[k].name for k in path]

    def find(self, name: str) -> str:
        keys = [k for k, f in self.funcs.items() if f.name == name]
        if len(keys) != 1:
            raise StackError(f"{name}: {'not found' if not keys else 'defined more than once'} in the call graph")
        return keys[0]

    def entry_depths(self, root: str, stop: set[str]) -> dict[str, int]:
        """Stack in use when each function reachable from ``root`` is entered (the largest sum of
        its callers' frames), not descending into ``stop``."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(k: str, stack: tuple[str, ...]) -> None:
            if k in stack:
                raise StackError("recursion: " + " -> ".join(self.funcs[x].name for x in stack + (k,)))
            if k in seen:
                return
            if k not in stop:
                for c in sorted(self.funcs[k].callees):
                    visit(c, stack + (k,))
            seen.add(k)
            order.append(k)

        visit(root, ())
        at = {root: 0}
        for k in reversed(order):  # callers before callees
            if k in stop or k not in at:
                continue
            for c in self.funcs[k].callees:
                at[c] = max(at.get(c, 0), at[k] + self.funcs[k].frame)
        return at


# ---------------------------------------------------------------------------------------------
# library functions: frames and callees from the disassembly of a linked image
# ---------------------------------------------------------------------------------------------
@dataclass
class LibFunc:
    frame: int
    callees: tuple[str, ...]


_SYMBOL = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
_INSN = re.compile(r"^\s*[0-9a-f]+:\s+(\S+)\s*(.*)$")
_TARGET = re.compile(r"<([^>+]+)(\+0x[0-9a-f]+)?>")
_ARM_BRANCH = re.compile(r"^(b|bl|blx|cbz|cbnz)(eq|ne|cs|cc|hs|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al)?(\.w|\.n)?$")
_RV_BRANCH = re.compile(r"^(c\.)?(j|jal|jalr|jr|call|tail|beq|bne|blt|bge|bltu|bgeu|beqz|bnez|blez|bgez|bltz|bgtz|"
                        r"bgt|ble|bgtu|bleu)$")


def _regs(text: str) -> int:
    n = 0
    for part in text.strip("{} ").split(","):
        part = part.strip()
        m = re.fullmatch(r"([a-z]+)(\d+)-[a-z]+(\d+)", part)
        n += int(m.group(3)) - int(m.group(2)) + 1 if m else (1 if part else 0)
    return n


def arm_sp_decrement(mnem: str, ops: str) -> int | None:
    """Bytes an Arm/Thumb instruction pushes (None: it does not lower sp). Raises on an sp write
    the analysis cannot bound."""
    base = mnem.split(".")[0]
    ops = ops.split("@")[0].strip()
    if base == "push":
        return 4 * _regs(ops)
    if base == "vpush":
        return (8 if "d" in ops else 4) * _regs(ops.replace("d", "r").replace("s", "r"))
    if base in ("stmdb", "stmfd") and ops.startswith("sp!"):
        return 4 * _regs(ops.split(",", 1)[1])
    if base in ("vstmdb",) and ops.startswith("sp!"):
        return (8 if "d" in ops else 4) * _regs(ops.split(",", 1)[1].replace("d", "r").replace("s", "r"))
    m = re.search(r"\[sp, #(-\d+)\]!", ops)
    if m and base.startswith("str"):
        return -int(m.group(1))
    if re.match(r"sp\b", ops):  # sp is the destination
        if base in ("pop", "vpop") or (base in ("ldmia", "ldmfd", "ldm", "vldmia") and ops.startswith("sp!")):
            return None
        m = re.fullmatch(r"sp, (?:sp, )?#(-?\d+)", ops)
        if m and base in ("add", "addw", "sub", "subw"):
            v = int(m.group(1))
            v = -v if base.startswith("add") else v
            return v if v > 0 else None
        raise StackError(f"unreadable stack-pointer write: {mnem} {ops}")
    return None


def rv_sp_decrement(mnem: str, ops: str) -> int | None:
    ops = ops.split("#")[0].strip()
    if not re.match(r"sp\b", ops):
        return None
    m = re.fullmatch(r"sp,\s*(?:sp,\s*)?(-?\d+)", ops)
    if m and mnem in ("addi", "add", "c.addi", "c.addi16sp"):
        v = int(m.group(1))
        return -v if v < 0 else None
    raise StackError(f"unreadable stack-pointer write: {mnem} {ops}")


class Library:
    """Frames and callees of the functions of a linked image, read from its disassembly. A symbol
    is found by its address (``nm``), so aliases (``__aeabi_idiv`` = ``__divsi3``) resolve; a block
    that does not end in a jump or return falls through into the next, which counts as a callee."""

    def __init__(self, objdump: str, elf: Path, arch: str) -> None:
        self.arch = arch
        text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(elf)], capture_output=True,
                              text=True, check=True).stdout
        self.blocks: list[tuple[int, str, list[tuple[str, str]]]] = []
        for line in text.splitlines():
            m = re.match(r"^([0-9a-f]+) <([^>]+)>:$", line.strip())
            if m:
                self.blocks.append((int(m.group(1), 16), m.group(2), []))
                continue
            m = _INSN.match(line)
            if m and self.blocks:
                self.blocks[-1][2].append((m.group(1), m.group(2)))
        self.at = {addr: i for i, (addr, _, _) in enumerate(self.blocks)}
        syms = subprocess.run([objdump, "-t", str(elf)], capture_output=True, text=True, check=True).stdout
        self.addr: dict[str, int] = {}  # function symbols (type F) -> address
        for line in syms.splitlines():
            m = re.match(r"^([0-9a-f]+) .{6}F \S+\s+[0-9a-f]+ (?:\.hidden )?(\S+)$", line)
            if m:
                self.addr[m.group(2)] = int(m.group(1), 16) & ~1
        self.functions = set(self.addr.values())
        self.cache: dict[str, LibFunc] = {}

    def _terminal(self, mnem: str, ops: str) -> bool:
        if self.arch == "arm":
            return (mnem in ("b", "b.n", "b.w", "bx") or (mnem.startswith("pop") and "pc" in ops)
                    or (mnem.startswith("ldm") and "pc" in ops) or (mnem.startswith("ldr") and ops.startswith("pc")))
        return mnem in ("ret", "j", "c.j", "jr", "c.jr", "tail", "mret")

    def function(self, name: str, who: str) -> LibFunc:
        if name in self.cache:
            return self.cache[name]
        i = self.at[self.addr[name]] if name in self.addr and self.addr[name] in self.at else None
        if i is None:
            raise StackError(f"{who} calls {name}, which is neither in the call graph nor in the linked image")
        _, label, code = self.blocks[i]
        frame, callees = 0, set()
        branch = _ARM_BRANCH if self.arch == "arm" else _RV_BRANCH
        for mnem, ops in code:
            try:
                d = (arm_sp_decrement if self.arch == "arm" else rv_sp_decrement)(mnem, ops)
            except StackError as e:
                raise StackError(f"library function {name}: {e}") from None
            frame += d or 0
            if self.arch == "arm" and mnem.startswith("blx") and _TARGET.search(ops) is None:
                raise StackError(f"library function {name}: indirect call {mnem} {ops}")
            if self.arch == "riscv" and mnem in ("jalr", "c.jalr") and _TARGET.search(ops) is None:
                raise StackError(f"library function {name}: indirect call {mnem} {ops}")
            if branch.match(mnem):
                t = _TARGET.search(ops)
                if t is not None and t.group(1) != label:
                    callees.add(t.group(1))
        body = [c for c in code if not (c[0].startswith(".") or c[0] in ("nop", "c.nop", "udf")
                                           or (c[0] == "movs" and c[1] == "r0, r0"))]
        if body and not self._terminal(*body[-1]) and i + 1 < len(self.blocks):
            nxt = self.blocks[i + 1]
            if nxt[0] not in self.functions:
                raise StackError(f"library function {name}: runs past its end into {nxt[1]}")
            callees.add(nxt[1])  # falls through into the next function
        self.cache[name] = LibFunc(frame, tuple(sorted(callees)))
        return self.cache[name]


# ---------------------------------------------------------------------------------------------
# completeness: every branch relocation of an object is an edge of the call graph
# ---------------------------------------------------------------------------------------------
_RELOC = re.compile(r"^\s*[0-9a-f]+: (R_\w+)\s+(\S+)")
_CALL_RELOCS = {"R_ARM_THM_CALL", "R_ARM_THM_JUMP24", "R_ARM_THM_JUMP19", "R_ARM_THM_JUMP11", "R_ARM_THM_JUMP8",
                "R_ARM_CALL", "R_ARM_JUMP24", "R_RISCV_CALL", "R_RISCV_CALL_PLT", "R_RISCV_JAL",
                "R_RISCV_RVC_JUMP", "R_RISCV_BRANCH", "R_RISCV_RVC_BRANCH"}


_RELOCS: dict[tuple[str, Path], str] = {}
_BRANCH_RELOCS = ("CALL", "JUMP", "BRANCH", "JAL", "RELAX", "ALIGN")


def address_taken(objdump: str, unit: Unit) -> set[str]:
    """Functions of ``unit``'s object whose address the object takes: a relocation against them
    (code or data) that is not a branch."""
    key = (objdump, unit.obj)
    if key not in _RELOCS:
        _RELOCS[key] = subprocess.run([objdump, "-r", str(unit.obj)], capture_output=True, text=True,
                                      check=True).stdout
    sym = object_dump(objdump, [unit.obj])[unit.obj][0]
    funcs = {}
    for line in sym.splitlines():
        m = re.match(r"^[0-9a-f]+ .{6}F (\S+)\s+[0-9a-f]+ (?:\.hidden )?(\S+)$", line)
        if m:
            funcs.setdefault(m.group(1), m.group(2))  # a section's first function
            funcs[m.group(2)] = m.group(2)
    out = set()
    for line in _RELOCS[key].splitlines():
        m = re.match(r"^[0-9a-f]+ (R_\w+)\s+(\S+?)(?:[+-]0x[0-9a-f]+)?$", line)
        if not m or any(b in m.group(1) for b in _BRANCH_RELOCS):
            continue
        if m.group(2) in funcs:
            out.add(funcs[m.group(2)])
    return out


_DUMPS: dict[tuple[str, Path], tuple[str, str]] = {}


def object_dump(objdump: str, objs: list[Path]) -> dict[Path, tuple[str, str]]:
    """(symbol table, disassembly with relocations) of each object (one objdump run for the ones
    not seen yet in this process)."""
    todo = [o for o in objs if (objdump, o) not in _DUMPS]
    for i in range(0, len(todo), 64):
        chunk = todo[i:i + 64]
        text = subprocess.run([objdump, "-t", "-dr", *map(str, chunk)], capture_output=True, text=True,
                              check=True).stdout
        parts = re.split(r"^(\S+\.o):\s+file format .*$", text, flags=re.M)
        by_name = {parts[j]: parts[j + 1] for j in range(1, len(parts) - 1, 2)}
        for o in chunk:
            body = by_name.get(str(o))
            if body is None:
                raise StackError(f"objdump printed nothing for {o}")
            sym, _, dis = body.partition("Disassembly of section")
            _DUMPS[(objdump, o)] = (sym, "Disassembly of section" + dis)
    return {o: _DUMPS[(objdump, o)] for o in objs}


def check_relocations(objdump: str, units: list[Unit], graph: Graph) -> None:
    """Add every branch relocation out of a function that its call graph does not list (GCC lists
    library calls, but not the helpers some back ends call late, e.g. __gnu_thumb1_case_uqi)."""
    dumps = object_dump(objdump, [u.obj for u in units])
    for u in units:
        text = dumps[u.obj][1]
        cur = None
        alias = graph.aliases(u)
        for line in text.splitlines():
            m = _SYMBOL.match(line.strip())
            if m:
                if not m.group(1).startswith(".L"):  # RISC-V objects keep their local labels
                    cur = alias.get(m.group(1), m.group(1))
                continue
            m = _RELOC.match(line)
            if not m or cur is None or m.group(1) not in _CALL_RELOCS:
                continue
            tgt = re.sub(r"[+-]0x[0-9a-f]+$", "", m.group(2))
            if tgt.startswith(".L") or tgt == cur:
                continue
            tgt = tgt[len(".text."):] if tgt.startswith(".text.") else tgt
            tgt = alias.get(tgt, tgt)
            if tgt == cur:
                continue
            keys = [k for k, f in graph.funcs.items() if f.name == cur and f.origin == u.source]
            if len(keys) != 1:
                raise StackError(f"{u.source}: function {cur} of the object is not in its call graph")
            names = {graph.funcs[c].name for c in graph.funcs[keys[0]].callees}
            names |= graph.pending.get(keys[0], set())
            if tgt not in names:  # a helper call emitted after the call graph (Thumb-1 switch tables)
                graph.pending.setdefault(keys[0], set()).add(tgt)


# ---------------------------------------------------------------------------------------------
# one target: compile, link, analyze
# ---------------------------------------------------------------------------------------------
def _fw_include_dirs(port) -> list[Path]:
    fw, native = _mt()
    d = native.firmware_dir()
    return [d / "include", *(d / x for x in port.include_dirs)]


def kernel_names(dsp: bool) -> list[str]:
    """Functions declared in the public kernel headers (the DSP ones only with ``dsp``)."""
    fw, native = _mt()
    inc = native.firmware_dir() / "include"
    out: set[str] = set()
    for h in KERNEL_HEADERS:
        if h == "mt_kernels_dsp.h" and not dsp:
            continue
        text = re.sub(r"/\*.*?\*/", "", (inc / h).read_text(), flags=re.S)
        text = re.sub(r"static inline[^{;]*\{", "{", text)  # inline helpers are not entry points
        for m in re.finditer(r"^[a-z_][a-z0-9_ ]*?\**\s*\b(mt_[a-z0-9_]+)\s*\(", text, re.M):
            out.add(m.group(1))
    return sorted(out)


@dataclass
class Build:
    """The compiled firmware of one (target, opt, port): kernels + device + port, the generated
    programs, and the reference image the library frames are read from."""

    target: str
    opt: str
    port_board: str
    cc: str
    objdump: str
    arch: str
    flags: list[str]
    base: list[Unit]                   # kernels + device loop + port
    programs: dict[str, list[Unit]]    # program dir -> its unit
    lib: Library

    def graph(self, program_dir) -> Graph:
        g = Graph(self.objdump)
        units = self.base + self.programs[str(program_dir)]
        for u in units:
            g.add_unit(u)
        check_relocations(self.objdump, units, g)
        g.resolve(self.lib)
        return g


def _board_port(target: str, port_board: str):
    fw, _ = _mt()
    from microtrain.host.boards import get_board

    board = get_board(TARGETS[target][0])
    return board, fw.port_of(port_board)


def _library_calls(units: list[Unit]) -> set[str]:
    """Names a unit calls that no firmware source defines (compiler-emitted library calls)."""
    out = set()
    for u in units:
        for line in u.ci.read_text().splitlines():
            m = re.search(r'title: "([^":]+)" label: "[^"]*<built-in>"', line)
            if m:
                out.add(m.group(1))
    return out


def build(target: str, opt: str, port_board: str, program_dirs: list[Path], board=None) -> Build:
    """Compile the kernels, the device loop and the port of ``port_board`` for ``target`` (or for
    ``board``'s core) at ``opt``, and the generated programs in ``program_dirs``; link the first
    program with every object kept and every library function any unit calls forced in: the
    reference image the library frames are read from."""
    fw, native = _mt()
    tb, port = _board_port(target, port_board)
    board = tb if board is None else board
    cc = fw.compiler(board)
    if shutil.which(cc) is None:
        raise FileNotFoundError(cc)
    flags = fw.compile_flags(board, opt=opt, port=port)
    dsp = "-DMT_USE_DSP" in flags
    fwd = native.firmware_dir()
    srcs = [(str(p.relative_to(fwd)), p, []) for p in fw.kernel_sources(dsp)]
    incs = _fw_include_dirs(port)
    tag = f"{target}-{port.name}{opt}"
    base = _compile(cc, flags, srcs, incs, f"{target}{opt}")
    progs = {str(d): compile_program(cc, flags, d, port_board, tag) for d in program_dirs}
    objdump = cc[:-3] + "objdump"
    first = progs[str(program_dirs[0])]
    libcalls = _library_calls(base + [u for us in progs.values() for u in us])
    # the image is only disassembled: a program whose arena outgrows the port's RAM still links
    lflags = [f for f in fw.link_flags(board, port=port) if f != "-Wl,--gc-sections"] + ["-Wl,--noinhibit-exec"]
    if board.arch == "riscv":  # -nostdlib images: the library routines -Os calls (memcpy) from picolibc
        lflags += ["--specs=picolibc.specs", "-lc", "-lgcc"]
    und = [f"-Wl,--undefined={n}" for n in sorted(libcalls)]
    key = native._digest(first[0].obj.read_bytes(), " ".join(und).encode())
    elf = base[0].obj.parent / f"reference-{key}.elf"
    if not elf.exists():
        tmp = elf.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cc, *flags, *(str(u.obj) for u in base + first), *lflags, *und, "-o", str(tmp)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 and not tmp.exists():
            raise StackError(f"link failed: {' '.join(cmd[:6])} ...\n{r.stdout}{r.stderr}")
        os.replace(tmp, elf)
    return Build(target, opt, port_board, cc, objdump, board.arch, flags, base, progs,
                 Library(objdump, elf, board.arch))


def compile_program(cc: str, flags: list[str], program_dir: Path, port_board: str, tag: str) -> list[Unit]:
    """The generated program (``-include mt_port.h``, as build_image) with the device loop, main()
    and the port of ``port_board`` (they include its mt_model.h)."""
    fw, native = _mt()
    srcs = [("mt_model.c", Path(program_dir) / "mt_model.c", ["-include", "mt_port.h"])]
    srcs += [(s, native.firmware_dir() / s, []) for s in fw.port_sources(port_board)]
    incs = _fw_include_dirs(fw.port_of(port_board))
    return _compile(cc, flags, srcs, [Path(program_dir), *incs], f"prog-{tag}")


def program_keys(g: Graph) -> set[str]:
    return {k for k, f in g.funcs.items() if f.origin == "mt_model.c"}


def own_depth(g: Graph, key: str, prog: set[str], memo: dict[str, int]) -> int:
    """Depth of ``key`` counting only the generated program's frames."""
    if key in memo:
        return memo[key]
    f = g.funcs[key]
    d = f.frame + max((own_depth(g, c, prog, memo) for c in f.callees if c in prog), default=0)
    memo[key] = d
    return d


def port_numbers(b: Build, g: Graph) -> dict:
    """calls / base / device / interrupt bytes of the port of ``b``. The program's heavy entries
    (training, inference, checkpoints, init) are opaque: ``base_bytes`` is the most stack in use
    where the device loop calls one. Its template leaves (mt_step_count, mt_arena_*: the same
    code in every program) count whole, in ``device_bytes``, with every path that does not enter
    the program."""
    entry, irqs, fatal = PORT_ENTRIES[_board_port(b.target, b.port_board)[1].name]
    prog = program_keys(g)
    entries = {g.find(n): n for n in PROGRAM_ENTRIES}
    at = g.entry_depths(g.find(entry), stop=prog)
    calls = {entries[k]: at[k] for k in entries if k in at}
    missing = sorted(set(PROGRAM_ENTRIES) - set(calls))
    if missing:
        raise StackError(f"{b.port_board}: the device loop does not call {', '.join(missing)}")
    memo: dict[str, int] = {}
    # the deepest point outside the program: every non-program function reached (callers' frames +
    # its own; its non-program callees are reached too), and the template leaves, whole
    device = max(d + g.funcs[k].frame for k, d in at.items() if k not in prog)
    device = max([device] + [at[g.find(e)] + g.depth(g.find(e), memo) for e in PROGRAM_LEAVES])
    irq = sum((ARM_EXCEPTION_FRAME if b.arch == "arm" else 0) + g.depth(g.find(h), memo) for h in irqs)
    base = max(v for e, v in calls.items() if e not in PROGRAM_LEAVES)
    return {"entry": entry, "calls": dict(sorted(calls.items())), "base_bytes": base,
            "device_bytes": device, "interrupts": list(irqs), "interrupt_bytes": irq, "fatal": list(fatal)}


def image_depth(b: Build, g: Graph) -> dict:
    """Worst case of a whole image: entry -> deepest path, plus interrupts."""
    entry, irqs, _ = PORT_ENTRIES[_board_port(b.target, b.port_board)[1].name]
    memo: dict[str, int] = {}
    d = g.depth(g.find(entry), memo)
    irq = sum((ARM_EXCEPTION_FRAME if b.arch == "arm" else 0) + g.depth(g.find(h), memo) for h in irqs)
    return {"main_bytes": d, "interrupt_bytes": irq, "total_bytes": d + irq, "path": g.worst_path(g.find(entry))}


def image_stack(gen, board_name: str, opt: str = "-O2", dsp: bool | None = None) -> dict:
    """Static worst case of ``gen``'s image on the emulated board ``board_name`` (the sources
    build_image compiles, with its flags): the deepest path from reset plus the interrupts, and
    that path (function names)."""
    fw, native = _mt()
    from microtrain.compiler.memory.stack import stack_target
    from microtrain.host.boards import get_board

    board = get_board(board_name)
    target = stack_target(board)
    if dsp is not None and dsp != board.dsp:
        raise StackError("image_stack: the table's kernel variants follow the board's DSP feature")
    out = native.cache_dir() / "stack" / "programs"
    out.mkdir(parents=True, exist_ok=True)
    pdir = write_program(gen, out)
    b = build(target, opt, board_name, [pdir], board=board)
    return image_depth(b, b.graph(pdir))


# ---------------------------------------------------------------------------------------------
# the calibration corpus: generated programs of the example model and of random architectures
# ---------------------------------------------------------------------------------------------
#: (name, Schedule kwargs, generate kwargs): every schedule kind the C engine emits, the loss
#: inputs, remedies, momentum, both lr schedules, forward gradient from m = 1 to the engine's 16
CORPUS = (
    ("sparse", dict(kind="sparse", bias_last=2, update={0: 0.5, -1: 1.0}), dict(remedy="stochastic")),
    ("hybrid-m2", dict(kind="hybrid", fg=dict(m=2, batch=2)),
     dict(remedy="master", loss_input="acc", momentum=0.5, fg_lr=0.02)),
    ("fg-m3", dict(kind="fg"), dict()),
    ("fg-m16", dict(kind="fg", fg=dict(m=16, batch=4)), dict(loss_input="acc")),
    ("full", dict(kind="full"), dict(remedy="master", momentum=0.9, lr_schedule="constant")),
    ("bias", dict(kind="bias"), dict(loss_input="acc")),
    ("last-2", dict(kind="last-k", last=2), dict(remedy="stochastic", loss_input="acc", momentum=0.5)),
    ("hybrid-m1", dict(kind="hybrid", fg=dict(m=1, batch=1)), dict(lr_schedule="constant")),
    ("fg-m1", dict(kind="fg", fg=dict(m=1, batch=2)), dict(remedy="stochastic", momentum=0.9, lr_schedule="constant")),
    ("hybrid-m4-bp2", dict(kind="hybrid", bp_last=2, fg=dict(m=4, batch=3)),
     dict(remedy="stochastic", momentum=0.5)),
)


def example_graph():
    _mt()
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.host.data import load_data

    fmodel = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
    return quantize_graph(fmodel, load_data("digits-clean", fmodel).x_train[:64])


def schedule_of(kw: dict):
    from microtrain.compiler.schedule import FGOptions, Schedule

    kw = dict(kw)
    kind = kw.pop("kind")
    if "fg" in kw:
        kw["fg"] = FGOptions(**kw["fg"])
    return Schedule(kind, **kw)


def write_program(gen, out: Path) -> Path:
    """The generated files in a content-addressed directory under ``out``."""
    fw, native = _mt()
    d = out / f"{gen.hash}-{native._digest(gen.files['mt_model.c'].encode())}"
    if not d.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="prog-", dir=out))
        for n, t in gen.files.items():
            (tmp / n).write_text(t)
        try:
            os.replace(tmp, d)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def program_meta(gen) -> dict:
    """What the planner's program model reads: classes, forward-gradient perturbations."""
    from microtrain.compiler.memory.stack import program_shape

    sh = program_shape(gen.memory.model)
    return {"kind": sh.kind, "classes": sh.classes, "fg_m": sh.fg_m}


#: random architectures (tests/models/random_arch.py) whose ops the example model lacks: residual
#: and fork adds, depthwise (multiplier 1 and 2, in place, stride 2, valid), pointwise, average
#: and max pooling, global average (mean), reshape, hidden fc, ReLU6; each under a backprop, a
#: forward-gradient and a hybrid schedule (every layer trained; hybrid: backprop for the last)
ARCH_SEEDS = (3, 11, 13, 36)
ARCH_SCHEDULES = (
    ("full", dict(kind="full"), dict(remedy="stochastic", loss_input="int8", momentum=0.9)),
    ("fg", dict(kind="fg", bias_last="all", update={i: 1.0 for i in range(-8, 0)}, fg=dict(m=2, batch=2)),
     dict(remedy="master", loss_input="acc")),
    ("hybrid", dict(kind="hybrid", bias_last="all", fg=dict(m=3, batch=1)),
     dict(remedy="master", loss_input="int8", momentum=0.5)),
)


def arch_graph(seed: int):
    """The int8 graph of random architecture ``seed`` (as the tests build it)."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from models.random_arch import quantized, random_spec

    return quantized(random_spec(seed))[0]


def corpus(graph=None) -> list[tuple[str, Path, dict]]:
    """(name, program directory, program_meta) of every corpus program."""
    fw, native = _mt()
    from microtrain.compiler.codegen import generate
    from microtrain.compiler.schedule import resolve

    graph = example_graph() if graph is None else graph
    out = native.cache_dir() / "stack" / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    progs = []
    for name, skw, gkw in CORPUS:
        gen = generate(graph, schedule_of(skw), **gkw)
        progs.append((name, write_program(gen, out), program_meta(gen)))
    for seed in ARCH_SEEDS:
        g = arch_graph(seed)
        n = sum(1 for x in g.nodes if x.op in ("conv2d", "depthwise_conv2d", "fully_connected"))
        for name, skw, gkw in ARCH_SCHEDULES:
            skw = dict(skw)
            if "update" in skw:
                skw["update"] = {i: r for i, r in skw["update"].items() if -i <= n}
            sched = schedule_of(skw)
            resolve(sched, g)
            gen = generate(g, sched, **gkw)
            progs.append((f"arch{seed}-{name}", write_program(gen, out), program_meta(gen)))
    return progs


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
def stack_align(arch: str) -> int:
    """Stack alignment of the ABI: AAPCS 8 bytes at public interfaces, RISC-V psABI 16."""
    return 16 if arch == "riscv" else 8


#: fg_step keeps per perturbation: its seed (u32), sign (i32) and stream cursor (mt_rademacher, 8 B)
PER_FG_M = 16


def round_up(n: int, a: int) -> int:
    return -(-n // a) * a


def compute_target(target: str, progs: list[tuple[str, Path, dict]]) -> dict:
    fw, native = _mt()
    from microtrain.host.boards import get_board

    board = get_board(TARGETS[target][0])
    align = stack_align(board.arch)
    knames = kernel_names(board.dsp)
    kernels: dict[str, int] = {}
    runtime: dict[str, int] = {}
    ports: dict[str, dict] = {}
    own_rows: dict[str, dict] = {}
    versions: set[str] = set()
    flags: list[str] = []
    for port_board in TARGETS[target][1]:
        pname = fw.port_of(port_board).name
        for opt in OPTS:
            b = build(target, opt, port_board, [d for _, d, _ in progs])
            versions.add(compiler_version(b.cc))
            flags = flags or b.flags
            for i, (name, pdir, meta) in enumerate(progs):
                g = b.graph(pdir)
                memo: dict[str, int] = {}
                if i == 0:  # kernels and library functions: the same in every image
                    missing = [k for k in knames if k not in g.funcs]
                    if missing and port_board == TARGETS[target][1][0] and opt == OPTS[0]:
                        # no image can call them (it would not link): nothing to bound
                        print(f"warning: {target}: declared in the kernel headers but defined nowhere: "
                              f"{', '.join(missing)}", file=sys.stderr)
                    for k in knames:
                        if k in g.funcs:
                            kernels[k] = max(kernels.get(k, 0), g.depth(k, memo))
                    for k, f in g.funcs.items():
                        if f.origin == "library":
                            runtime[f.name] = max(runtime.get(f.name, 0), g.depth(k, memo))
                # the device loop is compiled with each program (it includes mt_model.h)
                pn = port_numbers(b, g)
                cur = ports.setdefault(pname, {"board": port_board, "entry": pn["entry"]})
                for key in ("base_bytes", "device_bytes", "interrupt_bytes"):
                    cur[key] = max(cur.get(key, 0), pn[key])
                cur["calls"] = {e: max(cur.get("calls", {}).get(e, 0), v) for e, v in pn["calls"].items()}
                cur["interrupts"], cur["fatal"] = pn["interrupts"], pn["fatal"]
                prog = program_keys(g)
                omemo: dict[str, int] = {}
                own = {e: own_depth(g, g.find(e), prog, omemo) for e in PROGRAM_ENTRIES if e not in PROGRAM_LEAVES}
                row = own_rows.setdefault(name, {**meta, "train": 0, "eval": 0, "other": 0})
                row["train"] = max(row["train"], own["mt_train_step"])
                row["eval"] = max(row["eval"], own["mt_eval"])
                row["other"] = max(row["other"], *(v for e, v in own.items() if e not in ("mt_train_step", "mt_eval")))
                for k in prog:  # what the generated code calls besides kernels
                    for c in g.funcs[k].callees:
                        if c not in prog and g.funcs[c].name not in knames:
                            runtime[g.funcs[c].name] = max(runtime.get(g.funcs[c].name, 0), g.depth(c, memo))
    # the generated code's own depth, per entry: mt_train_step (per kind, fg_step's arrays taken out),
    # mt_eval (its logits taken out), the others (inference, init, checkpoints)
    train = {kind: max(r["train"] - PER_FG_M * r["fg_m"] for r in own_rows.values() if r["kind"] == kind)
             for kind in ("bp", "fg", "hybrid")}
    evalb = max(r["eval"] - round_up(r["classes"], align) for r in own_rows.values())
    other = max(r["other"] for r in own_rows.values())
    return {
        "board": board.name, "compiler": sorted(versions), "flags": flags, "opts": list(OPTS), "align": align,
        "kernels": dict(sorted(kernels.items())),
        "runtime": dict(sorted(runtime.items(), key=lambda kv: (-kv[1], kv[0]))),
        "ports": dict(sorted(ports.items())),
        "program": {"train_bytes": train, "per_fg_m_bytes": PER_FG_M, "eval_bytes": evalb, "per_class_bytes": 1,
                    "other_bytes": other, "corpus": dict(sorted(own_rows.items()))},
    }


def dsp_dispatch() -> dict[str, str]:
    """MT_KERNEL's selection on DSP builds (firmware/include/mt_dispatch.h): kernel -> its variant."""
    fw, native = _mt()
    text = (native.firmware_dir() / "include" / "mt_dispatch.h").read_text()
    return dict(sorted(re.findall(r"^#define MT_DSP_ALT_(mt_\w+) ~, (mt_\w+)\s*$", text, re.M)))


def compute_table(targets: Iterable[str] | None = None) -> dict:
    progs = corpus()
    out = {"format": FORMAT, "generated_by": "python tools/stack_usage.py --write",
           "method": "GCC -fstack-usage -fcallgraph-info=su (tools/stack_usage.py docstring)",
           "dsp_dispatch": dsp_dispatch(),
           "corpus": {"example": [name for name, _, _ in CORPUS], "random_arch_seeds": list(ARCH_SEEDS),
                      "random_arch_schedules": [name for name, _, _ in ARCH_SCHEDULES]}, "targets": {}}
    for t in (targets or TARGETS):
        out["targets"][t] = compute_target(t, progs)
    return out


def flags_for_json(table: dict) -> dict:
    """The table with the flags made independent of this checkout (no absolute paths)."""
    fw, native = _mt()
    root = str(native.firmware_dir())
    for t in table["targets"].values():
        t["flags"] = [f.replace(root, "<firmware>") for f in t["flags"]]
    return table


def dumps(table: dict) -> str:
    return json.dumps(flags_for_json(table), indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write {TABLE.relative_to(ROOT)}")
    ap.add_argument("--check", action="store_true", help="exit 1 when the stored table is stale")
    ap.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these targets (printing)")
    a = ap.parse_args(argv)
    try:
        table = compute_table(None if (a.write or a.check) else a.target)
    except (StackError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = dumps(table)
    if a.write:
        TABLE.write_text(text)
        print(f"wrote {TABLE.relative_to(ROOT)}")
        return 0
    stored = TABLE.read_text() if TABLE.exists() else ""
    if a.check:
        if stored != text:
            print(f"{TABLE.relative_to(ROOT)} is stale: run python tools/stack_usage.py --write", file=sys.stderr)
            return 1
        print(f"{TABLE.relative_to(ROOT)} is fresh")
        return 0
    for name, t in table["targets"].items():
        k = max(t["kernels"].items(), key=lambda kv: kv[1])
        pr = t["program"]
        own = ", ".join(f"{a} {b}" for a, b in pr["train_bytes"].items())
        print(f"{name}: program train ({own}) eval {pr['eval_bytes']} other {pr['other_bytes']} B, "
              f"deepest kernel {k[0]} {k[1]} B, "
              + ", ".join(f"{p}: base {v['base_bytes']} device {v['device_bytes']} irq {v['interrupt_bytes']}"
                          for p, v in t["ports"].items()))
    print("stored table:", "fresh" if stored == text else "stale")
    return 0


if __name__ == "__main__":
    sys.exit(main())
