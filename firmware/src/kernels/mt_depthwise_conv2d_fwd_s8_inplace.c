/**
 * @file mt_depthwise_conv2d_fwd_s8_inplace.c
 * @brief Depthwise conv2d (depth multiplier 1) that writes its output over its input, row by
 *        row through a ring of pending output rows (the memory planner's in-place rule,
 *        compiler/memory/lifetimes.py depthwise_inplace_rows).
 *
 * Output row j of a sample is computed into ring slot j % ring_rows; then every pending row
 * whose bytes end at or before the first input byte that output row j + 1 reads is copied to
 * its place in the buffer. Rows are committed in order, so the output bytes only ever cover
 * input rows that no later output row reads. Samples are processed one after the other; the
 * output of sample b starts at b * OH*OW*C <= b * H*W*C, behind its input.
 */
#include "mt_kernels_fwd.h"

size_t mt_depthwise_conv2d_fwd_s8_inplace_scratch_bytes(const mt_dims *out_dims, int32_t ring_rows)
{
    return (size_t)ring_rows * (size_t)out_dims->w * (size_t)out_dims->c;
}

/* An empty statement the compiler must keep: stops GCC/Clang from turning the copy loop into a
 * memcpy call (absent in -nostdlib builds). */
#if defined(__GNUC__)
#define MT_KEEP_LOOP() __asm__ volatile("")
#else
#define MT_KEEP_LOOP() ((void)0)
#endif

static void copy_row(int8_t *dst, const int8_t *src, size_t n)
{
    size_t i = 0;
#if defined(__GNUC__) && (defined(__ARM_FEATURE_UNALIGNED) || defined(__i386__) || defined(__x86_64__))
    for (; i + 4 <= n; i += 4) { /* word copies (one LDR/STR pair where unaligned access is allowed) */
        uint32_t v;
        __builtin_memcpy(&v, src + i, sizeof v);
        __builtin_memcpy(dst + i, &v, sizeof v);
        MT_KEEP_LOOP();
    }
#endif
    for (; i < n; ++i) {
        dst[i] = src[i];
        MT_KEEP_LOOP();
    }
}

mt_status mt_depthwise_conv2d_fwd_s8_inplace(const mt_dw_conv_params *p,
                                             const mt_per_channel_quant *q,
                                             const mt_dims *in_dims, int8_t *buf,
                                             const mt_dims *filter_dims, const int8_t *w,
                                             const int32_t *bias, const mt_dims *out_dims,
                                             int8_t *ring, int32_t ring_rows)
{
    const size_t row_in = (size_t)in_dims->w * (size_t)in_dims->c;
    const size_t row_out = (size_t)out_dims->w * (size_t)out_dims->c;
    const int32_t oh = out_dims->h;
    int32_t b, j;

    if (p->ch_mult != 1 || out_dims->c != in_dims->c || ring == NULL || ring_rows < 1 ||
        (size_t)oh * row_out > (size_t)in_dims->h * row_in || out_dims->n != in_dims->n ||
        p->padding.top < 0 || p->stride.h < 1) {
        return MT_ERR_ARG;
    }
    for (b = 0; b < in_dims->n; ++b) {
        const int8_t *in_b = buf + (size_t)b * (size_t)in_dims->h * row_in;
        int8_t *out_b = buf + (size_t)b * (size_t)oh * row_out;
        int32_t first = 0; /* oldest pending output row */
        for (j = 0; j < oh; ++j) {
            /* output row j alone: input rows from r0 on, top padding what remains above */
            const int32_t y0 = j * p->stride.h - p->padding.top;
            const int32_t r0 = y0 > 0 ? y0 : 0;
            mt_dw_conv_params pj = *p;
            mt_dims din = *in_dims, dout = *out_dims;
            size_t need;
            mt_status st;
            din.n = 1;
            din.h = in_dims->h - r0;
            dout.n = 1;
            dout.h = 1;
            pj.padding.top = r0 - y0;
            if (j - first >= ring_rows) {
                return MT_ERR_ARG; /* ring too small for this geometry */
            }
            st = mt_depthwise_conv2d_fwd_s8(&pj, q, &din, in_b + (size_t)r0 * row_in, filter_dims, w,
                                            bias, &dout, ring + (size_t)(j % ring_rows) * row_out);
            if (st != MT_OK) {
                return st;
            }
            if (j + 1 < oh) {
                const int32_t y1 = (j + 1) * p->stride.h - p->padding.top;
                need = (size_t)(y1 > 0 ? y1 : 0) * row_in;
            } else {
                need = (size_t)in_dims->h * row_in;
            }
            while (first <= j && (size_t)(first + 1) * row_out <= need) {
                copy_row(out_b + (size_t)first * row_out, ring + (size_t)(first % ring_rows) * row_out,
                         row_out);
                ++first;
            }
        }
    }
    return MT_OK;
}
