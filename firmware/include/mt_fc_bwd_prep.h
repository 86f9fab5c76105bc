/**
 * @file mt_fc_bwd_prep.h
 * @brief Private to the fully_connected input-gradient kernels (portable and DSP): gs =
 *        headroom(scale_channels(g)) in two or three passes, prep_gs. The including file defines
 *        col_extremes(g, nb, cout, ext) (per-channel {max, min} of g as int16 lanes, returning
 *        max |g|) before including this header; everything here is static.
 */
#ifndef MT_FC_BWD_PREP_H
#define MT_FC_BWD_PREP_H

#include "mt_kernels_train.h"

/* x * 2^n wrapping (no shift of a negative value) */
static inline int32_t shl32(int32_t x, int32_t n)
{
    return mt_wrap32((uint32_t)x << n);
}

/* floor((x * m + 2^30) / 2^31) = mt_srdhm(x, m) whenever not both are INT32_MIN (gemmlowp's
 * sign-dependent nudge and truncating division give this floor for either sign) */
static inline int32_t srdhm_floor(int32_t x, int32_t m)
{
    return mt_wrap32((uint32_t)((uint64_t)((int64_t)x * m + ((int64_t)1 << 30)) >> 31));
}

/* lane i (0, 1) of a word of two int16 lanes, as a signed value */
static inline int32_t mt_fcb_lane16(uint32_t x, int i)
{
    return (int32_t)(((i != 0) ? (x >> 16) : (x & 0xFFFFu)) ^ 0x8000u) - 0x8000;
}

static uint32_t col_extremes(const int16_t *g, int32_t nb, int32_t cout, uint32_t *ext);

/*
 * gs = headroom(scale_channels(g)): the integers (and exponent) of
 *   mt_grad_mul_q31_s16(size, cout, g, g_e, w_mult, w_shift, gs, &e);
 *   mt_grad_headroom_s16(w_bits, cout, size, gs, &e);
 * in two or three passes instead of six. t = SRDHM(g << lsh, mult[c]) (|g << lsh| < 2^31: never
 * the saturating case). max |t|: SRDHM is monotonic in g, so with per-channel extremes of g
 * (ext: Cout words of scratch, col_extremes) it is the max over 2 Cout values; without them a
 * pass computes every t. |RDBPOT(t, s)| = RDBPOT(|t|, s) (symmetric, monotonic rounding), so the
 * headroom's max |gs| = RDBPOT(max |t|, s) is known before gs is written, and the two roundings
 * merge: floor((floor((a + h) / 2^s) + h2) / 2^s2) = floor((a + h + h2 * 2^s) / 2^(s + s2)) for a
 * magnitude a (nested floors), one add and one shift in the write pass. gs may alias g (element i
 * is read before it is written; ext is never gs).
 */
static void prep_gs(const mt_fc_train_params *p, const int16_t *g, int32_t g_e, int16_t *gs,
                    int32_t *gs_e, uint32_t *ext)
{
    const int32_t nb = p->batch, cout = p->out_features;
    const int32_t *mult = p->w_mult;
    uint32_t amax = 0u, tmax = 0u;
    int32_t i, n, c, lsh, s, s2;
    const int16_t *gr;
    if (ext != NULL) {
        amax = col_extremes(g, nb, cout, ext);
    } else {
        for (i = 0; i < nb * cout; ++i) {
            const uint32_t a = mt_uabs32(g[i]);
            amax = (a > amax) ? a : amax;
        }
    }
    if (amax == 0u) {
        for (i = 0; i < nb * cout; ++i) {
            gs[i] = 0;
        }
        s2 = mt_grad_headroom_shift(0u, p->w_bits, cout);
        *gs_e = g_e + s2;
        return;
    }
    lsh = mt_norm31_shift(amax); /* in [15, 30]: amax <= 2^15 */
    if (ext != NULL) {
        for (c = 0; c < cout; ++c) {
            const uint32_t t0 = mt_uabs32(srdhm_floor(shl32(mt_fcb_lane16(ext[c], 0), lsh), mult[c]));
            const uint32_t t1 = mt_uabs32(srdhm_floor(shl32(mt_fcb_lane16(ext[c], 1), lsh), mult[c]));
            const uint32_t t = (t0 > t1) ? t0 : t1;
            tmax = (t > tmax) ? t : tmax;
        }
    } else {
        for (n = 0, gr = g; n < nb; ++n, gr += cout) {
            for (c = 0; c < cout; ++c) {
                const uint32_t t = mt_uabs32(srdhm_floor(shl32(gr[c], lsh), mult[c]));
                tmax = (t > tmax) ? t : tmax;
            }
        }
    }
    s = mt_grad_renorm_shift(tmax);
    s2 = mt_grad_headroom_shift(mt_urshift_round32(tmax, s), p->w_bits, cout);
    if (s + s2 < 32) {
        /* |t| < 2^31 and H < 2^(s + s2) <= 2^31: |t| + H does not wrap in uint32 */
        const int32_t sh = s + s2;
        const uint32_t hh = ((s > 0) ? (uint32_t)1 << (s - 1) : 0u) +
                            ((s2 > 0) ? (uint32_t)1 << (s2 - 1 + s) : 0u);
        for (n = 0, gr = g; n < nb; ++n, gr += cout) {
            int16_t *o = gs + (size_t)n * (size_t)cout;
            for (c = 0; c < cout; ++c) {
                const int32_t t = srdhm_floor(shl32(gr[c], lsh), mult[c]);
                const uint32_t m = 0u - (uint32_t)(t < 0); /* sign mask */
                const uint32_t r = ((((uint32_t)t ^ m) - m) + hh) >> sh;
                o[c] = (int16_t)mt_wrap32((r ^ m) - m);
            }
        }
    } else {
        for (n = 0, gr = g; n < nb; ++n, gr += cout) {
            int16_t *o = gs + (size_t)n * (size_t)cout;
            for (c = 0; c < cout; ++c) {
                const int32_t t = mt_rshift_round32(srdhm_floor(shl32(gr[c], lsh), mult[c]), s);
                o[c] = (int16_t)mt_rshift_round32(t, s2);
            }
        }
    }
    *gs_e = g_e + p->w_shift - lsh + s + s2;
}

#endif /* MT_FC_BWD_PREP_H */
