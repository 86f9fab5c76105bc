/* mt_port.h on SiFive freedom-metal (PlatformIO framework = freedom-e-sdk): HiFive1 Rev B (FE310-G002).
 *
 * Build: PlatformIO's freedom-e-sdk builder compiles freedom-metal (src/ and gloss/) for the BSP
 * sifive-hifive1-revb and links its metal.default.lds; the gloss crt0 calls main()
 * (src/device/mt_main.c). The folder's platformio.ini adds -Wl,--defsym=__stack_size=2048 (the
 * script's default is 1 KiB) and -DMT_DEVICE_MAX_PAYLOAD=256 (16 KiB DTIM).
 *
 * UART: UART0 (metal_uart_get_device(0)), which the HiFive1 Rev B routes to the J-Link OB's
 * virtual COM port (GPIO16 RX, GPIO17 TX). freedom-metal's stdout (tty.c) is UART0 too and its
 * constructor already ran metal_uart_init(__METAL_DT_STDOUT_UART_HANDLE, baud): a second init would
 * register the driver's clock-change callbacks twice (a cycle in freedom-metal's callback list), so
 * then only metal_uart_set_baud_rate() is called (it reprograms the divisor from the current clock
 * and enables TX/RX); otherwise metal_uart_init(). Nothing here prints, so stdout never mixes into
 * the frames. metal_uart_getc() does not block: it stores -1 when the RX FIFO is empty.
 * metal_uart_putc() waits while the TX FIFO is full. Idle: returns at once (polled receive).
 * Cycles: the mcycle CSR (core clock). The platform's SiFive GCC 8.3 predates the separate Zicsr
 * extension and assembles `csrr` as is; GCC >= 12 without _zicsr in -march gets it for the one
 * instruction through `.option arch, +zicsr` (binutils >= 2.38).
 * Storage: none (0). Stack: [metal_segment_stack_begin, metal_segment_stack_end) of the linker
 * script (one hart), painted at init below the current frame; high water as in port/common.
 *
 * Verified against (search tool, code corpus): platform-sifive builder/frameworks/freedom-e-sdk.py
 * and platform.json (framework-freedom-e-sdk 2.20050003 = freedom-e-sdk v202005, metal headers
 * under freedom-metal/, BSP sifive-${BOARD}); freedom-metal v2020 metal/uart.h
 * (struct metal_uart *metal_uart_get_device(unsigned int); metal_uart_init(struct metal_uart *, int);
 * int metal_uart_putc(struct metal_uart *, int); int metal_uart_getc(struct metal_uart *, int *);
 * int metal_uart_set_baud_rate(struct metal_uart *, int)), src/drivers/sifive_uart0.c (getc stores
 * -1 when RXDATA.empty, putc waits on TXDATA.full, init registers clock callbacks), src/tty.c (the
 * stdout constructor);
 * bsp/sifive-hifive1-revb/metal.default.lds (__stack_size default 0x400, the stack segment
 * symbols). The newer freedom-metal API (struct metal_uart passed by value) is not supported.
 * Not compiled against the real SDK here (tests/test_real_ports.py: stub headers only).
 */
#include <stdint.h>

#include <metal/machine.h>
#include <metal/uart.h>

#include "mt_port.h"

#ifndef MT_PORT_BOARD
#define MT_PORT_BOARD "HiFive1 Rev B"
#endif
#ifndef MT_PORT_BAUD
#define MT_PORT_BAUD 115200
#endif

#define MT_STACK_CANARY 0xC5A3E1F7u

#if !defined(__riscv_zicsr) && defined(__GNUC__) && __GNUC__ >= 12
#define MT_CSRR_MCYCLE ".option push\n.option arch, +zicsr\ncsrr %0, mcycle\n.option pop"
#else
#define MT_CSRR_MCYCLE "csrr %0, mcycle"
#endif

extern uint32_t metal_segment_stack_begin; /* metal.default.lds: the stack of hart 0 */
extern uint32_t metal_segment_stack_end;

static struct metal_uart *mt_uart;

static void stack_paint(void)
{
    uint32_t marker;
    volatile uint32_t *p = &metal_segment_stack_begin;
    const uintptr_t stop = (uintptr_t)&marker - 64u; /* below the live frames of this call */
    while ((uintptr_t)p < stop) {
        *p++ = MT_STACK_CANARY;
    }
}

void mt_port_init(void)
{
    stack_paint();
    mt_uart = metal_uart_get_device(0u);
    if (mt_uart == NULL) {
        for (;;) { /* no UART0 in this BSP: nothing sensible left to do */
        }
    }
#if defined(__METAL_DT_STDOUT_UART_HANDLE)
    if (mt_uart == __METAL_DT_STDOUT_UART_HANDLE) { /* initialised by freedom-metal's tty constructor */
        (void)metal_uart_set_baud_rate(mt_uart, MT_PORT_BAUD);
        return;
    }
#endif
    metal_uart_init(mt_uart, MT_PORT_BAUD);
}

int mt_port_getc(void)
{
    int c = -1;
    if (metal_uart_getc(mt_uart, &c) != 0 || c < 0) {
        return -1;
    }
    return c & 0xFF;
}

void mt_port_idle(void)
{
}

void mt_port_putc(uint8_t c)
{
    (void)metal_uart_putc(mt_uart, (int)c);
}

void mt_port_send(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        (void)metal_uart_putc(mt_uart, (int)p[i]);
    }
}

uint32_t mt_port_cycles(void)
{
    uint32_t v;
    __asm__ volatile(MT_CSRR_MCYCLE : "=r"(v));
    return v;
}

uint32_t mt_port_storage_size(void)
{
    return 0u;
}

int mt_port_storage_read(uint32_t off, void *p, uint32_t n)
{
    (void)off;
    (void)p;
    (void)n;
    return -1;
}

int mt_port_storage_write(uint32_t off, const void *p, uint32_t n)
{
    (void)off;
    (void)p;
    (void)n;
    return -1;
}

uint32_t mt_port_stack_size(void)
{
    return (uint32_t)((uintptr_t)&metal_segment_stack_end - (uintptr_t)&metal_segment_stack_begin);
}

uint32_t mt_port_stack_high_water(void)
{
    const volatile uint32_t *p = &metal_segment_stack_begin;
    while (p < &metal_segment_stack_end && *p == MT_STACK_CANARY) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&metal_segment_stack_end - (uintptr_t)p);
}

const char *mt_port_board(void)
{
    return MT_PORT_BOARD;
}
