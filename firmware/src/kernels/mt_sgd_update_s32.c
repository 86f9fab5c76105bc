/**
 * @file mt_sgd_update_s32.c
 * @brief Apply Q15.16 deltas to an int32 bias slice: optional momentum, then
 *        b = clip(b + RDBPOT(delta, 16), lo, hi); as Int8Trainer._apply for a bias.
 */
#include "mt_kernels_train.h"

mt_status mt_sgd_update_s32(const mt_sgd_params *u, mt_sgd_state *st, const mt_slice *s,
                            const int32_t *delta, int32_t *bias)
{
    int32_t o, r, k, i;
    if (s->outer < 1 || s->rows < 1 || s->rows > s->channels || s->inner < 1 ||
        st->kind != MT_APPLY_BIAS) {
        return MT_ERR_ARG;
    }
    if (u->lr_mult == 0) {
        return MT_OK;
    }
    for (o = 0, i = 0; o < s->outer; ++o) {
        for (r = 0; r < s->rows; ++r) {
            int32_t *br = bias + ((size_t)o * (size_t)s->channels + (size_t)r) * (size_t)s->inner;
            for (k = 0; k < s->inner; ++k, ++i) {
                br[k] = mt_sgd_apply_b32_elem(u, st, i, br[k], delta[i]);
            }
        }
    }
    return MT_OK;
}
