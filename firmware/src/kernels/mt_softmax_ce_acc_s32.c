/**
 * @file mt_softmax_ce_acc_s32.c
 * @brief Integer softmax cross-entropy on the int32 accumulators of the final fully_connected
 *        layer; bit-exact with loss_int.softmax_cross_entropy_int (kind "acc"):
 *        z = MBQM(acc, M_c, k_c) (Q(31-F).F), u = max z - z (uint32), valid where u <= radius,
 *        d = -(u << (26 - F)).
 */
#include "mt_kernels_train.h"

mt_status mt_softmax_ce_acc_s32(const mt_softmax_ce_acc_params *p, int32_t batch, int32_t classes,
                                int32_t *buf, const int32_t *acc, const int32_t *labels,
                                int16_t *grad, int32_t *grad_e, int32_t *loss, int32_t *loss_mean,
                                uint8_t *correct)
{
    int32_t n, c;
    if (batch < 1 || classes < 1 || p->frac_bits > 26) {
        return MT_ERR_ARG;
    }
    for (n = 0; n < batch; ++n) { /* checked before anything is written */
        if (labels[n] < 0 || labels[n] >= classes) {
            return MT_ERR_ARG;
        }
    }
    for (n = 0; n < batch; ++n) {
        const int32_t *a = acc + (size_t)n * (size_t)classes;
        int32_t *row = buf + (size_t)n * (size_t)classes;
        int32_t zmax = 0, arg = 0;
        for (c = 0; c < classes; ++c) { /* z in the buffer first */
            row[c] = mt_mbqm(a[c], p->mult[c], (int)p->shift[c]);
            if (c == 0 || row[c] > zmax) {
                zmax = row[c];
                arg = c;
            }
        }
        for (c = 0; c < classes; ++c) {
            const uint32_t u = (uint32_t)zmax - (uint32_t)row[c];
            row[c] = (u <= (uint32_t)p->radius)
                         ? -(int32_t)(u << (31 - 5 - p->frac_bits))
                         : MT_CE_INVALID;
        }
        if (correct != NULL) {
            correct[n] = (uint8_t)(arg == labels[n]);
        }
    }
    return mt_softmax_ce_core_s32(&p->b, batch, classes, buf, labels, grad, grad_e, loss, loss_mean);
}
