/**
 * @file mt_bias_update_s32.c
 * @brief Bias gradient of channels [0, rows) fused with the update; bit-exact with
 *        backward_int8's bias position (_grad_int.sum_to over the pixels) followed by sgd_delta
 *        and Int8Trainer._apply for a bias (b += RDBPOT(delta, 16), saturated to [lo, hi]).
 */
#include "mt_kernels_train.h"

static int32_t col_sum(const int16_t *g, int32_t pixels, int32_t channels, int32_t c, int32_t sh)
{
    int32_t q, acc = 0;
    for (q = 0; q < pixels; ++q) {
        acc += mt_rshift_round32(g[(size_t)q * (size_t)channels + (size_t)c], sh);
    }
    return acc;
}

mt_status mt_bias_update_s32(const mt_sgd_params *u, mt_sgd_state *st, int32_t pixels,
                             int32_t channels, int32_t rows, const int16_t *g, int32_t g_e,
                             int32_t *bias, int16_t *grad, int32_t *grad_e)
{
    const int update = (u->lr_mult != 0);
    uint32_t amax = 0u;
    int32_t q, c, sh, sr, e;
    mt_sgd_norm nq;
    if (pixels < 1 || channels < 1 || rows < 1 || rows > channels ||
        (update && st->kind != MT_APPLY_BIAS)) {
        return MT_ERR_ARG;
    }
    if (!update && grad == NULL) {
        return MT_OK;
    }
    for (q = 0; q < pixels; ++q) { /* headroom of g[:, :rows] (operand bits 0) */
        for (c = 0; c < rows; ++c) {
            const uint32_t a = mt_uabs32(g[(size_t)q * (size_t)channels + (size_t)c]);
            amax = (a > amax) ? a : amax;
        }
    }
    sh = mt_grad_headroom_shift(amax, 0, pixels);
    amax = 0u;
    for (c = 0; c < rows; ++c) { /* max |sum| for the renormalisation */
        const uint32_t a = mt_uabs32(col_sum(g, pixels, channels, c, sh));
        amax = (a > amax) ? a : amax;
    }
    sr = mt_grad_renorm_shift(amax);
    e = g_e + sh + sr;
    nq = mt_sgd_norm_make(u, mt_urshift_round32(amax, sr), e);
    for (c = 0; c < rows; ++c) {
        const int32_t m = mt_rshift_round32(col_sum(g, pixels, channels, c, sh), sr);
        if (grad != NULL) {
            grad[c] = (int16_t)m;
        }
        if (update) {
            bias[c] = mt_sgd_apply_b32_elem(u, st, c, bias[c], mt_sgd_delta_elem(u, &nq, m, c));
        }
    }
    if (grad_e != NULL) {
        *grad_e = e;
    }
    return MT_OK;
}
