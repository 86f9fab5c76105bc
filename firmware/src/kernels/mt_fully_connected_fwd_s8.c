/**
 * @file mt_fully_connected_fwd_s8.c
 * @brief int8 fully connected forward, x [N, Cin], w [Cout, Cin]; bit-exact with
 *        compiler/ops/fully_connected.py FullyConnected.forward_int8.
 */
#include "mt_kernels_fwd.h"

size_t mt_fully_connected_fwd_s8_scratch_bytes(int32_t in_features, int32_t out_features)
{
    (void)in_features;
    (void)out_features;
    return 0u;
}

mt_status mt_fully_connected_fwd_s8(const mt_fc_params *p, const mt_per_channel_quant *q,
                                    int32_t batch, int32_t in_features, const int8_t *in,
                                    int32_t out_features, const int8_t *w, const int32_t *bias,
                                    int8_t *out)
{
    int32_t n, o, k;
    if (batch < 0 || in_features < 1 || out_features < 1) {
        return MT_ERR_ARG;
    }
    for (n = 0; n < batch; ++n) {
        const int8_t *x = in + (size_t)n * in_features;
        for (o = 0; o < out_features; ++o) {
            const int8_t *w_o = mt_wrow(w, &p->split, o, (size_t)in_features);
            int32_t acc = (bias != NULL) ? bias[o] : 0;
            for (k = 0; k < in_features; ++k) {
                acc += ((int32_t)x[k] - p->in_zp) * ((int32_t)w_o[k] - p->w_zp);
            }
            *out++ = mt_requantize_s8(acc, q->mult[o], (int)q->shift[o], p->out_zp, p->act_min,
                                      p->act_max);
        }
    }
    return MT_OK;
}
