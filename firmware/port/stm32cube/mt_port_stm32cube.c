/* mt_port.h on STM32Cube HAL (PlatformIO framework = stm32cube): NUCLEO-F411RE and STM32F746G-DISCO.
 *
 * Build: PlatformIO's stm32cube builder compiles the HAL (with the stm32xxxx_hal_conf_template.h
 * copied to stm32xxxx_hal_conf.h: every module, UART and GPIO included), the CMSIS system file
 * and startup_<product line>.s, links the ST linker script, and passes the board manifest's
 * -DSTM32F411xE / -DSTM32F746xx. main() is src/device/mt_main.c; the startup code calls it after
 * SystemInit(). The framework has no stm32xxxx_it.c, so SysTick_Handler (HAL tick) is defined here.
 *
 * Clock: the reset default, HSI 16 MHz, no PLL (SystemInit leaves it; SystemCoreClock = 16 MHz),
 * so no wait-state or voltage-scaling setup is needed and 115200 Bd is exact enough (HSI/16/8.6875:
 * -0.08 %). Cycle counts are core cycles either way; only wall time is slower than at the rated
 * 100 / 216 MHz (flash wait states at full speed would add a few percent of cycles).
 *
 * UART: the ST-LINK virtual COM port, 115200 8N1, polled (no interrupt, no DMA):
 *   NUCLEO-F411RE     USART2  TX PA2  RX PA3  AF7  (UM1724 "USART communication", APB1)
 *   STM32F746G-DISCO  USART1  TX PA9  RX PB7  AF7  (UM1907 "Virtual COM port", APB2)
 * Receive reads the data register when RXNE is set (__HAL_UART_GET_FLAG), not HAL_UART_Receive():
 * with a zero timeout some HAL releases leave RxState busy after HAL_TIMEOUT. F4 (USART v1): the
 * SR-then-DR read also clears an overrun. F7 (USART v2): overrun detection is disabled
 * (AdvancedInit OVRDIS), so a lost byte never blocks reception. Transmit: HAL_UART_Transmit,
 * HAL_MAX_DELAY. Idle: returns at once (the UART has a 1-byte receive register and no receive
 * interrupt is enabled, so a WFI could sleep past incoming bytes).
 * Cycles: DWT->CYCCNT (DEMCR.TRCENA, then CTRL.CYCCNTENA; on the Cortex-M7 the DWT lock access
 * register is written first). F7: I- and D-cache enabled (no DMA here, so no coherency concern).
 * Storage: none (0). Stack: the startup code puts the main stack at _estack (top of RAM) and the
 * linker script ends .bss at _ebss; both symbols are required by every ST startup_*.s. The free
 * RAM [_ebss, sp) is painted at init (newlib's heap would start at `end` = _ebss, but nothing here
 * allocates); stack size = _estack - _ebss, high water = _estack - lowest overwritten word.
 *
 * Verified against (search tool, docs/code corpora): platform-ststm32 builder/frameworks/stm32cube.py
 * (template hal_conf, startup + system file, USE_HAL_DRIVER), boards nucleo_f411re.json /
 * disco_f746ng.json (-DSTM32F411xE, -DSTM32F746xx), STM32CubeF4 stm32f4xx_hal_uart.c
 * (HAL_UART_Transmit(huart, pData, uint16_t Size, uint32_t Timeout), Receive timeout path), the
 * STM32CubeF7 UART init fields (OneBitSampling, AdvancedInit.AdvFeatureInit/OverrunDisable), the
 * CMSIS stm32f7xx.h (defines STM32F7). Not compiled against the real HAL here (see
 * tests/test_real_ports.py: stub headers only).
 */
#include <stdint.h>

#if defined(STM32F746xx) || defined(STM32F7)
#include "stm32f7xx_hal.h"
#define MT_STM32_F7 1
#elif defined(STM32F411xE) || defined(STM32F4)
#include "stm32f4xx_hal.h"
#define MT_STM32_F7 0
#else
#error "mt_port_stm32cube.c: STM32F411xE (NUCLEO-F411RE) or STM32F746xx (STM32F746G-DISCO) expected"
#endif

#include "mt_port.h"

#if MT_STM32_F7
#define MT_UART USART1
#define MT_UART_CLK_ENABLE() __HAL_RCC_USART1_CLK_ENABLE()
#define MT_UART_AF GPIO_AF7_USART1
#define MT_UART_RDR(h) ((h)->Instance->RDR)
#ifndef MT_PORT_BOARD
#define MT_PORT_BOARD "STM32F746G-DISCO"
#endif
#else
#define MT_UART USART2
#define MT_UART_CLK_ENABLE() __HAL_RCC_USART2_CLK_ENABLE()
#define MT_UART_AF GPIO_AF7_USART2
#define MT_UART_RDR(h) ((h)->Instance->DR)
#ifndef MT_PORT_BOARD
#define MT_PORT_BOARD "NUCLEO-F411RE"
#endif
#endif

#ifndef MT_PORT_BAUD
#define MT_PORT_BAUD 115200u
#endif

#define MT_STACK_CANARY 0xC5A3E1F7u
#define DWT_LAR_ADDR 0xE0001FB0u /* Cortex-M7 DWT lock access register */
#define DWT_LAR_KEY 0xC5ACCE55u

extern uint32_t _estack; /* top of the main stack (linker script) */
extern uint32_t _ebss;   /* end of .bss (linker script) */

void SysTick_Handler(void);

static UART_HandleTypeDef mt_uart;

/* HAL time base: HAL_Init() starts SysTick at 1 kHz; HAL_GetTick() (UART timeouts) needs this. */
void SysTick_Handler(void)
{
    HAL_IncTick();
}

static uint32_t *stack_floor(void)
{
    uintptr_t p = ((uintptr_t)&_ebss + 3u) & ~(uintptr_t)3u;
    return (uint32_t *)p;
}

static void stack_paint(void)
{
    uint32_t marker;
    volatile uint32_t *p = stack_floor();
    const uintptr_t stop = (uintptr_t)&marker - 64u; /* well below the live frames of this call */
    while ((uintptr_t)p < stop) {
        *p++ = MT_STACK_CANARY;
    }
}

static void uart_pins(void)
{
    GPIO_InitTypeDef g = {0};
    g.Mode = GPIO_MODE_AF_PP;
    g.Pull = GPIO_PULLUP;
    g.Speed = GPIO_SPEED_FREQ_VERY_HIGH;
    g.Alternate = MT_UART_AF;
#if MT_STM32_F7
    __HAL_RCC_GPIOA_CLK_ENABLE();
    __HAL_RCC_GPIOB_CLK_ENABLE();
    g.Pin = GPIO_PIN_9; /* USART1_TX */
    HAL_GPIO_Init(GPIOA, &g);
    g.Pin = GPIO_PIN_7; /* USART1_RX */
    HAL_GPIO_Init(GPIOB, &g);
#else
    __HAL_RCC_GPIOA_CLK_ENABLE();
    g.Pin = GPIO_PIN_2 | GPIO_PIN_3; /* USART2_TX, USART2_RX */
    HAL_GPIO_Init(GPIOA, &g);
#endif
}

static void cycle_counter(void)
{
#if defined(DCB) && defined(DCB_DEMCR_TRCENA_Msk) /* CMSIS 6 renamed CoreDebug to DCB */
    DCB->DEMCR |= DCB_DEMCR_TRCENA_Msk;
#else
    CoreDebug->DEMCR |= CoreDebug_DEMCR_TRCENA_Msk;
#endif
#if defined(__CORTEX_M) && (__CORTEX_M == 7U)
    *(volatile uint32_t *)DWT_LAR_ADDR = DWT_LAR_KEY;
#endif
    DWT->CYCCNT = 0u;
    DWT->CTRL |= DWT_CTRL_CYCCNTENA_Msk;
}

void mt_port_init(void)
{
    stack_paint();
#if MT_STM32_F7
    SCB_EnableICache();
    SCB_EnableDCache();
#endif
    (void)HAL_Init();
    cycle_counter();
    uart_pins();
    MT_UART_CLK_ENABLE();
    mt_uart.Instance = MT_UART;
    mt_uart.Init.BaudRate = MT_PORT_BAUD;
    mt_uart.Init.WordLength = UART_WORDLENGTH_8B;
    mt_uart.Init.StopBits = UART_STOPBITS_1;
    mt_uart.Init.Parity = UART_PARITY_NONE;
    mt_uart.Init.Mode = UART_MODE_TX_RX;
    mt_uart.Init.HwFlowCtl = UART_HWCONTROL_NONE;
    mt_uart.Init.OverSampling = UART_OVERSAMPLING_16;
#if MT_STM32_F7
    mt_uart.Init.OneBitSampling = UART_ONE_BIT_SAMPLE_DISABLE;
    mt_uart.AdvancedInit.AdvFeatureInit = UART_ADVFEATURE_RXOVERRUNDISABLE_INIT;
    mt_uart.AdvancedInit.OverrunDisable = UART_ADVFEATURE_OVERRUN_DISABLE;
#endif
    if (HAL_UART_Init(&mt_uart) != HAL_OK) {
        for (;;) { /* no UART, no protocol: nothing sensible left to do */
        }
    }
}

int mt_port_getc(void)
{
    if (!__HAL_UART_GET_FLAG(&mt_uart, UART_FLAG_RXNE)) {
        return -1;
    }
    return (int)(MT_UART_RDR(&mt_uart) & 0xFFu);
}

void mt_port_idle(void)
{
}

void mt_port_putc(uint8_t c)
{
    (void)HAL_UART_Transmit(&mt_uart, &c, 1u, HAL_MAX_DELAY);
}

void mt_port_send(const uint8_t *p, size_t n)
{
    while (n > 0u) {
        const uint16_t chunk = (uint16_t)(n > 0xFFFFu ? 0xFFFFu : n);
        /* older HALs take uint8_t *, newer const uint8_t *: the cast suits both */
        (void)HAL_UART_Transmit(&mt_uart, (uint8_t *)p, chunk, HAL_MAX_DELAY);
        p += chunk;
        n -= chunk;
    }
}

uint32_t mt_port_cycles(void)
{
    return DWT->CYCCNT;
}

uint32_t mt_port_storage_size(void)
{
    return 0u;
}

int mt_port_storage_read(uint32_t off, void *p, uint32_t n)
{
    (void)off;
    (void)p;
    (void)n;
    return -1;
}

int mt_port_storage_write(uint32_t off, const void *p, uint32_t n)
{
    (void)off;
    (void)p;
    (void)n;
    return -1;
}

uint32_t mt_port_stack_size(void)
{
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)stack_floor());
}

uint32_t mt_port_stack_high_water(void)
{
    const volatile uint32_t *p = stack_floor();
    while (p < &_estack && *p == MT_STACK_CANARY) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

const char *mt_port_board(void)
{
    return MT_PORT_BOARD;
}
