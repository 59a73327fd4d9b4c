/*
 * mhd.h — what the node's HTTP API (http.c) and litefs-cloud's
 * (cloud_http.c) share about libmicrohttpd: listen addresses, starting a
 * thread-per-connection daemon on one, and its log lines.
 */
#ifndef LITEFS_MHD_H
#define LITEFS_MHD_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
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

/* Longest error message a response carries (longer ones are cut). */
#define MHD_MSG_LEN 512

/* Queues a response of body (takes ownership of a malloc'd buffer) with
 * Content-Type ctype, Cache-Control: no-store and, when header and value
 * are both not NULL, one more header (Allow, Litefs-Hwm...). Returns MHD's
 * result (MHD_NO on OOM). */
enum MHD_Result mhd_respond_buf(struct MHD_Connection *conn, unsigned status, const char *ctype, char *body,
				size_t len, const char *header, const char *value);
/* obj as compact JSON and a newline. Takes ownership of obj. */
enum MHD_Result mhd_respond_json(struct MHD_Connection *conn, unsigned status, json_t *obj, const char *header,
				 const char *value);
/* {"error": msg}. */
enum MHD_Result mhd_respond_error(struct MHD_Connection *conn, unsigned status, const char *msg);
enum MHD_Result mhd_respond_errorf(struct MHD_Connection *conn, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* True if the peer of a streamed response has gone (it only ever sends
 * its request, so a hang-up or an error is all there is to see). */
bool mhd_peer_gone(int sock_fd);
/* The connection's socket, or -1. */
int mhd_sock_of(struct MHD_Connection *conn);
/* "address:port" of the connection's peer ("?:?" when unknown). */
void mhd_peer_name(struct MHD_Connection *conn, char *buf, size_t len);

#endif
