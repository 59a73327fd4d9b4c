#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "ltx/ltx.h"
#include "ltx/ltxlog.h"

void ltxlog_encode_hdr(uint8_t *out, uint32_t len)
{
	memcpy(out, LTXLOG_MAGIC, 4);
	out[4] = (uint8_t)(len >> 24);
	out[5] = (uint8_t)(len >> 16);
	out[6] = (uint8_t)(len >> 8);
	out[7] = (uint8_t)len;
}

int ltxlog_read_rec(int fd, uint64_t off, uint64_t file_size, struct ltxlog_rec *rec)
{
	static const uint8_t zero[LTXLOG_HDR_SIZE];
	uint8_t hdr[LTXLOG_HDR_SIZE];

	if (off >= file_size)
		return 0;
	if (file_size - off < LTXLOG_HDR_SIZE)
		return ERR_LTXLOG_TORN;
	int n = fdio_pread_full(fd, hdr, sizeof(hdr), (off_t)off);
	if (n < 0)
		return n;
	if (n < (int)sizeof(hdr))
		return ERR_LTXLOG_TORN;
	if (memcmp(hdr, zero, sizeof(hdr)) == 0)
		return 0;
	if (memcmp(hdr, LTXLOG_MAGIC, 4) != 0)
		return ERR_LTXLOG_MAGIC;
	uint32_t len = (uint32_t)hdr[4] << 24 | (uint32_t)hdr[5] << 16 | (uint32_t)hdr[6] << 8 | hdr[7];
	if (len < LTX_HEADER_SIZE + LTX_TRAILER_SIZE || len > LTXLOG_MAX_RECORD)
		return ERR_LTXLOG_MAGIC;
	if (file_size - off - LTXLOG_HDR_SIZE < len)
		return ERR_LTXLOG_TORN;
	rec->offset = off;
	rec->len = len;
	return 1;
}

void ltxlog_reader_init(struct ltxlog_reader *r, int fd, const struct ltxlog_rec *rec)
{
	r->fd = fd;
	r->off = rec->offset + LTXLOG_HDR_SIZE;
	r->end = r->off + rec->len;
}

int ltxlog_read_ends(int fd, uint64_t off, uint64_t len, struct ltx_header *h, uint64_t *post)
{
	uint8_t hdr[LTX_HEADER_SIZE], trl[LTX_TRAILER_SIZE];
	if (len < LTX_HEADER_SIZE + LTX_TRAILER_SIZE)
		return ERR_LTX_TRUNCATED;
	int n = fdio_pread_full(fd, hdr, sizeof(hdr), (off_t)off);
	if (n >= 0 && n != (int)sizeof(hdr))
		n = ERR_IO_SHORT;
	if (n < 0)
		return n;
	int rc = ltx_header_decode(hdr, h);
	if (rc != 0)
		return rc;
	n = fdio_pread_full(fd, trl, sizeof(trl), (off_t)(off + len - LTX_TRAILER_SIZE));
	if (n != (int)sizeof(trl))
		return n < 0 ? n : ERR_IO_SHORT;
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | trl[i];
	*post = v;
	return 0;
}

ssize_t ltxlog_read(void *ctx, void *buf, size_t len)
{
	struct ltxlog_reader *r = ctx;
	if (r->off >= r->end)
		return 0;
	if (len > r->end - r->off)
		len = (size_t)(r->end - r->off);
	if (len > (1u << 30))
		len = 1u << 30;
	int n = fdio_pread_full(r->fd, buf, len, (off_t)r->off);
	if (n < 0)
		return n;
	r->off += (uint64_t)n;
	return n;
}

bool ltxlog_is_segment(int fd)
{
	uint8_t m[4];
	return fdio_pread_full(fd, m, sizeof(m), 0) == (int)sizeof(m) && memcmp(m, LTXLOG_MAGIC, 4) == 0;
}

void ltxlog_format_name(char *buf, uint64_t first_txid)
{
	snprintf(buf, LTXLOG_NAME_LEN, "%016llx" LTXLOG_SUFFIX, (unsigned long long)first_txid);
}

int ltxlog_parse_name(const char *name, uint64_t *first_txid)
{
	uint64_t v = 0;
	if (strlen(name) != LTXLOG_NAME_LEN - 1 || strcmp(name + 16, LTXLOG_SUFFIX) != 0)
		return ERR_INVAL;
	for (int i = 0; i < 16; i++) {
		char c = name[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return ERR_INVAL;
		v = v << 4 | (uint64_t)d;
	}
	*first_txid = v;
	return 0;
}
