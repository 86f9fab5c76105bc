"""The device side of the serial protocol: the firmware image of the example model, driven with raw
frames (host/protocol.py) on every device kind there is.

Images come from ``compiler/codegen/firmware.build_image`` (the generated program + kernels +
mt_frame.c + the device loop src/device + the board's port) and run as:

* qemu-m4 / qemu-m7 (mps2, CMSDK UART, DSP kernels), qemu-rv32-virt (NS16550A) and qemu-rv32
  (sifive_e: 16 KB RAM, 256-byte frames) under QEMU, the UART on a TCP socket;
* the host build (firmware/port/host) serving a pseudo-terminal, opened with pyserial.

Each session checks HELLO_INFO, the NAKs (NO_SESSION, SAMPLE, INCOMPLETE, LABEL, STEP, RANGE,
CHECKPOINT, malformed frames, an overlong frame), then trains STEPS steps (SAMPLE + TRAIN): every
METRICS equals the numpy engine (Int8Trainer) step for step, count/trace equal the host's CRC-32
chain; a repeated TRAIN (same seq) returns the same reply and does not train; the checkpoint read
with PARAMS_GET equals NativeTrainer's after the same steps; EVAL/INFER equal the numpy engine;
a new session restored with PARAMS_SET continues exactly like the engine. Plus: the boot counter
persists across two QEMU starts sharing the storage file (and the boot HELLO_INFO is sent), the
host port's --stdio/--storage/--exit-on-hup, and `make firmware` of a compiled folder.
Tools missing -> skip.
"""
from __future__ import annotations

import os
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MICROTRAIN_CACHE", str(ROOT / "build" / "native"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from microtrain.compiler.codegen import firmware as fw  # noqa: E402
from microtrain.compiler.codegen import generate  # noqa: E402
from microtrain.compiler.codegen.native import NativeTrainer  # noqa: E402
from microtrain.compiler.schedule import FGOptions, Schedule  # noqa: E402
from microtrain.compiler.train_int import Int8Trainer, int8_samples  # noqa: E402
from microtrain.host import protocol as P  # noqa: E402
from microtrain.host.boards import get_board  # noqa: E402

STEPS = 20
TOTAL = STEPS + 1  # the resumed session trains one more step
SEED = 11
CASES = {
    "sparse": (Schedule("sparse", bias_last=2, update={0: 0.5, -1: 1.0}), dict(remedy="stochastic")),
    "hybrid": (Schedule("hybrid", fg=FGOptions(m=2, batch=2)),
               dict(remedy="master", loss_input="acc", momentum=0.5, fg_lr=0.02)),
}
# (target, case, -icount shift=0): icount only where deterministic cycles are wanted (rv32-virt:
# mcycle then counts instructions)
RUNS = [("host", "sparse", False), ("qemu-m4", "sparse", False), ("qemu-m7", "sparse", False),
        ("qemu-rv32-virt", "sparse", True), ("qemu-rv32", "sparse", False),
        ("qemu-m4", "hybrid", False), ("qemu-rv32", "hybrid", False)]
TIMEOUT = 60.0
TIMES: dict[str, dict[str, float]] = {}


def _tools(target: str) -> None:
    cc = fw.compiler(target)
    tools = [cc] + ([] if target == fw.HOST else [get_board(target).qemu_binary])
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} not installed (make toolchains)")


# ---- the program and its reference run -------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.host.data import load_data

    fmodel = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
    qmodel = quantize_graph(fmodel, load_data("digits-clean", fmodel).x_train[:64])
    task = load_data("digits", fmodel)
    return qmodel, task.x_train, np.asarray(task.y_train, np.int64)


class Program:
    """The generated program of a case and what the engines did with it."""

    def __init__(self, graph, xf, y, case: str):
        sched, kw = CASES[case]
        kw = dict(kw, lr=0.05, lr_schedule="cosine")
        self.gen = generate(graph, sched, **kw)
        ref = Int8Trainer(graph, sched, seed=SEED, total_steps=TOTAL, **kw)
        self.B = B = ref.samples_per_step
        assert B == self.gen.manifest["batch"]
        ref.prepare_batches(1, B)
        self.x = int8_samples(ref, xf[:TOTAL * B + 1])
        self.y = np.asarray(y[:TOTAL * B + 1], np.int64)
        self.in_bytes = int(self.gen.manifest["input_bytes"])
        assert self.x[0].nbytes == self.in_bytes
        host = NativeTrainer(graph, sched, generated=self.gen, seed=SEED, total_steps=TOTAL)
        self.steps = []
        for t in range(TOTAL):
            xb, yb = self.x[t * B:(t + 1) * B], self.y[t * B:(t + 1) * B]
            if t == STEPS:  # the state the device is checked in
                self.ck = host.checkpoint()
                self.x_eval, self.y_eval = self.x[TOTAL * B], int(self.y[TOTAL * B])
                self.logits = ref.logits(self.x_eval[None])[0].astype(np.int8)
            r = ref.step(xb, yb)
            self.steps.append((r.loss_q16, r.correct, r.skipped))
            host.step(xb, yb)

    def sample(self, t: int, j: int) -> tuple[bytes, int]:
        i = t * self.B + j
        return self.x[i].tobytes(), int(self.y[i])


@pytest.fixture(scope="module")
def programs(digits):
    cache: dict[str, Program] = {}

    def get(case: str) -> Program:
        if case not in cache:
            cache[case] = Program(*digits, case)
        return cache[case]

    return get


# ---- a device on the wire ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dev:
    """Raw frames to and from a running device (a QEMU socket or the host port's pty)."""

    def __init__(self, proc: subprocess.Popen, fd_obj, kind: str):
        self.proc, self.obj, self.kind = proc, fd_obj, kind
        self.reader = P.FrameReader()
        self.pending: list[P.Frame] = []
        self.seq = 0

    # transport
    def write(self, data: bytes) -> None:
        if self.kind == "socket":
            self.obj.sendall(data)
        else:
            self.obj.write(data)
            self.obj.flush()

    def _read(self, timeout: float) -> bytes:
        r, _, _ = select.select([self.obj.fileno()], [], [], timeout)
        if not r:
            return b""
        data = self.obj.recv(65536) if self.kind == "socket" else self.obj.read(65536)
        if not data and self.proc.poll() is not None:
            raise AssertionError(f"device exited with {self.proc.returncode}")
        return data

    def close(self) -> None:
        try:
            self.obj.close()
        finally:
            if self.kind == "socket" and self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # frames
    def next_seq(self) -> int:
        self.seq = (self.seq + 1) % 0xFFFF
        return self.seq

    def frame(self, pred, timeout: float = TIMEOUT) -> P.Frame:
        """The first received frame with pred(frame) (earlier ones are kept for later calls)."""
        end = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.pending):
                if pred(f):
                    return self.pending.pop(i)
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout} s; pending {self.pending}")
            self.pending += self.reader.feed(self._read(min(left, 1.0)))

    def send(self, name_or_id, seq: int, data: bytes = b"", **fields) -> None:
        if isinstance(name_or_id, str):
            raw = P.encode_message(name_or_id, seq, data, **fields)
        else:
            raw = P.encode_frame(name_or_id, seq, data)
        self.write(b"\x00" + raw)

    def request(self, name: str, data: bytes = b"", *, seq: int | None = None, **fields) -> P.Frame:
        seq = self.next_seq() if seq is None else seq
        self.send(name, seq, data, **fields)
        return self.frame(lambda f: f.seq == seq)

    def unsolicited_nak(self) -> dict:
        f = self.frame(lambda f: f.seq == P.SEQ_UNSOLICITED and f.message.name == "NAK")
        return f.fields()


def start(target: str, image: Path, cwd: Path, *, icount: bool = False, wait: bool = False,
          args: tuple[str, ...] = ()) -> Dev:
    if target == fw.HOST:
        proc = subprocess.Popen([str(image), "--exit-on-hup", *args], stdout=subprocess.PIPE, text=True, cwd=cwd)
        line = proc.stdout.readline().split()
        assert len(line) == 2 and line[0] == "PTY", line
        import serial

        return Dev(proc, serial.Serial(line[1], timeout=0), "pty")
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(fw.qemu_command(target, image, port, icount=icount, wait=wait), cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        end = time.monotonic() + 20
        while time.monotonic() < end and proc.poll() is None:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return Dev(proc, s, "socket")
            except OSError:
                time.sleep(0.05)
        proc.kill()
        out = proc.communicate()[0]
    raise AssertionError(f"QEMU did not listen: {out[-2000:]!r}")


def is_nak(f: P.Frame, reason: int, detail: int | None = None) -> dict:
    assert f.message.name == "NAK", f
    v = f.fields()
    assert v["reason"] == int(reason), (v, reason)
    if detail is not None:
        assert v["detail"] == detail, (v, detail)
    return v


def is_ack(f: P.Frame) -> None:
    assert f.message.name == "ACK" and f.fields()["status"] == 0, f


def send_sample(dev: Dev, prog: Program, slot: int, data: bytes, label: int, chunks=None) -> None:
    """SAMPLE chunks of ``data`` from offset 0, cut at ``chunks``."""
    cuts = [0] + list(chunks or []) + [len(data)]
    for a, b in zip(cuts, cuts[1:]):
        is_ack(dev.request("SAMPLE", data[a:b], total=prog.in_bytes, offset=a, label=label, slot=slot, reserved=0))


def params_get(dev: Dev, total: int, chunk: int) -> bytes:
    out = b""
    while len(out) < total:
        f = dev.request("PARAMS_GET", offset=len(out), length=min(chunk, total - len(out)), reserved=0)
        assert f.message.name == "PARAMS_DATA", f
        v = f.fields()
        assert v["total"] == total and v["offset"] == len(out)
        out += v["data"]
    return out


def params_set(dev: Dev, ck: bytes, chunk: int) -> None:
    for off in range(0, len(ck), chunk):
        is_ack(dev.request("PARAMS_SET", ck[off:off + chunk], total=len(ck), offset=off))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    base = tmp_path_factory.mktemp("images")
    cache: dict[tuple[str, str], Path] = {}

    def get(target: str, prog: Program) -> Path:
        key = (target, prog.gen.hash)
        if key not in cache:
            cache[key] = fw.build_image(prog.gen, target, base / f"{target}-{prog.gen.hash}")
        return cache[key]

    return get


# ---- the session -----------------------------------------------------------------------------------
@pytest.mark.parametrize("target,case,icount", RUNS, ids=[f"{t}-{c}" for t, c, _ in RUNS])
def test_protocol_session(target, case, icount, programs, images, tmp_path):
    _tools(target)
    prog = programs(case)
    man, B, C = prog.gen.manifest, prog.B, int(prog.gen.manifest["classes"])
    image = images(target, prog)
    dev = start(target, image, tmp_path, icount=icount)
    trains: list[float] = []
    samples: list[float] = []
    try:
        # ---- who is there
        info = dev.request("HELLO")
        assert info.message.name == "HELLO_INFO", info
        h = info.fields()
        board = get_board(target) if target != fw.HOST else None
        max_payload = 256 if target == "qemu-rv32" else P.MAX_PAYLOAD
        flags = (P.HelloFlag.DSP if board is not None and board.dsp else 0) | (P.HelloFlag.STORAGE if board else 0)
        assert h["protocol_version"] == P.PROTOCOL_VERSION and h["flags"] == flags, h
        assert h["max_payload"] == max_payload
        assert h["board"].rstrip(b"\0").decode() == target
        assert h["model_hash"].decode() == prog.gen.hash
        assert (h["arena_size"], h["input_bytes"], h["params_bytes"], h["batch"], h["classes"]) == (
            man["arena_bytes"], man["input_bytes"], man["params_bytes"], B, C)
        assert h["boot_count"] == (1 if board else 0) and h["session"] == 0
        stack = fw.stack_bytes_of(prog.gen, target) or 0  # the planned stack, linked exactly (host: none)
        assert h["stack_size"] == stack

        # ---- before INIT
        is_nak(dev.request("TRAIN", step=0), P.NakReason.NO_SESSION)
        is_nak(dev.request("PARAMS_GET", offset=0, length=16, reserved=0), P.NakReason.NO_SESSION)
        is_nak(dev.request("PARAMS_SET", b"x", total=man["params_bytes"], offset=0), P.NakReason.NO_SESSION)
        is_nak(dev.request("INFER"), P.NakReason.NO_SESSION)
        is_nak(dev.request("EVAL"), P.NakReason.NO_SESSION)
        x0, y0 = prog.sample(0, 0)
        is_nak(dev.request("SAMPLE", x0, total=len(x0) + 1, offset=0, label=y0, slot=0, reserved=0),
               P.NakReason.SAMPLE, prog.in_bytes)
        is_nak(dev.request("SAMPLE", x0, total=len(x0), offset=0, label=y0, slot=B, reserved=0), P.NakReason.SAMPLE)
        is_nak(dev.request("SAMPLE", x0[8:], total=len(x0), offset=8, label=y0, slot=0, reserved=0),
               P.NakReason.SAMPLE)  # chunks in order
        is_nak(dev.request("SAMPLE", x0 + b"1", total=len(x0), offset=0, label=y0, slot=0, reserved=0),
               P.NakReason.SAMPLE)  # past the end

        # ---- a session
        is_ack(dev.request("INIT", seed=SEED, total_steps=TOTAL, session=0x5EED, count=0, trace=0))
        h = dev.request("HELLO").fields()
        assert h["flags"] & P.HelloFlag.SESSION and h["session"] == 0x5EED
        is_nak(dev.request("TRAIN", step=0), P.NakReason.INCOMPLETE, 0)
        count, trace, total_cycles = 0, 0, 0
        for t in range(STEPS):
            for j in range(B):
                data, label = prog.sample(t, j)
                if t == 0 and j == B - 1:  # chunked, and TRAIN in between sees the slot incomplete
                    send_sample(dev, prog, j, data[:40], label)
                    is_nak(dev.request("TRAIN", step=0), P.NakReason.INCOMPLETE, j)
                    is_ack(dev.request("SAMPLE", data[40:], total=len(data), offset=40, label=label, slot=j,
                                       reserved=0))
                elif t == 2 and j == 0:  # a bad label, then the slot again from offset 0
                    send_sample(dev, prog, j, data, C)
                    if B == 1:
                        is_nak(dev.request("TRAIN", step=t), P.NakReason.LABEL, 0)
                    send_sample(dev, prog, j, data, label, chunks=[17])
                else:
                    t0 = time.perf_counter()
                    send_sample(dev, prog, j, data, label)
                    samples.append(time.perf_counter() - t0)
            if t == 3:
                is_nak(dev.request("TRAIN", step=t + 5), P.NakReason.STEP, t)
            if t == 4:
                _malformed(dev, prog, t, max_payload)
            t0 = time.perf_counter()
            rep = dev.request("TRAIN", step=t)
            trains.append(time.perf_counter() - t0)
            assert rep.message.name == "METRICS", (t, rep)
            m = rep.fields()
            assert (m["step"], m["loss_q16"], m["correct"], m["skipped"]) == (t + 1, *prog.steps[t]), \
                f"{target} {case} step {t}"
            for j in range(B):
                data, label = prog.sample(t, j)
                trace = zlib.crc32(struct.pack("<i", label) + data, trace)
            count += B
            total_cycles += m["cycles"]
            assert (m["count"], m["trace"], m["total_cycles"]) == (count, trace, total_cycles)
            assert m["cycles"] > 0
            if t == 6:  # the host retries: same seq, same reply, no second step
                again = dev.request("TRAIN", seq=rep.seq, step=t)
                assert again == rep
                assert P.encode_frame(again.type, again.seq, again.payload) == P.encode_frame(rep.type, rep.seq,
                                                                                               rep.payload)
                m2 = dev.request("METRICS_GET")
                assert m2.fields()["step"] == t + 1 and m2.fields()["count"] == count
            if t == 7:  # every step needs fresh samples
                is_nak(dev.request("TRAIN", step=t + 1), P.NakReason.INCOMPLETE, 0)
        m = dev.request("METRICS_GET").fields()
        assert m["arena_hwm"] == man["arena_bytes"], (m["arena_hwm"], man["arena_bytes"])
        if board is not None:
            assert 0 < m["stack_hwm"] <= stack, (m["stack_hwm"], stack)  # tests/test_stack.py: the whole protocol
        else:
            assert m["stack_hwm"] == 0

        # ---- the checkpoint: NativeTrainer's after the same steps
        nbytes = man["params_bytes"]
        t0 = time.perf_counter()
        ck = params_get(dev, nbytes, max_payload - P.message("PARAMS_DATA").size)
        t_ck = time.perf_counter() - t0
        assert ck == prog.ck, f"{target} {case}: checkpoint differs"
        assert params_get(dev, nbytes, 100) == prog.ck
        is_nak(dev.request("PARAMS_GET", offset=nbytes - 4, length=5, reserved=0), P.NakReason.RANGE)
        is_nak(dev.request("PARAMS_GET", offset=0, length=max_payload - 7, reserved=0), P.NakReason.RANGE)

        # ---- EVAL / INFER: the numpy engine's prediction (slot 0 is not consumed)
        xe = prog.x_eval.tobytes()
        is_nak(dev.request("EVAL"), P.NakReason.INCOMPLETE, 0)
        send_sample(dev, prog, 0, xe, C)
        is_nak(dev.request("EVAL"), P.NakReason.LABEL, 0)
        send_sample(dev, prog, 0, xe, prog.y_eval)
        pred = int(np.argmax(prog.logits))
        ev = dev.request("EVAL")
        assert ev.message.name == "EVAL_RESULT", ev
        e = ev.fields()
        assert (e["predicted"], e["correct"]) == (pred, int(pred == prog.y_eval)) and e["cycles"] > 0
        inf = dev.request("INFER")
        assert inf.message.name == "INFER_RESULT", inf
        i = inf.fields()
        assert i["predicted"] == pred and i["data"] == prog.logits.tobytes() and i["cycles"] > 0

        # ---- resume: a new session, the checkpoint back in, one more step equals the engine's
        is_ack(dev.request("INIT", seed=SEED, total_steps=TOTAL, session=2, count=count, trace=trace))
        chunk = max_payload - P.message("PARAMS_SET").size
        assert params_get(dev, nbytes, chunk) != prog.ck  # mt_init reset the parameters
        bad = bytearray(prog.ck)
        bad[8] ^= 1  # model hash
        is_nak(dev.request("PARAMS_SET", bytes(bad[:chunk]), total=nbytes, offset=0), P.NakReason.CHECKPOINT)
        is_nak(dev.request("PARAMS_SET", prog.ck[32:64], total=nbytes, offset=32), P.NakReason.CHECKPOINT)
        is_nak(dev.request("PARAMS_SET", prog.ck[:32], total=nbytes + 1, offset=0), P.NakReason.RANGE)
        is_nak(dev.request("PARAMS_SET", prog.ck[:32], total=nbytes, offset=nbytes - 16), P.NakReason.RANGE)
        params_set(dev, prog.ck, chunk)
        assert params_get(dev, nbytes, chunk) == prog.ck
        m = dev.request("METRICS_GET").fields()
        assert (m["step"], m["count"], m["trace"]) == (STEPS, count, trace)
        for j in range(B):
            send_sample(dev, prog, j, *prog.sample(STEPS, j))
        m = dev.request("TRAIN", step=STEPS).fields()
        assert (m["step"], m["loss_q16"], m["correct"], m["skipped"]) == (STEPS + 1, *prog.steps[STEPS])
        for j in range(B):
            data, label = prog.sample(STEPS, j)
            trace = zlib.crc32(struct.pack("<i", label) + data, trace)
        assert (m["count"], m["trace"]) == (count + B, trace)
        # nothing else arrived but, when we connected before the guest booted, its boot HELLO_INFO
        assert all(f.seq == P.SEQ_UNSOLICITED and f.message.name == "HELLO_INFO" for f in dev.pending), dev.pending
        assert dev.reader.errors == 0
        TIMES[f"{target}-{case}"] = {"sample_ms_median": 1e3 * statistics.median(samples),
                                     "train_ms_median": 1e3 * statistics.median(trains),
                                     "train_ms_max": 1e3 * max(trains), "checkpoint_read_ms": 1e3 * t_ck,
                                     "stack_hwm": m["stack_hwm"], "cycles_last_step": m["cycles"]}
        print(f"\n{target} {case}: {TIMES[f'{target}-{case}']}")
    finally:
        dev.close()
    if target == fw.HOST:  # --exit-on-hup: the pty's last client closed
        assert dev.proc.returncode == 0


def _malformed(dev: Dev, prog: Program, t: int, max_payload: int) -> None:
    """Garbage, a corrupted frame and frames the device must refuse; it keeps working after each."""
    dev.write(b"\x00" + bytes([0x13, 0x37, 0x42, 0x99, 0x07]) * 9 + b"\x00")
    assert dev.unsolicited_nak()["reason"] in (P.FrameStatus.COBS, P.FrameStatus.CRC, P.FrameStatus.SHORT)
    data, label = prog.sample(t, 0)
    raw = bytearray(P.encode_message("SAMPLE", dev.next_seq(), data, total=len(data), offset=0, label=label,
                                     slot=0, reserved=0))
    k = len(raw) // 2
    raw[k] = raw[k] ^ 0x40 or 0x01
    dev.write(b"\x00" + bytes(raw))
    assert dev.unsolicited_nak()["reason"] in (P.FrameStatus.COBS, P.FrameStatus.CRC)
    s = dev.next_seq()
    dev.send(0x03, s, b"\x01")  # TRAIN with a 1-byte payload: the header is trusted, seq echoed
    is_nak(dev.frame(lambda f: f.seq == s), P.FrameStatus.PAYLOAD, 0)
    s = dev.next_seq()
    dev.write(b"\x00" + P.encode_frame("HELLO", s, version=P.PROTOCOL_VERSION + 1))
    is_nak(dev.frame(lambda f: f.seq == s), P.FrameStatus.VERSION)
    s = dev.next_seq()
    dev.send(0x42, s)
    is_nak(dev.frame(lambda f: f.seq == s), P.FrameStatus.TYPE)
    is_nak(dev.request("ACK", status=0, reserved=0), P.NakReason.COMMAND, 0x80)  # a reply type
    dev.write(b"\x00" + b"\x01" * (max_payload + 64) + b"\x00")  # longer than the receive buffer
    too_long = P.FrameStatus.TOO_LONG if max_payload == P.MAX_PAYLOAD else P.FrameStatus.OVERFLOW
    assert dev.unsolicited_nak()["reason"] == too_long
    send_sample(dev, prog, 0, data, label)  # still fine


# ---- boot counter and the boot HELLO_INFO ----------------------------------------------------------
def test_boot_count_persists_across_qemu_starts(programs, images, tmp_path):
    target = "qemu-m4"
    _tools(target)
    prog = programs("sparse")
    image = images(target, prog)
    for boot in (1, 2):
        dev = start(target, image, tmp_path, wait=True)  # QEMU waits for us: the boot frame is seen
        try:
            f = dev.frame(lambda f: f.seq == P.SEQ_UNSOLICITED)
            assert f.message.name == "HELLO_INFO", f
            h = f.fields()
            assert h["boot_count"] == boot and h["flags"] & P.HelloFlag.STORAGE and h["session"] == 0
            assert dev.request("HELLO").fields()["boot_count"] == boot
        finally:
            dev.close()
    assert (tmp_path / "mt_storage.bin").read_bytes()[:8] == b"MTBC" + struct.pack("<I", 2)


def test_host_port_stdio_and_storage(programs, images, tmp_path):
    _tools(fw.HOST)
    prog = programs("sparse")
    exe = images(fw.HOST, prog)
    store = tmp_path / "store.bin"
    for boot in (1, 2):
        req = b"\x00" + P.encode_message("HELLO", 7) + b"\x00" + P.encode_message("METRICS_GET", 8)
        p = subprocess.run(fw.host_command(exe, storage=store, stdio=True), input=req, capture_output=True,
                           timeout=30)
        assert p.returncode == 0, p.stderr
        frames = P.FrameReader().feed(p.stdout)
        assert [(f.message.name, f.seq) for f in frames] == [("HELLO_INFO", 0xFFFF), ("HELLO_INFO", 7),
                                                                 ("METRICS", 8)]
        h = frames[1].fields()
        assert h["boot_count"] == boot and h["flags"] == P.HelloFlag.STORAGE and h["board"].startswith(b"host\0")


# ---- the compiled folder's `make firmware` -----------------------------------------------------------
def test_project_make_firmware_runs(programs, tmp_path):
    target = "qemu-rv32-virt"
    _tools(target)
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    from microtrain.compiler.codegen.project import write_project

    prog = programs("sparse")
    out = tmp_path / "proj"
    write_project(prog.gen, get_board(target), out)
    p = subprocess.run(["make", "-s", "-j2", "-C", str(out), "firmware"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    dev = start(target, out / "firmware.elf", tmp_path)
    try:
        h = dev.request("HELLO").fields()
        assert h["model_hash"].decode() == prog.gen.hash and h["board"].startswith(b"qemu-rv32-virt")
        is_ack(dev.request("INIT", seed=SEED, total_steps=TOTAL, session=1, count=0, trace=0))
        send_sample(dev, prog, 0, *prog.sample(0, 0))
        m = dev.request("TRAIN", step=0).fields()
        assert (m["step"], m["loss_q16"], m["correct"], m["skipped"]) == (1, *prog.steps[0])
    finally:
        dev.close()


# ---- build errors are one line -----------------------------------------------------------------------
def test_build_errors_are_one_line(programs, tmp_path, monkeypatch):
    from microtrain.compiler.codegen.native import BuildError

    prog = programs("sparse")
    with pytest.raises(BuildError) as e:
        fw.build_image(prog.gen, "nucleo-f411re", tmp_path)  # a real board: no port here
    assert "no firmware port" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BuildError) as e:
        fw.compile_flags("qemu-rv32", dsp=True)
    assert "DSP" in str(e.value)
    monkeypatch.setattr(fw.shutil, "which", lambda name: None)
    for target in ("qemu-m4", "qemu-rv32", fw.HOST):
        with pytest.raises(BuildError) as e:
            fw.build_image(prog.gen, target, tmp_path)
        msg = str(e.value)
        assert "not found" in msg and fw.compiler(target) in msg and "\n" not in msg, msg
    with pytest.raises(BuildError):
        fw.qemu_command("host", tmp_path / "x", 1)


# ---- the device loop under ASan/UBSan on random streams -------------------------------------------------
def _random_stream(rng, n: int, in_bytes: int) -> bytes:
    out = bytearray()
    for seq in range(1, n + 1):
        c = rng.random()
        if c < 0.1:  # a session that trains, evaluates and reads parameters
            x = bytes(rng.randrange(256) for _ in range(in_bytes))
            out += b"\x00" + P.encode_message("INIT", seq, seed=seq, total_steps=4, session=1, count=0, trace=0)
            out += b"\x00" + P.encode_message("SAMPLE", seq + 1, x, total=in_bytes, offset=0, label=seq % 10, slot=0,
                                              reserved=0)
            for k, name in enumerate(("TRAIN", "EVAL", "INFER", "PARAMS_GET", "METRICS_GET")):
                kw = {"TRAIN": dict(step=0), "PARAMS_GET": dict(offset=0, length=40, reserved=0)}.get(name, {})
                if name == "EVAL":  # the slot is consumed by TRAIN
                    out += b"\x00" + P.encode_message("SAMPLE", seq + 9, x, total=in_bytes, offset=0, label=1,
                                                      slot=0, reserved=0)
                out += b"\x00" + P.encode_message(name, seq + 2 + k, **kw)
        elif c < 0.3:  # garbage, sometimes with delimiters inside
            out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1200)))
        elif c < 0.45:  # any message id with a random payload (sizes right or wrong)
            m = rng.choice(P.MESSAGES)
            size = m.size + (rng.randrange(0, 300) if m.tail else rng.choice([0, 0, 1]))
            out += b"\x00" + P.encode_frame(m.id, seq, bytes(rng.randrange(256) for _ in range(min(size, 1024))))
        elif c < 0.55:
            out += b"\x00" + P.encode_message("INIT", seq, seed=rng.randrange(9),
                                              total_steps=rng.randrange(-1, 9) & 0xFFFFFFFF, session=1, count=0,
                                              trace=0)
        elif c < 0.75:
            n_ = rng.randrange(in_bytes + 2)
            off = rng.choice([0, 0, rng.randrange(in_bytes + 1)])
            out += b"\x00" + P.encode_message("SAMPLE", seq, bytes(rng.randrange(256) for _ in range(n_)),
                                              total=rng.choice([in_bytes, in_bytes, 0, 1 << 31]), offset=off,
                                              label=rng.randrange(-2, 12), slot=rng.randrange(3), reserved=0)
        else:
            name = rng.choice(["TRAIN", "EVAL", "INFER", "PARAMS_GET", "PARAMS_SET", "METRICS_GET", "HELLO"])
            kw = {"TRAIN": dict(step=rng.randrange(3)),
                  "PARAMS_GET": dict(offset=rng.randrange(700), length=rng.randrange(1100), reserved=0),
                  "PARAMS_SET": dict(total=rng.choice([556, 557]), offset=rng.randrange(600))}.get(name, {})
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(100))) if name == "PARAMS_SET" else b""
            out += b"\x00" + P.encode_message(name, rng.choice([seq, seq - 1]), data, **kw)
        if rng.random() < 0.1:
            out += b"\x00"
    return bytes(out)


@pytest.mark.parametrize("max_payload", [1024, 96])
def test_device_loop_random_streams_under_sanitizers(programs, tmp_path, max_payload):
    _tools(fw.HOST)
    import random

    prog = programs("sparse")
    san = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")
    try:
        exe = fw.build_image(prog.gen, fw.HOST, tmp_path, opt="-O1", extra_flags=san,
                             defines=[f"MT_DEVICE_MAX_PAYLOAD={max_payload}"])
    except Exception as e:  # noqa: BLE001 - a compiler without the sanitizer runtimes
        pytest.skip(f"no sanitizer build: {str(e).splitlines()[0]}")
    rng = random.Random(max_payload)
    for trial in range(6):
        stream = _random_stream(rng, 150, prog.in_bytes)
        p = subprocess.run([str(exe), "--stdio"], input=stream, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]
        reader = P.FrameReader()
        frames = reader.feed(p.stdout)
        assert reader.errors == 0 and frames[0].message.name == "HELLO_INFO", reader.last_error
        assert all(len(f.payload) <= max_payload for f in frames)
        names = {f.message.name for f in frames}
        assert {"METRICS", "EVAL_RESULT", "INFER_RESULT", "PARAMS_DATA", "NAK", "ACK"} <= names, names
