/**
 * @file mt_fully_connected_bwd_input_s16_dsp.c
 * @brief fully_connected input gradient with the Arm DSP extension; same results as
 *        mt_fully_connected_bwd_input_s16 (same gs preparation prep_gs - the integers of
 *        mt_grad_mul_q31_s16 + mt_grad_headroom_s16 -, same renormalisation).
 *
 * gx[n,k] = sum_o gs[n,o] * (w[o,k] - w_zp) reduces over the output channels: SMLAD takes two of
 * them at a time, {gs[n,o], gs[n,o+1]} (one word of gs) . {w'[o,k], w'[o+1,k]}.
 *
 * With the acc scratch (what generated programs pass):
 *  - MT_BWD_PAIR_ROWS batch rows or more (pointwise convs: the pixels): for each pair of weight
 *    rows and each chunk of up to MT_BWD_CHUNK inputs, the pairs {w'[o,k], w'[o+1,k]} are built
 *    once into a stack buffer (per 4 k: 2 loads, PKHBT/PKHTB, 4 SXTAB16 with -w_zp), then every
 *    batch row whose gs pair is not zero adds them into its acc row, acc[n, k] =
 *    SMLAD(pair[k], gs pair, acc[n, k]), the assembly loop doing 8 k per LDM (pairs) / LDM (acc) /
 *    4 SMLAD / STM (16 MACs in 16 instructions);
 *  - fewer rows (fully_connected, batch 1): per batch row the non-zero gs[n, o] are paired up in
 *    order (ReLU-masked gradients are sparse; any two weight rows) and add_rows builds the pairs
 *    on the fly (assembly: 2 loads, PKHBT/PKHTB, 4 SXTAB16, LDM, 4 SMLAD, STM per 8 MACs).
 * Without the scratch: two passes (max, recompute) of register-blocked dot products (dx_accs).
 * The headroom pre-shift of gs bounds every partial sum in any order, so the int32 sums are the
 * portable kernel's. gs itself comes from prep_gs (also in the portable kernel; the per-channel
 * extremes of g with SSUB16/SEL here).
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

/** k-chunk of the pair buffer (uint32 words on the stack: 512 bytes). */
#define MT_BWD_CHUNK 128
/** Batch rows from which the pair buffer pays (below: pairs built on the fly per row, add_rows). */
#define MT_BWD_PAIR_ROWS 4

/* ext[c] = {max_n g[n, c], min_n g[n, c]} (int16 lanes); returns max |g|. Channel pairs: one
 * word load per row, SSUB16/SEL lane-wise max and min (mt_max16x2 / mt_min16x2). */
static uint32_t col_extremes(const int16_t *g, int32_t nb, int32_t cout, uint32_t *ext)
{
    uint32_t amax = 0u;
    int32_t n, c = 0, j;
    for (; c + 2 <= cout; c += 2) {
        const int16_t *q = g + c;
        uint32_t mx = mt_read_s16x2(q), mn = mx;
        for (n = 1; n < nb; ++n) {
            uint32_t v;
            q += cout;
            v = mt_read_s16x2(q);
            mx = mt_max16x2(mx, v);
            mn = mt_min16x2(mn, v);
        }
        for (j = 0; j < 2; ++j) {
            const int32_t hi = mt_lane16(mx, j), lo = mt_lane16(mn, j);
            const uint32_t a = (mt_uabs32(hi) > mt_uabs32(lo)) ? mt_uabs32(hi) : mt_uabs32(lo);
            ext[c + j] = mt_pack16(hi, lo);
            amax = (a > amax) ? a : amax;
        }
    }
    if (c < cout) {
        const int16_t *q = g + c;
        int32_t mx = *q, mn = *q;
        uint32_t a;
        for (n = 1; n < nb; ++n) {
            int32_t v;
            q += cout;
            v = *q;
            mx = (v > mx) ? v : mx;
            mn = (v < mn) ? v : mn;
        }
        ext[c] = mt_pack16(mx, mn);
        a = (mt_uabs32(mx) > mt_uabs32(mn)) ? mt_uabs32(mx) : mt_uabs32(mn);
        amax = (a > amax) ? a : amax;
    }
    return amax;
}

#include "mt_fc_bwd_prep.h"

/* s[j] += sum_{o < len} g[o] * (r[o * cin + j] - w_zp), j < 4: weight rows r + o * cin (one
 * array), gs pairs {g[o], g[o+1]} . {w'[o, j], w'[o+1, j]} (PKHBT/PKHTB pair the rows, SXTAB16
 * subtracts w_zp), 16 instructions per 8 multiply-accumulates. */
static void gather4(const int16_t *g, const int8_t *r, int32_t cin, int32_t len, uint32_t woff2,
                    int32_t s[4])
{
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    const int16_t *end = g + (len & ~(int32_t)1);
    while (g != end) {
        const uint32_t gg = mt_read_s16x2(g);
        const uint32_t ua = mt_read_s8x4(r), ub = mt_read_s8x4(r + cin);
        const uint32_t lo = mt_pkhbt(ua, ub), hi = mt_pkhtb(ub, ua);
        s0 = mt_smlad(gg, mt_sxtab16(woff2, lo), s0);
        s1 = mt_smlad(gg, mt_sxtab16_ror8(woff2, lo), s1);
        s2 = mt_smlad(gg, mt_sxtab16(woff2, hi), s2);
        s3 = mt_smlad(gg, mt_sxtab16_ror8(woff2, hi), s3);
        g += 2;
        r += 2 * cin;
    }
    if ((len & 1) != 0) {
        const int32_t gv = g[0], woff = mt_lane16(woff2, 0);
        s0 = mt_wrap_add32(s0, gv * ((int32_t)r[0] + woff));
        s1 = mt_wrap_add32(s1, gv * ((int32_t)r[1] + woff));
        s2 = mt_wrap_add32(s2, gv * ((int32_t)r[2] + woff));
        s3 = mt_wrap_add32(s3, gv * ((int32_t)r[3] + woff));
    }
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
}

/* a[j] = sum_o gs_n[o] * (w[o, k0 + j] - w_zp), j < cnt = min(4, Cin - k0); returns cnt. The
 * output channels in at most two runs of one stride (split weights: rows [0, rows) at w, the
 * rest at the tail). */
static int32_t dx_accs(const mt_fc_train_params *p, const int16_t *gs_n, const int8_t *w,
                       int32_t k0, int32_t a[4])
{
    const int32_t cout = p->out_features, cin = p->in_features;
    const uint32_t woff2 = mt_dup16(-p->w_zp);
    const int32_t head = (p->split.tail != NULL) ? p->split.rows : cout;
    int32_t j, o, cnt = cin - k0;
    if (cnt >= 4) {
        a[0] = a[1] = a[2] = a[3] = 0;
        gather4(gs_n, w + k0, cin, head, woff2, a);
        if (head < cout) {
            gather4(gs_n + head, p->split.tail + k0, cin, cout - head, woff2, a);
        }
        return 4;
    }
    for (j = 0; j < cnt; ++j) { /* Cin % 4 tail */
        const int32_t k = k0 + j;
        int32_t s = 0;
        for (o = 0; o < cout; ++o) {
            s = mt_wrap_add32(s, (int32_t)gs_n[o] *
                                     ((int32_t)mt_wrow(w, &p->split, o, (size_t)cin)[k] - p->w_zp));
        }
        a[j] = s;
    }
    return cnt;
}

/* pair[j] = {ra[j] - w_zp, rb[j] - w_zp} (16-bit lanes), j < len */
static void build_pairs(uint32_t *pair, const int8_t *ra, const int8_t *rb, int32_t len,
                        uint32_t woff2)
{
    const int32_t woff = mt_lane16(woff2, 0);
    int32_t j = 0;
    for (; j + 4 <= len; j += 4) {
        const uint32_t ua = mt_read_s8x4(ra + j), ub = mt_read_s8x4(rb + j);
        const uint32_t lo = mt_pkhbt(ua, ub), hi = mt_pkhtb(ub, ua); /* a0 a1 b0 b1, a2 a3 b2 b3 */
        pair[j] = mt_sxtab16(woff2, lo);
        pair[j + 1] = mt_sxtab16_ror8(woff2, lo);
        pair[j + 2] = mt_sxtab16(woff2, hi);
        pair[j + 3] = mt_sxtab16_ror8(woff2, hi);
    }
    for (; j < len; ++j) {
        pair[j] = mt_pack16((int32_t)ra[j] + woff, (int32_t)rb[j] + woff);
    }
}

/* a[j] = SMLAD(pair[j], gg, a[j]), j < len */
static inline void add_pairs(int32_t *a, const uint32_t *pair, uint32_t gg, int32_t len)
{
#if MT_DSP_NATIVE
    if (len >= 8) { /* 8 per pass: LDM pairs, LDM acc, 4 SMLAD, STM acc, twice (r7/r9 left alone) */
        int32_t *end = a + (len & ~(int32_t)7);
        __asm__ volatile("1:\n\t"
                         "ldmia %[p]!, {r4, r5, r6, r8}\n\t"
                         "ldmia %[a], {r10, r11, r12, lr}\n\t"
                         "smlad r10, r4, %[g], r10\n\t"
                         "smlad r11, r5, %[g], r11\n\t"
                         "smlad r12, r6, %[g], r12\n\t"
                         "smlad lr, r8, %[g], lr\n\t"
                         "stmia %[a]!, {r10, r11, r12, lr}\n\t"
                         "ldmia %[p]!, {r4, r5, r6, r8}\n\t"
                         "ldmia %[a], {r10, r11, r12, lr}\n\t"
                         "smlad r10, r4, %[g], r10\n\t"
                         "smlad r11, r5, %[g], r11\n\t"
                         "smlad r12, r6, %[g], r12\n\t"
                         "smlad lr, r8, %[g], lr\n\t"
                         "stmia %[a]!, {r10, r11, r12, lr}\n\t"
                         "cmp %[a], %[e]\n\t"
                         "bne 1b\n\t"
                         : [a] "+r"(a), [p] "+r"(pair)
                         : [g] "r"(gg), [e] "r"(end)
                         : "r4", "r5", "r6", "r8", "r10", "r11", "r12", "lr", "cc", "memory");
        len &= 7;
    }
#endif
    for (; len > 0; --len) {
        *a = mt_smlad(*pair++, gg, *a);
        ++a;
    }
}

/* a[j] = SMLAD({ra[j] - w_zp, rb[j] - w_zp}, gg, a[j]), j < len: the pairs built on the fly (one
 * batch row: nothing to share them with) */
static void add_rows(int32_t *a, const int8_t *ra, const int8_t *rb, int32_t len, uint32_t woff2,
                     uint32_t gg)
{
    const int32_t woff = mt_lane16(woff2, 0);
    int32_t j = 0;
#if MT_DSP_NATIVE
    if (len >= 4) { /* 4 per pass: 2 loads, PKHBT/PKHTB, 4 SXTAB16, LDM acc, 4 SMLAD, STM acc */
        const int8_t *end = ra + (len & ~(int32_t)3);
        uint32_t t0, t1, t2;
        __asm__ volatile("1:\n\t"
                         "ldr %[t0], [%[ra]], #4\n\t"
                         "ldr %[t1], [%[rb]], #4\n\t"
                         "pkhbt %[t2], %[t0], %[t1], lsl #16\n\t"
                         "pkhtb %[t1], %[t1], %[t0], asr #16\n\t"
                         "ldmia %[a], {r4, r5, r6, r8}\n\t"
                         "sxtab16 %[t0], %[wo], %[t2]\n\t"
                         "smlad r4, %[t0], %[g], r4\n\t"
                         "sxtab16 %[t0], %[wo], %[t2], ror #8\n\t"
                         "smlad r5, %[t0], %[g], r5\n\t"
                         "sxtab16 %[t0], %[wo], %[t1]\n\t"
                         "smlad r6, %[t0], %[g], r6\n\t"
                         "sxtab16 %[t0], %[wo], %[t1], ror #8\n\t"
                         "smlad r8, %[t0], %[g], r8\n\t"
                         "stmia %[a]!, {r4, r5, r6, r8}\n\t"
                         "cmp %[ra], %[e]\n\t"
                         "bne 1b\n\t"
                         : [a] "+r"(a), [ra] "+r"(ra), [rb] "+r"(rb), [t0] "=&r"(t0),
                           [t1] "=&r"(t1), [t2] "=&r"(t2)
                         : [g] "r"(gg), [wo] "r"(woff2), [e] "r"(end)
                         : "r4", "r5", "r6", "r8", "cc", "memory");
        len &= 3;
    }
#endif
    for (; j + 4 <= len; j += 4) {
        const uint32_t ua = mt_read_s8x4(ra + j), ub = mt_read_s8x4(rb + j);
        const uint32_t lo = mt_pkhbt(ua, ub), hi = mt_pkhtb(ub, ua);
        a[j] = mt_smlad(mt_sxtab16(woff2, lo), gg, a[j]);
        a[j + 1] = mt_smlad(mt_sxtab16_ror8(woff2, lo), gg, a[j + 1]);
        a[j + 2] = mt_smlad(mt_sxtab16(woff2, hi), gg, a[j + 2]);
        a[j + 3] = mt_smlad(mt_sxtab16_ror8(woff2, hi), gg, a[j + 3]);
    }
    for (; j < len; ++j) {
        a[j] = mt_smlad(mt_pack16((int32_t)ra[j] + woff, (int32_t)rb[j] + woff), gg, a[j]);
    }
}

mt_status mt_fully_connected_bwd_input_s16_dsp(const mt_fc_train_params *p, int16_t *gs,
                                               int32_t *acc, const int16_t *g, int32_t g_e,
                                               const int8_t *w, int16_t *gx, int32_t *gx_e)
{
    const int32_t nb = p->batch, cin = p->in_features, cout = p->out_features;
    int32_t n, k, j, cnt, gs_e, s;
    int32_t blk[4];
    uint32_t amax = 0u;
    if (nb < 1 || cin < 1 || cout < 1) {
        return MT_ERR_ARG;
    }
    /* the acc scratch (not used yet) holds the per-channel extremes when it is large enough and
     * there are rows enough for them to pay */
    prep_gs(p, g, g_e, gs, &gs_e,
            (acc != NULL && nb >= 4 && nb * cin >= cout) ? (uint32_t *)(void *)acc : NULL);
    if (acc != NULL) {
        const uint32_t woff2 = mt_dup16(-p->w_zp);
        uint32_t pair[MT_BWD_CHUNK];
        int32_t o, k0;
        for (k = 0; k < nb * cin; ++k) {
            acc[k] = 0;
        }
        if (nb < MT_BWD_PAIR_ROWS) { /* per row: the non-zero gs[n, o] paired up, any two rows */
            for (n = 0; n < nb; ++n) {
                const int16_t *gs_n = gs + (size_t)n * (size_t)cout;
                int32_t *a = acc + (size_t)n * (size_t)cin;
                const int8_t *ra = NULL;
                int32_t ga = 0;
                for (o = 0; o < cout; ++o) {
                    if (gs_n[o] == 0) {
                        continue;
                    }
                    if (ra == NULL) {
                        ra = mt_wrow(w, &p->split, o, (size_t)cin);
                        ga = gs_n[o];
                    } else {
                        add_rows(a, ra, mt_wrow(w, &p->split, o, (size_t)cin), cin, woff2,
                                 mt_pack16(ga, gs_n[o]));
                        ra = NULL;
                    }
                }
                if (ra != NULL) { /* the odd one: its pair's second lane meets a zero gradient */
                    add_rows(a, ra, ra, cin, woff2, mt_pack16(ga, 0));
                }
            }
            return mt_grad_renormalize_s32(nb * cin, acc, gs_e, gx, gx_e);
        }
        for (o = 0; o < cout; o += 2) { /* pairs of weight rows, built once for all batch rows */
            const int two = (o + 1 < cout);
            const int8_t *ra = mt_wrow(w, &p->split, o, (size_t)cin);
            const int8_t *rb = two ? mt_wrow(w, &p->split, o + 1, (size_t)cin) : ra;
            for (k0 = 0; k0 < cin; k0 += MT_BWD_CHUNK) {
                const int32_t len = (cin - k0 < MT_BWD_CHUNK) ? cin - k0 : MT_BWD_CHUNK;
                build_pairs(pair, ra + k0, rb + k0, len, woff2);
                for (n = 0; n < nb; ++n) {
                    const int16_t *gs_n = gs + (size_t)n * (size_t)cout + (size_t)o;
                    /* the odd last channel: its pair's second lane meets a zero gradient */
                    const uint32_t gg = two ? mt_read_s16x2(gs_n) : mt_pack16(gs_n[0], 0);
                    if (gg != 0u) {
                        add_pairs(acc + (size_t)n * (size_t)cin + (size_t)k0, pair, gg, len);
                    }
                }
            }
        }
        return mt_grad_renormalize_s32(nb * cin, acc, gs_e, gx, gx_e);
    }
    for (n = 0; n < nb; ++n) { /* pass 1: max |acc| */
        for (k = 0; k < cin; k += cnt) {
            cnt = dx_accs(p, gs + (size_t)n * (size_t)cout, w, k, blk);
            for (j = 0; j < cnt; ++j) {
                const uint32_t a = mt_uabs32(blk[j]);
                amax = (a > amax) ? a : amax;
            }
        }
    }
    s = mt_grad_renorm_shift(amax);
    for (n = 0; n < nb; ++n) { /* pass 2: recompute, write */
        for (k = 0; k < cin; k += cnt) {
            cnt = dx_accs(p, gs + (size_t)n * (size_t)cout, w, k, blk);
            for (j = 0; j < cnt; ++j) {
                gx[(size_t)n * (size_t)cin + (size_t)(k + j)] =
                    (int16_t)mt_rshift_round32(blk[j], s);
            }
        }
    }
    *gx_e = gs_e + s;
    return MT_OK;
}
