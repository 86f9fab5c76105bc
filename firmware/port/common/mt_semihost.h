/**
 * @file mt_semihost.h
 * @brief Semihosting (Arm `bkpt 0xab`, RISC-V `slli/ebreak/srai`) for the QEMU ports: a log line,
 *        exit, and mt_port_storage_* on a host file. QEMU: -semihosting-config enable=on,target=native.
 *
 * Board port code, not engine: may block the guest for the host call's duration.
 */
#ifndef MT_SEMIHOST_H
#define MT_SEMIHOST_H

#include <stdint.h>

/** One semihosting call: operation @p op with parameter block @p arg; the host's r0/a0. */
int mt_semihost_call(int op, const void *arg);

/** NUL-terminated text to the host's console (SYS_WRITE0). */
void mt_port_log(const char *s);

/** Stop the emulator with exit status @p code (SYS_EXIT_EXTENDED). */
void mt_port_exit(int code) __attribute__((noreturn));

#endif /* MT_SEMIHOST_H */
