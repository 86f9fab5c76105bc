/**
 * @file mt_device.h
 * @brief The device loop: the serial protocol (mt_protocol.h) on top of a board port (mt_port.h)
 *        and the generated training program (mt_model.h).
 *
 *     int main(void) { mt_port_init(); mt_device_init(); for (;;) { mt_device_poll(); mt_port_idle(); } }
 *
 * Receive: bytes accumulate until 0x00; an empty frame is ignored, a frame longer than the receive
 * buffer is dropped up to its 0x00 (NAK TOO_LONG, or OVERFLOW when MT_DEVICE_MAX_PAYLOAD is below
 * the protocol's 1024, seq 0xFFFF), a malformed frame gets NAK(reason = mt_frame_status): with the
 * header's seq when the CRC held (LEN, VERSION, TYPE, PAYLOAD), else seq 0xFFFF.
 * Transmit: every frame goes out as 0x00 + the encoded frame (which ends with 0x00), so the
 * receiver drops whatever garbage preceded it.
 * Idempotence: the seq and type of the last request executed and the encoded bytes of its reply
 * are kept; the same seq and type again is not executed, the kept reply is sent again.
 *
 * Requests (replies): HELLO (HELLO_INFO), INIT (ACK), SAMPLE (ACK), TRAIN (METRICS), EVAL
 * (EVAL_RESULT), INFER (INFER_RESULT), PARAMS_GET (PARAMS_DATA), PARAMS_SET (ACK), METRICS_GET
 * (METRICS); any of them may be answered by NAK (MT_NAK_*). See host/protocol.py.
 *
 * Storage (when mt_port_storage_size() >= MT_DEVICE_STORAGE_BOOT_BYTES): bytes [0, 8) hold the
 * boot counter ("MTBC", u32 LE), incremented by every mt_device_init(); the rest is unused (a
 * checkpoint slot at MT_DEVICE_STORAGE_CK_OFFSET is the intended use).
 *
 * Memory (static, no heap): receive buffer (encoded frame), decode buffer (raw frame), reply
 * buffer (0x00 + encoded frame, kept for re-sending), reply payload, the samples
 * (MT_BATCH * MT_INPUT_BYTES) and a few counters: about 4 * MT_DEVICE_MAX_PAYLOAD + 200 bytes.
 */
#ifndef MT_DEVICE_H
#define MT_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "mt_protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Largest payload the device takes or sends (HELLO_INFO.max_payload); buffers are sized from it.
 *  Small-RAM boards lower it with -DMT_DEVICE_MAX_PAYLOAD=256 (64 <= value <= 1024). */
#ifndef MT_DEVICE_MAX_PAYLOAD
#define MT_DEVICE_MAX_PAYLOAD MT_FRAME_MAX_PAYLOAD
#endif

/** Storage layout used by the device loop (offsets into mt_port_storage_*). */
#define MT_DEVICE_STORAGE_BOOT_OFFSET 0u
#define MT_DEVICE_STORAGE_BOOT_BYTES 8u
#define MT_DEVICE_STORAGE_CK_OFFSET 4096u

/** Once, after mt_port_init(): read and increment the boot counter (when the port has storage),
 *  paint the arena (mt_arena_paint), and send an unsolicited HELLO_INFO (seq 0xFFFF). */
void mt_device_init(void);

/** Take every byte the port has waiting (mt_port_getc) and handle the frames they complete. */
void mt_device_poll(void);

/** Handle @p n received bytes (what mt_device_poll does with the port's bytes). */
void mt_device_feed(const uint8_t *p, size_t n);

/** Boot counter as reported in HELLO_INFO (0 when the port has no storage). */
uint32_t mt_device_boot_count(void);

#ifdef __cplusplus
}
#endif

#endif /* MT_DEVICE_H */
