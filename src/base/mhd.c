/*
 * mhd.c — shared libmicrohttpd plumbing; see mhd.h.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/err.h"
#include "base/log.h"
#include "base/mhd.h"

int mhd_parse_addr(const char *addr, char *host, size_t host_len, char *port, size_t port_len)
{
	const char *colon, *h = addr;
	size_t hn;

	if (addr == NULL)
		return ERR_INVAL;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':')
			return ERR_INVAL;
		h = addr + 1;
		hn = (size_t)(end - h);
		colon = end + 1;
		if (hn == 0)
			return ERR_INVAL;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return ERR_INVAL;
		hn = (size_t)(colon - addr);
		/* An unbracketed IPv6 address is ambiguous. */
		if (memchr(addr, ':', hn) != NULL)
			return ERR_INVAL;
	}
	const char *p = colon + 1;
	size_t pn = strlen(p);
	if (pn == 0 || pn > 5 || pn >= port_len || hn >= host_len || strspn(p, "0123456789") != pn ||
	    strtoul(p, NULL, 10) > 65535)
		return ERR_INVAL;
	memcpy(host, h, hn);
	host[hn] = '\0';
	memcpy(port, p, pn + 1);
	return 0;
}

void mhd_log_clean(char *s)
{
	for (; *s; s++)
		if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
			*s = '\'';
}

json_t *mhd_json_str(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	char *c = strdup(s);
	if (!c)
		return NULL;
	for (char *p = c; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(c);
	free(c);
	return j;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	mhd_log_clean(msg);
	LOG_WARN((const char *)cls, "msg=\"libmicrohttpd: %s\"", msg);
}
#pragma GCC diagnostic pop

static struct MHD_Daemon *start_daemon(const struct mhd_listen *l, unsigned flags, uint16_t port,
				       const struct sockaddr *sa)
{
	struct MHD_OptionItem opts[] = {
		{ MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, (void *)l->mod },
		{ MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)l->completed, l->cls },
		{ MHD_OPTION_CONNECTION_LIMIT, l->connection_limit, NULL },
		{ MHD_OPTION_CONNECTION_TIMEOUT, l->timeout_s, NULL },
		{ sa ? MHD_OPTION_SOCK_ADDR : MHD_OPTION_END, 0, (void *)sa },
		{ MHD_OPTION_END, 0, NULL },
	};
	return MHD_start_daemon(flags, port, NULL, NULL, l->handler, l->cls, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
}

int mhd_start(const struct mhd_listen *l, struct MHD_Daemon **out, uint16_t *port)
{
	char host[256], portstr[8];
	struct MHD_Daemon *d = NULL;

	*out = NULL;
	if (mhd_parse_addr(l->addr, host, sizeof(host), portstr, sizeof(portstr)) != 0) {
		LOG_ERROR(l->mod, "msg=\"invalid listen address: expected host:port, [ipv6]:port or :port\" addr=\"%s\"",
			  l->addr ? l->addr : "");
		return ERR_INVAL;
	}
	/* MHD_USE_ITC lets the owner quiesce the daemon (stop accepting)
	 * while requests in flight finish. */
	unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_ERROR_LOG | MHD_USE_ITC;
	uint16_t port_num = (uint16_t)strtoul(portstr, NULL, 10);
	errno = 0;
	if (host[0] == '\0') {
		/* All interfaces: IPv6 and IPv4 on one socket where the kernel
		 * has IPv6, IPv4 alone otherwise. */
		d = start_daemon(l, flags | MHD_USE_DUAL_STACK, port_num, NULL);
		if (!d)
			d = start_daemon(l, flags, port_num, NULL);
	} else {
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
		struct addrinfo *ai = NULL;
		int grc = getaddrinfo(host, portstr, &hints, &ai);
		if (grc != 0 || !ai) {
			LOG_ERROR(l->mod, "msg=\"cannot resolve the listen address\" addr=\"%s\" err=\"%s\"", l->addr,
				  gai_strerror(grc));
			return ERR_INVAL;
		}
		errno = 0;
		d = start_daemon(l, ai->ai_family == AF_INET6 ? flags | MHD_USE_IPv6 : flags, port_num, ai->ai_addr);
		freeaddrinfo(ai);
	}
	if (!d) {
		int rc = errno ? -errno : ERR_INVAL;
		LOG_ERROR(l->mod, "msg=\"cannot listen\" addr=\"%s\" err=\"%s\"", l->addr, err_str(rc));
		return rc;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	if (port)
		*port = info ? info->port : 0;
	*out = d;
	return 0;
}

/* ---- Responses ------------------------------------------------------------ */

/* Queues body (takes ownership of a malloc'd buffer); allow, if not NULL,
 * becomes the Allow header. */
enum MHD_Result mhd_respond_buf(struct MHD_Connection *conn, unsigned status, const char *ctype, char *body,
				size_t len, const char *header, const char *value)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (header && value)
		MHD_add_response_header(r, header, value);
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Takes ownership of obj. */
enum MHD_Result mhd_respond_json(struct MHD_Connection *conn, unsigned status, json_t *obj, const char *header,
				 const char *value)
{
	char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (!s)
		return MHD_NO;
	size_t n = strlen(s);
	char *t = realloc(s, n + 2);
	if (!t) {
		free(s);
		return MHD_NO;
	}
	t[n] = '\n';
	t[n + 1] = '\0';
	return mhd_respond_buf(conn, status, "application/json", t, n + 1, header, value);
}

enum MHD_Result mhd_respond_error(struct MHD_Connection *conn, unsigned status, const char *msg)
{
	json_t *o = json_object();
	if (o)
		json_object_set_new(o, "error", mhd_json_str(msg));
	return mhd_respond_json(conn, status, o, NULL, NULL);
}

enum MHD_Result mhd_respond_errorf(struct MHD_Connection *conn, unsigned status, const char *fmt, ...)
{
	char msg[MHD_MSG_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return mhd_respond_error(conn, status, msg);
}

/* ---- Connections ---------------------------------------------------------- */

/* True if the peer of a streamed response has gone (it only ever sends
 * its request, so a hang-up or an error is all there is to see). */
bool mhd_peer_gone(int sock_fd)
{
	if (sock_fd < 0)
		return false;
	struct pollfd pfd = { .fd = sock_fd, .events = POLLRDHUP };
	return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

int mhd_sock_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	return ci ? (int)ci->connect_fd : -1;
}

void mhd_peer_name(struct MHD_Connection *conn, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
	if (ci && ci->client_addr) {
		socklen_t sl = ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								      : sizeof(struct sockaddr_in);
		getnameinfo(ci->client_addr, sl, host, sizeof(host), port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
	}
	snprintf(buf, len, "%s:%s", host, port);
}
