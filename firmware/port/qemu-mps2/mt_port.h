/* Port hooks of the QEMU mps2 machines (included into the generated program with -include). */
#ifndef MT_PORT_H
#define MT_PORT_H
#include <stdint.h>

/** SysTick ticks since mt_port_cycles_start(): the CPU clock (SYSCLK, 25 MHz on mps2). Under
 *  QEMU `-icount shift=0` one instruction takes 1 ns of virtual time, so instructions = ticks * 40. */
uint32_t mt_port_cycles(void);
void mt_port_cycles_start(void);
#define MT_CYCLES() mt_port_cycles()

#endif
