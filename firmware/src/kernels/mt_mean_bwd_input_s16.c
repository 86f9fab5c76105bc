/**
 * @file mt_mean_bwd_input_s16.c
 * @brief mean (global over H, W) input gradient; bit-exact with Mean.backward_int8:
 *        mul_q31(g, inv_mult, inv_shift) broadcast to every pixel.
 */
#include "mt_kernels_train.h"

mt_status mt_mean_bwd_input_s16(const mt_dims *in_dims, int32_t inv_mult, int32_t inv_shift,
                                const int16_t *g, int32_t g_e, int16_t *gx, int32_t *gx_e)
{
    const int32_t nc = in_dims->n * in_dims->c, hw = in_dims->h * in_dims->w;
    uint32_t amax = 0u, tmax = 0u;
    int32_t i, n, c, q, lsh = 0, s = 0;
    if (nc < 1 || hw < 1) {
        return MT_ERR_ARG;
    }
    for (i = 0; i < nc; ++i) {
        const uint32_t a = mt_uabs32(g[i]);
        amax = (a > amax) ? a : amax;
    }
    if (amax != 0u) {
        lsh = mt_norm31_shift(amax);
        for (i = 0; i < nc; ++i) {
            const uint32_t t = mt_uabs32(mt_srdhm(mt_norm31(g[i], lsh), inv_mult));
            tmax = (t > tmax) ? t : tmax;
        }
        s = mt_grad_renorm_shift(tmax);
    }
    for (n = 0; n < in_dims->n; ++n) {
        for (c = 0; c < in_dims->c; ++c) {
            const int32_t gi = g[(size_t)n * (size_t)in_dims->c + (size_t)c];
            const int16_t v = (amax == 0u) ? (int16_t)0 :
                (int16_t)mt_rshift_round32(mt_srdhm(mt_norm31(gi, lsh), inv_mult), s);
            int16_t *dst = gx + (size_t)n * (size_t)hw * (size_t)in_dims->c + (size_t)c;
            for (q = 0; q < hw; ++q) {
                dst[(size_t)q * (size_t)in_dims->c] = v;
            }
        }
    }
    *gx_e = (amax == 0u) ? g_e : g_e + inv_shift - lsh + s;
    return MT_OK;
}
