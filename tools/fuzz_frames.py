#!/usr/bin/env python3
"""Fuzz the C frame decoder (firmware/src/proto/mt_frame.c) built with ASan/UBSan, and check every
status (and, on success, header + payload) against the Python decoder (host/protocol.py).

    python tools/fuzz_frames.py [-n COUNT] [--seed S] [--no-compare]     (make fuzz: 1,000,000)

Inputs: valid frames of every message, their mutations (bit flips, byte insert/delete/duplicate,
truncation, stray 0x00, splices), COBS-valid frames with a correct CRC but a bad len / version /
type / payload size, random bytes and over-long inputs; one batch in 7 uses a small receive
buffer (cap) to exercise MT_FRAME_OVERFLOW. Each input is copied into a malloc'ed buffer of its
exact size by tools/fuzz_frames_harness.c, so ASan sees any out-of-bounds access. The script
re-executes itself with libasan preloaded. Exit 0 when all inputs passed.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import random
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from microtrain.host import protocol as P  # noqa: E402

SOURCES = [ROOT / "firmware" / "src" / "proto" / "mt_frame.c", ROOT / "tools" / "fuzz_frames_harness.c"]


def load_lib(sanitize: bool | None = None) -> ctypes.CDLL:
    from cbuild import load

    lib = load(SOURCES, "mt_frame", sanitize=sanitize)
    lib.mt_harness_decode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_char_p,
                                      ctypes.c_char_p]
    lib.mt_harness_decode.restype = ctypes.c_int
    lib.mt_harness_batch.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_size_t,
                                     ctypes.c_size_t, ctypes.POINTER(ctypes.c_int32)]
    lib.mt_harness_batch.restype = None
    lib.mt_harness_encode.argtypes = [ctypes.c_uint8, ctypes.c_uint16, ctypes.c_char_p, ctypes.c_size_t,
                                      ctypes.c_size_t, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
    lib.mt_harness_encode.restype = ctypes.c_int
    return lib


def c_decode(lib, data: bytes, cap: int = P.MAX_RAW):
    """(status, Frame | None) from the C decoder."""
    hdr = ctypes.create_string_buffer(6)
    payload = ctypes.create_string_buffer(P.MAX_RAW)
    st = lib.mt_harness_decode(data, len(data), cap, hdr, payload)
    if st != 0:
        return st, None
    v, t, s, n = struct.unpack("<BBHH", hdr.raw)
    return st, P.Frame(v, t, s, payload.raw[:n])


def py_decode(data: bytes, cap: int = P.MAX_RAW):
    """(status, Frame | None) from the Python decoder, with the C meaning of a small cap."""
    try:
        return 0, P.decode_frame(data, limit=cap)
    except P.ProtocolError as e:
        if e.code == P.FrameStatus.TOO_LONG and cap < P.MAX_RAW:
            return int(P.FrameStatus.OVERFLOW), None
        return int(e.code), None


def random_payload(rng: random.Random, m: P.Message) -> bytes:
    size = m.size
    if m.tail is not None:
        esz = 1
        size += esz * rng.choice([0, 1, 2, rng.randrange(0, 64), rng.randrange(0, P.MAX_PAYLOAD - m.size + 1)])
    return rng.randbytes(size) if rng.random() < 0.7 else bytes(size)


def valid_frame(rng: random.Random) -> bytes:
    m = rng.choice(P.MESSAGES)
    return P.encode_frame(m.id, rng.randrange(65536), random_payload(rng, m))


def raw_frame(rng: random.Random, version=None, mtype=None, length=None, payload=None) -> bytes:
    """COBS frame with a correct CRC over arbitrary header fields (reaches LEN/VERSION/TYPE/PAYLOAD)."""
    m = rng.choice(P.MESSAGES)
    payload = random_payload(rng, m) if payload is None else payload
    hdr = struct.pack("<BBHH", P.PROTOCOL_VERSION if version is None else version,
                      m.id if mtype is None else mtype, rng.randrange(65536),
                      len(payload) if length is None else length)
    body = hdr + payload
    return P.cobs_encode(body + struct.pack("<I", P.crc32(body))) + b"\x00"


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        op = rng.randrange(8)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op == 3 and b:
            del b[rng.randrange(len(b))]
        elif op == 4 and b:
            del b[rng.randrange(len(b)):]
        elif op == 5:
            b.insert(rng.randrange(len(b) + 1), 0)
        elif op == 6 and b:
            i = rng.randrange(len(b))
            j = rng.randrange(i, min(len(b), i + 300) + 1)
            b[j:j] = b[i:j]
        elif op == 7 and b:
            b[rng.randrange(len(b))] = rng.choice([0x01, 0xFF, 0xFE, 0x02])
    return bytes(b)


def gen_input(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.15:
        return valid_frame(rng)
    if r < 0.60:
        return mutate(rng, valid_frame(rng))
    if r < 0.75:
        k = rng.randrange(4)
        if k == 0:
            return raw_frame(rng, version=rng.randrange(256))
        if k == 1:
            return raw_frame(rng, mtype=rng.randrange(256))
        if k == 2:
            return raw_frame(rng, length=rng.randrange(65536) if rng.random() < 0.5 else None,
                             payload=rng.randbytes(rng.randrange(0, 80)))
        return raw_frame(rng, payload=rng.randbytes(rng.randrange(0, P.MAX_PAYLOAD + 300)))
    if r < 0.85:
        return rng.randbytes(rng.choice([0, 1, 2, 5, 10, 11, rng.randrange(64), rng.randrange(2000)]))
    if r < 0.93:  # random bytes without 0x00 (COBS-plausible), sometimes long
        n = rng.choice([rng.randrange(32), rng.randrange(300), rng.randrange(900, 1300)])
        return bytes(rng.randrange(1, 256) for _ in range(n)) if n < 64 else rng.randbytes(n).replace(b"\x00", b"\x01")
    return P.cobs_encode(rng.randbytes(rng.randrange(0, 1200)))  # valid COBS, random content


def run(count: int, seed: int = 0, compare: bool = True, batch: int | None = None, lib=None) -> dict:
    """Fuzz ``count`` inputs; raise AssertionError on a C/Python mismatch. Returns a summary."""
    lib = lib if lib is not None else load_lib()
    rng = random.Random(seed)
    batch = batch or min(5000, max(100, count // 20))
    hist: dict[int, int] = {}
    done, b_index, t0 = 0, 0, time.perf_counter()
    while done < count:
        k = min(batch, count - done)
        cap = P.MAX_RAW if b_index % 7 != 3 else rng.choice([0, 1, 10, 11, 64, 300, P.MAX_RAW - 1])
        inputs = [gen_input(rng) for _ in range(k)]
        offs = [0]
        for x in inputs:
            offs.append(offs[-1] + len(x))
        blob = b"".join(inputs)
        c_offs = (ctypes.c_uint32 * len(offs))(*offs)
        st = (ctypes.c_int32 * k)()
        lib.mt_harness_batch(blob, c_offs, k, cap, st)
        for i, x in enumerate(inputs):
            hist[st[i]] = hist.get(st[i], 0) + 1
            if compare:
                want, frame = py_decode(x, cap)
                if st[i] != want:
                    raise AssertionError(f"input {done + i} (cap {cap}): C status {st[i]} != Python {want}: {x.hex()}")
                if want == 0 and (i % 16 == 0):  # full header+payload comparison on a sample
                    got = c_decode(lib, x, cap)[1]
                    if got != frame:
                        raise AssertionError(f"input {done + i}: C frame {got} != Python {frame}")
        done += k
        b_index += 1
    return {"count": done, "seconds": time.perf_counter() - t0,
            "statuses": {P.FrameStatus(s).name: n for s, n in sorted(hist.items())}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compare", action="store_true", help="ASan only, no Python cross-check")
    args = ap.parse_args(argv)
    if os.environ.get("MT_SANITIZE", "") in ("", "0"):  # re-exec with libasan preloaded
        from cbuild import sanitizer_env

        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], sanitizer_env())
    res = run(args.count, args.seed, compare=not args.no_compare, lib=load_lib(sanitize=True))
    print(f"fuzz_frames: {res['count']:,} inputs through the ASan/UBSan C decoder"
          f"{' (each checked against the Python decoder)' if not args.no_compare else ''} in "
          f"{res['seconds']:.1f} s, no crash; statuses {res['statuses']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
