"""The serial bridge: requests to a device over any byte stream, with retries, resync and reboot
detection.

A device is anything that speaks :mod:`microtrain.host.protocol` over a byte stream; the bridge
opens it with pyserial's ``serial_for_url``, so one code path serves

* a QEMU-emulated board, its UART on a TCP socket: ``socket://127.0.0.1:PORT``
* the firmware built for the host, serving a pseudo-terminal: ``/dev/pts/N``
* a real board: ``/dev/ttyACM0``, ``COM3``, ``rfc2217://...``

Reliability model (what :meth:`Bridge.request` guarantees):

* Every request gets a fresh ``seq`` (0..0xFFFE, wrapping) and is sent as ``0x00 frame`` (the
  leading delimiter ends any garbage the receiver holds). The bridge waits for the reply with that
  ``seq``; replies with other ``seq`` (late answers to earlier attempts) are dropped.
* Chunked transfers (samples, checkpoints) shrink their chunks on a noisy link: a 1 KiB frame
  survives 1% byte errors about once in 10^4 tries, a 48-byte one every third try.
* A NAK for a frame error (the device saw a corrupted frame), a reply that fails its CRC, or no
  reply within the timeout: the *same* frame is sent again. The device executes a ``seq`` once and
  re-sends its stored reply for a repeat, so a retry never trains a sample twice.
* The stream going away (QEMU killed, USB unplugged): the bridge reopens the URL for up to
  ``reconnect_s`` seconds and asks HELLO; a changed boot counter or a lost session raises
  :class:`DeviceReset`, which the caller (``DeviceTrainer``) answers by pushing its last
  checkpoint. An unsolicited HELLO_INFO (the device announces every boot) or NAK NO_SESSION does
  the same.
* Command errors (NAK with a reason >= 0x100) raise :class:`DeviceError` with a one-line message.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..compiler.errors import MicrotrainError
from . import protocol as P

#: shortest wait for a reply before sending the request again; each request type waits at least
#: 3x the slowest reply it has had (a training step of a big model takes seconds)
REPLY_TIMEOUT_S = 0.1
#: chunked transfers (SAMPLE, PARAMS_*) shrink their chunks when a chunk needs more than this many
#: tries (a noisy link: a 1 KiB frame survives 1% byte errors once in ~10^4 tries), and grow them
#: back after CHUNK_GROW_AFTER first-try successes
CHUNK_TRIES = 3
CHUNK_GROW_AFTER = 32
MIN_CHUNK = 16
#: give up on one request after this many seconds without its reply
REQUEST_DEADLINE_S = 60.0
#: keep trying to reopen a lost stream for this long
RECONNECT_S = 30.0


class LinkError(MicrotrainError):
    """The device cannot be reached (open failed, or no reply within the deadline)."""


class DeviceError(MicrotrainError):
    """The device refused a request (NAK with a command error)."""

    def __init__(self, reason: int, detail: int, request: str):
        self.reason, self.detail, self.request = int(reason), int(detail), request
        try:
            name = P.NakReason(reason).name
        except ValueError:
            name = P.FrameStatus(reason).name if reason < 0x100 else f"0x{reason:03x}"
        super().__init__(f"device refused {request}: {name.lower()} (detail {detail})")


class _TooManyTries(Exception):
    """Internal: a chunk needed more than its allowed tries (the caller shrinks the chunks)."""


class DeviceReset(Exception):
    """The device rebooted or lost its session since the last exchange (``info``: its HELLO)."""

    def __init__(self, info: dict | None, why: str):
        self.info, self.why = info, why
        super().__init__(why)


@dataclass
class LinkStats:
    requests: int = 0
    retries: int = 0        # frames sent again (timeouts + NAKs + bad replies)
    timeouts: int = 0
    naks: int = 0           # NAKs for frame errors (the device saw a damaged frame)
    bad_frames: int = 0     # damaged frames the bridge received
    reconnects: int = 0
    resets: int = 0         # device reboots seen
    bytes_out: int = 0
    bytes_in: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


#: read timeout of the stream: how often a waiting bridge looks at the clock
POLL_S = 0.005


def open_stream(url: str, timeout: float = POLL_S):
    """pyserial stream for ``url`` (socket://, a device path, or any pyserial URL)."""
    try:
        import serial
    except ImportError as e:  # pragma: no cover - pyserial is a dependency
        raise LinkError("pyserial is not installed (pip install pyserial)") from e
    try:
        ser = serial.serial_for_url(url, baudrate=115200, timeout=timeout, write_timeout=5.0)
        sock = getattr(ser, "_socket", None)  # socket://: no Nagle (frames are small writes)
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return ser
    except (serial.SerialException, OSError, ValueError) as e:
        why = _oneline(e)
        prefix = f"Could not open port {url}: "
        why = why[len(prefix):] if why.startswith(prefix) else why
        raise LinkError(f"cannot open {url}: {why}") from e


def _oneline(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _cstr(b: bytes) -> str:
    return b.split(b"\x00", 1)[0].decode("ascii", "replace")


def hello_fields(f: dict) -> dict[str, Any]:
    """HELLO_INFO payload -> plain values (board and model_hash as strings, flags decoded)."""
    out = dict(f)
    out["board"] = _cstr(f["board"])
    out["model_hash"] = _cstr(f["model_hash"])
    out["session_active"] = bool(f["flags"] & P.HelloFlag.SESSION)
    out["storage"] = bool(f["flags"] & P.HelloFlag.STORAGE)
    out["dsp"] = bool(f["flags"] & P.HelloFlag.DSP)
    return out


@dataclass
class Bridge:
    """Requests to one device at ``url`` (see the module docstring for the guarantees)."""

    url: str
    reply_timeout: float = REPLY_TIMEOUT_S
    deadline: float = REQUEST_DEADLINE_S
    reconnect_s: float = RECONNECT_S
    #: called with (event, detail) on retries, reconnects and resets (progress displays, logs)
    on_event: Callable[[str, str], None] | None = None
    stats: LinkStats = field(default_factory=LinkStats)

    def __post_init__(self):
        self._ser = None
        self._reader = P.FrameReader()
        self._seq = 0
        self.info: dict | None = None      # the last HELLO_INFO
        self.session = 0                   # the session this bridge started (0: none)
        self._slow: dict[str, float] = {}  # slowest reply seen per request type (adaptive timeout)
        self._chunk: int | None = None     # current chunk payload limit (None: max_payload)
        self._clean = 0                    # chunks in a row that went through at the first try
        self._byte_s = 0.0                 # seconds per byte on the wire (0: socket or pty)

    # ---- stream ----
    def open(self) -> "Bridge":
        if self._ser is None:
            self._ser = open_stream(self.url)
            self._reader = P.FrameReader()
            # seconds per byte on the wire: real serial ports only (sockets and ptys have no baud)
            real = type(self._ser).__module__.startswith("serial.serialposix") and "/pts/" not in self.url
            self._byte_s = 10.0 / float(self._ser.baudrate) if real or "serialwin32" in type(self._ser).__module__ else 0.0
        return self

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except Exception:  # noqa: BLE001 - closing a dead stream
                pass
            self._ser = None

    def __enter__(self) -> "Bridge":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _event(self, what: str, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(what, detail)

    def _write(self, data: bytes) -> None:
        self._ser.write(data)
        self._ser.flush()
        self.stats.bytes_out += len(data)

    def _read_frames(self) -> list[P.Frame]:
        """Frames completed by what arrives within the stream's read timeout (POLL_S). The
        timeout is set once at open: on a real serial port every change of it is a tcsetattr."""
        data = self._ser.read(max(1, self._ser.in_waiting))
        if not data:
            return []
        self.stats.bytes_in += len(data)
        errors = self._reader.errors
        frames = self._reader.feed(data)
        new_errors = self._reader.errors - errors
        # empty frames (back-to-back delimiters) are normal with leading delimiters
        if new_errors and self._reader.last_error is not None and self._reader.last_error.code != P.FrameStatus.EMPTY:
            self.stats.bad_frames += new_errors
        return frames

    def _reconnect(self, why: str) -> None:
        """Reopen the stream until it works or ``reconnect_s`` passes (LinkError)."""
        self.close()
        self.stats.reconnects += 1
        self._event("reconnect", why)
        t_end = time.monotonic() + self.reconnect_s
        last = why
        while True:
            try:
                self.open()
                return
            except LinkError as e:
                last = str(e)
            if time.monotonic() > t_end:
                raise LinkError(f"{self.url}: connection lost ({why}) and not back within {self.reconnect_s:g} s: {last}")
            time.sleep(0.1)

    # ---- requests ----
    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) % P.SEQ_UNSOLICITED  # 0..0xFFFE
        return seq

    def request(self, name: str, data: bytes = b"", *, timeout: float | None = None, tries: int | None = None,
                **fields) -> P.Frame:
        """Send request ``name`` and return its reply frame (ACK or the data reply). Raises
        :class:`DeviceError` on a command NAK, :class:`DeviceReset` when the device rebooted or
        lost its session, :class:`LinkError` when no reply comes within the deadline.
        ``tries``: give up (internal ``_TooManyTries``) after that many sends."""
        self.open()
        seq = self._next_seq()
        wire = b"\x00" + P.encode_message(name, seq, data, **fields)
        self.stats.requests += 1
        wait = timeout if timeout is not None else max(self.reply_timeout, 3.0 * self._slow.get(name, 0.0))
        # a UART at 115200 baud moves ~11.5 bytes per ms: wait for the frame and the longest reply
        wait += (len(wire) + self.max_payload + 32) * self._byte_s
        t_start = time.monotonic()
        attempt = 0
        while True:
            if attempt:
                self.stats.retries += 1
            attempt += 1
            try:
                self._write(wire)
                t_sent = time.monotonic()
                reply = self._await(seq, name, t_sent + wait)
            except (OSError, _serial_exceptions()) as e:
                self._reconnect(_oneline(e))
                self._check_alive_after_reconnect()
                continue
            if reply is None:  # timeout, damaged reply or frame-error NAK: send again
                if tries is not None and attempt >= tries:
                    raise _TooManyTries()
                if time.monotonic() - t_start > self.deadline:
                    raise LinkError(f"{self.url}: no reply to {name} after {attempt} tries in "
                                    f"{time.monotonic() - t_start:.1f} s")
                continue
            took = time.monotonic() - t_sent
            self._slow[name] = max(took, 0.95 * self._slow.get(name, 0.0))  # slowest, slowly forgotten
            if reply.message.name == "NAK":
                f = reply.fields()
                if f["reason"] == P.NakReason.NO_SESSION:
                    raise DeviceReset(None, f"device has no session ({name} refused)")
                raise DeviceError(f["reason"], f["detail"], name)
            return reply

    def _await(self, seq: int, name: str, until: float) -> P.Frame | None:
        """The reply to ``seq``, or None to retry now (timeout, frame-error NAK, damaged frame)."""
        bad0 = self.stats.bad_frames
        while True:
            left = until - time.monotonic()
            if left <= 0:
                self.stats.timeouts += 1
                return None
            for fr in self._read_frames():
                if fr.seq == P.SEQ_UNSOLICITED:
                    if fr.message.name == "HELLO_INFO":  # the device just booted
                        info = hello_fields(fr.fields())
                        self._note_reset(info, "the device announced a boot")
                    if fr.message.name == "NAK":  # it saw a damaged frame: ours, probably
                        self.stats.naks += 1
                        return None
                    continue
                if fr.seq != seq:
                    continue  # a late reply to an earlier attempt or request
                if fr.message.name == "NAK" and fr.fields()["reason"] < 0x100:
                    self.stats.naks += 1
                    return None
                return fr
            if self.stats.bad_frames != bad0:
                return None  # a damaged frame arrived (perhaps our reply): ask again at once

    def _note_reset(self, info: dict, why: str) -> None:
        old = self.info
        self.info = info
        if self.session and (old is None or info["boot_count"] != old["boot_count"] or info["session"] != self.session):
            self.stats.resets += 1
            self._event("reset", why)
            raise DeviceReset(info, why)

    def _check_alive_after_reconnect(self) -> None:
        """After a reconnect: HELLO; the device lost our session -> DeviceReset."""
        if not self.session:
            return
        info = self.hello(_check=False)
        if info["session"] != self.session or not info["session_active"]:
            self.stats.resets += 1
            self._event("reset", "session lost across a reconnect")
            raise DeviceReset(info, "the device was restarted (session lost)")

    # ---- commands ----
    def hello(self, _check: bool = True) -> dict[str, Any]:
        info = hello_fields(self.request("HELLO").fields())
        if info["protocol_version"] != P.PROTOCOL_VERSION:
            raise LinkError(f"{self.url}: device speaks protocol {info['protocol_version']}, "
                            f"this host {P.PROTOCOL_VERSION}")
        old, self.info = self.info, info
        if _check and self.session and old is not None and (
                info["boot_count"] != old["boot_count"] or info["session"] != self.session):
            self.stats.resets += 1
            raise DeviceReset(info, "the device rebooted")
        return info

    @property
    def max_payload(self) -> int:
        return int(self.info["max_payload"]) if self.info else 256

    def init(self, seed: int, total_steps: int, session: int, count: int = 0, trace: int = 0) -> None:
        self.session = session
        self.request("INIT", seed=seed & 0xFFFFFFFF, total_steps=int(total_steps), session=session,
                     count=count & 0xFFFFFFFF, trace=trace & 0xFFFFFFFF)

    # ---- chunked transfers ----
    def _chunk_size(self, fixed: int) -> int:
        """Payload bytes per chunk now (shrinks on a noisy link, see CHUNK_TRIES)."""
        limit = self.max_payload if self._chunk is None else self._chunk
        return max(MIN_CHUNK, min(limit, self.max_payload) - fixed)

    def _chunk_request(self, name: str, data: bytes = b"", **fields) -> P.Frame | None:
        """One chunk; None when it needed too many tries (the chunk limit was halved: the caller
        re-issues, as a new request, with smaller chunks)."""
        small = (self._chunk or self.max_payload) <= MIN_CHUNK + 16
        try:
            fr = self.request(name, data, tries=None if small else CHUNK_TRIES, **fields)
        except _TooManyTries:
            self._chunk = max(MIN_CHUNK + 16, (self._chunk or self.max_payload) // 2)
            self._clean = 0
            self._event("chunk", f"link is noisy: chunks of {self._chunk} bytes")
            return None
        self._clean += 1
        if self._chunk is not None and self._clean >= CHUNK_GROW_AFTER:
            self._chunk = None if self._chunk * 2 >= self.max_payload else self._chunk * 2
            self._clean = 0
        return fr

    def send_sample(self, slot: int, x: bytes, label: int) -> None:
        """Sample bytes into batch slot ``slot``, chunked to the device's payload size. A chunk
        given up on may still have reached the device: the slot is then sent again from 0."""
        total = len(x)
        while True:
            chunk = self._chunk_size(P.message("SAMPLE").size)
            off = 0
            while off < max(total, 1):
                try:
                    if self._chunk_request("SAMPLE", x[off:off + chunk], total=total, offset=off, label=int(label),
                                           slot=slot, reserved=0) is None:
                        break
                except DeviceError as e:
                    if e.reason != P.NakReason.SAMPLE or off == 0:
                        raise
                    break  # an abandoned chunk did arrive: start the slot again
                off += chunk
            else:
                return

    def train(self, step: int) -> dict[str, Any]:
        return self.request("TRAIN", step=int(step)).fields()

    def metrics(self) -> dict[str, Any]:
        return self.request("METRICS_GET").fields()

    def infer(self) -> dict[str, Any]:
        return self.request("INFER").fields()

    def eval(self) -> dict[str, Any]:
        return self.request("EVAL").fields()

    def params_get(self, on_progress: Callable[[int, int], None] | None = None) -> bytes:
        total = int(self.info["params_bytes"]) if self.info else None
        out = bytearray()
        while total is None or len(out) < total:
            chunk = self._chunk_size(P.message("PARAMS_DATA").size)
            n = chunk if total is None else min(chunk, total - len(out))
            fr = self._chunk_request("PARAMS_GET", offset=len(out), length=n, reserved=0)
            if fr is None:
                continue
            f = fr.fields()
            total = f["total"]
            if f["offset"] != len(out):
                raise LinkError(f"{self.url}: PARAMS_DATA at offset {f['offset']}, asked {len(out)}")
            out += f["data"]
            if on_progress:
                on_progress(len(out), total)
        return bytes(out)

    def params_set(self, data: bytes, on_progress: Callable[[int, int], None] | None = None) -> None:
        """Checkpoint in, chunk by chunk from offset 0 (the device takes them in order; after a
        chunk given up on, the transfer starts again at 0)."""
        total = len(data)
        while True:
            chunk = max(self._chunk_size(P.message("PARAMS_SET").size), P.HEADER_SIZE + 32)
            off = 0
            while off < total:
                try:
                    if self._chunk_request("PARAMS_SET", data[off:off + chunk], total=total, offset=off) is None:
                        break
                except DeviceError as e:
                    if e.reason != P.NakReason.CHECKPOINT or off == 0:
                        raise
                    break  # an abandoned chunk did arrive: start again at 0
                off += chunk
                if on_progress:
                    on_progress(min(off, total), total)
            else:
                return


def _serial_exceptions():
    try:
        import serial

        return serial.SerialException
    except ImportError:  # pragma: no cover
        return OSError


def sample_trace(trace: int, label: int, x: bytes) -> int:
    """The device's trace chain, one sample further (METRICS.trace)."""
    trace = zlib.crc32(int(label).to_bytes(4, "little", signed=True), trace)
    return zlib.crc32(bytes(x), trace) & 0xFFFFFFFF
