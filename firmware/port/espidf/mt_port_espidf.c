/* mt_port.h on ESP-IDF >= 5.0 (PlatformIO framework = espidf): ESP32-C3-DevKitM-1.
 *
 * Build: main/CMakeLists.txt of the compiled folder registers the sources as the `main` component
 * (which implicitly requires every IDF component, the UART driver included). This file has the
 * entry point: app_main() runs the device loop (mt_port_init, mt_device_init, then
 * mt_device_poll + mt_port_idle forever), so src/device/mt_main.c is not built. The folder's
 * sdkconfig.defaults (read by ESP-IDF when PlatformIO first creates sdkconfig.<env>) sets:
 *   CONFIG_LOG_DEFAULT_LEVEL_NONE=y, CONFIG_BOOTLOADER_LOG_LEVEL_NONE=y   no log text in the frames
 *   CONFIG_ESP_TASK_WDT_CHECK_IDLE_TASK_CPU0=n   a training step may keep the CPU > 5 s
 *   CONFIG_ESP_MAIN_TASK_STACK_SIZE=8192         the device loop and the generated program
 * The console stays on UART0 (CONFIG_ESP_CONSOLE_NONE breaks some IDF 5.x builds); with logging
 * off nothing but the ROM boot banner (before app_main) reaches the host, which skips bytes
 * before the first 0x00 frame delimiter.
 *
 * UART: UART0 (GPIO21 TX, GPIO20 RX), which the DevKitM-1 wires to its USB-UART bridge (the
 * micro-USB port), 115200 8N1, driver installed with a 2 KiB receive ring buffer filled by the
 * UART interrupt, so bytes that arrive while a training step runs are kept. mt_port_getc:
 * uart_read_bytes(.., 1, 0) (no wait). mt_port_idle blocks in uart_read_bytes for at most one
 * tick (10 ms at CONFIG_FREERTOS_HZ=100) and keeps a byte it got for the next mt_port_getc: the
 * CPU is free for the idle task (and its watchdog) while nothing arrives, and a byte ends the
 * wait at once. Transmit: uart_write_bytes (no TX buffer: returns when the bytes are in the FIFO).
 * Cycles: esp_cpu_get_cycle_count() (the CPU clock, 160 MHz). Storage: none (0).
 * Stack: the main task's, CONFIG_ESP_MAIN_TASK_STACK_SIZE bytes; high water from FreeRTOS'
 * uxTaskGetStackHighWaterMark(NULL) (ESP-IDF counts stack in bytes).
 *
 * Verified against (search tool, docs/code corpora): ESP-IDF 5.x driver/uart.h signatures
 * (uart_driver_install(port, rx_buf, tx_buf, queue_size, QueueHandle_t *, intr_flags),
 * uart_param_config, uart_set_pin, uart_read_bytes(port, void *, uint32_t, TickType_t),
 * uart_write_bytes(port, const void *, size_t)), esp_cpu_cycle_count_t = uint32_t, the
 * ESP32-C3 IOMUX pins U0TXD_GPIO_NUM 21 / U0RXD_GPIO_NUM 20, platform-espressif32's espidf
 * builder (sdkconfig.defaults in the project folder), esp-idf issue #12984 (ESP_CONSOLE_NONE).
 * Not compiled against the real SDK here (tests/test_real_ports.py: stub headers only).
 */
#include <stdint.h>

#include "driver/uart.h"
#include "esp_cpu.h"
#include "esp_err.h"
#include "esp_idf_version.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"

#include "mt_device.h"
#include "mt_port.h"

#if ESP_IDF_VERSION_MAJOR < 5
#error "port/espidf needs ESP-IDF 5.x (esp_cpu_get_cycle_count, UART_SCLK_DEFAULT)"
#endif

#ifndef MT_PORT_BOARD
#define MT_PORT_BOARD "esp32-c3-devkitm" /* an alias of ESP32-C3-DevKitM-1 (16 characters) */
#endif
#ifndef MT_PORT_BAUD
#define MT_PORT_BAUD 115200
#endif
#define MT_UART UART_NUM_0
#define MT_UART_TX_PIN 21
#define MT_UART_RX_PIN 20
#define MT_UART_RX_BUF 2048

void app_main(void);

static int mt_pending = -1; /* a byte mt_port_idle() received, or -1 */

void mt_port_init(void)
{
    uart_config_t cfg = {0};
    cfg.baud_rate = MT_PORT_BAUD;
    cfg.data_bits = UART_DATA_8_BITS;
    cfg.parity = UART_PARITY_DISABLE;
    cfg.stop_bits = UART_STOP_BITS_1;
    cfg.flow_ctrl = UART_HW_FLOWCTRL_DISABLE;
    cfg.source_clk = UART_SCLK_DEFAULT;
    ESP_ERROR_CHECK(uart_driver_install(MT_UART, MT_UART_RX_BUF, 0, 0, NULL, 0));
    ESP_ERROR_CHECK(uart_param_config(MT_UART, &cfg));
    ESP_ERROR_CHECK(uart_set_pin(MT_UART, MT_UART_TX_PIN, MT_UART_RX_PIN, UART_PIN_NO_CHANGE, UART_PIN_NO_CHANGE));
}

int mt_port_getc(void)
{
    uint8_t b;
    if (mt_pending >= 0) {
        const int c = mt_pending;
        mt_pending = -1;
        return c;
    }
    if (uart_read_bytes(MT_UART, &b, 1u, 0) == 1) {
        return (int)b;
    }
    return -1;
}

void mt_port_idle(void)
{
    uint8_t b;
    if (mt_pending < 0 && uart_read_bytes(MT_UART, &b, 1u, 1) == 1) {
        mt_pending = (int)b;
    }
}

void mt_port_putc(uint8_t c)
{
    mt_port_send(&c, 1u);
}

void mt_port_send(const uint8_t *p, size_t n)
{
    while (n > 0u) {
        const int w = uart_write_bytes(MT_UART, (const char *)p, n);
        if (w <= 0) {
            return; /* driver error: nothing sensible to retry */
        }
        p += (size_t)w;
        n -= (size_t)w;
    }
}

uint32_t mt_port_cycles(void)
{
    return (uint32_t)esp_cpu_get_cycle_count();
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
    return (uint32_t)CONFIG_ESP_MAIN_TASK_STACK_SIZE;
}

uint32_t mt_port_stack_high_water(void)
{
    const uint32_t size = (uint32_t)CONFIG_ESP_MAIN_TASK_STACK_SIZE;
    const uint32_t free_min = (uint32_t)uxTaskGetStackHighWaterMark(NULL);
    return free_min < size ? size - free_min : 0u;
}

const char *mt_port_board(void)
{
    return MT_PORT_BOARD;
}

void app_main(void)
{
    mt_port_init();
    mt_device_init();
    for (;;) {
        mt_device_poll();
        mt_port_idle();
    }
}
