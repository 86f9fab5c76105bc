/**
 * @file mt_wgrad_gemm_dsp.h
 * @brief mt_wgrad_gemm.h's micro-kernel and x packer with the Arm DSP extension (internal to the
 *        *_update_s8_dsp kernels).
 *
 * The GEMM's buffers hold int16 values with the pixel index fastest, so a word load is a pixel
 * pair and SMLAD takes two pixels' products at once: acc[r, t] += {g[r, q], g[r, q+1]} .
 * {x[t, q], x[t, q+1]}; 2 x 4 tiles of (output channel, tap) load each x word once for both
 * channels. The x buffer is packed two pixels and four channels at a time: one word per pixel,
 * SXTAB16 (x - in_zp into int16 lanes {c0, c2} / {c1, c3}), PKHBT/PKHTB pairing the two pixels,
 * one word store per tap. |g| <= 2^15 and |x - in_zp| <= 255 fit the lanes; the sums are the
 * portable ones (any order, within int32 by the headroom shift).
 */
#ifndef MT_WGRAD_GEMM_DSP_H
#define MT_WGRAD_GEMM_DSP_H

#include "mt_dsp.h"
#include "mt_wgrad_gemm.h"

/* max |g| over rows values of each of n lines stride apart, as mt_grad_or_abs16 feeds the headroom
 * shift (only the bit length matters): signed max and min of lane pairs (SSUB16 / SEL), two values
 * per step when the lines are contiguous */
static inline uint32_t mt_grad_amax16_dsp(const int16_t *g, int32_t n, int32_t stride, int32_t rows)
{
    uint32_t mx = 0x80008000u, mn = 0x7FFF7FFFu, a, b;
    int32_t q, r, i, total;
    if (rows == stride) {
        total = n * rows;
        for (i = 0; i + 2 <= total; i += 2) {
            const uint32_t v = mt_read_s16x2(g + i);
            mx = mt_max16x2(mx, v);
            mn = mt_min16x2(mn, v);
        }
        if (i < total) {
            const uint32_t v = mt_dup16(g[i]);
            mx = mt_max16x2(mx, v);
            mn = mt_min16x2(mn, v);
        }
    } else {
        for (q = 0; q < n; ++q, g += stride) {
            for (r = 0; r + 2 <= rows; r += 2) {
                const uint32_t v = mt_read_s16x2(g + r);
                mx = mt_max16x2(mx, v);
                mn = mt_min16x2(mn, v);
            }
            if (r < rows) {
                const uint32_t v = mt_dup16(g[r]);
                mx = mt_max16x2(mx, v);
                mn = mt_min16x2(mn, v);
            }
        }
    }
    a = mt_uabs32(mt_lane16(mx, 0)) | mt_uabs32(mt_lane16(mx, 1));
    b = mt_uabs32(mt_lane16(mn, 0)) | mt_uabs32(mt_lane16(mn, 1));
    return a | b;
}

/* output channels r, r + 1 (gT rows g, g + P) against taps t .. t + 3 (xT rows x .. x + 3P): each
 * x word is loaded once for the two channels */
static MT_WG_NOINLINE void mt_wg_tile24_dsp(const int16_t *g, const int16_t *x, int32_t npair, int32_t *a0, int32_t *a1,
                                              int32_t first)
{
    int32_t s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
    int32_t k;
    for (k = 0; k < 2 * npair; k += 2) {
        const uint32_t g0 = mt_read_s16x2(g + k), g1 = mt_read_s16x2(g + MT_WG_P + k);
        uint32_t xv = mt_read_s16x2(x + k);
        s00 = mt_smlad(g0, xv, s00);
        s10 = mt_smlad(g1, xv, s10);
        xv = mt_read_s16x2(x + MT_WG_P + k);
        s01 = mt_smlad(g0, xv, s01);
        s11 = mt_smlad(g1, xv, s11);
        xv = mt_read_s16x2(x + 2 * MT_WG_P + k);
        s02 = mt_smlad(g0, xv, s02);
        s12 = mt_smlad(g1, xv, s12);
        xv = mt_read_s16x2(x + 3 * MT_WG_P + k);
        s03 = mt_smlad(g0, xv, s03);
        s13 = mt_smlad(g1, xv, s13);
    }
    if (!first) {
        s00 = mt_wrap_add32(a0[0], s00);
        s01 = mt_wrap_add32(a0[1], s01);
        s02 = mt_wrap_add32(a0[2], s02);
        s03 = mt_wrap_add32(a0[3], s03);
        s10 = mt_wrap_add32(a1[0], s10);
        s11 = mt_wrap_add32(a1[1], s11);
        s12 = mt_wrap_add32(a1[2], s12);
        s13 = mt_wrap_add32(a1[3], s13);
    }
    a0[0] = s00;
    a0[1] = s01;
    a0[2] = s02;
    a0[3] = s03;
    a1[0] = s10;
    a1[1] = s11;
    a1[2] = s12;
    a1[3] = s13;
}

/* output channels r, r + 1 (gT rows g, g + P) against every tap pair of the chunk */
static inline void mt_wg_rows2_dsp(const int16_t *g, const int16_t *xT, int32_t ntp, int32_t npair, int32_t *a0,
                     int32_t *a1, int32_t first)
{
    int32_t tp = 0, k;
    for (; tp + 2 <= ntp; tp += 2, xT += 4 * MT_WG_P, a0 += 4, a1 += 4) {
        mt_wg_tile24_dsp(g, xT, npair, a0, a1, first);
    }
    for (; tp < ntp; ++tp, xT += 2 * MT_WG_P, a0 += 2, a1 += 2) {
        int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
        for (k = 0; k < 2 * npair; k += 2) {
            const uint32_t g0 = mt_read_s16x2(g + k), g1 = mt_read_s16x2(g + MT_WG_P + k);
            const uint32_t x0 = mt_read_s16x2(xT + k), x1 = mt_read_s16x2(xT + MT_WG_P + k);
            s00 = mt_smlad(g0, x0, s00);
            s01 = mt_smlad(g0, x1, s01);
            s10 = mt_smlad(g1, x0, s10);
            s11 = mt_smlad(g1, x1, s11);
        }
        a0[0] = first ? s00 : mt_wrap_add32(a0[0], s00);
        a0[1] = first ? s01 : mt_wrap_add32(a0[1], s01);
        a1[0] = first ? s10 : mt_wrap_add32(a1[0], s10);
        a1[1] = first ? s11 : mt_wrap_add32(a1[1], s11);
    }
}

/* one (output channel, tap) sum */
static inline int32_t mt_wg_dot_dsp(const int16_t *g, const int16_t *x, int32_t npair)
{
    int32_t s = 0, k;
    for (k = 0; k < 2 * npair; k += 2) {
        s = mt_smlad(mt_read_s16x2(g + k), mt_read_s16x2(x + k), s);
    }
    return s;
}

static inline void mt_wg_mac_dsp(const int16_t *gT, const int16_t *xT, int32_t nr, int32_t nt, int32_t npair,
                      int32_t *acc, int32_t stride, int32_t first)
{
    int32_t r, t;
    for (r = 0; r + 1 < nr; r += 2) {
        int32_t *a0 = acc + (size_t)r * (size_t)stride, *a1 = a0 + stride;
        mt_wg_rows2_dsp(gT + r * MT_WG_P, xT, nt / 2, npair, a0, a1, first);
        t = nt & ~1;
        if (t < nt) {
            a0[t] = mt_wrap_add32(first ? 0 : a0[t], mt_wg_dot_dsp(gT + r * MT_WG_P, xT + t * MT_WG_P, npair));
            a1[t] = mt_wrap_add32(first ? 0 : a1[t], mt_wg_dot_dsp(gT + (r + 1) * MT_WG_P, xT + t * MT_WG_P, npair));
        }
    }
    if (r < nr) {
        int32_t *a0 = acc + (size_t)r * (size_t)stride;
        for (t = 0; t < nt; ++t) {
            a0[t] = mt_wrap_add32(first ? 0 : a0[t], mt_wg_dot_dsp(gT + r * MT_WG_P, xT + t * MT_WG_P, npair));
        }
    }
}

/* As mt_wg_pack_x, two pixels at a time: when both are interior, four channels per step with
 * SXTAB16 (x - in_zp, lanes {c0, c2} / {c1, c3}) and PKHBT / PKHTB pairing the pixels, one word
 * store per tap. */
static MT_WG_NOINLINE void mt_wg_pack_x_pairs_dsp(const mt_wg_geom *q, int32_t p0, int32_t np, int32_t t0, int32_t nt,
                         int16_t *xT)
{
    const uint32_t zoff = mt_dup16(-q->zp);
    mt_wg_runs rr;
    mt_wg_pix c0, c1;
    int32_t k, r, m;
    mt_wg_runs_make(q, t0, nt, &rr);
    mt_wg_pix_at(q, p0, &c0);
    for (k = 0; k < np; k += 2) {
        c1 = c0;
        mt_wg_pix_next(q, &c1);
        if (k + 1 < np && mt_wg_interior(q, &rr, &c0) && mt_wg_interior(q, &rr, &c1)) {
            const ptrdiff_t b0 = mt_wg_base(q, &c0), b1 = mt_wg_base(q, &c1);
            for (r = 0; r < rr.n; ++r) {
                const int8_t *s0 = q->x + (b0 + rr.off[r]), *s1 = q->x + (b1 + rr.off[r]);
                int16_t *dst = xT + (size_t)rr.rt[r] * MT_WG_P + (size_t)k;
                const int32_t len = rr.len[r];
                for (m = 0; m + 4 <= len; m += 4, dst += 4 * MT_WG_P) {
                    const uint32_t a = mt_read_s8x4(s0 + m), b = mt_read_s8x4(s1 + m);
                    const uint32_t a02 = mt_sxtab16(zoff, a), a13 = mt_sxtab16_ror8(zoff, a);
                    const uint32_t b02 = mt_sxtab16(zoff, b), b13 = mt_sxtab16_ror8(zoff, b);
                    mt_write_s16x2(dst, mt_pkhbt(a02, b02));
                    mt_write_s16x2(dst + MT_WG_P, mt_pkhbt(a13, b13));
                    mt_write_s16x2(dst + 2 * MT_WG_P, mt_pkhtb(b02, a02));
                    mt_write_s16x2(dst + 3 * MT_WG_P, mt_pkhtb(b13, a13));
                }
                for (; m < len; ++m, dst += MT_WG_P) {
                    dst[0] = (int16_t)((int32_t)s0[m] - q->zp);
                    dst[1] = (int16_t)((int32_t)s1[m] - q->zp);
                }
            }
        } else {
            for (r = 0; r < rr.n; ++r) {
                mt_wg_put_run(q, &rr, r, &c0, 0, xT, k);
            }
            if (k + 1 < np) {
                for (r = 0; r < rr.n; ++r) {
                    mt_wg_put_run(q, &rr, r, &c1, 0, xT, k + 1);
                }
            } else {
                for (r = 0; r < nt; ++r) {
                    xT[r * MT_WG_P + k + 1] = 0;
                }
            }
        }
        c0 = c1;
        mt_wg_pix_next(q, &c0);
    }
}

static inline void mt_wg_packx_dsp(const mt_wg_geom *q, int32_t p0, int32_t np, int32_t t0, int32_t nt,
                        int16_t *xT)
{
    if (q->cin < 4) {
        mt_wg_pack_x_taps(q, p0, np, t0, nt, xT);
    } else {
        mt_wg_pack_x_pairs_dsp(q, p0, np, t0, nt, xT);
    }
}

#endif /* MT_WGRAD_GEMM_DSP_H */
