/**
 * @file mt_grad_mul_q31_s32.c
 * @brief int32 accumulators times a per-channel Q31 factor -> int16 gradient; bit-exact with
 *        gradfmt.mul_q31 (normalize31, SRDHM, renormalize).
 *
 * As mt_grad_mul_q31_s16 (mt_gradfmt_fast.h): one read pass for the per-channel extremes (max |acc|
 * and max |SRDHM| follow exactly), one write pass with SRDHM and the rounding shift fused. Only
 * max |acc| = 2^31 (L = -1: normalize31 rounds right) takes the per-element three-pass form.
 */
#include "mt_kernels_train.h"
#include "mt_gradfmt_fast.h"

mt_status mt_grad_mul_q31_s32(int32_t size, int32_t channels, const int32_t *acc, int32_t e,
                              const int32_t *mult, int32_t shift, int16_t *m, int32_t *e_out)
{
    uint32_t tmax = 0u;
    int32_t i, c, lsh, s, npix, hi, lo;
    mt_gf_ext x;
    if (size < 0 || channels < 1 || size % channels != 0) {
        return MT_ERR_ARG;
    }
    npix = size / channels;
    if (npix == 0) {
        *e_out = e;
        return MT_OK;
    }
    x.pmax = 0;
    x.pmin = 0;
    x.amax = 0u;
    for (c = 0; c < channels; ++c) {
        mt_gf_col32(acc + c, npix, channels, &hi, &lo);
        mt_gf_ext_add(&x, hi, lo, mult[c]);
    }
    if (x.amax == 0u) {
        for (i = 0; i < size; ++i) {
            m[i] = 0;
        }
        *e_out = e;
        return MT_OK;
    }
    lsh = mt_norm31_shift(x.amax);
    if (lsh >= 0) {
        /* |acc << lsh| < 2^31, |P 2^lsh| < 2^62 */
        tmax = mt_gf_tmax(&x, lsh);
    } else {
        for (i = 0, c = 0; i < size; ++i) {
            const uint32_t t = mt_uabs32(mt_srdhm(mt_norm31(acc[i], lsh), mult[c]));
            tmax = (t > tmax) ? t : tmax;
            c = (c + 1 == channels) ? 0 : c + 1;
        }
    }
    s = mt_grad_renorm_shift(tmax);
    if (lsh >= 0 && s >= 1) {
        const uint64_t b0 = ((uint64_t)1 << 30) + ((uint64_t)1 << (30 + s));
        const int32_t *p = acc;
        int16_t *o = m;
        for (i = 0; i < npix; ++i, p += channels, o += channels) {
            for (c = 0; c < channels; ++c) {
                o[c] = (int16_t)mt_gf_fused_wide_elem(mt_wrap32((uint32_t)p[c] << lsh), mult[c], b0, s);
            }
        }
    } else {
        for (i = 0, c = 0; i < size; ++i) {
            m[i] = (int16_t)mt_rshift_round32(mt_srdhm(mt_norm31(acc[i], lsh), mult[c]), s);
            c = (c + 1 == channels) ? 0 : c + 1;
        }
    }
    *e_out = e + shift - lsh + s;
    return MT_OK;
}
