/* Stub of the BSP's metal/machine.h (sifive-hifive1-revb metal.h, copied there by PlatformIO's
 * builder; tests/fake_sdk/README.md): the stdout UART handle of the tty constructor. */
#ifndef METAL__MACHINE_H
#define METAL__MACHINE_H
#include <metal/uart.h>
struct __metal_driver_sifive_uart0 {
    struct metal_uart uart;
    unsigned long baud_rate;
};
extern struct __metal_driver_sifive_uart0 __metal_dt_serial_10013000;
#define __METAL_DT_STDOUT_UART_HANDLE (&__metal_dt_serial_10013000.uart)
#define __METAL_DT_STDOUT_UART_BAUD 115200
#endif
