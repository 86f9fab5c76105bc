/**
 * @file mt_fully_connected_acc_s32.c
 * @brief int32 accumulators of a fully connected layer (no requantization): the inputs of the
 *        integer softmax cross-entropy on accumulators (Int8Trainer._logit_acc).
 *
 * Blocked like mt_fully_connected_fwd_s8: batch rows in pairs x output channels in pairs (2x2
 * int32 accumulators, each loaded byte used twice, the input zero point folded into the start
 * value bias - in_zp * sum w), a single row with four output channels per pass ((x - in_zp) on the
 * fly). Exact in int32 (partial sums bounded by |bias| + Cin * 255 * 255). A per-tensor weight
 * zero point (rare) takes the plain loop.
 */
#include "mt_kernels_fwd.h"

size_t mt_fully_connected_acc_s32_scratch_bytes(int32_t in_features, int32_t out_features)
{
    (void)in_features;
    (void)out_features;
    return 0u;
}

/* s[0..3] += rows {x0, x0 + cin} . rows {w0, w1}: {x0.w0, x0.w1, x1.w0, x1.w1} */
static void dot_2x2(const int8_t *x0, int32_t cin, const int8_t *w0, const int8_t *w1,
                    int32_t s[4])
{
    const int8_t *x1 = x0 + cin;
    int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3], k;
    for (k = 0; k < cin; ++k) {
        const int32_t a0 = x0[k], a1 = x1[k], b0 = w0[k], b1 = w1[k];
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

/* s[j] += sum_k (x[k] - xz) * wr[j][k], j < 4 */
static void dot_1x4(const int8_t *x, const int8_t *const wr[4], int32_t cin, int32_t xz,
                    int32_t s[4])
{
    const int8_t *w0 = wr[0], *w1 = wr[1], *w2 = wr[2], *w3 = wr[3];
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3], k;
    for (k = 0; k < cin; ++k) {
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

mt_status mt_fully_connected_acc_s32(const mt_fc_params *p, int32_t batch, int32_t in_features,
                                     const int8_t *in, int32_t out_features, const int8_t *w,
                                     const int32_t *bias, int32_t *acc)
{
    const int32_t cin = in_features, cout = out_features;
    const int32_t even = batch & ~(int32_t)1;
    int32_t n, o, k, j;
    if (batch < 0 || in_features < 1 || out_features < 1) {
        return MT_ERR_ARG;
    }
    if (p->w_zp != 0) { /* per-tensor weight zero point */
        for (n = 0; n < batch; ++n) {
            const int8_t *x = in + (size_t)n * (size_t)cin;
            for (o = 0; o < cout; ++o) {
                const int8_t *w_o = mt_wrow(w, &p->split, o, (size_t)cin);
                int32_t a = (bias != NULL) ? bias[o] : 0;
                for (k = 0; k < cin; ++k) {
                    a += ((int32_t)x[k] - p->in_zp) * ((int32_t)w_o[k] - p->w_zp);
                }
                *acc++ = a;
            }
        }
        return MT_OK;
    }
    for (o = 0; o < cout && even > 0; o += 2) { /* row pairs x channel pairs */
        const int two = (o + 1 < cout);
        const int8_t *w0 = mt_wrow(w, &p->split, o, (size_t)cin);
        const int8_t *w1 = two ? mt_wrow(w, &p->split, o + 1, (size_t)cin) : w0;
        int32_t b0 = (bias != NULL) ? bias[o] : 0, b1 = (two && bias != NULL) ? bias[o + 1] : 0;
        int32_t sw0 = 0, sw1 = 0;
        for (k = 0; k < cin; ++k) {
            sw0 += w0[k];
            sw1 += w1[k];
        }
        b0 -= p->in_zp * sw0;
        b1 -= p->in_zp * sw1;
        for (n = 0; n < even; n += 2) {
            int32_t s[4];
            int32_t *a = acc + (size_t)n * (size_t)cout + (size_t)o;
            s[0] = b0;
            s[1] = b1;
            s[2] = b0;
            s[3] = b1;
            dot_2x2(in + (size_t)n * (size_t)cin, cin, w0, w1, s);
            a[0] = s[0];
            a[cout] = s[2];
            if (two) {
                a[1] = s[1];
                a[cout + 1] = s[3];
            }
        }
    }
    if (even < batch) { /* the last row: four channels per pass */
        const int8_t *x = in + (size_t)even * (size_t)cin;
        int32_t *a = acc + (size_t)even * (size_t)cout;
        for (o = 0; o < cout; o += 4) {
            const int32_t cnt = (cout - o < 4) ? cout - o : 4;
            const int8_t *wr[4];
            int32_t s[4];
            for (j = 0; j < 4; ++j) {
                const int32_t oj = o + ((j < cnt) ? j : 0);
                wr[j] = mt_wrow(w, &p->split, oj, (size_t)cin);
                s[j] = (bias != NULL) ? bias[oj] : 0;
            }
            dot_1x4(x, wr, cin, p->in_zp, s);
            for (j = 0; j < cnt; ++j) {
                a[o + j] = s[j];
            }
        }
    }
    return MT_OK;
}
