"""Flash-and-train end to end: the CLI, the serial bridge and emulated boards.

* ``microtrain run`` on qemu-m4, qemu-m7 and the RV32 virt machine ends with trainable tensors
  byte-identical to ``microtrain simulate --save-params`` over the same samples, and the test
  accuracy the device measures equals the simulated one.
* Through a proxy that corrupts 1% and drops 1% of the bytes both ways, training completes, the
  device trained every sample exactly once and in order (its count and CRC chain equal the host's
  independent computation of what ``simulate`` trains on) and the weights are still identical.
* Killing and restarting the emulator mid-run: the bridge pushes the last checkpoint, replays
  the steps since and ends with the weights of the uninterrupted run.
* ``pull`` / ``push`` round-trip a checkpoint; bad input gives one-line errors.

The data is a small .npz cut from the built-in digits task (48 test samples) so each run takes
seconds; the sample order is the simulate driver's.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MICROTRAIN_CACHE", str(ROOT / "build" / "native"))

from faultproxy import FaultProxy  # noqa: E402

MODEL = str(ROOT / "examples" / "digits_cnn.onnx")
BOARDS = {"qemu-m4": "qemu-system-arm", "qemu-m7": "qemu-system-arm", "qemu-rv32-virt": "qemu-system-riscv32"}
TOOLS = {"qemu-m4": "arm-none-eabi-gcc", "qemu-m7": "arm-none-eabi-gcc", "qemu-rv32-virt": "riscv64-unknown-elf-gcc"}
STEPS = 40
SEED = 3


def _need(board: str) -> None:
    for tool in (BOARDS[board], TOOLS[board]):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (make toolchains)")


def _cli(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "microtrain.host.cli", *args], capture_output=True, text=True,
                       env=env, timeout=timeout, cwd=ROOT)
    if check:
        assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-3000:])
    return p


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e["MICROTRAIN_HOME"] = str(tmp_path_factory.mktemp("mthome"))
    return e


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    from microtrain.host.data import load_data

    ds = load_data("digits")
    path = tmp_path_factory.mktemp("data") / "digits-small.npz"
    np.savez(path, x_train=ds.x_train[:400], y_train=ds.y_train[:400], x_test=ds.x_test[:48], y_test=ds.y_test[:48])
    return str(path)


@pytest.fixture(scope="module")
def simulated(data, env, tmp_path_factory):
    """simulate --save-params per schedule (cached per module)."""
    cache: dict[tuple, tuple[dict, bytes]] = {}

    def get(*sched: str, steps: int = STEPS) -> tuple[dict, bytes]:
        key = (sched, steps)
        if key not in cache:
            out = tmp_path_factory.mktemp("sim") / "sim.npz"
            p = _cli("simulate", MODEL, "--data", data, *sched, "--steps", str(steps), "--seed", str(SEED),
                     "--no-float", "--engine", "c", "--save-params", str(out), "--json", env=env)
            cache[key] = (json.loads(p.stdout), out.read_bytes())
        return cache[key]

    return get


def _expected_trace(data: str, steps: int, batch: int = 1) -> tuple[int, int]:
    """The samples simulate trains on (the driver's order), chained like the device's trace."""
    from microtrain.compiler.driver import train as _  # noqa: F401 - the order below mirrors it
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.compiler.schedule import Schedule
    from microtrain.compiler.train_int import Int8Trainer
    from microtrain.host.data import load_data

    g = load_model(MODEL)
    ds = load_data(data, g)
    q = quantize_graph(g, ds.x_train[:200])
    tr = Int8Trainer(q, Schedule("sparse"))
    x = tr.host_samples(ds.x_train, "x_train").reshape(len(ds.y_train), -1)
    rng = np.random.default_rng(SEED)
    order = np.zeros(0, np.int64)
    trace, count = 0, 0
    for _t in range(steps):
        while order.size < batch:
            order = np.concatenate([order, rng.permutation(len(ds.y_train))])
        idx, order = order[:batch], order[batch:]
        for i in idx:
            trace = zlib.crc32(int(ds.y_train[i]).to_bytes(4, "little", signed=True), trace)
            trace = zlib.crc32(x[i].astype(np.int8).tobytes(), trace)
            count += 1
    return count, trace & 0xFFFFFFFF


@pytest.mark.parametrize("board", list(BOARDS))
def test_run_equals_simulate(board, data, env, simulated, tmp_path):
    _need(board)
    sim, sim_bytes = simulated("--schedule", "sparse")
    out = tmp_path / "dev.npz"
    p = _cli("run", MODEL, "--board", board, "--data", data, "--schedule", "sparse", "--steps", str(STEPS),
             "--seed", str(SEED), "--save-params", str(out), "-o", str(tmp_path / "prog"), "--json", env=env)
    r = json.loads(p.stdout)
    assert out.read_bytes() == sim_bytes, "device tensors differ from simulate --save-params"
    assert r["accuracy_after"] == sim["accuracy_after"] and r["accuracy_before"] == sim["accuracy_before"]
    assert r["steps"] == STEPS and r["device"]["samples_trained"] == STEPS
    count, trace = _expected_trace(data, STEPS)
    assert (r["device"]["samples_trained"], int(r["device"]["trace"], 16)) == (count, trace)
    # the arena the device touched is the arena the planner laid out; the stack is measured
    assert r["device"]["arena_hwm_bytes"] == r["device"]["arena_bytes"]
    assert 0 < r["device"]["stack_hwm_bytes"] < r["device"]["stack_bytes"]
    assert r["device"]["cycles_last_step"] > 0
    assert not (tmp_path / "prog" / ".microtrain-device.json").exists(), "run must stop its emulator"


@pytest.fixture
def flashed(data, env, tmp_path):
    """qemu-m4 program compiled and started with `flash`; stopped at the end."""
    _need("qemu-m4")
    prog = tmp_path / "m4"
    _cli("compile", MODEL, "--board", "qemu-m4", "--data", data, "--calib-samples", "200", "-o", str(prog), "--json",
         env=env)
    url = _cli("flash", str(prog), env=env).stdout.strip()
    assert url.startswith("socket://127.0.0.1:")
    yield prog, url
    _cli("flash", str(prog), "--stop", env=env)


def test_faulty_link_trains_every_sample_once(flashed, data, env, simulated, tmp_path):
    prog, url = flashed
    sim, sim_bytes = simulated("--schedule", "sparse")
    port = int(url.rsplit(":", 1)[1])
    with FaultProxy(port, drop=0.01, corrupt=0.01, seed=5) as proxy:
        out = tmp_path / "dev.npz"
        p = _cli("train", "--port", proxy.url, "--data", data, "--steps", str(STEPS), "--seed", str(SEED),
                 "--save-params", str(out), "--json", env=env)
        stats = dict(proxy.stats)
    r = json.loads(p.stdout)
    assert stats["dropped"] > 0 and stats["corrupted"] > 0, stats
    assert r["link"]["retries"] > 0
    count, trace = _expected_trace(data, STEPS)
    assert (r["device"]["samples_trained"], int(r["device"]["trace"], 16)) == (count, trace)
    assert r["device"]["step"] == STEPS
    assert out.read_bytes() == sim_bytes
    assert r["accuracy_after"] == sim["accuracy_after"]


def test_reset_mid_run_resumes_from_checkpoint(flashed, data, env, simulated, tmp_path):
    prog, url = flashed
    sim, sim_bytes = simulated("--schedule", "sparse")
    state = json.loads((prog / ".microtrain-device.json").read_text())
    log = tmp_path / "run.jsonl"
    out = tmp_path / "dev.npz"
    ck = tmp_path / "run.mtck"
    kill_at = random.Random(7).randrange(12, STEPS - 8)
    cmd = [sys.executable, "-m", "microtrain.host.cli", "train", "--port", url, "--data", data, "--steps", str(STEPS),
           "--seed", str(SEED), "--checkpoint-every", "10", "--checkpoint", str(ck), "--log", str(log),
           "--save-params", str(out), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end:
            lines = log.read_text().splitlines() if log.exists() else []
            if len(lines) >= kill_at:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        else:
            pytest.fail("training did not reach the kill step")
        os.killpg(state["pid"], signal.SIGKILL)  # the device dies mid-run
        time.sleep(0.3)
        with open(prog / "qemu.log", "ab") as lf:  # ... and boots again on the same port
            new = subprocess.Popen(state["command"], cwd=prog, stdin=subprocess.DEVNULL, stdout=lf,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        state["pid"] = new.pid
        (prog / ".microtrain-device.json").write_text(json.dumps(state))
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    r = json.loads(stdout)
    assert r["resets"] >= 1 and r["link"]["reconnects"] >= 1
    assert out.read_bytes() == sim_bytes, "resumed run differs from the uninterrupted one"
    assert r["accuracy_after"] == sim["accuracy_after"]
    assert ck.read_bytes()[24:28] == STEPS.to_bytes(4, "little")


def test_pull_push_roundtrip_and_errors(flashed, data, env, tmp_path):
    prog, url = flashed
    p = _cli("pull", "--port", url, str(tmp_path / "x.mtck"), env=env, check=False)
    assert p.returncode != 0 and "no training session" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    _cli("train", "--port", url, "--data", data, "--steps", "5", "--checkpoint", str(tmp_path / "a.mtck"), env=env)
    _cli("pull", "--port", url, str(tmp_path / "b.mtck"), env=env)
    assert (tmp_path / "a.mtck").read_bytes() == (tmp_path / "b.mtck").read_bytes()
    _cli("pull", "--port", url, str(tmp_path / "b.npz"), env=env)
    assert np.load(tmp_path / "b.npz").files
    _cli("train", "--port", url, "--data", data, "--steps", "3", env=env)  # moves the device on
    _cli("push", "--port", url, str(tmp_path / "a.mtck"), env=env)
    _cli("pull", "--port", url, str(tmp_path / "c.mtck"), env=env)
    assert (tmp_path / "c.mtck").read_bytes() == (tmp_path / "a.mtck").read_bytes()
    bad = tmp_path / "bad.mtck"
    data_ck = bytearray((tmp_path / "a.mtck").read_bytes())
    data_ck[8:24] = b"0123456789abcdef"
    bad.write_bytes(bytes(data_ck))
    p = _cli("push", "--port", url, str(bad), env=env, check=False)
    assert p.returncode != 0 and "checkpoint of program 0123456789abcdef" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = _cli("train", "--port", "socket://127.0.0.1:1", "--data", data, "--steps", "1", env=env, check=False)
    assert p.returncode != 0 and "cannot open socket://127.0.0.1:1" in p.stderr and "Traceback" not in p.stderr


def test_host_pty_device_equals_simulate(flashed, data, env, simulated, tmp_path):
    """The same program built for this host serves a pseudo-terminal: the bridge drives it like
    the emulated board (one bridge for sockets, ptys and serial ports)."""
    from microtrain.compiler.codegen import firmware as fw
    from microtrain.host import devices

    prog = devices.load_program(flashed[0])
    exe = fw.build_image(prog.gen, fw.HOST, tmp_path / "host")
    proc = subprocess.Popen(fw.host_command(exe), stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 2 and line[0] == "PTY", line
        out = tmp_path / "pty.npz"
        p = _cli("train", "--port", line[1], "--data", data, "--steps", str(STEPS), "--seed", str(SEED),
                 "--save-params", str(out), "--json", env=env)
    finally:
        proc.kill()
        proc.wait()
    r = json.loads(p.stdout)
    sim, sim_bytes = simulated("--schedule", "sparse")
    assert out.read_bytes() == sim_bytes and r["accuracy_after"] == sim["accuracy_after"]
    assert r["board"] == "host" and r["device"]["samples_trained"] == STEPS
