/**
 * @file mt_fully_connected_bwd_input_s16.c
 * @brief fully_connected input gradient; bit-exact with FullyConnected.backward_int8 position 0:
 *        gs = headroom(scale_channels(g, w_mult, w_shift), w_bits, Cout),
 *        gx = renormalize(gs @ (w - w_zp)).
 */
#include "mt_kernels_train.h"

size_t mt_fully_connected_bwd_input_s16_scratch_bytes(const mt_fc_train_params *p, int gs_aliases_g,
                                                      int single_pass)
{
    size_t bytes = 0u;
    if (!gs_aliases_g) {
        bytes += (size_t)p->batch * (size_t)p->out_features * sizeof(int16_t);
        bytes = (bytes + 3u) & ~(size_t)3u;
    }
    if (single_pass) {
        bytes += (size_t)p->batch * (size_t)p->in_features * sizeof(int32_t);
    }
    return bytes;
}

static int32_t dx_dot(const mt_fc_train_params *p, const int16_t *gs_n, const int8_t *w, int32_t k)
{
    const int32_t cout = p->out_features, cin = p->in_features;
    int32_t o, acc = 0;
    for (o = 0; o < cout; ++o) {
        acc += (int32_t)gs_n[o] * ((int32_t)mt_wrow(w, &p->split, o, (size_t)cin)[k] - p->w_zp);
    }
    return acc;
}

mt_status mt_fully_connected_bwd_input_s16(const mt_fc_train_params *p, int16_t *gs, int32_t *acc,
                                           const int16_t *g, int32_t g_e, const int8_t *w,
                                           int16_t *gx, int32_t *gx_e)
{
    const int32_t nb = p->batch, cin = p->in_features, cout = p->out_features;
    int32_t n, k, gs_e, s;
    uint32_t amax = 0u;
    if (nb < 1 || cin < 1 || cout < 1) {
        return MT_ERR_ARG;
    }
    mt_grad_mul_q31_s16(nb * cout, cout, g, g_e, p->w_mult, p->w_shift, gs, &gs_e);
    mt_grad_headroom_s16(p->w_bits, cout, nb * cout, gs, &gs_e);
    if (acc != NULL) { /* scatter: acc[n, :] += gs[n, o] * (w[o, :] - w_zp), rows contiguous */
        int32_t o;
        for (k = 0; k < nb * cin; ++k) {
            acc[k] = 0;
        }
        for (n = 0; n < nb; ++n) {
            int32_t *a = acc + (size_t)n * (size_t)cin;
            for (o = 0; o < cout; ++o) {
                const int32_t gv = gs[(size_t)n * (size_t)cout + (size_t)o];
                const int8_t *row;
                if (gv == 0) {
                    continue;
                }
                row = mt_wrow(w, &p->split, o, (size_t)cin);
                for (k = 0; k < cin; ++k) {
                    a[k] += gv * ((int32_t)row[k] - p->w_zp);
                }
            }
        }
        return mt_grad_renormalize_s32(nb * cin, acc, gs_e, gx, gx_e);
    }
    for (n = 0; n < nb; ++n) { /* pass 1: max |acc| */
        for (k = 0; k < cin; ++k) {
            const uint32_t a = mt_uabs32(dx_dot(p, gs + (size_t)n * (size_t)cout, w, k));
            amax = (a > amax) ? a : amax;
        }
    }
    s = mt_grad_renorm_shift(amax);
    for (n = 0; n < nb; ++n) { /* pass 2: recompute, write */
        for (k = 0; k < cin; ++k) {
            gx[(size_t)n * (size_t)cin + (size_t)k] =
                (int16_t)mt_rshift_round32(dx_dot(p, gs + (size_t)n * (size_t)cout, w, k), s);
        }
    }
    *gx_e = gs_e + s;
    return MT_OK;
}
