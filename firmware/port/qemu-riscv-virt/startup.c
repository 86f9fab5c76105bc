/* Minimal RV32 startup for QEMU virt (-bios none starts at 0x80000000): gp, sp, a trap vector,
 * .bss, main(), exit over semihosting. .data is loaded in place by QEMU (everything is in DRAM).
 * Board port: not part of the engine. */
#include <stdint.h>

#include "mt_semihost.h" /* port/common (the compiled folder keeps a copy next to this file) */

extern uint32_t _sbss, _ebss;
int main(void);
void mt_c_start(void);
void mt_trap(void);

__attribute__((naked, section(".text.start"))) void _start(void)
{
    __asm__ volatile(".option push\n.option norelax\nla gp, __global_pointer$\n.option pop\n"
                     "la sp, _estack\n"
                     "j mt_c_start\n");
}

/* any exception or interrupt: stop QEMU with status 3 (mtvec needs 4-byte alignment) */
__attribute__((aligned(4))) void mt_trap(void)
{
    mt_port_exit(3);
}

void mt_c_start(void)
{
    uint32_t *p;
    __asm__ volatile(".option push\n.option arch, +zicsr\ncsrw mtvec, %0\n.option pop" : : "r"((uintptr_t)mt_trap));
    for (p = &_sbss; p < &_ebss; ++p) {
        *p = 0u;
    }
    mt_port_exit(main());
}
