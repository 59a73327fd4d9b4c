/*
 * cloud_backend_s3.h — the S3-compatible backend of cloud_backend.h
 * (AWS S3, MinIO, R2, s3rver, moto ...), over libcurl with
 * CURLOPT_AWS_SIGV4. docs/cloud-s3.md, has the key layout and
 * the durability argument.
 *
 * An object "a/b.ltx" is the key <prefix>a/b.ltx of the bucket. put is
 * one PutObject (a multipart upload past part_size, streamed from the
 * file with bounded memory); get downloads into an unlinked temporary
 * file; list is ListObjectsV2 with paging; del_many is DeleteObjects
 * (1,000 keys a request). Every request carries x-amz-content-sha256
 * (the SHA-256 of its payload), so the server verifies every byte in
 * transit. 5xx, 429 and network errors are retried with exponential
 * backoff and full jitter; other errors are not.
 *
 * Thread-safe: any operation from any thread; libcurl handles (and their
 * connections) are pooled.
 */
#ifndef LITEFS_CLOUD_BACKEND_S3_H
#define LITEFS_CLOUD_BACKEND_S3_H

#include <stddef.h>
#include <stdint.h>

#include "cloud/cloud_backend.h"

enum cloud_s3_addressing {
	CLOUD_S3_AUTO = 0, /* virtual host on AWS (no endpoint given), path style elsewhere */
	CLOUD_S3_PATH,     /* <endpoint>/<bucket>/<key> */
	CLOUD_S3_VIRTUAL,  /* <scheme>://<bucket>.<host>/<key> */
};

struct cloud_s3_config {
	const char *endpoint;      /* "http://127.0.0.1:9000"; NULL: https://s3.<region>.amazonaws.com */
	const char *region;        /* NULL: us-east-1 */
	const char *bucket;        /* required */
	const char *prefix;        /* NULL or "": the whole bucket; "a/b" keeps keys under "a/b/" */
	enum cloud_s3_addressing addressing;
	const char *access_key_id; /* required */
	const char *secret_access_key;
	const char *session_token; /* NULL unless temporary credentials */
	const char *tmp_dir;       /* where downloads are spooled (unlinked files) */
	uint64_t part_size;        /* multipart past this; 0: 16 MiB; at least 5 MiB */
	int max_attempts;          /* per request; 0: 8 */
};

/*
 * Opens the backend and probes it with one listing of the prefix: a wrong
 * credential, a missing bucket, a clock skew or an unreachable endpoint
 * fails here with one sentence in why[why_len] (for the start-up line),
 * after at most two attempts. Errors: ERR_CONFIG (bad settings), -EACCES
 * (credentials or permissions), -ENOENT (no such bucket), -ETIME (clock
 * skew), -EHOSTUNREACH (cannot connect), -EIO, ERR_NOMEM. The strings of
 * cfg are copied. Caller frees with be->ops->close(be).
 */
int cloud_backend_s3_open(const struct cloud_s3_config *cfg, struct cloud_backend **out, char *why,
			  size_t why_len);

/* Requests sent since open (every attempt counts), for the benchmarks. */
uint64_t cloud_backend_s3_requests(struct cloud_backend *be);

#endif
