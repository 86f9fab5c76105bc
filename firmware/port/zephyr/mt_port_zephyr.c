/* mt_port.h on Zephyr (PlatformIO framework = zephyr): nRF52840-DK (PCA10056).
 *
 * Build: zephyr/CMakeLists.txt of the compiled folder lists the sources (this file,
 * src/device/mt_main.c: Zephyr's main thread runs main()), zephyr/prj.conf sets:
 *   CONFIG_SERIAL=y                       the UART driver (uart0 is "okay" in the board's DT)
 *   CONFIG_CONSOLE=n, CONFIG_UART_CONSOLE=n, CONFIG_PRINTK=n, CONFIG_BOOT_BANNER=n, CONFIG_LOG=n
 *                                         nothing but protocol frames on the console UART
 *   CONFIG_MAIN_STACK_SIZE=4096           the device loop and the generated program
 *   CONFIG_THREAD_STACK_INFO=y, CONFIG_INIT_STACKS=y   stack size and high-water mark
 *
 * UART: the devicetree's zephyr,console (nRF52840-DK: uart0 = J-Link OB virtual COM port,
 * 115200 8N1 from the board's DT current-speed), DEVICE_DT_GET(DT_CHOSEN(zephyr_console)),
 * polled: uart_poll_in() (0 = a byte, -1 = none; never blocks), uart_poll_out() (blocks until
 * the byte is taken). Idle: returns at once (main is the only busy thread; a k_sleep() would let
 * bytes pile up in the UARTE's small receive buffer).
 * Cycles: the DWT cycle counter (core clock, 64 MHz) when the core has one
 * (CONFIG_CPU_CORTEX_M_HAS_DWT, architectural registers DEMCR 0xE000EDFC, DWT_CTRL 0xE0001000,
 * DWT_CYCCNT 0xE0001004), else k_cycle_get_32() (on nRF52 that is the 32768 Hz RTC).
 * Storage: none (0). Stack: the main thread's (k_current_get()->stack_info.size, unused bytes
 * from k_thread_stack_space_get(): Zephyr paints thread stacks with CONFIG_INIT_STACKS).
 *
 * Verified against (search tool, docs corpus): Zephyr API docs 3.0-4.x for uart_poll_in /
 * uart_poll_out (signatures, return values), debug/stack.h (stack_info.size and
 * k_thread_stack_space_get(thread, &unused) under CONFIG_INIT_STACKS + CONFIG_THREAD_STACK_INFO),
 * Kconfig CONFIG_THREAD_STACK_INFO. Headers: <zephyr/...> since Zephyr 3.1, the unprefixed ones
 * before (both handled); DEVICE_DT_GET and device_is_ready() need Zephyr >= 2.6. Not compiled
 * against the real SDK here (tests/test_real_ports.py: stub headers only).
 */
#include <stdint.h>

#if defined(__has_include)
#if __has_include(<zephyr/kernel.h>)
#define MT_ZEPHYR_PREFIXED 1
#endif
#endif

#if defined(MT_ZEPHYR_PREFIXED)
#include <zephyr/device.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#else
#include <device.h>
#include <drivers/uart.h>
#include <zephyr.h>
#endif

#include "mt_port.h"

#ifndef MT_PORT_BOARD
#define MT_PORT_BOARD "nRF52840-DK"
#endif

#if defined(CONFIG_CPU_CORTEX_M_HAS_DWT)
#define MT_DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define MT_DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define MT_DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define MT_DEMCR_TRCENA (1u << 24)
#define MT_DWT_CYCCNTENA 1u
#endif

static const struct device *const mt_uart = DEVICE_DT_GET(DT_CHOSEN(zephyr_console));

void mt_port_init(void)
{
#if defined(CONFIG_CPU_CORTEX_M_HAS_DWT)
    MT_DEMCR |= MT_DEMCR_TRCENA;
    MT_DWT_CYCCNT = 0u;
    MT_DWT_CTRL |= MT_DWT_CYCCNTENA;
#endif
    if (!device_is_ready(mt_uart)) {
        for (;;) { /* no console UART: nothing sensible left to do */
            k_sleep(K_FOREVER);
        }
    }
}

int mt_port_getc(void)
{
    unsigned char c;
    if (uart_poll_in(mt_uart, &c) != 0) {
        return -1;
    }
    return (int)c;
}

void mt_port_idle(void)
{
}

void mt_port_putc(uint8_t c)
{
    uart_poll_out(mt_uart, c);
}

void mt_port_send(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        uart_poll_out(mt_uart, p[i]);
    }
}

uint32_t mt_port_cycles(void)
{
#if defined(CONFIG_CPU_CORTEX_M_HAS_DWT)
    return MT_DWT_CYCCNT;
#else
    return k_cycle_get_32();
#endif
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
#if defined(CONFIG_THREAD_STACK_INFO)
    return (uint32_t)k_current_get()->stack_info.size;
#else
    return 0u;
#endif
}

uint32_t mt_port_stack_high_water(void)
{
#if defined(CONFIG_THREAD_STACK_INFO) && defined(CONFIG_INIT_STACKS)
    const struct k_thread *self = k_current_get();
    size_t unused = 0;
    if (k_thread_stack_space_get(self, &unused) != 0 || unused > self->stack_info.size) {
        return 0u;
    }
    return (uint32_t)(self->stack_info.size - unused);
#else
    return 0u;
#endif
}

const char *mt_port_board(void)
{
    return MT_PORT_BOARD;
}
