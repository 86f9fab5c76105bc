"""PlatformIO projects of compiled folders (compiler/codegen/platformio.py, the local platform in
boards/platformio/microtrain-local, tools/pio_offline.py; docs/platformio.md).

Every real board's platformio.ini passes `pio project config` and `--lint`; for qemu-m4 and
qemu-rv32 a real compiled folder builds with `pio run` into firmware.elf without network (the
command runs in a network namespace without interfaces when `unshare -n` works, otherwise with
proxies pointing at a closed port), the core dir holds nothing but the offline tool-scons and the
platform link afterwards, and the image answers HELLO with HELLO_INFO under QEMU.
Skips without platformio/SCons (pip install -e '.[pio]'); the build parts skip without the cross
compilers, the boot check without QEMU.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("platformio")
pytest.importorskip("SCons")

from microtrain.compiler.codegen import platformio as mtpio  # noqa: E402
from microtrain.host.boards import all_boards, get_board  # noqa: E402
from microtrain.host.cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "examples" / "digits_cnn.onnx")
REAL = [b.name for b in all_boards() if b.platformio is not None and b.qemu is None]
EMULATED = [b.name for b in all_boards() if b.qemu is not None]
RUN_BOARDS = ["qemu-m4", "qemu-rv32"]


def _offline_tool():
    spec = importlib.util.spec_from_file_location("pio_offline", ROOT / "tools" / "pio_offline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """A PlatformIO core dir prepared by tools/pio_offline.py, and the environment to run pio with."""
    d = tmp_path_factory.mktemp("pio-core")
    return d, _offline_tool().prepare(d)


@lru_cache(maxsize=1)
def _netless() -> list[str]:
    """A command prefix that runs without network (a new, empty network namespace), or []."""
    unshare = shutil.which("unshare")
    if unshare:
        for pre in ([unshare, "-n"], [unshare, "-rn"]):
            if subprocess.run([*pre, "true"], capture_output=True).returncode == 0:
                return pre
    return []


def pio(core, args, cwd, path: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(core[1])
    if path is not None:
        env["PATH"] = path
    prefix = _netless()
    if not prefix:  # any connection attempt fails at once
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env[k] = "http://127.0.0.1:9"
    return subprocess.run([*prefix, sys.executable, "-m", "platformio", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def fake_folder(d: Path, board) -> mtpio.Layout:
    """A minimal folder with the layout of a compiled one (dummy sources) and its PlatformIO files."""
    layout = mtpio.Layout(sources=("mt_model.c", "src/kernels/mt_x.c", "src/device/mt_device.c",
                                   "port/p/startup.c"),
                          include_dirs=(".", "include", "port/p"), defines=("MT_DEVICE_MAX_PAYLOAD=256",),
                          cflags=("-include", "mt_port.h"), port="p")
    for s in layout.sources:
        (d / s).parent.mkdir(parents=True, exist_ok=True)
        (d / s).write_text("int mt_dummy_%d;\n" % len(s))
    write(d, mtpio.project_files(board, layout))
    return layout


# ---- tools/pio_offline.py ------------------------------------------------------------------------

def test_offline_core_dir(core, tmp_path):
    d, env = core
    from platformio.dependencies import get_core_dependencies

    pkg = d / "packages" / "tool-scons"
    meta = json.loads((pkg / ".piopm").read_text())
    want = get_core_dependencies()["tool-scons"].lstrip("~^=")
    assert meta["name"] == "tool-scons" and meta["version"] == want and meta["spec"]["owner"] == "platformio"
    assert json.loads((pkg / "package.json").read_text())["version"] == want
    assert (pkg / "SCons" / "Script" / "Main.py").is_file()
    p = subprocess.run([sys.executable, str(pkg / "scons.py"), "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and "SCons" in p.stdout, p.stdout + p.stderr
    state = json.loads((d / "appstate.json").read_text())
    assert state["settings"]["enable_telemetry"] is False
    assert env["PLATFORMIO_CORE_DIR"] == str(d.resolve()) and env["PLATFORMIO_DISABLE_UPGRADE_CHECK"] == "true"
    # idempotent: a second run keeps the package as it is
    mtime = (pkg / "scons.py").stat().st_mtime_ns
    assert _offline_tool().prepare(d) == env
    assert (pkg / "scons.py").stat().st_mtime_ns == mtime
    # the command line prints the environment for eval
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "pio_offline.py"), "--core-dir", str(tmp_path / "c"),
                        "--print-env"], capture_output=True, text=True)
    assert p.returncode == 0 and f"export PLATFORMIO_CORE_DIR={tmp_path / 'c'}" in p.stdout, p.stdout + p.stderr


# ---- platformio.py -------------------------------------------------------------------------------

def test_shipped_board_manifests_match_the_tomls():
    fix = ("regenerate: python -c 'from microtrain.compiler.codegen.platformio import write_board_manifests; "
           "write_board_manifests()'")
    d = mtpio.platform_source_dir() / "boards"
    shipped = sorted(p.stem for p in d.glob("*.json"))
    assert shipped == sorted(mtpio.board_id(get_board(n)) for n in EMULATED), fix
    for name in EMULATED:
        b = get_board(name)
        assert (d / f"{mtpio.board_id(b)}.json").read_text() == mtpio.board_manifest_text(b), (name, fix)


@pytest.mark.parametrize("name", REAL + EMULATED)
def test_ini_selects_exactly_the_layout(name):
    b = get_board(name)
    layout = {"sources": ["mt_model.c", "src/kernels/mt_a.c", "port/x/startup.c"], "include_dirs": [".", "include"],
              "ldscript": "port/x/link.ld" if b.qemu else None, "port": "x"}
    files = mtpio.project_files(b, layout)
    ini = files["platformio.ini"]
    env = mtpio.env_name(b)
    assert f"[env:{env}]" in ini and f"default_envs = {env}" in ini
    assert ("-DMT_USE_DSP" in ini) == b.dsp
    assert "monitor_speed = 115200" in ini
    framework = None if b.qemu else b.platformio.framework
    if framework in mtpio.CMAKE_FRAMEWORKS:
        assert "build_src_filter =" not in ini
        lists = files[mtpio.CMAKE_FRAMEWORKS[framework][1]]
        for s in layout["sources"]:
            assert f'../{s}"' in lists, (s, lists)
    else:
        filt = ini.split("build_src_filter =\n", 1)[1].split("monitor_speed", 1)[0].split()
        assert filt == ["-<*>"] + [f"+<{s}>" for s in layout["sources"]]
    if b.qemu:
        assert "platform = symlink://${PROJECT_DIR}/platformio/microtrain-local" in ini
        assert "board_build.ldscript = port/x/link.ld" in ini and "-Werror" in ini
        assert json.loads(files[f"platformio/microtrain-local/boards/{env}.json"]) == mtpio.board_manifest(b)
        for rel in mtpio.PLATFORM_FILES:
            assert f"platformio/microtrain-local/{rel}" in files
    else:
        assert f"platform = {b.platformio.platform}\n" in ini and f"framework = {b.platformio.framework}\n" in ini
        assert "-Werror" not in ini and not any(k.startswith("platformio/") for k in files)


@pytest.mark.parametrize("bad", ["../x.c", "/abs/x.c", "a/../../x.c", "x<y.c", "a b.c"])
def test_layout_paths_must_stay_inside(bad):
    with pytest.raises(mtpio.PlatformIOError):
        mtpio.project_files(get_board("qemu-m4"), {"sources": ["mt_model.c", bad]})


def test_layout_errors():
    b = get_board("qemu-m4")
    with pytest.raises(mtpio.PlatformIOError, match="unknown keys"):
        mtpio.project_files(b, {"sources": ["mt_model.c"], "srcs": []})
    with pytest.raises(mtpio.PlatformIOError, match="twice"):
        mtpio.project_files(b, {"sources": ["mt_model.c", "mt_model.c"]})


# ---- pio project config ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL + EMULATED)
def test_pio_project_config(core, tmp_path, name):
    b = get_board(name)
    fake_folder(tmp_path, b)
    p = pio(core, ["project", "config", "--json-output"], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    sections = dict((s, dict(opts)) for s, opts in json.loads(p.stdout))
    env = sections[f"env:{mtpio.env_name(b)}"]
    if b.qemu:
        assert env["platform"] == f"symlink://{tmp_path}/platformio/microtrain-local"
        assert env["board"] == mtpio.board_id(b)
    else:
        assert (env["platform"], env["board"], env["framework"]) == (
            b.platformio.platform, b.platformio.board, [b.platformio.framework])
    p = pio(core, ["project", "config", "--lint"], tmp_path)
    assert p.returncode == 0 and "free from linting errors" in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("name", REAL)
def test_pio_project_config_real_folder(core, tmp_path, name):
    """The folder `microtrain compile` writes for a real board (its SDK port included, see
    tests/test_real_ports.py) passes `pio project config` and `--lint`, and its build selects the port."""
    from microtrain.compiler.codegen.project import real_port

    b = get_board(name)
    d = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compile", MODEL, "--board", name, "-o", str(d)], catch_exceptions=True)
    assert r.exit_code == 0, r.output
    p = pio(core, ["project", "config", "--json-output"], d)
    assert p.returncode == 0, p.stdout + p.stderr
    sections = dict((s, dict(opts)) for s, opts in json.loads(p.stdout))
    env = sections[f"env:{mtpio.env_name(b)}"]
    assert (env["platform"], env["board"], env["framework"]) == (
        b.platformio.platform, b.platformio.board, [b.platformio.framework])
    port = real_port(b)
    if b.platformio.framework not in mtpio.CMAKE_FRAMEWORKS:
        for f in port.sources:
            assert f"+<port/{port.name}/{f}>" in env["build_src_filter"], env["build_src_filter"]
    assert "-include mt_port.h" in env["build_src_flags"]
    p = pio(core, ["project", "config", "--lint"], d)
    assert p.returncode == 0 and "free from linting errors" in p.stdout, p.stdout + p.stderr


# ---- pio run, offline --------------------------------------------------------------------------------

def _boots(board, elf: Path, cwd: Path) -> None:
    """The image answers HELLO with HELLO_INFO on its protocol UART under QEMU."""
    from microtrain.compiler.codegen import firmware as fw
    from microtrain.host import protocol as P

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(fw.qemu_command(board, elf, port, icount=False), cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                assert time.monotonic() < end and proc.poll() is None, "QEMU did not listen"
                time.sleep(0.05)
        with sock:
            sock.settimeout(1.0)
            reader, seq = P.FrameReader(), 7
            sock.sendall(b"\x00" + P.encode_message("HELLO", seq))
            end = time.monotonic() + 20
            while time.monotonic() < end:
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                for f in reader.feed(data):
                    if f.seq == seq:
                        assert f.message.name == "HELLO_INFO", f
                        return
            raise AssertionError("no HELLO_INFO within 20 s")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("name", RUN_BOARDS)
def test_pio_run_offline(core, tmp_path, name):
    b = get_board(name)
    cc = ("arm-none-eabi-" if b.arch == "arm" else "riscv64-unknown-elf-") + "gcc"
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    d = tmp_path / name
    r = CliRunner().invoke(cli, ["compile", MODEL, "--board", name, "-o", str(d)], catch_exceptions=True)
    assert r.exit_code == 0, r.output
    if not (d / "platformio.ini").exists():  # until write_project writes them itself
        from microtrain.compiler.codegen.firmware import project_layout

        write(d, mtpio.project_files(b, project_layout(b)))
    t0 = time.monotonic()
    p = pio(core, ["run"], d)
    took = time.monotonic() - t0
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    elf = d / ".pio" / "build" / mtpio.env_name(b) / "firmware.elf"
    assert elf.is_file(), out[-3000:]
    assert "RAM:" in out and "Flash:" in out and "[SUCCESS]" in out, out[-3000:]
    print(f"pio run {name}: {took:.1f} s")
    # nothing was installed but the offline SCons and the link to the folder's platform
    core_dir = core[0]
    assert sorted(os.listdir(core_dir / "packages")) == ["tool-scons"]
    assert sorted(os.listdir(core_dir / "platforms")) == ["microtrain-local.pio-link"]
    downloads = core_dir / ".cache" / "downloads"  # PlatformIO creates it empty
    assert not downloads.exists() or not any(downloads.iterdir())
    # the image is the protocol device
    nm = shutil.which(cc[:-3] + "nm")
    if nm:
        syms = subprocess.run([nm, str(elf)], capture_output=True, text=True).stdout
        for sym in ("mt_train_step", "mt_init", "main"):
            assert f" {sym}\n" in syms, sym
    if shutil.which(b.qemu_binary):
        _boots(b, elf, tmp_path)
    # a clean rebuild is not needed to see the size again
    p = pio(core, ["run", "-t", "size"], d)
    assert p.returncode == 0 and "firmware.elf" in p.stdout, p.stdout + p.stderr


def test_pio_run_without_cross_compiler(core, tmp_path):
    fake_folder(tmp_path, get_board("qemu-m4"))
    p = pio(core, ["run"], tmp_path, path=os.path.dirname(sys.executable))
    assert p.returncode != 0
    assert "cross compiler 'arm-none-eabi-gcc' not found on PATH" in p.stdout + p.stderr, p.stdout + p.stderr
