"""`microtrain compile` and the project folder it writes: arena = plan, the generated C compiles
with -Wall -Wextra -Werror for the host and the cross targets, `make` builds libmtmodel.a, and the
planner's flash estimate is within 10% of a Cortex-M4 build. Cross parts skip without toolchains."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import cbuild
from microtrain.compiler.codegen import generate
from microtrain.compiler.codegen.project import is_previous_output, write_project
from microtrain.compiler.schedule import Schedule
from microtrain.host.boards import get_board
from microtrain.host.cli import cli

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "examples" / "digits_cnn.onnx")
M4_BOARD = "nucleo-f411re"  # Cortex-M4F, DSP
RV_BOARD = "qemu-rv32"  # rv32imac
API = ("mt_init", "mt_train_step", "mt_infer", "mt_eval", "mt_params_get", "mt_params_set", "mt_step_count")
EXAMPLE_SCHEDULES = {
    "sparse": [], "bias": ["--schedule", "bias"], "last-k": ["--schedule", "last-k"],
    "fg": ["--schedule", "fg"], "hybrid": ["--schedule", "hybrid"],
}
C_TARGETS = ("host", "cortex-m4", "cortex-m0plus", "rv32imac")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def one_line_error(r, contains: str = "") -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert contains.lower() in lines[0].lower(), lines[0]
    return lines[0]


def arena_bytes(project: Path) -> int:
    h = (project / "mt_model.h").read_text()
    m = re.search(r"#define MT_ARENA_BYTES (\d+)", h)
    assert m, "MT_ARENA_BYTES missing"
    assert "static int32_t mt_arena[MT_ARENA_BYTES / 4];" in (project / "mt_model.c").read_text()
    return int(m.group(1))


def compile_c(project: Path, target: str) -> None:
    """mt_model.c of ``project`` with -Wall -Wextra -Werror for ``target`` (host gcc or cross)."""
    if target == "host":
        if shutil.which(cbuild.HOST_CC) is None:
            pytest.skip("no host C compiler")
        cmd = [cbuild.HOST_CC, *cbuild.CROSS_FLAGS, f"-I{cbuild.INCLUDE}", f"-I{project}", "-o", "/dev/null",
               str(project / "mt_model.c")]
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        return
    extra = [f"-I{project}"] + (["-DMT_USE_DSP"] if target == "cortex-m4" else [])
    cbuild.cross_compile_check([project / "mt_model.c"], target, extra_flags=extra)


# ---- the command ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sparse", "bias", "fg", "hybrid"])
def test_arena_equals_plan(tmp_path, kind):
    opts = EXAMPLE_SCHEDULES[kind]
    r = run("compile", MODEL, "--board", M4_BOARD, *opts, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    p = run("plan", MODEL, "--board", M4_BOARD, *opts, "--json")
    assert p.exit_code == 0, p.output
    plan = json.loads(p.stdout)
    assert arena_bytes(tmp_path / "out") == plan["sram"]["arena_bytes"] == j["sram"]["arena_bytes"]
    assert j["sram"]["persistent_bytes"] == plan["sram"]["persistent_bytes"]
    assert j["flash"]["total_bytes"] == plan["flash"]["params_bytes"] + plan["flash"]["code_bytes_estimate"]
    meta = json.loads((tmp_path / "out" / "mt_model.json").read_text())
    assert meta["hash"] == j["hash"] and meta["arena_bytes"] == plan["sram"]["arena_bytes"]


def test_table_output_files_and_dsp_selection(tmp_path):
    r = run("compile", MODEL, "--board", M4_BOARD, "-o", tmp_path / "m4")
    assert r.exit_code == 0, r.output
    for word in ("model hash", "SRAM arena", "persistent", "flash", "fits"):
        assert word in r.stdout, word
    d = tmp_path / "m4"
    for f in ("mt_model.c", "mt_model.h", "mt_model.json", "Makefile", "README.md", "include/mt_dispatch.h",
              "src/kernels/mt_conv2d_fwd_s8.c"):
        assert (d / f).is_file(), f
    assert list((d / "src/kernels/dsp").glob("*_dsp.c")), "an M4 board gets the DSP variants"
    mk = (d / "Makefile").read_text()
    assert "-DMT_USE_DSP" in mk and "-mcpu=cortex-m4" in mk and "-Os" in mk and "arm-none-eabi-" in mk
    readme = (d / "README.md").read_text()
    for api in ("mt_init", "mt_train_step", "mt_infer", "mt_eval", "mt_params_get", "mt_params_set", "mt_port.h"):
        assert api in readme, api

    r = run("compile", MODEL, "--board", RV_BOARD, "-o", tmp_path / "rv", "--json")
    assert r.exit_code == 0, r.output
    d = tmp_path / "rv"
    assert not (d / "src/kernels/dsp").exists()
    mk = (d / "Makefile").read_text()
    assert "-march=rv32imac -mabi=ilp32" in mk and "riscv64-unknown-elf-" in mk and "MT_USE_DSP" not in mk
    assert json.loads(r.stdout)["files"] == sorted(json.loads(r.stdout)["files"])


def test_output_folder_rules(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    one_line_error(run("compile", MODEL, "--board", M4_BOARD, "-o", foreign), "--force")
    assert (foreign / "notes.txt").read_text() == "keep me"
    # a previous output is replaced (stale files go), a file is refused, --force replaces
    out = tmp_path / "out"
    assert run("compile", MODEL, "--board", M4_BOARD, "-o", out).exit_code == 0
    (out / "build").mkdir()
    (out / "build" / "stale.o").write_text("x")
    assert run("compile", MODEL, "--board", RV_BOARD, "-o", out).exit_code == 0
    assert is_previous_output(out) and not (out / "build").exists() and not (out / "src/kernels/dsp").exists()
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(run("compile", MODEL, "--board", M4_BOARD, "-o", f), "not a folder")
    assert run("compile", MODEL, "--board", M4_BOARD, "-o", foreign, "--force").exit_code == 0
    assert not (foreign / "notes.txt").exists() and is_previous_output(foreign)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_errors_are_one_line(tmp_path):
    one_line_error(run("compile", MODEL, "--board", "no-such-board", "-o", tmp_path / "o"), "unknown board")
    one_line_error(run("compile", tmp_path / "missing.onnx", "--board", M4_BOARD, "-o", tmp_path / "o"))
    one_line_error(run("compile", MODEL, "--board", M4_BOARD, "--schedule", "none", "-o", tmp_path / "o"),
                   "nothing is trained")
    one_line_error(run("compile", MODEL, "--board", M4_BOARD, "--update", "-9:1", "-o", tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_help_teaches():
    r = run("compile", "--help")
    assert r.exit_code == 0
    for word in ("Examples:", "--board", "--remedy", "--loss-input", "--force", "make -C", "libmtmodel.a"):
        assert word in r.output, word
    assert "compile" in run("--help").output


def test_deterministic(tmp_path):
    for d in ("a", "b"):
        assert run("compile", MODEL, "--board", M4_BOARD, "--remedy", "stochastic", "--loss-input", "acc",
                   "-o", tmp_path / d).exit_code == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


# ---- the generated C compiles everywhere ---------------------------------------------------------

@pytest.fixture(scope="module")
def example_projects(tmp_path_factory):
    base = tmp_path_factory.mktemp("example")
    out = {}
    for kind, opts in EXAMPLE_SCHEDULES.items():
        r = run("compile", MODEL, "--board", M4_BOARD, *opts, "-o", base / kind, "--json")
        assert r.exit_code == 0, r.output
        out[kind] = base / kind
    return out


@pytest.mark.parametrize("target", C_TARGETS)
def test_example_compiles(example_projects, target):
    for kind, d in example_projects.items():
        compile_c(d, target)


def _random_projects(base: Path):
    from models.random_arch import SCHEDULES, quantized, random_spec

    board = get_board(M4_BOARD)
    out = []
    for i, seed in enumerate((3, 11, 29)):
        q, _, _ = quantized(random_spec(seed))
        for sid, skw, tkw in SCHEDULES[i::3]:  # every schedule once over the three architectures
            skw = dict(skw)
            gen = generate(q, Schedule(skw.pop("kind"), **skw), lr=tkw.get("lr"), fg_lr=tkw.get("fg_lr"),
                           momentum=tkw.get("momentum", 0.0), remedy=tkw["remedy"], loss_input=tkw["loss_input"])
            d = base / f"arch{seed}-{sid}"
            write_project(gen, board, d)
            out.append(d)
    return out


@pytest.fixture(scope="module")
def random_projects(tmp_path_factory):
    return _random_projects(tmp_path_factory.mktemp("random"))


@pytest.mark.parametrize("target", C_TARGETS)
def test_random_architectures_compile(random_projects, target):
    assert len(random_projects) >= 12
    for d in random_projects:
        compile_c(d, target)


# ---- make, and the flash estimate ----------------------------------------------------------------

def _make(d: Path, cc: str) -> str:
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    p = subprocess.run(["make", "-s", "-j2", "-C", str(d)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (d / "libmtmodel.a").is_file()
    p = subprocess.run(["make", "-s", "-C", str(d), "size"], capture_output=True, text=True)
    assert p.returncode == 0 and "(TOTALS)" in p.stdout, p.stdout + p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def m4_build(example_projects):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    d = example_projects["sparse"]
    _make(d, "arm-none-eabi-gcc")
    return d


def test_make_builds_m4(m4_build):
    nm = subprocess.run(["arm-none-eabi-nm", str(m4_build / "libmtmodel.a")], capture_output=True, text=True).stdout
    for sym in API + ("mt_conv2d_fwd_s8_dsp", "mt_conv2d_fwd_s8"):
        assert re.search(rf"\bT {sym}\b", nm), sym


def test_make_builds_rv32(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    assert run("compile", MODEL, "--board", RV_BOARD, "--schedule", "hybrid", "-o", tmp_path / "rv").exit_code == 0
    _make(tmp_path / "rv", "riscv64-unknown-elf-gcc")
    head = subprocess.run(["riscv64-unknown-elf-objdump", "-f", str(tmp_path / "rv" / "build" / "mt_model.o")],
                          capture_output=True, text=True).stdout
    assert "elf32-littleriscv" in head


def test_flash_estimate_within_10_percent(m4_build):
    """What a firmware links (ld -r --gc-sections, the API as roots) vs plan's params + code estimate."""
    roots = [a for s in API for a in ("-u", s)]
    linked = m4_build / "linked.o"
    p = subprocess.run(["arm-none-eabi-ld", "-r", "--gc-sections", *roots, "build/mt_model.o", "libmtmodel.a",
                        "-o", str(linked)], cwd=m4_build, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    text, data, _bss = (int(v) for v in subprocess.run(["arm-none-eabi-size", str(linked)], capture_output=True,
                                                       text=True).stdout.splitlines()[1].split()[:3])
    plan = json.loads(run("plan", MODEL, "--board", M4_BOARD, "--json").stdout)
    estimate = plan["flash"]["params_bytes"] + plan["flash"]["code_bytes_estimate"]
    assert abs((text + data) / estimate - 1) <= 0.10, (text, data, estimate)
