/**
 * @file mt_sgd_update_s8.c
 * @brief Apply Q15.16 deltas to an int8 weight slice: optional momentum, then the int16 master
 *        copy (_grad_int.apply_master_copy) or stochastic rounding from xorshift32
 *        (_grad_int.apply_stochastic_round, one draw per element in slice order); as
 *        Int8Trainer._apply for a weight.
 */
#include "mt_kernels_train.h"

mt_status mt_sgd_update_s8(const mt_sgd_params *u, mt_sgd_state *st, const mt_slice *s,
                           const int32_t *delta, int8_t *w)
{
    int32_t o, r, k, i;
    if (s->outer < 1 || s->rows < 1 || s->rows > s->channels || s->inner < 1 ||
        (st->kind != MT_APPLY_MASTER && st->kind != MT_APPLY_STOCHASTIC)) {
        return MT_ERR_ARG;
    }
    if (u->lr_mult == 0) {
        return MT_OK;
    }
    for (o = 0, i = 0; o < s->outer; ++o) {
        for (r = 0; r < s->rows; ++r) {
            int8_t *wr = w + ((size_t)o * (size_t)s->channels + (size_t)r) * (size_t)s->inner;
            for (k = 0; k < s->inner; ++k, ++i) {
                wr[k] = mt_sgd_apply_w8_elem(u, st, i, wr[k], delta[i]);
            }
        }
    }
    return MT_OK;
}
