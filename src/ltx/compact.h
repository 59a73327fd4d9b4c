/*
 * compact.h — merge a contiguous run of LTX files into one LTX file.
 *
 * Pure module: inputs are ltx_read_fn callbacks, the output is an
 * ltx_write_fn callback; no logging, no files. Memory is bounded by
 * (number of inputs) x (page size + one decoder), never by file sizes:
 * the merge streams every input exactly once.
 *
 * The output follows LTX.md "Contiguity, apply, compaction": page size,
 * min TXID and pre-apply checksum come from the first input; commit, max
 * TXID, timestamp and post-apply checksum from the last; for each page the
 * latest version wins; WAL fields and node ID are 0; a run that starts
 * with a snapshot gives a snapshot. See compact.c for the one rule LTX.md
 * leaves implicit (pages truncated away and regrown inside the run).
 */
#ifndef LITEFS_COMPACT_H
#define LITEFS_COMPACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ltx/ltx.h"

/* One input of a compaction: bytes come from read(ctx). Borrowed; valid
 * until compact_run() returns. */
struct compact_input {
	ltx_read_fn read;
	void *ctx;
};

/* compact_error.input when the failure is on the output side (the write
 * callback or the encoder), not in one of the inputs. */
#define COMPACT_OUTPUT SIZE_MAX

/* Where a compaction failed. */
struct compact_error {
	size_t input;    /* index into inputs[], or COMPACT_OUTPUT */
	uint64_t offset; /* byte offset in that input (or bytes written to the output) */
};

/*
 * Compacts inputs[0..n_inputs) (sorted by TXID) into one LTX file written
 * through write(write_ctx); the page block is LZ4-compressed iff compress.
 *
 * Returns 0, with *out_header and *out_trailer (each may be NULL) set to
 * the output's header and trailer. On error returns a negative code and
 * fills *err (may be NULL) with the failing input and byte offset:
 *   ERR_INVAL                    n_inputs == 0 or a NULL callback
 *   ERR_LTX_PAGE_SIZE_MISMATCH   input i's page size differs from input 0's
 *   ERR_LTX_OVERLAP              input i's min TXID <= input i-1's max TXID
 *   ERR_LTX_NOT_CONTIGUOUS       a TXID gap, or input i's pre-apply checksum
 *                                differs from input i-1's post-apply checksum
 *   any decoder error (ERR_LTX_*, ERR_IO_SHORT, -errno from a callback)
 *   any encoder or write-callback error (err->input == COMPACT_OUTPUT)
 *   ERR_NOMEM
 *
 * The checksum chain is only known once every trailer has been read, i.e.
 * after the last output byte has been written: on any error the caller
 * must discard what was written (write to a temporary file and rename it
 * only on success).
 */
int compact_run(const struct compact_input *inputs, size_t n_inputs, bool compress,
		ltx_write_fn write, void *write_ctx,
		struct ltx_header *out_header, struct ltx_trailer *out_trailer,
		struct compact_error *err);

#endif
