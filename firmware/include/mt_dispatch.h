/**
 * @file mt_dispatch.h
 * @brief Kernel selection by board feature: generated code calls ``MT_KERNEL(name)(args...)``.
 *
 *   MT_KERNEL(mt_pointwise_conv2d_fwd_s8)  ->  mt_pointwise_conv2d_fwd_s8_dsp   (MT_USE_DSP defined
 *                                                                               and a variant exists)
 *                                          ->  mt_pointwise_conv2d_fwd_s8       (otherwise)
 *
 * ``MT_USE_DSP`` is defined by the build of boards with the Arm DSP extension (board TOML
 * ``[features] dsp = true``: Cortex-M4/M7/M33/M55/M85). ``MT_HAS_DSP_<name>`` is 1 for every kernel
 * that has a variant (the list is MT_DSP_KERNELS in mt_kernels_dsp.h), whether or not it is used.
 * The selection is pure preprocessing: no function pointers, no run-time cost. ``name`` must be a
 * plain kernel name (not a macro).
 */
#ifndef MT_DISPATCH_H
#define MT_DISPATCH_H

#include "mt_kernels_fwd.h"
#include "mt_kernels_train.h"
#include "mt_kernels_dsp.h"

/* which kernels have a DSP variant */
#define MT_HAS_DSP_mt_conv2d_fwd_s8 1
#define MT_HAS_DSP_mt_pointwise_conv2d_fwd_s8 1
#define MT_HAS_DSP_mt_fully_connected_fwd_s8 1
#define MT_HAS_DSP_mt_fully_connected_update_s8 1
#define MT_HAS_DSP_mt_pointwise_conv2d_update_s8 1
#define MT_HAS_DSP_mt_fully_connected_bwd_input_s16 1
#define MT_HAS_DSP_mt_pointwise_conv2d_bwd_input_s16 1
#define MT_HAS_DSP_mt_fully_connected_acc_s32 1
#define MT_HAS_DSP_mt_conv2d_update_s8 1
#define MT_HAS_DSP_mt_depthwise_conv2d_fwd_s8 1
#define MT_HAS_DSP_mt_depthwise_conv2d_fwd_s8_inplace 1
#define MT_HAS_DSP_mt_conv2d_bwd_input_s16 1
#define MT_HAS_DSP_mt_depthwise_conv2d_bwd_input_s16 1

/* MT_KERNEL(name): the second element of "MT_DSP_ALT_<name>, name, ~" once expanded. For a kernel
 * with a selected variant MT_DSP_ALT_<name> expands to "~, <name>_dsp", which becomes the second
 * element; otherwise it stays a single token and <name> is the second element. */
#define MT_DISPATCH_CAT_(a, b) a##b
#define MT_DISPATCH_SECOND_(a, b, ...) b
#define MT_DISPATCH_APPLY_(m, args) m args
#define MT_DISPATCH_PICK_(...) MT_DISPATCH_APPLY_(MT_DISPATCH_SECOND_, (__VA_ARGS__))
#define MT_KERNEL(name) MT_DISPATCH_PICK_(MT_DISPATCH_CAT_(MT_DSP_ALT_, name), name, ~)

#if defined(MT_USE_DSP)
#define MT_DSP_ALT_mt_conv2d_fwd_s8 ~, mt_conv2d_fwd_s8_dsp
#define MT_DSP_ALT_mt_pointwise_conv2d_fwd_s8 ~, mt_pointwise_conv2d_fwd_s8_dsp
#define MT_DSP_ALT_mt_fully_connected_fwd_s8 ~, mt_fully_connected_fwd_s8_dsp
#define MT_DSP_ALT_mt_fully_connected_update_s8 ~, mt_fully_connected_update_s8_dsp
#define MT_DSP_ALT_mt_pointwise_conv2d_update_s8 ~, mt_pointwise_conv2d_update_s8_dsp
#define MT_DSP_ALT_mt_fully_connected_bwd_input_s16 ~, mt_fully_connected_bwd_input_s16_dsp
#define MT_DSP_ALT_mt_pointwise_conv2d_bwd_input_s16 ~, mt_pointwise_conv2d_bwd_input_s16_dsp
#define MT_DSP_ALT_mt_fully_connected_acc_s32 ~, mt_fully_connected_acc_s32_dsp
#define MT_DSP_ALT_mt_conv2d_update_s8 ~, mt_conv2d_update_s8_dsp
#define MT_DSP_ALT_mt_depthwise_conv2d_fwd_s8 ~, mt_depthwise_conv2d_fwd_s8_dsp
#define MT_DSP_ALT_mt_depthwise_conv2d_fwd_s8_inplace ~, mt_depthwise_conv2d_fwd_s8_inplace_dsp
#define MT_DSP_ALT_mt_conv2d_bwd_input_s16 ~, mt_conv2d_bwd_input_s16_dsp
#define MT_DSP_ALT_mt_depthwise_conv2d_bwd_input_s16 ~, mt_depthwise_conv2d_bwd_input_s16_dsp
#endif

#endif /* MT_DISPATCH_H */
