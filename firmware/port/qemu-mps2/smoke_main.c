/* Device smoke run: MT_SMOKE_STEPS training steps of the generated program on samples compiled in
 * (mt_smoke_data.h, written by the test), then the checkpoint as hex over semihosting (mt_port_log
 * of ../common/mt_semihost.c; any port of firmware/port with semihosting links it):
 *   "STEP <t> <loss_q16> <correct> <skipped> <cycles>\n" per step, "HWM <arena high-water mark>
 *   <arena bytes>\n" after training, "CK <hex>\n", "END\n".
 * Benchmarks add -DMT_PROFILE ("PROF <k> <cycles> <calls> <name>\n" per step function, summed over
 * the training steps) and -DMT_SMOKE_INFERS=K ("INFER <i> <predicted> <cycles>\n" for the first K
 * samples, after training).
 * The host compares the checkpoint with the numpy engine's, byte for byte. */
#include <stdint.h>

#include "mt_model.h"
#include "mt_port.h"
#include "mt_smoke_data.h"

void mt_port_log(const char *s);

static char line[4096 + 16];

static char *put_u32(char *p, uint32_t v)
{
    char tmp[11];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        *p++ = tmp[--n];
    }
    return p;
}

static char *put_i32(char *p, int32_t v)
{
    if (v < 0) {
        *p++ = '-';
        return put_u32(p, (uint32_t)0 - (uint32_t)v);
    }
    return put_u32(p, (uint32_t)v);
}

static uint8_t ck[MT_PARAMS_BYTES];

int main(void)
{
    static const char hex[] = "0123456789abcdef";
    int32_t t;
    uint32_t i;
    mt_port_init(); /* stack canaries, UART, cycle counter */
    mt_arena_paint(); /* canaries: the arena high-water mark is reported at the end */
    mt_init(MT_SMOKE_SEED, MT_SMOKE_TOTAL);
    for (t = 0; t < MT_SMOKE_STEPS; ++t) {
        mt_metrics m;
        char *p = line;
        if (mt_train_step(mt_smoke_x + (uint32_t)t * MT_BATCH * MT_INPUT_BYTES, mt_smoke_y + (uint32_t)t * MT_BATCH,
                          &m) != MT_OK) {
            mt_port_log("ERROR mt_train_step\n");
            return 1;
        }
        p = put_u32(p, (uint32_t)t);
        *p++ = ' ';
        p = put_i32(p, m.loss_q16);
        *p++ = ' ';
        p = put_i32(p, m.correct);
        *p++ = ' ';
        p = put_i32(p, m.skipped);
        *p++ = ' ';
        p = put_u32(p, m.cycles);
        *p++ = '\n';
        *p = '\0';
        mt_port_log("STEP ");
        mt_port_log(line);
    }
    {
        char *p = line;
        p = put_u32(p, mt_arena_high_water());
        *p++ = ' ';
        p = put_u32(p, (uint32_t)MT_ARENA_BYTES);
        *p++ = '\n';
        *p = '\0';
        mt_port_log("HWM ");
        mt_port_log(line);
    }
#ifdef MT_PROFILE
    for (i = 0; i < MT_PROF_STEPS; ++i) {
        char *p = line;
        const char *q = mt_prof_names[i];
        p = put_u32(p, i);
        *p++ = ' ';
        p = put_u32(p, mt_prof_cycles[i]);
        *p++ = ' ';
        p = put_u32(p, mt_prof_calls[i]);
        *p++ = ' ';
        while (*q != '\0' && p < line + sizeof(line) - 2) {
            *p++ = *q++;
        }
        *p++ = '\n';
        *p = '\0';
        mt_port_log("PROF ");
        mt_port_log(line);
    }
#endif
#ifdef MT_SMOKE_INFERS
    for (t = 0; t < MT_SMOKE_INFERS; ++t) {
        int8_t logits[MT_NUM_CLASSES];
        int32_t c, best = 0;
        uint32_t c0, c1;
        char *p = line;
        c0 = MT_CYCLES();
        if (mt_infer(mt_smoke_x + (uint32_t)t * MT_INPUT_BYTES, logits) != MT_OK) {
            mt_port_log("ERROR mt_infer\n");
            return 1;
        }
        c1 = MT_CYCLES();
        for (c = 1; c < MT_NUM_CLASSES; ++c) {
            best = logits[c] > logits[best] ? c : best;
        }
        p = put_u32(p, (uint32_t)t);
        *p++ = ' ';
        p = put_i32(p, best);
        *p++ = ' ';
        p = put_u32(p, c1 - c0);
        *p++ = '\n';
        *p = '\0';
        mt_port_log("INFER ");
        mt_port_log(line);
    }
#endif
    if (mt_params_get(ck, sizeof(ck)) != MT_OK) {
        mt_port_log("ERROR mt_params_get\n");
        return 1;
    }
    mt_port_log("CK ");
    for (i = 0; i < sizeof(ck);) {
        char *p = line;
        uint32_t k;
        for (k = 0; k < 2048u && i < sizeof(ck); ++k, ++i) {
            *p++ = hex[ck[i] >> 4];
            *p++ = hex[ck[i] & 15u];
        }
        *p = '\0';
        mt_port_log(line);
    }
    mt_port_log("\nEND\n");
    return 0;
}
