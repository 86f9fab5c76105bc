/* Stub of ESP-IDF 5's esp_cpu.h (tests/fake_sdk/README.md): esp_cpu_cycle_count_t = uint32_t. */
#pragma once
#include <stdint.h>
typedef uint32_t esp_cpu_cycle_count_t;
esp_cpu_cycle_count_t esp_cpu_get_cycle_count(void);
