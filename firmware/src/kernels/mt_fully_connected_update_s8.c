/**
 * @file mt_fully_connected_update_s8.c
 * @brief fully_connected weight gradient of the first `rows` output channels fused with the SGD
 *        update; bit-exact with FullyConnected.backward_int8 position 1 (rows) followed by
 *        sgd_delta and Int8Trainer._apply. Two passes (whole-slice exponent), see the header.
 *
 * Also home of the fused per-element chain shared by every *_update_s8 kernel (mt_wupd_*, see
 * mt_kernels_train.h): one definition, linked wherever an update kernel is.
 *
 * Batch 1 (the usual on-device case): acc[o,k] = gr[o] * (x[k] - in_zp) is one product, so the
 * accumulator extremes of pass 1 come from the extremes of x (no pass over the slice) and pass 2
 * forms each product where it is used; a channel whose gr[o] is 0 has only zero deltas.
 * Batch > 1: pass 1 is the GEMM of mt_wgrad_gemm.h (a 1x1 conv over the batch).
 */
#include "mt_kernels_train.h"
#include "mt_wgrad_gemm.h" /* mt_wg_fc_as_conv, mt_wg_accs_port (mt_conv2d_update_s8.c) */

#if defined(__GNUC__)
#define MT_WUPD_NOINLINE __attribute__((noinline))
#define MT_WUPD_INLINE static inline __attribute__((always_inline))
#define MT_WUPD_RARE(x) __builtin_expect((x), 0)
#else
#define MT_WUPD_NOINLINE
#define MT_WUPD_INLINE static inline
#define MT_WUPD_RARE(x) (x)
#endif

/* ============================================================================================ */
/* Fused update chain (mt_kernels_train.h)                                                      */
/* ============================================================================================ */

/* Positive-side bias of RDBPOT(v, s) = floor((v + h) / 2^s): 2^(s-1), 0 for s = 0. The negative
 * side is h - 1 (s >= 1) and never needed here: the chain works on magnitudes (ties away from
 * zero are symmetric), and the one asymmetric rounding, SRDHM's ties toward +inf, becomes
 * |SRDHM(a, b)| = floor((|a| b + 2^30 - [a < 0]) / 2^31) for b >= 0 (negate ceil = floor of the
 * negation: -floor(y) = floor((-Y + 2^31 - 1) / 2^31) for y = Y / 2^31). */
static uint32_t pos_bias(int32_t s)
{
    return (s > 0) ? ((uint32_t)1 << (s - 1)) : 0u;
}

void mt_wupd_init(mt_wupd *c, const mt_sgd_params *u, mt_sgd_state *st, int32_t pmax, int32_t nmin,
                  int32_t e, int32_t x_mult, int32_t x_shift, int16_t *grad)
{
    const int32_t f = u->frac_bits;
    int32_t s1;
    c->u = u;
    c->st = st;
    c->wn = mt_wgrad_norm_make(u, pmax, nmin, e, x_mult, x_shift);
    c->x_mult = x_mult;
    c->grad = grad;
    c->mode = MT_WUPD_GENERIC;
    c->stoch = (st->kind == MT_APPLY_STOCHASTIC);
    c->mom = (u->mu != 0 && st->velocity != NULL);
    c->ash = c->sr = c->l2 = c->sc = 0;
    c->amaxs = 0u;
    c->xm = c->ha = c->lr2 = c->hc = 0u;
    c->frac = f;
    c->mlo = c->mhi = 0;
    if (u->lr_mult == 0) {
        c->mode = MT_WUPD_GRAD;
        return;
    }
    /* Appliers. Stochastic: 1 <= F <= 30 keeps delta + r in int32 (|delta| <= 2^30, r < 2^F);
     * master: F >= 8 (RDBPOT(delta, F - 8)); int8 clamps within [-128, 127] so that the int16
     * master (|m| <= 2^15) and the int8 results need no further saturation; mu >= 0 so SRDHM(v, mu)
     * never saturates. Anything else takes the generic path. */
    if (st->lo > st->hi || st->lo < -128 || st->hi > 127 || (c->mom && u->mu < 0)) {
        return;
    }
    if (c->stoch ? (f < 1 || f > 30) : (f < 8 || f > 31)) {
        return;
    }
    c->mlo = c->stoch ? st->lo : st->lo * (1 << MT_MASTER_FRAC_BITS);
    c->mhi = c->stoch ? st->hi : st->hi * (1 << MT_MASTER_FRAC_BITS);
    if (c->wn.zero || c->wn.q.zero) {
        c->mode = MT_WUPD_ZERO;
        return;
    }
    /* The fused chain. Bounds (A = max |acc| >= 1, L = 31 - bitlen(A) in [0, 30]; M = max |m| in
     * [1, 32767], L2 = 31 - bitlen(M) in [16, 30]; x_mult, mult[c], lr in [0, 2^31)):
     *   |a| 2^(L+1) < 2^32;  |a| 2^(L+1) x_mult + 2^(31+sr) + 2^31 < 2^63 + 2^48 + 2^32 < 2^64
     *   |m| = that >> (32 + sr) <= M;  |m| 2^(L2+1) < 2^32;  |t2| = (|m| 2^(L2+1) mult + 2^31) >> 32
     *   < 2^31;  |t2| 2 lr + hc 2^32 + 2^31 < 2^63 + 2^63 with hc < 2^S <= 2^31;
     * the last stage divides by 2^(32 + sc): sc = S = s1 + F - 8 <= 31 (master: both RDBPOTs
     * after -t3 fused) or sc = s1 <= 31 (delta itself: stochastic, momentum). total >= 0 (a left
     * shift, saturating) and the rest stay generic. */
    if (c->wn.lsh < 0 || x_mult < 0 || u->lr_mult < 0) {
        return;
    }
    s1 = -c->wn.q.total;
    if (s1 < 1 || s1 > 31) {
        return;
    }
    if (!c->stoch && !c->mom) {
        const int32_t s2 = f - MT_MASTER_FRAC_BITS;
        if (s1 + s2 > 31) {
            return;
        }
        c->sc = s1 + s2;
        c->hc = pos_bias(s1) + (pos_bias(s2) << s1);
    } else {
        c->sc = s1;
        c->hc = pos_bias(s1);
    }
    c->ash = c->wn.lsh + 1;
    {
        const uint32_t am = (mt_uabs32(nmin) > (uint32_t)pmax) ? mt_uabs32(nmin) : (uint32_t)pmax;
        c->amaxs = am << c->ash;
    }
    c->xm = (uint32_t)x_mult;
    c->sr = c->wn.sr;
    c->ha = pos_bias(c->wn.sr);
    c->l2 = c->wn.q.lsh + 1;
    c->lr2 = (uint32_t)u->lr_mult << 1;
    c->mode = MT_WUPD_FAST;
}

/* The reference helpers, one element. */
static MT_WUPD_NOINLINE void wupd_generic(const mt_wupd *c, int32_t row, int32_t idx, int32_t a,
                                          int8_t *wp)
{
    const int32_t m = mt_wgrad_mant(&c->wn, a, c->x_mult);
    if (c->grad != NULL) {
        c->grad[idx] = (int16_t)m;
    }
    if (c->mode != MT_WUPD_GRAD) {
        *wp = mt_sgd_apply_w8_elem(c->u, c->st, idx, *wp, mt_sgd_delta_elem(c->u, &c->wn.q, m, row));
    }
}

/* The loop-invariant constants of the chain, copied out of the struct so that the int8 stores
 * (character type: they may alias anything) do not force reloads. */
typedef struct {
    uint32_t xm, ha, lr2, hc, mo, mrange;
    int32_t ash, sr, l2, sc, mlo, f, rsh;
} wupd_k;

static wupd_k wupd_consts(const mt_wupd *c, int32_t row)
{
    wupd_k k;
    k.xm = c->xm;
    k.ha = c->ha;
    k.lr2 = c->lr2;
    k.hc = c->hc;
    k.mo = (c->mode == MT_WUPD_FAST) ? (uint32_t)c->u->mult[row] : 0u;
    k.ash = c->ash;
    k.sr = c->sr;
    k.l2 = c->l2;
    k.sc = c->sc;
    k.mlo = c->mlo;
    k.mrange = (uint32_t)c->mhi - (uint32_t)c->mlo;
    k.f = c->frac;
    k.rsh = 32 - c->frac;
    return k;
}

/* The chain for a != 0: returns the signed result of the last stage (master without momentum:
 * RDBPOT(delta, F - 8); otherwise delta) and the gradient mantissa in *m. s = sign mask of a;
 * lo = 2 (2^30 - [a < 0]) is the low word of every stage's bias; the signs of m, t2 agree with
 * a's (or the value is 0, where both biases give 0: numerators stay below the divisor). */
MT_WUPD_INLINE int32_t wupd_chain(const wupd_k *k, int32_t a, int32_t *m)
{
    const uint32_t s = (uint32_t)mt_asr32(a, 31);
    const uint32_t ua = (((uint32_t)a ^ s) - s) << k->ash;
    const uint32_t lo = 0x80000000u + (s << 1);
    const uint32_t um =
        (uint32_t)(((uint64_t)ua * k->xm + (((uint64_t)k->ha << 32) | lo)) >> 32) >> k->sr;
    const uint32_t ut = (uint32_t)(((uint64_t)(um << k->l2) * k->mo + lo) >> 32);
    const uint32_t v =
        (uint32_t)(((uint64_t)ut * k->lr2 + (((uint64_t)k->hc << 32) | lo)) >> 32) >> k->sc;
    *m = mt_wrap32((um ^ s) - s);
    /* delta = -RDBPOT(SRDHM(t2, lr), s1) has the sign opposite to t2's */
    return mt_wrap32((v ^ ~s) - ~s);
}

/* Master copy: m = clamp(master + d, lo 2^8, hi 2^8), w = RDBPOT(m, 8); |d| <= 2^30 + 1, so the
 * sum is exact in int32. RDBPOT(m, 8) = floor((m + 128 - [m < 0]) / 2^8). */
MT_WUPD_INLINE int8_t wupd_master(const wupd_k *k, int16_t *mp, int32_t d)
{
    int32_t nm = (int32_t)*mp + d;
    if ((uint32_t)nm - (uint32_t)k->mlo > k->mrange) {
        nm = (nm < k->mlo) ? k->mlo : (int32_t)((uint32_t)k->mlo + k->mrange);
    }
    *mp = (int16_t)nm;
    return (int8_t)mt_asr32(nm + 128 + mt_asr32(nm, 31), 8);
}

/* Stochastic rounding: w + floor((delta + r) / 2^F) (= w + q + carry of the reference), clamped;
 * |delta| <= 2^30 and r < 2^F <= 2^30 keep delta + r in int32. */
MT_WUPD_INLINE int8_t wupd_stoch(const wupd_k *k, uint32_t *x, int8_t w, int32_t delta)
{
    uint32_t r = *x;
    int32_t t;
    r ^= r << 13;
    r ^= r >> 17;
    r ^= r << 5;
    *x = r;
    t = (int32_t)w + mt_asr32(delta + (int32_t)(r >> k->rsh), (int)k->f);
    if ((uint32_t)t - (uint32_t)k->mlo > k->mrange) {
        t = (t < k->mlo) ? k->mlo : (int32_t)((uint32_t)k->mlo + k->mrange);
    }
    return (int8_t)t;
}

/* src: 0 all accumulators 0, 1 acc[], 2 batch-1 outer product gq * x[k] + zc (wrapping). */
MT_WUPD_INLINE void wupd_fast_loop(const mt_wupd *c, int32_t row, int32_t idx, int32_t n,
                                   const int32_t *acc, int32_t gq, const int8_t *x, int32_t zc,
                                   int8_t *w, const int stoch, const int with_grad, const int src)
{
    const wupd_k k = wupd_consts(c, row);
    int16_t *ms = stoch ? NULL : c->st->master + idx;
    int16_t *gr = with_grad ? c->grad + idx : NULL;
    uint32_t rng = stoch ? *c->st->rng : 0u;
    int32_t i;
    for (i = 0; i < n; ++i) {
        int32_t d = 0, m = 0;
        int32_t a = 0;
        if (src == 1) {
            a = acc[i];
        } else if (src == 2) {
            a = mt_wrap32((uint32_t)gq * (uint32_t)(int32_t)x[i] + (uint32_t)zc);
        }
        if (src != 0 && a != 0) {
            d = wupd_chain(&k, a, &m);
        }
        if (with_grad) {
            gr[i] = (int16_t)m;
        }
        if (stoch) {
            w[i] = wupd_stoch(&k, &rng, w[i], d);
        } else {
            w[i] = wupd_master(&k, ms + i, d);
        }
    }
    if (stoch) {
        *c->st->rng = rng;
    }
}

/* Momentum: v = clip(SRDHM(v, mu) + delta, +-(2^31 - 1)) (mu >= 0: no saturation case), then
 * the appliers on v as the reference does (any int32 v). */
static MT_WUPD_NOINLINE void wupd_mom_loop(const mt_wupd *c, int32_t row, int32_t idx, int32_t n,
                                           const int32_t *acc, int8_t *w)
{
    const wupd_k k = wupd_consts(c, row);
    const int32_t mu = c->u->mu;
    const int fast = (c->mode == MT_WUPD_FAST) && acc != NULL;
    const int stoch = c->stoch;
    const int32_t f = c->frac;
    const uint32_t mask = ((uint32_t)1 << f) - 1u;
    int32_t *vel = c->st->velocity + idx;
    int16_t *ms = stoch ? NULL : c->st->master + idx;
    int16_t *gr = (c->grad != NULL) ? c->grad + idx : NULL;
    uint32_t rng = stoch ? *c->st->rng : 0u;
    int32_t i;
    for (i = 0; i < n; ++i) {
        int32_t d = 0, m = 0, v;
        int64_t t;
        if (fast && acc[i] != 0) {
            d = wupd_chain(&k, acc[i], &m);
        }
        if (gr != NULL) {
            gr[i] = (int16_t)m;
        }
        t = (int64_t)mt_wrap32((uint32_t)(((uint64_t)((int64_t)vel[i] * mu) + ((uint64_t)1 << 30)) >> 31)) + d;
        v = (int32_t)((t > MT_INT32_MAX) ? MT_INT32_MAX : ((t < -MT_INT32_MAX) ? -MT_INT32_MAX : t));
        vel[i] = v;
        if (stoch) {
            uint32_t r = rng;
            int32_t q;
            r ^= r << 13;
            r ^= r >> 17;
            r ^= r << 5;
            rng = r;
            q = (int32_t)w[i] + (int32_t)((((uint32_t)v & mask) + (r >> k.rsh)) >> f) +
                mt_asr32(v, (int)f);
            if ((uint32_t)q - (uint32_t)k.mlo > k.mrange) {
                q = (q < k.mlo) ? k.mlo : (int32_t)((uint32_t)k.mlo + k.mrange);
            }
            w[i] = (int8_t)q;
        } else {
            /* |d| may reach 2^31 (F = 8): beyond 2^16 every master clamps the same way, so the
             * clipped d keeps master + d exact in int32 and the result unchanged */
            const int32_t dm = mt_clamp32(mt_rshift_round32(v, f - MT_MASTER_FRAC_BITS), -65536, 65536);
            w[i] = wupd_master(&k, ms + i, dm);
        }
    }
    if (stoch) {
        *c->st->rng = rng;
    }
}

static void wupd_m0(const mt_wupd *c, int32_t r, int32_t i, int32_t n, int8_t *w)
{
    wupd_fast_loop(c, r, i, n, NULL, 0, NULL, 0, w, 0, 0, 0);
}
static void wupd_s0(const mt_wupd *c, int32_t r, int32_t i, int32_t n, int8_t *w)
{
    wupd_fast_loop(c, r, i, n, NULL, 0, NULL, 0, w, 1, 0, 0);
}
static void wupd_m1(const mt_wupd *c, int32_t r, int32_t i, int32_t n, const int32_t *a, int8_t *w)
{
    wupd_fast_loop(c, r, i, n, a, 0, NULL, 0, w, 0, 0, 1);
}
static void wupd_s1(const mt_wupd *c, int32_t r, int32_t i, int32_t n, const int32_t *a, int8_t *w)
{
    wupd_fast_loop(c, r, i, n, a, 0, NULL, 0, w, 1, 0, 1);
}
static void wupd_m2(const mt_wupd *c, int32_t r, int32_t i, int32_t n, int32_t gq, const int8_t *x,
                    int32_t zc, int8_t *w)
{
    wupd_fast_loop(c, r, i, n, NULL, gq, x, zc, w, 0, 0, 2);
}
static void wupd_s2(const mt_wupd *c, int32_t r, int32_t i, int32_t n, int32_t gq, const int8_t *x,
                    int32_t zc, int8_t *w)
{
    wupd_fast_loop(c, r, i, n, NULL, gq, x, zc, w, 1, 0, 2);
}

/* ---- one-multiply estimate (master copy, no momentum) ------------------------------------------

 With um, ut, v the three floors of the chain (wupd_chain, A = |a| 2^(L+1), n = [a < 0]):
   um = floor(y1), y1 = (A xm + b1) / 2^(32+sr)      b1 = 2^31 - 2n + ha 2^32
   ut = floor(y2), y2 = (um mo 2^l2 + b2) / 2^32      b2 = 2^31 - 2n
   v  = floor(y3), y3 = (ut 2lr + b3) / 2^(32+S)      b3 = 2^31 - 2n + hc 2^32
 substituting um = y1 - d1, ut = y2 - d2 (d1, d2 in [0, 1)):
   y3 = V(n) - eps,  V(n) = A K + Q(n),  K = xm mo 2^l2 2lr / 2^(96+sr+S),
   eps = d1 k1 + d2 k2 in [0, k1 + k2),  k1 = mo 2^l2 2lr / 2^(64+S),  k2 = 2lr / 2^(32+S),
   Q(n) = b1 mo 2^l2 2lr / 2^(96+sr+S) + b2 2lr / 2^(64+S) + b3 / 2^(32+S),
   V(n) = V(0) - n e,  0 <= e = 2 (k1 / 2^(32+sr) + k2 / 2^32 + 1 / 2^(32+S)) < 2^-16.
 So v = floor(V(0) - n e - eps) = floor(V(0)) whenever frac(V(0)) >= k1 + k2 + e.
 In 16.16 fixed point (A as below; wupd_est_make multiplies |a| itself): Kf = floor(K 2^48) < 2^32, Qh = T1 + T2 + T3 (each term of Q(0) 2^16 floored,
 so Q(0) 2^16 - Qh in [0, 3)), h = floor(A Kf / 2^32) + Qh. Then V(0) 2^16 - h in [0, 5)
 (A (K 2^48 - Kf) < 2^32, the floor of A Kf / 2^32, and the 3 of Qh), hence
   tlo <= (h mod 2^16) <= 2^16 - 6  ==>  floor(V(0)) = h >> 16 = v  and  frac(V(0)) >= tlo / 2^16,
 with tlo = floor(k1 2^16) + ceil(k2 2^16) + 2 >= (k1 + k2 + e) 2^16 (e 2^16 < 1: k1 < 1 is
 checked, k2 < 2^(16-S) <= 2^7). Otherwise (about a fraction k1 + k2 of the elements) the chain is
 computed exactly. h < 2^32 is checked per channel from the slice's largest A. */

/* 32 bits of the 128-bit q starting at bit b (bits past the top are 0) */
static uint32_t bits32(const uint32_t q[4], int32_t b)
{
    const int32_t w = b >> 5, t = b & 31;
    const uint32_t lo = (w < 4) ? q[w] : 0u, hi = (w + 1 < 4) ? q[w + 1] : 0u;
    return (t == 0) ? lo : ((lo >> t) | (hi << (32 - t)));
}

/* floor(a b c / 2^s) for a < 2^64, b, c < 2^32, 0 <= s < 128; all ones when it is 2^64 or more */
static uint64_t mul3_shr(uint64_t a, uint32_t b, uint32_t c, int32_t s)
{
    uint32_t q[4];
    uint64_t t;
    t = (uint64_t)(uint32_t)a * b;
    q[0] = (uint32_t)t;
    t = (uint64_t)(uint32_t)(a >> 32) * b + (t >> 32);
    q[1] = (uint32_t)t;
    q[2] = (uint32_t)(t >> 32);
    t = (uint64_t)q[0] * c;
    q[0] = (uint32_t)t;
    t = (uint64_t)q[1] * c + (t >> 32);
    q[1] = (uint32_t)t;
    t = (uint64_t)q[2] * c + (t >> 32);
    q[2] = (uint32_t)t;
    q[3] = (uint32_t)(t >> 32);
    if (bits32(q, s + 64) != 0u || bits32(q, s + 96) != 0u) {
        return ~(uint64_t)0;
    }
    return ((uint64_t)bits32(q, s + 32) << 32) | bits32(q, s);
}

typedef struct {
    uint32_t kf, qh, trange;
} wupd_est;

/* the estimate's constants of channel row; 0 when it does not apply (then the exact chain).
 * qh is stored minus tlo: on the fast path h mod 2^16 >= tlo, so (h - tlo) >> 16 = h >> 16, and
 * the window test becomes ((h - tlo) mod 2^16) <= 0xFFFA - tlo (an h below tlo wraps around to a
 * window value above the range: rejected, as it should be). */
static int wupd_est_make(const mt_wupd *c, int32_t row, wupd_est *e)
{
    const uint32_t mo = (uint32_t)c->u->mult[row];
    /* master: v = RDBPOT(delta, F - 8), the chain's last stage divides by 2^(32 + S), S = sc;
     * stochastic (F = 16): |u| = floor((|delta| + r') / 2^16), the same with S = sc + 16 and the
     * draw r' < 2^16 added to h exactly (see wupd_est_stoch) */
    const int32_t sr = c->sr, S = c->sc + (c->stoch ? 16 : 0), l2 = c->l2;
    uint64_t kf, t1, tl;
    uint32_t t2, t3, qh, tlo;
    if (c->mode != MT_WUPD_FAST || c->mom || c->grad != NULL || c->u->mult[row] < 0 ||
        (c->stoch && c->frac != 16)) {
        return 0;
    }
    kf = mul3_shr(c->xm, mo, c->lr2, 48 + sr + S - l2);
    t1 = mul3_shr(((uint64_t)c->ha << 32) | 0x80000000u, mo, c->lr2, 80 + sr + S - l2);
    t2 = (17 + S < 32) ? (c->lr2 >> (17 + S)) : 0u;
    t3 = (S < 16) ? ((c->hc << (16 - S)) + (0x80000000u >> (16 + S))) : ((S - 16 < 32) ? (c->hc >> (S - 16)) : 0u);
    /* floor(k1 2^16) + ceil(k2 2^16) (k2 2^16 = 2lr / 2^(16+S)) */
    tl = mul3_shr(mo, c->lr2, 1u, 48 + S - l2) + ((16 + S < 32) ? (c->lr2 >> (16 + S)) : 0u) + 1u;
    if (kf > 0xFFFFFFFFu || t1 > 0x0FFFFFFFu || tl > 0xFFF0u) {
        return 0;
    }
    qh = (uint32_t)t1 + t2 + t3;
    tlo = (uint32_t)tl + 2u; /* + 1 for e 2^16 < 1, + 1 to spare */
    if (tlo > 0xFFFAu || (((uint64_t)c->amaxs * (uint32_t)kf) >> 32) + qh + 0xFFFFu > 0xFFFFFFF0u) {
        return 0;
    }
    e->kf = (uint32_t)kf;
    e->qh = qh - tlo; /* mod 2^32: h < tlo wraps to a rejected window value */
    e->trange = 0xFFFAu - tlo;
    return 1;
}

/* the exact chain of one nonzero accumulator (the estimate's fallback) */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static int32_t wupd_exact(const mt_wupd *c, int32_t row, int32_t a)
{
    const wupd_k k = wupd_consts(c, row);
    int32_t m;
    return wupd_chain(&k, a, &m);
}

/* master copy, no momentum, no gradient output: src 1 acc[], 2 batch-1 outer product; std: the
 * usual clamp [-127, 127] (-32512 .. 32512 for the master) as immediates */
MT_WUPD_INLINE void wupd_est_loop(const mt_wupd *c, const wupd_est *e, int32_t row, int32_t idx,
                                  int32_t n, const int32_t *acc, int32_t gq, const int8_t *x,
                                  int32_t zc, int8_t *w, const int src, const int std)
{
    const uint32_t kf = e->kf, qh = e->qh, trange = e->trange;
    const int32_t ash = c->ash;
    const int32_t mlo = std ? -32512 : c->mlo;
    const uint32_t mrange = std ? 65024u : (uint32_t)c->mhi - (uint32_t)c->mlo;
    int16_t *ms = c->st->master + idx;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t a = (src == 1) ? acc[i]
                                     : mt_wrap32((uint32_t)gq * (uint32_t)(int32_t)x[i] + (uint32_t)zc);
        int32_t nm = ms[i];
        if (MT_WUPD_RARE(a != 0)) {
            const uint32_t s = (uint32_t)mt_asr32(a, 31);
            const uint32_t h = (uint32_t)(((uint64_t)((((uint32_t)a ^ s) - s) << ash) * kf) >> 32) + qh;
            int32_t d;
            if (!MT_WUPD_RARE((h & 0xFFFFu) > trange)) {
                const uint32_t v = h >> 16;
                d = mt_wrap32((v ^ ~s) - ~s);
            } else {
                d = wupd_exact(c, row, a);
            }
            nm += d;
        }
        if ((uint32_t)nm - (uint32_t)mlo > mrange) {
            nm = (nm < mlo) ? mlo : (int32_t)((uint32_t)mlo + mrange);
        }
        ms[i] = (int16_t)nm;
        w[i] = (int8_t)mt_asr32(nm + 128 + mt_asr32(nm, 31), 8);
    }
}

/* each loop out of line, with nothing else live: its constants stay in registers */
static MT_WUPD_NOINLINE void wupd_e1s(const mt_wupd *c, const wupd_est *e, int32_t r, int32_t i,
                                      int32_t n, const int32_t *a, int8_t *w)
{
    wupd_est_loop(c, e, r, i, n, a, 0, NULL, 0, w, 1, 1);
}


static MT_WUPD_NOINLINE void wupd_e2s(const mt_wupd *c, const wupd_est *e, int32_t r, int32_t i,
                                      int32_t n, int32_t gq, const int8_t *x, int32_t zc, int8_t *w)
{
    wupd_est_loop(c, e, r, i, n, NULL, gq, x, zc, w, 2, 1);
}


/* the usual clamp [-127, 127] (the master copy's -32512 .. 32512) */
static int wupd_std(const mt_wupd *c)
{
    return c->stoch ? (c->mlo == -127 && c->mhi == 127) : (c->mlo == -32512 && c->mhi == 32512);
}

/* Stochastic rounding (F = 16, no momentum, clamp [-127, 127]) with the estimate: with r the draw's
 * top 16 bits, u = floor((delta + r) / 2^16) = sign * floor((|delta| + r') / 2^16) where
 * r' = r for delta >= 0 and 2^16 - 1 - r for delta < 0 (-floor(y) = ceil(-y)); since
 * |delta| = floor(Y / 2^(32+s1)), floor((|delta| + r') / 2^16) = floor((Y + r' 2^(32+s1)) /
 * 2^(48+s1)): the master estimate with S = s1 + 16 and r' added to h (in 2^-16 units, exactly).
 * The draws are taken element by element as the reference does (zero accumulators included). */
MT_WUPD_INLINE void wupd_est_stoch_loop(const mt_wupd *c, const wupd_est *e, int32_t row, int32_t n,
                                        const int32_t *acc, int32_t gq, const int8_t *x, int32_t zc,
                                        int8_t *w, const int src)
{
    const uint32_t kf = e->kf, qh = e->qh, trange = e->trange;
    const int32_t ash = c->ash;
    uint32_t rng = *c->st->rng;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t a = (src == 1) ? acc[i]
                                     : mt_wrap32((uint32_t)gq * (uint32_t)(int32_t)x[i] + (uint32_t)zc);
        int32_t t = w[i];
        uint32_t rd;
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rd = rng >> 16;
        if (MT_WUPD_RARE(a != 0)) {
            const uint32_t s = (uint32_t)mt_asr32(a, 31);
            const uint32_t h = (uint32_t)(((uint64_t)((((uint32_t)a ^ s) - s) << ash) * kf) >> 32) + qh +
                               (rd ^ (0xFFFFu & ~s));
            if (!MT_WUPD_RARE((h & 0xFFFFu) > trange)) {
                t += mt_wrap32(((h >> 16) ^ ~s) - ~s);
            } else {
                t += mt_asr32(wupd_exact(c, row, a) + (int32_t)rd, 16);
            }
        }
        if ((uint32_t)(t + 127) > 254u) {
            t = (t < -127) ? -127 : 127;
        }
        w[i] = (int8_t)t;
    }
    *c->st->rng = rng;
}

static MT_WUPD_NOINLINE void wupd_es1(const mt_wupd *c, const wupd_est *e, int32_t r, int32_t n,
                                      const int32_t *a, int8_t *w)
{
    wupd_est_stoch_loop(c, e, r, n, a, 0, NULL, 0, w, 1);
}

static MT_WUPD_NOINLINE void wupd_es2(const mt_wupd *c, const wupd_est *e, int32_t r, int32_t n,
                                      int32_t gq, const int8_t *x, int32_t zc, int8_t *w)
{
    wupd_est_stoch_loop(c, e, r, n, NULL, gq, x, zc, w, 2);
}

void mt_wupd_row(const mt_wupd *c, int32_t row, int32_t idx, int32_t n, const int32_t *acc,
                 int8_t *w)
{
    int32_t i;
    if (n < 1) {
        return;
    }
    if (c->mode == MT_WUPD_GENERIC || c->mode == MT_WUPD_GRAD || c->grad != NULL ||
        (c->mode == MT_WUPD_FAST && c->u->mult[row] < 0)) {
        for (i = 0; i < n; ++i) {
            wupd_generic(c, row, idx + i, (acc != NULL) ? acc[i] : 0, w + i);
        }
        return;
    }
    if (c->mode == MT_WUPD_ZERO) {
        acc = NULL;
    }
    if (acc != NULL && n >= 64 && wupd_std(c)) {
        wupd_est e;
        if (wupd_est_make(c, row, &e)) {
            if (c->stoch) {
                wupd_es1(c, &e, row, n, acc, w);
            } else {
                wupd_e1s(c, &e, row, idx, n, acc, w);
            }
            return;
        }
    }
    if (c->mom) {
        wupd_mom_loop(c, row, idx, n, acc, w);
    } else if (acc == NULL) {
        (c->stoch ? wupd_s0 : wupd_m0)(c, row, idx, n, w);
    } else {
        (c->stoch ? wupd_s1 : wupd_m1)(c, row, idx, n, acc, w);
    }
}

void mt_wupd_row_outer(const mt_wupd *c, int32_t row, int32_t idx, int32_t n, int32_t gq,
                       const int8_t *x, int32_t zp, int8_t *w)
{
    const uint32_t zc = 0u - (uint32_t)gq * (uint32_t)zp;
    int32_t buf[32];
    int32_t i, j, cnt;
    if (c->mode == MT_WUPD_FAST && !c->mom && c->grad == NULL && c->u->mult[row] >= 0) {
        wupd_est e;
        if (n >= 64 && wupd_std(c) && wupd_est_make(c, row, &e)) {
            if (c->stoch) {
                wupd_es2(c, &e, row, n, gq, x, mt_wrap32(zc), w);
            } else {
                wupd_e2s(c, &e, row, idx, n, gq, x, mt_wrap32(zc), w);
            }
            return;
        }
        (c->stoch ? wupd_s2 : wupd_m2)(c, row, idx, n, gq, x, mt_wrap32(zc), w);
        return;
    }
    for (i = 0; i < n; i += cnt) {
        cnt = (n - i < 32) ? (n - i) : 32;
        for (j = 0; j < cnt; ++j) {
            buf[j] = mt_wrap32((uint32_t)gq * (uint32_t)(int32_t)x[i + j] + zc);
        }
        mt_wupd_row(c, row, idx + i, cnt, buf, w + i);
    }
}

/* ============================================================================================ */
/* The kernel                                                                                   */
/* ============================================================================================ */

size_t mt_fully_connected_update_s8_scratch_bytes(const mt_fc_train_params *p, int32_t rows)
{
    return (size_t)rows * (size_t)p->in_features * sizeof(int32_t);
}

mt_status mt_fully_connected_update_s8(const mt_fc_train_params *p, const mt_sgd_params *u,
                                       mt_sgd_state *st, int32_t rows, int32_t *acc,
                                       const int16_t *g, int32_t g_e, const int8_t *x, int8_t *w,
                                       int16_t *grad, int32_t *grad_e)
{
    const int32_t cin = p->in_features, cout = p->out_features;
    const int update = (u->lr_mult != 0);
    uint32_t amax = 0u;
    int32_t o, k, sh, cnt, pmax = 0, nmin = 0;
    int32_t buf[32];
    mt_wupd c;
    if (p->batch < 1 || cin < 1 || cout < 1 || rows < 1 || rows > cout) {
        return MT_ERR_ARG;
    }
    if (update && st->kind != MT_APPLY_MASTER && st->kind != MT_APPLY_STOCHASTIC) {
        return MT_ERR_ARG;
    }
    if (!update && grad == NULL) {
        return MT_OK;
    }
    amax = mt_grad_or_abs16(g, p->batch, cout, rows); /* headroom of g[:, :rows] */
    sh = mt_grad_headroom_shift(amax, p->x_bits, p->batch);
    if (p->batch == 1) {
        /* pass 1: extremes of gr[o] * (x[k] - in_zp) from those of x */
        int32_t xlo = 127, xhi = -128;
        for (k = 0; k < cin; ++k) {
            xlo = (x[k] < xlo) ? x[k] : xlo;
            xhi = (x[k] > xhi) ? x[k] : xhi;
        }
        xlo -= p->in_zp;
        xhi -= p->in_zp;
        for (o = 0; o < rows; ++o) {
            const int32_t gq = mt_rshift_round32(g[o], sh);
            const int32_t a = mt_wrap32((uint32_t)gq * (uint32_t)xhi);
            const int32_t b = mt_wrap32((uint32_t)gq * (uint32_t)xlo);
            const int32_t hi = (a > b) ? a : b, lo = (a > b) ? b : a;
            pmax = (hi > pmax) ? hi : pmax;
            nmin = (lo < nmin) ? lo : nmin;
        }
        mt_wupd_init(&c, u, st, pmax, nmin, g_e + sh, p->x_mult, p->x_shift, grad);
        for (o = 0; o < rows; ++o) { /* pass 2: one output-channel row at a time */
            const int32_t gq = mt_rshift_round32(g[o], sh);
            int8_t *wr = w + (size_t)o * (size_t)cin;
            if (gq == 0) {
                mt_wupd_row(&c, o, o * cin, cin, NULL, wr);
            } else {
                mt_wupd_row_outer(&c, o, o * cin, cin, gq, x, p->in_zp, wr);
            }
        }
    } else {
        mt_conv_train_params cp;
        mt_wg_fc_as_conv(p, &cp);
        if (acc != NULL) { /* pass 1 as a GEMM into the scratch, then the extremes */
            mt_wg_accs_port(&cp, g, x, sh, 0, rows, 0, cin, acc, cin);
            for (k = 0; k < rows * cin; ++k) {
                pmax = (acc[k] > pmax) ? acc[k] : pmax;
                nmin = (acc[k] < nmin) ? acc[k] : nmin;
            }
        } else { /* without scratch: the same sums, a chunk of one row at a time */
            for (o = 0; o < rows; ++o) {
                for (k = 0; k < cin; k += cnt) {
                    int32_t j;
                    cnt = (cin - k < 32) ? (cin - k) : 32;
                    mt_wg_accs_port(&cp, g, x, sh, o, 1, k, cnt, buf, cnt);
                    for (j = 0; j < cnt; ++j) {
                        pmax = (buf[j] > pmax) ? buf[j] : pmax;
                        nmin = (buf[j] < nmin) ? buf[j] : nmin;
                    }
                }
            }
        }
        mt_wupd_init(&c, u, st, pmax, nmin, g_e + sh, p->x_mult, p->x_shift, grad);
        for (o = 0; o < rows; ++o) { /* pass 2: one output-channel row at a time */
            int8_t *wr = w + (size_t)o * (size_t)cin;
            if (acc != NULL) {
                mt_wupd_row(&c, o, o * cin, cin, acc + (size_t)o * (size_t)cin, wr);
                continue;
            }
            for (k = 0; k < cin; k += cnt) { /* (recomputed) */
                cnt = (cin - k < 32) ? (cin - k) : 32;
                mt_wg_accs_port(&cp, g, x, sh, o, 1, k, cnt, buf, cnt);
                mt_wupd_row(&c, o, o * cin + k, cnt, buf, wr + k);
            }
        }
    }
    if (grad_e != NULL) {
        *grad_e = c.wn.e;
    }
    return MT_OK;
}
