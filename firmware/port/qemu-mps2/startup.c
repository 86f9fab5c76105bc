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

/* SysTick: 24-bit down counter on the CPU clock; the handler counts wraps */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
static volatile uint32_t systick_wraps;

static void systick_handler(void)
{
    systick_wraps++;
}

void mt_port_cycles_start(void);
uint32_t mt_port_cycles(void);

void mt_port_cycles_start(void)
{
    SYST_CSR = 0u;
    systick_wraps = 0u;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 7u; /* enable, interrupt, processor clock */
    while (SYST_CVR == 0u) { /* the first tick loads the reload value */
    }
}

uint32_t mt_port_cycles(void)
{
    uint32_t w, v;
    do {
        w = systick_wraps;
        v = SYST_CVR;
    } while (w != systick_wraps);
    return (w << 24) + (0x00FFFFFFu - v);
}

__attribute__((section(".vectors"), used)) static const void *const vectors[16] = {
    &_estack, (const void *)mt_reset_handler, (const void *)fault_handler, (const void *)fault_handler,
    (const void *)fault_handler, (const void *)fault_handler, (const void *)fault_handler,
    0, 0, 0, 0, 0, 0, 0, 0, (const void *)systick_handler,
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
