/**
 * @file mt_semihost.c
 * @brief Semihosting for the QEMU ports (mt_semihost.h) and persistent storage on a host file.
 *
 * Storage: the file MT_PORT_STORAGE_FILE (default "mt_storage.bin", relative to QEMU's working
 * directory), opened on first use ("r+b", created with "w+b" when missing), MT_PORT_STORAGE_SIZE
 * bytes (default 4096 + MT_PARAMS_BYTES; 0 disables storage). Bytes past the end of the file read
 * as 0xFF, like erased flash. Board port code, not engine.
 */
#include "mt_semihost.h"

#include "mt_model.h"
#include "mt_port.h"

#ifndef MT_PORT_STORAGE_FILE
#define MT_PORT_STORAGE_FILE "mt_storage.bin"
#endif
#ifndef MT_PORT_STORAGE_SIZE
#define MT_PORT_STORAGE_SIZE (4096u + (uint32_t)MT_PARAMS_BYTES)
#endif

#define SYS_OPEN 0x01
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define SYS_SEEK 0x0A
#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

int mt_semihost_call(int op, const void *arg)
{
#if defined(__arm__)
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
#elif defined(__riscv)
    register int a0 __asm__("a0") = op;
    register const void *a1 __asm__("a1") = arg;
    /* the magic sequence must be 32-bit instructions, in one 4-byte aligned group */
    __asm__ volatile(".option push\n.option norvc\n.option norelax\n.p2align 2\n"
                     "slli x0, x0, 0x1f\nebreak\nsrai x0, x0, 7\n.option pop\n"
                     : "+r"(a0) : "r"(a1) : "memory");
    return a0;
#else
#error "semihosting: Arm or RISC-V only"
#endif
}

void mt_port_log(const char *s)
{
    (void)mt_semihost_call(SYS_WRITE0, s);
}

void mt_port_exit(int code)
{
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    for (;;) {
        (void)mt_semihost_call(SYS_EXIT_EXTENDED, block);
        (void)mt_semihost_call(SYS_EXIT, (const void *)(uintptr_t)ADP_STOPPED_APPLICATION_EXIT);
    }
}

/* ---- storage ---- */
static int storage_handle = -1;
static uint8_t storage_state; /* 0: not tried, 1: open, 2: failed */

static uint32_t name_len(const char *s)
{
    uint32_t n = 0u;
    while (s[n] != '\0') {
        ++n;
    }
    return n;
}

static int storage_open(void)
{
    static const char name[] = MT_PORT_STORAGE_FILE;
    uintptr_t block[3];
    if (storage_state == 0u) {
        storage_state = 2u;
        block[0] = (uintptr_t)name;
        block[1] = 3u; /* "r+b" */
        block[2] = name_len(name);
        storage_handle = mt_semihost_call(SYS_OPEN, block);
        if (storage_handle < 0) {
            block[1] = 7u; /* "w+b": create */
            storage_handle = mt_semihost_call(SYS_OPEN, block);
        }
        if (storage_handle >= 0) {
            storage_state = 1u;
        }
    }
    return storage_state == 1u;
}

static int storage_range(uint32_t off, uint32_t n)
{
    return off <= (uint32_t)MT_PORT_STORAGE_SIZE && n <= (uint32_t)MT_PORT_STORAGE_SIZE - off;
}

uint32_t mt_port_storage_size(void)
{
    if ((uint32_t)MT_PORT_STORAGE_SIZE == 0u || !storage_open()) {
        return 0u;
    }
    return (uint32_t)MT_PORT_STORAGE_SIZE;
}

int mt_port_storage_read(uint32_t off, void *p, uint32_t n)
{
    uintptr_t block[3];
    uint8_t *b = (uint8_t *)p;
    int left;
    uint32_t i;
    if (!storage_range(off, n) || mt_port_storage_size() == 0u) {
        return -1;
    }
    block[0] = (uintptr_t)storage_handle;
    block[1] = off;
    if (mt_semihost_call(SYS_SEEK, block) != 0) {
        return -1;
    }
    block[1] = (uintptr_t)p;
    block[2] = n;
    left = mt_semihost_call(SYS_READ, block); /* bytes NOT read: past the end of the file */
    if (left < 0 || (uint32_t)left > n) {
        return -1;
    }
    for (i = n - (uint32_t)left; i < n; ++i) {
        b[i] = 0xFFu;
    }
    return 0;
}

int mt_port_storage_write(uint32_t off, const void *p, uint32_t n)
{
    uintptr_t block[3];
    if (!storage_range(off, n) || mt_port_storage_size() == 0u) {
        return -1;
    }
    block[0] = (uintptr_t)storage_handle;
    block[1] = off;
    if (mt_semihost_call(SYS_SEEK, block) != 0) {
        return -1;
    }
    block[1] = (uintptr_t)p;
    block[2] = n;
    return mt_semihost_call(SYS_WRITE, block) == 0 ? 0 : -1; /* 0 bytes left unwritten */
}
