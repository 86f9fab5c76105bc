/**
 * @file mt_conv2d_update_s8_dsp.c
 * @brief conv2d weight gradient fused with the SGD update, with the Arm DSP extension; same
 *        results as mt_conv2d_update_s8 (same pass 1 GEMM over mt_wgrad_gemm.h's buffers, same
 *        per-element chain mt_wupd_row in pass 2).
 *
 * The GEMM's buffers hold int16 values with the pixel index fastest, so a word load is a pixel
 * pair and SMLAD takes two pixels' products at once: acc[r, t] += {g[r, q], g[r, q+1]} .
 * {x[t, q], x[t, q+1]}, a 2 x 2 tile of (output channel, tap) per 4 loads. The x buffer is packed
 * two pixels and four channels at a time: one word per pixel, SXTAB16 (x - in_zp into int16
 * lanes {c0, c2} / {c1, c3}), PKHBT/PKHTB pairing the two pixels, one word store per tap.
 * |g| <= 2^15 and |x - in_zp| <= 255 fit the lanes; the sums are the portable kernel's (any order,
 * within int32 by the headroom shift). Without the accumulator scratch: the portable kernel.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"
#define MT_WG_DRIVER 1 /* this file supplies mt_wgrad_gemm.h's micro-kernel and packer */
#include "mt_wgrad_gemm.h"
#include "mt_wgrad_gemm_dsp.h"

/* the GEMM of mt_wgrad_gemm.h with SMLAD (mt_wgrad_gemm_dsp.h) */
static void mt_wg_mac(const int16_t *gT, const int16_t *xT, int32_t nr, int32_t nt, int32_t npair,
                      int32_t *acc, int32_t stride, int32_t first)
{
    mt_wg_mac_dsp(gT, xT, nr, nt, npair, acc, stride, first);
}

static void mt_wg_packx(const mt_wg_geom *q, int32_t p0, int32_t np, int32_t t0, int32_t nt,
                        int16_t *xT)
{
    mt_wg_packx_dsp(q, p0, np, t0, nt, xT);
}

mt_status mt_conv2d_update_s8_dsp(const mt_conv_train_params *p, const mt_sgd_params *u,
                                  mt_sgd_state *st, int32_t rows, int32_t *acc, const int16_t *g,
                                  int32_t g_e, const int8_t *x, int8_t *w, int16_t *grad,
                                  int32_t *grad_e)
{
    const int32_t kh = p->kernel.h, kw = p->kernel.w, cin = p->in.c, cout = p->out.c;
    const int32_t pixels = p->out.n * p->out.h * p->out.w;
    const int32_t kk = kh * kw * cin;
    const int update = (u->lr_mult != 0);
    uint32_t amax = 0u;
    int32_t o, k, sh, pmax = 0, nmin = 0;
    mt_wupd c;
    if (acc == NULL || p->in.n != p->out.n || kh < 1 || kw < 1 || pixels < 1 || cin < 1 ||
        rows < 1 || rows > cout || (update && st->kind != MT_APPLY_MASTER &&
                                    st->kind != MT_APPLY_STOCHASTIC) || (!update && grad == NULL)) {
        return mt_conv2d_update_s8(p, u, st, rows, acc, g, g_e, x, w, grad, grad_e);
    }
    amax = mt_grad_amax16_dsp(g, pixels, cout, rows); /* headroom of g[..., :rows] */
    sh = mt_grad_headroom_shift(amax, p->x_bits, pixels);
    mt_wg_pass1(p, g, x, sh, rows, acc);
    for (k = 0; k < rows * kk; ++k) {
        pmax = (acc[k] > pmax) ? acc[k] : pmax;
        nmin = (acc[k] < nmin) ? acc[k] : nmin;
    }
    mt_wupd_init(&c, u, st, pmax, nmin, g_e + sh, p->x_mult, p->x_shift, grad);
    for (o = 0; o < rows; ++o) { /* pass 2: one output-channel row at a time */
        mt_wupd_row(&c, o, o * kk, kk, acc + (size_t)o * (size_t)kk, w + (size_t)o * (size_t)kk);
    }
    if (grad_e != NULL) {
        *grad_e = c.wn.e;
    }
    return MT_OK;
}
