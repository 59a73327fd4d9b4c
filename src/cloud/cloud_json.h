/*
 * cloud_json.h — small JSON helpers shared by the dashboard's modules
 * (cloud_timeline.c, cloud_preview.c, cloud_events.c). Pure; no I/O.
 */
#ifndef LITEFS_CLOUD_JSON_H
#define LITEFS_CLOUD_JSON_H

#include <jansson.h>
#include <stdint.h>

/* A TXID or checksum as the API writes them: 16 lowercase hex digits.
 * NULL on OOM (jansson's packers then fail cleanly). */
json_t *cloud_json_hex(uint64_t v);

#endif
