/**
 * @file mt_add_bwd_input_s16.c
 * @brief add: gradient of one (possibly broadcast) operand; bit-exact with Add.backward_int8
 *        (_grad_int.reduce_to / sum_to): the masked output gradient summed over the broadcast
 *        axes after headroom(g, 0, fan-in), renormalised; a plain copy without broadcasting.
 */
#include "mt_kernels_train.h"

static int32_t dim_of(const mt_dims *d, int a)
{
    return (a == 0) ? d->n : (a == 1) ? d->h : (a == 2) ? d->w : d->c;
}

mt_status mt_add_bwd_input_s16(const mt_dims *y_dims, const mt_dims *x_dims, const int16_t *g,
                               int32_t g_e, int16_t *gx, int32_t *gx_e)
{
    int32_t yd[4] = {0, 0, 0, 0}, xd[4] = {0, 0, 0, 0}, red[4] = {0, 0, 0, 0}, ystr[4] = {0, 0, 0, 0};
    int32_t a, fan = 1, gsize, xsize, i, r, sh, s = 0, pass;
    uint32_t amax = 0u;
    for (a = 0; a < 4; ++a) {
        yd[a] = dim_of(y_dims, a);
        xd[a] = dim_of(x_dims, a);
        if (yd[a] < 1 || (xd[a] != yd[a] && xd[a] != 1)) {
            return MT_ERR_ARG;
        }
        red[a] = (xd[a] == 1 && yd[a] != 1);
        fan *= red[a] ? yd[a] : 1;
    }
    ystr[3] = 1;
    for (a = 2; a >= 0; --a) {
        ystr[a] = ystr[a + 1] * yd[a + 1];
    }
    gsize = yd[0] * ystr[0];
    xsize = xd[0] * xd[1] * xd[2] * xd[3];
    if (fan == 1) {
        for (i = 0; i < xsize; ++i) {
            gx[i] = g[i];
        }
        *gx_e = g_e;
        return MT_OK;
    }
    for (i = 0; i < gsize; ++i) {
        const uint32_t v = mt_uabs32(g[i]);
        amax = (v > amax) ? v : amax;
    }
    sh = mt_grad_headroom_shift(amax, 0, fan);
    amax = 0u;
    for (pass = 0; pass < 2; ++pass) { /* pass 0: max |sum|; pass 1: recompute, write */
        int32_t x0, x1, x2, x3;
        i = 0;
        for (x0 = 0; x0 < xd[0]; ++x0) {
            for (x1 = 0; x1 < xd[1]; ++x1) {
                for (x2 = 0; x2 < xd[2]; ++x2) {
                    for (x3 = 0; x3 < xd[3]; ++x3, ++i) {
                        /* walk the fan-in positions: the reduced axes, odometer order */
                        int32_t cnt[4] = {0, 0, 0, 0};
                        const int32_t base = x0 * ystr[0] + x1 * ystr[1] + x2 * ystr[2] + x3 * ystr[3];
                        int32_t acc = 0;
                        for (r = 0; r < fan; ++r) {
                            int32_t off = base;
                            for (a = 0; a < 4; ++a) {
                                off += cnt[a] * ystr[a];
                            }
                            acc += mt_rshift_round32(g[off], sh);
                            for (a = 3; a >= 0; --a) {
                                if (!red[a]) {
                                    continue;
                                }
                                if (++cnt[a] < yd[a]) {
                                    break;
                                }
                                cnt[a] = 0;
                            }
                        }
                        if (pass == 0) {
                            const uint32_t v = mt_uabs32(acc);
                            amax = (v > amax) ? v : amax;
                        } else {
                            gx[i] = (int16_t)mt_rshift_round32(acc, s);
                        }
                    }
                }
            }
        }
        if (pass == 0) {
            s = mt_grad_renorm_shift(amax);
        }
    }
    *gx_e = g_e + sh + s;
    return MT_OK;
}
