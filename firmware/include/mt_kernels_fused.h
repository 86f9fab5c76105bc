/**
 * @file mt_kernels_fused.h
 * @brief Fused training kernels: several backward steps in one kernel, without the intermediate
 *        gradient tensors, giving exactly the integers (and exponents, updated parameters) of the
 *        unfused sequence of mt_kernels_train.h kernels they replace.
 *
 * C99, integer only, no heap, no stdio, no VLAs; conventions as mt_kernels_train.h.
 */
#ifndef MT_KERNELS_FUSED_H
#define MT_KERNELS_FUSED_H

#include <stddef.h>
#include <stdint.h>

#include "mt_kernels_train.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Bytes of mt_mean_pointwise_bwd_s16's scratch (4-byte aligned), for the pointwise conv
 *        @p p ({N, H, W, Cin} -> {N, H, W, C}), P = N*H*W:
 *          int32 [Cin]                one pixel row of accumulators
 *          int16 [N*C] (padded to 4)  per (sample, channel) unmasked-pixel counts, then gs
 *          single_pass only: uint8 [P] per-row shifts + ceil(P*Cin / 8) bytes of sign bits.
 *        0 when @p p is not a valid pointwise geometry.
 */
size_t mt_mean_pointwise_bwd_s16_scratch_bytes(const mt_conv_train_params *p, int single_pass);

/**
 * @brief Backward of  global mean (op ``mean`` over H, W)  <-  1x1 conv (fused relu/relu6, bias)
 *        in one kernel, without the mean's [N*H*W, C] input gradient.
 *
 * Same integers as the unfused sequence (G int16 [P, C], P = N*H*W):
 *   mt_mean_bwd_input_s16(&p->out, inv_mult, inv_shift, g, g_e, G, &G_e);
 *   if (mask) mt_act_mask_apply_s16(P * C, mask, G);
 *   if (u && bias_rows > 0) mt_bias_update_s32(u, st, P, C, bias_rows, G, G_e, bias, NULL, NULL);
 *   mt_pointwise_conv2d_bwd_input_s16(p, gs, acc, G, G_e, w, gx, gx_e);   (any gs / acc)
 * G[p, c] is v[n, c] (the mean's per-(sample, channel) value) or 0 (masked), so every whole-
 * tensor quantity of those kernels follows from v and the per-(n, c) counts of unmasked pixels:
 *  - bias: the column sums are count * v (v rounded by the headroom shift first when there is
 *    one), the headroom's max |G| is over the (n, c) with an unmasked pixel;
 *  - gs = headroom(scale_channels(G)): its max |G| and max |t| are taken over those (n, c) as
 *    well (a masked 0 gives t = 0), then gs[n, c] = the same rounding of v[n, c];
 *  - gx[p, :] = sum over the unmasked c of gs[n, c] * w[c, :] (exact int32: the headroom bounds
 *    any partial sum), renormalised over all of gx.
 * Costs: one pass over the mask bits (counts), O(N*C) for the scalings and the bias update, then
 * the MACs of the unmasked non-zero (pixel, channel) pairs: once with @p single_pass, twice
 * otherwise (pass 1 max |acc|, pass 2 recompute and write). Without a mask every pixel of a
 * sample has the same row: it is computed once per sample.
 * Single pass: each row is stored in gx as uint16 magnitudes |acc| >> r_p (r_p = max(0,
 * bitlen(max |row|) - 16), so < 2^16) with the signs in a bitmap; the final shift s satisfies
 * s - 1 >= r_p, and RDBPOT(acc, s) = sign * (((|acc| >> (s-1)) + 1) >> 1) needs only the bits of
 * |acc| from s - 1 up, so a last pass over gx writes the exact mantissas in place.
 *
 * @param[in]     p          pointwise conv2d (1x1, stride 1, no padding): p->out = {N, H, W, C}
 *                           is the mean's input, p->in = {N, H, W, Cin}; weights may be split
 *                           SRAM/flash (p->split)
 * @param[in]     inv_mult, inv_shift  the mean's 1/(H*W) (Mean.backward_int8 constants)
 * @param[in]     u, st      bias update constants / state (kind MT_APPLY_BIAS when lr_mult != 0)
 *                           of slice {1, bias_rows, C, 1}; u NULL: the bias is not trained
 *                           (st, bias unused). lr_mult == 0: nothing is updated.
 * @param[in]     bias_rows  trained bias channels [0, bias_rows), 0..C (0: no bias update)
 * @param[out]    scratch    mt_mean_pointwise_bwd_s16_scratch_bytes(p, single_pass) bytes,
 *                           4-byte aligned; contents unspecified afterwards
 * @param[in]     single_pass  non-zero: one MAC pass (the larger scratch)
 * @param[in]     g          upstream gradient of the mean's output, int16 [N, C], exponent g_e
 * @param[in]     mask       packed relu/relu6 mask of the conv output [N, H, W, C]
 *                           (mt_act_mask_pack_s8 layout: element i = bit i & 7 of byte i >> 3),
 *                           or NULL (no activation)
 * @param[in]     w          int8 [C, Cin] pre-update weights (rows [split.rows, C) at
 *                           p->split.tail when split)
 * @param[in,out] bias       int32 [C]; entries [0, bias_rows) updated
 * @param[out]    gx, gx_e   input gradient int16 [N, H, W, Cin] and its exponent; gx must not
 *                           overlap g, mask, w or scratch
 * @return MT_OK, or MT_ERR_ARG (nothing written) when p is not pointwise, a dimension is < 1,
 *         bias_rows is outside [0, C], or the bias is updated with st->kind != MT_APPLY_BIAS.
 */
mt_status mt_mean_pointwise_bwd_s16(const mt_conv_train_params *p, int32_t inv_mult,
                                    int32_t inv_shift, const mt_sgd_params *u, mt_sgd_state *st,
                                    int32_t bias_rows, int32_t *scratch, int single_pass,
                                    const int16_t *g, int32_t g_e, const uint8_t *mask,
                                    const int8_t *w, int32_t *bias, int16_t *gx, int32_t *gx_e);

#ifdef __cplusplus
}
#endif

#endif /* MT_KERNELS_FUSED_H */
