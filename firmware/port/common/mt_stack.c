/**
 * @file mt_stack.c
 * @brief Stack canaries of the bare-metal ports: mt_port_stack_size / mt_port_stack_high_water.
 *
 * The linker script places the main stack in [_sstack, _estack) (grows down from _estack).
 * mt_stack_paint(), called at the top of mt_port_init(), fills [_sstack, sp - 16) with a canary;
 * the high-water mark is _estack minus the lowest word that no longer holds it. Board port code.
 */
#include <stdint.h>

#include "mt_port.h"

extern uint32_t _sstack, _estack;
void mt_stack_paint(void);

#define MT_STACK_CANARY 0xC5A3E1F7u

static uintptr_t stack_pointer(void)
{
    uintptr_t sp;
#if defined(__arm__)
    __asm__ volatile("mov %0, sp" : "=r"(sp));
#elif defined(__riscv)
    __asm__ volatile("mv %0, sp" : "=r"(sp));
#else
#error "mt_stack.c: Arm or RISC-V only"
#endif
    return sp;
}

__attribute__((noinline)) void mt_stack_paint(void)
{
    volatile uint32_t *p = &_sstack;
    const uintptr_t stop = stack_pointer() - 16u; /* below the live frames: nothing there is in use */
    while ((uintptr_t)p < stop) {
        *p++ = MT_STACK_CANARY;
    }
}

uint32_t mt_port_stack_size(void)
{
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)&_sstack);
}

uint32_t mt_port_stack_high_water(void)
{
    const volatile uint32_t *p = &_sstack;
    while (p < &_estack && *p == MT_STACK_CANARY) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}
