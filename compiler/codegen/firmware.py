"""Runnable device images: the generated program + the kernels + the protocol (``mt_frame.c``) + the
device loop (``src/device``) + a board port (``firmware/port``), compiled into an ELF for an emulated
board (QEMU) or into an executable for this host (board ``"host"``, which serves a pseudo-terminal).

    build_image(gen, board, out_dir, *, dsp=None, opt="-O2", defines=(), extra_flags=(), stack_bytes=None) -> Path
    stack_bytes_of(gen, board, *, dsp=None) -> int | None    the planned main stack of the image
    qemu_command(board, elf, tcp_port, *, icount=True, wait=False) -> list[str]
    host_command(exe, *, storage=None, exit_on_hup=True, stdio=False) -> list[str]
    EMULATED, PORTS, port_of(board), project_device_files(board), project_layout(board)

Ports (``PORTS``; the board names of ``EMULATED`` plus ``"host"``):

=================  =====================  ==========================================================
board              port                   UART / storage / cycles
=================  =====================  ==========================================================
qemu-m4, qemu-m7   ``qemu-mps2``          CMSDK APB UART0; semihosting file; SysTick (25 MHz)
qemu-rv32-virt     ``qemu-riscv-virt``    NS16550A; semihosting file; ``mcycle``
qemu-rv32          ``qemu-sifive-e``      SiFive UART0; semihosting file; ``mcycle``; 256-byte frames
host               ``host``               pty / stdio / fd; ``--storage`` file; CLOCK_MONOTONIC ns
=================  =====================  ==========================================================

Every source is compiled with the flags of :func:`compile_flags` (``-std=c99 -Wall -Wextra -Werror``,
the board's target flags, ``-DMT_USE_DSP`` on DSP cores, the port's defines); ``mt_model.c`` also
gets ``-include mt_port.h`` so its ``MT_CYCLES()`` reads the port's counter. Bare-metal images link
with the port's linker script and ``-Wl,--gc-sections``; their main stack ([_sstack, _estack) of the
linker script, HELLO_INFO.stack_size) is the planner's reservation for the program on the board
(``-Wl,--defsym=__stack_size=N``, N = :func:`stack_bytes_of`: compiler/memory/stack.py), whose
device-measured high-water mark (METRICS.stack_hwm) stays below it. The compiled folder of ``microtrain
compile`` builds the same image with ``make firmware`` (:mod:`.project`; :func:`project_layout`
lists its sources for other build systems).

Builds are cached by content under ``$MICROTRAIN_CACHE/firmware`` (default
``~/.cache/microtrain/native/firmware``): the kernels once per compiler and flags (a static
archive), each image once per program, port sources and flags; ``build_image`` copies the cached
image to ``out_dir``. A missing compiler is a one-line :class:`~.native.BuildError`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .emit import Generated
from .native import HOST_CC, BuildError, _atomic, _digest, cache_dir, firmware_dir
from .project import COMMON_CFLAGS, CROSS, runtime_sources, toolchain

#: name of the "board" that builds a host executable (a pty device) instead of a firmware image
HOST = "host"
#: default optimization level of an image (the speed the device measurements assume)
OPT = "-O2"
#: Debian packages of the cross compilers, for the error message
_PACKAGES = {"arm-none-eabi-gcc": "gcc-arm-none-eabi",
             "riscv64-unknown-elf-gcc": "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf"}


@dataclass(frozen=True)
class Port:
    """A board port: firmware-relative sources, headers, linker script, extra defines."""

    name: str                       # directory under firmware/port (and port/<name> in a compiled folder)
    sources: tuple[str, ...]        # firmware-relative C files (startup, UART, storage, stack)
    ldscript: str | None = None     # firmware-relative linker script (None: host executable)
    defines: tuple[str, ...] = ()   # NAME or NAME=VALUE
    headers: tuple[str, ...] = ()   # firmware-relative headers the sources include

    @property
    def bare_metal(self) -> bool:
        return self.ldscript is not None

    @property
    def include_dirs(self) -> tuple[str, ...]:
        """firmware-relative dirs of the headers (a compiled folder has them all in port/<name>)."""
        return tuple(dict.fromkeys(h.rsplit("/", 1)[0] for h in self.headers))


_SEMIHOST = ("port/common/mt_semihost.c", "port/common/mt_stack.c")
_SEMIHOST_H = ("port/common/mt_semihost.h",)
_MPS2 = Port("qemu-mps2", ("port/qemu-mps2/startup.c", "port/qemu-mps2/mt_port_mps2.c") + _SEMIHOST,
             "port/qemu-mps2/link.ld", headers=_SEMIHOST_H)
#: board name -> port
PORTS: dict[str, Port] = {
    "qemu-m4": _MPS2,
    "qemu-m7": _MPS2,
    "qemu-rv32-virt": Port("qemu-riscv-virt", ("port/qemu-riscv-virt/startup.c", "port/qemu-riscv-virt/mt_port_virt.c")
                           + _SEMIHOST, "port/qemu-riscv-virt/link.ld", headers=_SEMIHOST_H),
    "qemu-rv32": Port("qemu-sifive-e", ("port/qemu-sifive-e/startup.c", "port/qemu-sifive-e/mt_port_sifive_e.c")
                      + _SEMIHOST, "port/qemu-sifive-e/link.ld", defines=("MT_DEVICE_MAX_PAYLOAD=256",),
                      headers=_SEMIHOST_H),
    HOST: Port("host", ("port/host/mt_port_host.c",)),
}
#: emulated boards with a port (QEMU)
EMULATED = frozenset(k for k, p in PORTS.items() if p.bare_metal)
#: the protocol engine every image links (firmware-relative)
DEVICE_SOURCES = ("src/proto/mt_frame.c", "src/device/mt_device.c")
#: main() of the bare-metal ports
MAIN_SOURCE = "src/device/mt_main.c"


# ---------------------------------------------------------------------------------------------
# boards, ports, flags
# ---------------------------------------------------------------------------------------------
def _board(board):
    """(name, Board or None) of a Board, a board name or "host"."""
    if isinstance(board, str):
        if board.strip().lower() == HOST:
            return HOST, None
        from ...host.boards import get_board

        board = get_board(board)
    return board.name, board


def port_of(board) -> Port:
    """The port of ``board`` (a Board, a board name or ``"host"``); BuildError when it has none."""
    name, _ = _board(board)
    if name not in PORTS:
        raise BuildError(f"{name}: no firmware port for this board (ports: {', '.join(sorted(PORTS))}); "
                         f"use `microtrain compile` and your own firmware")
    return PORTS[name]


def port_sources(board) -> list[str]:
    """Firmware-relative C files of ``board``'s port plus the device loop (and main() on bare metal)."""
    port = port_of(board)
    return list(DEVICE_SOURCES) + ([MAIN_SOURCE] if port.bare_metal else []) + list(port.sources)


def compiler(board) -> str:
    """The C compiler of ``board``: the cross gcc, or $MT_HOST_CC / gcc for ``"host"``."""
    name, b = _board(board)
    return HOST_CC if b is None else CROSS[b.arch] + "gcc"


def target_flags(board) -> list[str]:
    """Core flags (soft-float ABI; RISC-V: -mcmodel=medany -ffreestanding); none on the host."""
    name, b = _board(board)
    if b is None:
        return []
    flags = list(toolchain(b)["target"])
    if b.arch == "riscv":
        flags.append("-mcmodel=medany")
    return flags


def _define(d: str) -> str:
    return d if d.startswith("-D") else f"-D{d}"


def compile_flags(board, *, dsp: bool | None = None, opt: str = OPT, defines: Iterable[str] = (),
                  port: Port | None = None) -> list[str]:
    """Flags every source of ``board``'s image is compiled with (no include paths). ``port``: another
    port's defines (tools/stack_usage.py compiles a reference port for cores without their own)."""
    name, b = _board(board)
    port = port_of(board) if port is None else port
    use_dsp = (b is not None and b.dsp) if dsp is None else bool(dsp)
    if use_dsp and (b is None or b.arch != "arm"):
        raise BuildError(f"{name}: the DSP kernel variants need an Arm core with the DSP extension")
    flags = [*COMMON_CFLAGS, opt, *target_flags(board)]
    flags += ["-DMT_USE_DSP"] if use_dsp else []
    extra = [_define(d) for d in defines]
    names = {d[2:].split("=", 1)[0] for d in extra}
    flags += [d for d in map(_define, port.defines) if d[2:].split("=", 1)[0] not in names] + extra
    return flags


def link_flags(board, *, port: Port | None = None, stack_bytes: int | None = None) -> list[str]:
    """Link flags of ``board``'s image (after the objects): linker script, no start files, -lgcc;
    ``stack_bytes``: the size of the main stack (``__stack_size`` of the port's linker script, whose
    default is used without it); ``port``: another port's linker script."""
    name, b = _board(board)
    port = port_of(board) if port is None else port
    if not port.bare_metal:
        return []
    fw = firmware_dir()
    libc = ["--specs=nosys.specs"] if b.arch == "arm" else ["-nostdlib"]
    stack = [] if stack_bytes is None else [f"-Wl,--defsym=__stack_size={int(stack_bytes)}"]
    return ["-nostartfiles", *libc, "-T", str(fw / port.ldscript), *stack, "-Wl,--gc-sections",
            "-Wl,--no-warn-rwx-segments", "-lgcc"]


def _check_tool(cc: str, name: str) -> None:
    if shutil.which(cc) is None:
        pkg = _PACKAGES.get(cc)
        how = f"apt-get install {pkg}, or `make toolchains`" if pkg else "install gcc, or set MT_HOST_CC"
        raise BuildError(f"{cc} not found: the C compiler for {name} ({how})")


def _run(cmd: list[str]) -> None:
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise BuildError(f"firmware build failed: {' '.join(cmd[:4])} ...\n{p.stdout[-4000:]}")


# ---------------------------------------------------------------------------------------------
# the compiled folder (project.py, platformio.py)
# ---------------------------------------------------------------------------------------------
def project_device_files(board) -> dict[str, str]:
    """Compiled-folder path -> firmware-relative path of the protocol engine (every board), and for a
    board with a port its main(), port sources, headers and linker script; the port's files (shared
    ones from port/common included) all go to ``port/<port name>/``."""
    out = {s: s for s in DEVICE_SOURCES}
    name, _ = _board(board)
    port = PORTS.get(name)
    if port is None or not port.bare_metal:
        return out
    out[MAIN_SOURCE] = MAIN_SOURCE
    for f in (*port.sources, *port.headers, port.ldscript):
        out[f"port/{port.name}/{f.rsplit('/', 1)[1]}"] = f
    return out


def project_layout(board, gen: Generated | None = None) -> dict:
    """What ``make firmware`` builds in a compiled folder, as the keys of
    :class:`~.platformio.Layout`: sources (folder-relative), include dirs, defines, cflags
    (``-include mt_port.h``: the program's MT_CYCLES()), the linker script and the port's name;
    with ``gen``, ldflags linking its planned main stack (:func:`stack_bytes_of`). Only for boards
    with a bare-metal port (``EMULATED``)."""
    name, b = _board(board)
    if name not in EMULATED:
        raise BuildError(f"{name}: no bare-metal port; the compiled folder has no firmware target")
    port = PORTS[name]
    files = project_device_files(board)
    sources = ["mt_model.c"] + [k for k in runtime_sources(b) if k.endswith(".c")]
    sources += [k for k in files if k.endswith(".c")]
    out = {"sources": tuple(sources), "include_dirs": (".", "include", f"port/{port.name}"),
           "defines": tuple(port.defines), "cflags": ("-include", "mt_port.h"),
           "ldscript": f"port/{port.name}/{port.ldscript.rsplit('/', 1)[1]}", "port": port.name}
    if gen is not None:
        out["ldflags"] = (f"-Wl,--defsym=__stack_size={stack_bytes_of(gen, b)}",)
    return out


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
def kernel_sources(dsp: bool) -> list[Path]:
    k = firmware_dir() / "src" / "kernels"
    srcs = sorted(k.glob("*.c"))
    if dsp:
        srcs += sorted(p for p in (k / "dsp").glob("mt_*_dsp.c") if not p.stem.endswith("_bench"))
    return srcs


def _kernel_archive(cc: str, flags: list[str], dsp: bool) -> Path:
    inc = firmware_dir() / "include"
    srcs = kernel_sources(dsp)
    key = _digest(cc.encode(), " ".join(flags).encode(), *(p.read_bytes() for p in srcs),
                  *(p.read_bytes() for p in sorted(inc.glob("*.h"))),
                  *(p.read_bytes() for d in sorted({s.parent for s in srcs}) for p in sorted(d.glob("*.h"))))
    ar = cc[:-3] + "ar" if cc.endswith("gcc") else "ar"
    ar = ar if shutil.which(ar) else "ar"

    def build(tmp: Path, out: Path) -> None:
        def one(s: Path) -> str:
            o = tmp / (s.stem + ".o")
            _run([cc, *flags, f"-I{inc}", "-c", str(s), "-o", str(o)])
            return str(o)

        with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as ex:
            objs = list(ex.map(one, srcs))
        _run([ar, "rcs", str(out), *objs])

    return _atomic(cache_dir() / "firmware" / f"libmtkernels-{key}.a", build)


def stack_bytes_of(gen: Generated, board, *, dsp: bool | None = None) -> int | None:
    """The main stack of ``gen``'s image on ``board``: the planner's reservation for this board and
    kernel variants (``MemoryPlan.stack_for``; equal to ``gen.memory.stack_bytes`` when the program
    was generated for ``board``). None for the host build (its stack is the OS's)."""
    name, b = _board(board)
    if b is None:
        return None
    return gen.memory.stack_for(b, dsp=b.dsp if dsp is None else bool(dsp)).total_bytes


def build_image(gen: Generated, board, out_dir, *, dsp: bool | None = None, opt: str = OPT,
                defines: Iterable[str] = (), extra_flags: Iterable[str] = (), stack_bytes: int | None = None) -> Path:
    """Compile ``gen`` into a device image for ``board`` (a Board, a board name, or ``"host"``);
    the image is copied to ``out_dir`` (``firmware.elf``, or ``mt_device`` for the host) and its
    path returned. ``dsp``: the Arm DSP kernel variants (default: the board's feature);
    ``defines``: extra ``NAME[=VALUE]`` (e.g. ``MT_DEVICE_MAX_PAYLOAD=256``); ``extra_flags``: more
    compiler flags for every source and the link (e.g. sanitizers for a host build). Bare-metal
    images get a main stack of exactly the planned ``stack_bytes_of(gen, board)`` (HELLO_INFO's
    stack_size), or ``stack_bytes``."""
    name, b = _board(board)
    port = port_of(board)
    cc = compiler(board)
    _check_tool(cc, name)
    extra = list(extra_flags)
    flags = compile_flags(board, dsp=dsp, opt=opt, defines=defines) + extra
    use_dsp = "-DMT_USE_DSP" in flags
    fw = firmware_dir()
    inc = fw / "include"
    kflags = [*COMMON_CFLAGS, opt, *target_flags(board)] + (["-DMT_USE_DSP"] if use_dsp else []) + extra
    if b is None:
        kflags.append("-fPIC")
    archive = _kernel_archive(cc, kflags, use_dsp)
    srcs = [fw / s for s in port_sources(board)]
    deps = srcs + [fw / h for h in port.headers] + ([fw / port.ldscript] if port.ldscript else [])
    if port.bare_metal and stack_bytes is None:
        stack_bytes = stack_bytes_of(gen, board, dsp=use_dsp)
    lflags = link_flags(board, stack_bytes=stack_bytes if port.bare_metal else None)
    key = _digest(archive.name.encode(), " ".join(flags + lflags).encode(), cc.encode(),
                  *(gen.files[n].encode() for n in sorted(gen.files)), *(p.read_bytes() for p in deps),
                  *(p.read_bytes() for p in sorted(inc.glob("*.h"))))
    suffix = "" if b is None else ".elf"

    def build(tmp: Path, out: Path) -> None:
        for fname, text in gen.files.items():
            (tmp / fname).write_text(text)
        model_o = tmp / "mt_model.o"  # the program alone gets -include mt_port.h (its MT_CYCLES)
        _run([cc, *flags, "-include", "mt_port.h", f"-I{inc}", f"-I{tmp}", "-c", str(tmp / "mt_model.c"),
              "-o", str(model_o)])
        _run([cc, *flags, f"-I{inc}", *(f"-I{fw / d}" for d in port.include_dirs), f"-I{tmp}", str(model_o),
              *map(str, srcs), str(archive), *lflags, "-o", str(out)])

    cached = _atomic(cache_dir() / "firmware" / f"{name}-{gen.hash}-{key}{suffix}", build)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    dest = out / ("mt_device" if b is None else "firmware.elf")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(cached, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def qemu_command(board, elf, tcp_port: int, *, icount: bool = True, wait: bool = False) -> list[str]:
    """QEMU argv running ``elf`` on emulated ``board`` with the protocol UART on a TCP server at
    127.0.0.1:``tcp_port`` (connect with ``socket://127.0.0.1:PORT``). ``icount``: -icount shift=0
    (deterministic: 1 instruction = 1 ns of virtual time, so cycle counts repeat; slower);
    ``wait``: QEMU waits for the client before the guest runs (the boot HELLO_INFO is then seen).
    Semihosting is on (storage file and log, relative to QEMU's working directory)."""
    name, b = _board(board)
    if b is None or b.qemu is None or name not in EMULATED:
        raise BuildError(f"{name}: not an emulated board (emulated: {', '.join(sorted(EMULATED))})")
    q = b.qemu
    cmd = [b.qemu_binary, "-M", q.machine]
    if q.cpu:
        cmd += ["-cpu", q.cpu]
    if q.machine == "virt":
        cmd += ["-bios", "none", "-m", "128M"]
    cmd += ["-nographic", "-monitor", "none",
            "-serial", f"tcp:127.0.0.1:{int(tcp_port)},server=on,wait={'on' if wait else 'off'},nodelay=on",
            "-semihosting-config", "enable=on,target=native"]
    if icount:
        cmd += ["-icount", "shift=0"]
    return cmd + ["-kernel", str(elf)]


def host_command(exe, *, storage=None, exit_on_hup: bool = True, stdio: bool = False) -> list[str]:
    """argv of a host image: serves a pseudo-terminal (prints ``PTY <path>`` first) or, with
    ``stdio``, stdin/stdout; ``storage``: a file for the boot counter (and checkpoints)."""
    cmd = [str(exe)]
    if stdio:
        cmd.append("--stdio")
    if storage is not None:
        cmd += ["--storage", str(storage)]
    if exit_on_hup and not stdio:
        cmd.append("--exit-on-hup")
    return cmd
