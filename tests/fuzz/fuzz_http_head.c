/*
 * fuzz_http_head.c — libFuzzer target for the HTTP server's request-head
 * parser (base/httphead.c, through httphead_check): any bytes must be
 * parsed without a memory error, and the answer must be one the server
 * sends: 0 (a valid head) or one of its error statuses with a message.
 * The input is cut at its first blank line when it has one, as the server
 * hands the parser exactly one head.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/httpd.h"
#include "base/httphead.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 20000)
		return 0;
	size_t len = size;
	for (size_t i = 0; i + 1 < size; i++) {
		if (data[i] == '\n' && data[i + 1] == '\n') {
			len = i + 2;
			break;
		}
		if (data[i] == '\n' && i + 2 < size && data[i + 1] == '\r' && data[i + 2] == '\n') {
			len = i + 3;
			break;
		}
	}
	/* An exact-size copy, so that ASan sees any read past the head. */
	char *head = malloc(len ? len : 1);
	if (!head)
		return 0;
	memcpy(head, data, len);
	char msg[HTTPD_MSG_LEN];
	msg[0] = '\0';
	unsigned st = httphead_check(head, len, msg, sizeof(msg));
	free(head);
	static const unsigned ok[] = { 0, 400, 414, 417, 431, 500, 501, 505 };
	int found = 0;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		found |= st == ok[i];
	if (!found || (st != 0 && msg[0] == '\0'))
		abort();
	return 0;
}
