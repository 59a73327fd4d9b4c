/*
 * cmd_promote.c — `litefs promote`: asks the node at -url (a candidate
 * following the primary, caught up) to take the lease over through a
 * handoff (POST /promote; lease.h lease_promote, docs/lease.md
 * "Handoff"). The node answers once it is the primary or the handoff
 * failed, within about 10 s.
 *
 * Exit codes: 0 this node is the primary, 1 the handoff did not happen
 * (the node's reason is printed), 2 usage error.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/httpc.h"
#include "cmd/cmd.h"

#define DEFAULT_URL "http://127.0.0.1:20202"

static const char promote_usage[] =
	"Usage: litefs promote [-url URL]\n"
	"\n"
	"Makes the node at URL the primary by a handoff (lease.type: etcd): the\n"
	"primary stops accepting commits, waits until this node has every\n"
	"transaction it committed, and hands the lease over. The node must be a\n"
	"candidate that follows the primary and has finished its first sync.\n"
	"Writes pause for the handoff (milliseconds); none is lost. If the node\n"
	"does not catch up within 5 s the primary goes on as before.\n"
	"\n"
	"Options:\n"
	"  -url URL     the node's HTTP API (default: $LITEFS_URL, else " DEFAULT_URL ")\n"
	"  -h, --help   show this help\n"
	"\n"
	"Exit status: 0 the node is the primary, 1 the handoff did not happen, 2 usage error.\n";

int cmd_promote_main(int argc, char **argv)
{
	const char *url = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "-help") || !strcmp(a, "--help")) {
			fputs(promote_usage, stdout);
			return 0;
		}
		if (!strcmp(a, "-url") || !strcmp(a, "--url")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "litefs promote: %s needs a value\n\n%s", a, promote_usage);
				return 2;
			}
			url = argv[++i];
		} else if (!strncmp(a, "-url=", 5) || !strncmp(a, "--url=", 6)) {
			url = strchr(a, '=') + 1;
		} else {
			fprintf(stderr, "litefs promote: unexpected argument %s\n\n%s", a, promote_usage);
			return 2;
		}
	}
	if (!url) {
		const char *env = getenv("LITEFS_URL");
		url = env && env[0] ? env : DEFAULT_URL;
	}
	CURL *c = curl_easy_init();
	if (!c) {
		fprintf(stderr, "litefs promote: out of memory\n");
		return 1;
	}
	char *full = httpc_url(c, url, "/promote", NULL);
	if (!full) {
		curl_easy_cleanup(c);
		fprintf(stderr, "litefs promote: out of memory\n");
		return 1;
	}
	struct httpc_req q;
	httpc_req_init_post(&q, c, full);
	q.timeout_ms = 30000;
	q.mem_max = 1 << 16;
	CURLcode cc = httpc_perform(&q);
	int code = 1;
	if (cc != CURLE_OK) {
		fprintf(stderr, "litefs promote: %s: %s\n", full, httpc_transport_error(&q));
	} else if (q.status != 200) {
		struct httpc_error e;
		httpc_error_parse(&q, &e);
		fprintf(stderr, "litefs promote: the handoff did not happen (HTTP %ld): %s\n", q.status, e.text);
	} else {
		json_error_t jerr;
		json_t *o = q.mem ? json_loads(q.mem, 0, &jerr) : NULL;
		const char *m = json_string_value(json_object_get(o, "message"));
		printf("%s (%lld ms)\n", m ? m : "this node is the primary",
		       (long long)json_integer_value(json_object_get(o, "elapsedMs")));
		json_decref(o);
		code = 0;
	}
	httpc_req_free(&q);
	free(full);
	curl_easy_cleanup(c);
	return code;
}
