/*
 * mhd.h — what the node's HTTP API (http.c) and litefs-cloud's
 * (cloud_http.c) share about libmicrohttpd: listen addresses, starting a
 * thread-per-connection daemon on one, and its log lines.
 */
#ifndef LITEFS_MHD_H
#define LITEFS_MHD_H

#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

/* Splits "host:port", "[v6]:port" or ":port" (host "" = all interfaces).
 * Returns 0 or ERR_INVAL (unbracketed IPv6, bad or missing port). */
int mhd_parse_addr(const char *addr, char *host, size_t host_len, char *port, size_t port_len);

struct mhd_listen {
	const char *addr;       /* as for mhd_parse_addr() */
	const char *mod;        /* log module, e.g. "http" */
	MHD_AccessHandlerCallback handler;
	MHD_RequestCompletedCallback completed;
	void *cls;              /* passed to both callbacks */
	unsigned connection_limit;
	unsigned timeout_s;
};

/* Starts a daemon (one thread per connection, quiesce-able with
 * MHD_quiesce_daemon) listening on l->addr: all interfaces (dual stack
 * where the kernel has IPv6) or the resolved host. *port gets the bound
 * port (useful with port 0). Logs and returns 0, ERR_INVAL or -errno. */
int mhd_start(const struct mhd_listen *l, struct MHD_Daemon **out, uint16_t *port);

/* Replaces characters that would break a logfmt quoted value. */
void mhd_log_clean(char *s);

/* A JSON string of s; bytes that are not valid UTF-8 (database names may
 * hold any byte but '/' and controls) are replaced by '?'. NULL on OOM. */
json_t *mhd_json_str(const char *s);

#endif
