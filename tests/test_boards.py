"""Board TOMLs: every shipped file validates, the required boards exist with their datasheet
figures, lookups are case-insensitive with aliases, and broken files fail naming file and field."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from microtrain.compiler.errors import BoardError, MicrotrainError
from microtrain.host.boards import all_boards, get_board, load_board, normalize
from microtrain.host.resources import boards_dir

KiB, MiB, MHz = 1024, 1024 * 1024, 1_000_000

# name -> (core, isa, fpu, dsp, sram, flash, clock): datasheet figures
REQUIRED = {
    "STM32F746G-DISCO": ("cortex-m7", "armv7e-m", "sp", True, 320 * KiB, 1 * MiB, 216 * MHz),
    "NUCLEO-F411RE": ("cortex-m4", "armv7e-m", "sp", True, 128 * KiB, 512 * KiB, 100 * MHz),
    "nRF52840-DK": ("cortex-m4", "armv7e-m", "sp", True, 256 * KiB, 1 * MiB, 64 * MHz),
    "Raspberry Pi Pico": ("cortex-m0plus", "armv6-m", "none", False, 264 * KiB, 2 * MiB, 133 * MHz),
    "ESP32-C3-DevKitM-1": ("rv32imc", "rv32imc", "none", False, 400 * KiB, 4 * MiB, 160 * MHz),
    "HiFive1 Rev B": ("rv32imac", "rv32imac", "none", False, 16 * KiB, 4 * MiB, 320 * MHz),
    "Arduino Nano 33 BLE": ("cortex-m4", "armv7e-m", "sp", True, 256 * KiB, 1 * MiB, 64 * MHz),
}
EMULATED = {"qemu-m4": ("mps2-an386", "cortex-m4"), "qemu-m7": ("mps2-an500", "cortex-m7"),
            "qemu-rv32": ("sifive_e", "rv32imac")}


def test_all_shipped_boards_validate():
    boards = all_boards()
    files = sorted(boards_dir().glob("*.toml"))
    assert len(boards) == len(files) >= len(REQUIRED) + len(EMULATED)
    for b in boards:
        assert 0 < b.usable_sram_bytes < b.sram_bytes
        assert 0 < b.usable_flash_bytes < b.flash_bytes
        assert b.path.name == normalize(b.name) + ".toml"
        assert b.platformio is not None or b.qemu is not None
        assert b.to_json()["name"] == b.name


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_boards_have_datasheet_figures(name):
    core, isa, fpu, dsp, sram, flash, clock = REQUIRED[name]
    b = get_board(name)
    assert (b.core, b.isa, b.fpu, b.dsp) == (core, isa, fpu, dsp)
    assert (b.sram_bytes, b.flash_bytes, b.clock_hz) == (sram, flash, clock)
    assert not b.emulated and b.platformio is not None


@pytest.mark.parametrize("name", sorted(EMULATED))
def test_emulated_boards(name):
    machine, core = EMULATED[name]
    b = get_board(name)
    assert b.emulated and b.qemu.machine == machine and b.core == core
    if b.arch == "arm":
        assert (b.qemu.ram_base, b.qemu.flash_base, b.qemu.uart) == (0x20000000, 0x0, 0x40004000)
        assert b.qemu_binary == "qemu-system-arm"
    else:
        assert (b.qemu.ram_base, b.qemu.flash_base, b.qemu.uart) == (0x80000000, 0x20400000, 0x10013000)
        assert b.sram_bytes == 16 * KiB and b.qemu_binary == "qemu-system-riscv32"


@pytest.mark.parametrize("query", ["STM32F746G-DISCO", "stm32f746g-disco", "disco_f746ng", "DISCO-F746NG",
                                   " Stm32F746G_Disco "])
def test_lookup_is_case_insensitive_with_aliases(query):
    assert get_board(query).name == "STM32F746G-DISCO"


def test_more_aliases():
    assert get_board("pico").name == "Raspberry Pi Pico"
    assert get_board("hifive1 rev b").name == "HiFive1 Rev B"
    assert get_board("NANO33BLE").name == "Arduino Nano 33 BLE"
    assert get_board("mps2-an386").name == "qemu-m4"


def test_unknown_board_lists_known_boards():
    with pytest.raises(BoardError) as e:
        get_board("stm32f999")
    msg = str(e.value)
    assert isinstance(e.value, MicrotrainError) and "\n" not in msg
    assert "unknown board 'stm32f999'" in msg
    for name in ("stm32f746g-disco", "qemu-m4", "hifive1-rev-b"):
        assert name in msg


def test_gcc_flags():
    assert get_board("qemu-rv32").gcc_flags() == ["-march=rv32imac", "-mabi=ilp32"]
    assert get_board("pico").gcc_flags(hard_float=True) == ["-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"]
    assert "-mfpu=fpv4-sp-d16" in get_board("qemu-m4").gcc_flags(hard_float=True)


# ---- broken files ---------------------------------------------------------------------------------

GOOD = """\
name = "Test Board"
description = "a test board"
core = "cortex-m4"
isa = "armv7e-m"
clock_hz = 1_000_000
sram_bytes = 1024
flash_bytes = 4096
reserved_sram_bytes = 100
reserved_flash_bytes = 0

[features]
dsp = true
fpu = "sp"

[platformio]
platform = "p"
board = "b"
framework = "f"
"""


def _write(tmp_path: Path, text: str, name: str = "test-board.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_file_loads(tmp_path):
    b = load_board(_write(tmp_path, GOOD))
    assert b.usable_sram_bytes == 924 and b.platformio.board == "b"


@pytest.mark.parametrize("old,new,field", [
    ('sram_bytes = 1024', 'sram_bytes = "1 KB"', "sram_bytes"),
    ('sram_bytes = 1024', 'sram_bytes = 0', "sram_bytes"),
    ('sram_bytes = 1024\n', '', "sram_bytes"),
    ('clock_hz = 1_000_000', 'clock_hz = true', "clock_hz"),
    ('reserved_sram_bytes = 100', 'reserved_sram_bytes = 1024', "reserved_sram_bytes"),
    ('core = "cortex-m4"', 'core = "cortex-m99"', "core"),
    ('isa = "armv7e-m"', 'isa = "armv6-m"', "isa"),
    ('fpu = "sp"', 'fpu = "half"', "features.fpu"),
    ('dsp = true', 'dsp = "yes"', "features.dsp"),
    ('framework = "f"\n', '', "platformio.framework"),
    ('[platformio]\nplatform = "p"\nboard = "b"\nframework = "f"\n', '', "platformio"),
    ('name = "Test Board"', 'name = "Other Board"', "name"),
    ('description = "a test board"', 'description = "x"\nsram_kb = 3', "sram_kb"),
])
def test_broken_field_names_file_and_field(tmp_path, old, new, field):
    assert old in GOOD
    p = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(BoardError) as e:
        load_board(p)
    msg = str(e.value)
    assert str(p) in msg and f"'{field}'" in msg and "\n" not in msg


def test_riscv_consistency(tmp_path):
    text = (GOOD.replace('core = "cortex-m4"', 'core = "rv32imc"').replace('isa = "armv7e-m"', 'isa = "rv32imc"')
            .replace("dsp = true", "dsp = false"))
    with pytest.raises(BoardError, match="features.fpu"):  # sp needs the F extension
        load_board(_write(tmp_path, text))
    assert load_board(_write(tmp_path, text.replace('fpu = "sp"', 'fpu = "none"'))).arch == "riscv"


def test_invalid_toml(tmp_path):
    with pytest.raises(BoardError, match="invalid TOML"):
        load_board(_write(tmp_path, GOOD + "\nthis is = = not toml\n"))


def test_emulated_board_needs_no_platformio(tmp_path):
    text = GOOD.split("[platformio]")[0] + (
        '[qemu]\nmachine = "mps2-an386"\nram_base = 0x20000000\nflash_base = 0\nuart = 0x40004000\n')
    assert load_board(_write(tmp_path, text)).emulated
    with pytest.raises(BoardError, match="qemu.uart"):
        load_board(_write(tmp_path, text.replace("uart = 0x40004000\n", "")))


def test_duplicate_alias_across_files(tmp_path):
    d = tmp_path / "boards"
    d.mkdir()
    shutil.copy(boards_dir() / "qemu-m4.toml", d)
    (d / "test-board.toml").write_text(GOOD.replace('name = "Test Board"', 'name = "Test Board"\naliases = ["AN386"]'))
    with pytest.raises(BoardError, match="already used"):
        all_boards(d)
    with pytest.raises(BoardError, match="no board files"):
        all_boards(tmp_path / "empty")
