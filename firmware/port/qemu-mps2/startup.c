/* Minimal Cortex-M startup for QEMU mps2 machines: vector table, .data/.bss set-up, main(), and
 * Arm semihosting for output and exit (QEMU -semihosting). Board port: not part of the engine. */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void mt_reset_handler(void);
void mt_port_exit(int code);

static void fault_handler(void)
{
    mt_port_exit(3);
}

__attribute__((section(".vectors"), used)) static const void *const vectors[16] = {
    &_estack, (const void *)mt_reset_handler, (const void *)fault_handler, (const void *)fault_handler,
    (const void *)fault_handler, (const void *)fault_handler, (const void *)fault_handler,
};

static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void mt_port_write(const char *s)
{
    (void)semihost(0x04, s); /* SYS_WRITE0 */
}

void mt_port_exit(int code)
{
    const uint32_t block[2] = {0x20026u, (uint32_t)code}; /* ADP_Stopped_ApplicationExit */
    for (;;) {
        (void)semihost(0x20, block); /* SYS_EXIT_EXTENDED */
        (void)semihost(0x18, (const void *)0x20026u);
    }
}

void mt_reset_handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; ++dst) {
        *dst = 0u;
    }
    mt_port_exit(main());
}
