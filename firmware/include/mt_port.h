/**
 * @file mt_port.h
 * @brief The board port: what every board (or host process) implements so the device loop
 *        (src/device/mt_device.c) can speak the protocol on it.
 *
 * A device is anything that moves bytes both ways and runs the generated program. The device loop
 * uses only the functions below; a port may have more (its own headers), e.g. a log over
 * semihosting. Ports live in firmware/port/<name>/ (QEMU mps2, RISC-V virt, SiFive E, host pty).
 *
 * Build: pass this header to the generated program with `-include mt_port.h` so its MT_CYCLES()
 * (cycles per step in mt_metrics) reads the port's counter; without it the program reports 0.
 */
#ifndef MT_PORT_H
#define MT_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Bring the board up: UART (or pty), cycle counter, stack canaries. Called once, first thing
 *  in main(), before mt_device_init(). Storage may be opened lazily on first use. */
void mt_port_init(void);

/** Next received byte (0..255), or -1 when none is waiting. Never blocks. */
int mt_port_getc(void);

/** Called by the main loop when nothing is waiting (mt_port_getc() returned -1): may sleep until
 *  the next interrupt (WFI with the UART's receive interrupt enabled, so an idle device costs no
 *  host CPU under QEMU) or return at once. Must not lose or delay input: a byte that arrives
 *  between the last mt_port_getc() and the sleep has to end the sleep. */
void mt_port_idle(void);

/** Transmit one byte; blocks until the transmitter took it. */
void mt_port_putc(uint8_t c);

/** Transmit @p n bytes in order; blocks until all were taken. */
void mt_port_send(const uint8_t *p, size_t n);

/** A free-running 32-bit counter (wraps): the core clock where the board has one, else the
 *  port's documented time base. Differences of two readings are cycles (mt_metrics.cycles). */
uint32_t mt_port_cycles(void);

/** Bytes of persistent storage (survives a reset/power cycle: flash page, host file), 0 = none. */
uint32_t mt_port_storage_size(void);

/** Read @p n bytes at @p off into @p p. 0 on success, -1 on error or out of range. Bytes that
 *  were never written read as 0xFF (erased flash). */
int mt_port_storage_read(uint32_t off, void *p, uint32_t n);

/** Write @p n bytes at @p off (durable when it returns). 0 on success, -1 on error or range. */
int mt_port_storage_write(uint32_t off, const void *p, uint32_t n);

/** Bytes of the main stack (0 when unknown, e.g. on a host). */
uint32_t mt_port_stack_size(void);

/** Stack high-water mark: bytes below the stack top that were ever written since boot. The port
 *  paints the stack with a canary at boot (from the stack limit up to the then current stack
 *  pointer) and scans for the lowest overwritten word. 0 when unknown. */
uint32_t mt_port_stack_high_water(void);

/** Board name for HELLO_INFO (ASCII, at most 16 characters are sent). */
const char *mt_port_board(void);

#define MT_CYCLES() mt_port_cycles()

#ifdef __cplusplus
}
#endif

#endif /* MT_PORT_H */
