/**
 * @file mt_dsp_bench.c
 * @brief Benchmark hook (issue #7): the list of portable kernels with a DSP variant, each with
 *        both function addresses, generated from MT_DSP_KERNELS. Only a list - no timing here.
 */
#include "mt_kernels_dsp.h"

#define MT_BENCH_ENTRY(name) {#name, (mt_any_fn)name, (mt_any_fn)name##_dsp},

const mt_dsp_bench_entry mt_dsp_bench_list[] = {MT_DSP_KERNELS(MT_BENCH_ENTRY)};

const int32_t mt_dsp_bench_count =
    (int32_t)(sizeof mt_dsp_bench_list / sizeof mt_dsp_bench_list[0]);
