/**
 * @file mt_pointwise_conv2d_fwd_s8.c
 * @brief 1x1 stride-1 unpadded int8 conv2d (a matrix-vector product per pixel); same results as
 *        mt_conv2d_fwd_s8 and compiler/ops/conv.py Conv2D.forward_int8.
 *
 * Over its N*H*W pixels it is exactly mt_fully_connected_fwd_s8 (rows = pixels, same zero points,
 * clamp, per-channel requantization and weight split; symmetric weights): that kernel's blocked
 * engine does the work. It needs no scratch (the argument is ignored and may be NULL; its
 * _scratch_bytes companion returns 0).
 */
#include "mt_kernels_fwd.h"

size_t mt_pointwise_conv2d_fwd_s8_scratch_bytes(const mt_dims *in_dims, const mt_dims *filter_dims)
{
    (void)in_dims;
    (void)filter_dims;
    return 0u;
}

mt_status mt_pointwise_conv2d_fwd_s8(void *scratch, const mt_conv_params *p,
                                     const mt_per_channel_quant *q,
                                     const mt_dims *in_dims, const int8_t *in,
                                     const mt_dims *filter_dims, const int8_t *w,
                                     const int32_t *bias, const mt_dims *out_dims, int8_t *out)
{
    mt_fc_params f;
    const int32_t in_c = in_dims->c;
    const int32_t out_c = filter_dims->n;

    (void)scratch; /* unused (NULL allowed) */
    if (filter_dims->h != 1 || filter_dims->w != 1 || filter_dims->c != in_c ||
        p->stride.h != 1 || p->stride.w != 1 || p->padding.top != 0 || p->padding.left != 0 ||
        p->padding.bottom != 0 || p->padding.right != 0 || out_dims->n != in_dims->n ||
        out_dims->h != in_dims->h || out_dims->w != in_dims->w || out_dims->c != out_c) {
        return MT_ERR_ARG;
    }
    f.in_zp = p->in_zp;
    f.w_zp = 0;
    f.out_zp = p->out_zp;
    f.act_min = p->act_min;
    f.act_max = p->act_max;
    f.split = p->split;
    return mt_fully_connected_fwd_s8(&f, q, in_dims->n * in_dims->h * in_dims->w, in_c, in, out_c,
                                     w, bias, out);
}
