/**
 * @file mt_fully_connected_acc_s32.c
 * @brief int32 accumulators of a fully connected layer (no requantization): the inputs of the
 *        integer softmax cross-entropy on accumulators (Int8Trainer._logit_acc).
 */
#include "mt_kernels_fwd.h"

size_t mt_fully_connected_acc_s32_scratch_bytes(int32_t in_features, int32_t out_features)
{
    (void)in_features;
    (void)out_features;
    return 0u;
}

mt_status mt_fully_connected_acc_s32(const mt_fc_params *p, int32_t batch, int32_t in_features,
                                     const int8_t *in, int32_t out_features, const int8_t *w,
                                     const int32_t *bias, int32_t *acc)
{
    int32_t n, o, k;
    if (batch < 0 || in_features < 1 || out_features < 1) {
        return MT_ERR_ARG;
    }
    for (n = 0; n < batch; ++n) {
        const int8_t *x = in + (size_t)n * (size_t)in_features;
        for (o = 0; o < out_features; ++o) {
            const int8_t *w_o = mt_wrow(w, &p->split, o, (size_t)in_features);
            int32_t a = (bias != NULL) ? bias[o] : 0;
            for (k = 0; k < in_features; ++k) {
                a += ((int32_t)x[k] - p->in_zp) * ((int32_t)w_o[k] - p->w_zp);
            }
            *acc++ = a;
        }
    }
    return MT_OK;
}
