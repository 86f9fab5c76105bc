"""Host <-> device protocol (host/protocol.py, firmware/src/proto/mt_frame.c, mt_protocol.h):
roundtrips, the committed header equals the generated one, hypothesis fuzz of the Python decoder,
FrameReader resync, C decoder == Python decoder on random and mutated frames (also under ASan),
C encoder == Python encoder, and a 20,000-input fuzz loop (`make fuzz` runs 1,000,000)."""
from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbuild import INCLUDE, ROOT, SANITIZE, cross_compile_check, run_sanitized_pytest
from microtrain.host import protocol as P

_spec = importlib.util.spec_from_file_location("fuzz_frames", ROOT / "tools" / "fuzz_frames.py")
fuzz_frames = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_frames)

N_FUZZ = 2_000 if SANITIZE else 20_000
MT_FRAME_C = ROOT / "firmware" / "src" / "proto" / "mt_frame.c"


@pytest.fixture(scope="module")
def lib():
    return fuzz_frames.load_lib()


messages = st.sampled_from(P.MESSAGES)


@st.composite
def frames(draw):
    m = draw(messages)
    extra = b""
    if m.tail is not None:
        extra = draw(st.binary(max_size=P.MAX_PAYLOAD - m.size))
    payload = draw(st.binary(min_size=m.size, max_size=m.size)) + extra
    return m, draw(st.integers(0, 0xFFFF)), payload


# ---- Python ----------------------------------------------------------------------------------
@settings(max_examples=300 if not SANITIZE else 30, deadline=None)
@given(st.binary(max_size=3000))
def test_cobs_roundtrip(data):
    enc = P.cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert P.cobs_decode(enc, limit=10**6) == data


@settings(max_examples=300 if not SANITIZE else 30, deadline=None)
@given(frames())
def test_frame_roundtrip(f):
    m, seq, payload = f
    wire = P.encode_frame(m.id, seq, payload)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1] and len(wire) <= P.MAX_ENCODED
    fr = P.decode_frame(wire)
    assert (fr.version, fr.type, fr.seq, fr.payload) == (P.PROTOCOL_VERSION, m.id, seq, payload)
    assert P.decode_frame(wire[:-1]) == fr  # the delimiter is optional
    fields = fr.fields()
    assert m.pack(**fields) == payload


def test_crc_is_zlib_and_messages():
    assert P.crc32(b"123456789") == 0xCBF43926 == zlib.crc32(b"123456789")
    wire = P.encode_message("METRICS", 7, step=3, loss_q16=-65536, correct=2, skipped=0, count=4, trace=0xDEADBEEF,
                            cycles=2**40, total_cycles=2**41, arena_hwm=1000, stack_hwm=200)
    fr = P.decode_frame(wire)
    assert fr.message.name == "METRICS" and fr.fields()["cycles"] == 2**40 and fr.fields()["loss_q16"] == -65536
    info = P.message("HELLO_INFO")
    assert info.size == 64 and info.offsets()["arena_size"] == 36 and info.offsets()["stack_size"] == 60
    with pytest.raises(ValueError):
        P.message("TRAIN").pack(step=1, bogus=2)
    with pytest.raises(P.ProtocolError, match="payload"):
        P.message("TRAIN").unpack(b"\x00")


@pytest.mark.parametrize("wire,code", [
    (b"", P.FrameStatus.EMPTY), (b"\x00", P.FrameStatus.EMPTY), (b"\x01\x00\x01", P.FrameStatus.COBS),
    (b"\x05\x01\x02", P.FrameStatus.COBS), (b"\x03\x01\x02", P.FrameStatus.SHORT),
    (b"\xff" * 2000, P.FrameStatus.TOO_LONG),
])
def test_decode_errors(wire, code):
    with pytest.raises(P.ProtocolError) as e:
        P.decode_frame(wire)
    assert e.value.code == code and "\n" not in str(e.value)


def test_decode_semantic_errors():
    rng = random.Random(1)
    good = P.encode_frame("HELLO", 1)
    bad_crc = bytearray(P.cobs_decode(good[:-1]))
    bad_crc[-1] ^= 1
    cases = {
        P.FrameStatus.CRC: P.cobs_encode(bytes(bad_crc)),
        P.FrameStatus.LEN: fuzz_frames.raw_frame(rng, length=3, payload=b""),
        P.FrameStatus.VERSION: fuzz_frames.raw_frame(rng, version=P.PROTOCOL_VERSION + 1),
        P.FrameStatus.TYPE: fuzz_frames.raw_frame(rng, mtype=0x7F),
        P.FrameStatus.PAYLOAD: fuzz_frames.raw_frame(rng, mtype=P.message("TRAIN").id, payload=b"\x01"),
    }
    for code, wire in cases.items():
        with pytest.raises(P.ProtocolError) as e:
            P.decode_frame(wire)
        assert e.value.code == code, (code, e.value)


@settings(max_examples=1000 if not SANITIZE else 50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=1500),
                 st.builds(lambda f, data: fuzz_frames.mutate(random.Random(data), P.encode_frame(f[0].id, f[1], f[2])),
                           frames(), st.integers(0, 2**32))))
def test_python_decoder_only_raises_protocol_error(data):
    try:
        P.decode_frame(data)
    except P.ProtocolError as e:
        assert "\n" not in str(e)


def test_frame_reader_resync():
    rng = random.Random(5)
    sent = [(rng.choice(P.MESSAGES), rng.randrange(65536)) for _ in range(300)]
    wires = [P.encode_frame(m.id, s, fuzz_frames.random_payload(rng, m)) for m, s in sent]
    stream, expect = bytearray(), []
    for w in wires:
        r = rng.random()
        if r < 0.15:    # garbage before the frame, ended by a delimiter: the frame must survive
            stream += rng.randbytes(rng.randrange(1, 40)).replace(b"\x00", b"\x01") + b"\x00"
            stream += w
            expect.append(w)
        elif r < 0.25:  # corrupted frame: dropped, the next one must survive
            stream += fuzz_frames.mutate(rng, w[:-1]).replace(b"\x00", b"\x02") + b"\x00"
        elif r < 0.30:  # dropped bytes: the frame merges with nothing else (its delimiter stays)
            i = rng.randrange(len(w) - 1)
            stream += w[:i] + w[i + 1:]
        else:
            stream += w
            expect.append(w)
    reader = P.FrameReader()
    got, i = [], 0
    while i < len(stream):  # arbitrary chunking
        k = rng.randrange(1, 64)
        got += reader.feed(bytes(stream[i:i + k]))
        i += k
    got_wires = [P.encode_frame(f.type, f.seq, f.payload) for f in got]
    # every intact frame arrives; a corrupted one may only slip through its CRC by chance (not here)
    assert got_wires == expect
    assert reader.errors > 0


def test_frame_reader_overlong_garbage_resyncs():
    reader = P.FrameReader()
    assert reader.feed(b"\x07" * (3 * P.MAX_ENCODED)) == []
    f = P.encode_frame("EVAL", 9)
    out = reader.feed(b"\x01\x00" + f)  # ends the garbage, then a good frame
    assert [x.seq for x in out] == [9] and reader.last_error.code in (P.FrameStatus.TOO_LONG, P.FrameStatus.COBS)


def test_committed_header_is_generated():
    committed = (INCLUDE / "mt_protocol.h").read_text()
    assert committed == P.generate_c_header(), \
        "firmware/include/mt_protocol.h is stale: run .venv/bin/python -c 'from microtrain.host import protocol as p; p.write_c_header()'"


def test_firmware_lint_clean():
    sys.path.insert(0, str(ROOT / "tools"))
    import lint_c

    assert lint_c.lint_paths([MT_FRAME_C, INCLUDE / "mt_protocol.h"]) == []


# ---- C vs Python --------------------------------------------------------------------------------
def test_c_crc_and_sizes(lib):
    import ctypes

    lib.mt_crc32.restype = ctypes.c_uint32
    lib.mt_crc32.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
    rng = random.Random(2)
    for n in [0, 1, 9, 100, 1034]:
        d = rng.randbytes(n)
        assert lib.mt_crc32(0, d, n) == zlib.crc32(d)
        assert lib.mt_crc32(lib.mt_crc32(0, d[:3], min(3, n)), d[3:], max(0, n - 3)) == zlib.crc32(d)
    lib.mt_msg_check_size.argtypes = [ctypes.c_uint8, ctypes.c_size_t]
    for m in P.MESSAGES:
        for n in range(0, m.size + 4):
            assert lib.mt_msg_check_size(m.id, n) == (0 if m.check_size(n) is None else P.FrameStatus.PAYLOAD)


@settings(max_examples=300 if not SANITIZE else 30, deadline=None)
@given(frames(), st.sampled_from([0, 5, 20, P.MAX_ENCODED - 1, P.MAX_ENCODED]))
def test_c_encoder_matches_python(lib, f, slack):
    import ctypes

    m, seq, payload = f
    want = P.encode_frame(m.id, seq, payload)
    out = ctypes.create_string_buffer(P.MAX_ENCODED)
    n = ctypes.c_size_t()
    raw = P.HEADER_SIZE + len(payload) + P.CRC_SIZE
    worst = raw + raw // 254 + 2
    cap = min(worst, slack + len(want))
    st_ = lib.mt_harness_encode(m.id, seq, payload, len(payload), cap, out, ctypes.byref(n))
    if cap < worst:
        assert st_ == P.FrameStatus.OVERFLOW
    else:
        assert st_ == 0 and out.raw[:n.value] == want


@settings(max_examples=500 if not SANITIZE else 50, deadline=None)
@given(st.one_of(st.binary(max_size=1300),
                 st.builds(lambda f, s: fuzz_frames.mutate(random.Random(s), P.encode_frame(f[0].id, f[1], f[2])),
                           frames(), st.integers(0, 2**32)),
                 st.builds(lambda f: P.encode_frame(f[0].id, f[1], f[2]), frames())),
       st.sampled_from([P.MAX_RAW, P.MAX_RAW, 0, 10, 64]))
def test_c_decoder_matches_python_hypothesis(lib, data, cap):
    assert fuzz_frames.c_decode(lib, data, cap) == fuzz_frames.py_decode(data, cap)


def test_c_decoder_fuzz_loop(lib):
    res = fuzz_frames.run(N_FUZZ, seed=11, lib=lib)
    assert res["count"] == N_FUZZ
    # the generator reaches every status
    assert set(res["statuses"]) == {s.name for s in P.FrameStatus}, res["statuses"]


@pytest.mark.skipif(SANITIZE, reason="host sanitizer run only")
def test_sanitizers():
    if not Path(subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                               text=True).stdout.strip()).is_file():
        pytest.skip("libasan not installed")
    proc = run_sanitized_pytest(Path(__file__), "-k", "not sanitizers and not cross")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout


@pytest.mark.skipif(SANITIZE, reason="host sanitizer run only")
@pytest.mark.parametrize("target", ["cortex-m0plus", "rv32imac"])
def test_cross_compile(target, tmp_path):
    objs = cross_compile_check([MT_FRAME_C], target, extra_flags=("-pedantic",), out_dir=tmp_path)
    assert len(objs) == 1
