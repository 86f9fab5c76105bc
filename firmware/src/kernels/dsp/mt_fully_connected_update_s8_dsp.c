/**
 * @file mt_fully_connected_update_s8_dsp.c
 * @brief fully_connected weight gradient fused with the SGD update, with the Arm DSP extension;
 *        same results as mt_fully_connected_update_s8 (same two passes, same update order).
 *
 * acc[o,k] = sum_n gr[n,o] * (x[n,k] - in_zp) reduces over the batch, so SMLAD takes two batch
 * rows at a time: {gr[n,o], gr[n+1,o]} . {x'[n,k], x'[n+1,k]}. Four k are done together: one word
 * load per batch row, SXTAB16 (x - in_zp) splits it into {k0, k2} / {k1, k3} lanes, PKHBT/PKHTB
 * pair the two rows, four SMLAD. |gr| <= 2^15 and |x'| <= 255 fit the int16 lanes; the headroom
 * shift bounds every partial sum in any order, so the sums are the portable kernel's.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

/* a[j] = sum_n RDBPOT(g[n,o], sh) * (x[n,k0+j] - in_zp), j = 0..3 (k0 + 4 <= Cin) */
static void dw_block4(const mt_fc_train_params *p, const int16_t *g, const int8_t *x, int32_t sh,
                      int32_t o, int32_t k0, int32_t a[4])
{
    const size_t cout = (size_t)p->out_features, cin = (size_t)p->in_features;
    const uint32_t xoff2 = mt_dup16(-p->in_zp);
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, n = 0;
    for (; n + 2 <= p->batch; n += 2) {
        const int16_t *gp = g + (size_t)n * cout + (size_t)o;
        const int8_t *xp = x + (size_t)n * cin + (size_t)k0;
        const uint32_t gg = mt_pack16(mt_rshift_round32(gp[0], sh), mt_rshift_round32(gp[cout], sh));
        const uint32_t xa = mt_read_s8x4(xp), xb = mt_read_s8x4(xp + cin);
        const uint32_t a02 = mt_sxtab16(xoff2, xa), a13 = mt_sxtab16_ror8(xoff2, xa);
        const uint32_t b02 = mt_sxtab16(xoff2, xb), b13 = mt_sxtab16_ror8(xoff2, xb);
        s0 = mt_smlad(gg, mt_pkhbt(a02, b02), s0);
        s1 = mt_smlad(gg, mt_pkhbt(a13, b13), s1);
        s2 = mt_smlad(gg, mt_pkhtb(b02, a02), s2);
        s3 = mt_smlad(gg, mt_pkhtb(b13, a13), s3);
    }
    if (n < p->batch) {
        const int8_t *xp = x + (size_t)n * cin + (size_t)k0;
        const int32_t gv = mt_rshift_round32(g[(size_t)n * cout + (size_t)o], sh);
        s0 = mt_wrap_add32(s0, gv * ((int32_t)xp[0] - p->in_zp));
        s1 = mt_wrap_add32(s1, gv * ((int32_t)xp[1] - p->in_zp));
        s2 = mt_wrap_add32(s2, gv * ((int32_t)xp[2] - p->in_zp));
        s3 = mt_wrap_add32(s3, gv * ((int32_t)xp[3] - p->in_zp));
    }
    a[0] = s0;
    a[1] = s1;
    a[2] = s2;
    a[3] = s3;
}

/* one accumulator (the Cin % 4 tail), SMLAD over batch pairs */
static int32_t dw_dot(const mt_fc_train_params *p, const int16_t *g, const int8_t *x, int32_t sh,
                      int32_t o, int32_t k)
{
    const size_t cout = (size_t)p->out_features, cin = (size_t)p->in_features;
    int32_t acc = 0, n = 0;
    for (; n + 2 <= p->batch; n += 2) {
        const int16_t *gp = g + (size_t)n * cout + (size_t)o;
        const int8_t *xp = x + (size_t)n * cin + (size_t)k;
        acc = mt_smlad(mt_pack16(mt_rshift_round32(gp[0], sh), mt_rshift_round32(gp[cout], sh)),
                       mt_pack16((int32_t)xp[0] - p->in_zp, (int32_t)xp[cin] - p->in_zp), acc);
    }
    if (n < p->batch) {
        acc = mt_wrap_add32(acc, mt_rshift_round32(g[(size_t)n * cout + (size_t)o], sh) *
                                     ((int32_t)x[(size_t)n * cin + (size_t)k] - p->in_zp));
    }
    return acc;
}

/* a[0..cnt) = accumulators (o, k0 ..), cnt = min(4, Cin - k0) */
static int32_t dw_accs(const mt_fc_train_params *p, const int16_t *g, const int8_t *x, int32_t sh,
                       int32_t o, int32_t k0, int32_t a[4])
{
    int32_t j, cnt = p->in_features - k0;
    if (cnt >= 4) {
        dw_block4(p, g, x, sh, o, k0, a);
        return 4;
    }
    for (j = 0; j < cnt; ++j) {
        a[j] = dw_dot(p, g, x, sh, o, k0 + j);
    }
    return cnt;
}

mt_status mt_fully_connected_update_s8_dsp(const mt_fc_train_params *p, const mt_sgd_params *u,
                                           mt_sgd_state *st, int32_t rows, int32_t *acc,
                                           const int16_t *g, int32_t g_e, const int8_t *x,
                                           int8_t *w, int16_t *grad, int32_t *grad_e)
{
    const int32_t cin = p->in_features, cout = p->out_features;
    const int update = (u->lr_mult != 0);
    uint32_t amax = 0u;
    int32_t n, o, k, j, cnt, sh, pmax = 0, nmin = 0;
    int32_t blk[4];
    mt_wgrad_norm wn;
    if (p->batch < 1 || cin < 1 || cout < 1 || rows < 1 || rows > cout) {
        return MT_ERR_ARG;
    }
    if (update && st->kind != MT_APPLY_MASTER && st->kind != MT_APPLY_STOCHASTIC) {
        return MT_ERR_ARG;
    }
    if (!update && grad == NULL) {
        return MT_OK;
    }
    for (n = 0; n < p->batch; ++n) { /* headroom of g[:, :rows] */
        for (o = 0; o < rows; ++o) {
            const uint32_t a = mt_uabs32(g[(size_t)n * (size_t)cout + (size_t)o]);
            amax = (a > amax) ? a : amax;
        }
    }
    sh = mt_grad_headroom_shift(amax, p->x_bits, p->batch);
    for (o = 0; o < rows; ++o) { /* pass 1: extremes of the accumulators */
        for (k = 0; k < cin; k += cnt) {
            cnt = dw_accs(p, g, x, sh, o, k, blk);
            for (j = 0; j < cnt; ++j) {
                const int32_t a = blk[j];
                if (acc != NULL) {
                    acc[(size_t)o * (size_t)cin + (size_t)(k + j)] = a;
                }
                pmax = (a > pmax) ? a : pmax;
                nmin = (a < nmin) ? a : nmin;
            }
        }
    }
    wn = mt_wgrad_norm_make(u, pmax, nmin, g_e + sh, p->x_mult, p->x_shift);
    for (o = 0; o < rows; ++o) { /* pass 2: one output-channel row at a time, k in order */
        for (k = 0; k < cin; k += cnt) {
            if (acc != NULL) {
                cnt = (cin - k < 4) ? (cin - k) : 4;
                for (j = 0; j < cnt; ++j) {
                    blk[j] = acc[(size_t)o * (size_t)cin + (size_t)(k + j)];
                }
            } else {
                cnt = dw_accs(p, g, x, sh, o, k, blk);
            }
            for (j = 0; j < cnt; ++j) {
                const int32_t i = o * cin + k + j;
                const int32_t m = mt_wgrad_mant(&wn, blk[j], p->x_mult);
                if (grad != NULL) {
                    grad[i] = (int16_t)m;
                }
                if (update) {
                    w[i] = mt_sgd_apply_w8_elem(u, st, i, w[i], mt_sgd_delta_elem(u, &wn.q, m, o));
                }
            }
        }
    }
    if (grad_e != NULL) {
        *grad_e = wn.e;
    }
    return MT_OK;
}
