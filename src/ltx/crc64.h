/*
 * crc64.h — CRC-64/GO-ISO (Go's hash/crc64 with the ISO table).
 *
 * Reflected polynomial 0xD800000000000000, init all ones, final xor all
 * ones. Check value: crc64_update(0, "123456789", 9) == 0xb90956c775a41001.
 *
 * Semantics match Go's crc64.Update: the value passed in and returned is the
 * finalised CRC, so crc64_update(crc64_update(0, a), b) is the CRC of a||b
 * and 0 is the start value. It sits on every hot path (page checksums,
 * file checksums), so the implementation is table-sliced and/or uses
 * carry-less multiplication when the CPU has it.
 */
#ifndef LITEFS_CRC64_H
#define LITEFS_CRC64_H

#include <stddef.h>
#include <stdint.h>

uint64_t crc64_update(uint64_t crc, const void *buf, size_t len);

/* Portable table-sliced version, always available; crc64_update() may
 * dispatch to a faster one. Exposed so tests can compare the two. */
uint64_t crc64_update_generic(uint64_t crc, const void *buf, size_t len);

#endif
