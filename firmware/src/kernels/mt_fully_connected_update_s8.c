/**
 * @file mt_fully_connected_update_s8.c
 * @brief fully_connected weight gradient of the first `rows` output channels fused with the SGD
 *        update; bit-exact with FullyConnected.backward_int8 position 1 (rows) followed by
 *        sgd_delta and Int8Trainer._apply. Two passes (whole-slice exponent), see the header.
 */
#include "mt_kernels_train.h"

size_t mt_fully_connected_update_s8_scratch_bytes(const mt_fc_train_params *p, int32_t rows)
{
    return (size_t)rows * (size_t)p->in_features * sizeof(int32_t);
}

/* acc[o,k] = sum_n RDBPOT(g[n,o], sh) * (x[n,k] - in_zp) */
static int32_t dw_dot(const mt_fc_train_params *p, const int16_t *g, const int8_t *x, int32_t sh,
                      int32_t o, int32_t k)
{
    int32_t n, acc = 0;
    for (n = 0; n < p->batch; ++n) {
        const int32_t gv = mt_rshift_round32(g[(size_t)n * (size_t)p->out_features + (size_t)o], sh);
        acc += gv * ((int32_t)x[(size_t)n * (size_t)p->in_features + (size_t)k] - p->in_zp);
    }
    return acc;
}

mt_status mt_fully_connected_update_s8(const mt_fc_train_params *p, const mt_sgd_params *u,
                                       mt_sgd_state *st, int32_t rows, int32_t *acc,
                                       const int16_t *g, int32_t g_e, const int8_t *x, int8_t *w,
                                       int16_t *grad, int32_t *grad_e)
{
    const int32_t cin = p->in_features, cout = p->out_features;
    const int update = (u->lr_mult != 0);
    uint32_t amax = 0u;
    int32_t n, o, k, sh, pmax = 0, nmin = 0;
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
        for (k = 0; k < cin; ++k) {
            const int32_t a = dw_dot(p, g, x, sh, o, k);
            if (acc != NULL) {
                acc[(size_t)o * (size_t)cin + (size_t)k] = a;
            }
            pmax = (a > pmax) ? a : pmax;
            nmin = (a < nmin) ? a : nmin;
        }
    }
    wn = mt_wgrad_norm_make(u, pmax, nmin, g_e + sh, p->x_mult, p->x_shift);
    for (o = 0; o < rows; ++o) { /* pass 2: one output-channel row at a time */
        for (k = 0; k < cin; ++k) {
            const int32_t i = o * cin + k;
            const int32_t a = (acc != NULL) ? acc[i] : dw_dot(p, g, x, sh, o, k);
            const int32_t m = mt_wgrad_mant(&wn, a, p->x_mult);
            if (grad != NULL) {
                grad[i] = (int16_t)m;
            }
            if (update) {
                w[i] = mt_sgd_apply_w8_elem(u, st, i, w[i], mt_sgd_delta_elem(u, &wn.q, m, o));
            }
        }
    }
    if (grad_e != NULL) {
        *grad_e = wn.e;
    }
    return MT_OK;
}
