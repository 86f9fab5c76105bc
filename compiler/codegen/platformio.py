"""PlatformIO project files of a compiled folder (``microtrain compile``); see docs/platformio.md.

    project_files(board, layout) -> {relative path: text}

``layout`` names what the folder holds (:class:`Layout`, or a mapping with the same keys):
the C sources to build, include dirs, defines, extra C flags, the port's linker script and the port.
The returned files are written next to them:

* ``platformio.ini``: one environment named after the board (``[env:qemu-m4]``) whose
  ``src_dir = .`` and ``build_src_filter`` select exactly ``layout.sources``, ``include_dir = include``,
  ``build_flags`` = include dirs, defines (``-DMT_USE_DSP`` on DSP cores) and ``layout.ldflags``, ``build_src_flags`` =
  :func:`src_flags_of` (C99, warnings; ``-O2 -Werror`` on emulated boards like ``make firmware``,
  ``-Os`` on real ones like the library ``microtrain plan`` budgets) + ``layout.cflags`` (only the
  project's sources get them, never a vendor SDK), ``monitor_speed = 115200`` (the host bridge's
  baud rate).
* Real boards (``[platformio]`` in the board TOML, no ``[qemu]``): ``platform``, ``board``, ``framework``
  from that table; PlatformIO downloads the platform and SDK (network needed). The mt_port.h
  implementation for the SDK is the port's job (``layout.sources``: ``port/<framework>/``, see
  ``project.REAL_PORTS``). ESP-IDF and Zephyr build the project through CMake and ignore
  ``build_src_filter``: for them the same sources are listed in ``main/CMakeLists.txt`` +
  ``CMakeLists.txt`` (ESP-IDF, ``src_dir = main``; plus ``sdkconfig.defaults``: logging off, since
  the protocol shares UART0 with the console, no idle-task watchdog, an 8 KiB main task) or
  ``zephyr/CMakeLists.txt`` + ``zephyr/prj.conf`` (Zephyr: console, printk, banner and logging off on
  the protocol UART, stack info), see :func:`cmake_files`.
* Emulated boards: ``platform = symlink://${PROJECT_DIR}/platformio/microtrain-local``, a copy of
  the local platform (``boards/platformio/microtrain-local``: platform.json, platform.py,
  builder/main.py, plus ``boards/<id>.json`` written from the board TOML). It compiles with the
  cross compiler on PATH and needs no PlatformIO package, so ``pio run`` works offline once
  ``tools/pio_offline.py`` has provided SCons. The copy makes the folder self-contained (it can be
  moved or archived; the platform always matches the sources next to it) and ``symlink://`` makes
  PlatformIO use it in place, so an edited or regenerated folder is never built by a stale copy
  cached in the core dir.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import MicrotrainError

PLATFORM_NAME = "microtrain-local"
#: where the local platform is copied inside a compiled folder
PLATFORM_SUBDIR = "platformio/microtrain-local"
#: files of the platform copied from the package (board manifests are written per board)
PLATFORM_FILES = ("platform.json", "platform.py", "builder/main.py")
#: baud rate of the protocol UART (host/bridge.py opens the port at 115200)
MONITOR_SPEED = 115200
QEMU_DOCS = {"arm": "https://www.qemu.org/docs/master/system/arm/mps2.html",
             "riscv": "https://www.qemu.org/docs/master/system/target-riscv.html"}


class PlatformIOError(MicrotrainError):
    """The PlatformIO files cannot be written for this board or layout."""


# ---------------------------------------------------------------------------------------------
# layout of a compiled folder
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """What a compiled folder holds, as paths relative to it (POSIX separators).

    sources       C/assembly sources to build (``mt_model.c``, ``src/kernels/*.c``, ``src/device/*.c``,
                  ``src/proto/*.c``, ``port/<port>/*.c``, ...), exactly what ``pio run`` compiles
    include_dirs  ``-I`` dirs (``.`` and ``include`` are PlatformIO's src_dir/include_dir anyway)
    defines       ``NAME`` or ``NAME=VALUE`` (``MT_USE_DSP`` is added on DSP cores)
    cflags        more flags for every file, e.g. ``("-include", "mt_port.h")``
    ldflags       link flags (``build_flags``, e.g. ``-Wl,--defsym=__stack_size=2048``); SCons-built
                  frameworks only (ESP-IDF / Zephyr link through CMake: not supported there)
    ldscript      the port's linker script, or None (emulated boards then link an image that
                  cannot run; real boards use their framework's script)
    port          name of the port folder under ``port/``, or None
    """
    sources: tuple[str, ...]
    include_dirs: tuple[str, ...] = (".", "include")
    defines: tuple[str, ...] = ()
    cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    ldscript: str | None = None
    port: str | None = None

    @classmethod
    def from_any(cls, layout: "Layout | Mapping[str, Any]") -> "Layout":
        if isinstance(layout, Layout):
            return layout
        if not isinstance(layout, Mapping):
            raise PlatformIOError(f"layout must be a Layout or a mapping, got {type(layout).__name__}")
        unknown = set(layout) - set(cls.__dataclass_fields__)
        if unknown:
            raise PlatformIOError(f"layout: unknown keys {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {}
        for k, v in layout.items():
            kw[k] = tuple(v) if k in ("sources", "include_dirs", "defines", "cflags", "ldflags") else v
        if "sources" not in kw:
            raise PlatformIOError("layout: 'sources' is missing")
        return cls(**kw)


def _rel(path: str, what: str) -> str:
    p = str(path).replace("\\", "/")
    norm = posixpath.normpath(p)
    if not p or posixpath.isabs(p) or norm == ".." or norm.startswith("../"):
        raise PlatformIOError(f"layout: {what} {path!r} must be a path inside the folder")
    if any(c in norm for c in "<>\n\r;"):
        raise PlatformIOError(f"layout: {what} {path!r} contains a character platformio.ini cannot hold")
    return norm


# ---------------------------------------------------------------------------------------------
# the local platform
# ---------------------------------------------------------------------------------------------
def platform_source_dir() -> Path:
    """The local platform shipped with microtrain (``microtrain.boards`` / platformio/microtrain-local)."""
    from ...host.resources import boards_dir

    d = Path(boards_dir()) / "platformio" / PLATFORM_NAME
    if not (d / "platform.json").is_file():
        raise PlatformIOError(f"{d}: local PlatformIO platform missing; reinstall microtrain")
    return d


def board_id(board) -> str:
    """PlatformIO id of an emulated board (its normalized microtrain name, e.g. ``qemu-m4``)."""
    from ...host.boards import normalize

    return normalize(board.name)


def env_name(board) -> str:
    """Name of the ``[env:...]`` section: the normalized board name."""
    return board_id(board)


def _target_flags(board, hard: bool) -> list[str]:
    flags = list(board.gcc_flags(hard_float=hard))
    if board.arch == "riscv":
        flags += ["-mcmodel=medany"]
    return flags


def board_manifest(board) -> dict[str, Any]:
    """PlatformIO board manifest (``boards/<id>.json`` of the local platform) of an emulated board."""
    if board.qemu is None:
        raise PlatformIOError(f"{board.name}: not an emulated board; it builds with platform "
                              f"{board.platformio.platform if board.platformio else '?'}")
    build: dict[str, Any] = {
        "arch": board.arch,
        "core": board.core,
        "cpu": board.core,
        "isa": board.isa,
        "mcu": board.qemu.machine,
        "f_cpu": f"{board.clock_hz}L",
        "toolchain_prefix": "arm-none-eabi-" if board.arch == "arm" else "riscv64-unknown-elf-",
        "target_flags": _target_flags(board, hard=False),
    }
    if board.arch == "arm" and board.fpu != "none":
        build["target_flags_hard"] = _target_flags(board, hard=True)
    qemu = {"binary": board.qemu_binary, "machine": board.qemu.machine}
    if board.qemu.cpu:
        qemu["cpu"] = board.qemu.cpu
    if board.qemu.machine == "virt":
        qemu["extra_args"] = ["-bios", "none", "-m", "128M"]  # start at the ELF entry, no OpenSBI
    return {
        "build": build,
        "frameworks": [],
        "name": board.description.split(":")[0] if ":" in board.description else board.name,
        "platforms": [PLATFORM_NAME],
        "qemu": qemu,
        "upload": {"maximum_ram_size": board.sram_bytes, "maximum_size": board.flash_bytes,
                   "protocol": "qemu", "protocols": ["qemu"]},
        "url": QEMU_DOCS[board.arch],
        "vendor": "QEMU",
    }


def board_manifest_text(board) -> str:
    return json.dumps(board_manifest(board), indent=2, sort_keys=True) + "\n"


def write_board_manifests(directory: str | Path | None = None) -> list[Path]:
    """(Re)write ``boards/<id>.json`` of the shipped platform for every emulated board TOML (run after
    adding or changing an emulated board; tests/test_platformio.py checks they are current)."""
    from ...host.boards import all_boards

    d = Path(directory) if directory is not None else platform_source_dir() / "boards"
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for b in all_boards():
        if b.qemu is not None:
            p = d / f"{board_id(b)}.json"
            p.write_text(board_manifest_text(b))
            out.append(p)
    return out


def platform_files(board) -> dict[str, str]:
    """The local platform for ``board`` as folder-relative path -> text."""
    src = platform_source_dir()
    out = {f"{PLATFORM_SUBDIR}/{rel}": (src / rel).read_text() for rel in PLATFORM_FILES}
    out[f"{PLATFORM_SUBDIR}/boards/{board_id(board)}.json"] = board_manifest_text(board)
    return out


# ---------------------------------------------------------------------------------------------
# platformio.ini
# ---------------------------------------------------------------------------------------------
def _multiline(key: str, items: list[str]) -> str:
    if not items:
        return ""
    return f"{key} =\n" + "".join(f"    {i}\n" for i in items)


def _ini_value(s: str) -> str:
    if any(c in s for c in "\n\r") or s.strip() != s or ";" in s:
        raise PlatformIOError(f"value {s!r} cannot be written to platformio.ini")
    return s


def _flags(board, lay: Layout) -> tuple[list[str], list[str], list[str]]:
    """(include dirs, defines, extra flags as ini lines) of ``lay`` on ``board``."""
    incs = list(dict.fromkeys(_rel(d, "include dir") for d in lay.include_dirs))
    defines = [_ini_value(d) for d in dict.fromkeys(list(lay.defines) + (["MT_USE_DSP"] if board.dsp else []))]
    extra: list[str] = []
    cf = list(lay.cflags)
    i = 0
    while i < len(cf):  # keep "-include FILE" style pairs on one line
        if cf[i] in ("-include", "-imacros", "-isystem", "-iquote") and i + 1 < len(cf):
            extra.append(f"{cf[i]} {_ini_value(cf[i + 1])}")
            i += 2
        else:
            extra.append(_ini_value(cf[i]))
            i += 1
    return incs, defines, extra


def _sources(lay: Layout) -> list[str]:
    sources = [_rel(s, "source") for s in lay.sources]
    if not sources:
        raise PlatformIOError("layout: no sources")
    if len(set(sources)) != len(sources):
        raise PlatformIOError("layout: a source is listed twice")
    for s in sources:
        if any(c in s for c in '"$ ()'):
            raise PlatformIOError(f"layout: source {s!r}: quotes, blanks, '$' and parentheses are not supported")
    return sources


def src_flags_of(board) -> list[str]:
    """Flags of the folder's own sources: emulated boards get those of ``make firmware`` /
    ``firmware.build_image`` (``project.COMMON_CFLAGS`` with ``-Werror``, ``-O2``: the image the
    device measurements use); real boards get the library's ``-Os`` (what ``microtrain plan``
    budgets) and no ``-Werror`` (their vendor toolchain's new warnings must not break a build)."""
    from . import firmware, project

    if board.qemu is not None:
        return [*project.COMMON_CFLAGS, firmware.OPT]
    return [f for f in project.COMMON_CFLAGS if f != "-Werror"] + [project.OPT]


def _framework(board) -> str | None:
    return None if board.qemu is not None or board.platformio is None else board.platformio.framework


def platformio_ini(board, layout: Layout | Mapping[str, Any]) -> str:
    """Text of ``platformio.ini`` for ``board`` and the folder ``layout`` (module docstring)."""
    lay = Layout.from_any(layout)
    sources = _sources(lay)
    incs, defines, extra = _flags(board, lay)
    flags = [f"-I{d}" for d in incs] + [f"-D{d}" for d in defines] + [_ini_value(f) for f in lay.ldflags]
    emulated = board.qemu is not None
    framework = _framework(board)
    # layout.cflags (e.g. "-include mt_port.h") go to our sources only, never into a vendor SDK
    src_flags = src_flags_of(board) + extra
    name = env_name(board)
    lines = [
        f"; PlatformIO project of this microtrain folder for {board.name} ({board.core}, {board.isa}).",
        "; Written by `microtrain compile`; regenerate instead of editing. docs/platformio.md explains it.",
    ]
    if emulated:
        lines += [
            f"; Builds with the local platform in {PLATFORM_SUBDIR} and the cross compiler on PATH; no",
            "; PlatformIO package but SCons, which PlatformIO downloads once or, offline, takes from",
            "; `python tools/pio_offline.py` (microtrain source tree; see docs/platformio.md).",
            ";   pio run                 # -> .pio/build/%s/firmware.elf (+ size)" % name,
            ";   pio run -t qemu         # run it in %s (protocol UART on the terminal)" % board.qemu.machine,
        ]
    else:
        lines += [
            "; `pio run` downloads the platform and framework (network needed); `pio run -t upload` flashes,",
            f"; `pio device monitor` opens the protocol UART at {MONITOR_SPEED} baud.",
        ]
    if framework in CMAKE_FRAMEWORKS:
        lines.append(f"; {framework} builds the sources listed in {CMAKE_FRAMEWORKS[framework][1]} "
                     f"(it ignores build_src_filter).")
    src_dir = CMAKE_FRAMEWORKS[framework][0] if framework in CMAKE_FRAMEWORKS else "."
    lines += ["", "[platformio]", f"src_dir = {src_dir}", "include_dir = include", f"default_envs = {name}", "",
              f"[env:{name}]"]
    if emulated:
        lines += [f"platform = symlink://${{PROJECT_DIR}}/{PLATFORM_SUBDIR}", f"board = {board_id(board)}"]
    else:
        if board.platformio is None:
            raise PlatformIOError(f"{board.name}: board TOML has no [platformio] table")
        pio = board.platformio
        lines += [f"platform = {_ini_value(pio.platform)}", f"board = {_ini_value(pio.board)}",
                  f"framework = {_ini_value(pio.framework)}"]
    if lay.ldscript:
        lines.append(f"board_build.ldscript = {_rel(lay.ldscript, 'ldscript')}")
    body = "\n".join(lines) + "\n"
    body += _multiline("build_flags", flags)
    body += _multiline("build_src_flags", src_flags)
    if framework not in CMAKE_FRAMEWORKS:
        body += _multiline("build_src_filter", ["-<*>"] + [f"+<{s}>" for s in sources])
    body += f"monitor_speed = {MONITOR_SPEED}\n"
    return body


# ---------------------------------------------------------------------------------------------
# CMake-based frameworks (ESP-IDF, Zephyr): PlatformIO takes their sources from CMake
# ---------------------------------------------------------------------------------------------
#: framework -> (src_dir of platformio.ini, file that lists the sources)
CMAKE_FRAMEWORKS = {"espidf": ("main", "main/CMakeLists.txt"), "zephyr": (".", "zephyr/CMakeLists.txt")}


#: zephyr/prj.conf (port/zephyr/mt_port_zephyr.c relies on it)
ZEPHYR_PRJ_CONF = """\
# Zephyr configuration of the microtrain firmware (port/zephyr/mt_port_zephyr.c).
# the UART driver; the protocol polls the devicetree's zephyr,console UART
CONFIG_SERIAL=y
# nothing but protocol frames on that UART: no console, printk, boot banner or log output
CONFIG_CONSOLE=n
CONFIG_UART_CONSOLE=n
CONFIG_PRINTK=n
CONFIG_BOOT_BANNER=n
CONFIG_LOG=n
# the device loop and the generated program run in the main thread
CONFIG_MAIN_STACK_SIZE=4096
# stack size and high-water mark of the main thread (HELLO_INFO, METRICS)
CONFIG_THREAD_STACK_INFO=y
CONFIG_INIT_STACKS=y
"""

#: sdkconfig.defaults of ESP-IDF folders (port/espidf/mt_port_espidf.c relies on it); ESP-IDF reads
#: it when PlatformIO first creates sdkconfig.<env>
SDKCONFIG_DEFAULTS = """\
# ESP-IDF configuration of the microtrain firmware (port/espidf/mt_port_espidf.c).
# The protocol shares UART0 with the console: no log output from the bootloader or the app.
CONFIG_BOOTLOADER_LOG_LEVEL_NONE=y
CONFIG_LOG_DEFAULT_LEVEL_NONE=y
# A training step may keep the CPU longer than the task watchdog's 5 s.
# CONFIG_ESP_TASK_WDT_CHECK_IDLE_TASK_CPU0 is not set
# The device loop and the generated program run in the main task.
CONFIG_ESP_MAIN_TASK_STACK_SIZE=8192
"""


def _cmake_list(items: list[str], indent: str = "    ") -> str:
    return "\n".join(f'{indent}"{i}"' for i in items)


def cmake_files(board, layout: Layout | Mapping[str, Any]) -> dict[str, str]:
    """The CMake files ESP-IDF / Zephyr need (empty for other frameworks) and their configuration
    (``sdkconfig.defaults``, ``zephyr/prj.conf``). Sources, include dirs, defines and flags are the
    layout's, given relative to the list file's folder."""
    framework = _framework(board)
    if framework not in CMAKE_FRAMEWORKS:
        return {}
    lay = Layout.from_any(layout)
    sources = _sources(lay)
    if lay.ldflags:
        raise PlatformIOError(f"layout: link flags are not supported with {framework} (CMake links the image)")
    incs, defines, extra = _flags(board, lay)
    opts = [f'"SHELL:{o}"' if " " in o else o for o in extra]  # SHELL: keeps "-include X" pairs intact
    up = lambda p: ".." if p == "." else f"../{p}"  # noqa: E731  (list files sit one folder down)
    head = "# Written by `microtrain compile` for %s; regenerate instead of editing.\n" % board.name
    if framework == "espidf":
        main = (head + "idf_component_register(\n  SRCS\n" + _cmake_list([up(s) for s in sources]) +
                "\n  INCLUDE_DIRS\n" + _cmake_list([up(d) for d in incs]) + "\n)\n")
        if defines:
            main += "target_compile_definitions(${COMPONENT_LIB} PRIVATE %s)\n" % " ".join(defines)
        if opts:
            main += "target_compile_options(${COMPONENT_LIB} PRIVATE %s)\n" % " ".join(opts)
        root = (head + "cmake_minimum_required(VERSION 3.16.0)\n"
                "include($ENV{IDF_PATH}/tools/cmake/project.cmake)\nproject(microtrain)\n")
        return {"CMakeLists.txt": root, "main/CMakeLists.txt": main, "sdkconfig.defaults": SDKCONFIG_DEFAULTS}
    app = (head + "cmake_minimum_required(VERSION 3.20.0)\n"
           "find_package(Zephyr REQUIRED HINTS $ENV{ZEPHYR_BASE})\nproject(microtrain)\n\n"
           "target_sources(app PRIVATE\n" + _cmake_list(["${CMAKE_CURRENT_SOURCE_DIR}/" + up(s) for s in sources]) +
           "\n)\ntarget_include_directories(app PRIVATE\n" +
           _cmake_list(["${CMAKE_CURRENT_SOURCE_DIR}/" + up(d) for d in incs]) + "\n)\n")
    if defines:
        app += "target_compile_definitions(app PRIVATE %s)\n" % " ".join(defines)
    if opts:
        app += "target_compile_options(app PRIVATE %s)\n" % " ".join(opts)
    return {"zephyr/CMakeLists.txt": app, "zephyr/prj.conf": ZEPHYR_PRJ_CONF}


def project_files(board, layout: Layout | Mapping[str, Any]) -> dict[str, str]:
    """Folder-relative path -> text of the PlatformIO files of ``board`` (a
    :class:`~microtrain.host.boards.Board`) for a folder holding ``layout``: ``platformio.ini``, and
    for emulated boards the local platform under ``platformio/microtrain-local/``."""
    files = {"platformio.ini": platformio_ini(board, layout)}
    files.update(cmake_files(board, layout))
    if board.qemu is not None:
        files.update(platform_files(board))
    elif board.platformio is None:
        raise PlatformIOError(f"{board.name}: board TOML has no [platformio] table")
    return dict(sorted(files.items()))
