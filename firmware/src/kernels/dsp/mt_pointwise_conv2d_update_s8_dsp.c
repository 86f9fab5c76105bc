/**
 * @file mt_pointwise_conv2d_update_s8_dsp.c
 * @brief 1x1 / stride 1 / unpadded conv2d fused weight update with the Arm DSP extension: the
 *        fully_connected rule over the N*H*W pixels (mt_fully_connected_update_s8_dsp); same
 *        results as mt_pointwise_conv2d_update_s8.
 */
#include "mt_kernels_dsp.h"

mt_status mt_pointwise_conv2d_update_s8_dsp(const mt_conv_train_params *p,
                                            const mt_sgd_params *u, mt_sgd_state *st,
                                            int32_t rows, int32_t *acc, const int16_t *g,
                                            int32_t g_e, const int8_t *x, int8_t *w,
                                            int16_t *grad, int32_t *grad_e)
{
    mt_fc_train_params f;
    if (p->kernel.h != 1 || p->kernel.w != 1 || p->stride.h != 1 || p->stride.w != 1 ||
        p->padding.top != 0 || p->padding.left != 0 || p->padding.bottom != 0 ||
        p->padding.right != 0 || p->in.n != p->out.n || p->in.h != p->out.h ||
        p->in.w != p->out.w) {
        return MT_ERR_ARG;
    }
    f.batch = p->in.n * p->in.h * p->in.w;
    f.in_features = p->in.c;
    f.out_features = p->out.c;
    f.in_zp = p->in_zp;
    f.w_zp = 0;
    f.x_mult = p->x_mult;
    f.x_shift = p->x_shift;
    f.x_bits = p->x_bits;
    f.w_mult = p->w_mult;
    f.w_shift = p->w_shift;
    f.w_bits = p->w_bits;
    f.split = p->split;
    return mt_fully_connected_update_s8_dsp(&f, u, st, rows, acc, g, g_e, x, w, grad, grad_e);
}
