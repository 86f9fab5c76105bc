/**
 * @file mt_kernels_fwd.h
 * @brief Portable int8 forward kernels (C99, integer only, no heap, no stdio).
 *
 * Every kernel is bit-exact with ``forward_int8`` of the op of the same name in compiler/ops/
 * (the numpy oracle, itself bit-exact with TFLite's reference kernels), given the constants the
 * op's ``prepare()`` computes on the host. Conventions shared by all kernels:
 *
 *  - Activations are NHWC int8, row-major, batch first (``mt_dims``: n, h, w, c). 2-D tensors
 *    [N, C] are passed as {n, 1, 1, c}.
 *  - Arguments: params structs first, then inputs (dims before data), outputs last.
 *  - Zero points are stored as the tensor's zero point (not negated), each in [-128, 127].
 *  - ``mult`` values are Q0.31 multipliers (in [2^30, 2^31) or 0, as tflite::QuantizeMultiplier
 *    returns them); ``shift`` > 0 is a left shift (see mt_mbqm in mt_common.h).
 *  - Fused activations are the output clamp [act_min, act_max] (subrange of [-128, 127]).
 *  - Accumulators are int32 as in TFLite; callers guarantee the accumulation does not overflow
 *    (|bias| + K * 255 * 255 < 2^31 for K multiply-accumulates, always true for int8 models).
 *  - Outputs must not alias inputs (except where a kernel says otherwise).
 *  - Each kernel has a ``*_scratch_bytes`` companion (0 when it needs none); the memory planner
 *    (compiler) mirrors these formulas.
 */
#ifndef MT_KERNELS_FWD_H
#define MT_KERNELS_FWD_H

#include <stddef.h>
#include <stdint.h>

#include "mt_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Shape of an NHWC tensor (all >= 1). */
typedef struct {
    int32_t n;
    int32_t h;
    int32_t w;
    int32_t c;
} mt_dims;

/** A (height, width) pair: stride, dilation or window size, each >= 1. */
typedef struct {
    int32_t h;
    int32_t w;
} mt_hw;

/** Spatial zero/edge padding in elements, each >= 0 (IR attribute ``pad`` order). */
typedef struct {
    int32_t top;
    int32_t left;
    int32_t bottom;
    int32_t right;
} mt_padding;

/** Per-output-channel requantization (``prepare()['mult']``, ``prepare()['shift']``), [Cout] each. */
typedef struct {
    const int32_t *mult;
    const int32_t *shift;
} mt_per_channel_quant;

/* ============================================================================================ */
/* conv2d                                                                                        */
/* ============================================================================================ */

/** conv2d parameters (``Conv2D.prepare`` + node attributes ``stride``, ``dilation``, ``pad``). */
typedef struct {
    int32_t in_zp;        /**< input zero point, [-128, 127] */
    int32_t out_zp;       /**< output zero point, [-128, 127] */
    mt_hw stride;         /**< >= 1 */
    mt_hw dilation;       /**< >= 1 */
    mt_padding padding;   /**< top/left used for indexing; bottom/right only shape the output */
    int32_t act_min;      /**< output clamp (fused activation), [-128, 127] */
    int32_t act_max;      /**< act_min <= act_max <= 127 */
    mt_wsplit split;      /**< weight rows split SRAM/flash (zero: not split) */
} mt_conv_params;

/**
 * @brief General int8 conv2d: stride, dilation, asymmetric padding, per-channel requantization.
 *
 *   acc[o] = bias[o] + sum_{i,j,c} (x[ih,iw,c] - in_zp) * w[o,i,j,c]   (padding contributes 0)
 *   y[o]   = clamp(MBQM(acc[o], mult[o], shift[o]) + out_zp, act_min, act_max)
 *
 * @param[in]  p            geometry, zero points, clamp
 * @param[in]  q            per-channel mult/shift, [Cout]
 * @param[in]  in_dims      {N, H, W, Cin}
 * @param[in]  in           int8 [N, H, W, Cin]
 * @param[in]  filter_dims  {Cout, KH, KW, Cin} (OHWI; ``n`` is Cout)
 * @param[in]  w            int8 [Cout, KH, KW, Cin], symmetric (zero point 0)
 * @param[in]  bias         int32 [Cout] at scale s_in * s_w[o], or NULL
 * @param[in]  out_dims     {N, OH, OW, Cout}, OH = (H + top + bottom - ((KH-1)*dh + 1)) / sh + 1
 * @param[out] out          int8 [N, OH, OW, Cout]
 * @return MT_OK, or MT_ERR_ARG on inconsistent shapes
 */
mt_status mt_conv2d_fwd_s8(const mt_conv_params *p, const mt_per_channel_quant *q,
                           const mt_dims *in_dims, const int8_t *in,
                           const mt_dims *filter_dims, const int8_t *w, const int32_t *bias,
                           const mt_dims *out_dims, int8_t *out);

/** Scratch of mt_conv2d_fwd_s8: none (0 bytes). It uses 640 bytes of stack: an int16 window patch
 *  of up to 256 elements (KH*KW*Cin; larger windows are read in place) and 32 weight sums. */
size_t mt_conv2d_fwd_s8_scratch_bytes(const mt_dims *in_dims, const mt_dims *filter_dims);

/**
 * @brief 1x1, stride-1, unpadded conv2d fast path; same results as mt_conv2d_fwd_s8.
 *
 * A per-pixel matrix-vector product: the input row (x - in_zp) is widened once to int16 in
 * ``scratch`` and reused for every output channel.
 *
 * @param[in]  scratch  unused (may be NULL; kept for the call signature)
 * @param[in]  p        as for conv2d; requires stride 1x1 and zero padding (dilation ignored)
 * @param[in]  filter_dims {Cout, 1, 1, Cin}
 * Other arguments as mt_conv2d_fwd_s8. Returns MT_ERR_ARG if the geometry is not pointwise.
 */
mt_status mt_pointwise_conv2d_fwd_s8(void *scratch, const mt_conv_params *p,
                                     const mt_per_channel_quant *q,
                                     const mt_dims *in_dims, const int8_t *in,
                                     const mt_dims *filter_dims, const int8_t *w,
                                     const int32_t *bias, const mt_dims *out_dims, int8_t *out);

/** Scratch of mt_pointwise_conv2d_fwd_s8: none (0 bytes). */
size_t mt_pointwise_conv2d_fwd_s8_scratch_bytes(const mt_dims *in_dims, const mt_dims *filter_dims);

/* ============================================================================================ */
/* depthwise_conv2d                                                                              */
/* ============================================================================================ */

/** depthwise_conv2d parameters (``DepthwiseConv2D.prepare`` + node attributes). */
typedef struct {
    int32_t in_zp;        /**< [-128, 127] */
    int32_t out_zp;       /**< [-128, 127] */
    int32_t ch_mult;      /**< depth multiplier M >= 1: Cout = Cin * M */
    mt_hw stride;
    mt_hw dilation;
    mt_padding padding;
    int32_t act_min;
    int32_t act_max;
} mt_dw_conv_params;

/**
 * @brief int8 depthwise conv2d with depth multiplier; output channel o reads input channel o / M.
 *
 *   acc[o] = bias[o] + sum_{i,j} (x[ih,iw,o/M] - in_zp) * w[0,i,j,o]
 *   y[o]   = clamp(MBQM(acc[o], mult[o], shift[o]) + out_zp, act_min, act_max)
 *
 * @param[in]  filter_dims  {1, KH, KW, Cin*M}
 * @param[in]  w            int8 [1, KH, KW, Cin*M] (TFLite layout)
 * @param[in]  bias         int32 [Cin*M] or NULL
 * @param[in]  out_dims     {N, OH, OW, Cin*M}
 * Other arguments as mt_conv2d_fwd_s8.
 */
mt_status mt_depthwise_conv2d_fwd_s8(const mt_dw_conv_params *p, const mt_per_channel_quant *q,
                                     const mt_dims *in_dims, const int8_t *in,
                                     const mt_dims *filter_dims, const int8_t *w,
                                     const int32_t *bias, const mt_dims *out_dims, int8_t *out);

/** Scratch of mt_depthwise_conv2d_fwd_s8: none (0 bytes). */
size_t mt_depthwise_conv2d_fwd_s8_scratch_bytes(const mt_dims *in_dims, const mt_dims *filter_dims);

/**
 * @brief In-place depthwise conv2d (M = 1): the output overwrites the input buffer @p buf.
 *
 * Same integers as mt_depthwise_conv2d_fwd_s8. Output rows go through @p ring (ring_rows
 * pending rows of OW*C bytes, compiler/memory/lifetimes.depthwise_inplace_rows) and are
 * committed once no later output row reads the input bytes they cover.
 * @param[in,out] buf   in: int8 [N, H, W, C]; out: int8 [N, OH, OW, C] (OH*OW <= H*W)
 * @param[out]    ring  scratch, mt_depthwise_conv2d_fwd_s8_inplace_scratch_bytes() bytes
 * @return MT_ERR_ARG for M != 1, an output larger than the input, or a ring too small
 */
mt_status mt_depthwise_conv2d_fwd_s8_inplace(const mt_dw_conv_params *p,
                                             const mt_per_channel_quant *q,
                                             const mt_dims *in_dims, int8_t *buf,
                                             const mt_dims *filter_dims, const int8_t *w,
                                             const int32_t *bias, const mt_dims *out_dims,
                                             int8_t *ring, int32_t ring_rows);

/** Scratch of the in-place depthwise: ring_rows * OW * C bytes. */
size_t mt_depthwise_conv2d_fwd_s8_inplace_scratch_bytes(const mt_dims *out_dims, int32_t ring_rows);

/* ============================================================================================ */
/* fully_connected                                                                               */
/* ============================================================================================ */

/** fully_connected parameters (``FullyConnected.prepare``). */
typedef struct {
    int32_t in_zp;        /**< [-128, 127] */
    int32_t w_zp;         /**< weight zero point (per-tensor weights only; 0 otherwise) */
    int32_t out_zp;       /**< [-128, 127] */
    int32_t act_min;
    int32_t act_max;
    mt_wsplit split;      /**< weight rows split SRAM/flash (zero: not split) */
} mt_fc_params;

/**
 * @brief int8 fully connected: x [N, Cin], w [Cout, Cin] -> y [N, Cout].
 *
 *   acc[n,o] = bias[o] + sum_k (x[n,k] - in_zp) * (w[o,k] - w_zp)
 *   y[n,o]   = clamp(MBQM(acc, mult[o], shift[o]) + out_zp, act_min, act_max)
 *
 * Per-tensor weights: ``prepare`` already broadcasts the multiplier to [Cout] arrays.
 * @param[in] q  per-channel mult/shift, [Cout]
 */
mt_status mt_fully_connected_fwd_s8(const mt_fc_params *p, const mt_per_channel_quant *q,
                                    int32_t batch, int32_t in_features, const int8_t *in,
                                    int32_t out_features, const int8_t *w, const int32_t *bias,
                                    int8_t *out);

/** Scratch of mt_fully_connected_fwd_s8: none (0 bytes). */
size_t mt_fully_connected_fwd_s8_scratch_bytes(int32_t in_features, int32_t out_features);

/**
 * @brief int32 accumulators of a fully connected layer, no requantization (the input of the
 *        softmax cross-entropy on accumulators): acc[n,o] = bias[o] + sum_k (x - in_zp)(w - w_zp).
 * @param[in]  p    zero points and weight split (out_zp / act_* unused)
 * @param[out] acc  int32 [N, Cout]
 */
mt_status mt_fully_connected_acc_s32(const mt_fc_params *p, int32_t batch, int32_t in_features,
                                     const int8_t *in, int32_t out_features, const int8_t *w,
                                     const int32_t *bias, int32_t *acc);

/** Scratch of mt_fully_connected_acc_s32: none (0 bytes). */
size_t mt_fully_connected_acc_s32_scratch_bytes(int32_t in_features, int32_t out_features);

/* ============================================================================================ */
/* add                                                                                           */
/* ============================================================================================ */

/** add parameters (``Add.prepare``; TFLite int8 ADD). Shifts are <= 0 (smaller-than-one). */
typedef struct {
    int32_t left_shift;   /**< 20 */
    int32_t a_zp;
    int32_t b_zp;
    int32_t out_zp;
    int32_t a_mult;
    int32_t a_shift;      /**< <= 0 */
    int32_t b_mult;
    int32_t b_shift;      /**< <= 0 */
    int32_t out_mult;
    int32_t out_shift;    /**< <= 0 */
    int32_t act_min;
    int32_t act_max;
} mt_add_params;

/**
 * @brief int8 add with numpy broadcasting over 4-D shapes (rank < 4 is left-padded with 1s).
 *
 *   a' = MBQM((a - a_zp) << left_shift, a_mult, a_shift);   b' likewise
 *   y  = clamp(MBQM(a' + b', out_mult, out_shift) + out_zp, act_min, act_max)
 *
 * Each dimension of a and b equals the output's or is 1. ``out`` may alias ``a`` or ``b`` when
 * that operand has the output's shape.
 */
mt_status mt_add_fwd_s8(const mt_add_params *p,
                        const mt_dims *a_dims, const int8_t *a,
                        const mt_dims *b_dims, const int8_t *b,
                        const mt_dims *out_dims, int8_t *out);

/** Scratch of mt_add_fwd_s8: none (0 bytes). */
size_t mt_add_fwd_s8_scratch_bytes(const mt_dims *out_dims);

/* ============================================================================================ */
/* relu / relu6                                                                                  */
/* ============================================================================================ */

/** relu/relu6 parameters (``Relu.prepare`` / ``Relu6.prepare``, TFLite QuantizedReluX). */
typedef struct {
    int32_t in_zp;
    int32_t out_zp;
    int32_t mult;         /**< QuantizeMultiplier(float32(s_x / s_y)) */
    int32_t shift;
    int32_t act_min;      /**< q(0) (relu, relu6) */
    int32_t act_max;      /**< 127 (relu) or q(6) (relu6) */
} mt_relu_params;

/**
 * @brief int8 relu / relu6 (one kernel, the op is in the clamp bounds):
 *   y = clamp(MBQM(x - in_zp, mult, shift) + out_zp, act_min, act_max).
 * ``out`` may alias ``in``.
 */
mt_status mt_relu_fwd_s8(const mt_relu_params *p, int32_t size, const int8_t *in, int8_t *out);

/** Scratch of mt_relu_fwd_s8: none (0 bytes). */
size_t mt_relu_fwd_s8_scratch_bytes(int32_t size);

/* ============================================================================================ */
/* max_pool2d / avg_pool2d                                                                       */
/* ============================================================================================ */

/** Windowed pool parameters (node attributes ``ksize``, ``stride``, ``pad``; ``prepare`` clamp).
 *  Input and output share quantization, so there is no requantization. */
typedef struct {
    mt_hw ksize;              /**< window, >= 1 */
    mt_hw stride;             /**< >= 1 */
    mt_padding padding;       /**< each < the window size along its axis */
    int32_t act_min;
    int32_t act_max;
    int32_t count_include_pad;/**< avg only: nonzero divides by KH*KW instead of the valid count */
} mt_pool_params;

/**
 * @brief int8 max pool: y = clamp(max of the valid (unpadded) window elements, act_min, act_max).
 * @param in_dims {N, H, W, C}; out_dims {N, OH, OW, C}, OH = (H + top + bottom - KH) / SH + 1
 */
mt_status mt_max_pool2d_fwd_s8(const mt_pool_params *p, const mt_dims *in_dims, const int8_t *in,
                               const mt_dims *out_dims, int8_t *out);

/** Scratch of mt_max_pool2d_fwd_s8: none (0 bytes). */
size_t mt_max_pool2d_fwd_s8_scratch_bytes(const mt_dims *out_dims);

/**
 * @brief int8 average pool (TFLite rounding):
 *   s = sum of valid x (int32); n = valid count (or KH*KW with count_include_pad)
 *   y = clamp(s > 0 ? (s + n/2) / n : (s - n/2) / n, act_min, act_max)   (C truncating '/')
 */
mt_status mt_avg_pool2d_fwd_s8(const mt_pool_params *p, const mt_dims *in_dims, const int8_t *in,
                               const mt_dims *out_dims, int8_t *out);

/** Scratch of mt_avg_pool2d_fwd_s8: none (0 bytes). */
size_t mt_avg_pool2d_fwd_s8_scratch_bytes(const mt_dims *out_dims);

/* ============================================================================================ */
/* mean (global average over H, W)                                                               */
/* ============================================================================================ */

/** mean parameters (``Mean.prepare``; the 1/(H*W) is folded into mult/shift on the host). */
typedef struct {
    int32_t in_zp;
    int32_t out_zp;
    int32_t count;        /**< H * W the constants were prepared for */
    int32_t mult;         /**< (M << k) / count, < 2^31 */
    int32_t shift;        /**< e - k, >= -31 */
} mt_mean_params;

/**
 * @brief int8 global mean over H and W (TFLite QuantizedMeanOrSum):
 *   acc = sum_{h,w} x - in_zp * count   (int32, wrapping)
 *   y   = clamp(MBQM(acc, mult, shift) + out_zp, -128, 127)
 * @param in_dims {N, H, W, C} with H * W == p->count (else MT_ERR_ARG)
 * @param out     int8 [N, C] (same bytes as [N, 1, 1, C])
 */
mt_status mt_mean_fwd_s8(const mt_mean_params *p, const mt_dims *in_dims, const int8_t *in,
                         int8_t *out);

/** Scratch of mt_mean_fwd_s8: none (0 bytes). */
size_t mt_mean_fwd_s8_scratch_bytes(const mt_dims *in_dims);

/* ============================================================================================ */
/* softmax                                                                                       */
/* ============================================================================================ */

/** softmax parameters (``Softmax.prepare``); the output is fixed at scale 1/256, zero point -128. */
typedef struct {
    int32_t mult;         /**< QuantizeMultiplierGreaterThanOne(beta * s_x * 2^26) */
    int32_t left_shift;   /**< [1, 31] */
    int32_t diff_min;     /**< -CalculateInputRadius(5, left_shift), <= 0 */
} mt_softmax_params;

/**
 * @brief int8 softmax over the last axis (TFLite reference Softmax<int8, int8>, gemmlowp exp and
 * reciprocal): rows of ``cols`` elements, ``rows`` of them, int8 in, int8 out (zp -128).
 */
mt_status mt_softmax_fwd_s8(const mt_softmax_params *p, int32_t rows, int32_t cols,
                            const int8_t *in, int8_t *out);

/** Scratch of mt_softmax_fwd_s8: none (0 bytes). */
size_t mt_softmax_fwd_s8_scratch_bytes(int32_t cols);

/* ============================================================================================ */
/* pad                                                                                           */
/* ============================================================================================ */

/** pad parameters (node attribute ``pads``, ``Pad.prepare()['value']``), axes in NHWC order;
 *  a rank-r tensor (r < 4) uses the last r axes with the leading ones set to 1 and pads 0. */
typedef struct {
    int32_t before[4];    /**< >= 0 */
    int32_t after[4];     /**< >= 0 */
    int32_t value;        /**< the output zero point */
} mt_pad_params;

/** @brief int8 constant pad: out_dims[i] = in_dims[i] + before[i] + after[i]. */
mt_status mt_pad_fwd_s8(const mt_pad_params *p, const mt_dims *in_dims, const int8_t *in,
                        const mt_dims *out_dims, int8_t *out);

/** Scratch of mt_pad_fwd_s8: none (0 bytes). */
size_t mt_pad_fwd_s8_scratch_bytes(const mt_dims *out_dims);

#ifdef __cplusplus
}
#endif

#endif /* MT_KERNELS_FWD_H */
