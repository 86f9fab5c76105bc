/* Stub of the STM32Cube HAL + CMSIS parts port/stm32cube uses (tests/fake_sdk/README.md).
 * Shapes follow STM32CubeF4 / STM32CubeF7: stm32f4xx_hal_def.h (HAL_StatusTypeDef, HAL_MAX_DELAY),
 * stm32f4xx_hal_uart.h / stm32f7xx_hal_uart.h (UART_HandleTypeDef, UART_InitTypeDef, flags,
 * HAL_UART_Init, HAL_UART_Transmit(huart, uint8_t *pData, uint16_t Size, uint32_t Timeout) -
 * newer F4 releases take const uint8_t *: -DSTUB_HAL_CONST_TX), stm32f4xx_hal_gpio.h
 * (GPIO_InitTypeDef), stm32f4xx_hal_rcc.h (clock-enable macros), core_cm4.h / core_cm7.h
 * (CoreDebug, DWT, __CORTEX_M, SCB_Enable*Cache). Include through stm32f4xx_hal.h / stm32f7xx_hal.h. */
#ifndef STM32_HAL_STUB_H
#define STM32_HAL_STUB_H

#include <stddef.h>
#include <stdint.h>

#define __IO volatile
#define __IM volatile const
#define __OM volatile

typedef enum { HAL_OK = 0x00U, HAL_ERROR = 0x01U, HAL_BUSY = 0x02U, HAL_TIMEOUT = 0x03U } HAL_StatusTypeDef;
#define HAL_MAX_DELAY 0xFFFFFFFFU

/* ---- CMSIS core ---- */
typedef struct {
    __IO uint32_t DHCSR;
    __OM uint32_t DCRSR;
    __IO uint32_t DCRDR;
    __IO uint32_t DEMCR;
} CoreDebug_Type;
typedef struct {
    __IO uint32_t CTRL;
    __IO uint32_t CYCCNT;
    __IO uint32_t CPICNT;
} DWT_Type;
#define CoreDebug ((CoreDebug_Type *)0xE000EDF0UL)
#define DWT ((DWT_Type *)0xE0001000UL)
#define CoreDebug_DEMCR_TRCENA_Pos 24U
#define CoreDebug_DEMCR_TRCENA_Msk (1UL << CoreDebug_DEMCR_TRCENA_Pos)
#define DWT_CTRL_CYCCNTENA_Pos 0U
#define DWT_CTRL_CYCCNTENA_Msk (1UL)

/* ---- GPIO ---- */
typedef struct {
    __IO uint32_t MODER, OTYPER, OSPEEDR, PUPDR, IDR, ODR, BSRR, LCKR, AFR[2];
} GPIO_TypeDef;
typedef struct {
    uint32_t Pin;
    uint32_t Mode;
    uint32_t Pull;
    uint32_t Speed;
    uint32_t Alternate;
} GPIO_InitTypeDef;
#define GPIOA ((GPIO_TypeDef *)0x40020000UL)
#define GPIOB ((GPIO_TypeDef *)0x40020400UL)
#define GPIO_PIN_2 ((uint16_t)0x0004)
#define GPIO_PIN_3 ((uint16_t)0x0008)
#define GPIO_PIN_7 ((uint16_t)0x0080)
#define GPIO_PIN_9 ((uint16_t)0x0200)
#define GPIO_MODE_AF_PP 0x00000002U
#define GPIO_PULLUP 0x00000001U
#define GPIO_SPEED_FREQ_VERY_HIGH 0x00000003U
#define GPIO_AF7_USART1 ((uint8_t)0x07)
#define GPIO_AF7_USART2 ((uint8_t)0x07)
void HAL_GPIO_Init(GPIO_TypeDef *GPIOx, GPIO_InitTypeDef *GPIO_Init);

/* ---- RCC ---- */
extern volatile uint32_t stub_rcc_enr;
#define STUB_CLK_ENABLE(bit)                         \
    do {                                             \
        __IO uint32_t tmpreg_;                       \
        stub_rcc_enr |= (bit);                       \
        tmpreg_ = stub_rcc_enr;                      \
        (void)tmpreg_;                               \
    } while (0U)
#define __HAL_RCC_GPIOA_CLK_ENABLE() STUB_CLK_ENABLE(1UL << 0)
#define __HAL_RCC_GPIOB_CLK_ENABLE() STUB_CLK_ENABLE(1UL << 1)
#define __HAL_RCC_USART1_CLK_ENABLE() STUB_CLK_ENABLE(1UL << 4)
#define __HAL_RCC_USART2_CLK_ENABLE() STUB_CLK_ENABLE(1UL << 17)

/* ---- HAL core ---- */
HAL_StatusTypeDef HAL_Init(void);
void HAL_IncTick(void);
uint32_t HAL_GetTick(void);

/* ---- UART ---- */
#define UART_WORDLENGTH_8B 0x00000000U
#define UART_STOPBITS_1 0x00000000U
#define UART_PARITY_NONE 0x00000000U
#define UART_MODE_TX_RX 0x0000000CU
#define UART_HWCONTROL_NONE 0x00000000U
#define UART_OVERSAMPLING_16 0x00000000U

#if defined(STUB_USART_V2) /* STM32F7: ISR/RDR/TDR registers, one-bit sampling, advanced init */
typedef struct {
    __IO uint32_t CR1, CR2, CR3, BRR, GTPR, RTOR, RQR, ISR, ICR, RDR, TDR;
} USART_TypeDef;
typedef struct {
    uint32_t BaudRate;
    uint32_t WordLength;
    uint32_t StopBits;
    uint32_t Parity;
    uint32_t Mode;
    uint32_t HwFlowCtl;
    uint32_t OverSampling;
    uint32_t OneBitSampling;
} UART_InitTypeDef;
typedef struct {
    uint32_t AdvFeatureInit;
    uint32_t TxPinLevelInvert;
    uint32_t RxPinLevelInvert;
    uint32_t DataInvert;
    uint32_t Swap;
    uint32_t OverrunDisable;
    uint32_t DMADisableonRxError;
    uint32_t AutoBaudRateEnable;
    uint32_t AutoBaudRateMode;
    uint32_t MSBFirst;
} UART_AdvFeatureInitTypeDef;
#define USART_ISR_RXNE 0x00000020U
#define UART_FLAG_RXNE USART_ISR_RXNE
#define UART_ONE_BIT_SAMPLE_DISABLE 0x00000000U
#define UART_ADVFEATURE_RXOVERRUNDISABLE_INIT 0x00000010U
#define UART_ADVFEATURE_OVERRUN_DISABLE 0x00001000U
#define STUB_UART_STATUS(h) ((h)->Instance->ISR)
#else /* STM32F4: SR/DR */
typedef struct {
    __IO uint32_t SR, DR, BRR, CR1, CR2, CR3, GTPR;
} USART_TypeDef;
typedef struct {
    uint32_t BaudRate;
    uint32_t WordLength;
    uint32_t StopBits;
    uint32_t Parity;
    uint32_t Mode;
    uint32_t HwFlowCtl;
    uint32_t OverSampling;
} UART_InitTypeDef;
#define USART_SR_RXNE 0x00000020U
#define UART_FLAG_RXNE ((uint32_t)USART_SR_RXNE)
#define STUB_UART_STATUS(h) ((h)->Instance->SR)
#endif

typedef struct __UART_HandleTypeDef {
    USART_TypeDef *Instance;
    UART_InitTypeDef Init;
#if defined(STUB_USART_V2)
    UART_AdvFeatureInitTypeDef AdvancedInit;
#endif
    const uint8_t *pTxBuffPtr;
    uint16_t TxXferSize;
    __IO uint16_t TxXferCount;
    uint8_t *pRxBuffPtr;
    uint16_t RxXferSize;
    __IO uint16_t RxXferCount;
    __IO uint32_t gState;
    __IO uint32_t RxState;
    __IO uint32_t ErrorCode;
} UART_HandleTypeDef;

#define USART1 ((USART_TypeDef *)0x40011000UL)
#define USART2 ((USART_TypeDef *)0x40004400UL)
#define __HAL_UART_GET_FLAG(__HANDLE__, __FLAG__) ((STUB_UART_STATUS(__HANDLE__) & (__FLAG__)) == (__FLAG__))

HAL_StatusTypeDef HAL_UART_Init(UART_HandleTypeDef *huart);
#if defined(STUB_HAL_CONST_TX)
HAL_StatusTypeDef HAL_UART_Transmit(UART_HandleTypeDef *huart, const uint8_t *pData, uint16_t Size, uint32_t Timeout);
#else
HAL_StatusTypeDef HAL_UART_Transmit(UART_HandleTypeDef *huart, uint8_t *pData, uint16_t Size, uint32_t Timeout);
#endif

#endif /* STM32_HAL_STUB_H */
