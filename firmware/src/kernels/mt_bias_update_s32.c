/**
 * @file mt_bias_update_s32.c
 * @brief Bias gradient of channels [0, rows) fused with the update; bit-exact with
 *        backward_int8's bias position (_grad_int.sum_to over the pixels) followed by sgd_delta
 *        and Int8Trainer._apply for a bias (b += RDBPOT(delta, 16), saturated to [lo, hi]).
 *
 * The column sums and the headroom's max |g| come from one pass, a channel at a time (the sum in
 * a register): with no headroom shift (the usual case: bitlen(max |g|) + ceil(log2 pixels) <= 31)
 * those raw sums are the reference's; otherwise they are recomputed with every g rounded first.
 * Sums of up to MT_BU_CHUNK channels are kept on the stack; more channels are taken in chunks and
 * summed again for the update. max |g| only enters the headroom through its bit length, and the
 * bitwise OR of the magnitudes has the same bit length.
 */
#include "mt_kernels_train.h"

#define MT_BU_CHUNK 64

/* sum over the pixels of g[:, c] (rounded by sh > 0 first); *ormag |= |g| */
static int32_t col_sum(const int16_t *g, int32_t pixels, int32_t channels, int32_t c, int32_t sh,
                       uint32_t *ormag)
{
    const int16_t *gp = g + c, *end = g + (size_t)pixels * (size_t)channels + (size_t)c;
    uint32_t acc = 0u, om = 0u;
    if (sh > 0) {
        for (; gp != end; gp += channels) {
            acc += (uint32_t)mt_rdbpot(*gp, (int)sh);
        }
        return mt_wrap32(acc);
    }
    for (; gp != end; gp += channels) {
        const int32_t v = *gp;
        acc += (uint32_t)v;
        om |= mt_uabs32(v);
    }
    *ormag |= om;
    return mt_wrap32(acc);
}

mt_status mt_bias_update_s32(const mt_sgd_params *u, mt_sgd_state *st, int32_t pixels,
                             int32_t channels, int32_t rows, const int16_t *g, int32_t g_e,
                             int32_t *bias, int16_t *grad, int32_t *grad_e)
{
    const int update = (u->lr_mult != 0);
    uint32_t om = 0u, amax = 0u;
    int32_t c, c0, cnt, sh, sr, e;
    int32_t sums[MT_BU_CHUNK];
    mt_sgd_norm nq;
    if (pixels < 1 || channels < 1 || rows < 1 || rows > channels ||
        (update && st->kind != MT_APPLY_BIAS)) {
        return MT_ERR_ARG;
    }
    if (!update && grad == NULL) {
        return MT_OK;
    }
    /* pass 1: raw column sums (kept for the first chunk) and the headroom of g[:, :rows] */
    for (c = 0; c < rows; ++c) {
        const int32_t s = col_sum(g, pixels, channels, c, 0, &om);
        if (c < MT_BU_CHUNK) {
            sums[c] = s;
        }
    }
    sh = mt_grad_headroom_shift(om, 0, pixels);
    /* max |sum| for the renormalisation (sums with the headroom rounding when sh > 0) */
    for (c0 = 0; c0 < rows; c0 += cnt) {
        cnt = (rows - c0 < MT_BU_CHUNK) ? rows - c0 : MT_BU_CHUNK;
        for (c = 0; c < cnt; ++c) {
            uint32_t a;
            if (sh > 0 || c0 > 0) {
                sums[c] = col_sum(g, pixels, channels, c0 + c, sh, &om);
            }
            a = mt_uabs32(sums[c]);
            amax = (a > amax) ? a : amax;
        }
    }
    sr = mt_grad_renorm_shift(amax);
    e = g_e + sh + sr;
    nq = mt_sgd_norm_make(u, mt_urshift_round32(amax, sr), e);
    for (c0 = 0; c0 < rows; c0 += cnt) {
        cnt = (rows - c0 < MT_BU_CHUNK) ? rows - c0 : MT_BU_CHUNK;
        for (c = 0; c < cnt; ++c) {
            const int32_t s = (rows > MT_BU_CHUNK) ? col_sum(g, pixels, channels, c0 + c, sh, &om) : sums[c];
            const int32_t m = mt_rshift_round32(s, sr);
            const int32_t i = c0 + c;
            if (grad != NULL) {
                grad[i] = (int16_t)m;
            }
            if (update) {
                bias[i] = mt_sgd_apply_b32_elem(u, st, i, bias[i], mt_sgd_delta_elem(u, &nq, m, i));
            }
        }
    }
    if (grad_e != NULL) {
        *grad_e = e;
    }
    return MT_OK;
}
