/**
 * @file mt_fully_connected_acc_s32_dsp.c
 * @brief int32 accumulators of a fully connected layer with the Arm DSP extension; same results
 *        as mt_fully_connected_acc_s32.
 *
 * The SMLAD blocking of mt_fully_connected_fwd_s8_dsp without the requantization: batch rows in
 * pairs x output channels in pairs (mt_mac2x2d_s8, input zero point folded into the start values
 * with mt_row_fold_s8), a single row four output channels per pass (mt_mac1x4_s8, SXTAB16 adds
 * -in_zp), the rest pairwise (mt_dot2_s8 / mt_dot1_s8, which also serve a per-tensor weight
 * zero point).
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

mt_status mt_fully_connected_acc_s32_dsp(const mt_fc_params *p, int32_t batch,
                                         int32_t in_features, const int8_t *in,
                                         int32_t out_features, const int8_t *w,
                                         const int32_t *bias, int32_t *acc)
{
    const int32_t cin = in_features, cout = out_features;
    const uint32_t xoff2 = mt_dup16(-p->in_zp);
    const uint32_t woff2 = mt_dup16(-p->w_zp);
    const int32_t even = (p->w_zp == 0) ? (batch & ~(int32_t)1) : 0;
    int32_t n, o, j;
    if (batch < 0 || in_features < 1 || out_features < 1) {
        return MT_ERR_ARG;
    }
    for (o = 0; o < cout && even > 0; o += 2) { /* row pairs x channel pairs */
        const int two = (o + 1 < cout);
        const int8_t *w0 = mt_wrow(w, &p->split, o, (size_t)cin);
        const int8_t *w1 = two ? mt_wrow(w, &p->split, o + 1, (size_t)cin) : w0;
        const int32_t b0 = mt_row_fold_s8(w0, cin, xoff2, (bias != NULL) ? bias[o] : 0);
        const int32_t b1 = mt_row_fold_s8(w1, cin, xoff2, (two && bias != NULL) ? bias[o + 1] : 0);
        for (n = 0; n < even; n += 2) {
            int32_t s[4];
            int32_t *a = acc + (size_t)n * (size_t)cout + (size_t)o;
            const int8_t *x = in + (size_t)n * (size_t)cin;
            s[0] = b0;
            s[1] = b1;
            s[2] = b0;
            s[3] = b1;
            if (w1 == w0 + cin) {
                mt_mac2x2d_s8(x, w0, cin, cin, s);
            } else {
                mt_mac2x2_s8(x, cin, w0, w1 - w0, cin, s);
            }
            a[0] = s[0];
            a[cout] = s[2];
            if (two) {
                a[1] = s[1];
                a[cout + 1] = s[3];
            }
        }
    }
    for (n = even; n < batch; ++n) { /* single rows (and every row with a weight zero point) */
        const int8_t *x = in + (size_t)n * (size_t)cin;
        int32_t *a = acc + (size_t)n * (size_t)cout;
        o = 0;
        while (o < cout) {
            const int8_t *w0 = mt_wrow(w, &p->split, o, (size_t)cin);
            int32_t s[4], cnt;
            for (j = 0; j < 4; ++j) {
                s[j] = (bias != NULL && o + j < cout) ? bias[o + j] : 0;
            }
            if (p->w_zp == 0 && o + 4 <= cout &&
                mt_wrow(w, &p->split, o + 3, (size_t)cin) == w0 + 3 * cin) {
                mt_mac1x4_s8(x, w0, cin, cin, xoff2, s);
                cnt = 4;
            } else if (o + 2 <= cout) {
                mt_dot2_s8(x, w0, mt_wrow(w, &p->split, o + 1, (size_t)cin), cin, xoff2, woff2,
                           &s[0], &s[1]);
                cnt = 2;
            } else {
                s[0] = mt_dot1_s8(x, w0, cin, xoff2, woff2, s[0]);
                cnt = 1;
            }
            for (j = 0; j < cnt; ++j, ++o) {
                a[o] = s[j];
            }
        }
    }
    return MT_OK;
}
