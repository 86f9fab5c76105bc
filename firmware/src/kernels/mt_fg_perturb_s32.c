/**
 * @file mt_fg_perturb_s32.c
 * @brief Forward-gradient perturbation of an int32 bias slice in place; bit-exact with
 *        Int8Trainer.perturb (biases): b += (k - prev) * delta * z.
 */
#include "mt_kernels_train.h"

mt_status mt_fg_perturb_s32(const mt_slice *s, int32_t delta, int32_t step, mt_rademacher *z,
                            int32_t *bias)
{
    const int32_t sd = step * delta;
    int32_t o, r, j;
    if (s->outer < 1 || s->rows < 1 || s->rows > s->channels || s->inner < 1) {
        return MT_ERR_ARG;
    }
    for (o = 0; o < s->outer; ++o) {
        for (r = 0; r < s->rows; ++r) {
            int32_t *br = bias + ((size_t)o * (size_t)s->channels + (size_t)r) * (size_t)s->inner;
            for (j = 0; j < s->inner; ++j) {
                br[j] = (mt_rademacher_next(z) > 0) ? mt_wrap_add32(br[j], sd) : mt_wrap_sub32(br[j], sd);
            }
        }
    }
    return MT_OK;
}
