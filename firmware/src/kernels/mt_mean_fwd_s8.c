/**
 * @file mt_mean_fwd_s8.c
 * @brief int8 global mean over H, W (TFLite QuantizedMeanOrSum with 1/(H*W) folded into the
 *        multiplier); bit-exact with compiler/ops/pool.py Mean.forward_int8.
 */
#include "mt_kernels_fwd.h"

size_t mt_mean_fwd_s8_scratch_bytes(const mt_dims *in_dims)
{
    (void)in_dims;
    return 0u;
}

mt_status mt_mean_fwd_s8(const mt_mean_params *p, const mt_dims *in_dims, const int8_t *in,
                         int8_t *out)
{
    const int32_t hw = in_dims->h * in_dims->w;
    const int32_t ch = in_dims->c;
    /* in_zp * count, wrapped to int32 like the reference (uint32 arithmetic: no UB). */
    const uint32_t zp_times_count = (uint32_t)p->in_zp * (uint32_t)p->count;
    int32_t b, i, c;

    if (hw != p->count) {
        return MT_ERR_ARG;
    }
    for (b = 0; b < in_dims->n; ++b) {
        const int8_t *in_b = in + (size_t)b * hw * ch;
        for (c = 0; c < ch; ++c) {
            uint32_t sum = 0u; /* int32 sum, wrapping */
            int32_t acc;
            for (i = 0; i < hw; ++i) {
                sum += (uint32_t)(int32_t)in_b[(size_t)i * ch + c];
            }
            acc = mt_wrap32(sum - zp_times_count);
            *out++ = mt_requantize_s8(acc, p->mult, (int)p->shift, p->out_zp, -128, 127);
        }
    }
    return MT_OK;
}
