/* Stub of ESP-IDF's freertos/task.h (tests/fake_sdk/README.md). */
#pragma once
#include "freertos/FreeRTOS.h"
typedef void *TaskHandle_t;
UBaseType_t uxTaskGetStackHighWaterMark(TaskHandle_t xTask);
void vTaskDelay(const TickType_t xTicksToDelay);
