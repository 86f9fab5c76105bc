/**
 * @file mt_fully_connected_fwd_s8_dsp.c
 * @brief int8 fully connected forward with the Arm DSP extension; same results as
 *        mt_fully_connected_fwd_s8. Also the engine of mt_pointwise_conv2d_fwd_s8_dsp (the 1x1
 *        conv over its N*H*W pixels).
 *
 * No scratch. The blocking of the portable kernel with SMLAD inner products (mt_dsp.h):
 *  - batch rows in pairs x output channels in pairs, the input zero point folded into the start
 *    values (bias - in_zp * sum w, mt_row_fold_s8, once per channel pair; exact, see the portable
 *    kernel). With symmetric weights, the int8 clamp, fast-form requantization and Cin a multiple
 *    of 8, one assembly loop per channel pair does every row pair: 4 word loads, 8 SXTB16 and
 *    8 SMLAD per 16 MACs, then the four requantizations (SMLAL with out_zp folded into the
 *    constant, SSAT #8) - pair_rows_small (Cin 8 / 16: fully unrolled, immediate offsets) and
 *    pair_rows_k8 (8 inputs per pass). Everything else (Cin % 8, a clamp, the odd last channel,
 *    a pair across the weight split, other shifts) takes pair_rows: mt_mac2x2d_s8 / mt_mac2x2_s8
 *    and rq_apply in C;
 *  - a single row (batch 1, the last of an odd batch, every row with a per-tensor weight zero
 *    point): four output channels per pass with mt_mac1x4_s8 (SXTAB16 adds -in_zp while
 *    unpacking the input; assembly loop), the rest with mt_dot2_s8 / mt_dot1_s8.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

/* One output channel's requantization constants (fast form, see mt_fully_connected_fwd_s8.c). */
typedef struct {
    int64_t k;      /* 2^30 + 2^(30+e) + out_zp * 2^(31+e) */
    int32_t mult;
    int32_t sh;     /* e - 1 */
    int32_t shift;  /* the shift itself (mt_requantize_s8 when not fast) */
    int32_t fast;   /* the single multiply-add form applies */
} fc_rq;

static int rq_init(fc_rq *r, int32_t mult, int32_t shift, int32_t out_zp)
{
    const int fast = (mult >= 0 && shift <= -1 && shift >= -23);
    r->mult = mult;
    r->shift = shift;
    r->fast = fast;
    r->sh = fast ? -shift - 1 : 0;
    r->k = fast ? ((int64_t)1 << 30) + ((int64_t)1 << (30 - shift)) +
                      (int64_t)out_zp * ((int64_t)1 << (31 - shift))
                : 0;
    return fast;
}
/* mt_requantize_s8(acc, mult, shift, out_zp, act_min, act_max); full: a fast-form channel and the
 * clamp [-128, 127] */
static inline int8_t rq_apply(int32_t acc, const fc_rq *r, int32_t out_zp, int32_t act_min,
                              int32_t act_max, int full)
{
    int64_t t;
    int32_t y;
    if (!full && !r->fast) {
        return mt_requantize_s8(acc, r->mult, (int)r->shift, out_zp, act_min, act_max);
    }
    t = (int64_t)acc * r->mult + r->k + (int64_t)((acc < 0) ? MT_INT32_MIN : 0);
    y = mt_asr32(mt_wrap32((uint32_t)((uint64_t)t >> 32)), (int)r->sh); /* MBQM + out_zp */
    if (full) {
        return (int8_t)mt_ssat8(y);
    }
    y = (y < act_min) ? act_min : y;
    return (int8_t)((y > act_max) ? act_max : y);
}

/* Output channels {o, o + 1} (w0, w1; o + 1 only when two) of rows [0, rows), rows even, start
 * values b0, b1 (zero point folded); full: fast-form channels, clamp [-128, 127]. */
static void pair_rows(const mt_fc_params *p, int32_t rows, int32_t cin, const int8_t *x,
                      int32_t cout, const int8_t *w0, const int8_t *w1, int32_t b0, int32_t b1,
                      const fc_rq *r0, const fc_rq *r1, int two, int8_t *y, int full)
{
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    const ptrdiff_t dw = w1 - w0;
    int32_t n, j;
    for (n = 0; n < rows; n += 2) {
        int32_t s[4];
        s[0] = b0;
        s[1] = b1;
        s[2] = b0;
        s[3] = b1;
        if (dw == cin) { /* one stride register for both operands */
            mt_mac2x2d_s8(x, w0, cin, cin, s);
        } else { /* the odd last channel (w1 = w0), a pair across the weight split */
            mt_mac2x2_s8(x, cin, w0, dw, cin, s);
        }
        for (j = 0; j < 2 + 2 * two; ++j) {
            y[(j & 1) * cout + (j >> 1)] =
                rq_apply(s[(j & 1) * 2 + (j >> 1)], (j >> 1) ? r1 : r0, zp, lo, hi, full);
        }
        x += 2 * cin;
        y += 2 * cout;
    }
}

#if MT_DSP_NATIVE
/*
 * pair_rows for Cin = 8 or 16 with the int8 clamp [-128, 127]: one assembly loop over the row
 * pairs, the 2x2 block fully unrolled with immediate offsets (no inner loop, 13 registers) and the
 * four requantizations (rq_apply's SMLAL form + SSAT #8) in the same loop; the per-channel
 * constants are read from a small block on the stack. About 92 (Cin 8) / 132 (Cin 16)
 * instructions per 4 outputs instead of ~130 / ~175 through the generic path.
 */
typedef struct {
    int64_t k0, k1;            /* 0, 8 */
    int32_t mult0, mult1;      /* 16, 20 */
    int32_t sh0, sh1;          /* 24, 28 */
    int32_t b0, b1;            /* 32, 36 */
    int8_t *y;                 /* 40 */
    int32_t cout;              /* 44 */
    const int8_t *xend;        /* 48 */
} pw_blk;

/* 4 inputs at byte offset OFF of both rows (row stride R), both weight rows */
#define PW_STEP(OFF, R)                                                                           \
    "ldr %[t1], [%[x], #" #R "+" #OFF "]\n\t"                                                  \
    "ldr %[t3], [%[x], #" #OFF "]\n\t"                                                         \
    "sxtb16 %[t0], %[t1]\n\t"                                                                   \
    "sxtb16 %[t1], %[t1], ror #8\n\t"                                                           \
    "sxtb16 %[t2], %[t3]\n\t"                                                                   \
    "sxtb16 %[t3], %[t3], ror #8\n\t"                                                           \
    "ldr %[t5], [%[w], #" #R "+" #OFF "]\n\t"                                                  \
    "sxtb16 %[t4], %[t5]\n\t"                                                                   \
    "sxtb16 %[t5], %[t5], ror #8\n\t"                                                           \
    "smlad %[a11], %[t0], %[t4], %[a11]\n\t"                                                    \
    "smlad %[a01], %[t2], %[t4], %[a01]\n\t"                                                    \
    "smlad %[a11], %[t1], %[t5], %[a11]\n\t"                                                    \
    "smlad %[a01], %[t3], %[t5], %[a01]\n\t"                                                    \
    "ldr %[t5], [%[w], #" #OFF "]\n\t"                                                         \
    "sxtb16 %[t4], %[t5]\n\t"                                                                   \
    "sxtb16 %[t5], %[t5], ror #8\n\t"                                                           \
    "smlad %[a10], %[t0], %[t4], %[a10]\n\t"                                                    \
    "smlad %[a00], %[t2], %[t4], %[a00]\n\t"                                                    \
    "smlad %[a10], %[t1], %[t5], %[a10]\n\t"                                                    \
    "smlad %[a00], %[t3], %[t5], %[a00]\n\t"

/* requantize accumulator A into A itself: (k at KOFF) + [A < 0] * INT32_MIN (t4) + A * mult (t2),
 * high word >> sh (t3) - out_zp is in k -, SSAT #8 */
#define PW_RQ(A, KOFF)                                                                            \
    "ldrd %[t0], %[t1], [%[b], #" #KOFF "]\n\t"                                                 \
    "lsr %[t5], %[" #A "], #31\n\t"                                                             \
    "smlal %[t0], %[t1], %[t5], %[t4]\n\t"                                                      \
    "smlal %[t0], %[t1], %[" #A "], %[t2]\n\t"                                                  \
    "asr %[" #A "], %[t1], %[t3]\n\t"                                                           \
    "ssat %[" #A "], #8, %[" #A "]\n\t"

#define PW_TAIL                                                                                   \
    "ldr %[t2], [%[b], #16]\n\t"                                                                \
    "ldr %[t3], [%[b], #24]\n\t"                                                                \
    "mov %[t4], #0x80000000\n\t"                                                                \
    PW_RQ(a00, 0) PW_RQ(a10, 0)                                                                   \
    "ldr %[t2], [%[b], #20]\n\t"                                                                \
    "ldr %[t3], [%[b], #28]\n\t"                                                                \
    PW_RQ(a01, 8) PW_RQ(a11, 8)                                                                   \
    "ldr %[t5], [%[b], #40]\n\t"                                                                \
    "ldr %[t2], [%[b], #44]\n\t"                                                                \
    "strb %[a00], [%[t5]]\n\t"                                                                  \
    "strb %[a01], [%[t5], #1]\n\t"                                                              \
    "strb %[a10], [%[t5], %[t2]]\n\t"                                                           \
    "add %[t5], %[t5], #1\n\t"                                                                  \
    "strb %[a11], [%[t5], %[t2]]\n\t"                                                           \
    "add %[t5], %[t5], %[t2], lsl #1\n\t"                                                       \
    "sub %[t5], %[t5], #1\n\t"                                                                  \
    "str %[t5], [%[b], #40]\n\t"                                                                \
    "ldr %[t0], [%[b], #48]\n\t"                                                                \
    "cmp %[x], %[t0]\n\t"                                                                       \
    "bne 1b\n\t"

#define PW_HEAD                                                                                   \
    "1:\n\t"                                                                                    \
    "ldrd %[a00], %[a01], [%[b], #32]\n\t"                                                      \
    "mov %[a10], %[a00]\n\t"                                                                    \
    "mov %[a11], %[a01]\n\t"

#define PW_OPERANDS                                                                               \
    : [x] "+r"(x), [a00] "=&r"(a00), [a01] "=&r"(a01), [a10] "=&r"(a10), [a11] "=&r"(a11),       \
      [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [t4] "=&r"(t4),            \
      [t5] "=&r"(t5)                                                                              \
    : [w] "r"(w0), [b] "r"(&blk)                                                                  \
    : "cc", "memory"

static void pair_rows_small(int32_t rows, int32_t cin, const int8_t *x, int32_t cout,
                            const int8_t *w0, int32_t b0, int32_t b1, const fc_rq *r0,
                            const fc_rq *r1, int8_t *y)
{
    pw_blk blk;
    uint32_t a00, a01, a10, a11, t0, t1, t2, t3, t4, t5;
    blk.k0 = r0->k;
    blk.k1 = r1->k;
    blk.mult0 = r0->mult;
    blk.mult1 = r1->mult;
    blk.sh0 = r0->sh;
    blk.sh1 = r1->sh;
    blk.b0 = b0;
    blk.b1 = b1;
    blk.y = y;
    blk.cout = cout;
    blk.xend = x + (size_t)rows * (size_t)cin;
    if (cin == 8) {
        __asm__ volatile(PW_HEAD PW_STEP(0, 8) PW_STEP(4, 8) "add %[x], %[x], #16\n\t" PW_TAIL
                         PW_OPERANDS);
    } else {
        __asm__ volatile(PW_HEAD PW_STEP(0, 16) PW_STEP(4, 16) PW_STEP(8, 16) PW_STEP(12, 16)
                         "add %[x], %[x], #32\n\t" PW_TAIL PW_OPERANDS);
    }
}
#endif

#if MT_DSP_NATIVE
/*
 * pair_rows for Cin a multiple of 8 (any size) with the int8 clamp: as pair_rows_small, with an
 * 8-inputs-per-pass loop over Cin (stride register d = Cin: 13 registers); every constant and the
 * loop ends are memory operands on the stack (sp-relative, no base register).
 */
#define PG_STEP(OFF)                                                                              \
    "ldr %[t1], [%[x], %[d]]\n\t"                                                               \
    "ldr %[t3], [%[x]], #4\n\t"                                                                 \
    "sxtb16 %[t0], %[t1]\n\t"                                                                   \
    "sxtb16 %[t1], %[t1], ror #8\n\t"                                                           \
    "sxtb16 %[t2], %[t3]\n\t"                                                                   \
    "sxtb16 %[t3], %[t3], ror #8\n\t"                                                           \
    "ldr %[t5], [%[w], %[d]]\n\t"                                                               \
    "sxtb16 %[t4], %[t5]\n\t"                                                                   \
    "sxtb16 %[t5], %[t5], ror #8\n\t"                                                           \
    "smlad %[a11], %[t0], %[t4], %[a11]\n\t"                                                    \
    "smlad %[a01], %[t2], %[t4], %[a01]\n\t"                                                    \
    "smlad %[a11], %[t1], %[t5], %[a11]\n\t"                                                    \
    "smlad %[a01], %[t3], %[t5], %[a01]\n\t"                                                    \
    "ldr %[t5], [%[w]], #4\n\t"                                                                 \
    "sxtb16 %[t4], %[t5]\n\t"                                                                   \
    "sxtb16 %[t5], %[t5], ror #8\n\t"                                                           \
    "smlad %[a10], %[t0], %[t4], %[a10]\n\t"                                                    \
    "smlad %[a00], %[t2], %[t4], %[a00]\n\t"                                                    \
    "smlad %[a10], %[t1], %[t5], %[a10]\n\t"                                                    \
    "smlad %[a00], %[t3], %[t5], %[a00]\n\t"

#define PG_RQ(A, K)                                                                               \
    "ldrd %[t0], %[t1], %[" #K "]\n\t"                                                          \
    "lsr %[t5], %[" #A "], #31\n\t"                                                             \
    "smlal %[t0], %[t1], %[t5], %[t4]\n\t"                                                      \
    "smlal %[t0], %[t1], %[" #A "], %[t2]\n\t"                                                  \
    "asr %[" #A "], %[t1], %[t3]\n\t"                                                           \
    "ssat %[" #A "], #8, %[" #A "]\n\t"

static void pair_rows_k8(int32_t rows, int32_t cin, const int8_t *x, int32_t cout,
                         const int8_t *w0, int32_t b0, int32_t b1, const fc_rq *r0, const fc_rq *r1,
                         int8_t *y)
{
    int64_t k0 = r0->k, k1 = r1->k;
    int32_t bb[2];
    int32_t m0 = r0->mult, m1 = r1->mult, sh0 = r0->sh, sh1 = r1->sh;
    int8_t *yy = y;
    const int8_t *xend = x + (size_t)rows * (size_t)cin, *kend;
    uint32_t a00, a01, a10, a11, t0, t1, t2, t3, t4, t5;
    const ptrdiff_t d = cin;
    bb[0] = b0;
    bb[1] = b1;
    __asm__ volatile("1:\n\t"
                     "ldrd %[a00], %[a01], %[bb]\n\t"
                     "mov %[a10], %[a00]\n\t"
                     "mov %[a11], %[a01]\n\t"
                     "add %[t0], %[x], %[d]\n\t"
                     "str %[t0], %[kend]\n\t"
                     "2:\n\t" PG_STEP(0) PG_STEP(4)
                     "ldr %[t0], %[kend]\n\t"
                     "cmp %[x], %[t0]\n\t"
                     "bne 2b\n\t"
                     "add %[x], %[x], %[d]\n\t"
                     "sub %[w], %[w], %[d]\n\t"
                     "ldr %[t2], %[m0]\n\t"
                     "ldr %[t3], %[sh0]\n\t"
                     "mov %[t4], #0x80000000\n\t"
                     PG_RQ(a00, k0) PG_RQ(a10, k0)
                     "ldr %[t2], %[m1]\n\t"
                     "ldr %[t3], %[sh1]\n\t"
                     PG_RQ(a01, k1) PG_RQ(a11, k1)
                     "ldr %[t5], %[yy]\n\t"
                     "ldr %[t2], %[cout]\n\t"
                     "strb %[a00], [%[t5]]\n\t"
                     "strb %[a01], [%[t5], #1]\n\t"
                     "strb %[a10], [%[t5], %[t2]]\n\t"
                     "add %[t5], %[t5], #1\n\t"
                     "strb %[a11], [%[t5], %[t2]]\n\t"
                     "add %[t5], %[t5], %[t2], lsl #1\n\t"
                     "sub %[t5], %[t5], #1\n\t"
                     "str %[t5], %[yy]\n\t"
                     "ldr %[t0], %[xend]\n\t"
                     "cmp %[x], %[t0]\n\t"
                     "bne 1b\n\t"
                     : [x] "+r"(x), [w] "+r"(w0), [a00] "=&r"(a00), [a01] "=&r"(a01),
                       [a10] "=&r"(a10), [a11] "=&r"(a11), [t0] "=&r"(t0), [t1] "=&r"(t1),
                       [t2] "=&r"(t2), [t3] "=&r"(t3), [t4] "=&r"(t4), [t5] "=&r"(t5),
                       [yy] "+m"(yy), [kend] "=m"(kend)
                     : [d] "r"(d), [bb] "m"(bb), [k0] "m"(k0), [k1] "m"(k1), [m0] "m"(m0),
                       [m1] "m"(m1), [sh0] "m"(sh0), [sh1] "m"(sh1),
                       [cout] "m"(cout), [xend] "m"(xend)
                     : "cc", "memory");
}
#endif

/* rows [0, rows) (rows even) of x: output channels in pairs, row pairs inside */
static void rows_2(const mt_fc_params *p, const mt_per_channel_quant *q, int32_t rows,
                   int32_t cin, const int8_t *x, int32_t cout, const int8_t *w,
                   const int32_t *bias, int8_t *y)
{
    const int full = (p->act_min == -128 && p->act_max == 127);
    const uint32_t off2 = mt_dup16(-p->in_zp);
    int32_t o;
    for (o = 0; o < cout; o += 2) {
        const int two = (o + 1 < cout);
        const int8_t *w0 = mt_wrow(w, &p->split, o, (size_t)cin);
        const int8_t *w1 = two ? mt_wrow(w, &p->split, o + 1, (size_t)cin) : w0;
        const int32_t b0 = mt_row_fold_s8(w0, cin, off2, (bias != NULL) ? bias[o] : 0);
        const int32_t b1 = mt_row_fold_s8(w1, cin, off2, (two && bias != NULL) ? bias[o + 1] : 0);
        fc_rq r0, r1;
        const int fast = rq_init(&r0, q->mult[o], q->shift[o], p->out_zp) &
                         rq_init(&r1, q->mult[o + two], q->shift[o + two], p->out_zp);
#if MT_DSP_NATIVE
        if (fast && full && two && w1 == w0 + cin && (cin == 8 || cin == 16)) {
            pair_rows_small(rows, cin, x, cout, w0, b0, b1, &r0, &r1, y + o);
            continue;
        }
        if (fast && full && two && w1 == w0 + cin && (cin & 7) == 0) {
            pair_rows_k8(rows, cin, x, cout, w0, b0, b1, &r0, &r1, y + o);
            continue;
        }
#endif
        /* the rest (Cin % 8, a clamp, the odd last channel, a pair across the split, a shift
         * outside the fast form): one C copy */
        pair_rows(p, rows, cin, x, cout, w0, w1, b0, b1, &r0, &r1, two, y + o, fast && full);
    }
}

/* one batch row x: every output channel, four (equally spaced weight rows) at a time, the last
 * Cout % 4 (or a quad across the weight split, or all with a weight zero point) in pairs and
 * singles */
static void row_1(const mt_fc_params *p, const mt_per_channel_quant *q, int32_t cin,
                  const int8_t *x, int32_t cout, const int8_t *w, const int32_t *bias, int8_t *y)
{
    const uint32_t xoff2 = mt_dup16(-p->in_zp), woff2 = mt_dup16(-p->w_zp);
    int32_t o = 0, j;
    while (o < cout) {
        const int8_t *w0 = mt_wrow(w, &p->split, o, (size_t)cin);
        int32_t s[4], cnt;
        for (j = 0; j < 4; ++j) {
            s[j] = (bias != NULL && o + j < cout) ? bias[o + j] : 0;
        }
        if (p->w_zp == 0 && o + 4 <= cout &&
            mt_wrow(w, &p->split, o + 3, (size_t)cin) == w0 + 3 * cin) {
            mt_mac1x4_s8(x, w0, cin, cin, xoff2, s);
            cnt = 4;
        } else if (o + 2 <= cout) {
            mt_dot2_s8(x, w0, mt_wrow(w, &p->split, o + 1, (size_t)cin), cin, xoff2, woff2, &s[0],
                       &s[1]);
            cnt = 2;
        } else {
            s[0] = mt_dot1_s8(x, w0, cin, xoff2, woff2, s[0]);
            cnt = 1;
        }
        for (j = 0; j < cnt; ++j, ++o) {
            fc_rq r;
            (void)rq_init(&r, q->mult[o], q->shift[o], p->out_zp);
            y[o] = rq_apply(s[j], &r, p->out_zp, p->act_min, p->act_max, 0);
        }
    }
}

mt_status mt_fully_connected_fwd_s8_dsp(const mt_fc_params *p, const mt_per_channel_quant *q,
                                        int32_t batch, int32_t in_features, const int8_t *in,
                                        int32_t out_features, const int8_t *w,
                                        const int32_t *bias, int8_t *out)
{
    /* the row pairs need symmetric weights (the zero-point fold); a per-tensor weight zero point
     * (rare) takes row_1 for every row */
    const int32_t even = (p->w_zp == 0) ? (batch & ~(int32_t)1) : 0;
    int32_t n;
    if (batch < 0 || in_features < 1 || out_features < 1) {
        return MT_ERR_ARG;
    }
    if (even > 0) {
        rows_2(p, q, even, in_features, in, out_features, w, bias, out);
    }
    for (n = even; n < batch; ++n) {
        row_1(p, q, in_features, in + (size_t)n * (size_t)in_features, out_features, w, bias,
              out + (size_t)n * (size_t)out_features);
    }
    return MT_OK;
}
