/**
 * @file mt_fully_connected_bwd_input_s16_dsp.c
 * @brief fully_connected input gradient with the Arm DSP extension; same results as
 *        mt_fully_connected_bwd_input_s16 (same gs preparation, same passes).
 *
 * gx[n,k] = sum_o gs[n,o] * (w[o,k] - w_zp) reduces over the output channels: SMLAD takes two of
 * them at a time, {gs[n,o], gs[n,o+1]} (one word load) . {w'[o,k], w'[o+1,k]}. Four k are done
 * together: one word load per weight row (split rows via mt_wrow), SXTAB16 (w - w_zp) into
 * {k0, k2} / {k1, k3} lanes, PKHBT/PKHTB pair the two rows, four SMLAD. The headroom pre-shift of
 * gs bounds every partial sum in any order, so the sums are the portable kernel's.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

/* a[j] = sum_o gs_n[o] * (w[o, k0 + j] - w_zp), j < cnt = min(4, Cin - k0); returns cnt */
static int32_t dx_accs(const mt_fc_train_params *p, const int16_t *gs_n, const int8_t *w,
                       int32_t k0, int32_t a[4])
{
    const int32_t cout = p->out_features, cin = p->in_features;
    const uint32_t woff2 = mt_dup16(-p->w_zp);
    int32_t o = 0, j, cnt = cin - k0;
    if (cnt >= 4) {
        int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (; o + 2 <= cout; o += 2) {
            const uint32_t gg = mt_read_s16x2(gs_n + o);
            const uint32_t ua = mt_read_s8x4(mt_wrow(w, &p->split, o, (size_t)cin) + k0);
            const uint32_t ub = mt_read_s8x4(mt_wrow(w, &p->split, o + 1, (size_t)cin) + k0);
            const uint32_t a02 = mt_sxtab16(woff2, ua), a13 = mt_sxtab16_ror8(woff2, ua);
            const uint32_t b02 = mt_sxtab16(woff2, ub), b13 = mt_sxtab16_ror8(woff2, ub);
            s0 = mt_smlad(gg, mt_pkhbt(a02, b02), s0);
            s1 = mt_smlad(gg, mt_pkhbt(a13, b13), s1);
            s2 = mt_smlad(gg, mt_pkhtb(b02, a02), s2);
            s3 = mt_smlad(gg, mt_pkhtb(b13, a13), s3);
        }
        if (o < cout) {
            const int8_t *r = mt_wrow(w, &p->split, o, (size_t)cin) + k0;
            const int32_t gv = gs_n[o];
            s0 = mt_wrap_add32(s0, gv * ((int32_t)r[0] - p->w_zp));
            s1 = mt_wrap_add32(s1, gv * ((int32_t)r[1] - p->w_zp));
            s2 = mt_wrap_add32(s2, gv * ((int32_t)r[2] - p->w_zp));
            s3 = mt_wrap_add32(s3, gv * ((int32_t)r[3] - p->w_zp));
        }
        a[0] = s0;
        a[1] = s1;
        a[2] = s2;
        a[3] = s3;
        return 4;
    }
    for (j = 0; j < cnt; ++j) { /* Cin % 4 tail: SMLAD over output-channel pairs */
        const int32_t k = k0 + j;
        int32_t s = 0;
        for (o = 0; o + 2 <= cout; o += 2) {
            const int32_t wa = (int32_t)mt_wrow(w, &p->split, o, (size_t)cin)[k] - p->w_zp;
            const int32_t wb = (int32_t)mt_wrow(w, &p->split, o + 1, (size_t)cin)[k] - p->w_zp;
            s = mt_smlad(mt_read_s16x2(gs_n + o), mt_pack16(wa, wb), s);
        }
        if (o < cout) {
            s = mt_wrap_add32(s, (int32_t)gs_n[o] *
                                     ((int32_t)mt_wrow(w, &p->split, o, (size_t)cin)[k] - p->w_zp));
        }
        a[j] = s;
    }
    return cnt;
}

mt_status mt_fully_connected_bwd_input_s16_dsp(const mt_fc_train_params *p, int16_t *gs,
                                               int32_t *acc, const int16_t *g, int32_t g_e,
                                               const int8_t *w, int16_t *gx, int32_t *gx_e)
{
    const int32_t nb = p->batch, cin = p->in_features, cout = p->out_features;
    int32_t n, k, j, cnt, gs_e, s;
    int32_t blk[4];
    uint32_t amax = 0u;
    if (nb < 1 || cin < 1 || cout < 1) {
        return MT_ERR_ARG;
    }
    mt_grad_mul_q31_s16(nb * cout, cout, g, g_e, p->w_mult, p->w_shift, gs, &gs_e);
    mt_grad_headroom_s16(p->w_bits, cout, nb * cout, gs, &gs_e);
    if (acc != NULL) {
        for (n = 0; n < nb; ++n) {
            for (k = 0; k < cin; k += cnt) {
                cnt = dx_accs(p, gs + (size_t)n * (size_t)cout, w, k, blk);
                for (j = 0; j < cnt; ++j) {
                    acc[(size_t)n * (size_t)cin + (size_t)(k + j)] = blk[j];
                }
            }
        }
        return mt_grad_renormalize_s32(nb * cin, acc, gs_e, gx, gx_e);
    }
    for (n = 0; n < nb; ++n) { /* pass 1: max |acc| */
        for (k = 0; k < cin; k += cnt) {
            cnt = dx_accs(p, gs + (size_t)n * (size_t)cout, w, k, blk);
            for (j = 0; j < cnt; ++j) {
                const uint32_t a = mt_uabs32(blk[j]);
                amax = (a > amax) ? a : amax;
            }
        }
    }
    s = mt_grad_renorm_shift(amax);
    for (n = 0; n < nb; ++n) { /* pass 2: recompute, write */
        for (k = 0; k < cin; k += cnt) {
            cnt = dx_accs(p, gs + (size_t)n * (size_t)cout, w, k, blk);
            for (j = 0; j < cnt; ++j) {
                gx[(size_t)n * (size_t)cin + (size_t)(k + j)] =
                    (int16_t)mt_rshift_round32(blk[j], s);
            }
        }
    }
    *gx_e = gs_e + s;
    return MT_OK;
}
