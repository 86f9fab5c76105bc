/**
 * @file mt_fg_perturb_s8.c
 * @brief Forward-gradient perturbation of an int8 weight slice from its int16 master; bit-exact
 *        with Int8Trainer.perturb (weights): w = clip(RDBPOT(master + k*delta*z, 8), -127, 127).
 */
#include "mt_kernels_train.h"

mt_status mt_fg_perturb_s8(const mt_slice *s, const int16_t *master, int32_t delta, int32_t k,
                           mt_rademacher *z, int8_t *w)
{
    const int32_t kd = k * delta;
    int32_t o, r, j, i;
    if (s->outer < 1 || s->rows < 1 || s->rows > s->channels || s->inner < 1 || k < -1 || k > 1) {
        return MT_ERR_ARG;
    }
    for (o = 0, i = 0; o < s->outer; ++o) {
        for (r = 0; r < s->rows; ++r) {
            int8_t *wr = w + ((size_t)o * (size_t)s->channels + (size_t)r) * (size_t)s->inner;
            for (j = 0; j < s->inner; ++j, ++i) {
                const int32_t zi = mt_rademacher_next(z);
                const int32_t m = mt_sat_add32(master[i], (zi > 0) ? kd : -kd);
                wr[j] = (int8_t)mt_clamp32(mt_rdbpot(m, MT_MASTER_FRAC_BITS), -127, 127);
            }
        }
    }
    return MT_OK;
}
