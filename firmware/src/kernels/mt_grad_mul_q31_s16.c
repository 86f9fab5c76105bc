/**
 * @file mt_grad_mul_q31_s16.c
 * @brief int16 gradient times a per-channel Q31 factor (scale_channels); bit-exact with
 *        gradfmt.mul_q31 on int16 mantissas. Elementwise: out may alias in.
 *
 * Two passes (mt_gradfmt_fast.h): one read pass for the per-channel extremes of in, from which
 * max |in| (the normalisation L) and max |SRDHM(in << L, mult[c])| (the renormalisation s) follow
 * exactly; one write pass with SRDHM and the rounding shift fused into one multiply-accumulate.
 */
#include "mt_kernels_train.h"
#include "mt_gradfmt_fast.h"

mt_status mt_grad_mul_q31_s16(int32_t size, int32_t channels, const int16_t *in, int32_t e,
                              const int32_t *mult, int32_t shift, int16_t *out, int32_t *e_out)
{
    int32_t i, c, lsh, s, npix;
    mt_gf_ext x;
    if (size < 0 || channels < 1 || size % channels != 0) {
        return MT_ERR_ARG;
    }
    npix = size / channels;
    if (npix == 0) {
        *e_out = e;
        return MT_OK;
    }
    x = mt_gf_scan16(in, npix, channels, mult);
    if (x.amax == 0u) {
        for (i = 0; i < size; ++i) {
            out[i] = 0;
        }
        *e_out = e;
        return MT_OK;
    }
    lsh = mt_norm31_shift(x.amax); /* in [15, 30]: amax <= 2^15, |in << lsh| < 2^31 */
    s = mt_grad_renorm_shift(mt_gf_tmax(&x, lsh));
    if (s >= 1 && s <= lsh + 1) {
        const mt_gf_fused f = mt_gf_fused_make(lsh, s);
        const int16_t *p = in;
        int16_t *o = out;
        if (channels == 1) {
            const int32_t m = mult[0];
            for (i = 0; i + 2 <= size; i += 2) {
                const int32_t a = p[i], b = p[i + 1];
                o[i] = (int16_t)mt_gf_fused_elem(&f, a, m);
                o[i + 1] = (int16_t)mt_gf_fused_elem(&f, b, m);
            }
            if (i < size) {
                o[i] = (int16_t)mt_gf_fused_elem(&f, p[i], m);
            }
        } else if ((channels & 1) == 0) {
            /* rows of pairs: the multiplier pointer restarts per row, no channel counter */
            const int32_t *const mend = mult + channels;
            const int16_t *const pend = in + size;
            while (p != pend) {
                const int32_t *mp = mult;
                do {
                    const int32_t a = p[0], b = p[1];
                    o[0] = (int16_t)mt_gf_fused_elem(&f, a, mp[0]);
                    o[1] = (int16_t)mt_gf_fused_elem(&f, b, mp[1]);
                    p += 2;
                    o += 2;
                    mp += 2;
                } while (mp != mend);
            }
        } else {
            for (i = 0; i < npix; ++i, p += channels, o += channels) {
                for (c = 0; c < channels; ++c) {
                    o[c] = (int16_t)mt_gf_fused_elem(&f, p[c], mult[c]);
                }
            }
        }
    } else {
        /* s = 0 (|t| <= 32767: t itself) or s = lsh + 2 (only for in = -32768): two roundings */
        const int16_t *p = in;
        int16_t *o = out;
        for (i = 0; i < npix; ++i, p += channels, o += channels) {
            for (c = 0; c < channels; ++c) {
                o[c] = (int16_t)mt_rshift_round32(mt_srdhm(mt_norm31(p[c], lsh), mult[c]), s);
            }
        }
    }
    *e_out = e + shift - lsh + s;
    return MT_OK;
}
