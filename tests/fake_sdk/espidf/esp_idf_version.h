/* Stub of ESP-IDF's esp_idf_version.h (tests/fake_sdk/README.md). */
#pragma once
#define ESP_IDF_VERSION_MAJOR 5
#define ESP_IDF_VERSION_MINOR 1
#define ESP_IDF_VERSION_PATCH 0
