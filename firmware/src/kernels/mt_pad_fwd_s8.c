/**
 * @file mt_pad_fwd_s8.c
 * @brief int8 constant pad of a rank <= 4 tensor (NHWC axis order); bit-exact with
 *        compiler/ops/shape.py Pad.forward_int8.
 */
#include "mt_kernels_fwd.h"

size_t mt_pad_fwd_s8_scratch_bytes(const mt_dims *out_dims)
{
    (void)out_dims;
    return 0u;
}

mt_status mt_pad_fwd_s8(const mt_pad_params *p, const mt_dims *in_dims, const int8_t *in,
                        const mt_dims *out_dims, int8_t *out)
{
    const int32_t in_d[4] = {in_dims->n, in_dims->h, in_dims->w, in_dims->c};
    const int32_t out_d[4] = {out_dims->n, out_dims->h, out_dims->w, out_dims->c};
    const int8_t value = (int8_t)mt_clamp32(p->value, -128, 127);
    int32_t i, n, y, x, c;

    for (i = 0; i < 4; ++i) {
        if (p->before[i] < 0 || p->after[i] < 0 || out_d[i] != in_d[i] + p->before[i] + p->after[i]) {
            return MT_ERR_ARG;
        }
    }
    for (n = 0; n < out_d[0]; ++n) {
        const int32_t in_n = n - p->before[0];
        for (y = 0; y < out_d[1]; ++y) {
            const int32_t in_y = y - p->before[1];
            for (x = 0; x < out_d[2]; ++x) {
                const int32_t in_x = x - p->before[2];
                if (in_n < 0 || in_n >= in_d[0] || in_y < 0 || in_y >= in_d[1] || in_x < 0 ||
                    in_x >= in_d[2]) {
                    for (c = 0; c < out_d[3]; ++c) {
                        *out++ = value;
                    }
                } else {
                    const int8_t *src =
                        in + (((size_t)in_n * in_d[1] + in_y) * in_d[2] + in_x) * in_d[3];
                    for (c = 0; c < p->before[3]; ++c) {
                        *out++ = value;
                    }
                    for (c = 0; c < in_d[3]; ++c) {
                        *out++ = src[c];
                    }
                    for (c = 0; c < p->after[3]; ++c) {
                        *out++ = value;
                    }
                }
            }
        }
    }
    return MT_OK;
}
