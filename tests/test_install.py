"""Packaging: a regular (non-editable) wheel carries the code and the package data, and an installed
microtrain finds its boards and firmware inside its own install location, not in the source tree;
the editable dev install resolves them to the source tree.

The wheel is built from a copy of the tree (so the build leaves nothing in the checkout) and
installed with ``pip install --target``. The installed copy runs under ``python -S`` with
PYTHONPATH = [target, dev site-packages]: ``-S`` skips site processing, so the editable finder's
``.pth`` hook is never installed and cannot shadow the wheel.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PACKAGE_DIRS = {"compiler": "microtrain/compiler", "host": "microtrain/host", "firmware": "microtrain/firmware",
                "boards": "microtrain/boards"}
#: build products that may sit in a developer's firmware/ tree and are not meant to ship
BUILD_PRODUCTS = {".o", ".obj", ".elf", ".bin", ".hex", ".map", ".a", ".d", ".pyc", ".lst"}
BUILD_DIRS = {"__pycache__", "build", ".pio", ".git"}

pytestmark = pytest.mark.slow


def _source_files(sub: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Wheel paths of the files under ROOT/sub that must ship (``suffixes=None``: every source file)."""
    base = ROOT / sub
    out = []
    for p in base.rglob("*"):
        rel = p.relative_to(base)
        if not p.is_file() or BUILD_DIRS & set(rel.parts[:-1]) or p.name.startswith("."):
            continue
        if (suffixes is None and p.suffix not in BUILD_PRODUCTS) or (suffixes and p.suffix in suffixes):
            out.append(PACKAGE_DIRS[sub] + "/" + rel.as_posix())
    return sorted(out)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for sub in PACKAGE_DIRS:
        shutil.copytree(ROOT / sub, src / sub, ignore=ignore)
    r = subprocess.run([PY, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist"),
                        str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (work / "dist").glob("microtrain-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("target")
    r = subprocess.run([PY, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(target),
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return target


def _run_installed(target: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])
    return subprocess.run([PY, "-S", *args], capture_output=True, text=True, env=env, cwd=target.parent,
                          timeout=120)


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("microtrain/compiler/ir.py", "microtrain/compiler/inspect.py", "microtrain/host/cli.py",
                 "microtrain/host/resources.py", "microtrain/firmware/README.md",
                 "microtrain/compiler/memory/stack_table.json"):
        assert must in names, must
    assert not any(n.startswith("microtrain/__init__") for n in names), "microtrain must stay a namespace"
    expected = (_source_files("compiler", (".py",)) + _source_files("host", (".py",))
                + _source_files("boards") + _source_files("firmware"))
    missing = [n for n in expected if n not in names]
    assert not missing, f"source files missing from the wheel (packages / package-data in pyproject.toml): {missing}"
    assert len([n for n in names if n.startswith("microtrain/boards/") and n.endswith(".toml")]) >= 10
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "microtrain = microtrain.host.cli:main" in entry


def test_installed_package_uses_its_own_data(installed):
    code = (
        "import json, microtrain.host.cli as c\n"
        "from microtrain.host.resources import boards_dir, firmware_dir\n"
        "from microtrain.host.boards import all_boards\n"
        "import microtrain.compiler.ir as ir\n"
        "print(json.dumps({'cli': c.__file__, 'ir': ir.__file__, 'boards': str(boards_dir()),\n"
        "                  'firmware': str(firmware_dir()), 'n': len(all_boards()),\n"
        "                  'files': sorted(b.path.name for b in all_boards())}))\n"
    )
    r = _run_installed(installed, "-c", code)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    target = installed.resolve()
    for key in ("cli", "ir", "boards", "firmware"):
        p = Path(got[key]).resolve()
        assert p.is_relative_to(target), (key, p)
        assert not p.is_relative_to(ROOT), (key, p)
    assert got["n"] >= 10 and "stm32f746g-disco.toml" in got["files"]
    assert (Path(got["firmware"]) / "README.md").is_file()


def test_installed_cli_runs_as_module(installed):
    r = _run_installed(installed, "-m", "microtrain.host.cli", "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"microtrain {version('microtrain')}"
    r = _run_installed(installed, "-m", "microtrain.host.cli", "boards", "--json")
    assert r.returncode == 0, r.stderr
    assert {"qemu-m4", "HiFive1 Rev B"} <= {b["name"] for b in json.loads(r.stdout)["boards"]}
    r = _run_installed(installed, "-m", "microtrain.host.cli", "boards", "nope")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown board") and "Traceback" not in r.stderr


def test_editable_dev_install():
    exe = Path(PY).parent / "microtrain"
    if not exe.exists():
        pytest.skip("no console script next to the interpreter (not running from the dev venv)")
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"microtrain {version('microtrain')}"
    code = ("from microtrain.host.resources import boards_dir, firmware_dir\n"
            "print(boards_dir()); print(firmware_dir())")
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    boards, firmware = (Path(line).resolve() for line in r.stdout.split())
    assert boards == (ROOT / "boards").resolve() and firmware == (ROOT / "firmware").resolve()
