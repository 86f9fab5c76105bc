/**
 * @file mt_device.c
 * @brief The device loop: protocol frames in, the generated program, replies out (mt_device.h).
 *
 * C99, no heap, no stdio, no floating point; talks to the board only through mt_port.h.
 */
#include "mt_device.h"

#include "mt_model.h"
#include "mt_port.h"
#include "mt_protocol.h"

/* ---- buffers ---------------------------------------------------------------------------------- */
#define MT_DEV_RAW_CAP (MT_FRAME_HEADER_SIZE + MT_DEVICE_MAX_PAYLOAD + MT_FRAME_CRC_SIZE)
/* an encoded frame without its delimiter: one COBS code byte per 254 bytes, plus one */
#define MT_DEV_ENC_CAP (MT_DEV_RAW_CAP + MT_DEV_RAW_CAP / 254 + 1)
/* leading 0x00 + encoded frame + trailing 0x00 (mt_frame_encode wants raw + raw/254 + 2) */
#define MT_DEV_TX_CAP (1 + MT_DEV_RAW_CAP + MT_DEV_RAW_CAP / 254 + 2)
/* unsolicited frames (boot HELLO_INFO, NAK of a malformed frame): payload <= HELLO_INFO */
#define MT_DEV_SMALL_RAW (MT_FRAME_HEADER_SIZE + MT_MSG_HELLO_INFO_SIZE + MT_FRAME_CRC_SIZE)
#define MT_DEV_SMALL_CAP (1 + MT_DEV_SMALL_RAW + MT_DEV_SMALL_RAW / 254 + 2)

/* compile-time checks (C99: a negative array size fails the build) */
typedef char mt_dev_check_payload_range[(MT_DEVICE_MAX_PAYLOAD >= 64 &&
                                         MT_DEVICE_MAX_PAYLOAD <= MT_FRAME_MAX_PAYLOAD) ? 1 : -1];
typedef char mt_dev_check_infer_fits[(MT_MSG_INFER_RESULT_SIZE + MT_NUM_CLASSES <= MT_DEVICE_MAX_PAYLOAD) ? 1 : -1];
typedef char mt_dev_check_hello_fits[(MT_MSG_HELLO_INFO_SIZE <= MT_DEVICE_MAX_PAYLOAD) ? 1 : -1];
typedef char mt_dev_check_hash[(sizeof(MT_MODEL_HASH) - 1u == MT_MSG_HELLO_INFO_LEN_MODEL_HASH) ? 1 : -1];

static uint8_t mt_dev_rx[MT_DEV_ENC_CAP];       /* encoded bytes of the frame being received */
static size_t mt_dev_rx_len;
static uint8_t mt_dev_rx_discard;               /* 1: the frame outgrew mt_dev_rx; drop to 0x00 */
static uint8_t mt_dev_raw[MT_DEV_RAW_CAP];      /* the decoded request */
static uint8_t mt_dev_out[MT_DEVICE_MAX_PAYLOAD]; /* the reply payload being built */
static uint8_t mt_dev_tx[MT_DEV_TX_CAP];        /* 0x00 + the last reply frame (kept for re-sending) */
static size_t mt_dev_tx_len;
static uint8_t mt_dev_small[MT_DEV_SMALL_CAP];  /* unsolicited frames */
static uint8_t mt_dev_have_last;                /* the last request's seq/type are valid */
static uint16_t mt_dev_last_seq;
static uint8_t mt_dev_last_type;

/* ---- samples and session ------------------------------------------------------------------------ */
static int8_t mt_dev_x[MT_BATCH * MT_INPUT_BYTES];
static int32_t mt_dev_label[MT_BATCH];
static uint32_t mt_dev_fill[MT_BATCH];          /* bytes received per slot (complete: MT_INPUT_BYTES) */

static struct {
    uint8_t active;       /* an INIT was received since boot */
    uint8_t storage;      /* the boot counter is persistent */
    uint32_t boot_count;
    uint32_t session;
    uint32_t count;       /* samples trained */
    uint32_t trace;       /* CRC-32 chain over (label i32 LE, sample) of every trained sample */
    int32_t loss_q16;     /* last TRAIN */
    int32_t correct;
    int32_t skipped;
    uint32_t cycles;
    uint32_t total_cycles_lo; /* 64-bit total as two words (no 64-bit arithmetic needed) */
    uint32_t total_cycles_hi;
} mt_dev;

/* ---- helpers ------------------------------------------------------------------------------------ */
static void mt_dev_copy(uint8_t *d, const uint8_t *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        d[i] = s[i];
    }
}

static void mt_dev_zero(uint8_t *d, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        d[i] = 0u;
    }
}

static int32_t mt_dev_i32(const uint8_t *p)
{
    return mt_wrap32(mt_get_u32(p));
}

static void mt_dev_put_i32(uint8_t *p, int32_t v)
{
    mt_put_u32(p, (uint32_t)v);
}

static void mt_dev_clear_slots(void)
{
    uint32_t j;
    for (j = 0; j < (uint32_t)MT_BATCH; ++j) {
        mt_dev_fill[j] = 0u;
        mt_dev_label[j] = -1;
    }
}

/* first incomplete slot, or MT_BATCH when all are complete */
static uint32_t mt_dev_first_incomplete(void)
{
    uint32_t j;
    for (j = 0; j < (uint32_t)MT_BATCH; ++j) {
        if (mt_dev_fill[j] != (uint32_t)MT_INPUT_BYTES) {
            return j;
        }
    }
    return (uint32_t)MT_BATCH;
}

static int mt_dev_label_ok(int32_t label)
{
    return label >= 0 && label < (int32_t)MT_NUM_CLASSES;
}

/* 0x00 + frame into out[0, cap); the total length (0 when it does not fit) */
static size_t mt_dev_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len, uint8_t *out,
                            size_t cap)
{
    size_t n = 0u;
    out[0] = 0u;
    if (mt_frame_encode(type, seq, payload, len, out + 1, cap - 1u, &n) != MT_FRAME_OK) {
        return 0u;
    }
    return n + 1u;
}

static void mt_dev_send_small(uint8_t type, uint16_t seq, const uint8_t *payload, size_t len)
{
    const size_t n = mt_dev_encode(type, seq, payload, len, mt_dev_small, sizeof(mt_dev_small));
    if (n != 0u) {
        mt_port_send(mt_dev_small, n);
    }
}

static void mt_dev_nak_frame(mt_frame_status st, uint16_t seq)
{
    uint8_t p[MT_MSG_NAK_SIZE];
    mt_put_u16(p + MT_MSG_NAK_OFF_REASON, (uint16_t)st);
    mt_put_u16(p + MT_MSG_NAK_OFF_DETAIL, 0u);
    mt_dev_send_small((uint8_t)MT_MSG_NAK, seq, p, sizeof(p));
}

/* ---- replies: each fills mt_dev_out, sets *type and returns the payload length ------------------ */
static size_t mt_dev_nak(uint8_t *type, uint32_t reason, uint32_t detail)
{
    *type = (uint8_t)MT_MSG_NAK;
    mt_put_u16(mt_dev_out + MT_MSG_NAK_OFF_REASON, (uint16_t)reason);
    mt_put_u16(mt_dev_out + MT_MSG_NAK_OFF_DETAIL, (uint16_t)(detail & 0xFFFFu));
    return MT_MSG_NAK_SIZE;
}

static size_t mt_dev_ack(uint8_t *type)
{
    *type = (uint8_t)MT_MSG_ACK;
    mt_put_u16(mt_dev_out + MT_MSG_ACK_OFF_STATUS, 0u);
    mt_put_u16(mt_dev_out + MT_MSG_ACK_OFF_RESERVED, 0u);
    return MT_MSG_ACK_SIZE;
}

static size_t mt_dev_hello_info(uint8_t *out)
{
    const char *board = mt_port_board();
    static const char hash[] = MT_MODEL_HASH;
    uint8_t flags = 0u;
    uint32_t i;
    if (mt_dev.active) {
        flags |= (uint8_t)MT_HELLO_FLAG_SESSION;
    }
    if (mt_dev.storage) {
        flags |= (uint8_t)MT_HELLO_FLAG_STORAGE;
    }
#ifdef MT_USE_DSP
    flags |= (uint8_t)MT_HELLO_FLAG_DSP;
#endif
    mt_dev_zero(out, MT_MSG_HELLO_INFO_SIZE);
    out[MT_MSG_HELLO_INFO_OFF_PROTOCOL_VERSION] = (uint8_t)MT_PROTOCOL_VERSION;
    out[MT_MSG_HELLO_INFO_OFF_FLAGS] = flags;
    mt_put_u16(out + MT_MSG_HELLO_INFO_OFF_MAX_PAYLOAD, (uint16_t)MT_DEVICE_MAX_PAYLOAD);
    for (i = 0; board != NULL && i < MT_MSG_HELLO_INFO_LEN_BOARD && board[i] != '\0'; ++i) {
        out[MT_MSG_HELLO_INFO_OFF_BOARD + i] = (uint8_t)board[i];
    }
    for (i = 0; i < MT_MSG_HELLO_INFO_LEN_MODEL_HASH; ++i) {
        out[MT_MSG_HELLO_INFO_OFF_MODEL_HASH + i] = (uint8_t)hash[i];
    }
    mt_put_u32(out + MT_MSG_HELLO_INFO_OFF_ARENA_SIZE, (uint32_t)MT_ARENA_BYTES);
    mt_put_u32(out + MT_MSG_HELLO_INFO_OFF_BOOT_COUNT, mt_dev.boot_count);
    mt_put_u32(out + MT_MSG_HELLO_INFO_OFF_SESSION, mt_dev.session);
    mt_put_u32(out + MT_MSG_HELLO_INFO_OFF_INPUT_BYTES, (uint32_t)MT_INPUT_BYTES);
    mt_put_u32(out + MT_MSG_HELLO_INFO_OFF_PARAMS_BYTES, (uint32_t)MT_PARAMS_BYTES);
    mt_put_u16(out + MT_MSG_HELLO_INFO_OFF_BATCH, (uint16_t)MT_BATCH);
    mt_put_u16(out + MT_MSG_HELLO_INFO_OFF_CLASSES, (uint16_t)MT_NUM_CLASSES);
    mt_put_u32(out + MT_MSG_HELLO_INFO_OFF_STACK_SIZE, mt_port_stack_size());
    return MT_MSG_HELLO_INFO_SIZE;
}

static size_t mt_dev_metrics(uint8_t *type)
{
    uint8_t *o = mt_dev_out;
    *type = (uint8_t)MT_MSG_METRICS;
    mt_put_u32(o + MT_MSG_METRICS_OFF_STEP, (uint32_t)mt_step_count());
    mt_dev_put_i32(o + MT_MSG_METRICS_OFF_LOSS_Q16, mt_dev.loss_q16);
    mt_dev_put_i32(o + MT_MSG_METRICS_OFF_CORRECT, mt_dev.correct);
    mt_dev_put_i32(o + MT_MSG_METRICS_OFF_SKIPPED, mt_dev.skipped);
    mt_put_u32(o + MT_MSG_METRICS_OFF_COUNT, mt_dev.count);
    mt_put_u32(o + MT_MSG_METRICS_OFF_TRACE, mt_dev.trace);
    mt_put_u32(o + MT_MSG_METRICS_OFF_CYCLES, mt_dev.cycles);
    mt_put_u32(o + MT_MSG_METRICS_OFF_CYCLES + 4u, 0u);
    mt_put_u32(o + MT_MSG_METRICS_OFF_TOTAL_CYCLES, mt_dev.total_cycles_lo);
    mt_put_u32(o + MT_MSG_METRICS_OFF_TOTAL_CYCLES + 4u, mt_dev.total_cycles_hi);
    mt_put_u32(o + MT_MSG_METRICS_OFF_ARENA_HWM, mt_arena_high_water());
    mt_put_u32(o + MT_MSG_METRICS_OFF_STACK_HWM, mt_port_stack_high_water());
    return MT_MSG_METRICS_SIZE;
}

/* ---- requests ----------------------------------------------------------------------------------- */
static size_t mt_dev_init_session(uint8_t *type, const uint8_t *p)
{
    const uint32_t total = mt_get_u32(p + MT_MSG_INIT_OFF_TOTAL_STEPS);
    mt_init(mt_get_u32(p + MT_MSG_INIT_OFF_SEED), total > 0x7FFFFFFFu ? MT_INT32_MAX : (int32_t)total);
    mt_dev_clear_slots();
    mt_dev.active = 1u;
    mt_dev.session = mt_get_u32(p + MT_MSG_INIT_OFF_SESSION);
    mt_dev.count = mt_get_u32(p + MT_MSG_INIT_OFF_COUNT);
    mt_dev.trace = mt_get_u32(p + MT_MSG_INIT_OFF_TRACE);
    mt_dev.loss_q16 = 0;
    mt_dev.correct = 0;
    mt_dev.skipped = 0;
    mt_dev.cycles = 0u;
    mt_dev.total_cycles_lo = 0u;
    mt_dev.total_cycles_hi = 0u;
    return mt_dev_ack(type);
}

static size_t mt_dev_sample(uint8_t *type, const uint8_t *p, size_t len)
{
    const uint32_t total = mt_get_u32(p + MT_MSG_SAMPLE_OFF_TOTAL);
    const uint32_t offset = mt_get_u32(p + MT_MSG_SAMPLE_OFF_OFFSET);
    const uint32_t slot = mt_get_u16(p + MT_MSG_SAMPLE_OFF_SLOT);
    const uint32_t n = (uint32_t)(len - MT_MSG_SAMPLE_SIZE);
    if (total != (uint32_t)MT_INPUT_BYTES || slot >= (uint32_t)MT_BATCH || offset > total || n > total - offset ||
        (offset != 0u && offset != mt_dev_fill[slot])) {
        return mt_dev_nak(type, MT_NAK_SAMPLE, (uint32_t)MT_INPUT_BYTES);
    }
    mt_dev_copy((uint8_t *)mt_dev_x + (size_t)slot * MT_INPUT_BYTES + offset, p + MT_MSG_SAMPLE_SIZE, n);
    mt_dev_fill[slot] = offset + n;
    mt_dev_label[slot] = mt_dev_i32(p + MT_MSG_SAMPLE_OFF_LABEL);
    return mt_dev_ack(type);
}

static size_t mt_dev_train(uint8_t *type, const uint8_t *p)
{
    mt_metrics m;
    mt_status st;
    uint32_t j;
    uint8_t le[4];
    if (!mt_dev.active) {
        return mt_dev_nak(type, MT_NAK_NO_SESSION, 0u);
    }
    j = mt_dev_first_incomplete();
    if (j != (uint32_t)MT_BATCH) {
        return mt_dev_nak(type, MT_NAK_INCOMPLETE, j);
    }
    for (j = 0; j < (uint32_t)MT_BATCH; ++j) {
        if (!mt_dev_label_ok(mt_dev_label[j])) {
            return mt_dev_nak(type, MT_NAK_LABEL, j);
        }
    }
    if (mt_get_u32(p + MT_MSG_TRAIN_OFF_STEP) != (uint32_t)mt_step_count()) {
        return mt_dev_nak(type, MT_NAK_STEP, (uint32_t)mt_step_count());
    }
    st = mt_train_step(mt_dev_x, mt_dev_label, &m);
    if (st != MT_OK) {
        return mt_dev_nak(type, MT_NAK_ENGINE, (uint32_t)(int32_t)st);
    }
    for (j = 0; j < (uint32_t)MT_BATCH; ++j) {
        mt_dev_put_i32(le, mt_dev_label[j]);
        mt_dev.trace = mt_crc32(mt_dev.trace, le, sizeof(le));
        mt_dev.trace = mt_crc32(mt_dev.trace, (const uint8_t *)mt_dev_x + (size_t)j * MT_INPUT_BYTES, MT_INPUT_BYTES);
    }
    mt_dev.count += (uint32_t)MT_BATCH;
    mt_dev.loss_q16 = m.loss_q16;
    mt_dev.correct = m.correct;
    mt_dev.skipped = m.skipped;
    mt_dev.cycles = m.cycles;
    mt_dev.total_cycles_lo += m.cycles;
    if (mt_dev.total_cycles_lo < m.cycles) {
        mt_dev.total_cycles_hi++;
    }
    mt_dev_clear_slots(); /* every step trains on fresh samples */
    return mt_dev_metrics(type);
}

static size_t mt_dev_eval(uint8_t *type)
{
    int32_t predicted = 0, correct = 0;
    uint32_t c0;
    mt_status st;
    if (!mt_dev.active) {
        return mt_dev_nak(type, MT_NAK_NO_SESSION, 0u);
    }
    if (mt_dev_fill[0] != (uint32_t)MT_INPUT_BYTES) {
        return mt_dev_nak(type, MT_NAK_INCOMPLETE, 0u);
    }
    if (!mt_dev_label_ok(mt_dev_label[0])) {
        return mt_dev_nak(type, MT_NAK_LABEL, 0u);
    }
    c0 = mt_port_cycles();
    st = mt_eval(mt_dev_x, mt_dev_label[0], &predicted, &correct);
    c0 = mt_port_cycles() - c0;
    if (st != MT_OK) {
        return mt_dev_nak(type, MT_NAK_ENGINE, (uint32_t)(int32_t)st);
    }
    *type = (uint8_t)MT_MSG_EVAL_RESULT;
    mt_dev_put_i32(mt_dev_out + MT_MSG_EVAL_RESULT_OFF_PREDICTED, predicted);
    mt_put_u32(mt_dev_out + MT_MSG_EVAL_RESULT_OFF_CORRECT, (uint32_t)correct);
    mt_put_u32(mt_dev_out + MT_MSG_EVAL_RESULT_OFF_CYCLES, c0);
    mt_put_u32(mt_dev_out + MT_MSG_EVAL_RESULT_OFF_RESERVED, 0u);
    return MT_MSG_EVAL_RESULT_SIZE;
}

static size_t mt_dev_infer(uint8_t *type)
{
    int8_t *logits = (int8_t *)(mt_dev_out + MT_MSG_INFER_RESULT_SIZE);
    int32_t c, best = 0;
    uint32_t c0;
    mt_status st;
    if (!mt_dev.active) {
        return mt_dev_nak(type, MT_NAK_NO_SESSION, 0u);
    }
    if (mt_dev_fill[0] != (uint32_t)MT_INPUT_BYTES) {
        return mt_dev_nak(type, MT_NAK_INCOMPLETE, 0u);
    }
    c0 = mt_port_cycles();
    st = mt_infer(mt_dev_x, logits);
    c0 = mt_port_cycles() - c0;
    if (st != MT_OK) {
        return mt_dev_nak(type, MT_NAK_ENGINE, (uint32_t)(int32_t)st);
    }
    for (c = 1; c < (int32_t)MT_NUM_CLASSES; ++c) {
        if (logits[c] > logits[best]) {
            best = c;
        }
    }
    *type = (uint8_t)MT_MSG_INFER_RESULT;
    mt_dev_put_i32(mt_dev_out + MT_MSG_INFER_RESULT_OFF_PREDICTED, best);
    mt_put_u32(mt_dev_out + MT_MSG_INFER_RESULT_OFF_CYCLES, c0);
    return MT_MSG_INFER_RESULT_SIZE + (size_t)MT_NUM_CLASSES;
}

static size_t mt_dev_params_get(uint8_t *type, const uint8_t *p)
{
    const uint32_t offset = mt_get_u32(p + MT_MSG_PARAMS_GET_OFF_OFFSET);
    const uint32_t n = mt_get_u16(p + MT_MSG_PARAMS_GET_OFF_LENGTH);
    if (!mt_dev.active) {
        return mt_dev_nak(type, MT_NAK_NO_SESSION, 0u);
    }
    if (offset > (uint32_t)MT_PARAMS_BYTES || n > (uint32_t)MT_PARAMS_BYTES - offset ||
        n > (uint32_t)(MT_DEVICE_MAX_PAYLOAD - MT_MSG_PARAMS_DATA_SIZE)) {
        return mt_dev_nak(type, MT_NAK_RANGE, 0u);
    }
    if (mt_params_read(offset, mt_dev_out + MT_MSG_PARAMS_DATA_SIZE, n) != MT_OK) {
        return mt_dev_nak(type, MT_NAK_RANGE, 0u);
    }
    *type = (uint8_t)MT_MSG_PARAMS_DATA;
    mt_put_u32(mt_dev_out + MT_MSG_PARAMS_DATA_OFF_TOTAL, (uint32_t)MT_PARAMS_BYTES);
    mt_put_u32(mt_dev_out + MT_MSG_PARAMS_DATA_OFF_OFFSET, offset);
    return MT_MSG_PARAMS_DATA_SIZE + (size_t)n;
}

static size_t mt_dev_params_set(uint8_t *type, const uint8_t *p, size_t len)
{
    const uint32_t total = mt_get_u32(p + MT_MSG_PARAMS_SET_OFF_TOTAL);
    const uint32_t offset = mt_get_u32(p + MT_MSG_PARAMS_SET_OFF_OFFSET);
    const uint32_t n = (uint32_t)(len - MT_MSG_PARAMS_SET_SIZE);
    if (!mt_dev.active) {
        return mt_dev_nak(type, MT_NAK_NO_SESSION, 0u);
    }
    if (total != (uint32_t)MT_PARAMS_BYTES || offset > total || n > total - offset) {
        return mt_dev_nak(type, MT_NAK_RANGE, 0u);
    }
    if (mt_params_write(offset, p + MT_MSG_PARAMS_SET_SIZE, n) != MT_OK) {
        return mt_dev_nak(type, MT_NAK_CHECKPOINT, 0u);
    }
    return mt_dev_ack(type);
}

/* execute one well-formed request; the reply payload is in mt_dev_out */
static size_t mt_dev_execute(uint8_t req, const uint8_t *p, size_t len, uint8_t *type)
{
    switch (req) {
    case MT_MSG_HELLO:
        *type = (uint8_t)MT_MSG_HELLO_INFO;
        return mt_dev_hello_info(mt_dev_out);
    case MT_MSG_SAMPLE:
        return mt_dev_sample(type, p, len);
    case MT_MSG_TRAIN:
        return mt_dev_train(type, p);
    case MT_MSG_EVAL:
        return mt_dev_eval(type);
    case MT_MSG_INFER:
        return mt_dev_infer(type);
    case MT_MSG_PARAMS_GET:
        return mt_dev_params_get(type, p);
    case MT_MSG_PARAMS_SET:
        return mt_dev_params_set(type, p, len);
    case MT_MSG_METRICS_GET:
        return mt_dev_metrics(type);
    case MT_MSG_INIT:
        return mt_dev_init_session(type, p);
    default:
        return mt_dev_nak(type, MT_NAK_COMMAND, req); /* a reply type sent to the device */
    }
}

/* one complete encoded frame in[0, n), n > 0, no delimiter */
static void mt_dev_frame(const uint8_t *in, size_t n)
{
    mt_frame_header h = {0u, 0u, 0u, 0u};
    const uint8_t *payload = NULL;
    uint8_t type = 0u;
    size_t len;
    const mt_frame_status st = mt_frame_decode(in, n, mt_dev_raw, sizeof(mt_dev_raw), &h, &payload);
    if (st != MT_FRAME_OK) {
        const int trusted = st == MT_FRAME_LEN || st == MT_FRAME_VERSION || st == MT_FRAME_TYPE ||
                            st == MT_FRAME_PAYLOAD;
        mt_dev_nak_frame(st, trusted ? h.seq : (uint16_t)MT_SEQ_UNSOLICITED);
        return;
    }
    if (mt_dev_have_last && h.seq == mt_dev_last_seq && h.type == mt_dev_last_type) {
        mt_port_send(mt_dev_tx, mt_dev_tx_len); /* a retry: the same reply, not executed again */
        return;
    }
    len = mt_dev_execute(h.type, payload, h.len, &type);
    mt_dev_tx_len = mt_dev_encode(type, h.seq, mt_dev_out, len, mt_dev_tx, sizeof(mt_dev_tx));
    mt_dev_have_last = 1u;
    mt_dev_last_seq = h.seq;
    mt_dev_last_type = h.type;
    if (mt_dev_tx_len != 0u) {
        mt_port_send(mt_dev_tx, mt_dev_tx_len);
    }
}

/* ---- public ------------------------------------------------------------------------------------- */
void mt_device_feed(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        const uint8_t b = p[i];
        if (b == 0u) {
            if (mt_dev_rx_discard) {
                mt_dev_nak_frame(MT_DEVICE_MAX_PAYLOAD < MT_FRAME_MAX_PAYLOAD ? MT_FRAME_OVERFLOW : MT_FRAME_TOO_LONG,
                                 (uint16_t)MT_SEQ_UNSOLICITED);
            } else if (mt_dev_rx_len != 0u) {
                mt_dev_frame(mt_dev_rx, mt_dev_rx_len);
            }
            mt_dev_rx_len = 0u;
            mt_dev_rx_discard = 0u;
        } else if (!mt_dev_rx_discard) {
            if (mt_dev_rx_len < sizeof(mt_dev_rx)) {
                mt_dev_rx[mt_dev_rx_len++] = b;
            } else {
                mt_dev_rx_discard = 1u;
                mt_dev_rx_len = 0u;
            }
        }
    }
}

void mt_device_poll(void)
{
    int c;
    while ((c = mt_port_getc()) >= 0) {
        const uint8_t b = (uint8_t)c;
        mt_device_feed(&b, 1u);
    }
}

uint32_t mt_device_boot_count(void)
{
    return mt_dev.boot_count;
}

void mt_device_init(void)
{
    uint8_t b[MT_DEVICE_STORAGE_BOOT_BYTES];
    uint8_t hello[MT_MSG_HELLO_INFO_SIZE];
    mt_dev_rx_len = 0u;
    mt_dev_rx_discard = 0u;
    mt_dev_have_last = 0u;
    mt_dev_tx_len = 0u;
    mt_dev_zero((uint8_t *)&mt_dev, sizeof(mt_dev));
    mt_dev_clear_slots();
    if (mt_port_storage_size() >= MT_DEVICE_STORAGE_BOOT_OFFSET + MT_DEVICE_STORAGE_BOOT_BYTES &&
        mt_port_storage_read(MT_DEVICE_STORAGE_BOOT_OFFSET, b, sizeof(b)) == 0) {
        uint32_t count = 0u;
        if (b[0] == 'M' && b[1] == 'T' && b[2] == 'B' && b[3] == 'C') {
            count = mt_get_u32(b + 4);
        }
        count++;
        b[0] = 'M';
        b[1] = 'T';
        b[2] = 'B';
        b[3] = 'C';
        mt_put_u32(b + 4, count);
        if (mt_port_storage_write(MT_DEVICE_STORAGE_BOOT_OFFSET, b, sizeof(b)) == 0) {
            mt_dev.storage = 1u;
            mt_dev.boot_count = count;
        }
    }
    mt_arena_paint();
    mt_dev_send_small((uint8_t)MT_MSG_HELLO_INFO, (uint16_t)MT_SEQ_UNSOLICITED, hello, mt_dev_hello_info(hello));
}
