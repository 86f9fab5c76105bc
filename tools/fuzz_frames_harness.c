/* Test/fuzz harness for firmware/src/proto/mt_frame.c (host only, not firmware: uses malloc).
 * Every input and output buffer is malloc'ed at its exact size, so an ASan build reports any
 * read past in[n) or write past out[cap). Used by tests/test_protocol.py and tools/fuzz_frames.py. */
#include <stdlib.h>
#include <string.h>

#include "mt_protocol.h"

/* Decode in[0, n) with an out buffer of cap bytes; hdr6 gets version, type, seq, len (LE) and
 * payload_out (>= MT_FRAME_MAX_PAYLOAD bytes) the payload when the status is MT_FRAME_OK. */
int mt_harness_decode(const uint8_t *in, size_t n, size_t cap, uint8_t *hdr6, uint8_t *payload_out)
{
    uint8_t *cin = (uint8_t *)malloc(n ? n : 1u);
    uint8_t *cout = (uint8_t *)malloc(cap ? cap : 1u);
    mt_frame_header h;
    const uint8_t *payload = NULL;
    mt_frame_status st;
    if (cin == NULL || cout == NULL) {
        abort();
    }
    if (n) {
        memcpy(cin, in, n);
    }
    st = mt_frame_decode(cin, n, cout, cap, &h, &payload);
    if (st == MT_FRAME_OK) {
        hdr6[0] = h.version;
        hdr6[1] = h.type;
        mt_put_u16(hdr6 + 2, h.seq);
        mt_put_u16(hdr6 + 4, h.len);
        if (payload < cout + MT_FRAME_HEADER_SIZE || payload + h.len > cout + cap) {
            abort();
        }
        memcpy(payload_out, payload, h.len);
    }
    free(cin);
    free(cout);
    return (int)st;
}

/* Decode count inputs blob[offs[i], offs[i+1]) each with cap; statuses into st_out. */
void mt_harness_batch(const uint8_t *blob, const uint32_t *offs, size_t count, size_t cap, int32_t *st_out)
{
    uint8_t hdr[MT_FRAME_HEADER_SIZE];
    static uint8_t payload[MT_FRAME_MAX_RAW];
    size_t i;
    for (i = 0; i < count; i++) {
        st_out[i] = mt_harness_decode(blob + offs[i], offs[i + 1] - offs[i], cap, hdr, payload);
    }
}

/* Encode into an exact-size cap buffer; the encoded bytes go to out (>= MT_FRAME_MAX_ENCODED). */
int mt_harness_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len, size_t cap,
                      uint8_t *out, size_t *out_len)
{
    uint8_t *cp = (uint8_t *)malloc(len ? len : 1u);
    uint8_t *co = (uint8_t *)malloc(cap ? cap : 1u);
    mt_frame_status st;
    if (cp == NULL || co == NULL) {
        abort();
    }
    if (len) {
        memcpy(cp, payload, len);
    }
    st = mt_frame_encode(type, seq, cp, len, co, cap, out_len);
    if (st == MT_FRAME_OK) {
        memcpy(out, co, *out_len);
    }
    free(cp);
    free(co);
    return (int)st;
}
