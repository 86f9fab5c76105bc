/**
 * @file mt_conv2d_bwd_input_s16.c
 * @brief conv2d input gradient; bit-exact with Conv2D.backward_int8 position 0:
 *        gs = headroom(scale_channels(g), w_bits, Cout*KH*KW), gx = renormalize(sum over taps of
 *        gs @ w[:, i, j, :]) cropped to the unpadded input.
 *
 * Gather form: per input pixel the valid taps (i, j) - those whose output pixel
 * oh = (h + top - i*dh) / sh, ow = (x + left - j*dw) / sw exists exactly - are listed once (the
 * row part per input row, the column part per input column), then four input channels at a time
 * keep their sums in registers: per output channel o one gs load and four weight loads (the
 * channels of a tap are contiguous in w[o, i, j, :]). The int32 sums do not depend on the order
 * (the headroom pre-shift bounds every partial sum), so they are the reference's. With the acc
 * scratch every input element is computed once, then renormalised; without it twice (the max,
 * then the rounded mantissas).
 */
#include "mt_kernels_train.h"

#if defined(__GNUC__)
#define MT_KEEP_LOOP() __asm__ volatile("") /* keeps short loops from becoming memset/memcpy calls */
#else
#define MT_KEEP_LOOP() ((void)0)
#endif

size_t mt_conv2d_bwd_input_s16_scratch_bytes(const mt_conv_train_params *p, int gs_aliases_g,
                                             int single_pass)
{
    size_t bytes = 0u;
    if (!gs_aliases_g) {
        bytes += (size_t)p->out.n * (size_t)p->out.h * (size_t)p->out.w * (size_t)p->out.c *
                 sizeof(int16_t);
        bytes = (bytes + 3u) & ~(size_t)3u;
    }
    if (single_pass) {
        bytes += (size_t)p->in.n * (size_t)p->in.h * (size_t)p->in.w * (size_t)p->in.c *
                 sizeof(int32_t);
    }
    return bytes;
}

/* at most this many taps per kernel axis take the listed path; larger kernels the direct one */
#define MT_DX_MAXK 5

/* The valid taps of one input pixel: gs rows (channel 0) and weight offsets (row 0, channel 0). */
typedef struct {
    const int16_t *g[MT_DX_MAXK * MT_DX_MAXK];
    int32_t wo[MT_DX_MAXK * MT_DX_MAXK];
    int32_t n;
} taps_t;

/* The valid taps along one axis for input coordinate v: tap k, output coordinate o(k) - those
 * with v + pad - k * dil = o * stride, 0 <= o < o_n (one division, then stepped). */
static int32_t axis_taps(int32_t v, int32_t pad, int32_t dil, int32_t stride, int32_t k_n, int32_t o_n,
                         int32_t *k_out, int32_t *o_out)
{
    const int32_t dq = dil / stride, dr = dil % stride;
    int32_t vp = v + pad, q, rem, k, n = 0;
    if (vp < 0) {
        return 0;
    }
    q = vp / stride;
    rem = vp - q * stride;
    for (k = 0; k < k_n; ++k) { /* invariant: vp - k * dil = q * stride + rem, 0 <= rem < stride */
        if (q < 0) {
            break;
        }
        if (rem == 0 && q < o_n) {
            k_out[n] = k;
            o_out[n] = q;
            ++n;
        }
        q -= dq;
        rem -= dr;
        if (rem < 0) {
            rem += stride;
            --q;
        }
    }
    return n;
}

/* Sums of four input channels c..c+3 over the listed taps and the output channels [o0, o1) of
 * one weight segment (row o at wseg + (o - o0) * ws, gs channel o). */
static void dx4(const taps_t *t, const int8_t *wseg, int32_t ws, int32_t o0, int32_t o1, int32_t c, int32_t a[4])
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], k, o;
    for (k = 0; k < t->n; ++k) {
        const int16_t *g = t->g[k];
        const int8_t *wp = wseg + t->wo[k] + c;
        for (o = o0; o < o1; ++o, wp += ws) {
            const int32_t gv = g[o];
            if (gv == 0) { /* masked gradients (ReLU) are often zero */
                continue;
            }
            a0 += gv * wp[0];
            a1 += gv * wp[1];
            a2 += gv * wp[2];
            a3 += gv * wp[3];
        }
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

static int32_t dx1(const taps_t *t, const int8_t *wseg, int32_t ws, int32_t o0, int32_t o1, int32_t c, int32_t a)
{
    int32_t k, o;
    for (k = 0; k < t->n; ++k) {
        const int16_t *g = t->g[k];
        const int8_t *wp = wseg + t->wo[k] + c;
        for (o = o0; o < o1; ++o, wp += ws) {
            if (g[o] != 0) {
                a += g[o] * wp[0];
            }
        }
    }
    return a;
}

/* sum_{i,j,o} gs[n,oh,ow,o] * w[o,i,j,c] over the taps that reach input pixel (h, x) (kernels
 * larger than MT_DX_MAXK) */
static int32_t dx_acc(const mt_conv_train_params *p, const int16_t *gs, const int8_t *w,
                      int32_t n, int32_t h, int32_t x, int32_t c)
{
    const int32_t kh = p->kernel.h, kw = p->kernel.w, cin = p->in.c, cout = p->out.c;
    const size_t wstride = (size_t)kh * (size_t)kw * (size_t)cin;
    int32_t i, j, o, acc = 0;
    for (i = 0; i < kh; ++i) {
        const int32_t hp = h + p->padding.top - i * p->dilation.h;
        int32_t oh;
        if (hp < 0 || hp % p->stride.h != 0) {
            continue;
        }
        oh = hp / p->stride.h;
        if (oh >= p->out.h) {
            continue;
        }
        for (j = 0; j < kw; ++j) {
            const int32_t wp = x + p->padding.left - j * p->dilation.w;
            int32_t ow;
            const int16_t *gp;
            size_t wq;
            if (wp < 0 || wp % p->stride.w != 0) {
                continue;
            }
            ow = wp / p->stride.w;
            if (ow >= p->out.w) {
                continue;
            }
            gp = gs + (((size_t)n * (size_t)p->out.h + (size_t)oh) * (size_t)p->out.w + (size_t)ow) *
                          (size_t)cout;
            wq = ((size_t)i * (size_t)kw + (size_t)j) * (size_t)cin + (size_t)c;
            for (o = 0; o < cout; ++o) {
                acc += (int32_t)gp[o] * (int32_t)mt_wrow(w, &p->split, o, wstride)[wq];
            }
        }
    }
    return acc;
}

/* What a pass does with the sums: store them (acc), track max |sum|, or write the mantissas. */
enum { SINK_ACC, SINK_MAX, SINK_WRITE };

/* One pass over every input element (n, h, x, c) in order; returns max |sum| (SINK_MAX). */
static uint32_t dx_pass(const mt_conv_train_params *p, const int16_t *gs, const int8_t *w, int sink,
                        int32_t *acc, int16_t *gx, int32_t s)
{
    const int32_t kh = p->kernel.h, kw = p->kernel.w, cin = p->in.c, cout = p->out.c;
    const int32_t ws = kh * kw * cin;
    /* weight segments: rows [0, r) at w, [r, Cout) at the split tail */
    const int32_t r = (p->split.tail != NULL) ? p->split.rows : cout;
    const int8_t *w_tail = (p->split.tail != NULL) ? p->split.tail : w + (size_t)r * (size_t)ws; /* row r */
    const int listed = (kh <= MT_DX_MAXK && kw <= MT_DX_MAXK);
    int32_t n, h, x, c, k, idx = 0;
    uint32_t amax = 0u;
    taps_t t;
    t.n = 0;
    for (n = 0; n < p->in.n; ++n) {
        const int16_t *gs_n = gs + (size_t)n * (size_t)p->out.h * (size_t)p->out.w * (size_t)cout;
        for (h = 0; h < p->in.h; ++h) {
            int32_t ki[MT_DX_MAXK], oi[MT_DX_MAXK], ni = 0;
            if (listed) {
                ni = axis_taps(h, p->padding.top, p->dilation.h, p->stride.h, kh, p->out.h, ki, oi);
            }
            for (x = 0; x < p->in.w; ++x) {
                int32_t kj[MT_DX_MAXK], oj[MT_DX_MAXK], nj, a[4], i, j;
                if (listed) {
                    nj = axis_taps(x, p->padding.left, p->dilation.w, p->stride.w, kw, p->out.w, kj, oj);
                    t.n = 0;
                    for (i = 0; i < ni; ++i) {
                        for (j = 0; j < nj; ++j) {
                            t.g[t.n] = gs_n + ((size_t)oi[i] * (size_t)p->out.w + (size_t)oj[j]) * (size_t)cout;
                            t.wo[t.n] = (ki[i] * kw + kj[j]) * cin;
                            ++t.n;
                        }
                    }
                }
                for (c = 0; c < cin; c += 4) {
                    const int32_t cnt = (cin - c < 4) ? cin - c : 4;
                    a[0] = a[1] = a[2] = a[3] = 0;
                    if (!listed) {
                        for (k = 0; k < cnt; ++k) {
                            a[k] = dx_acc(p, gs, w, n, h, x, c + k);
                        }
                    } else if (cnt == 4) {
                        dx4(&t, w, ws, 0, r, c, a);
                        if (r < cout) {
                            dx4(&t, w_tail, ws, r, cout, c, a);
                        }
                    } else {
                        for (k = 0; k < cnt; ++k) {
                            a[k] = dx1(&t, w_tail, ws, r, cout, c + k, dx1(&t, w, ws, 0, r, c + k, 0));
                        }
                    }
                    for (k = 0; k < cnt; ++k, ++idx) {
                        if (sink == SINK_ACC) {
                            acc[idx] = a[k];
                        } else if (sink == SINK_MAX) {
                            const uint32_t v = mt_uabs32(a[k]);
                            amax = (v > amax) ? v : amax;
                        } else {
                            gx[idx] = (int16_t)mt_rshift_round32(a[k], s);
                        }
                    }
                }
            }
        }
    }
    return amax;
}

/* Scatter form into the int32 acc scratch (one accumulator per input element): each nonzero
 * gradient of an output pixel times every valid tap's weight row, added over the input channels
 * (contiguous in x and w). Sums the same terms as the gather form; it wins when most gradients
 * are zero (ReLU-masked), skipping a whole Cin*KH*KW row per zero. */
static void axpy_s8(int32_t *a, int32_t gv, const int8_t *wr, int32_t len)
{
    int32_t c;
    for (c = 0; c < len; ++c) {
        a[c] += gv * (int32_t)wr[c];
    }
}

static void dx_scatter(const mt_conv_train_params *p, const int16_t *gs, const int8_t *w, int32_t *acc)
{
    const int32_t kh = p->kernel.h, kw = p->kernel.w, cin = p->in.c, cout = p->out.c;
    const int32_t dh = p->dilation.h, dw = p->dilation.w;
    const size_t wstride = (size_t)kh * (size_t)kw * (size_t)cin;
    const int32_t xsize = p->in.n * p->in.h * p->in.w * cin;
    int32_t i, n, oh, ow, ky, kx, o;
    for (i = 0; i + 4 <= xsize; i += 4) { /* (not a memset call: -nostdlib images) */
        acc[i] = 0;
        acc[i + 1] = 0;
        acc[i + 2] = 0;
        acc[i + 3] = 0;
        MT_KEEP_LOOP();
    }
    for (; i < xsize; ++i) {
        acc[i] = 0;
        MT_KEEP_LOOP();
    }
    for (n = 0; n < p->out.n; ++n) {
        for (oh = 0; oh < p->out.h; ++oh) {
            const int32_t y0 = oh * p->stride.h - p->padding.top;
            const int32_t ky_lo = (y0 >= 0) ? 0 : (-y0 + dh - 1) / dh;
            const int32_t ky_top = (p->in.h - y0 + dh - 1) / dh;
            const int32_t ky_hi = (ky_top < kh) ? ky_top : kh;
            for (ow = 0; ow < p->out.w; ++ow) {
                const int32_t x0 = ow * p->stride.w - p->padding.left;
                const int32_t kx_lo = (x0 >= 0) ? 0 : (-x0 + dw - 1) / dw;
                const int32_t kx_top = (p->in.w - x0 + dw - 1) / dw;
                const int32_t kx_hi = (kx_top < kw) ? kx_top : kw;
                const int16_t *gp = gs + (((size_t)n * (size_t)p->out.h + (size_t)oh) * (size_t)p->out.w +
                                          (size_t)ow) * (size_t)cout;
                for (o = 0; o < cout; ++o) {
                    const int32_t gv = gp[o];
                    const int8_t *wo;
                    if (gv == 0) {
                        continue;
                    }
                    wo = mt_wrow(w, &p->split, o, wstride);
                    for (ky = ky_lo; ky < ky_hi; ++ky) {
                        const int32_t h = y0 + ky * dh;
                        int32_t *a_row = acc + ((size_t)n * (size_t)p->in.h + (size_t)h) * (size_t)p->in.w * (size_t)cin;
                        const int8_t *w_row = wo + (size_t)ky * (size_t)kw * (size_t)cin;
                        if (dw == 1) { /* the valid taps of this kernel row: one contiguous run */
                            axpy_s8(a_row + (size_t)(x0 + kx_lo) * (size_t)cin, gv, w_row + (size_t)kx_lo * (size_t)cin,
                                    (kx_hi - kx_lo) * cin);
                            continue;
                        }
                        for (kx = kx_lo; kx < kx_hi; ++kx) {
                            axpy_s8(a_row + (size_t)(x0 + kx * dw) * (size_t)cin, gv, w_row + (size_t)kx * (size_t)cin,
                                    cin);
                        }
                    }
                }
            }
        }
    }
}

/* Nonzero entries of gs, of size */
static int32_t count_nonzero(const int16_t *gs, int32_t size)
{
    int32_t i, nz = 0;
    for (i = 0; i < size; ++i) {
        nz += (gs[i] != 0) ? 1 : 0;
    }
    return nz;
}

mt_status mt_conv2d_bwd_input_s16(const mt_conv_train_params *p, int16_t *gs, int32_t *acc,
                                  const int16_t *g, int32_t g_e, const int8_t *w, int16_t *gx,
                                  int32_t *gx_e)
{
    const int32_t gsize = p->out.n * p->out.h * p->out.w * p->out.c;
    const int32_t xsize = p->in.n * p->in.h * p->in.w * p->in.c;
    int32_t gs_e, s;
    if (p->in.n != p->out.n || p->kernel.h < 1 || p->kernel.w < 1 || p->stride.h < 1 ||
        p->stride.w < 1 || p->dilation.h < 1 || p->dilation.w < 1 || gsize < 1 || xsize < 1) {
        return MT_ERR_ARG;
    }
    mt_grad_mul_q31_s16(gsize, p->out.c, g, g_e, p->w_mult, p->w_shift, gs, &gs_e);
    mt_grad_headroom_s16(p->w_bits, p->out.c * p->kernel.h * p->kernel.w, gsize, gs, &gs_e);
    if (acc != NULL) {
        /* mostly zero gradients (at most half nonzero): the scatter form skips them wholesale */
        if (2 * count_nonzero(gs, gsize) <= gsize) {
            dx_scatter(p, gs, w, acc);
        } else {
            (void)dx_pass(p, gs, w, SINK_ACC, acc, NULL, 0);
        }
        return mt_grad_renormalize_s32(xsize, acc, gs_e, gx, gx_e);
    }
    s = mt_grad_renorm_shift(dx_pass(p, gs, w, SINK_MAX, NULL, NULL, 0));
    (void)dx_pass(p, gs, w, SINK_WRITE, NULL, gx, s);
    *gx_e = gs_e + s;
    return MT_OK;
}
