/**
 * @file mt_kernels_dsp.h
 * @brief Arm DSP-extension (Cortex-M4/M7/M33/M55/M85) variants of the hot int8 kernels.
 *
 * Each ``<portable name>_dsp`` has the signature, preconditions, scratch contract
 * (``<portable name>_scratch_bytes``) and results of the portable kernel of the same name,
 * byte for byte (tests/test_c_kernels_dsp.py): only the order of the exact int32 sums changes
 * (SMLAD adds two 16x16 products at a time), the requantization / renormalisation is the same
 * code. Sources: firmware/src/kernels/dsp/, one kernel per file. With ``__ARM_FEATURE_DSP`` they
 * use the instructions (mt_dsp.h), elsewhere bit-exact C emulations (slower than the portable
 * kernels: build them for the host only to test them). The training variants call the portable
 * gradient-format kernels (mt_grad_mul_q31_s16, mt_grad_headroom_s16, mt_grad_renormalize_s32),
 * so link them with the portable kernels.
 *
 * Generated code does not call these names directly: it calls ``MT_KERNEL(name)``
 * (mt_dispatch.h), which picks the variant when ``MT_USE_DSP`` is defined.
 */
#ifndef MT_KERNELS_DSP_H
#define MT_KERNELS_DSP_H

#include "mt_kernels_fwd.h"
#include "mt_kernels_train.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Every portable kernel that has a ``_dsp`` variant, as an X-macro: ``X(portable_name)``.
 * mt_dispatch.h and the benchmark list (src/kernels/dsp/mt_dsp_bench.c) are generated from it.
 */
#define MT_DSP_KERNELS(X)                   \
    X(mt_conv2d_fwd_s8)                     \
    X(mt_pointwise_conv2d_fwd_s8)           \
    X(mt_fully_connected_fwd_s8)            \
    X(mt_fully_connected_update_s8)         \
    X(mt_pointwise_conv2d_update_s8)        \
    X(mt_fully_connected_bwd_input_s16)     \
    X(mt_pointwise_conv2d_bwd_input_s16)    \
    X(mt_fully_connected_acc_s32)           \
    X(mt_conv2d_update_s8)                  \
    X(mt_depthwise_conv2d_fwd_s8)           \
    X(mt_depthwise_conv2d_fwd_s8_inplace)   \
    X(mt_conv2d_bwd_input_s16)              \
    X(mt_depthwise_conv2d_bwd_input_s16)

/** As mt_conv2d_fwd_s8 (SXTAB16/SMLAD, two output channels per window pass). */
mt_status mt_conv2d_fwd_s8_dsp(const mt_conv_params *p, const mt_per_channel_quant *q,
                               const mt_dims *in_dims, const int8_t *in,
                               const mt_dims *filter_dims, const int8_t *w, const int32_t *bias,
                               const mt_dims *out_dims, int8_t *out);

/** As mt_pointwise_conv2d_fwd_s8 (same scratch size: Cin int16, stored reordered). */
mt_status mt_pointwise_conv2d_fwd_s8_dsp(void *scratch, const mt_conv_params *p,
                                         const mt_per_channel_quant *q,
                                         const mt_dims *in_dims, const int8_t *in,
                                         const mt_dims *filter_dims, const int8_t *w,
                                         const int32_t *bias, const mt_dims *out_dims, int8_t *out);

/** As mt_fully_connected_fwd_s8 (no scratch; w_zp handled by SXTAB16). */
mt_status mt_fully_connected_fwd_s8_dsp(const mt_fc_params *p, const mt_per_channel_quant *q,
                                        int32_t batch, int32_t in_features, const int8_t *in,
                                        int32_t out_features, const int8_t *w,
                                        const int32_t *bias, int8_t *out);

/** As mt_fully_connected_update_s8 (SMLAD over batch-row pairs; same update order). */
mt_status mt_fully_connected_update_s8_dsp(const mt_fc_train_params *p, const mt_sgd_params *u,
                                           mt_sgd_state *st, int32_t rows, int32_t *acc,
                                           const int16_t *g, int32_t g_e, const int8_t *x,
                                           int8_t *w, int16_t *grad, int32_t *grad_e);

/** As mt_pointwise_conv2d_update_s8 (the fully_connected rule over pixels). */
mt_status mt_pointwise_conv2d_update_s8_dsp(const mt_conv_train_params *p,
                                            const mt_sgd_params *u, mt_sgd_state *st,
                                            int32_t rows, int32_t *acc, const int16_t *g,
                                            int32_t g_e, const int8_t *x, int8_t *w,
                                            int16_t *grad, int32_t *grad_e);

/** As mt_fully_connected_bwd_input_s16 (SMLAD over output-channel pairs of int16 gs). */
mt_status mt_fully_connected_bwd_input_s16_dsp(const mt_fc_train_params *p, int16_t *gs,
                                               int32_t *acc, const int16_t *g, int32_t g_e,
                                               const int8_t *w, int16_t *gx, int32_t *gx_e);

/** As mt_pointwise_conv2d_bwd_input_s16 (the fully_connected rule over pixels). */
mt_status mt_pointwise_conv2d_bwd_input_s16_dsp(const mt_conv_train_params *p, int16_t *gs,
                                                int32_t *acc, const int16_t *g, int32_t g_e,
                                                const int8_t *w, int16_t *gx, int32_t *gx_e);

/* ---- benchmark hook (issue #7): the portable/DSP pairs, by name ---------------------------- */

/** A kernel of any signature (cast back to its own type before calling). */
typedef void (*mt_any_fn)(void);

/** One portable kernel and its DSP variant. */
typedef struct {
    const char *name;  /**< portable name, e.g. "mt_conv2d_fwd_s8" */
    mt_any_fn portable;
    mt_any_fn dsp;
} mt_dsp_bench_entry;

/** As mt_fully_connected_acc_s32 (the SMLAD blocking of mt_fully_connected_fwd_s8_dsp). */
mt_status mt_fully_connected_acc_s32_dsp(const mt_fc_params *p, int32_t batch, int32_t in_features,
                                         const int8_t *in, int32_t out_features, const int8_t *w,
                                         const int32_t *bias, int32_t *acc);

/** As mt_conv2d_update_s8 (pass 1 as an SMLAD GEMM over pixel pairs, SXTAB16 im2col packing;
 *  the portable kernel without the scratch). */
mt_status mt_conv2d_update_s8_dsp(const mt_conv_train_params *p, const mt_sgd_params *u,
                                  mt_sgd_state *st, int32_t rows, int32_t *acc, const int16_t *g,
                                  int32_t g_e, const int8_t *x, int8_t *w, int16_t *grad,
                                  int32_t *grad_e);

/** As mt_depthwise_conv2d_fwd_s8 (4 channels per word: SXTB16 + SMLABB/SMLATT, SMMULR requantization). */
mt_status mt_depthwise_conv2d_fwd_s8_dsp(const mt_dw_conv_params *p, const mt_per_channel_quant *q,
                                         const mt_dims *in_dims, const int8_t *in, const mt_dims *filter_dims,
                                         const int8_t *w, const int32_t *bias, const mt_dims *out_dims,
                                         int8_t *out);

/** As mt_depthwise_conv2d_fwd_s8_inplace (the same ring; rows by mt_depthwise_conv2d_fwd_s8_dsp). */
mt_status mt_depthwise_conv2d_fwd_s8_inplace_dsp(const mt_dw_conv_params *p, const mt_per_channel_quant *q,
                                                 const mt_dims *in_dims, int8_t *buf, const mt_dims *filter_dims,
                                                 const int8_t *w, const int32_t *bias, const mt_dims *out_dims,
                                                 int8_t *ring, int32_t ring_rows);

/** As mt_conv2d_bwd_input_s16 (SMLAD over output-channel weight pairs; scatter or gather form). */
mt_status mt_conv2d_bwd_input_s16_dsp(const mt_conv_train_params *p, int16_t *gs, int32_t *acc,
                                      const int16_t *g, int32_t g_e, const int8_t *w, int16_t *gx,
                                      int32_t *gx_e);

/** As mt_depthwise_conv2d_bwd_input_s16 (two channels per word, SMLABB/SMLATT). */
mt_status mt_depthwise_conv2d_bwd_input_s16_dsp(const mt_conv_train_params *p, int16_t *gs, int32_t *acc,
                                                const int16_t *g, int32_t g_e, const int8_t *w, int16_t *gx,
                                                int32_t *gx_e);

/** Every pair of MT_DSP_KERNELS, in that order (src/kernels/dsp/mt_dsp_bench.c). */
extern const mt_dsp_bench_entry mt_dsp_bench_list[];
/** Entries of mt_dsp_bench_list. */
extern const int32_t mt_dsp_bench_count;

#ifdef __cplusplus
}
#endif

#endif /* MT_KERNELS_DSP_H */
