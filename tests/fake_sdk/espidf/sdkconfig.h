/* Stub of the generated sdkconfig.h (tests/fake_sdk/README.md): the folder's sdkconfig.defaults. */
#pragma once
#define CONFIG_ESP_MAIN_TASK_STACK_SIZE 8192
#define CONFIG_FREERTOS_HZ 100
