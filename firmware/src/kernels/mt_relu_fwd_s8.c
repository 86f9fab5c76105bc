/**
 * @file mt_relu_fwd_s8.c
 * @brief int8 relu / relu6 (TFLite QuantizedReluX: requantize, then clamp); bit-exact with
 *        compiler/ops/elementwise.py Relu/Relu6.forward_int8.
 */
#include "mt_kernels_fwd.h"

size_t mt_relu_fwd_s8_scratch_bytes(int32_t size)
{
    (void)size;
    return 0u;
}

mt_status mt_relu_fwd_s8(const mt_relu_params *p, int32_t size, const int8_t *in, int8_t *out)
{
    int32_t i;
    if (size < 0) {
        return MT_ERR_ARG;
    }
    for (i = 0; i < size; ++i) {
        out[i] = mt_requantize_s8((int32_t)in[i] - p->in_zp, p->mult, (int)p->shift, p->out_zp,
                                  p->act_min, p->act_max);
    }
    return MT_OK;
}
