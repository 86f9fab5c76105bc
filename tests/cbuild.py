"""Host build harness for the firmware C: compile sources into a cached shared library, load it
with ctypes, pass numpy arrays as pointers, re-run a test module under ASan/UBSan, and
compile-check for the cross targets.

    from cbuild import build_shared, load, ptr, run_sanitized_pytest, cross_compile_check

    lib = load([KERNELS / "mt_relu_fwd_s8.c"], "relu")          # MT_SANITIZE=1 -> sanitized build
    lib.mt_relu_fwd_s8(ctypes.byref(params), n, ptr(x, ctypes.c_int8), ptr(y, ctypes.c_int8))

Libraries are cached under ``build/ctest/`` keyed by a hash of the sources, every header under
``firmware/include``, the compiler and the flags, so repeated runs (and pytest-xdist workers) do
not recompile; a build is written to a temporary name and renamed into place (atomic).

Sanitizers: a library built with ``-fsanitize=address`` can only be loaded into a process whose
first loaded object is libasan, so sanitized runs happen in a subprocess started by
``run_sanitized_pytest`` with ``LD_PRELOAD=libasan.so`` and ``MT_SANITIZE=1``; ``load`` honours
``MT_SANITIZE`` (tests can use ``SANITIZE`` to shrink their case counts).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
INCLUDE = FIRMWARE / "include"
KERNELS = FIRMWARE / "src" / "kernels"
#: Arm DSP-extension variants of the hot kernels (``mt_<op>_<pass>_<dtype>_dsp.c``)
DSP_KERNELS = KERNELS / "dsp"
CACHE = ROOT / "build" / "ctest"

HOST_CC = os.environ.get("MT_HOST_CC", "gcc")
HOST_FLAGS = ("-std=c99", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
                  "-g")
#: extra strictness the firmware kernels keep (pass as ``extra_flags``)
PEDANTIC = ("-pedantic",)

#: True inside a ``run_sanitized_pytest`` subprocess
SANITIZE = os.environ.get("MT_SANITIZE", "") not in ("", "0")

CROSS_TARGETS = {
    "cortex-m4": ("arm-none-eabi-gcc", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft")),
    "cortex-m7": ("arm-none-eabi-gcc", ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=soft")),
    "cortex-m33": ("arm-none-eabi-gcc", ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=soft")),
    "cortex-m0plus": ("arm-none-eabi-gcc", ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft")),
    "rv32imac": ("riscv64-unknown-elf-gcc", ("-march=rv32imac", "-mabi=ilp32", "-ffreestanding")),
}
CROSS_FLAGS = ("-c", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")


class BuildError(RuntimeError):
    """The C compiler rejected the sources (message carries the command and its stderr)."""


def _key(cc: str, sources: Sequence[Path], flags: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(cc.encode())
    h.update(b"\0".join(f.encode() for f in flags))
    for src in sources:
        h.update(b"\0src\0" + str(src).encode() + b"\0" + src.read_bytes())
    for hdr in sorted(INCLUDE.rglob("*.h")) if INCLUDE.is_dir() else ():
        h.update(b"\0hdr\0" + str(hdr.relative_to(INCLUDE)).encode() + b"\0" + hdr.read_bytes())
    return h.hexdigest()[:16]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def build_shared(sources: Iterable[Path | str], name: str, extra_flags: Sequence[str] = (),
                 sanitize: bool = False, cache_dir: Path | None = None) -> Path:
    """Compile ``sources`` into ``<cache>/lib<name>-<hash>[-san].so`` (cached) and return its path.

    Flags: ``gcc -std=c99 -O2 -fPIC -shared -Wall -Wextra -Werror -Ifirmware/include``
    + ``extra_flags`` (+ the sanitizer flags when ``sanitize``).
    """
    srcs = [Path(s).resolve() for s in sources]
    for s in srcs:
        if not s.is_file():
            raise FileNotFoundError(s)
    flags = list(HOST_FLAGS) + [f"-I{INCLUDE}"] + list(extra_flags)
    if sanitize:
        flags += list(SANITIZE_FLAGS)
    out_dir = Path(cache_dir) if cache_dir is not None else CACHE
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"lib{name}-{_key(HOST_CC, srcs, flags)}{'-san' if sanitize else ''}.so"
    if out.exists():
        return out
    fd, tmp = tempfile.mkstemp(prefix=f".lib{name}-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        _run([HOST_CC, *flags, "-o", tmp, *map(str, srcs)])
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load(sources: Iterable[Path | str], name: str, extra_flags: Sequence[str] = (),
         sanitize: bool | None = None, cache_dir: Path | None = None) -> ctypes.CDLL:
    """``build_shared`` then ``ctypes.CDLL``; ``sanitize=None`` follows ``MT_SANITIZE``."""
    if sanitize is None:
        sanitize = SANITIZE
    return ctypes.CDLL(str(build_shared(sources, name, extra_flags, sanitize, cache_dir)))


def ptr(arr: np.ndarray, ctype):
    """A ``POINTER(ctype)`` to ``arr``'s data; ``arr`` must be C-contiguous with the matching dtype
    (no silent copies: the callee may write through the pointer)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"ptr: expected a numpy array, got {type(arr).__name__}")
    want = np.dtype(ctype)
    if arr.dtype != want:
        raise TypeError(f"ptr: array dtype {arr.dtype} does not match {ctype.__name__} ({want})")
    if not arr.flags.c_contiguous:
        raise ValueError("ptr: array is not C-contiguous (use np.ascontiguousarray)")
    return arr.ctypes.data_as(ctypes.POINTER(ctype))


def sanitizer_env() -> dict[str, str]:
    """Environment of a process that may load sanitized libraries."""
    libasan = subprocess.run([HOST_CC, "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [libasan, env.get("LD_PRELOAD", "")]))
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env["MT_SANITIZE"] = "1"
    return env


def run_sanitized_pytest(testfile: Path | str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Re-run ``testfile`` in a subprocess under ASan/UBSan (``MT_SANITIZE=1``, libasan preloaded).

    Returns the CompletedProcess (stdout+stderr in ``stdout``); callers assert ``returncode == 0``.
    xdist and the cache provider are disabled in the child.
    """
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           str(testfile), *args]
    return subprocess.run(cmd, env=sanitizer_env(), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def cross_compile_check(sources: Iterable[Path | str], target: str, extra_flags: Sequence[str] = (),
                        out_dir: Path | str | None = None) -> list[Path]:
    """Compile each source to an object for ``target`` (``cortex-m4``, ``cortex-m7``, ``cortex-m33``,
    ``cortex-m0plus``, ``rv32imac``) with ``-c -std=c99 -O2 -Wall -Wextra -Werror`` (+ ``extra_flags``); raise
    BuildError on any diagnostic. ``pytest.skip`` when the cross compiler is not installed.

    Objects go to ``out_dir`` (returned, e.g. for ``nm``) or to a temporary directory that is
    removed (an empty list is returned then).
    """
    if target not in CROSS_TARGETS:
        raise ValueError(f"unknown target {target!r} (one of {', '.join(CROSS_TARGETS)})")
    cc, target_flags = CROSS_TARGETS[target]
    if shutil.which(cc) is None:
        import pytest

        pytest.skip(f"{cc} not installed (make toolchains)")
    with tempfile.TemporaryDirectory(prefix=f"mt-{target}-") as tmp:
        dest = Path(out_dir) if out_dir is not None else Path(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        objs = []
        for i, src in enumerate(Path(s) for s in sources):
            obj = dest / f"{i}_{src.stem}.o"
            _run([cc, *target_flags, *CROSS_FLAGS, f"-I{INCLUDE}", *extra_flags, "-o", str(obj), str(src)])
            objs.append(obj)
        return objs if out_dir is not None else []
