/* Stub of STM32CubeF7's stm32f7xx_hal.h (tests/fake_sdk/README.md): the device header defines STM32F7,
 * core_cm7.h the cache maintenance functions; USART v2 registers (ISR/RDR). */
#ifndef STM32F7xx_HAL_H
#define STM32F7xx_HAL_H
#if !defined(STM32F7)
#define STM32F7
#endif
#if !defined(STM32F746xx)
#error "stub: the board manifest passes -DSTM32F746xx"
#endif
#define __CORTEX_M (7U)
#define __ICACHE_PRESENT 1U
#define __DCACHE_PRESENT 1U
#define STUB_USART_V2 1
#include "stm32_hal_stub.h"
void SCB_EnableICache(void);
void SCB_EnableDCache(void);
#endif
