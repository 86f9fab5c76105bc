"""Write a buildable folder for one board: the generated program, the firmware runtime it needs and
a Makefile for the board's cross toolchain (``microtrain compile``).

    write_project(gen, board, out_dir, force=False) -> [paths written]

Layout of ``out_dir``::

    mt_model.h  mt_model.c  mt_model.json     the generated program (emit.generate)
    include/*.h                               firmware headers (all of them)
    src/kernels/*.c                           portable kernels
    src/kernels/dsp/*.c                       Arm DSP-extension variants (boards with dsp = true only)
    src/proto/mt_frame.c  src/device/*.c      the protocol engine (device loop; main() with a port)
    port/<port>/                              the board's port (emulated boards: UART, storage, stack,
                                              startup, linker script; real boards: mt_port.h on the
                                              SDK of their PlatformIO framework, ``REAL_PORTS``)
    Makefile                                  `make` -> libmtmodel.a, `make size`, `make clean`;
                                              emulated boards: `make firmware` -> firmware.elf, `make qemu`
    README.md                                 the C API and the port hooks

Build flags (Makefile): ``-std=c99 -Os -Wall -Wextra -Werror -fno-strict-aliasing -ffunction-sections
-fdata-sections`` + the core's flags (``Board.gcc_flags``; soft-float ABI, ``make FLOAT_ABI=hard`` on
FPU cores) + ``-DMT_USE_DSP`` on DSP cores. ``-Os`` on every board: the planner's flash estimate
(``flash.code_bytes_estimate`` of ``microtrain plan``) is calibrated on ``-Os`` builds, so the
flash verdict of ``plan`` is the flash of this build; ``make OPT=-O2`` trades flash for speed.
``make firmware`` (emulated boards) compiles with the flags of ``firmware.build_image`` (``FW_OPT``,
default ``-O2``) and links the port's linker script.

Writing is atomic-ish: everything is written to a sibling temporary folder which then replaces
``out_dir`` by two renames. An existing ``out_dir`` is replaced only when it is empty or a previous
microtrain output (its ``mt_model.json`` names a microtrain generator), or with ``force``; a folder
that contains the current directory is never replaced.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MicrotrainError
from .emit import GENERATOR, Generated

#: files of the generated program, as ``Generated.files`` names them
MODEL_FILES = ("mt_model.h", "mt_model.c", "mt_model.json")
#: the library ``make`` builds
LIBRARY = "libmtmodel.a"
#: optimization level of the Makefile (see the module docstring for why)
OPT = "-Os"
COMMON_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing", "-ffunction-sections",
                 "-fdata-sections")
#: cross-toolchain prefix per architecture (Debian: gcc-arm-none-eabi, gcc-riscv64-unknown-elf)
CROSS = {"arm": "arm-none-eabi-", "riscv": "riscv64-unknown-elf-"}


class ProjectError(MicrotrainError):
    """The output folder cannot be written (one line: what and how to proceed)."""


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------
def _firmware_dir() -> Path:
    from ...host.resources import firmware_dir

    return Path(firmware_dir())


def runtime_sources(board, firmware: Path | None = None) -> dict[str, Path]:
    """Project-relative path -> firmware file for the runtime ``board`` needs: every header, every
    portable kernel, and the DSP variants when the board's core has the DSP extension (benchmark
    hooks ``*_bench.c`` are not runtime and are left out)."""
    fw = Path(firmware) if firmware is not None else _firmware_dir()
    out: dict[str, Path] = {}
    for h in sorted((fw / "include").glob("*.h")):
        out[f"include/{h.name}"] = h
    for c in sorted((fw / "src" / "kernels").glob("*.c")):
        out[f"src/kernels/{c.name}"] = c
    if board.dsp:
        for c in sorted((fw / "src" / "kernels" / "dsp").glob("*.c")):
            if not c.stem.endswith("_bench"):
                out[f"src/kernels/dsp/{c.name}"] = c
    if not any(k.startswith("src/kernels/") for k in out):
        raise ProjectError(f"{fw}: no firmware kernels found; reinstall microtrain")
    return out


@dataclass(frozen=True)
class RealPort:
    """The mt_port.h implementation of a real board's PlatformIO framework (``firmware/port/<name>/``)."""

    name: str                        # folder under firmware/port (= the framework's name)
    sources: tuple[str, ...]         # file names in that folder
    main: bool                       # True: main() is src/device/mt_main.c; False: the port has the
                                     # entry point (Arduino setup()/loop(), ESP-IDF app_main())
    defines: tuple[str, ...] = ()    # NAME or NAME=VALUE for every source (platformio.ini build_flags)
    ldflags: tuple[str, ...] = ()    # link flags (build_flags)


#: PlatformIO framework -> its port (firmware/port/<framework>/; each file documents the SDK calls,
#: the UART, the cycle counter, storage and stack it uses)
REAL_PORTS: dict[str, RealPort] = {
    "stm32cube": RealPort("stm32cube", ("mt_port_stm32cube.c",), main=True),
    "arduino": RealPort("arduino", ("mt_port_arduino.cpp",), main=False),
    "zephyr": RealPort("zephyr", ("mt_port_zephyr.c",), main=True),
    "espidf": RealPort("espidf", ("mt_port_espidf.c",), main=False),
    # HiFive1 Rev B: 16 KiB RAM -> 256-byte frames (like qemu-rv32), 2 KiB stack (the BSP's
    # metal.default.lds defaults __stack_size to 1 KiB)
    "freedom-e-sdk": RealPort("freedom-e-sdk", ("mt_port_freedom.c",), main=True,
                              defines=("MT_DEVICE_MAX_PAYLOAD=256",),
                              ldflags=("-Wl,--defsym=__stack_size=2048",)),
}


def real_port(board) -> RealPort | None:
    """The SDK port of a real board (``[platformio]`` in its TOML, no ``[qemu]``), or None."""
    pio = getattr(board, "platformio", None)
    if getattr(board, "qemu", None) is not None or pio is None:
        return None
    return REAL_PORTS.get(pio.framework)


def device_sources(board) -> dict[str, str]:
    """Project-relative path -> firmware-relative path of the protocol engine (``mt_frame.c``,
    ``mt_device.c``: every board) and, for boards with a bare-metal port (the emulated ones),
    ``mt_main.c`` and the port (``port/<port>/``: startup, UART, storage, stack, linker script);
    for a real board the port of its PlatformIO framework (``port/<framework>/``) and, unless that
    port has the entry point itself, ``mt_main.c``."""
    from .firmware import MAIN_SOURCE, project_device_files

    out = dict(project_device_files(board))
    port = real_port(board)
    if port is not None:
        if port.main:
            out[MAIN_SOURCE] = MAIN_SOURCE
        for f in port.sources:
            out[f"port/{port.name}/{f}"] = f"port/{port.name}/{f}"
    return out


def real_layout(board, runtime: dict, device: dict) -> dict:
    """The :class:`~.platformio.Layout` keys of a real board's folder: the library sources, the
    device loop and the port; ``-include mt_port.h`` for the program's ``MT_CYCLES()`` (every
    framework passes it to the folder's own sources only: build_src_flags, or the CMake target of
    the app); the port's defines and link flags."""
    port = real_port(board)
    sources = ["mt_model.c"] + [k for k in runtime if k.endswith(".c")]
    sources += [k for k in device if k.endswith((".c", ".cpp"))]
    lay: dict = {"sources": sources, "include_dirs": [".", "include"], "cflags": ["-include", "mt_port.h"]}
    if port is not None:
        lay["include_dirs"].append(f"port/{port.name}")
        lay["defines"] = list(port.defines)
        lay["ldflags"] = list(port.ldflags)
        lay["port"] = port.name
    return lay


def toolchain(board) -> dict[str, Any]:
    """Cross prefix, target flags (soft and, on FPU cores, hard float ABI) and defines of ``board``."""
    flags = board.gcc_flags(hard_float=False)
    if board.arch == "riscv":
        flags = flags + ["-ffreestanding"]  # Debian's riscv64-unknown-elf ships picolibc, no hosted libc
    hard = board.gcc_flags(hard_float=True) if board.arch == "arm" and board.fpu != "none" else None
    return {"cross": CROSS[board.arch], "target": flags, "target_hard": hard,
            "defines": ["-DMT_USE_DSP"] if board.dsp else []}


# ---------------------------------------------------------------------------------------------
# Makefile and README
# ---------------------------------------------------------------------------------------------
def _firmware_rules(gen: Generated, board, device: list[str]) -> str:
    """The ``firmware`` / ``qemu`` targets of an emulated board (same flags as build_image)."""
    from . import firmware as fw

    if board.name not in fw.EMULATED:
        return ""
    port = fw.PORTS[board.name]
    lay = fw.project_layout(board)
    srcs = " \\\n       ".join(s for s in device if s.endswith(".c"))
    hdrs = " ".join(s for s in device if s.endswith(".h"))
    defs = " ".join(f"-D{d}" for d in lay["defines"])
    libc = "--specs=nosys.specs" if board.arch == "arm" else "-nostdlib"
    qemu = " ".join(fw.qemu_command(board, "firmware.elf", 5555, icount=False)).replace(
        "127.0.0.1:5555", "127.0.0.1:$(QEMU_PORT)")
    stack = fw.stack_bytes_of(gen, board)
    return f"""
# ---- firmware.elf: this program as a protocol device on {board.name} (port/{port.name}) ----------
#   make firmware             build firmware.elf (same flags as microtrain's build_image; FW_OPT=-O2)
#   make qemu [QEMU_PORT=N]   run it in QEMU, the protocol UART on tcp://127.0.0.1:N (default 5555)
# STACK_SIZE: the main stack the planner reserved for this program (`microtrain plan`: sram.stack_bytes;
# compiler/memory/stack.py), linked as [_sstack, _estack) and reported as HELLO_INFO.stack_size
STACK_SIZE ?= {stack}
FW_OPT    ?= {fw.OPT}
FW_TARGET = {' '.join(fw.target_flags(board))}
FW_DEFS   = {('$(DEFS) ' + defs).strip()}
FW_CFLAGS = {' '.join(COMMON_CFLAGS)} $(FW_OPT) $(FW_TARGET) $(FW_DEFS) -I. -Iinclude -Iport/{port.name} $(EXTRA_CFLAGS)
FW_SRCS   = $(SRCS) \\
       {srcs}
FW_HDRS   = {hdrs}
FW_OBJS   = $(patsubst %.c,build/fw/%.o,$(FW_SRCS))
LDSCRIPT  = {lay['ldscript']}
FW_LDFLAGS = -nostartfiles {libc} -T $(LDSCRIPT) -Wl,--defsym=__stack_size=$(STACK_SIZE) -Wl,--gc-sections \\
             -Wl,--no-warn-rwx-segments
QEMU_PORT ?= 5555

firmware: firmware.elf

firmware.elf: $(FW_OBJS) $(LDSCRIPT)
\t$(CC) $(FW_CFLAGS) $(FW_OBJS) $(FW_LDFLAGS) -lgcc -o $@
\t$(SIZE) $@

# the program's MT_CYCLES() reads the port's counter
build/fw/mt_model.o: FW_CFLAGS += -include mt_port.h

build/fw/%.o: %.c $(HDRS) $(FW_HDRS) Makefile
\t@mkdir -p $(dir $@)
\t$(CC) $(FW_CFLAGS) -c $< -o $@

qemu: firmware.elf
\t{qemu}

.PHONY: firmware qemu
"""


def makefile(gen: Generated, board, sources: list[str], device: list[str] | None = None) -> str:
    tc = toolchain(board)
    srcs = " \\\n       ".join(["mt_model.c"] + [s for s in sources if s.endswith(".c")])
    hdrs = " \\\n       ".join(["mt_model.h"] + [s for s in sources if s.endswith(".h")])
    if tc["target_hard"]:
        target = (f"FLOAT_ABI ?= soft\n"
                  f"ifeq ($(FLOAT_ABI),hard)\n"
                  f"TARGET   = {' '.join(tc['target_hard'])}\n"
                  f"else\n"
                  f"TARGET   = {' '.join(tc['target'])}\n"
                  f"endif\n")
        abi = "; FLOAT_ABI=hard for a hard-float firmware (the kernels use no float either way)"
    else:
        target = f"TARGET   = {' '.join(tc['target'])}\n"
        abi = ""
    return f"""# Makefile: {LIBRARY} of model {gen.hash} for {board.name} ({board.core}, {board.isa}),
# written by microtrain ({GENERATOR}). Override variables on the command line instead of editing:
#   make                      build {LIBRARY} (the program + the kernels it may call)
#   make size                 text/data/bss of every object in the archive
#   make OPT=-O2              faster, larger code (default -Os: what `microtrain plan` budgets)
#   make CROSS=/opt/bin/{tc['cross']}   another toolchain{abi}
#   make EXTRA_CFLAGS='-include mt_port.h'   port hooks (README.md)
# Link {LIBRARY} into the firmware with -Wl,--gc-sections: only the referenced kernels stay.

CROSS    ?= {tc['cross']}
CC       = $(CROSS)gcc
AR       = $(CROSS)ar
SIZE     = $(CROSS)size
{target}OPT      ?= {OPT}
DEFS     = {' '.join(tc['defines'])}
CFLAGS   = {' '.join(COMMON_CFLAGS)} $(OPT) $(TARGET) $(DEFS) -I. -Iinclude $(EXTRA_CFLAGS)

SRCS   = {srcs}
HDRS   = {hdrs}
OBJS   = $(patsubst %.c,build/%.o,$(SRCS))

all: {LIBRARY}

{LIBRARY}: $(OBJS)
\t@rm -f $@
\t$(AR) rcs $@ $(OBJS)

build/%.o: %.c $(HDRS) Makefile
\t@mkdir -p $(dir $@)
\t$(CC) $(CFLAGS) -c $< -o $@

size: {LIBRARY}
\t$(SIZE) -t {LIBRARY}

clean:
\trm -rf build {LIBRARY} firmware.elf

.PHONY: all size clean
{_firmware_rules(gen, board, device or [])}"""


def readme(gen: Generated, board) -> str:
    from . import firmware as fw

    m = gen.manifest
    firmware = ""
    port = real_port(board)
    if board.name in fw.EMULATED:
        firmware = (f"\nThis board has a port (`port/{fw.PORTS[board.name].name}/`): `make firmware` builds\n"
                    f"`firmware.elf` (the program, the kernels, the device loop with `src/device/mt_main.c` and the\n"
                    f"port; `FW_OPT=-O2` by default) and `make qemu [QEMU_PORT=5555]` runs it in QEMU with the\n"
                    f"protocol UART on `tcp://127.0.0.1:5555`.\n")
    elif port is not None:
        entry = "`src/device/mt_main.c`" if port.main else "the port's own entry point"
        firmware = (f"\nThis board has a port on its SDK (`port/{port.name}/`, PlatformIO framework `{port.name}`; "
                    f"the file\nheader says which UART, cycle counter and stack it uses): `pio run` builds the "
                    f"device firmware\n(the program, the kernels, the device loop with {entry} and the port; "
                    f"PlatformIO\ndownloads the SDK, network needed), `pio run -t upload` flashes it; the protocol "
                    f"UART runs\nat 115200 baud.\n")
    return f"""# Training program {gen.hash} for {board.name}

Generated by microtrain ({GENERATOR}); regenerate with `microtrain compile`, do not edit.
`make` builds `{LIBRARY}` ({board.core}{', DSP kernels' if board.dsp else ''}); link it into your
firmware with `-Wl,--gc-sections` and include `mt_model.h` (add `-I<this folder> -I<this folder>/include`).
SRAM: arena {m['arena_bytes']} B (static, inside mt_model.c) + persistent {m['persistent_bytes']} B.

C API (`mt_model.h`; no malloc, not reentrant; the step, infer, eval and checkpoint calls return `MT_OK` (0)
or an error status):
- `mt_init(seed, total_steps)`: trained parameters from flash to SRAM, optimizer and PRNG state;
  `total_steps` sets the cosine learning-rate schedule. Call once before anything else.
- `mt_train_step(x, labels, &metrics)`: one SGD step on `MT_BATCH` int8 samples
  (`MT_BATCH * MT_INPUT_BYTES` bytes, NHWC, quantized with the model's input scale/zero point).
- `mt_infer(x, logits)`: `MT_NUM_CLASSES` int8 logits of one sample, current parameters.
- `mt_eval(x, label, &predicted, &correct)`: predicted class of one sample and whether it is right.
- `mt_params_get(buf, cap)` / `mt_params_set(buf, size)`: checkpoint of `MT_PARAMS_BYTES` bytes
  (magic "MTCK", model hash, step, PRNG state, trained tensors; layout in `mt_model.json`);
  `mt_params_set` rejects a checkpoint of another model or schedule.

Port (`include/mt_port.h`): the board functions the device loop uses (UART bytes in/out, sleeping
while idle, a cycle counter, optional persistent storage, stack size and high-water mark, the
board's name); each is
documented there. Pass `-include mt_port.h` when compiling `mt_model.c`
(`make EXTRA_CFLAGS='-include mt_port.h'`) so the program's `MT_CYCLES()` reads `mt_port_cycles()`
(`metrics.cycles`); without it the program reports 0 cycles and needs no port at all.

Device loop (`src/device/mt_device.c`, `include/mt_device.h`; frames: `src/proto/mt_frame.c`,
`include/mt_protocol.h`): the serial protocol of microtrain's host tools on top of `mt_port.h`:
your `main()` calls `mt_port_init(); mt_device_init(); for (;;) {{ mt_device_poll(); mt_port_idle(); }}`.
{firmware}"""


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def is_previous_output(path: Path) -> bool:
    """True when ``path`` holds an ``mt_model.json`` written by a microtrain generator."""
    try:
        meta = json.loads((path / "mt_model.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("generator", "")).startswith("microtrain")


def _check_target(out: Path, force: bool) -> None:
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise ProjectError(f"{out}: refusing to replace a folder that contains the current directory; "
                           f"choose another output folder")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ProjectError(f"{out}: exists and is not a folder; choose another output folder")
    if force or not any(out.iterdir()) or is_previous_output(out):
        return
    raise ProjectError(f"{out}: folder is not empty and is not a microtrain output (no mt_model.json of "
                       f"microtrain); choose another output folder or pass --force to replace it")


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def project_files(gen: Generated, board) -> dict[str, bytes]:
    """Project-relative path -> content of every file :func:`write_project` writes."""
    runtime = runtime_sources(board)
    files: dict[str, bytes] = {}
    for name in MODEL_FILES:
        if name not in gen.files:
            raise ProjectError(f"generated program lacks {name}")
        files[name] = gen.files[name].encode()
    for rel, src in runtime.items():
        files[rel] = src.read_bytes()
    fw = _firmware_dir()
    device = device_sources(board)
    for rel, src in device.items():
        files[rel] = (fw / src).read_bytes()
    files["Makefile"] = makefile(gen, board, list(runtime), list(device)).encode()
    files["README.md"] = readme(gen, board).encode()
    files.update({rel: text.encode() for rel, text in _platformio_files(board, runtime, device, gen).items()})
    return dict(sorted(files.items()))


def _platformio_files(board, runtime: dict, device: dict, gen: Generated | None = None) -> dict[str, str]:
    """platformio.ini (+ the local platform on emulated boards, CMake files on ESP-IDF / Zephyr):
    the same sources as the Makefile (compiler/codegen/platformio.py, docs/platformio.md); an
    emulated board's image links the program's planned stack, as ``make firmware``."""
    from . import firmware as fw
    from .platformio import project_files as pio_files

    if getattr(board, "platformio", None) is None and board.name not in fw.EMULATED:
        return {}
    if board.name in fw.EMULATED:
        layout = fw.project_layout(board, gen)
    else:
        layout = real_layout(board, runtime, device)
    return pio_files(board, layout)


def write_project(gen: Generated, board, out_dir: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write the buildable folder of ``gen`` for ``board`` (a :class:`~microtrain.host.boards.Board`)
    to ``out_dir``; return the written files (sorted). Raises :class:`ProjectError` when
    ``out_dir`` exists, is non-empty and is not a previous microtrain output (unless ``force``), or
    cannot be written."""
    out = Path(out_dir).expanduser().resolve()
    _check_target(out, force)
    files = project_files(gen, board)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as e:
        raise ProjectError(f"{out}: cannot create the output folder ({e.strerror or e})") from None
    old: Path | None = None
    try:
        dmode, fmode = 0o777 & ~_umask(), 0o666 & ~_umask()
        os.chmod(tmp, dmode)
        for rel, data in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            os.chmod(p, fmode)
        if out.exists() or out.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.rmdir(old)
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if old is not None:
                os.rename(old, out)
                old = None
            raise
    except OSError as e:
        raise ProjectError(f"{out}: cannot write the output folder ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    return [out / rel for rel in files]
