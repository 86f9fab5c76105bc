/* mt_port.h for QEMU sifive_e (board qemu-rv32: FE310-class, 16 KiB DTIM RAM at 0x80000000).
 *
 * UART: SiFive UART0 at 0x10013000 (QEMU hw/char/sifive_uart.c): txdata +0 (bit 31 full), rxdata
 * +4 (bit 31 empty; a read pops the byte), txctrl +8 and rxctrl +0xC (bit 0 enable), div +0x18.
 * QEMU keeps further input in the chardev while the 8-byte RX FIFO is full. The RX watermark
 * interrupt (PLIC source 3) only ends the WFI of mt_port_idle(); no trap is taken.
 * Cycles: the mcycle CSR (with -icount shift=0: retired instructions, 1 ns each; else host ticks).
 * Storage: a host file over semihosting (../common/mt_semihost.c); -DMT_PORT_STORAGE_SIZE=0 for
 * none. Stack: ../common/mt_stack.c (2 KiB by default, link.ld). Build with
 * -DMT_DEVICE_MAX_PAYLOAD=256: the frame buffers then take ~1.1 KiB of the 16 KiB.
 */
#include <stdint.h>

#include "mt_port.h"

#ifndef MT_PORT_BOARD
#define MT_PORT_BOARD "qemu-rv32"
#endif
#ifndef MT_PORT_UART
#define MT_PORT_UART 0x10013000u
#endif

#define UART_TXDATA (*(volatile uint32_t *)(MT_PORT_UART + 0x00u))
#define UART_RXDATA (*(volatile uint32_t *)(MT_PORT_UART + 0x04u))
#define UART_TXCTRL (*(volatile uint32_t *)(MT_PORT_UART + 0x08u))
#define UART_RXCTRL (*(volatile uint32_t *)(MT_PORT_UART + 0x0Cu))
#define UART_IE (*(volatile uint32_t *)(MT_PORT_UART + 0x10u))
#define UART_IP (*(volatile uint32_t *)(MT_PORT_UART + 0x14u))
#define UART_DIV (*(volatile uint32_t *)(MT_PORT_UART + 0x18u))
#define UART_FLAG 0x80000000u
#define UART_IE_RXWM 2u
#define UART_IRQ 3u /* UART0 on the FE310 PLIC */

void mt_stack_paint(void);

/* PLIC (0x0C000000 on virt and sifive_e), hart 0 M-mode = context 0: the UART's receive interrupt
 * only ends the WFI of mt_port_idle(); mstatus.MIE stays 0, so no trap is ever taken */
#define PLIC_PRIORITY(id) (*(volatile uint32_t *)(0x0C000000u + 4u * (id)))
#define PLIC_ENABLE0 (*(volatile uint32_t *)0x0C002000u)
#define PLIC_THRESHOLD0 (*(volatile uint32_t *)0x0C200000u)
#define PLIC_CLAIM0 (*(volatile uint32_t *)0x0C200004u)
#define MIE_MEIE 0x800u

static void plic_wake_on(uint32_t irq)
{
    PLIC_PRIORITY(irq) = 1u;
    PLIC_ENABLE0 |= 1u << irq;
    PLIC_THRESHOLD0 = 0u;
    __asm__ volatile(".option push\n.option arch, +zicsr\ncsrs mie, %0\n.option pop" : : "r"(MIE_MEIE));
}

/* sleep unless @p ready: WFI returns when the PLIC has a pending enabled interrupt (even with
 * mstatus.MIE = 0), so a byte that arrives after the check ends it; then claim + complete */
static void plic_idle(int ready)
{
    uint32_t id;
    if (!ready) {
        __asm__ volatile("wfi" : : : "memory");
    }
    id = PLIC_CLAIM0;
    if (id != 0u) {
        PLIC_CLAIM0 = id;
    }
}

void mt_port_init(void)
{
    mt_stack_paint();
    UART_DIV = 138u; /* 115200 Bd at 16 MHz on the real part; QEMU ignores it */
    UART_TXCTRL = 1u;
    UART_RXCTRL = 1u; /* rxcnt 0: the RX watermark is pending while the FIFO holds a byte */
    UART_IE = UART_IE_RXWM;
    plic_wake_on(UART_IRQ);
}

void mt_port_idle(void)
{
    plic_idle((UART_IP & UART_IE_RXWM) != 0u);
}

int mt_port_getc(void)
{
    const uint32_t v = UART_RXDATA;
    if ((v & UART_FLAG) != 0u) {
        return -1;
    }
    return (int)(v & 0xFFu);
}

void mt_port_putc(uint8_t c)
{
    while ((UART_TXDATA & UART_FLAG) != 0u) {
    }
    UART_TXDATA = c;
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
    uint32_t v;
    __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, mcycle\n.option pop" : "=r"(v));
    return v;
}

const char *mt_port_board(void)
{
    return MT_PORT_BOARD;
}
