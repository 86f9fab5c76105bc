/**
 * @file mt_frame.c
 * @brief Protocol frames: COBS, CRC-32/IEEE, decode and encode (declared in mt_protocol.h).
 *
 * C99, no heap, no stdio, no floating point. The decoder checks, in order: EMPTY, COBS/TOO_LONG/
 * OVERFLOW (in stream order while un-stuffing), SHORT, CRC, LEN, VERSION, TYPE, PAYLOAD - the same
 * order and codes as host/protocol.py decode_frame (tests/test_protocol.py compares them).
 */
#include "mt_protocol.h"

/* CRC-32/IEEE, reflected polynomial 0xEDB88320, one nibble at a time (64-byte table). */
static const uint32_t mt_crc32_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu
};

uint32_t mt_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
    size_t i;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ mt_crc32_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ mt_crc32_nibble[crc & 0x0Fu];
    }
    return ~crc;
}

int mt_msg_known(uint8_t type)
{
    switch (type) {
#define MT_X_KNOWN(name, id, size, tail) case id: return 1;
        MT_MSG_TABLE(MT_X_KNOWN)
#undef MT_X_KNOWN
    default:
        return 0;
    }
}

mt_frame_status mt_msg_check_size(uint8_t type, size_t len)
{
    size_t size = 0, tail = 0;
    switch (type) {
#define MT_X_SIZE(name, id, sz, tl) case id: size = (sz); tail = (tl); break;
        MT_MSG_TABLE(MT_X_SIZE)
#undef MT_X_SIZE
    default:
        return MT_FRAME_TYPE;
    }
    if (tail == 0u) {
        return (len == size) ? MT_FRAME_OK : MT_FRAME_PAYLOAD;
    }
    if (len < size || ((len - size) % tail) != 0u) {
        return MT_FRAME_PAYLOAD;
    }
    return MT_FRAME_OK;
}

mt_frame_status mt_frame_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                                mt_frame_header *h, const uint8_t **payload)
{
    size_t i = 0, o = 0, j, body;
    uint32_t crc;
    mt_frame_status st;

    if (n > 0u && in[n - 1u] == 0u) {
        n--;
    }
    if (n == 0u) {
        return MT_FRAME_EMPTY;
    }
    while (i < n) {
        uint8_t code = in[i];
        if (code == 0u) {
            return MT_FRAME_COBS;
        }
        i++;
        for (j = 1u; j < code; j++) {
            if (i >= n) {
                return MT_FRAME_COBS;
            }
            if (in[i] == 0u) {
                return MT_FRAME_COBS;
            }
            if (o >= MT_FRAME_MAX_RAW) {
                return MT_FRAME_TOO_LONG;
            }
            if (o >= cap) {
                return MT_FRAME_OVERFLOW;
            }
            out[o++] = in[i++];
        }
        if (code != 0xFFu && i < n) {
            if (o >= MT_FRAME_MAX_RAW) {
                return MT_FRAME_TOO_LONG;
            }
            if (o >= cap) {
                return MT_FRAME_OVERFLOW;
            }
            out[o++] = 0u;
        }
    }
    if (o < (size_t)(MT_FRAME_HEADER_SIZE + MT_FRAME_CRC_SIZE)) {
        return MT_FRAME_SHORT;
    }
    body = o - MT_FRAME_CRC_SIZE;
    crc = mt_get_u32(out + body);
    if (mt_crc32(0u, out, body) != crc) {
        return MT_FRAME_CRC;
    }
    h->version = out[0];
    h->type = out[1];
    h->seq = mt_get_u16(out + 2);
    h->len = mt_get_u16(out + 4);
    if ((size_t)h->len != body - MT_FRAME_HEADER_SIZE) {
        return MT_FRAME_LEN;
    }
    if (h->version != MT_PROTOCOL_VERSION) {
        return MT_FRAME_VERSION;
    }
    st = mt_msg_check_size(h->type, h->len);
    if (st != MT_FRAME_OK) {
        return st;
    }
    *payload = out + MT_FRAME_HEADER_SIZE;
    return MT_FRAME_OK;
}

/* Byte k of the unencoded frame header | payload | crc (no scratch copy needed). */
static uint8_t mt_frame_raw_byte(const uint8_t *hdr, const uint8_t *payload, size_t len,
                                 const uint8_t *crc, size_t k)
{
    if (k < MT_FRAME_HEADER_SIZE) {
        return hdr[k];
    }
    k -= MT_FRAME_HEADER_SIZE;
    if (k < len) {
        return payload[k];
    }
    return crc[k - len];
}

mt_frame_status mt_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len,
                                uint8_t *out, size_t cap, size_t *out_len)
{
    uint8_t hdr[MT_FRAME_HEADER_SIZE];
    uint8_t crcb[MT_FRAME_CRC_SIZE];
    size_t n, k, o, code_at;
    uint8_t code;

    *out_len = 0u;
    if (len > MT_FRAME_MAX_PAYLOAD) {
        return MT_FRAME_TOO_LONG;
    }
    hdr[0] = (uint8_t)MT_PROTOCOL_VERSION;
    hdr[1] = type;
    mt_put_u16(hdr + 2, seq);
    mt_put_u16(hdr + 4, (uint16_t)len);
    mt_put_u32(crcb, mt_crc32(mt_crc32(0u, hdr, sizeof hdr), payload, len));
    n = MT_FRAME_HEADER_SIZE + len + MT_FRAME_CRC_SIZE;
    /* worst case n + n / 254 + 1 code bytes + the delimiter */
    if (cap < n + n / 254u + 2u) {
        return MT_FRAME_OVERFLOW;
    }
    code_at = 0u;
    o = 1u;
    code = 1u;
    for (k = 0u; k < n; k++) {
        uint8_t b = mt_frame_raw_byte(hdr, payload, len, crcb, k);
        if (b == 0u) {
            out[code_at] = code;
            code_at = o++;
            code = 1u;
        } else {
            out[o++] = b;
            code++;
            if (code == 0xFFu) {
                out[code_at] = code;
                code_at = o++;
                code = 1u;
            }
        }
    }
    out[code_at] = code;
    out[o++] = 0u;
    *out_len = o;
    return MT_FRAME_OK;
}
