/**
 * @file mt_pointwise_conv2d_bwd_input_s16_dsp.c
 * @brief 1x1 / stride 1 / unpadded conv2d input gradient with the Arm DSP extension: the
 *        fully_connected rule over the N*H*W pixels (mt_fully_connected_bwd_input_s16_dsp); same
 *        results as mt_pointwise_conv2d_bwd_input_s16.
 */
#include "mt_kernels_dsp.h"

mt_status mt_pointwise_conv2d_bwd_input_s16_dsp(const mt_conv_train_params *p, int16_t *gs,
                                                int32_t *acc, const int16_t *g, int32_t g_e,
                                                const int8_t *w, int16_t *gx, int32_t *gx_e)
{
    mt_fc_train_params f;
    if (mt_pointwise_as_fc(p, &f) != MT_OK) {
        return MT_ERR_ARG;
    }
    return mt_fully_connected_bwd_input_s16_dsp(&f, gs, acc, g, g_e, w, gx, gx_e);
}
