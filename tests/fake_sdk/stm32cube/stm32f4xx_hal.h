/* Stub of STM32CubeF4's stm32f4xx_hal.h (tests/fake_sdk/README.md): the device header defines STM32F4. */
#ifndef STM32F4xx_HAL_H
#define STM32F4xx_HAL_H
#if !defined(STM32F4)
#define STM32F4
#endif
#if !defined(STM32F411xE)
#error "stub: the board manifest passes -DSTM32F411xE"
#endif
#define __CORTEX_M (4U)
#include "stm32_hal_stub.h"
#endif
