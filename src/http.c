/* http.c — placeholder until the HTTP API lands. */
#include <stddef.h>

#include "http.h"

int http_start(struct store *st, struct fusefs *fs, const char *addr, struct http_server **out)
{
	*out = NULL;
	return 0;
}

void http_stop(struct http_server *srv)
{
}
