/**
 * @file mt_add_fwd_s8.c
 * @brief int8 elementwise add with 4-D broadcasting (TFLite int8 ADD); bit-exact with
 *        compiler/ops/elementwise.py Add.forward_int8.
 */
#include "mt_kernels_fwd.h"

size_t mt_add_fwd_s8_scratch_bytes(const mt_dims *out_dims)
{
    (void)out_dims;
    return 0u;
}

static int8_t add_one(const mt_add_params *p, int8_t a, int8_t b)
{
    /* |x - zp| <= 255, so (x - zp) << 20 < 2^28: no overflow; shifts <= 0 (smaller than one). */
    const int32_t a_shifted = ((int32_t)a - p->a_zp) * ((int32_t)1 << p->left_shift);
    const int32_t b_shifted = ((int32_t)b - p->b_zp) * ((int32_t)1 << p->left_shift);
    const int32_t a_scaled = mt_mbqm(a_shifted, p->a_mult, (int)p->a_shift);
    const int32_t b_scaled = mt_mbqm(b_shifted, p->b_mult, (int)p->b_shift);
    return mt_requantize_s8(a_scaled + b_scaled, p->out_mult, (int)p->out_shift, p->out_zp,
                            p->act_min, p->act_max);
}

/* Stride of one axis of an operand broadcast to the output: 0 where the operand has size 1. */
static int32_t bstride(int32_t size, int32_t out_size, int32_t stride, int *ok)
{
    if (size == out_size) {
        return (size == 1) ? 0 : stride;
    }
    if (size != 1) {
        *ok = 0;
    }
    return 0;
}

mt_status mt_add_fwd_s8(const mt_add_params *p,
                        const mt_dims *a_dims, const int8_t *a,
                        const mt_dims *b_dims, const int8_t *b,
                        const mt_dims *out_dims, int8_t *out)
{
    const mt_dims *o = out_dims;
    int ok = 1;
    int32_t an, ah, aw, ac, bn, bh, bw, bc;
    int32_t n, y, x, c;

    if (p->left_shift < 0 || p->left_shift > 20) {
        return MT_ERR_ARG;
    }
    if (a_dims->n == o->n && a_dims->h == o->h && a_dims->w == o->w && a_dims->c == o->c &&
        b_dims->n == o->n && b_dims->h == o->h && b_dims->w == o->w && b_dims->c == o->c) {
        const int32_t size = o->n * o->h * o->w * o->c;
        int32_t i;
        for (i = 0; i < size; ++i) {
            out[i] = add_one(p, a[i], b[i]);
        }
        return MT_OK;
    }
    ac = bstride(a_dims->c, o->c, 1, &ok);
    aw = bstride(a_dims->w, o->w, a_dims->c, &ok);
    ah = bstride(a_dims->h, o->h, a_dims->w * a_dims->c, &ok);
    an = bstride(a_dims->n, o->n, a_dims->h * a_dims->w * a_dims->c, &ok);
    bc = bstride(b_dims->c, o->c, 1, &ok);
    bw = bstride(b_dims->w, o->w, b_dims->c, &ok);
    bh = bstride(b_dims->h, o->h, b_dims->w * b_dims->c, &ok);
    bn = bstride(b_dims->n, o->n, b_dims->h * b_dims->w * b_dims->c, &ok);
    if (!ok) {
        return MT_ERR_ARG;
    }
    for (n = 0; n < o->n; ++n) {
        for (y = 0; y < o->h; ++y) {
            for (x = 0; x < o->w; ++x) {
                const int8_t *a_px = a + (size_t)n * an + (size_t)y * ah + (size_t)x * aw;
                const int8_t *b_px = b + (size_t)n * bn + (size_t)y * bh + (size_t)x * bw;
                for (c = 0; c < o->c; ++c) {
                    *out++ = add_one(p, a_px[(size_t)c * ac], b_px[(size_t)c * bc]);
                }
            }
        }
    }
    return MT_OK;
}
