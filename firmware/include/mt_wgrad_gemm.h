/**
 * @file mt_wgrad_gemm.h
 * @brief Pass 1 of the fused conv2d / pointwise weight updates as a small GEMM (internal to the
 *        *_update_s8 kernels and their DSP variants; not a public API).
 *
 * acc[o, tap] = sum over output pixels p of gr[p, o] * (x at pixel p through tap - in_zp), with
 * tap = (i, j, c) in slice order and padding contributing 0. The pixels are taken P at a time:
 * gT[r][q] = gr[p0 + q, r0 + r] (the headroom rounding applied once per value) and
 * xT[t][q] = x - in_zp of tap t0 + t at pixel p0 + q (0 outside the image), both int16, the
 * pixel index fastest, zero-padded to an even count; then acc[r0 + r, t0 + t] +=
 * sum_q gT[r][q] * xT[t][q] by the includer's micro-kernel, declared here and defined by the
 * file that includes this header with MT_WG_DRIVER defined (portable C, or SMLAD on pixel pairs):
 *
 *   static void mt_wg_mac(const int16_t *gT, const int16_t *xT, int32_t nr, int32_t nt,
 *                         int32_t npair, int32_t *acc, int32_t stride, int32_t first);
 *     acc[r * stride + t] (= when first, else +=) sum_{q < 2 npair} gT[r * MT_WG_P + q] *
 *     xT[t * MT_WG_P + q]
 *
 * Exactness: |gr| <= 2^15, |x - in_zp| <= 255 fit int16 lanes; the headroom shift bounds every
 * partial sum of the true accumulator below 2^31 in any order, and the zero padding adds 0, so the
 * int32 sums (wrapping in uint32 where C needs it) are the reference's accumulators.
 * Packers: mt_wg_pack_x (pixel by pixel, runs of channels) and mt_wg_pack_x_taps (tap by tap,
 * for few channels); the includer defines mt_wg_packx (its choice, or a SIMD packer).
 * Stack: (MT_WG_R + MT_WG_T) * MT_WG_P int16 = 1 KB.
 */
#ifndef MT_WGRAD_GEMM_H
#define MT_WGRAD_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "mt_kernels_train.h"

#if defined(__GNUC__)
#define MT_WG_NOINLINE __attribute__((noinline, unused))
#else
#define MT_WG_NOINLINE
#endif

/* keeps short zero-filling loops from becoming memset calls (absent in -nostdlib builds) */
#if defined(__GNUC__)
#define MT_WG_KEEP_LOOP() __asm__ volatile("")
#else
#define MT_WG_KEEP_LOOP() ((void)0)
#endif

#define MT_WG_P 16 /* pixels per chunk (even) */
#define MT_WG_R 16 /* output channels per block */
#define MT_WG_T 16 /* taps per chunk */


/* gT[r][q] = RDBPOT(g[p0 + q, r0 + r], sh), q < np; column np zeroed when np is odd */
static inline void mt_wg_pack_g(const int16_t *g, int32_t cout, int32_t p0, int32_t np, int32_t r0,
                         int32_t nr, int32_t sh, int16_t *gT)
{
    int32_t q, r;
    for (q = 0; q < np; ++q) {
        const int16_t *gp = g + (size_t)(p0 + q) * (size_t)cout + (size_t)r0;
        int16_t *dst = gT + q;
        if (sh > 0) {
            for (r = 0; r < nr; ++r, dst += MT_WG_P) {
                *dst = (int16_t)mt_rdbpot(gp[r], (int)sh);
            }
        } else {
            for (r = 0; r < nr; ++r, dst += MT_WG_P) {
                *dst = gp[r];
            }
        }
    }
    if (np & 1) {
        for (r = 0; r < nr; ++r) {
            gT[r * MT_WG_P + np] = 0;
        }
    }
}

/* Geometry of the taps and pixels (a conv2d; pointwise / fully_connected are 1x1 convs). */
typedef struct mt_wg_geom_s {
    const int8_t *x;
    int32_t zp, cin, kw, oh_n, ow_n, sh_, sw, dh, dw, pt, pl, ih, iw;
    size_t xrow, ximg;
} mt_wg_geom;

static inline void mt_wg_geom_init(mt_wg_geom *q, const mt_conv_train_params *p, const int8_t *x)
{
    q->x = x;
    q->zp = p->in_zp;
    q->cin = p->in.c;
    q->kw = p->kernel.w;
    q->oh_n = p->out.h;
    q->ow_n = p->out.w;
    q->sh_ = p->stride.h;
    q->sw = p->stride.w;
    q->dh = p->dilation.h;
    q->dw = p->dilation.w;
    q->pt = p->padding.top;
    q->pl = p->padding.left;
    q->ih = p->in.h;
    q->iw = p->in.w;
    q->xrow = (size_t)p->in.w * (size_t)p->in.c;
    q->ximg = (size_t)p->in.h * q->xrow;
}

/* The taps [t0, t0 + nt) as runs of consecutive channels of one kernel position (i, j), which
 * are contiguous in x: run r covers taps rt[r] .. rt[r] + len[r] - 1 (relative to t0), at x offset
 * off[r] from its pixel's base x[n, oh*SH, ow*SW, 0] (for a valid position), kernel offsets
 * dh[r] = i*DH - top, dw[r] = j*DW - left; the extremes of dh, dw over the runs decide whether a
 * pixel is inside the image for every run (an interior pixel). */
typedef struct {
    int32_t n, dhmin, dhmax, dwmin, dwmax;
    int16_t dh[MT_WG_T], dw[MT_WG_T], c[MT_WG_T], len[MT_WG_T], rt[MT_WG_T];
    ptrdiff_t off[MT_WG_T];
} mt_wg_runs;

static inline void mt_wg_runs_make(const mt_wg_geom *q, int32_t t0, int32_t nt, mt_wg_runs *rr)
{
    const int32_t cin = q->cin, tw = q->kw * cin;
    int32_t t = t0, n = 0;
    rr->dhmin = rr->dwmin = 0x7FFFFFFF;
    rr->dhmax = rr->dwmax = -0x7FFFFFFF;
    while (t < t0 + nt) {
        const int32_t i = t / tw, j = (t - i * tw) / cin, c = t - i * tw - j * cin;
        const int32_t len = ((cin - c) < (t0 + nt - t)) ? (cin - c) : (t0 + nt - t);
        /* kernel offsets, channels, lengths: |values| < 2^15 (a tap index of a kernel row, within
         * one chunk of MT_WG_T taps; geometry of an on-device image) */
        rr->dh[n] = (int16_t)(i * q->dh - q->pt);
        rr->dw[n] = (int16_t)(j * q->dw - q->pl);
        rr->c[n] = (int16_t)c;
        rr->off[n] = (ptrdiff_t)rr->dh[n] * (ptrdiff_t)q->xrow + (ptrdiff_t)rr->dw[n] * cin + c;
        rr->len[n] = (int16_t)len;
        rr->rt[n] = (int16_t)(t - t0);
        rr->dhmin = (rr->dh[n] < rr->dhmin) ? rr->dh[n] : rr->dhmin;
        rr->dhmax = (rr->dh[n] > rr->dhmax) ? rr->dh[n] : rr->dhmax;
        rr->dwmin = (rr->dw[n] < rr->dwmin) ? rr->dw[n] : rr->dwmin;
        rr->dwmax = (rr->dw[n] > rr->dwmax) ? rr->dw[n] : rr->dwmax;
        ++n;
        t += len;
    }
    rr->n = n;
}

/* pixel cursor (n, oh, ow) over the flattened output pixels */
typedef struct {
    int32_t n, oh, ow;
} mt_wg_pix;

static inline void mt_wg_pix_at(const mt_wg_geom *q, int32_t p, mt_wg_pix *c)
{
    c->n = p / (q->oh_n * q->ow_n);
    p -= c->n * q->oh_n * q->ow_n;
    c->oh = p / q->ow_n;
    c->ow = p - c->oh * q->ow_n;
}

static inline void mt_wg_pix_next(const mt_wg_geom *q, mt_wg_pix *c)
{
    if (++c->ow == q->ow_n) {
        c->ow = 0;
        if (++c->oh == q->oh_n) {
            c->oh = 0;
            ++c->n;
        }
    }
}

/* offset of pixel c's base x[n, oh*SH, ow*SW, 0] (a position that may lie outside the image:
 * only base + off[r] of an interior pixel is dereferenced) */
static inline ptrdiff_t mt_wg_base(const mt_wg_geom *q, const mt_wg_pix *c)
{
    return (ptrdiff_t)((size_t)c->n * q->ximg) + (ptrdiff_t)(c->oh * q->sh_) * (ptrdiff_t)q->xrow +
           (ptrdiff_t)(c->ow * q->sw) * q->cin;
}

/* 1 when every run of rr is inside the image at pixel c */
static inline int mt_wg_interior(const mt_wg_geom *q, const mt_wg_runs *rr, const mt_wg_pix *c)
{
    const int32_t h = c->oh * q->sh_, w = c->ow * q->sw;
    return h + rr->dhmin >= 0 && h + rr->dhmax < q->ih && w + rr->dwmin >= 0 && w + rr->dwmax < q->iw;
}

/* x - zp of run r at pixel c into xT column k (zeros outside the image) */
static inline void mt_wg_put_run(const mt_wg_geom *q, const mt_wg_runs *rr, int32_t r,
                                 const mt_wg_pix *c, int32_t from, int16_t *xT, int32_t k)
{
    const int32_t h = c->oh * q->sh_ + rr->dh[r], w = c->ow * q->sw + rr->dw[r];
    int16_t *dst = xT + (size_t)(rr->rt[r] + from) * MT_WG_P + (size_t)k;
    int32_t m;
    if ((uint32_t)h < (uint32_t)q->ih && (uint32_t)w < (uint32_t)q->iw) {
        const int8_t *src = q->x + ((size_t)c->n * q->ximg + (size_t)h * q->xrow +
                                    (size_t)w * (size_t)q->cin + (size_t)rr->c[r]);
        for (m = from; m < rr->len[r]; ++m, dst += MT_WG_P) {
            *dst = (int16_t)((int32_t)src[m] - q->zp);
        }
    } else {
        for (m = from; m < rr->len[r]; ++m, dst += MT_WG_P) {
            *dst = 0;
        }
    }
}

/* xT[t][q] for taps [t0, t0 + nt) and pixels [p0, p0 + np), zero-padded to an even count, pixel
 * by pixel (runs of channels; interior pixels without the bounds checks) */
static MT_WG_NOINLINE void mt_wg_pack_x(const mt_wg_geom *q, int32_t p0, int32_t np, int32_t t0, int32_t nt,
                                int16_t *xT)
{
    mt_wg_runs rr;
    mt_wg_pix c;
    int32_t k, r, m;
    mt_wg_runs_make(q, t0, nt, &rr);
    mt_wg_pix_at(q, p0, &c);
    for (k = 0; k < np; ++k, mt_wg_pix_next(q, &c)) {
        if (mt_wg_interior(q, &rr, &c)) {
            const ptrdiff_t base = mt_wg_base(q, &c);
            for (r = 0; r < rr.n; ++r) {
                const int8_t *src = q->x + (base + rr.off[r]);
                int16_t *dst = xT + (size_t)rr.rt[r] * MT_WG_P + (size_t)k;
                for (m = 0; m < rr.len[r]; ++m, dst += MT_WG_P) {
                    *dst = (int16_t)((int32_t)src[m] - q->zp);
                }
            }
        } else {
            for (r = 0; r < rr.n; ++r) {
                mt_wg_put_run(q, &rr, r, &c, 0, xT, k);
            }
        }
    }
    if (np & 1) {
        for (k = 0; k < nt; ++k) {
            xT[k * MT_WG_P + np] = 0;
        }
    }
}

/* As mt_wg_pack_x, tap by tap over the chunk's row segments (few channels: the per-pixel runs
 * of mt_wg_pack_x would be single values). */
static MT_WG_NOINLINE void mt_wg_pack_x_taps(const mt_wg_geom *q, int32_t p0, int32_t np, int32_t t0, int32_t nt,
                              int16_t *xT)
{
    const int32_t cin = q->cin, tw = q->kw * cin, zp = q->zp;
    int32_t t, k;
    for (t = t0; t < t0 + nt; ++t) {
        const int32_t i = t / tw, j = (t - i * tw) / cin, c = t - i * tw - j * cin;
        const int32_t dh = i * q->dh - q->pt, dw = j * q->dw - q->pl;
        /* valid ow of this tap: [wlo, whi) */
        const int32_t wlo = (dw >= 0) ? 0 : (-dw + q->sw - 1) / q->sw;
        const int32_t whi = (q->iw - 1 - dw >= 0) ? (q->iw - 1 - dw) / q->sw + 1 : 0;
        int16_t *dst = xT + (size_t)(t - t0) * MT_WG_P;
        int32_t n = p0 / (q->oh_n * q->ow_n), rem = p0 - n * q->oh_n * q->ow_n;
        int32_t oh = rem / q->ow_n, ow = rem - oh * q->ow_n;
        k = 0;
        while (k < np) {
            const int32_t seg = ((q->ow_n - ow) < (np - k)) ? (q->ow_n - ow) : (np - k);
            const int32_t h = oh * q->sh_ + dh, end = ow + seg;
            if ((uint32_t)h < (uint32_t)q->ih) {
                const int32_t a = (wlo > ow) ? wlo : ow, b = (whi < end) ? whi : end;
                const int8_t *src = q->x + (size_t)n * q->ximg + (size_t)h * q->xrow + (size_t)c;
                for (; ow < a && ow < end; ++ow) {
                    dst[k++] = 0;
                    MT_WG_KEEP_LOOP();
                }
                for (; ow < b; ++ow) {
                    dst[k++] = (int16_t)((int32_t)src[(size_t)(ow * q->sw + dw) * (size_t)cin] - zp);
                }
                for (; ow < end; ++ow) {
                    dst[k++] = 0;
                    MT_WG_KEEP_LOOP();
                }
            } else {
                for (; ow < end; ++ow) {
                    dst[k++] = 0;
                    MT_WG_KEEP_LOOP();
                }
            }
            if (ow == q->ow_n) {
                ow = 0;
                if (++oh == q->oh_n) {
                    oh = 0;
                    ++n;
                }
            }
        }
        if (np & 1) {
            dst[np] = 0;
        }
    }
}

/* The micro-kernel, portable: output channels r, r + 1 against taps t, t + 1 for
 * every tap pair of the chunk (rows MT_WG_P apart in gT / xT); products |g x| < 2^23, sums wrap
 * in uint32 (the true sums are within int32). Out of line: the four sums stay in registers. */
static MT_WG_NOINLINE void mt_wg_rows2_port(const int16_t *g, const int16_t *xT, int32_t ntp, int32_t nq,
                                    int32_t *a0, int32_t *a1, int32_t first)
{
    int32_t tp;
    for (tp = 0; tp < ntp; ++tp, xT += 2 * MT_WG_P, a0 += 2, a1 += 2) {
        uint32_t s00 = 0u, s01 = 0u, s10 = 0u, s11 = 0u;
        const int16_t *gp = g, *gend = g + nq, *x = xT;
        for (; gp != gend; ++gp, ++x) {
            const int32_t g0 = gp[0], g1 = gp[MT_WG_P], x0 = x[0], x1 = x[MT_WG_P];
            s00 += (uint32_t)(g0 * x0);
            s01 += (uint32_t)(g0 * x1);
            s10 += (uint32_t)(g1 * x0);
            s11 += (uint32_t)(g1 * x1);
        }
        if (!first) {
            s00 += (uint32_t)a0[0];
            s01 += (uint32_t)a0[1];
            s10 += (uint32_t)a1[0];
            s11 += (uint32_t)a1[1];
        }
        a0[0] = mt_wrap32(s00);
        a0[1] = mt_wrap32(s01);
        a1[0] = mt_wrap32(s10);
        a1[1] = mt_wrap32(s11);
    }
}

static inline void mt_wg_packx_port(const mt_wg_geom *q, int32_t p0, int32_t np, int32_t t0, int32_t nt,
                        int16_t *xT)
{
    if (q->cin < 4) {
        mt_wg_pack_x_taps(q, p0, np, t0, nt, xT);
    } else {
        mt_wg_pack_x(q, p0, np, t0, nt, xT);
    }
}

/* one (output channel, tap) sum (the odd edges of the tiling) */
static inline uint32_t mt_wg_dot_port(const int16_t *g, const int16_t *x, int32_t nq)
{
    uint32_t s = 0u;
    int32_t q;
    for (q = 0; q < nq; ++q) {
        s += (uint32_t)((int32_t)g[q] * (int32_t)x[q]);
    }
    return s;
}

static inline void mt_wg_mac_port(const int16_t *gT, const int16_t *xT, int32_t nr, int32_t nt, int32_t npair,
                      int32_t *acc, int32_t stride, int32_t first)
{
    const int32_t nq = 2 * npair;
    int32_t r, t;
    for (r = 0; r + 1 < nr; r += 2) {
        int32_t *a0 = acc + (size_t)r * (size_t)stride, *a1 = a0 + stride;
        mt_wg_rows2_port(gT + r * MT_WG_P, xT, nt / 2, nq, a0, a1, first);
        t = nt & ~1;
        if (t < nt) {
            a0[t] = mt_wrap32((first ? 0u : (uint32_t)a0[t]) + mt_wg_dot_port(gT + r * MT_WG_P, xT + t * MT_WG_P, nq));
            a1[t] = mt_wrap32((first ? 0u : (uint32_t)a1[t]) +
                              mt_wg_dot_port(gT + (r + 1) * MT_WG_P, xT + t * MT_WG_P, nq));
        }
    }
    if (r < nr) {
        int32_t *a0 = acc + (size_t)r * (size_t)stride;
        for (t = 0; t < nt; ++t) {
            a0[t] = mt_wrap32((first ? 0u : (uint32_t)a0[t]) + mt_wg_dot_port(gT + r * MT_WG_P, xT + t * MT_WG_P, nq));
        }
    }
}

/** mt_wg_accs with the portable micro-kernel and packers (one copy, in mt_conv2d_update_s8.c). */
void mt_wg_accs_port(const mt_conv_train_params *p, const int16_t *g, const int8_t *x, int32_t sh,
                     int32_t ra, int32_t nra, int32_t ta, int32_t nta, int32_t *out, int32_t stride);

/* fully_connected (batch N, or a pointwise conv's N*H*W pixels) as a 1x1 conv over N pixels: the
 * only fields mt_wg_pass1 reads */
static inline void mt_wg_fc_as_conv(const mt_fc_train_params *f, mt_conv_train_params *c)
{
    c->in.n = c->out.n = f->batch;
    c->in.h = c->in.w = c->out.h = c->out.w = 1;
    c->in.c = f->in_features;
    c->out.c = f->out_features;
    c->kernel.h = c->kernel.w = 1;
    c->stride.h = c->stride.w = 1;
    c->dilation.h = c->dilation.w = 1;
    c->padding.top = c->padding.left = c->padding.bottom = c->padding.right = 0;
    c->in_zp = f->in_zp;
    c->x_mult = f->x_mult;
    c->x_shift = f->x_shift;
    c->x_bits = f->x_bits;
    c->w_mult = f->w_mult;
    c->w_shift = f->w_shift;
    c->w_bits = f->w_bits;
    c->split = f->split;
}

#ifdef MT_WG_DRIVER
/* the includer's micro-kernel and packer (see the top of this file) */
static void mt_wg_mac(const int16_t *gT, const int16_t *xT, int32_t nr, int32_t nt, int32_t npair,
                      int32_t *acc, int32_t stride, int32_t first);
struct mt_wg_geom_s;
/* xT of taps [t0, t0 + nt) and pixels [p0, p0 + np) (the includer's choice among the packers
 * below, or its own) */
static void mt_wg_packx(const struct mt_wg_geom_s *q, int32_t p0, int32_t np, int32_t t0, int32_t nt,
                        int16_t *xT);

/* The accumulators of output channels [ra, ra + nra) and taps [ta, ta + nta) into
 * out[(o - ra) * stride + (t - ta)]. */
static MT_WG_NOINLINE void mt_wg_accs(const mt_conv_train_params *p, const int16_t *g, const int8_t *x,
                              int32_t sh, int32_t ra, int32_t nra, int32_t ta, int32_t nta,
                              int32_t *out, int32_t stride)
{
    const int32_t npix = p->out.n * p->out.h * p->out.w;
    int16_t gT[MT_WG_R * MT_WG_P], xT[MT_WG_T * MT_WG_P];
    mt_wg_geom q;
    int32_t p0, r0, t0;
    mt_wg_geom_init(&q, p, x);
    for (p0 = 0; p0 < npix; p0 += MT_WG_P) {
        const int32_t np = (npix - p0 < MT_WG_P) ? (npix - p0) : MT_WG_P;
        for (r0 = 0; r0 < nra; r0 += MT_WG_R) {
            const int32_t nr = (nra - r0 < MT_WG_R) ? (nra - r0) : MT_WG_R;
            mt_wg_pack_g(g, p->out.c, p0, np, ra + r0, nr, sh, gT);
            for (t0 = 0; t0 < nta; t0 += MT_WG_T) {
                const int32_t nt = (nta - t0 < MT_WG_T) ? (nta - t0) : MT_WG_T;
                mt_wg_packx(&q, p0, np, ta + t0, nt, xT);
                mt_wg_mac(gT, xT, nr, nt, (np + 1) / 2, out + (size_t)r0 * (size_t)stride + (size_t)t0, stride,
                          p0 == 0);
            }
        }
    }
}

/* Pass 1: acc[rows, KH*KW*Cin] = the accumulators (the scratch of the fused update). */
static inline void mt_wg_pass1(const mt_conv_train_params *p, const int16_t *g, const int8_t *x,
                               int32_t sh, int32_t rows, int32_t *acc)
{
    const int32_t kk = p->kernel.h * p->kernel.w * p->in.c;
    mt_wg_accs(p, g, x, sh, 0, rows, 0, kk, acc, kk);
}

#endif /* MT_WG_DRIVER */

#endif /* MT_WGRAD_GEMM_H */
