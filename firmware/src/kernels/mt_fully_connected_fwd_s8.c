/**
 * @file mt_fully_connected_fwd_s8.c
 * @brief int8 fully connected forward, x [N, Cin], w [Cout, Cin]; bit-exact with
 *        compiler/ops/fully_connected.py FullyConnected.forward_int8. Also the engine of
 *        mt_pointwise_conv2d_fwd_s8 (a 1x1 conv is this product over the N*H*W pixels).
 *
 * Blocking: output channels in pairs (outer loop, their constants computed once), batch rows in
 * pairs inside (2x2 int32 accumulators in registers, each input and weight byte loaded once per
 * block). The input zero point is folded into the accumulator's start value:
 *   sum_k (x - in_zp) w = sum_k x w - in_zp * sum_k w,
 * exact in int32 (every partial sum is bounded by |bias| + Cin * 255 * 255, the kernels'
 * no-overflow contract). A single row (batch 1, or the last of an odd batch) takes four output
 * channels at a time with (x - in_zp) on the fly instead. A per-tensor weight zero point
 * (w_zp != 0, rare) takes the plain loop.
 *
 * Requantization (rq_apply) is mt_requantize_s8's result in one 32x32->64 multiply-add: for
 * shift = -e, e in [1, 23], mult >= 0,
 *   MBQM(acc) + out_zp
 *     = floor((acc * mult + 2^30 + 2^(30+e) + out_zp * 2^(31+e) - [acc < 0] * 2^31) / 2^(31+e)),
 * i.e. the high word of that int64 shifted right by e - 1. Proof: SRDHM = floor((P + 2^30) / 2^31)
 * with P = acc * mult (gemmlowp's nudge and truncating division, both signs), and
 * RDBPOT(h, e) = floor((h + 2^(e-1) - [h < 0]) / 2^e); nested floors merge (integers added inside
 * a floor), and h < 0 <=> P < -2^30, which differs from acc < 0 only when 0 >= P >= -2^30, where
 * both forms give 0. |int64| < 2^62 + 2^61 + 2^61 and the high word stays below 2^31 for e <= 23,
 * so no clamp to [-1024, 1024] is needed before the int8 clamp. Other shifts and negative
 * multipliers use mt_requantize_s8 itself.
 */
#include "mt_kernels_fwd.h"

size_t mt_fully_connected_fwd_s8_scratch_bytes(int32_t in_features, int32_t out_features)
{
    (void)in_features;
    (void)out_features;
    return 0u;
}

#if defined(__GNUC__)
#define FC_INLINE static inline __attribute__((always_inline))
#else
#define FC_INLINE static inline
#endif

/* One output channel's requantization constants (fast form). */
typedef struct {
    int64_t k;      /* 2^30 + 2^(30+e) + out_zp * 2^(31+e) */
    int32_t mult;
    int32_t sh;     /* e - 1 */
    int32_t shift;  /* the shift itself (mt_requantize_s8 when not fast) */
    int32_t fast;   /* the single multiply-add form applies */
} fc_rq;

/* 1 and r filled when the single multiply-add form applies to (mult, shift) */
static int rq_init(fc_rq *r, int32_t mult, int32_t shift, int32_t out_zp)
{
    const int fast = (mult >= 0 && shift <= -1 && shift >= -23);
    r->mult = mult;
    r->shift = shift;
    r->fast = fast;
    r->sh = fast ? -shift - 1 : 0;
    r->k = fast ? ((int64_t)1 << 30) + ((int64_t)1 << (30 - shift)) +
                      (int64_t)out_zp * ((int64_t)1 << (31 - shift))
                : 0;
    return fast;
}
/* mt_requantize_s8 itself (out of line: the cold path of rq_apply) */
static int8_t rq_generic(int32_t acc, const fc_rq *r, int32_t out_zp, int32_t act_min,
                         int32_t act_max)
{
    return mt_requantize_s8(acc, r->mult, (int)r->shift, out_zp, act_min, act_max);
}

/* mt_requantize_s8(acc, mult, shift, out_zp, act_min, act_max); full: a fast-form channel and the
 * clamp [-128, 127] */
FC_INLINE int8_t rq_apply(int32_t acc, const fc_rq *r, int32_t out_zp, int32_t act_min,
                          int32_t act_max, int full)
{
    int64_t t;
    int32_t y;
    if (!full && !r->fast) {
        return rq_generic(acc, r, out_zp, act_min, act_max);
    }
    t = (int64_t)acc * r->mult + r->k + (int64_t)((acc < 0) ? MT_INT32_MIN : 0);
    y = mt_asr32(mt_wrap32((uint32_t)((uint64_t)t >> 32)), (int)r->sh); /* MBQM + out_zp */
    if (full) {
        return (int8_t)((y < -128) ? -128 : ((y > 127) ? 127 : y));
    }
    y = (y < act_min) ? act_min : y;
    return (int8_t)((y > act_max) ? act_max : y);
}

/* s[0..3] += rows {x0, x0 + dx} . rows {w0, w0 + dw}: s = {x0.w0, x0.w1, x1.w0, x1.w1} */
FC_INLINE void dot_2x2(const int8_t *x0, ptrdiff_t dx, const int8_t *w0, ptrdiff_t dw,
                       int32_t len, int32_t s[4])
{
    int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
    const int8_t *end = x0 + (len & ~(int32_t)1);
    while (x0 != end) {
        int32_t a0 = x0[0], a1 = x0[dx], b0 = w0[0], b1 = w0[dw];
        s00 += a0 * b0;
        s01 += a0 * b1;
        s10 += a1 * b0;
        s11 += a1 * b1;
        a0 = x0[1];
        a1 = x0[dx + 1];
        b0 = w0[1];
        b1 = w0[dw + 1];
        s00 += a0 * b0;
        s01 += a0 * b1;
        s10 += a1 * b0;
        s11 += a1 * b1;
        x0 += 2;
        w0 += 2;
    }
    if ((len & 1) != 0) {
        const int32_t a0 = x0[0], a1 = x0[dx], b0 = w0[0], b1 = w0[dw];
        s00 += a0 * b0;
        s01 += a0 * b1;
        s10 += a1 * b0;
        s11 += a1 * b1;
    }
    s[0] = s00;
    s[1] = s01;
    s[2] = s10;
    s[3] = s11;
}

/* s[j] += sum_k (x[k] - xz) * wj[k], j < 4 */
FC_INLINE void dot_1x4(const int8_t *x, const int8_t *w0, const int8_t *w1, const int8_t *w2,
                       const int8_t *w3, int32_t len, int32_t xz, int32_t s[4])
{
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3], k;
    for (k = 0; k < len; ++k) {
        const int32_t a = (int32_t)x[k] - xz;
        s0 += a * w0[k];
        s1 += a * w1[k];
        s2 += a * w2[k];
        s3 += a * w3[k];
    }
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
}

/* Output channels {o, o + 1} (w0, w1; o + 1 only when two) of rows [0, rows), rows even: the 2x2
 * blocks, the input zero point folded into the start values b0, b1 (full: fast-form channels,
 * clamp [-128, 127]). */
FC_INLINE void pair_rows(const mt_fc_params *p, int32_t rows, int32_t cin, const int8_t *x,
                         int32_t cout, const int8_t *w0, const int8_t *w1, int32_t b0, int32_t b1,
                         const fc_rq *r0, const fc_rq *r1, int two, int8_t *y, int full)
{
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    const ptrdiff_t dw = w1 - w0;
    int32_t n;
    for (n = 0; n < rows; n += 2) {
        int32_t s[4];
        s[0] = b0;
        s[1] = b1;
        s[2] = b0;
        s[3] = b1;
        dot_2x2(x, cin, w0, dw, cin, s);
        if (full) {
            y[0] = rq_apply(s[0], r0, zp, lo, hi, 1);
            y[cout] = rq_apply(s[2], r0, zp, lo, hi, 1);
            if (two) {
                y[1] = rq_apply(s[1], r1, zp, lo, hi, 1);
                y[cout + 1] = rq_apply(s[3], r1, zp, lo, hi, 1);
            }
        } else { /* (rolled: the rarer general case, one copy of its code) */
            int32_t j;
            for (j = 0; j < 2 + 2 * two; ++j) {
                y[(j & 1) * cout + (j >> 1)] =
                    rq_apply(s[(j & 1) * 2 + (j >> 1)], (j >> 1) ? r1 : r0, zp, lo, hi, 0);
            }
        }
        x += 2 * cin;
        y += 2 * cout;
    }
}

/* rows [0, rows) (rows even) of x: output channels in pairs, row pairs inside */
static void rows_2(const mt_fc_params *p, const mt_per_channel_quant *q, int32_t rows,
                   int32_t cin, const int8_t *x, int32_t cout, const int8_t *w,
                   const int32_t *bias, int8_t *y)
{
    const int full = (p->act_min == -128 && p->act_max == 127);
    int32_t o, k;
    for (o = 0; o < cout; o += 2) {
        const int two = (o + 1 < cout);
        const int8_t *w0 = mt_wrow(w, &p->split, o, (size_t)cin);
        const int8_t *w1 = two ? mt_wrow(w, &p->split, o + 1, (size_t)cin) : w0;
        int32_t b0 = (bias != NULL) ? bias[o] : 0, b1 = (two && bias != NULL) ? bias[o + 1] : 0;
        int32_t sw0 = 0, sw1 = 0;
        fc_rq r0, r1;
        const int fast = rq_init(&r0, q->mult[o], q->shift[o], p->out_zp) &
                         rq_init(&r1, q->mult[o + two], q->shift[o + two], p->out_zp);
        for (k = 0; k < cin; ++k) {
            sw0 += w0[k];
            sw1 += w1[k];
        }
        b0 -= p->in_zp * sw0;
        b1 -= p->in_zp * sw1;
        if (fast && full) { /* the common case, specialised (SSAT-free int8 clamp, no checks) */
            pair_rows(p, rows, cin, x, cout, w0, w1, b0, b1, &r0, &r1, two, y + o, 1);
        } else {
            pair_rows(p, rows, cin, x, cout, w0, w1, b0, b1, &r0, &r1, two, y + o, 0);
        }
    }
}

/* one batch row x: every output channel, four at a time */
static void row_1(const mt_fc_params *p, const mt_per_channel_quant *q, int32_t cin,
                  const int8_t *x, int32_t cout, const int8_t *w, const int32_t *bias, int8_t *y)
{
    int32_t o, j;
    for (o = 0; o < cout; o += 4) {
        const int32_t cnt = (cout - o < 4) ? cout - o : 4;
        const int8_t *wr[4];
        int32_t s[4];
        for (j = 0; j < 4; ++j) {
            const int32_t oj = o + ((j < cnt) ? j : 0);
            wr[j] = mt_wrow(w, &p->split, oj, (size_t)cin);
            s[j] = (bias != NULL) ? bias[oj] : 0;
        }
        dot_1x4(x, wr[0], wr[1], wr[2], wr[3], cin, p->in_zp, s);
        for (j = 0; j < cnt; ++j) {
            fc_rq r;
            (void)rq_init(&r, q->mult[o + j], q->shift[o + j], p->out_zp);
            y[o + j] = rq_apply(s[j], &r, p->out_zp, p->act_min, p->act_max, 0);
        }
    }
}

mt_status mt_fully_connected_fwd_s8(const mt_fc_params *p, const mt_per_channel_quant *q,
                                    int32_t batch, int32_t in_features, const int8_t *in,
                                    int32_t out_features, const int8_t *w, const int32_t *bias,
                                    int8_t *out)
{
    int32_t n, o, k;
    if (batch < 0 || in_features < 1 || out_features < 1) {
        return MT_ERR_ARG;
    }
    if (p->w_zp == 0) {
        const int32_t even = batch & ~(int32_t)1;
        if (even > 0) {
            rows_2(p, q, even, in_features, in, out_features, w, bias, out);
        }
        if (even < batch) {
            row_1(p, q, in_features, in + (size_t)even * (size_t)in_features, out_features, w, bias,
                  out + (size_t)even * (size_t)out_features);
        }
        return MT_OK;
    }
    for (n = 0; n < batch; ++n) { /* per-tensor weight zero point */
        const int8_t *x = in + (size_t)n * (size_t)in_features;
        for (o = 0; o < out_features; ++o) {
            const int8_t *w_o = mt_wrow(w, &p->split, o, (size_t)in_features);
            int32_t acc = (bias != NULL) ? bias[o] : 0;
            for (k = 0; k < in_features; ++k) {
                acc += ((int32_t)x[k] - p->in_zp) * ((int32_t)w_o[k] - p->w_zp);
            }
            *out++ = mt_requantize_s8(acc, q->mult[o], (int)q->shift[o], p->out_zp, p->act_min,
                                      p->act_max);
        }
    }
    return MT_OK;
}
