/**
 * @file mt_conv2d_update_s8.c
 * @brief conv2d weight gradient of output channels [0, rows) fused with the SGD update;
 *        bit-exact with Conv2D.backward_int8 position 1 (rows) followed by sgd_delta and
 *        Int8Trainer._apply. Pass 1 finds the accumulator extremes of the whole slice (the
 *        gradient has one exponent), pass 2 (recomputes or) reads the optional scratch and updates
 *        one output-channel row at a time (mt_wupd_row: the fused per-element chain).
 *
 * Pass 1 is a small GEMM over the output pixels (mt_wgrad_gemm.h): the rounded gradient and the
 * im2col'd input (x - in_zp, 0 in the padding) of a chunk of pixels are packed once as int16
 * with the pixel index fastest, then 2 x 2 tiles of (output channel, tap) accumulate in
 * registers. Without the scratch, the same sums are formed a chunk of one row at a time, twice.
 */
#include "mt_kernels_train.h"
#define MT_WG_DRIVER 1 /* this file supplies mt_wgrad_gemm.h's micro-kernel and packer */
#include "mt_wgrad_gemm.h"

#define MT_CU_CHUNK 32

/* the GEMM of mt_wgrad_gemm.h, portable */
static void mt_wg_mac(const int16_t *gT, const int16_t *xT, int32_t nr, int32_t nt, int32_t npair,
                      int32_t *acc, int32_t stride, int32_t first)
{
    mt_wg_mac_port(gT, xT, nr, nt, npair, acc, stride, first);
}

static void mt_wg_packx(const mt_wg_geom *q, int32_t p0, int32_t np, int32_t t0, int32_t nt,
                        int16_t *xT)
{
    mt_wg_packx_port(q, p0, np, t0, nt, xT);
}

void mt_wg_accs_port(const mt_conv_train_params *p, const int16_t *g, const int8_t *x, int32_t sh,
                     int32_t ra, int32_t nra, int32_t ta, int32_t nta, int32_t *out, int32_t stride)
{
    mt_wg_accs(p, g, x, sh, ra, nra, ta, nta, out, stride);
}

size_t mt_conv2d_update_s8_scratch_bytes(const mt_conv_train_params *p, int32_t rows)
{
    return (size_t)rows * (size_t)p->kernel.h * (size_t)p->kernel.w * (size_t)p->in.c *
           sizeof(int32_t);
}

mt_status mt_conv2d_update_s8(const mt_conv_train_params *p, const mt_sgd_params *u,
                              mt_sgd_state *st, int32_t rows, int32_t *acc, const int16_t *g,
                              int32_t g_e, const int8_t *x, int8_t *w, int16_t *grad,
                              int32_t *grad_e)
{
    const int32_t kh = p->kernel.h, kw = p->kernel.w, cin = p->in.c, cout = p->out.c;
    const int32_t pixels = p->out.n * p->out.h * p->out.w;
    const int32_t kk = kh * kw * cin;
    const int update = (u->lr_mult != 0);
    uint32_t amax;
    int32_t o, k, j, cnt, sh, pmax = 0, nmin = 0;
    int32_t buf[MT_CU_CHUNK];
    mt_wupd c;
    if (p->in.n != p->out.n || kh < 1 || kw < 1 || pixels < 1 || cin < 1 || rows < 1 ||
        rows > cout) {
        return MT_ERR_ARG;
    }
    if (update && st->kind != MT_APPLY_MASTER && st->kind != MT_APPLY_STOCHASTIC) {
        return MT_ERR_ARG;
    }
    if (!update && grad == NULL) {
        return MT_OK;
    }
    amax = mt_grad_or_abs16(g, pixels, cout, rows); /* headroom of g[..., :rows] */
    sh = mt_grad_headroom_shift(amax, p->x_bits, pixels);
    if (acc != NULL) { /* pass 1 as a GEMM into the scratch, then the extremes */
        mt_wg_accs_port(p, g, x, sh, 0, rows, 0, kk, acc, kk);
        for (k = 0; k < rows * kk; ++k) {
            pmax = (acc[k] > pmax) ? acc[k] : pmax;
            nmin = (acc[k] < nmin) ? acc[k] : nmin;
        }
    } else { /* pass 1 without scratch: the same sums, a chunk of one row at a time */
        for (o = 0; o < rows; ++o) {
            for (k = 0; k < kk; k += cnt) {
                cnt = (kk - k < MT_CU_CHUNK) ? (kk - k) : MT_CU_CHUNK;
                mt_wg_accs_port(p, g, x, sh, o, 1, k, cnt, buf, cnt);
                for (j = 0; j < cnt; ++j) {
                    pmax = (buf[j] > pmax) ? buf[j] : pmax;
                    nmin = (buf[j] < nmin) ? buf[j] : nmin;
                }
            }
        }
    }
    mt_wupd_init(&c, u, st, pmax, nmin, g_e + sh, p->x_mult, p->x_shift, grad);
    for (o = 0; o < rows; ++o) { /* pass 2: one output-channel row at a time */
        int8_t *wr = w + (size_t)o * (size_t)kk;
        if (acc != NULL) {
            mt_wupd_row(&c, o, o * kk, kk, acc + (size_t)o * (size_t)kk, wr);
            continue;
        }
        for (k = 0; k < kk; k += cnt) { /* (recomputed) */
            cnt = (kk - k < MT_CU_CHUNK) ? (kk - k) : MT_CU_CHUNK;
            mt_wg_accs_port(p, g, x, sh, o, 1, k, cnt, buf, cnt);
            mt_wupd_row(&c, o, o * kk + k, cnt, buf, wr + k);
        }
    }
    if (grad_e != NULL) {
        *grad_e = c.wn.e;
    }
    return MT_OK;
}
