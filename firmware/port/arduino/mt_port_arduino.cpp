/* mt_port.h on the Arduino API (PlatformIO framework = arduino): Arduino Nano 33 BLE (platform
 * nordicnrf52, nRF52840 Cortex-M4F) and Raspberry Pi Pico (platform raspberrypi, RP2040 Cortex-M0+),
 * both built on Arduino's Mbed OS core (ArduinoCore-mbed) by these PlatformIO platforms.
 *
 * Build: C++ because the core's main() calls setup() and loop() with C++ linkage; the port
 * functions are extern "C" (mt_port.h declares them so). The core owns main(), so
 * src/device/mt_main.c is not built; setup() runs mt_port_init + mt_device_init, loop() runs one
 * mt_device_poll + mt_port_idle. Uses only the Arduino API (Arduino.h: Serial, micros()) and, on
 * the Cortex-M4, the architectural DWT registers, so no Mbed header is needed.
 *
 * UART: Serial, the USB CDC port of both boards (the baud rate of Serial.begin() is ignored by
 * USB CDC; 115200 for form's sake). Receive: Serial.read() (-1 when nothing is waiting; the Mbed
 * core buffers 256 received bytes). Transmit: one Serial.write(buf, n), which blocks until the
 * bytes are sent; while no host has the port open (`!Serial`: DTR low) bytes are dropped instead
 * (the Mbed core's write does the same), so the boot HELLO_INFO cannot block the loop before a
 * host connects (the host sends HELLO anyway). Idle: returns at once.
 * Cycles: Cortex-M4 (__ARM_ARCH_7EM__, Nano 33 BLE): DWT CYCCNT, the 64 MHz core clock (DEMCR
 * 0xE000EDFC bit 24 TRCENA, DWT_CTRL 0xE0001000 bit 0 CYCCNTENA, DWT_CYCCNT 0xE0001004, ARMv7-M
 * ARM). Cortex-M0+ (__ARM_ARCH_6M__, Pico: no DWT cycle counter): micros() x MT_PORT_CYCLES_PER_US
 * (default 125, the core clock the Mbed RP2040 core runs at): a cycle estimate with 1 us (125
 * cycle) resolution; the product wraps modulo 2^32 like a real counter, so differences stay right.
 * Storage: none (0). Stack: 0 (unknown: Mbed OS owns the main thread's stack and only reports a
 * watermark when built with stack statistics).
 *
 * Verified against (search tool, code corpus): ArduinoCore-mbed libraries/USBSerial/
 * PluggableUSBSerial.h (arduino::USBSerial: begin(unsigned long), read() from a 256-byte ring
 * buffer, write(const uint8_t *, size_t) = connected() ? send(buf, size) : 0, operator bool =
 * connected()); the Arduino API (micros()); PlatformIO's board manifests nordicnrf52 nano33ble.json
 * (variant ARDUINO_NANO33BLE) and raspberrypi pico.json (build.core "arduino", variant
 * RASPBERRY_PI_PICO), whose builder/frameworks/arduino/arduino.py picks the Mbed core for core
 * "arduino" (the Earle Philhower core, core "earlephilhower", is not what these boards use).
 * Not compiled against the real core here (tests/test_real_ports.py: stub Arduino.h only).
 */
#include <Arduino.h>

#include <stddef.h>
#include <stdint.h>

#include "mt_device.h"
#include "mt_port.h"

#if defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_7M__)
#define MT_PORT_DWT 1
#ifndef MT_PORT_BOARD
#define MT_PORT_BOARD "nano33ble" /* an alias of "Arduino Nano 33 BLE" (at most 16 characters) */
#endif
#elif defined(__ARM_ARCH_6M__)
#define MT_PORT_DWT 0
#ifndef MT_PORT_BOARD
#define MT_PORT_BOARD "pico" /* an alias of "Raspberry Pi Pico" */
#endif
#ifndef MT_PORT_CYCLES_PER_US
#define MT_PORT_CYCLES_PER_US 125u
#endif
#else
#error "port/arduino: a Cortex-M4 (Nano 33 BLE) or Cortex-M0+ (Pico) core expected"
#endif

#ifndef MT_PORT_BAUD
#define MT_PORT_BAUD 115200
#endif

#if MT_PORT_DWT
#define MT_DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define MT_DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define MT_DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define MT_DEMCR_TRCENA (1u << 24)
#define MT_DWT_CYCCNTENA 1u
#endif

extern "C" {

void mt_port_init(void)
{
#if MT_PORT_DWT
    MT_DEMCR |= MT_DEMCR_TRCENA;
    MT_DWT_CYCCNT = 0u;
    MT_DWT_CTRL |= MT_DWT_CYCCNTENA;
#endif
    Serial.begin(MT_PORT_BAUD);
}

int mt_port_getc(void)
{
    const int c = Serial.read();
    return c < 0 ? -1 : (c & 0xFF);
}

void mt_port_idle(void)
{
}

void mt_port_send(const uint8_t *p, size_t n)
{
    if (n == 0u || !Serial) {
        return; /* no host on the USB port: nobody would read these bytes */
    }
    /* One call, return value ignored: Arduino's write(buf, n) blocks until every byte is queued,
     * and the Mbed core's USBSerial::write returns USBCDC::send()'s bool (1), not a byte count,
     * so a "retry the rest" loop would send bytes twice. */
    (void)Serial.write(p, n);
}

void mt_port_putc(uint8_t c)
{
    mt_port_send(&c, 1u);
}

uint32_t mt_port_cycles(void)
{
#if MT_PORT_DWT
    return MT_DWT_CYCCNT;
#else
    return (uint32_t)micros() * (uint32_t)MT_PORT_CYCLES_PER_US;
#endif
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
    return 0u;
}

uint32_t mt_port_stack_high_water(void)
{
    return 0u;
}

const char *mt_port_board(void)
{
    return MT_PORT_BOARD;
}

} /* extern "C" */

void setup()
{
    mt_port_init();
    mt_device_init();
}

void loop()
{
    mt_device_poll();
    mt_port_idle();
}
