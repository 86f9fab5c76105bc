"""Ports of the real boards (firmware/port/<framework>/, compiler/codegen/project.py REAL_PORTS).

What can be checked without the vendor SDKs (PlatformIO cannot download them here):

* every real board's compiled folder (``microtrain compile``) holds its framework's port, builds it
  (platformio.ini build_src_filter, or the CMake list of ESP-IDF / Zephyr), passes
  ``-include mt_port.h``, and carries the framework settings the port relies on (prj.conf,
  sdkconfig.defaults, the freedom-e-sdk stack size);
* the board name a port reports resolves to its board and fits HELLO_INFO (16 characters);
* each port compiles with the cross compiler of its core against the stub SDK headers in
  tests/fake_sdk/<framework>/ (signatures copied from the SDK documentation), with
  ``-Wall -Wextra -Werror``, next to the device loop and the generated program, and defines every
  function of mt_port.h with C linkage plus its entry point (main, setup/loop, app_main). This
  catches mistakes in our code (typos, wrong argument types, C++ linkage, warnings); it cannot catch
  a stub that differs from the real SDK.

The compile parts skip without arm-none-eabi-gcc / -g++ or riscv64-unknown-elf-gcc.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from microtrain.compiler.codegen import platformio as mtpio
from microtrain.compiler.codegen.project import REAL_PORTS, device_sources, real_layout, real_port, runtime_sources
from microtrain.host.boards import all_boards, get_board
from microtrain.host.cli import cli

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "examples" / "digits_cnn.onnx")
FAKE_SDK = Path(__file__).resolve().parent / "fake_sdk"
REAL = [b.name for b in all_boards() if b.platformio is not None and b.qemu is None]
PORT_H = ROOT / "firmware" / "include" / "mt_port.h"

#: board -> (compiler, target flags, extra defines the SDK's build system would pass)
TARGETS = {
    "NUCLEO-F411RE": ("arm-none-eabi-", ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"], ["-DSTM32F411xE"]),
    "STM32F746G-DISCO": ("arm-none-eabi-", ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=soft"], ["-DSTM32F746xx"]),
    "nRF52840-DK": ("arm-none-eabi-", ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"],
                    ["-DCONFIG_CPU_CORTEX_M_HAS_DWT=1", "-DCONFIG_THREAD_STACK_INFO=1", "-DCONFIG_INIT_STACKS=1"]),
    "Arduino Nano 33 BLE": ("arm-none-eabi-", ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"], []),
    "Raspberry Pi Pico": ("arm-none-eabi-", ["-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"], []),
    "ESP32-C3-DevKitM-1": ("riscv64-unknown-elf-", ["-march=rv32imc", "-mabi=ilp32", "-ffreestanding"], []),
    "HiFive1 Rev B": ("riscv64-unknown-elf-", ["-march=rv32imac", "-mabi=ilp32", "-ffreestanding"], []),
}
#: C standard our sources are compiled with under each framework (build_src_flags -std=c99; ESP-IDF gnu17)
C_STD = {"espidf": "-std=gnu17"}
#: more stub variants: (board, extra flags) compiled as well
VARIANTS = [
    ("NUCLEO-F411RE", ["-DSTUB_HAL_CONST_TX"]),  # newer STM32CubeF4: HAL_UART_Transmit(const uint8_t *)
    ("nRF52840-DK", []),  # no DWT, no stack info: k_cycle_get_32() and zeros
    ("HiFive1 Rev B", ["-march=rv32imac_zicsr"]),  # Zicsr in -march: the plain csrr
]
ENTRY = {"stm32cube": ["main", "SysTick_Handler"], "zephyr": ["main"], "freedom-e-sdk": ["main"],
         "espidf": ["app_main"], "arduino": ["_Z5setupv", "_Z4loopv"]}


def port_functions() -> list[str]:
    """The functions mt_port.h declares."""
    return sorted(set(re.findall(r"^[a-z][\w ]*?\**\s*\b(mt_port_\w+)\(", PORT_H.read_text(), re.M)))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """board name -> compiled folder (microtrain compile of the example model)."""
    base = tmp_path_factory.mktemp("real")
    out = {}
    for i, name in enumerate(REAL):
        d = base / f"b{i}"
        r = CliRunner().invoke(cli, ["compile", MODEL, "--board", name, "-o", str(d)], catch_exceptions=True)
        assert r.exit_code == 0, (name, r.output)
        out[name] = d
    return out


def test_every_real_board_has_a_port():
    assert REAL, "no real boards"
    assert set(TARGETS) == set(REAL), "TARGETS must list every real board"
    for name in REAL:
        b = get_board(name)
        port = real_port(b)
        assert port is not None, f"{name}: no port for framework {b.platformio.framework}"
        for f in port.sources:
            assert (ROOT / "firmware" / "port" / port.name / f).is_file(), (name, f)
    assert real_port(get_board("qemu-m4")) is None
    assert sorted(REAL_PORTS) == sorted(p.name for p in REAL_PORTS.values())


def test_port_functions_parsed():
    fns = port_functions()
    assert "mt_port_init" in fns and "mt_port_board" in fns and "mt_port_stack_high_water" in fns and len(fns) >= 12


@pytest.mark.parametrize("name", REAL)
def test_folder_builds_its_port(folders, name):
    b = get_board(name)
    port = real_port(b)
    d = folders[name]
    files = [f"port/{port.name}/{f}" for f in port.sources]
    for f in files:
        assert (d / f).read_bytes() == (ROOT / "firmware" / f).read_bytes(), f
    assert (d / "src/device/mt_main.c").is_file() == port.main
    ini = (d / "platformio.ini").read_text()
    assert f"framework = {b.platformio.framework}\n" in ini
    framework = b.platformio.framework
    if framework in mtpio.CMAKE_FRAMEWORKS:
        listing = (d / mtpio.CMAKE_FRAMEWORKS[framework][1]).read_text()
        for f in files:
            assert f'../{f}"' in listing, f
        assert ('../src/device/mt_main.c"' in listing) == port.main
        assert '"SHELL:-include mt_port.h"' in listing
        assert f'../port/{port.name}"' in listing  # include dir
    else:
        filt = ini.split("build_src_filter =\n", 1)[1].split("monitor_speed", 1)[0].split()
        for f in files:
            assert f"+<{f}>" in filt, f
        assert ("+<src/device/mt_main.c>" in filt) == port.main
        assert "+<src/device/mt_device.c>" in filt and "+<src/proto/mt_frame.c>" in filt
        assert "    -include mt_port.h\n" in ini and f"    -Iport/{port.name}\n" in ini
        for flag in port.ldflags:
            assert f"    {flag}\n" in ini
        for define in port.defines:
            assert f"    -D{define}\n" in ini
    if framework == "zephyr":
        conf = (d / "zephyr" / "prj.conf").read_text()
        for opt in ("CONFIG_SERIAL=y", "CONFIG_UART_CONSOLE=n", "CONFIG_PRINTK=n", "CONFIG_BOOT_BANNER=n",
                    "CONFIG_THREAD_STACK_INFO=y", "CONFIG_INIT_STACKS=y", "CONFIG_MAIN_STACK_SIZE="):
            assert opt in conf, opt
    if framework == "espidf":
        conf = (d / "sdkconfig.defaults").read_text()
        for opt in ("CONFIG_LOG_DEFAULT_LEVEL_NONE=y", "CONFIG_BOOTLOADER_LOG_LEVEL_NONE=y",
                    "# CONFIG_ESP_TASK_WDT_CHECK_IDLE_TASK_CPU0 is not set", "CONFIG_ESP_MAIN_TASK_STACK_SIZE="):
            assert opt in conf, opt
    readme = (d / "README.md").read_text()
    assert f"`port/{port.name}/`" in readme


def test_cmake_frameworks_reject_link_flags():
    b = get_board("nrf52840-dk")
    with pytest.raises(mtpio.PlatformIOError, match="link flags"):
        mtpio.project_files(b, {"sources": ["mt_model.c"], "ldflags": ["-Wl,--defsym=x=1"]})


@pytest.mark.parametrize("name", REAL)
def test_port_board_name(name):
    """The name in HELLO_INFO (the port's MT_PORT_BOARD default) resolves to the board, <= 16 chars."""
    b = get_board(name)
    port = real_port(b)
    names = []
    for f in port.sources:
        names += re.findall(r'#define MT_PORT_BOARD "([^"]+)"', (ROOT / "firmware" / "port" / port.name / f).read_text())
    assert names, f"{port.name}: no MT_PORT_BOARD default"
    mine = [n for n in names if get_board(n).name == b.name]
    assert len(mine) == 1, (name, names)
    assert len(mine[0]) <= 16, mine[0]


def _compile_cmd(folder: Path, name: str, defines: list[str]) -> tuple[list[list[str]], list[Path]]:
    """Compiler commands (one per language) and the object files they write."""
    b = get_board(name)
    port = real_port(b)
    prefix, target, sdk_defs = TARGETS[name]
    lay = real_layout(b, runtime_sources(b), device_sources(b))
    incs = [f"-I{folder / d}" for d in lay["include_dirs"]] + [f"-I{FAKE_SDK / port.name}"]
    defs = [f"-D{d}" for d in lay.get("defines", [])] + (["-DMT_USE_DSP"] if b.dsp else []) + sdk_defs + defines
    common = [*target, "-Wall", "-Wextra", "-Werror", "-O2", *incs, *defs, *lay["cflags"]]
    device = [s for s in lay["sources"] if s.startswith(("src/device/", "src/proto/", "port/"))] + ["mt_model.c"]
    c_src = [s for s in device if s.endswith(".c")]
    cxx_src = [s for s in device if s.endswith(".cpp")]
    cmds, objs = [], []
    out = folder / "build-stub"
    out.mkdir(exist_ok=True)
    for srcs, cc, std in ((c_src, prefix + "gcc", C_STD.get(port.name, "-std=c99")),
                          (cxx_src, prefix + "g++", "-std=gnu++14")):
        for s in srcs:
            obj = out / (s.replace("/", "_") + ".o")
            cmds.append([cc, std, *common, "-c", str(folder / s), "-o", str(obj)])
            objs.append(obj)
    return cmds, objs


@pytest.mark.parametrize("name,defines", [(n, []) for n in REAL] + VARIANTS,
                         ids=[n for n in REAL] + [f"{n}-variant{i}" for i, (n, _) in enumerate(VARIANTS)])
def test_port_compiles_against_stub_sdk(folders, name, defines):
    cmds, objs = _compile_cmd(folders[name], name, defines)
    for tool in sorted({c[0] for c in cmds}):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    for cmd in cmds:
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0, " ".join(cmd) + "\n" + p.stdout + p.stderr
    nm = cmds[0][0].rsplit("-", 1)[0] + "-nm"
    if shutil.which(nm) is None:
        return
    defined: set[str] = set()
    for obj in objs:
        out = subprocess.run([nm, "--defined-only", str(obj)], capture_output=True, text=True, check=True).stdout
        defined |= {line.split()[-1] for line in out.splitlines() if line.strip()}
    port = real_port(get_board(name))
    missing = [f for f in port_functions() + ENTRY[port.name] + ["mt_device_init", "mt_device_poll", "mt_train_step"]
               if f not in defined]
    assert not missing, f"{name}: not defined (or not with C linkage): {missing}"
    if not port.main:
        assert "main" not in defined, f"{name}: the framework owns main()"
