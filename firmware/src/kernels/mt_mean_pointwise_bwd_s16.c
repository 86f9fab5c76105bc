/**
 * @file mt_mean_pointwise_bwd_s16.c
 * @brief Fused backward of  mean (global over H, W)  <-  pointwise conv2d (relu/relu6 mask, bias):
 *        the integers of mt_mean_bwd_input_s16 + mt_act_mask_apply_s16 + mt_bias_update_s32 +
 *        mt_pointwise_conv2d_bwd_input_s16 without their [N*H*W, C] gradient (see
 *        mt_kernels_fused.h for the contract and the single-pass argument).
 *
 * Why the integers are those of the sequence. The unfused G has G[n, q, c] = k * v[n, c], k in
 * {0, 1} the mask bit, v the mean's value (mt_mean_bwd_input_s16's per-element formula, taken
 * here with the same whole-g constants: max |g| is over g itself, not over G). Let cnt[n, c] be
 * the number of unmasked pixels of sample n in channel c.
 *  - mt_bias_update_s32: the OR of |G| over channels [0, rows) is the OR of |v[n, c]| over the
 *    (n, c) with cnt > 0 (a masked 0 adds no bit); the column sum with headroom shift sh is
 *    sum_q RDBPOT(G, sh) = sum_n cnt[n, c] * RDBPOT(v[n, c], sh) (RDBPOT(0) = 0), the same value
 *    mod 2^32 as the reference's wrapping uint32 additions; the rest (max |sum|, renormalisation,
 *    sgd_delta, the appliers, in channel order) is the same code on the same integers.
 *  - prep_gs (mt_fc_bwd_prep.h): max |G| and max |t|, t = SRDHM(G << lsh, mult[c]), over the
 *    whole tensor are the maxima over the (n, c) with cnt > 0 (a masked element has t = 0, which
 *    never raises a max of magnitudes); gs[n, q, c] = k * f(v[n, c]) with f the same rounding
 *    (the same two branches on s + s2), f(0) = 0. gs_e = G_e + w_shift - lsh + s + s2; all-zero
 *    G: gs = 0, gs_e = G_e + headroom_shift(0, w_bits, C).
 *  - the MACs: gx[p, k] = sum over unmasked c of gs * w[c, k] (w_zp = 0 for pointwise), exact in
 *    int32 in any order (the headroom bounds every partial sum of at most C products), then
 *    renormalise: s3 = renorm_shift(max |acc|), gx = RDBPOT(acc, s3), gx_e = gs_e + s3, which is
 *    what both the scatter (acc) and the two-pass forms of the fully_connected kernel give.
 */
#include "mt_kernels_fused.h"

/* scratch layout */
typedef struct {
    int32_t *acc;     /* [Cin] */
    int16_t *gs;      /* [N*C]: counts (uint16, when hw <= 65535) then gs */
    uint8_t *rsh;     /* [P] single pass: row shifts */
    uint8_t *sign;    /* [ceil(P*Cin / 8)] single pass: sign bits */
} mpb_scratch;

/* floor((x * m + 2^30) / 2^31) = mt_srdhm(x, m) unless both are INT32_MIN (mt_fc_bwd_prep.h) */
static inline int32_t srdhm_floor(int32_t x, int32_t m)
{
    return mt_wrap32((uint32_t)((uint64_t)((int64_t)x * m + ((int64_t)1 << 30)) >> 31));
}

static size_t align4(size_t b)
{
    return (b + 3u) & ~(size_t)3u;
}

static int valid_geometry(const mt_conv_train_params *p, mt_fc_train_params *f)
{
    return mt_pointwise_as_fc(p, f) == MT_OK && p->in.n >= 1 && p->in.h >= 1 && p->in.w >= 1 &&
           p->in.c >= 1 && p->out.c >= 1;
}

size_t mt_mean_pointwise_bwd_s16_scratch_bytes(const mt_conv_train_params *p, int single_pass)
{
    mt_fc_train_params f;
    size_t bytes, pix;
    if (!valid_geometry(p, &f)) {
        return 0u;
    }
    pix = (size_t)f.batch;
    bytes = (size_t)f.in_features * sizeof(int32_t);
    bytes += align4((size_t)p->out.n * (size_t)f.out_features * sizeof(int16_t));
    if (single_pass) {
        bytes += pix + (pix * (size_t)f.in_features + 7u) / 8u;
    }
    return align4(bytes);
}

/* the mean's value of element i of g (mt_mean_bwd_input_s16) */
typedef struct {
    int32_t zero;  /* max |g| == 0 */
    int32_t lsh;
    int32_t s;
    int32_t mult;
} mpb_mean;

static inline int32_t mean_value(const mpb_mean *m, int32_t gi)
{
    return m->zero ? 0 : mt_rshift_round32(mt_srdhm(mt_norm31(gi, m->lsh), m->mult), m->s);
}

/* unmasked pixels of (n, c) */
typedef struct {
    const uint8_t *mask;   /* NULL: every pixel */
    const uint16_t *cnt;   /* [N*C] counts, or NULL (hw > 65535: counted on demand) */
    int32_t hw;
    int32_t channels;
} mpb_counts;

static uint32_t count_at(const mpb_counts *k, int32_t n, int32_t c)
{
    size_t i, end;
    uint32_t cnt = 0u;
    if (k->mask == NULL) {
        return (uint32_t)k->hw;
    }
    if (k->cnt != NULL) {
        return k->cnt[(size_t)n * (size_t)k->channels + (size_t)c];
    }
    i = (size_t)n * (size_t)k->hw * (size_t)k->channels + (size_t)c;
    end = i + (size_t)k->hw * (size_t)k->channels;
    for (; i < end; i += (size_t)k->channels) {
        cnt += (uint32_t)(k->mask[i >> 3] >> (i & 7u)) & 1u;
    }
    return cnt;
}

/* cnt[n*C + c] = unmasked pixels of (n, c): one pass over the mask bits, a byte at a time */
static void count_mask(const uint8_t *mask, int32_t nb, int32_t hw, int32_t channels,
                       uint16_t *cnt)
{
    size_t i = 0u;
    int32_t n, q, c;
    for (i = 0u; i < (size_t)nb * (size_t)channels; ++i) {
        cnt[i] = 0u;
    }
    i = 0u;
    for (n = 0; n < nb; ++n) {
        uint16_t *cn = cnt + (size_t)n * (size_t)channels;
        for (q = 0; q < hw; ++q) {
            for (c = 0; c < channels;) {
                const uint32_t b = (uint32_t)i & 7u;
                uint32_t byte = (uint32_t)mask[i >> 3] >> b;
                int32_t take = 8 - (int32_t)b, j;
                if (take > channels - c) {
                    take = channels - c;
                }
                if (byte == 0u) { /* all of them masked */
                    c += take;
                    i += (size_t)take;
                    continue;
                }
                for (j = 0; j < take; ++j, byte >>= 1) {
                    cn[c + j] = (uint16_t)(cn[c + j] + (byte & 1u));
                }
                c += take;
                i += (size_t)take;
            }
        }
    }
}

/* column sum of bias channel c: sum_n cnt[n, c] * RDBPOT(v[n, c], sh), wrapping */
static int32_t bias_sum(const mpb_mean *m, const mpb_counts *k, const int16_t *g, int32_t nb,
                        int32_t c, int32_t sh)
{
    uint32_t acc = 0u;
    int32_t n;
    for (n = 0; n < nb; ++n) {
        const uint32_t cnt = count_at(k, n, c);
        int32_t v;
        if (cnt == 0u) {
            continue;
        }
        v = mean_value(m, g[(size_t)n * (size_t)k->channels + (size_t)c]);
        if (sh > 0) {
            v = mt_rdbpot(v, (int)sh);
        }
        acc += cnt * (uint32_t)v;
    }
    return mt_wrap32(acc);
}

/* mt_bias_update_s32 on the broadcast, masked G */
static void bias_update(const mt_sgd_params *u, mt_sgd_state *st, int32_t rows,
                        const mpb_mean *m, const mpb_counts *k, const int16_t *g, int32_t nb,
                        int32_t pixels, int32_t ge, int32_t *bias)
{
    uint32_t om = 0u, amax = 0u;
    int32_t n, c, sh, sr, e;
    mt_sgd_norm nq;
    for (c = 0; c < rows; ++c) {
        for (n = 0; n < nb; ++n) {
            if (count_at(k, n, c) != 0u) {
                om |= mt_uabs32(mean_value(m, g[(size_t)n * (size_t)k->channels + (size_t)c]));
            }
        }
    }
    sh = mt_grad_headroom_shift(om, 0, pixels);
    for (c = 0; c < rows; ++c) {
        const uint32_t a = mt_uabs32(bias_sum(m, k, g, nb, c, sh));
        amax = (a > amax) ? a : amax;
    }
    sr = mt_grad_renorm_shift(amax);
    e = ge + sh + sr;
    nq = mt_sgd_norm_make(u, mt_urshift_round32(amax, sr), e);
    for (c = 0; c < rows; ++c) {
        const int32_t mm = mt_rshift_round32(bias_sum(m, k, g, nb, c, sh), sr);
        bias[c] = mt_sgd_apply_b32_elem(u, st, c, bias[c], mt_sgd_delta_elem(u, &nq, mm, c));
    }
}

/* a[k] += sum_{i < 4} g[i] * r[i][k], k < len (every partial sum bounded by the headroom) */
static void scatter4(int32_t *a, const int8_t *const r[4], const int32_t gv[4], int32_t len)
{
    const int8_t *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3];
    const int32_t g0 = gv[0], g1 = gv[1], g2 = gv[2], g3 = gv[3];
    int32_t k;
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

/* a[0..cin) = sum over the unmasked channels c of pixel bit row bit0 (mask NULL: all) of
 * gs_n[c] * w[c, :]; returns max |a| */
static uint32_t pixel_row(const mt_conv_train_params *p, int32_t channels, int32_t cin,
                          const int16_t *gs_n, const uint8_t *mask, size_t bit0, const int8_t *w,
                          int32_t *a)
{
    const int8_t *r[4];
    int32_t gv[4], cnt = 0, c, k;
    uint32_t amax = 0u;
    for (k = 0; k < cin; ++k) {
        a[k] = 0;
    }
    for (c = 0; c < channels; ++c) {
        const int32_t v = gs_n[c];
        if (v == 0) {
            continue;
        }
        if (mask != NULL) {
            const size_t i = bit0 + (size_t)c;
            if ((((uint32_t)mask[i >> 3] >> (i & 7u)) & 1u) == 0u) {
                continue;
            }
        }
        gv[cnt] = v;
        r[cnt] = mt_wrow(w, &p->split, c, (size_t)cin);
        if (++cnt == 4) {
            scatter4(a, r, gv, cin);
            cnt = 0;
        }
    }
    if (cnt > 0) { /* the last one to three rows, padded with zero gradients */
        int32_t j;
        for (j = cnt; j < 4; ++j) {
            gv[j] = 0;
            r[j] = r[0];
        }
        scatter4(a, r, gv, cin);
    }
    for (k = 0; k < cin; ++k) {
        const uint32_t x = mt_uabs32(a[k]);
        amax = (x > amax) ? x : amax;
    }
    return amax;
}

mt_status mt_mean_pointwise_bwd_s16(const mt_conv_train_params *p, int32_t inv_mult,
                                    int32_t inv_shift, const mt_sgd_params *u, mt_sgd_state *st,
                                    int32_t bias_rows, int32_t *scratch, int single_pass,
                                    const int16_t *g, int32_t g_e, const uint8_t *mask,
                                    const int8_t *w, int32_t *bias, int16_t *gx, int32_t *gx_e)
{
    mt_fc_train_params f;
    mpb_scratch sc;
    mpb_mean m;
    mpb_counts k;
    const int32_t *wm;
    int32_t nb, hw, ch, cin, pixels, nc, i, n, q, c, ge, gs_e, lsh, s, s2, s3;
    uint32_t amax = 0u, tmax = 0u, amax_x = 0u;
    size_t pc, bytes;
    int update;
    if (!valid_geometry(p, &f) || scratch == NULL) {
        return MT_ERR_ARG;
    }
    nb = p->out.n;
    hw = p->out.h * p->out.w;
    ch = f.out_features;
    cin = f.in_features;
    pixels = f.batch;
    nc = nb * ch;
    wm = f.w_mult;
    update = (u != NULL && bias_rows > 0 && u->lr_mult != 0);
    if (bias_rows < 0 || bias_rows > ch || (update && st->kind != MT_APPLY_BIAS)) {
        return MT_ERR_ARG;
    }
    pc = (size_t)pixels * (size_t)cin;
    sc.acc = scratch;
    sc.gs = (int16_t *)(void *)(scratch + cin);
    bytes = align4((size_t)nc * sizeof(int16_t));
    sc.rsh = (uint8_t *)(void *)sc.gs + bytes;
    sc.sign = sc.rsh + (size_t)pixels;

    /* the mean's constants (mt_mean_bwd_input_s16) */
    for (i = 0; i < nc; ++i) {
        const uint32_t a = mt_uabs32(g[i]);
        amax = (a > amax) ? a : amax;
    }
    m.zero = (amax == 0u);
    m.mult = inv_mult;
    m.lsh = 0;
    m.s = 0;
    if (!m.zero) {
        m.lsh = mt_norm31_shift(amax);
        for (i = 0; i < nc; ++i) {
            const uint32_t t = mt_uabs32(mt_srdhm(mt_norm31(g[i], m.lsh), inv_mult));
            tmax = (t > tmax) ? t : tmax;
        }
        m.s = mt_grad_renorm_shift(tmax);
    }
    ge = m.zero ? g_e : g_e + inv_shift - m.lsh + m.s;

    /* unmasked pixels per (n, c) */
    k.mask = mask;
    k.hw = hw;
    k.channels = ch;
    k.cnt = NULL;
    if (mask != NULL && hw <= 65535) {
        count_mask(mask, nb, hw, ch, (uint16_t *)(void *)sc.gs);
        k.cnt = (const uint16_t *)(const void *)sc.gs;
    }

    if (update) {
        bias_update(u, st, bias_rows, &m, &k, g, nb, pixels, ge, bias);
    }

    /* gs = headroom(scale_channels(G)) (prep_gs): maxima over the (n, c) with unmasked pixels */
    amax = 0u;
    for (n = 0; n < nb; ++n) {
        for (c = 0; c < ch; ++c) {
            if (count_at(&k, n, c) != 0u) {
                const uint32_t a = mt_uabs32(mean_value(&m, g[n * ch + c]));
                amax = (a > amax) ? a : amax;
            }
        }
    }
    if (amax == 0u) {
        size_t e;
        for (e = 0u; e < pc; ++e) {
            gx[e] = 0;
        }
        *gx_e = ge + mt_grad_headroom_shift(0u, f.w_bits, ch);
        return MT_OK;
    }
    lsh = mt_norm31_shift(amax); /* amax <= 32767: lsh in [16, 30] */
    tmax = 0u;
    for (n = 0; n < nb; ++n) {
        for (c = 0; c < ch; ++c) {
            if (count_at(&k, n, c) != 0u) {
                const int32_t v = mean_value(&m, g[n * ch + c]);
                const uint32_t t = mt_uabs32(srdhm_floor(mt_wrap32((uint32_t)v << lsh), wm[c]));
                tmax = (t > tmax) ? t : tmax;
            }
        }
    }
    s = mt_grad_renorm_shift(tmax);
    s2 = mt_grad_headroom_shift(mt_urshift_round32(tmax, s), f.w_bits, ch);
    gs_e = ge + f.w_shift - lsh + s + s2;
    /* gs over the counts (not needed any more; the MACs read the mask bits) */
    for (n = 0; n < nb; ++n) {
        for (c = 0; c < ch; ++c) {
            const int32_t v = mean_value(&m, g[n * ch + c]);
            const int32_t t = srdhm_floor(mt_wrap32((uint32_t)v << lsh), wm[c]);
            int32_t o;
            if (s + s2 < 32) {
                const int32_t sh = s + s2;
                const uint32_t hh = ((s > 0) ? (uint32_t)1 << (s - 1) : 0u) +
                                    ((s2 > 0) ? (uint32_t)1 << (s2 - 1 + s) : 0u);
                const uint32_t sm = 0u - (uint32_t)(t < 0);
                const uint32_t r = ((((uint32_t)t ^ sm) - sm) + hh) >> sh;
                o = mt_wrap32((r ^ sm) - sm);
            } else {
                o = mt_rshift_round32(mt_rshift_round32(t, s), s2);
            }
            sc.gs[n * ch + c] = (int16_t)o;
        }
    }

    /* gx: the rows of the unmasked (pixel, channel) pairs, renormalised over all of gx */
    if (!single_pass) {
        for (n = 0; n < nb; ++n) { /* pass 1: max |acc| */
            for (q = 0; q < hw; ++q) {
                const size_t pix = (size_t)n * (size_t)hw + (size_t)q;
                uint32_t a;
                if (mask == NULL && q > 0) {
                    break; /* every pixel of the sample has the same row */
                }
                a = pixel_row(p, ch, cin, sc.gs + (size_t)n * (size_t)ch, mask, pix * (size_t)ch, w,
                              sc.acc);
                amax_x = (a > amax_x) ? a : amax_x;
            }
        }
        s3 = mt_grad_renorm_shift(amax_x);
        for (n = 0; n < nb; ++n) { /* pass 2: recompute, write */
            for (q = 0; q < hw; ++q) {
                const size_t pix = (size_t)n * (size_t)hw + (size_t)q;
                int16_t *o = gx + pix * (size_t)cin;
                int32_t j;
                if (mask != NULL || q == 0) {
                    (void)pixel_row(p, ch, cin, sc.gs + (size_t)n * (size_t)ch, mask,
                                    pix * (size_t)ch, w, sc.acc);
                }
                for (j = 0; j < cin; ++j) {
                    o[j] = (int16_t)mt_rshift_round32(sc.acc[j], s3);
                }
            }
        }
    } else {
        uint16_t *z = (uint16_t *)(void *)gx;
        size_t b;
        for (b = 0u; b < (pc + 7u) / 8u; ++b) {
            sc.sign[b] = 0u;
        }
        for (n = 0; n < nb; ++n) { /* the one MAC pass: |acc| >> r_p and the signs */
            for (q = 0; q < hw; ++q) {
                const size_t pix = (size_t)n * (size_t)hw + (size_t)q;
                const size_t e0 = pix * (size_t)cin;
                uint32_t a;
                int32_t r, j;
                if (mask == NULL && q > 0) {
                    for (j = 0; j < cin; ++j) { /* copy the sample's first row */
                        const size_t e = e0 + (size_t)j, e1 = e - (size_t)q * (size_t)cin;
                        z[e] = z[e1];
                        sc.sign[e >> 3] = (uint8_t)(sc.sign[e >> 3] |
                                                    (((uint32_t)(sc.sign[e1 >> 3] >> (e1 & 7u)) & 1u)
                                                     << (e & 7u)));
                    }
                    sc.rsh[pix] = sc.rsh[pix - (size_t)q];
                    continue;
                }
                a = pixel_row(p, ch, cin, sc.gs + (size_t)n * (size_t)ch, mask, pix * (size_t)ch, w,
                              sc.acc);
                amax_x = (a > amax_x) ? a : amax_x;
                r = mt_bitlen32(a) - 16;
                r = (r > 0) ? r : 0;
                sc.rsh[pix] = (uint8_t)r;
                for (j = 0; j < cin; ++j) {
                    const int32_t v = sc.acc[j];
                    const size_t e = e0 + (size_t)j;
                    z[e] = (uint16_t)(mt_uabs32(v) >> r);
                    if (v < 0) {
                        sc.sign[e >> 3] = (uint8_t)(sc.sign[e >> 3] | (1u << (e & 7u)));
                    }
                }
            }
        }
        s3 = mt_grad_renorm_shift(amax_x);
        for (b = 0u; b < (size_t)pixels; ++b) { /* RDBPOT(acc, s3) from |acc| >> r_p, in place */
            const int32_t r = sc.rsh[b];
            const size_t e0 = b * (size_t)cin;
            int32_t j;
            for (j = 0; j < cin; ++j) {
                const size_t e = e0 + (size_t)j;
                uint32_t mag = z[e];
                const uint32_t neg = 0u - (((uint32_t)sc.sign[e >> 3] >> (e & 7u)) & 1u);
                if (s3 > 0) { /* s3 - 1 >= r */
                    mag = ((mag >> (s3 - 1 - r)) + 1u) >> 1;
                }
                gx[e] = (int16_t)mt_wrap32((mag ^ neg) - neg);
            }
        }
    }
    *gx_e = gs_e + s3;
    return MT_OK;
}
