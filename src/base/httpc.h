/*
 * httpc.h — the one libcurl client of the tree: the backup client
 * (node/backup.c), the replica's stream client (node/replica.c) and the
 * CLIs (cmd/cmd_import.c, cmd/cmd_cloud.c) all run their requests through
 * httpc_perform(), so timeouts, body sinks, size caps and the reading of
 * a server's error body are decided once.
 *
 * A request is a struct httpc_req filled by the caller: the method and
 * URL, borrowed headers, an optional body (a file range read with pread,
 * or a memory buffer), where a 2xx reply's body goes (a callback, a file
 * written through the syscall table, or memory), and a progress hook
 * that can stop the transfer. Every other reply's body is kept in memory
 * up to mem_max bytes, for httpc_error_parse().
 *
 * Errors are the project's (err.h): -errno, ERR_NOMEM, ERR_IO_SHORT,
 * ERR_CLOUD_TOO_LARGE. No logging: the callers say what failed, with
 * their own context. libcurl must be initialised (curl_global_init) by
 * the program.
 */
#ifndef LITEFS_HTTPC_H
#define LITEFS_HTTPC_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTPC_MAX_ERROR_BODY (64u << 10)

/* Receives a 2xx body: returns len to go on, anything else to stop the
 * transfer (libcurl's write callback contract). */
typedef size_t (*httpc_write_fn)(void *ctx, const char *buf, size_t len);
/* Called about once a second and on progress; nonzero stops the transfer. */
typedef int (*httpc_progress_fn)(void *ctx, int64_t dl_total, int64_t dl_now, int64_t ul_total, int64_t ul_now);

struct httpc_req {
	/* ---- In (set by the caller after httpc_req_init) ---- */
	const char *method;            /* NULL: GET, or POST with a body */
	const char *url;               /* borrowed */
	struct curl_slist *headers;    /* borrowed; NULL: none */
	const char *user_agent;
	long connect_timeout_ms;       /* default 10 s */
	long timeout_ms;               /* 0: none */
	long stall_s;                  /* > 0: fail after this long without a byte */
	bool keepalive;                /* TCP keepalive probes (long streams) */
	size_t recv_buffer;            /* > 0: libcurl's receive buffer size */
	const char *ca_file;           /* https: CA bundle to trust (NULL: the system's) */
	const char *cert_file;         /* https: client certificate (PEM; NULL: none) */
	const char *key_file;          /* https: its private key (PEM) */

	int up_fd;                     /* -1: no file body */
	uint64_t up_off, up_len;       /* the range of up_fd that is sent */
	const void *up_buf;            /* or a memory body (borrowed) */
	size_t up_buf_len;

	httpc_write_fn ok_write;       /* 2xx body to a callback, else ... */
	void *ok_ctx;
	int down_fd;                   /* ... to this fd from offset 0 (-1: memory) */
	uint64_t down_max;             /* bound of down_fd's body (0: none) */
	size_t mem_max;                /* bound of a body kept in memory */

	httpc_progress_fn progress;    /* NULL: none */
	void *progress_ctx;

	/* ---- Out ---- */
	CURL *curl;                    /* borrowed: the handle, reused by the caller */
	CURLcode cc;
	long status;                   /* 0 until the status line arrived */
	char reason[64];               /* the status line's reason phrase */
	char errbuf[CURL_ERROR_SIZE];
	char *mem;                     /* NUL-terminated body; freed by httpc_req_free */
	size_t mem_len;
	uint64_t down_len;             /* bytes written to down_fd */
	int up_err;                    /* the file body could not be read whole */
	int down_err;                  /* a sink failed or a bound was passed */
	uint64_t up_start, up_total;   /* private: the range, for rewinds */
};

/* Readies q for a request on the handle c (borrowed). */
void httpc_req_init(struct httpc_req *q, CURL *c);

/* httpc_req_init() for a POST of url (borrowed) with an empty body (set
 * up_fd/up_off/up_len afterwards for a file body). */
void httpc_req_init_post(struct httpc_req *q, CURL *c, const char *url);

/* Resets the handle, applies q and runs the request to its end. Returns
 * q->cc. The upload file may be read from again after a rewind (libcurl
 * resends after some redirects and authentication replies). */
CURLcode httpc_perform(struct httpc_req *q);

/* Frees the memory body. */
void httpc_req_free(struct httpc_req *q);

/* libcurl's message for a failed transfer. Borrowed; valid until q is
 * reused. */
const char *httpc_transport_error(const struct httpc_req *q);

/* Copies the value of the reply header name into out (truncated to len).
 * Returns true when the header was present. Works from the body callback
 * too: the headers have arrived by then. */
bool httpc_header(const struct httpc_req *q, const char *name, char *out, size_t len);

/* What a failed reply says. text is the JSON body's "error" string; when
 * the body is not such JSON, the body itself; when it is empty, the status
 * line's reason phrase; else "(no body)". code is the JSON "code" ("" if
 * none). from_json says which. */
struct httpc_error {
	char text[512];
	char code[64];
	bool from_json;
};
void httpc_error_parse(const struct httpc_req *q, struct httpc_error *e);

/* Makes s safe inside a logfmt quoted value (quotes, backslashes and
 * control characters become '). */
void httpc_text_for_log(char *s);

/* Appends a header line made from fmt to *list. Returns 0, or ERR_NOMEM
 * after freeing the whole list (*list becomes NULL). */
int httpc_add_header(struct curl_slist **list, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Builds base (trailing slashes dropped) + path + "?k=v&..." from query:
 * pairs of key and value ending with a NULL key; pairs with a NULL value
 * are skipped; values are URL-escaped. Returns the URL (caller frees) or
 * NULL when out of memory. */
char *httpc_url(CURL *c, const char *base, const char *path, const char *const *query);

#endif
