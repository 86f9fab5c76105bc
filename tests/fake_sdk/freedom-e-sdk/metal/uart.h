/* Stub of freedom-metal v202005's metal/uart.h (tests/fake_sdk/README.md): the vtable handle API
 * (struct metal_uart *metal_uart_get_device(unsigned int); __inline__ init/putc/getc/set_baud_rate). */
#ifndef METAL__UART_H
#define METAL__UART_H
#include <stddef.h>
struct metal_uart;
struct metal_uart_vtable {
    void (*init)(struct metal_uart *uart, int baud_rate);
    int (*putc)(struct metal_uart *uart, int c);
    int (*txready)(struct metal_uart *uart);
    int (*getc)(struct metal_uart *uart, int *c);
    int (*get_baud_rate)(struct metal_uart *uart);
    int (*set_baud_rate)(struct metal_uart *uart, int baud_rate);
};
struct metal_uart {
    const struct metal_uart_vtable *vtable;
};
struct metal_uart *metal_uart_get_device(unsigned int device_num);
__inline__ void metal_uart_init(struct metal_uart *uart, int baud_rate) { uart->vtable->init(uart, baud_rate); }
__inline__ int metal_uart_putc(struct metal_uart *uart, int c) { return uart->vtable->putc(uart, c); }
__inline__ int metal_uart_txready(struct metal_uart *uart) { return uart->vtable->txready(uart); }
__inline__ int metal_uart_getc(struct metal_uart *uart, int *c) { return uart->vtable->getc(uart, c); }
__inline__ int metal_uart_get_baud_rate(struct metal_uart *uart) { return uart->vtable->get_baud_rate(uart); }
__inline__ int metal_uart_set_baud_rate(struct metal_uart *uart, int baud_rate)
{
    return uart->vtable->set_baud_rate(uart, baud_rate);
}
#endif
