/**
 * @file mt_fully_connected_update_s8_dsp.c
 * @brief fully_connected weight gradient fused with the SGD update, with the Arm DSP extension;
 *        same results as mt_fully_connected_update_s8 (same two passes, same update order, the
 *        same per-element chain mt_wupd_row; batch 1 has no MACs and is the portable path).
 *
 * acc[o,k] = sum_n gr[n,o] * (x[n,k] - in_zp) reduces over the batch, so SMLAD takes two batch
 * rows at a time: {gr[n,o], gr[n+1,o]} . {x'[n,k], x'[n+1,k]}. Four k are done together: one word
 * load per batch row, SXTAB16 (x - in_zp) splits it into {k0, k2} / {k1, k3} lanes, PKHBT/PKHTB
 * pair the two rows, four SMLAD. |gr| <= 2^15 and |x'| <= 255 fit the int16 lanes; the headroom
 * shift bounds every partial sum in any order, so the sums are the portable kernel's.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"
#define MT_WG_DRIVER 1 /* this file supplies mt_wgrad_gemm.h's micro-kernel and packer */
#include "mt_wgrad_gemm.h"
#include "mt_wgrad_gemm_dsp.h"

/* the GEMM of mt_wgrad_gemm.h with SMLAD (batch > 1 with the scratch) */
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

/* RDBPOT(m, 8) of two int16 lanes in [-32512, 32512]: m + 128 - [m < 0] in each lane (SADD16 /
 * SSUB16, no lane leaves int16), whose high byte is the result: bytes {1, 3} of the word */
static inline uint32_t round8x2(uint32_t m)
{
    const uint32_t neg = (m >> 15) & 0x00010001u;
#if MT_DSP_NATIVE
    uint32_t r;
    __asm__("sadd16 %0, %1, %2\n\tssub16 %0, %0, %3" : "=&r"(r) : "r"(m), "r"(0x00800080u), "r"(neg) : "cc");
    return r;
#else
    return mt_pack16(mt_lane16(m, 0) + 128 - (int32_t)(neg & 1u), mt_lane16(m, 1) + 128 - (int32_t)(neg >> 16));
#endif
}

/* A channel whose every delta is 0, master copy without momentum: m = clamp(m, lo, hi),
 * w = RDBPOT(m, 8), two masters per word, four weights per store. */
static void zero_row_master(const mt_wupd *c, int32_t row, int32_t idx, int32_t n, int8_t *w)
{
    const uint32_t lo2 = mt_dup16(c->mlo), hi2 = mt_dup16(c->mhi);
    int16_t *ms = c->st->master + idx;
    int32_t k = 0;
    for (; k + 4 <= n; k += 4) {
        const uint32_t m01 = mt_min16x2(mt_max16x2(mt_read_s16x2(ms + k), lo2), hi2);
        const uint32_t m23 = mt_min16x2(mt_max16x2(mt_read_s16x2(ms + k + 2), lo2), hi2);
        const uint32_t r01 = (round8x2(m01) >> 8) & 0x00FF00FFu, r23 = (round8x2(m23) >> 8) & 0x00FF00FFu;
        const uint32_t v = mt_pkhbt(r01, r23) | (mt_pkhtb(r23, r01) << 8);
        mt_write_s16x2(ms + k, m01);
        mt_write_s16x2(ms + k + 2, m23);
#if MT_DSP_LOAD_MEMCPY
        __builtin_memcpy(w + k, &v, sizeof v);
#else
        w[k] = (int8_t)mt_sext8u(v, 0);
        w[k + 1] = (int8_t)mt_sext8u(v, 1);
        w[k + 2] = (int8_t)mt_sext8u(v, 2);
        w[k + 3] = (int8_t)mt_sext8u(v, 3);
#endif
    }
    if (k < n) {
        mt_wupd_row(c, row, idx + k, n - k, NULL, w + k);
    }
}

mt_status mt_fully_connected_update_s8_dsp(const mt_fc_train_params *p, const mt_sgd_params *u,
                                           mt_sgd_state *st, int32_t rows, int32_t *acc,
                                           const int16_t *g, int32_t g_e, const int8_t *x,
                                           int8_t *w, int16_t *grad, int32_t *grad_e)
{
    const int32_t cin = p->in_features, cout = p->out_features;
    const int update = (u->lr_mult != 0);
    uint32_t amax = 0u;
    int32_t o, k, j, cnt, sh, pmax = 0, nmin = 0;
    int32_t buf[32];
    mt_conv_train_params cp;
    mt_wupd c;
    if (p->batch < 1 || cin < 1 || cout < 1 || rows < 1 || rows > cout) {
        return MT_ERR_ARG;
    }
    if (update && st->kind != MT_APPLY_MASTER && st->kind != MT_APPLY_STOCHASTIC) {
        return MT_ERR_ARG;
    }
    if (!update && grad == NULL) {
        return MT_OK;
    }
    amax = mt_grad_amax16_dsp(g, p->batch, cout, rows); /* headroom of g[:, :rows] */
    sh = mt_grad_headroom_shift(amax, p->x_bits, p->batch);
    if (p->batch == 1) {
        /* no MACs: as the portable kernel (extremes of x, products formed in pass 2) */
        int32_t xlo = 127, xhi = -128;
        for (k = 0; k < cin; ++k) {
            xlo = (x[k] < xlo) ? x[k] : xlo;
            xhi = (x[k] > xhi) ? x[k] : xhi;
        }
        xlo -= p->in_zp;
        xhi -= p->in_zp;
        for (o = 0; o < rows; ++o) {
            const int32_t gq = mt_rshift_round32(g[o], sh);
            const int32_t a = mt_wrap32((uint32_t)gq * (uint32_t)xhi);
            const int32_t b = mt_wrap32((uint32_t)gq * (uint32_t)xlo);
            const int32_t hi = (a > b) ? a : b, lo = (a > b) ? b : a;
            pmax = (hi > pmax) ? hi : pmax;
            nmin = (lo < nmin) ? lo : nmin;
        }
        mt_wupd_init(&c, u, st, pmax, nmin, g_e + sh, p->x_mult, p->x_shift, grad);
        for (o = 0; o < rows; ++o) {
            const int32_t gq = mt_rshift_round32(g[o], sh);
            int8_t *wr = w + (size_t)o * (size_t)cin;
            if (gq == 0 && c.grad == NULL && !c.stoch && !c.mom &&
                (c.mode == MT_WUPD_FAST || c.mode == MT_WUPD_ZERO)) {
                zero_row_master(&c, o, o * cin, cin, wr);
            } else if (gq == 0) {
                mt_wupd_row(&c, o, o * cin, cin, NULL, wr);
            } else {
                mt_wupd_row_outer(&c, o, o * cin, cin, gq, x, p->in_zp, wr);
            }
        }
        if (grad_e != NULL) {
            *grad_e = c.wn.e;
        }
        return MT_OK;
    }
    mt_wg_fc_as_conv(p, &cp);
    if (acc != NULL) { /* pass 1 as a GEMM into the scratch, then the extremes */
        mt_wg_pass1(&cp, g, x, sh, rows, acc);
        for (k = 0; k < rows * cin; ++k) {
            pmax = (acc[k] > pmax) ? acc[k] : pmax;
            nmin = (acc[k] < nmin) ? acc[k] : nmin;
        }
    } else { /* without scratch: the same sums, a chunk of one row at a time */
        for (o = 0; o < rows; ++o) {
            for (k = 0; k < cin; k += cnt) {
                cnt = (cin - k < 32) ? (cin - k) : 32;
                mt_wg_accs(&cp, g, x, sh, o, 1, k, cnt, buf, cnt);
                for (j = 0; j < cnt; ++j) {
                    pmax = (buf[j] > pmax) ? buf[j] : pmax;
                    nmin = (buf[j] < nmin) ? buf[j] : nmin;
                }
            }
        }
    }
    mt_wupd_init(&c, u, st, pmax, nmin, g_e + sh, p->x_mult, p->x_shift, grad);
    for (o = 0; o < rows; ++o) { /* pass 2: one output-channel row at a time, k in order */
        int8_t *wr = w + (size_t)o * (size_t)cin;
        if (acc != NULL) {
            mt_wupd_row(&c, o, o * cin, cin, acc + (size_t)o * (size_t)cin, wr);
            continue;
        }
        for (k = 0; k < cin; k += cnt) {
            cnt = (cin - k < 32) ? (cin - k) : 32;
            mt_wg_accs(&cp, g, x, sh, o, 1, k, cnt, buf, cnt);
            mt_wupd_row(&c, o, o * cin + k, cnt, buf, wr + k);
        }
    }
    if (grad_e != NULL) {
        *grad_e = c.wn.e;
    }
    return MT_OK;
}
