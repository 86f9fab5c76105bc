"""Host <-> device wire protocol: message definitions (the single source of truth), framing, and the
generator of the firmware header ``firmware/include/mt_protocol.h``.

Wire format (one frame)::

    COBS( header | payload | crc32 ) 0x00

    header  = version u8, type u8, seq u16, len u16         (6 bytes, little-endian)
    payload = ``len`` bytes, laid out by the message definition of ``type``
    crc32   = CRC-32/IEEE (zlib.crc32) of header + payload, u32 little-endian

COBS removes every 0x00 from the frame, so 0x00 is only ever the delimiter: a receiver that lost
sync (dropped or corrupted bytes) discards up to the next 0x00 and resumes with the next frame.

CRC choice: CRC-32/IEEE rather than CRC-16/CCITT-FALSE. Frames reach ~1 KiB (PARAMS chunks,
samples) where a 16-bit check lets 1 in 65,536 random corruptions through; CRC-32 has Hamming
distance 4 up to ~11 kbit and lets 1 in 4e9 through, costs two more bytes per frame, and is
``zlib.crc32`` on the host (an independent oracle for the C version, which uses a 16-entry nibble
table: 64 bytes of flash, ~2 table look-ups per byte).

Sequencing: the host numbers its requests 0..0xFFFE (wrapping; 0xFFFF marks unsolicited device
frames); every device reply (ACK, NAK or a data reply) carries the ``seq`` of the request it
answers. The host retries a request with the same ``seq`` after a timeout; the device executes a
given (``seq``, type) once and re-sends its stored reply for a repeat (idempotence). Both sides
send a 0x00 before every frame as well as after it, so garbage never merges into the next frame.

Device replies in detail: a frame the device cannot decode gets NAK(reason = the mt_frame_status)
with the header's ``seq`` when the CRC held (LEN, VERSION, TYPE, PAYLOAD), else seq 0xFFFF (an
overlong frame: TOO_LONG, or OVERFLOW when the device's max_payload is below MAX_PAYLOAD). NAK
details: LABEL gives the slot, COMMAND the type received, INCOMPLETE the first missing slot, STEP
the device step & 0xFFFF, ENGINE the mt_status; the others 0. HELLO_INFO.boot_count is 0 on a
port without persistent storage. METRICS_GET works before INIT (zero counters).

Decoding errors are :class:`ProtocolError` with a one-line reason and a ``code`` equal to the C
decoder's ``mt_frame_status`` (``FrameStatus``), checked in this order: EMPTY, COBS / TOO_LONG
(in stream order while un-stuffing), SHORT, CRC, LEN, VERSION, TYPE, PAYLOAD.
"""
from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from microtrain.compiler.errors import MicrotrainError

PROTOCOL_VERSION = 1
HEADER_SIZE = 6
CRC_SIZE = 4
#: protocol-wide payload ceiling (a device may announce a smaller one in HELLO_INFO.max_payload)
MAX_PAYLOAD = 1024
MAX_RAW = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
#: worst-case encoded frame: COBS adds one byte per 254 (+1), plus the 0x00 delimiter
MAX_ENCODED = MAX_RAW + (MAX_RAW + 253) // 254 + 1
_HEADER = struct.Struct("<BBHH")

HEADER_PATH = Path(__file__).resolve().parents[1] / "firmware" / "include" / "mt_protocol.h"


class FrameStatus(enum.IntEnum):
    """Result of ``mt_frame_decode`` (same numbers in C: ``MT_FRAME_<NAME>``)."""

    OK = 0
    EMPTY = 1       # nothing between delimiters
    COBS = 2        # malformed COBS: 0x00 inside, or a code byte runs past the end
    TOO_LONG = 3    # decoded frame longer than MAX_RAW
    OVERFLOW = 4    # decoded frame longer than the caller's buffer (C only)
    SHORT = 5       # shorter than header + crc
    CRC = 6         # checksum mismatch
    LEN = 7         # header len != bytes present
    VERSION = 8     # protocol version mismatch
    TYPE = 9        # unknown message type
    PAYLOAD = 10    # payload size does not fit the message definition


class ProtocolError(MicrotrainError):
    """A malformed frame or payload; ``code`` is the FrameStatus (one-line message)."""

    def __init__(self, code: FrameStatus, reason: str):
        self.code = FrameStatus(code)
        super().__init__(f"protocol: {self.code.name.lower()}: {reason}")


# ---- message definitions -------------------------------------------------------------------------
_CTYPES = {  # C type -> (struct code, size)
    "uint8_t": ("B", 1), "int8_t": ("b", 1), "uint16_t": ("H", 2), "int16_t": ("h", 2),
    "uint32_t": ("I", 4), "int32_t": ("i", 4), "uint64_t": ("Q", 8), "int64_t": ("q", 8),
}


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str          # a key of _CTYPES
    count: int = 1      # > 1: a fixed byte array (uint8_t only), packed/unpacked as bytes

    def __post_init__(self):
        if self.ctype not in _CTYPES:
            raise ValueError(f"field {self.name}: unsupported C type {self.ctype}")
        if self.count != 1 and self.ctype != "uint8_t":
            raise ValueError(f"field {self.name}: arrays must be uint8_t")

    @property
    def size(self) -> int:
        return _CTYPES[self.ctype][1] * self.count

    @property
    def code(self) -> str:
        return f"{self.count}s" if self.count != 1 else _CTYPES[self.ctype][0]


@dataclass(frozen=True)
class Message:
    id: int
    name: str
    direction: str                  # "h2d" (host to device) or "d2h"
    doc: str
    fields: tuple[Field, ...] = ()
    #: element C type of a variable-length tail after the fixed fields (``data``), or None
    tail: str | None = None
    _struct: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_struct", struct.Struct("<" + "".join(f.code for f in self.fields)))
        off = 0
        for f in self.fields:  # natural alignment, so a C reader may also overlay structs
            align = _CTYPES[f.ctype][1]
            if off % align:
                raise ValueError(f"{self.name}.{f.name}: offset {off} not aligned to {align}")
            off += f.size

    @property
    def size(self) -> int:
        """Size of the fixed part (the whole payload when there is no tail)."""
        return self._struct.size

    def offsets(self) -> dict[str, int]:
        out, off = {}, 0
        for f in self.fields:
            out[f.name] = off
            off += f.size
        return out

    def check_size(self, n: int) -> str | None:
        """None when a payload of ``n`` bytes fits, else the reason."""
        if self.tail is None:
            return None if n == self.size else f"{self.name} payload is {n} bytes, expected {self.size}"
        esz = _CTYPES[self.tail][1]
        if n < self.size or (n - self.size) % esz:
            return f"{self.name} payload is {n} bytes, expected {self.size} + k*{esz}"
        return None

    def pack(self, data: bytes = b"", **values) -> bytes:
        missing = [f.name for f in self.fields if f.name not in values]
        extra = set(values) - {f.name for f in self.fields}
        if missing or extra:
            raise ValueError(f"{self.name}: missing {missing}, unknown {sorted(extra)}")
        if data and self.tail is None:
            raise ValueError(f"{self.name} has no variable-length data")
        out = self._struct.pack(*(values[f.name] for f in self.fields)) + bytes(data)
        if len(out) > MAX_PAYLOAD:
            raise ValueError(f"{self.name}: payload {len(out)} bytes > {MAX_PAYLOAD}")
        return out

    def unpack(self, payload: bytes) -> dict:
        why = self.check_size(len(payload))
        if why:
            raise ProtocolError(FrameStatus.PAYLOAD, why)
        vals = dict(zip((f.name for f in self.fields), self._struct.unpack_from(payload)))
        if self.tail is not None:
            vals["data"] = bytes(payload[self.size:])
        return vals


F = Field
MESSAGES: tuple[Message, ...] = (
    # host -> device requests (0x01..0x7F); every one is answered by exactly one reply
    Message(0x01, "HELLO", "h2d", "ask for HELLO_INFO"),
    Message(0x02, "SAMPLE", "h2d", "bytes [offset, offset+len) of the int8 sample in batch slot slot (total = "
            "MT_INPUT_BYTES) with its label (-1: none); the slot is complete when offset + len == total; reply ACK",
            (F("total", "uint32_t"), F("offset", "uint32_t"), F("label", "int32_t"), F("slot", "uint16_t"),
             F("reserved", "uint16_t")), tail="int8_t"),
    Message(0x03, "TRAIN", "h2d", "one training step on the MT_BATCH complete slots; step must equal the "
            "device's step counter (else NAK STEP); reply METRICS",
            (F("step", "uint32_t"),)),
    Message(0x04, "EVAL", "h2d", "predict slot 0 and compare with its label; reply EVAL_RESULT"),
    Message(0x05, "INFER", "h2d", "forward pass on slot 0; reply INFER_RESULT"),
    Message(0x06, "PARAMS_GET", "h2d", "read length bytes of the checkpoint at offset; reply PARAMS_DATA",
            (F("offset", "uint32_t"), F("length", "uint16_t"), F("reserved", "uint16_t"))),
    Message(0x07, "PARAMS_SET", "h2d", "write a checkpoint chunk at offset, in order from offset 0 (whose chunk "
            "holds the whole header, checked before anything is written); total = MT_PARAMS_BYTES; step and "
            "PRNG state take effect with the last chunk; reply ACK",
            (F("total", "uint32_t"), F("offset", "uint32_t")), tail="uint8_t"),
    Message(0x08, "METRICS_GET", "h2d", "reply METRICS (the session's counters)"),
    Message(0x09, "INIT", "h2d", "start a session: mt_init(seed, total_steps), counters count/trace continue "
            "from the given values (0, 0 for a new run; a checkpoint's for a resume); reply ACK",
            (F("seed", "uint32_t"), F("total_steps", "uint32_t"), F("session", "uint32_t"), F("count", "uint32_t"),
             F("trace", "uint32_t"))),
    # device -> host replies (0x80..0xFF); seq = the request's seq (0xFFFF: unsolicited, or NAK of a
    # frame whose header could not be trusted)
    Message(0x80, "ACK", "d2h", "request done", (F("status", "uint16_t"), F("reserved", "uint16_t"))),
    Message(0x81, "NAK", "d2h", "request rejected: reason < 0x100 is an mt_frame_status, else an MT_NAK_* "
            "command error; detail depends on the reason",
            (F("reason", "uint16_t"), F("detail", "uint16_t"))),
    Message(0x82, "HELLO_INFO", "d2h", "who the device is (also sent unsolicited with seq 0xFFFF at boot); "
            "board and model_hash are NUL-padded ASCII (model_hash = MT_MODEL_HASH); flags: MT_HELLO_FLAG_*",
            (F("protocol_version", "uint8_t"), F("flags", "uint8_t"), F("max_payload", "uint16_t"),
             F("board", "uint8_t", 16), F("model_hash", "uint8_t", 16), F("arena_size", "uint32_t"),
             F("boot_count", "uint32_t"), F("session", "uint32_t"), F("input_bytes", "uint32_t"),
             F("params_bytes", "uint32_t"), F("batch", "uint16_t"), F("classes", "uint16_t"),
             F("stack_size", "uint32_t"))),
    Message(0x83, "METRICS", "d2h", "the session's counters: step (device step counter), the last step's "
            "loss_q16 (mean loss * 65536), correct and skipped; count = samples trained, trace = CRC-32 chain "
            "over (label i32 LE, sample bytes) of every trained sample in order; cycles of the last step and "
            "their total; arena and stack high-water marks in bytes",
            (F("step", "uint32_t"), F("loss_q16", "int32_t"), F("correct", "uint32_t"), F("skipped", "uint32_t"),
             F("count", "uint32_t"), F("trace", "uint32_t"), F("cycles", "uint64_t"), F("total_cycles", "uint64_t"),
             F("arena_hwm", "uint32_t"), F("stack_hwm", "uint32_t"))),
    Message(0x84, "INFER_RESULT", "d2h", "predicted class, cycles, then the int8 output scores",
            (F("predicted", "int32_t"), F("cycles", "uint32_t")), tail="int8_t"),
    Message(0x85, "PARAMS_DATA", "d2h", "a checkpoint chunk at offset of a total-byte checkpoint",
            (F("total", "uint32_t"), F("offset", "uint32_t")), tail="uint8_t"),
    Message(0x86, "EVAL_RESULT", "d2h", "predicted class of slot 0, 1 when it equals slot 0's label, cycles",
            (F("predicted", "int32_t"), F("correct", "uint32_t"), F("cycles", "uint32_t"), F("reserved", "uint32_t"))),
)
#: seq of unsolicited device frames; hosts number requests 0..0xFFFE and never use it
SEQ_UNSOLICITED = 0xFFFF


class HelloFlag(enum.IntFlag):
    """HELLO_INFO.flags (C: MT_HELLO_FLAG_<NAME>)."""

    SESSION = 1     # an INIT was received since boot
    STORAGE = 2     # the port has persistent storage (boot_count survives a reset)
    DSP = 4         # built with the Arm DSP kernel variants


class NakReason(enum.IntEnum):
    """NAK.reason values above the frame statuses (C: MT_NAK_<NAME>)."""

    COMMAND = 0x100     # not a host request type
    NO_SESSION = 0x101  # TRAIN / EVAL / INFER / PARAMS_* before INIT (the device rebooted?)
    SAMPLE = 0x102      # bad total, offset or slot (detail: MT_INPUT_BYTES)
    LABEL = 0x103       # label outside [0, classes) where one is needed
    INCOMPLETE = 0x104  # TRAIN/EVAL/INFER with a slot not complete (detail: first missing slot)
    STEP = 0x105        # TRAIN.step != device step (detail: device step & 0xFFFF)
    CHECKPOINT = 0x106  # checkpoint header rejected (magic, format or model hash), or chunk out of order
    RANGE = 0x107       # PARAMS_GET/SET range outside the checkpoint or over max_payload
    ENGINE = 0x108      # the engine returned an error (detail: mt_status)


BY_ID: dict[int, Message] = {m.id: m for m in MESSAGES}
BY_NAME: dict[str, Message] = {m.name: m for m in MESSAGES}
assert len(BY_ID) == len(MESSAGES) and len(BY_NAME) == len(MESSAGES)
assert all(m.size <= MAX_PAYLOAD for m in MESSAGES)


def message(key: int | str) -> Message:
    m = BY_ID.get(key) if isinstance(key, int) else BY_NAME.get(key)
    if m is None:
        raise KeyError(f"unknown message {key!r}")
    return m


# ---- COBS + CRC ----------------------------------------------------------------------------------
def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """COBS without the trailing delimiter (no 0x00 in the result). Standard COBS: a run of 254
    non-zero bytes is a 0xFF block; the encoding always ends with a block that has no implied 0x00."""
    out = bytearray()
    i, n = 0, len(data)
    while True:
        j = data.find(b"\x00", i, i + 254)
        if j >= 0:
            out.append(j - i + 1)
            out += data[i:j]
            i = j + 1
            continue
        block = data[i:i + 254]
        out.append(len(block) + 1)
        out += block
        i += len(block)
        if len(block) < 254:
            return bytes(out)


def cobs_decode(data: bytes, limit: int = MAX_RAW) -> bytes:
    """Inverse of cobs_encode (no delimiter); ProtocolError COBS / TOO_LONG, in stream order (the C
    decoder's order)."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError(FrameStatus.COBS, f"0x00 code byte at offset {i}")
        i += 1
        block = data[i:i + code - 1]
        if len(block) == code - 1 and 0 not in block and len(out) + len(block) <= limit:
            out += block
        else:  # find the first failing byte as the C loop does: truncation, then 0x00, then limit
            for j in range(code - 1):
                if i + j >= n:
                    raise ProtocolError(FrameStatus.COBS, f"block at offset {i - 1} runs past the end")
                if data[i + j] == 0:
                    raise ProtocolError(FrameStatus.COBS, f"0x00 inside a block at offset {i + j}")
                if len(out) >= limit:
                    raise ProtocolError(FrameStatus.TOO_LONG, f"frame longer than {limit} bytes")
                out.append(data[i + j])
        i += code - 1
        if code != 0xFF and i < n:
            if len(out) >= limit:
                raise ProtocolError(FrameStatus.TOO_LONG, f"frame longer than {limit} bytes")
            out.append(0)
    return bytes(out)


# ---- frames --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    version: int
    type: int
    seq: int
    payload: bytes

    @property
    def message(self) -> Message:
        return BY_ID[self.type]

    def fields(self) -> dict:
        return self.message.unpack(self.payload)


def encode_frame(msg_type: int | str, seq: int, payload: bytes = b"", version: int = PROTOCOL_VERSION) -> bytes:
    """The wire bytes of one frame, delimiter included."""
    mid = message(msg_type).id if isinstance(msg_type, str) else int(msg_type)
    if not 0 <= mid <= 0xFF or not 0 <= version <= 0xFF:
        raise ValueError(f"type {mid} / version {version} out of range")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload {len(payload)} bytes > {MAX_PAYLOAD}")
    raw = _HEADER.pack(version, mid, seq & 0xFFFF, len(payload)) + bytes(payload)
    raw += struct.pack("<I", crc32(raw))
    return cobs_encode(raw) + b"\x00"


def encode_message(msg_type: int | str, seq: int, data: bytes = b"", **values) -> bytes:
    """``encode_frame`` of ``message(msg_type).pack(data, **values)``."""
    m = message(msg_type)
    return encode_frame(m.id, seq, m.pack(data, **values))


def decode_frame(data: bytes, limit: int = MAX_RAW) -> Frame:
    """Decode one encoded frame (an optional single trailing 0x00 delimiter is accepted);
    ``limit`` (<= MAX_RAW) models a smaller receive buffer (TOO_LONG past it)."""
    data = bytes(data)
    if data.endswith(b"\x00"):
        data = data[:-1]
    if not data:
        raise ProtocolError(FrameStatus.EMPTY, "empty frame")
    raw = cobs_decode(data, min(limit, MAX_RAW))
    if len(raw) < HEADER_SIZE + CRC_SIZE:
        raise ProtocolError(FrameStatus.SHORT, f"{len(raw)} bytes < {HEADER_SIZE + CRC_SIZE}")
    body, (crc,) = raw[:-CRC_SIZE], struct.unpack_from("<I", raw, len(raw) - CRC_SIZE)
    if crc32(body) != crc:
        raise ProtocolError(FrameStatus.CRC, f"crc {crc:08x} != computed {crc32(body):08x}")
    version, mtype, seq, length = _HEADER.unpack_from(body)
    if length != len(body) - HEADER_SIZE:
        raise ProtocolError(FrameStatus.LEN, f"header len {length} != {len(body) - HEADER_SIZE} payload bytes")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(FrameStatus.VERSION, f"version {version}, expected {PROTOCOL_VERSION}")
    m = BY_ID.get(mtype)
    if m is None:
        raise ProtocolError(FrameStatus.TYPE, f"unknown message type 0x{mtype:02x}")
    why = m.check_size(length)
    if why:
        raise ProtocolError(FrameStatus.PAYLOAD, why)
    return Frame(version, mtype, seq, body[HEADER_SIZE:])


class FrameReader:
    """Streaming receiver: ``feed(bytes)`` returns the frames completed by these bytes. Malformed
    frames are dropped (counted in ``errors``, last reason in ``last_error``); a frame that grows
    past MAX_ENCODED is discarded up to the next delimiter, so the reader always resyncs there."""

    def __init__(self):
        self._buf = bytearray()
        self._discard = False
        self.errors = 0
        self.last_error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        data = bytes(data)
        start = 0
        while start <= len(data):
            end = data.find(b"\x00", start)
            chunk = data[start:] if end < 0 else data[start:end]
            if not self._discard:
                self._buf += chunk
                if len(self._buf) > MAX_ENCODED:
                    self._buf.clear()
                    self._discard = True
                    self._error(ProtocolError(FrameStatus.TOO_LONG, "no delimiter within MAX_ENCODED bytes"))
            if end < 0:
                break
            if not self._discard and self._buf:
                try:
                    frames.append(decode_frame(bytes(self._buf)))
                except ProtocolError as e:
                    self._error(e)
            self._buf.clear()
            self._discard = False
            start = end + 1
        return frames

    def _error(self, e: ProtocolError) -> None:
        self.errors += 1
        self.last_error = e


# ---- C header ------------------------------------------------------------------------------------
_C_API = """\
/* ---- little-endian field access (payload offsets above) ---- */
static inline uint16_t mt_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t mt_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void mt_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void mt_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

/* ---- frames (src/proto/mt_frame.c) ---- */
typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t seq;
    uint16_t len;   /**< payload bytes */
} mt_frame_header;

/** CRC-32/IEEE (zlib.crc32): pass 0 as @p crc to start, the previous result to continue. */
uint32_t mt_crc32(uint32_t crc, const uint8_t *p, size_t n);

/** 1 when @p type is a defined message id. */
int mt_msg_known(uint8_t type);

/** Payload size check for @p type: MT_FRAME_OK, MT_FRAME_TYPE or MT_FRAME_PAYLOAD. */
mt_frame_status mt_msg_check_size(uint8_t type, size_t len);

/**
 * Decode one encoded frame @p in [0, n) (COBS, no 0x00 except an optional single trailing
 * delimiter) into @p out [0, cap). On MT_FRAME_OK, *h is the header and *payload points at h->len
 * payload bytes inside @p out. *h is also filled for MT_FRAME_LEN/VERSION/TYPE/PAYLOAD (the CRC
 * held). Reads only in[0, n), writes only out[0, cap); cap >= MT_FRAME_MAX_RAW takes any frame.
 */
mt_frame_status mt_frame_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                                mt_frame_header *h, const uint8_t **payload);

/**
 * Encode a frame (header, payload [0, len), CRC, COBS, trailing 0x00) into @p out [0, cap);
 * *out_len = bytes written. MT_FRAME_TOO_LONG when len > MT_FRAME_MAX_PAYLOAD, MT_FRAME_OVERFLOW
 * when cap is too small (cap >= MT_FRAME_MAX_ENCODED always suffices). @p payload may be NULL when
 * len == 0.
 */
mt_frame_status mt_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len,
                                uint8_t *out, size_t cap, size_t *out_len);
"""


def _cname(s: str) -> str:
    return s.upper()


def generate_c_header() -> str:
    """The full text of firmware/include/mt_protocol.h (generated; do not edit the .h by hand)."""
    L = [
        "/**",
        " * @file mt_protocol.h",
        " * @brief Host <-> device protocol: message ids, payload layouts, frame API.",
        " *",
        " * GENERATED by host/protocol.py (generate_c_header); do not edit. Regenerate with",
        " *   .venv/bin/python -c 'from microtrain.host import protocol as p; p.write_c_header()'",
        " * tests/test_protocol.py fails when this file and the Python definitions disagree.",
        " *",
        " * Frame: COBS(header | payload | crc32) 0x00; header = version u8, type u8, seq u16, len u16;",
        " * crc32 = CRC-32/IEEE of header + payload; every multi-byte field is little-endian.",
        " * Payload fields: MT_MSG_<NAME>_OFF_<FIELD> (byte offset), MT_MSG_<NAME>_SIZE (fixed part);",
        " * messages with MT_MSG_<NAME>_TAIL_ELEM != 0 carry variable data after the fixed part.",
        " */",
        "#ifndef MT_PROTOCOL_H",
        "#define MT_PROTOCOL_H",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"#define MT_PROTOCOL_VERSION {PROTOCOL_VERSION}",
        f"#define MT_FRAME_HEADER_SIZE {HEADER_SIZE}",
        f"#define MT_FRAME_CRC_SIZE {CRC_SIZE}",
        f"#define MT_FRAME_MAX_PAYLOAD {MAX_PAYLOAD}",
        f"#define MT_FRAME_MAX_RAW {MAX_RAW}",
        f"#define MT_FRAME_MAX_ENCODED {MAX_ENCODED}",
        "",
        "typedef enum {",
    ]
    L += [f"    MT_FRAME_{s.name} = {s.value}{',' if i < len(FrameStatus) - 1 else ''}"
          for i, s in enumerate(FrameStatus)]
    L += ["} mt_frame_status;", "", "/* ---- message ids ---- */"]
    for m in MESSAGES:
        L.append(f"#define MT_MSG_{m.name} 0x{m.id:02X}u  /* {m.direction}: {m.doc} */")
    L.append(f"#define MT_SEQ_UNSOLICITED 0x{SEQ_UNSOLICITED:04X}u")
    L += ["", "/* ---- HELLO_INFO.flags ---- */"]
    L += [f"#define MT_HELLO_FLAG_{f.name} {int(f)}u" for f in HelloFlag]
    L += ["", "/* ---- NAK.reason: command errors (frame errors use mt_frame_status) ---- */"]
    L += [f"#define MT_NAK_{r.name} 0x{int(r):03X}u" for r in NakReason]
    L += ["", "/** X(NAME, id, fixed size, tail element size or 0) for every message */",
          "#define MT_MSG_TABLE(X) \\"]
    for i, m in enumerate(MESSAGES):
        tail = _CTYPES[m.tail][1] if m.tail else 0
        cont = "" if i == len(MESSAGES) - 1 else " \\"
        L.append(f"    X({m.name}, 0x{m.id:02X}u, {m.size}u, {tail}u){cont}")
    L += ["", "/* ---- payload layouts ---- */"]
    for m in MESSAGES:
        L.append(f"/* {m.name}: " + (", ".join(f"{f.ctype} {f.name}" + (f"[{f.count}]" if f.count != 1 else "")
                                              for f in m.fields) or "(empty)")
                 + (f", {m.tail} data[]" if m.tail else "") + " */")
        L.append(f"#define MT_MSG_{m.name}_SIZE {m.size}u")
        L.append(f"#define MT_MSG_{m.name}_TAIL_ELEM {_CTYPES[m.tail][1] if m.tail else 0}u")
        for f in m.fields:
            L.append(f"#define MT_MSG_{m.name}_OFF_{_cname(f.name)} {m.offsets()[f.name]}u")
            if f.count != 1:
                L.append(f"#define MT_MSG_{m.name}_LEN_{_cname(f.name)} {f.count}u")
    L += ["", _C_API, "#ifdef __cplusplus", "}", "#endif", "", "#endif /* MT_PROTOCOL_H */", ""]
    return "\n".join(L)


def write_c_header(path: Path = HEADER_PATH) -> Path:
    Path(path).write_text(generate_c_header())
    return Path(path)
