/**
 * @file mt_pointwise_conv2d_update_s8.c
 * @brief 1x1 / stride 1 / unpadded conv2d fused weight update: the fully_connected rule over the
 *        N*H*W pixels (fan-in N*OH*OW as conv2d), hence the same integers as mt_conv2d_update_s8.
 */
#include "mt_kernels_train.h"

mt_status mt_pointwise_conv2d_update_s8(const mt_conv_train_params *p, const mt_sgd_params *u,
                                        mt_sgd_state *st, int32_t rows, int32_t *acc,
                                        const int16_t *g, int32_t g_e, const int8_t *x,
                                        int8_t *w, int16_t *grad, int32_t *grad_e)
{
    mt_fc_train_params f;
    if (mt_pointwise_as_fc(p, &f) != MT_OK) {
        return MT_ERR_ARG;
    }
    return mt_fully_connected_update_s8(&f, u, st, rows, acc, g, g_e, x, w, grad, grad_e);
}
