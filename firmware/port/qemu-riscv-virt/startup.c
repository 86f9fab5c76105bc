/* Minimal RV32 startup for QEMU virt (-bios none): stack, .bss, main(), and RISC-V semihosting
 * (QEMU -semihosting) for output and exit. Board port: not part of the engine. */
#include <stdint.h>

extern uint32_t _sbss, _ebss, _estack;
int main(void);
void mt_port_exit(int code);
void mt_c_start(void);

__attribute__((naked, section(".text.start"))) void _start(void)
{
    __asm__ volatile(".option push\n.option norelax\nla gp, __global_pointer$\n.option pop\n"
                     "la sp, _estack\n"
                     "j mt_c_start\n");
}

static int semihost(int op, const void *arg)
{
    register int a0 __asm__("a0") = op;
    register const void *a1 __asm__("a1") = arg;
    __asm__ volatile(".option push\n.option norvc\n.option norelax\n.p2align 2\n"
                     "slli x0, x0, 0x1f\nebreak\nsrai x0, x0, 7\n.option pop\n"
                     : "+r"(a0) : "r"(a1) : "memory");
    return a0;
}

void mt_port_write(const char *s)
{
    (void)semihost(0x04, s); /* SYS_WRITE0 */
}

void mt_port_exit(int code)
{
    const uint32_t block[2] = {0x20026u, (uint32_t)code}; /* ADP_Stopped_ApplicationExit */
    for (;;) {
        (void)semihost(0x20, block); /* SYS_EXIT_EXTENDED */
    }
}

void mt_c_start(void)
{
    uint32_t *p;
    for (p = &_sbss; p < &_ebss; ++p) {
        *p = 0u;
    }
    mt_port_exit(main());
}
