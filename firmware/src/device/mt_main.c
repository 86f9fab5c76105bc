/**
 * @file mt_main.c
 * @brief main() of a bare-metal device: the port, then the protocol loop, forever (sleeping in
 *        mt_port_idle() whenever nothing was received).
 *
 * Ports with an operating system (firmware/port/host) have their own main (arguments, waiting
 * for input without spinning) around the same three calls.
 */
#include "mt_device.h"
#include "mt_port.h"

int main(void)
{
    mt_port_init();
    mt_device_init();
    for (;;) {
        mt_device_poll();
        mt_port_idle();
    }
}
