/**
 * @file mt_softmax_ce_s8.c
 * @brief Integer softmax cross-entropy on int8 logits; bit-exact with
 *        loss_int.softmax_cross_entropy_int (kind "int8"):
 *        d = SRDHM((x - max x) << (ls - 1), M) << 1 in Q5.26, valid where x - max x >= diff_min.
 */
#include "mt_kernels_train.h"

mt_status mt_softmax_ce_s8(const mt_softmax_ce_s8_params *p, int32_t batch, int32_t classes,
                           int32_t *buf, const int8_t *logits, const int32_t *labels,
                           int16_t *grad, int32_t *grad_e, int32_t *loss, int32_t *loss_mean,
                           uint8_t *correct)
{
    int32_t n, c;
    if (batch < 1 || classes < 1 || p->left_shift < 1 || p->left_shift > 31) {
        return MT_ERR_ARG;
    }
    for (n = 0; n < batch; ++n) { /* checked before anything is written */
        if (labels[n] < 0 || labels[n] >= classes) {
            return MT_ERR_ARG;
        }
    }
    for (n = 0; n < batch; ++n) {
        const int8_t *x = logits + (size_t)n * (size_t)classes;
        int32_t *row = buf + (size_t)n * (size_t)classes;
        int32_t xmax = x[0], arg = 0;
        for (c = 1; c < classes; ++c) {
            if (x[c] > xmax) {
                xmax = x[c];
                arg = c;
            }
        }
        for (c = 0; c < classes; ++c) {
            const int32_t diff = (int32_t)x[c] - xmax;
            row[c] = (diff >= p->diff_min)
                         ? mt_srdhm(diff * ((int32_t)1 << (p->left_shift - 1)), p->mult) * 2
                         : MT_CE_INVALID;
        }
        if (correct != NULL) {
            correct[n] = (uint8_t)(arg == labels[n]);
        }
    }
    return mt_softmax_ce_core_s32(&p->b, batch, classes, buf, labels, grad, grad_e, loss, loss_mean);
}
