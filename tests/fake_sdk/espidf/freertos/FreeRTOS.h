/* Stub of ESP-IDF's freertos/FreeRTOS.h (tests/fake_sdk/README.md): the base types. */
#pragma once
#include <stddef.h>
#include <stdint.h>
typedef uint32_t TickType_t;
typedef long BaseType_t;
typedef unsigned long UBaseType_t;
typedef void *QueueHandle_t;
#define portMAX_DELAY ((TickType_t)0xffffffffUL)
