/**
 * @file mt_fully_connected_bwd_input_s16.c
 * @brief fully_connected input gradient; bit-exact with FullyConnected.backward_int8 position 0:
 *        gs = headroom(scale_channels(g, w_mult, w_shift), w_bits, Cout),
 *        gx = renormalize(gs @ (w - w_zp)).
 *
 * With the acc scratch (what generated programs pass): scatter form, one batch row at a time,
 * acc[n, :] += gs[n, o] * (w[o, :] - w_zp) over the non-zero gs[n, o] only (ReLU-masked gradients
 * are sparse), four weight rows per pass over Cin (one load/add/store of acc per four MACs). The
 * weight zero point is taken out of the pass: sum_i g_i (r_i[k] - w_zp) =
 * sum_i g_i r_i[k] - w_zp * sum_i g_i. The headroom pre-shift of gs bounds every partial sum (any
 * order, any subset of the output channels), so the int32 sums are exact and equal the engine's.
 * Without the scratch: two passes (max |acc|, then recompute and write), a dot product per input.
 * gs: prep_gs, the integers of mt_grad_mul_q31_s16 + mt_grad_headroom_s16 in two or three passes
 * over g instead of six (see there).
 */
#include "mt_kernels_train.h"

size_t mt_fully_connected_bwd_input_s16_scratch_bytes(const mt_fc_train_params *p, int gs_aliases_g,
                                                      int single_pass)
{
    size_t bytes = 0u;
    if (!gs_aliases_g) {
        bytes += (size_t)p->batch * (size_t)p->out_features * sizeof(int16_t);
        bytes = (bytes + 3u) & ~(size_t)3u;
    }
    if (single_pass) {
        bytes += (size_t)p->batch * (size_t)p->in_features * sizeof(int32_t);
    }
    return bytes;
}

/* {lo, hi} 16-bit lanes of a word */
static inline uint32_t pack16(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
}

/* ext[c] = {max_n g[n, c], min_n g[n, c]} (int16 lanes); returns max |g| */
static uint32_t col_extremes(const int16_t *g, int32_t nb, int32_t cout, uint32_t *ext)
{
    uint32_t amax = 0u;
    int32_t n, c;
    for (c = 0; c < cout; ++c) {
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
        ext[c] = pack16(mx, mn);
        a = mt_uabs32(mx);
        a = (mt_uabs32(mn) > a) ? mt_uabs32(mn) : a;
        amax = (a > amax) ? a : amax;
    }
    return amax;
}

#include "mt_fc_bwd_prep.h"

static int32_t dx_dot(const mt_fc_train_params *p, const int16_t *gs_n, const int8_t *w, int32_t k)
{
    const int32_t cout = p->out_features, cin = p->in_features;
    int32_t o, acc = 0;
    for (o = 0; o < cout; ++o) {
        acc += (int32_t)gs_n[o] * ((int32_t)mt_wrow(w, &p->split, o, (size_t)cin)[k] - p->w_zp);
    }
    return acc;
}

/* a[k] += sum_{i < 4} g[i] * r[i][k] - c, k < len */
static void scatter4(int32_t *a, const int8_t *const r[4], const int32_t g[4], int32_t c,
                     int32_t len)
{
    const int8_t *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3];
    const int32_t g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3];
    int32_t k;
    if (c != 0) {
        for (k = 0; k < len; ++k) {
            a[k] += g0 * r0[k] + g1 * r1[k] + g2 * r2[k] + g3 * r3[k] - c;
        }
        return;
    }
    /* c = 0 (symmetric weights): accumulate into a[k] directly, two k per pass; every
     * intermediate is a partial sum of the exact result (bounded by the headroom) */
    for (k = 0; k + 2 <= len; k += 2) {
        int32_t a0 = a[k], a1 = a[k + 1];
        a0 += g0 * r0[k];
        a1 += g0 * r0[k + 1];
        a0 += g1 * r1[k];
        a1 += g1 * r1[k + 1];
        a0 += g2 * r2[k];
        a1 += g2 * r2[k + 1];
        a0 += g3 * r3[k];
        a1 += g3 * r3[k + 1];
        a[k] = a0;
        a[k + 1] = a1;
    }
    if (k < len) {
        a[k] += g0 * r0[k] + g1 * r1[k] + g2 * r2[k] + g3 * r3[k];
    }
}

mt_status mt_fully_connected_bwd_input_s16(const mt_fc_train_params *p, int16_t *gs, int32_t *acc,
                                           const int16_t *g, int32_t g_e, const int8_t *w,
                                           int16_t *gx, int32_t *gx_e)
{
    const int32_t nb = p->batch, cin = p->in_features, cout = p->out_features;
    int32_t n, k, gs_e, s;
    uint32_t amax = 0u;
    if (nb < 1 || cin < 1 || cout < 1) {
        return MT_ERR_ARG;
    }
    /* the acc scratch (not used yet) holds the per-channel extremes when it is large enough and
     * there are rows enough for them to pay */
    prep_gs(p, g, g_e, gs, &gs_e,
            (acc != NULL && nb >= 4 && nb * cin >= cout) ? (uint32_t *)(void *)acc : NULL);
    if (acc != NULL) { /* scatter: acc[n, :] += gs[n, o] * (w[o, :] - w_zp), rows contiguous */
        for (k = 0; k < nb * cin; ++k) {
            acc[k] = 0;
        }
        for (n = 0; n < nb; ++n) {
            int32_t *a = acc + (size_t)n * (size_t)cin;
            const int16_t *gs_n = gs + (size_t)n * (size_t)cout;
            const int8_t *r[4];
            int32_t gv[4], cnt = 0, o;
            for (o = 0; o < cout; ++o) { /* the non-zero gs[n, o], four rows at a time */
                if (gs_n[o] == 0) {
                    continue;
                }
                gv[cnt] = gs_n[o];
                r[cnt] = mt_wrow(w, &p->split, o, (size_t)cin);
                if (++cnt == 4) {
                    scatter4(a, r, gv, p->w_zp * (gv[0] + gv[1] + gv[2] + gv[3]), cin);
                    cnt = 0;
                }
            }
            if (cnt > 0) { /* the last one to three rows: padded with zero gradients */
                int32_t j, sum = 0;
                for (j = 0; j < 4; ++j) {
                    if (j >= cnt) {
                        gv[j] = 0;
                        r[j] = r[0];
                    }
                    sum += gv[j];
                }
                scatter4(a, r, gv, p->w_zp * sum, cin);
            }
        }
        return mt_grad_renormalize_s32(nb * cin, acc, gs_e, gx, gx_e);
    }
    for (n = 0; n < nb; ++n) { /* pass 1: max |acc| */
        for (k = 0; k < cin; ++k) {
            const uint32_t a = mt_uabs32(dx_dot(p, gs + (size_t)n * (size_t)cout, w, k));
            amax = (a > amax) ? a : amax;
        }
    }
    s = mt_grad_renorm_shift(amax);
    for (n = 0; n < nb; ++n) { /* pass 2: recompute, write */
        for (k = 0; k < cin; ++k) {
            gx[(size_t)n * (size_t)cin + (size_t)k] =
                (int16_t)mt_rshift_round32(dx_dot(p, gs + (size_t)n * (size_t)cout, w, k), s);
        }
    }
    *gx_e = gs_e + s;
    return MT_OK;
}
