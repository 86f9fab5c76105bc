/* mt_port.h for QEMU virt, riscv32 (board qemu-rv32-virt).
 *
 * UART: NS16550A at 0x10000000 (QEMU hw/char/serial.c): RBR/THR +0, IER +1, FCR +2, LCR +3, LSR +5
 * (bit 0 data ready, bit 5 THR empty); FIFOs on, 8N1. Its receive interrupt (PLIC source 10) only
 * ends the WFI of mt_port_idle(); no trap is taken.
 * Cycles: the mcycle CSR. QEMU derives it from the virtual clock: with -icount shift=0 one
 * instruction is 1 ns and mcycle counts retired instructions (= minstret); without -icount it is
 * the host's cycle counter (not deterministic).
 * Storage: a host file over semihosting (../common/mt_semihost.c). Stack: ../common/mt_stack.c.
 */
#include <stdint.h>

#include "mt_port.h"

#ifndef MT_PORT_BOARD
#define MT_PORT_BOARD "qemu-rv32-virt"
#endif
#ifndef MT_PORT_UART
#define MT_PORT_UART 0x10000000u
#endif

#define UART_REG(off) (*(volatile uint8_t *)(MT_PORT_UART + (off)))
#define UART_RBR UART_REG(0u)
#define UART_THR UART_REG(0u)
#define UART_DLL UART_REG(0u)
#define UART_IER UART_REG(1u)
#define UART_DLM UART_REG(1u)
#define UART_FCR UART_REG(2u)
#define UART_LCR UART_REG(3u)
#define UART_LSR UART_REG(5u)
#define LSR_DR 0x01u
#define LSR_THRE 0x20u
#define UART_IRQ 10u /* UART0 on the virt PLIC */

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
    UART_IER = 0u;
    UART_LCR = 0x80u; /* divisor latch */
    UART_DLL = 1u;
    UART_DLM = 0u;
    UART_LCR = 0x03u; /* 8N1 */
    UART_FCR = 0x07u; /* FIFOs on, both cleared, receive trigger at 1 byte */
    UART_IER = 1u;    /* receive-data interrupt: ends the WFI of mt_port_idle() */
    plic_wake_on(UART_IRQ);
}

void mt_port_idle(void)
{
    plic_idle((UART_LSR & LSR_DR) != 0u);
}

int mt_port_getc(void)
{
    if ((UART_LSR & LSR_DR) == 0u) {
        return -1;
    }
    return (int)UART_RBR;
}

void mt_port_putc(uint8_t c)
{
    while ((UART_LSR & LSR_THRE) == 0u) {
    }
    UART_THR = c;
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
