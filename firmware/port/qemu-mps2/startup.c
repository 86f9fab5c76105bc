/* Minimal Cortex-M startup for the QEMU mps2 machines (mps2-an386 Cortex-M4, mps2-an500 Cortex-M7):
 * vector table, .data/.bss set-up, main(), exit over semihosting. Board port: not part of the engine. */
#include <stdint.h>

#include "mt_semihost.h" /* port/common (the compiled folder keeps a copy next to this file) */

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void mt_reset_handler(void);
void mt_systick_handler(void); /* mt_port_mps2.c */
void mt_uart_rx_handler(void);  /* mt_port_mps2.c: UART0 RX, IRQ 0 */

static void fault_handler(void)
{
    mt_port_exit(3);
}

__attribute__((section(".vectors"), used)) static const void *const vectors[17] = {
    &_estack, (const void *)mt_reset_handler, (const void *)fault_handler, (const void *)fault_handler,
    (const void *)fault_handler, (const void *)fault_handler, (const void *)fault_handler,
    0, 0, 0, 0, 0, 0, 0, 0, (const void *)mt_systick_handler,
    (const void *)mt_uart_rx_handler, /* IRQ 0 */
};

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
