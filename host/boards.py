"""Board descriptions: one TOML per board under ``microtrain.boards`` (schema: boards/README.md).

``all_boards()`` loads and validates every file, ``get_board(name)`` looks one up by name or alias
(case-insensitive; ``_``, spaces and ``-`` are interchangeable). Every problem is a
:class:`~microtrain.compiler.errors.BoardError` naming the file and the field.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from ..compiler.errors import BoardError
from .resources import boards_dir

#: Arm cores -> the ISA they implement.
ARM_CORES = {
    "cortex-m0": "armv6-m",
    "cortex-m0plus": "armv6-m",
    "cortex-m3": "armv7-m",
    "cortex-m4": "armv7e-m",
    "cortex-m7": "armv7e-m",
    "cortex-m23": "armv8-m.base",
    "cortex-m33": "armv8-m.main",
    "cortex-m55": "armv8.1-m.main",
    "cortex-m85": "armv8.1-m.main",
}
#: Arm cores that may carry an FPU / the DSP (SIMD, saturating) extension.
ARM_FPU_CORES = {"cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "cortex-m85"}
ARM_DSP_CORES = {"cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "cortex-m85"}
#: RISC-V cores are named by their ISA string (base + standard extensions, in canonical order).
RISCV_ISA = re.compile(r"^rv32[ie]m?a?f?d?c?$")
FPU_KINDS = ("none", "sp", "dp")
UART_KINDS = ("cmsdk-apb", "sifive", "ns16550a")

_REQUIRED_STR = ("name", "description", "core", "isa")
_REQUIRED_INT = ("clock_hz", "sram_bytes", "flash_bytes", "reserved_sram_bytes", "reserved_flash_bytes")
_TOP_KEYS = set(_REQUIRED_STR) | set(_REQUIRED_INT) | {"aliases", "mcu", "features", "platformio", "qemu"}
_FEATURE_KEYS = {"dsp", "fpu"}
_PIO_KEYS = {"platform", "board", "framework"}
_QEMU_KEYS = {"machine", "cpu", "ram_base", "flash_base", "uart", "uart_kind"}


def normalize(name: str) -> str:
    """Lookup key of a board name or alias: lower case, ``_`` and blanks become ``-``."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


@dataclass(frozen=True)
class Qemu:
    machine: str
    ram_base: int
    flash_base: int
    uart: int  # base address of the UART the firmware talks on
    cpu: str | None = None
    uart_kind: str | None = None


@dataclass(frozen=True)
class PlatformIO:
    platform: str
    board: str
    framework: str


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    core: str
    isa: str
    dsp: bool
    fpu: str  # "none" | "sp" | "dp"
    clock_hz: int
    sram_bytes: int
    flash_bytes: int
    reserved_sram_bytes: int  # runtime/framework reserve, not available to the plan (the stack is planned)
    reserved_flash_bytes: int  # bootloader, runtime and framework code, unusable partitions
    path: Path
    aliases: tuple[str, ...] = ()
    mcu: str = ""
    platformio: PlatformIO | None = None
    qemu: Qemu | None = None
    keys: tuple[str, ...] = field(default=(), compare=False)  # normalized name + aliases

    @property
    def arch(self) -> str:
        """``"arm"`` or ``"riscv"``."""
        return "riscv" if self.isa.startswith("rv") else "arm"

    @property
    def emulated(self) -> bool:
        return self.qemu is not None

    @property
    def usable_sram_bytes(self) -> int:
        """SRAM the training plan may use (arena + trainable parameters + optimizer state + the
        planned stack)."""
        return self.sram_bytes - self.reserved_sram_bytes

    @property
    def usable_flash_bytes(self) -> int:
        """Flash the generated program may use (frozen parameters + model code)."""
        return self.flash_bytes - self.reserved_flash_bytes

    @property
    def qemu_binary(self) -> str | None:
        if self.qemu is None:
            return None
        return "qemu-system-riscv32" if self.arch == "riscv" else "qemu-system-arm"

    def gcc_flags(self, hard_float: bool = False) -> list[str]:
        """Target flags for GCC. Soft-float ABI unless ``hard_float`` and the core has an FPU."""
        if self.arch == "riscv":
            return [f"-march={self.isa}", "-mabi=ilp32"]
        flags = [f"-mcpu={self.core}", "-mthumb"]
        if hard_float and self.fpu != "none":
            fpu = {"cortex-m4": "fpv4-sp-d16", "cortex-m7": "fpv5-d16" if self.fpu == "dp" else "fpv5-sp-d16"}
            flags += ["-mfloat-abi=hard", f"-mfpu={fpu.get(self.core, 'auto')}"]
        else:
            flags += ["-mfloat-abi=soft"]
        return flags

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "mcu": self.mcu,
            "core": self.core,
            "isa": self.isa,
            "features": {"dsp": self.dsp, "fpu": self.fpu},
            "clock_hz": self.clock_hz,
            "sram_bytes": self.sram_bytes,
            "flash_bytes": self.flash_bytes,
            "reserved_sram_bytes": self.reserved_sram_bytes,
            "reserved_flash_bytes": self.reserved_flash_bytes,
            "usable_sram_bytes": self.usable_sram_bytes,
            "usable_flash_bytes": self.usable_flash_bytes,
            "emulated": self.emulated,
            "platformio": None if self.platformio is None else vars(self.platformio).copy(),
            "qemu": None if self.qemu is None else vars(self.qemu).copy(),
            "file": self.path.name,
        }


# ---- loading and validation ----------------------------------------------------------------------

def _fail(path: Path, key: str, msg: str) -> BoardError:
    return BoardError(f"{path}: field {key!r}: {msg}")


def _check_keys(path: Path, table: dict, allowed: set[str], prefix: str = "") -> None:
    for k in table:
        if k not in allowed:
            raise _fail(path, prefix + k, f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _str(path: Path, table: dict, key: str, prefix: str = "", required: bool = True) -> str | None:
    if key not in table:
        if required:
            raise _fail(path, prefix + key, "missing")
        return None
    v = table[key]
    if not isinstance(v, str) or not v.strip():
        raise _fail(path, prefix + key, f"expected a non-empty string, got {v!r}")
    return v


def _int(path: Path, table: dict, key: str, prefix: str = "", minimum: int = 0) -> int:
    if key not in table:
        raise _fail(path, prefix + key, "missing")
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        kind = "a positive integer" if minimum > 0 else "a non-negative integer"
        raise _fail(path, prefix + key, f"expected {kind}, got {v!r}")
    return v


def _table(path: Path, data: dict, key: str, required: bool) -> dict | None:
    if key not in data:
        if required:
            raise _fail(path, key, "missing table")
        return None
    if not isinstance(data[key], dict):
        raise _fail(path, key, f"expected a table ([{key}]), got {data[key]!r}")
    return data[key]


def load_board(path: str | os.PathLike) -> Board:
    """Parse and validate one board TOML; raise BoardError naming the file and field."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise BoardError(f"{path}: cannot read board file ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise BoardError(f"{path}: invalid TOML: {e}") from None

    _check_keys(path, data, _TOP_KEYS)
    s = {k: _str(path, data, k) for k in _REQUIRED_STR}
    n = {k: _int(path, data, k, minimum=1 if not k.startswith("reserved") else 0) for k in _REQUIRED_INT}
    mcu = _str(path, data, "mcu", required=False) or ""

    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise _fail(path, "aliases", f"expected a list of non-empty strings, got {aliases!r}")

    core, isa = s["core"], s["isa"]
    if core in ARM_CORES:
        if isa != ARM_CORES[core]:
            raise _fail(path, "isa", f"{core} implements {ARM_CORES[core]!r}, not {isa!r}")
    elif RISCV_ISA.match(core):
        if isa != core:
            raise _fail(path, "isa", f"RISC-V core {core!r} must have isa {core!r}, not {isa!r}")
    else:
        known = ", ".join(list(ARM_CORES) + ["rv32imc", "rv32imac", "rv32imafc", "..."])
        raise _fail(path, "core", f"unknown core {core!r} (known: {known})")

    feats = _table(path, data, "features", required=True)
    _check_keys(path, feats, _FEATURE_KEYS, "features.")
    if not isinstance(feats.get("dsp"), bool):
        raise _fail(path, "features.dsp", f"expected true or false, got {feats.get('dsp')!r}")
    fpu = feats.get("fpu")
    if fpu not in FPU_KINDS:
        raise _fail(path, "features.fpu", f"expected one of {', '.join(FPU_KINDS)}, got {fpu!r}")
    dsp = feats["dsp"]
    if core in ARM_CORES:
        if fpu != "none" and core not in ARM_FPU_CORES:
            raise _fail(path, "features.fpu", f"{core} has no FPU option")
        if dsp and core not in ARM_DSP_CORES:
            raise _fail(path, "features.dsp", f"{core} has no DSP extension")
    else:
        if dsp:
            raise _fail(path, "features.dsp", "RISC-V cores: the packed-SIMD (P) extension is not supported")
        need = {"none": "", "sp": "f", "dp": "d"}[fpu]
        if need and need not in isa[4:]:
            raise _fail(path, "features.fpu", f"fpu {fpu!r} needs the {need.upper()} extension in isa {isa!r}")
        if not need and ("f" in isa[4:] or "d" in isa[4:]):
            raise _fail(path, "features.fpu", f"isa {isa!r} has a floating-point extension but fpu is 'none'")

    for kind in ("sram", "flash"):
        if n[f"reserved_{kind}_bytes"] >= n[f"{kind}_bytes"]:
            raise _fail(path, f"reserved_{kind}_bytes",
                        f"{n[f'reserved_{kind}_bytes']} leaves nothing of {kind}_bytes = {n[f'{kind}_bytes']}")

    qemu = None
    q = _table(path, data, "qemu", required=False)
    if q is not None:
        _check_keys(path, q, _QEMU_KEYS, "qemu.")
        uart_kind = _str(path, q, "uart_kind", "qemu.", required=False)
        if uart_kind is not None and uart_kind not in UART_KINDS:
            raise _fail(path, "qemu.uart_kind", f"expected one of {', '.join(UART_KINDS)}, got {uart_kind!r}")
        qemu = Qemu(
            machine=_str(path, q, "machine", "qemu."),
            cpu=_str(path, q, "cpu", "qemu.", required=False),
            ram_base=_int(path, q, "ram_base", "qemu."),
            flash_base=_int(path, q, "flash_base", "qemu."),
            uart=_int(path, q, "uart", "qemu."),
            uart_kind=uart_kind,
        )

    pio = None
    p = _table(path, data, "platformio", required=qemu is None)  # emulated boards build without it
    if p is not None:
        _check_keys(path, p, _PIO_KEYS, "platformio.")
        pio = PlatformIO(**{k: _str(path, p, k, "platformio.") for k in ("platform", "board", "framework")})

    name = s["name"]
    if path.suffix == ".toml" and path.stem != normalize(name):
        raise _fail(path, "name", f"{name!r} must be stored in {normalize(name)}.toml")
    keys = tuple(dict.fromkeys([normalize(name)] + [normalize(a) for a in aliases]))
    return Board(
        name=name, description=s["description"], core=core, isa=isa, dsp=dsp, fpu=fpu,
        clock_hz=n["clock_hz"], sram_bytes=n["sram_bytes"], flash_bytes=n["flash_bytes"],
        reserved_sram_bytes=n["reserved_sram_bytes"], reserved_flash_bytes=n["reserved_flash_bytes"],
        path=path, aliases=tuple(aliases), mcu=mcu, platformio=pio, qemu=qemu, keys=keys,
    )


@functools.lru_cache(maxsize=8)
def _load_dir(directory: str) -> tuple[Board, ...]:
    files = sorted(Path(directory).glob("*.toml"))
    if not files:
        raise BoardError(f"no board files (*.toml) in {directory}; reinstall microtrain")
    boards = [load_board(f) for f in files]
    owner: dict[str, Board] = {}
    for b in boards:
        for k in b.keys:
            if k in owner and owner[k] is not b:
                raise BoardError(f"{b.path}: name or alias {k!r} is already used by {owner[k].path.name}")
            owner[k] = b
    return tuple(sorted(boards, key=lambda b: (b.emulated, b.name.lower())))


def all_boards(directory: str | os.PathLike | None = None) -> list[Board]:
    """Every board, real boards first, then emulated ones, each group sorted by name."""
    return list(_load_dir(os.fspath(directory) if directory is not None else str(boards_dir())))


def board_names(directory: str | os.PathLike | None = None) -> list[str]:
    return [b.name for b in all_boards(directory)]


def get_board(name: str, directory: str | os.PathLike | None = None) -> Board:
    """Look a board up by name or alias (case-insensitive); BoardError lists the known boards."""
    key = normalize(name)
    boards = all_boards(directory)
    for b in boards:
        if key in b.keys:
            return b
    raise BoardError(f"unknown board {name!r}; known boards: {', '.join(normalize(b.name) for b in boards)}")
