/* mt_port.h for the QEMU mps2 machines (qemu-m4 = mps2-an386, qemu-m7 = mps2-an500).
 *
 * UART: CMSDK APB UART0 at 0x40004000 (QEMU hw/char/cmsdk-apb-uart.c): DATA +0, STATE +4 (bit 0 TX
 * full, bit 1 RX full), CTRL +8 (bit 0 TX enable, bit 1 RX enable), BAUDDIV +0x10 (>= 16). One byte
 * each way; QEMU holds further input in the chardev (-serial tcp:...) until DATA is read, so nothing
 * is lost while the device computes. The RX interrupt (UART0 RX = IRQ 0 on AN385/AN386/AN500) is
 * enabled only to end the WFI of mt_port_idle(); its handler just acknowledges it.
 * Cycles: SysTick on the processor clock (SYSCLK, 25 MHz on mps2), 24-bit, wraps counted in its
 * interrupt. Under QEMU -icount shift=0 one instruction is 1 ns of virtual time: instructions =
 * ticks * 40; without -icount the ticks follow the host's real time.
 * Storage: a host file over semihosting (../common/mt_semihost.c). Stack: ../common/mt_stack.c.
 * Board name: "qemu-m4" or "qemu-m7" from the core's CPUID part number (Cortex-M4 0xC24, M7 0xC27);
 * -DMT_PORT_BOARD='"name"' overrides it.
 */
#include <stdint.h>

#include "mt_port.h"

#ifndef MT_PORT_UART
#define MT_PORT_UART 0x40004000u
#endif

#define UART_DATA (*(volatile uint32_t *)(MT_PORT_UART + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(MT_PORT_UART + 0x04u))
#define UART_CTRL (*(volatile uint32_t *)(MT_PORT_UART + 0x08u))
#define UART_INTSTATUS (*(volatile uint32_t *)(MT_PORT_UART + 0x0Cu)) /* write 1 to clear */
#define UART_BAUDDIV (*(volatile uint32_t *)(MT_PORT_UART + 0x10u))
#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u
#define UART_CTRL_TX_EN 1u
#define UART_CTRL_RX_EN 2u
#define UART_CTRL_RX_INTEN 8u
#define UART_INT_RX 2u
#define UART0_RX_IRQ 0u
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)

#define SCB_CPUID (*(volatile uint32_t *)0xE000ED00u)
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

void mt_stack_paint(void);
void mt_systick_handler(void);
void mt_uart_rx_handler(void);

static volatile uint32_t systick_wraps;

void mt_systick_handler(void)
{
    systick_wraps++;
}

/* UART0 RX interrupt: it only wakes the core from mt_port_idle(); the byte stays in DATA */
void mt_uart_rx_handler(void)
{
    UART_INTSTATUS = UART_INT_RX;
}

void mt_port_init(void)
{
    mt_stack_paint();
    UART_BAUDDIV = 16u;
    UART_CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INTEN;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
    SYST_CSR = 0u;
    systick_wraps = 0u;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 7u; /* enable, interrupt, processor clock */
    while (SYST_CVR == 0u) { /* the first tick loads the reload value */
    }
}

int mt_port_getc(void)
{
    if ((UART_STATE & UART_STATE_RXFULL) == 0u) {
        return -1;
    }
    return (int)(UART_DATA & 0xFFu);
}

void mt_port_idle(void)
{
    /* PRIMASK set: an RX interrupt that arrives after the check still ends the WFI (it pends), and
     * is taken (acknowledged) after cpsie */
    __asm__ volatile("cpsid i" : : : "memory");
    if ((UART_STATE & UART_STATE_RXFULL) == 0u) {
        __asm__ volatile("dsb\n\twfi" : : : "memory");
    }
    __asm__ volatile("cpsie i" : : : "memory");
}

void mt_port_putc(uint8_t c)
{
    while ((UART_STATE & UART_STATE_TXFULL) != 0u) {
    }
    UART_DATA = c;
}

void mt_port_send(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        mt_port_putc(p[i]);
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

const char *mt_port_board(void)
{
#ifdef MT_PORT_BOARD
    return MT_PORT_BOARD;
#else
    const uint32_t part = (SCB_CPUID >> 4) & 0xFFFu;
    return part == 0xC27u ? "qemu-m7" : part == 0xC24u ? "qemu-m4" : "qemu-mps2";
#endif
}
