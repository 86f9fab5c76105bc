/* native_step_main.c: a standalone host driver of one generated training program, for
 * instruction counts (bench/speed.py runs it under valgrind --tool=callgrind).
 *
 *     gcc -std=c99 -O2 -fno-strict-aliasing -Ifirmware/include -I<dir of mt_model.h> \
 *         bench/native_step_main.c <dir>/mt_model.c firmware/src/kernels/\*.c -o step
 *     ./step STEPS [SEED]
 *
 * mt_init(SEED, STEPS), then STEPS calls of mt_train_step on MT_BATCH samples each, taken in turn
 * from NSAMPLES fixed pseudo-random int8 samples (xorshift32, generated before the first step)
 * with pseudo-random labels. Prints the step count, the sum of the losses and the correct count
 * (so the work cannot be optimized away). With --toggle-collect=mt_train_step callgrind counts
 * only the training steps (sample generation and mt_init excluded).
 */
#include <stdio.h>
#include <stdlib.h>

#include "mt_model.h"

#define NSAMPLES 16

static int8_t samples[NSAMPLES][MT_INPUT_BYTES];
static int32_t labels[NSAMPLES];

static uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

int main(int argc, char **argv)
{
    const int32_t steps = argc > 1 ? (int32_t)atol(argv[1]) : 10;
    const uint32_t seed = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 1u;
    static int8_t x[MT_BATCH * MT_INPUT_BYTES];
    int32_t y[MT_BATCH];
    uint32_t rng = 0x12345678u;
    int64_t loss_sum = 0;
    int32_t correct = 0;
    int32_t t, i, b;
    mt_metrics m;

    for (i = 0; i < NSAMPLES; ++i) {
        for (b = 0; b < MT_INPUT_BYTES; ++b) {
            samples[i][b] = (int8_t)(xorshift32(&rng) >> 24);
        }
        labels[i] = (int32_t)(xorshift32(&rng) % (uint32_t)MT_NUM_CLASSES);
    }
    mt_init(seed, steps > 0 ? steps : 1);
    for (t = 0; t < steps; ++t) {
        for (b = 0; b < MT_BATCH; ++b) {
            const int32_t k = (t * MT_BATCH + b) % NSAMPLES;
            for (i = 0; i < MT_INPUT_BYTES; ++i) {
                x[b * MT_INPUT_BYTES + i] = samples[k][i];
            }
            y[b] = labels[k];
        }
        if (mt_train_step(x, y, &m) != MT_OK) {
            fprintf(stderr, "mt_train_step failed at step %ld\n", (long)t);
            return 1;
        }
        loss_sum += m.loss_q16;
        correct += m.correct;
    }
    printf("steps %ld loss_sum %lld correct %ld\n", (long)steps, (long long)loss_sum, (long)correct);
    return 0;
}
