/**
 * @file mt_pad_bwd_input_s16.c
 * @brief pad input gradient; bit-exact with Pad.backward_int8: the padded border cut off, the
 *        exponent unchanged (the caller keeps it).
 */
#include "mt_kernels_train.h"

mt_status mt_pad_bwd_input_s16(const mt_dims *x_dims, const mt_dims *y_dims,
                               const int32_t before[4], const int16_t *g, int16_t *gx)
{
    int32_t n, h, w, c;
    size_t i = 0u;
    if (x_dims->n + before[0] > y_dims->n || x_dims->h + before[1] > y_dims->h ||
        x_dims->w + before[2] > y_dims->w || x_dims->c + before[3] > y_dims->c ||
        before[0] < 0 || before[1] < 0 || before[2] < 0 || before[3] < 0) {
        return MT_ERR_ARG;
    }
    for (n = 0; n < x_dims->n; ++n) {
        for (h = 0; h < x_dims->h; ++h) {
            for (w = 0; w < x_dims->w; ++w) {
                const int16_t *src = g + ((((size_t)(n + before[0]) * (size_t)y_dims->h +
                                            (size_t)(h + before[1])) * (size_t)y_dims->w +
                                           (size_t)(w + before[2])) * (size_t)y_dims->c +
                                          (size_t)before[3]);
                for (c = 0; c < x_dims->c; ++c) {
                    gx[i++] = src[c];
                }
            }
        }
    }
    return MT_OK;
}
