/* Stub of <zephyr/device.h> + devicetree macros (tests/fake_sdk/README.md): struct device,
 * DEVICE_DT_GET (an address constant), DT_CHOSEN, device_is_ready. */
#ifndef STUB_ZEPHYR_DEVICE_H
#define STUB_ZEPHYR_DEVICE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
struct device {
    const char *name;
    const void *config;
    const void *api;
    void *data;
};
#define DT_CHOSEN(prop) stub_dt_chosen_##prop
#define STUB_CAT_(a, b) a##b
#define STUB_CAT(a, b) STUB_CAT_(a, b)
#define DEVICE_DT_GET(node_id) (&STUB_CAT(stub_device_, node_id))
extern const struct device stub_device_stub_dt_chosen_zephyr_console;
bool device_is_ready(const struct device *dev);
#endif
