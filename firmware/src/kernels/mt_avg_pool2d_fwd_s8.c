/**
 * @file mt_avg_pool2d_fwd_s8.c
 * @brief int8 average pool (TFLite rounding half away from zero, fused clamp); bit-exact with
 *        compiler/ops/pool.py AvgPool2D.forward_int8.
 */
#include "mt_kernels_fwd.h"

size_t mt_avg_pool2d_fwd_s8_scratch_bytes(const mt_dims *out_dims)
{
    (void)out_dims;
    return 0u;
}

mt_status mt_avg_pool2d_fwd_s8(const mt_pool_params *p, const mt_dims *in_dims, const int8_t *in,
                               const mt_dims *out_dims, int8_t *out)
{
    const int32_t in_h = in_dims->h;
    const int32_t in_w = in_dims->w;
    const int32_t ch = in_dims->c;
    int32_t b, oy, ox, c;

    if (out_dims->n != in_dims->n || out_dims->c != ch || p->ksize.h < 1 || p->ksize.w < 1 ||
        p->stride.h < 1 || p->stride.w < 1 || p->padding.top >= p->ksize.h ||
        p->padding.bottom >= p->ksize.h || p->padding.left >= p->ksize.w ||
        p->padding.right >= p->ksize.w) {
        return MT_ERR_ARG;
    }
    for (b = 0; b < in_dims->n; ++b) {
        const int8_t *in_b = in + (size_t)b * in_h * in_w * ch;
        for (oy = 0; oy < out_dims->h; ++oy) {
            const int32_t y0 = oy * p->stride.h - p->padding.top;
            const int32_t ky0 = (y0 < 0) ? -y0 : 0;
            const int32_t ky1 = (y0 + p->ksize.h > in_h) ? in_h - y0 : p->ksize.h;
            for (ox = 0; ox < out_dims->w; ++ox) {
                const int32_t x0 = ox * p->stride.w - p->padding.left;
                const int32_t kx0 = (x0 < 0) ? -x0 : 0;
                const int32_t kx1 = (x0 + p->ksize.w > in_w) ? in_w - x0 : p->ksize.w;
                const int32_t count = p->count_include_pad ? p->ksize.h * p->ksize.w
                                                           : (ky1 - ky0) * (kx1 - kx0);
                for (c = 0; c < ch; ++c) {
                    int32_t sum = 0;
                    int32_t ky, kx, avg;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int8_t *row = in_b + ((size_t)(y0 + ky) * in_w + x0) * ch + c;
                        for (kx = kx0; kx < kx1; ++kx) {
                            sum += row[(size_t)kx * ch];
                        }
                    }
                    avg = (sum > 0) ? (sum + count / 2) / count : (sum - count / 2) / count;
                    *out++ = (int8_t)mt_clamp32(avg, p->act_min, p->act_max);
                }
            }
        }
    }
    return MT_OK;
}
