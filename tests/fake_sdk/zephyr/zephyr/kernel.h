/* Stub of <zephyr/kernel.h> (tests/fake_sdk/README.md): k_cycle_get_32, k_sleep/K_FOREVER,
 * k_current_get, struct k_thread's stack_info (CONFIG_THREAD_STACK_INFO), k_thread_stack_space_get. */
#ifndef STUB_ZEPHYR_KERNEL_H
#define STUB_ZEPHYR_KERNEL_H
#include <stddef.h>
#include <stdint.h>
typedef struct {
    int64_t ticks;
} k_timeout_t;
#define K_FOREVER ((k_timeout_t){.ticks = -1})
struct _thread_stack_info {
    uintptr_t start;
    size_t size;
    size_t delta;
};
struct k_thread {
    void *base;
#if defined(CONFIG_THREAD_STACK_INFO)
    struct _thread_stack_info stack_info;
#endif
};
typedef struct k_thread *k_tid_t;
uint32_t k_cycle_get_32(void);
int32_t k_sleep(k_timeout_t timeout);
k_tid_t k_current_get(void);
int k_thread_stack_space_get(const struct k_thread *thread, size_t *unused_ptr);
#endif
