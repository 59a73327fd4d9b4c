/*
 * config.h — litefs.yml: parse, validate, print.
 *
 * The file format is LiteFS 0.5's (cmd/litefs/config.go at v0.5.14), read
 * the way LiteFS reads it:
 *
 *   1. The raw text is environment-expanded first, comments included, with
 *      Go os.Expand rules plus LiteFS's `${A == B}` / `${A != "lit"}`
 *      expressions (base/goenv.h). -no-expand-env skips this step.
 *   2. The first YAML document is read into a tree (base/yamltree.h, on
 *      libyaml) and decoded strictly into struct config: an unknown key
 *      anywhere is an error naming the key path and the line, except
 *      inside `exec` items, where unknown keys are ignored (with a
 *      warning) exactly as LiteFS 0.5.14 does.
 *      Duplicate keys, wrong types and bad durations are errors too. A
 *      null value (`key:` or a `$VAR` that expanded to nothing) keeps the
 *      default, as yaml.v3 does for scalar fields.
 *   3. config_validate() does the semantic checks `litefs mount` needs
 *      (directories, lease type, addresses, durations >= 0, ...).
 *   4. config_unsupported() lists what this build cannot do yet, so the
 *      mount refuses it clearly instead of silently ignoring it.
 *
 * docs/config.md is the reference of every key. Beyond LiteFS we accept:
 * `exec[].if-primary`, `http.secret`, `lease.type: etcd` with `lease.etcd.{endpoints,key,
 * ttl}`, and `backup.delay` / `backup.full-sync-interval` (LiteFS has the
 * fields but not as keys). Deliberate differences: `lease.type` defaults to
 * "static" (LiteFS refuses an empty type at mount), and YAML merge keys
 * (`<<`) are refused.
 *
 * Line numbers in messages are lines of the file as written, also when an
 * expanded variable contained line breaks.
 *
 * Pure module: no logging, and no I/O except config_load_file/config_find
 * (which read the file system) and config_print (which writes to a FILE).
 */
#ifndef LITEFS_CONFIG_H
#define LITEFS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/goenv.h"

/* Largest litefs.yml we read, before and after env expansion. */
#define CONFIG_MAX_FILE_SIZE (1u << 20)
#define CONFIG_MAX_EXPANDED_SIZE (4u << 20)

/* Defaults (LiteFS 0.5.14 values unless noted). */
#define CONFIG_DEFAULT_HTTP_ADDR ":20202"
#define CONFIG_DEFAULT_RETENTION_MS (10 * 60 * 1000)
#define CONFIG_DEFAULT_RETENTION_MONITOR_INTERVAL_MS (60 * 1000)
#define CONFIG_DEFAULT_RECONNECT_DELAY_MS 1000
#define CONFIG_DEFAULT_DEMOTE_DELAY_MS 10000
#define CONFIG_DEFAULT_SYNC_TIMEOUT_MS 5000
#define CONFIG_DEFAULT_CONSUL_TTL_MS 10000
#define CONFIG_DEFAULT_CONSUL_LOCK_DELAY_MS 1000
#define CONFIG_DEFAULT_ETCD_KEY "litefs/primary" /* ours */
#define CONFIG_DEFAULT_ETCD_TTL_MS 10000          /* ours */
#define CONFIG_DEFAULT_PROXY_MAX_LAG_MS 10000
#define CONFIG_DEFAULT_PROXY_PRIMARY_REDIRECT_TIMEOUT_MS 5000
#define CONFIG_DEFAULT_PROXY_READ_HEADER_TIMEOUT_MS 10000
#define CONFIG_DEFAULT_PROXY_IDLE_TIMEOUT_MS 30000
#define CONFIG_DEFAULT_PROXY_TXID_TIMEOUT_MS 5000
#define CONFIG_DEFAULT_BACKUP_DELAY_MS 1000
#define CONFIG_DEFAULT_BACKUP_FULL_SYNC_INTERVAL_MS 10000
#define CONFIG_DEFAULT_LITEFS_CLOUD_URL "https://litefs.fly.io"
#define CONFIG_DEFAULT_TRACING_MAX_SIZE 64 /* MB */
#define CONFIG_DEFAULT_TRACING_MAX_COUNT 8

/* A list of strings. items is NULL when n is 0. */
struct config_strlist {
	char **items;
	size_t n;
};

/* One `exec` command. */
struct config_exec {
	char *cmd;         /* never NULL; "" when the item had no cmd */
	bool if_candidate; /* run only on a node that may become primary */
	bool if_primary;   /* ours: run while this node is primary, stop when it is not */
	int line;          /* line of the item in the file (0 if unknown) */
};

/* Where a key was set, for messages that point into the file. */
struct config_keyline {
	char *path; /* "lease.type", "exec[1].cmd", ... */
	int line;
};

/*
 * The decoded configuration. After a successful config_init() or
 * config_parse(), every char * field is non-NULL (possibly "") and owned
 * by the struct; durations are milliseconds (Go durations truncated to the
 * millisecond, base/godur.h). Caller frees with config_free().
 */
struct config {
	char *name; /* the file name used in messages */

	bool exit_on_error; /* default true */
	bool skip_sync;
	bool strict_verify;

	struct config_exec *exec; /* NULL when n_exec is 0 */
	size_t n_exec;

	struct {
		char *dir; /* required by config_validate */
		bool compress; /* default true */
		int64_t retention_ms;
		int64_t retention_monitor_interval_ms;
	} data;

	struct {
		char *dir; /* required by config_validate */
		bool allow_other;
		bool debug;
		bool passthrough; /* ours, default false: FUSE passthrough of -journal (docs/mount.md) */
		bool uring;       /* ours, default false: FUSE requests through io_uring (docs/mount.md) */
	} fuse;

	struct {
		char *addr; /* default ":20202" */
		int64_t snapshot_timeout_ms; /* 0: the server's default */
		char *secret; /* ours: shared secret of node-to-node requests; "" = off */
	} http;

	struct {
		char *addr;
		char *target; /* the proxy is off while this is "" */
		char *db;
		int64_t max_lag_ms;
		bool debug;
		struct config_strlist passthrough;
		struct config_strlist always_forward;
		int64_t primary_redirect_timeout_ms;
		int64_t read_timeout_ms;
		int64_t read_header_timeout_ms;
		int64_t write_timeout_ms;
		int64_t idle_timeout_ms;
		/* Ours (docs/proxy.md): the URL other nodes forward writes to
		 * ("" : derived from lease.advertise-url's host and addr's port),
		 * how long a read waits for the __txid cookie's position, and
		 * fly-replay instead of forwarding. */
		char *advertise_url;
		int64_t txid_timeout_ms;
		bool fly_replay;
	} proxy;

	struct {
		char *type; /* "static" (default), "consul" or "etcd" */
		char *hostname;
		char *advertise_url;
		bool candidate; /* default true */
		bool promote;
		int64_t reconnect_delay_ms;
		int64_t demote_delay_ms;
		struct config_strlist databases;
		/* Synchronous replication (our addition; docs/replication.md):
		 * a commit on the primary returns once this many replicas hold
		 * it durably (0: off, LiteFS's asynchronous behaviour), waiting
		 * at most sync_timeout_ms, after which sync_on_timeout "async"
		 * (default) returns it and degrades to asynchronous replication
		 * until the replicas catch up, and "fail" fails it. */
		int64_t sync_replicas;
		int64_t sync_timeout_ms;
		char *sync_on_timeout;
		struct {
			char *url;
			char *key;
			int64_t ttl_ms;        /* an explicit 0 means the default, as in LiteFS */
			int64_t lock_delay_ms; /* likewise */
		} consul;
		struct {
			struct config_strlist endpoints; /* "http://127.0.0.1:2379", ... */
			char *key;
			int64_t ttl_ms;
			char *username;          /* "": no authentication */
			char *password;
			char *ca_file;           /* https endpoints: CA bundle ("": the system's) */
			char *cert_file;         /* https endpoints: client certificate */
			char *key_file;          /* and its key */
			int64_t catch_up_timeout_ms; /* 0: a candidate behind another node never takes over */
		} etcd;
	} lease;

	struct {
		char *type; /* "", "file" or "litefs-cloud" */
		char *path;
		char *url;
		char *cluster;
		char *auth_token;
		int64_t delay_ms;              /* ours as a key */
		int64_t full_sync_interval_ms; /* ours as a key */
	} backup;

	struct {
		char *format; /* "text" (default) or "json" */
		bool timestamp;
		bool debug;
	} log;

	struct {
		bool enabled; /* default true; only acts when path is set */
		char *path;
		int64_t max_size;  /* MB */
		int64_t max_count;
		bool compress; /* default true */
	} tracing;

	/* Every key the file set (scalars and lists), in file order. */
	struct config_keyline *keylines;
	size_t n_keylines;

	/* Messages about a valid file worth reading ("name:line: ..."): exec
	 * keys that are ignored, `{VAR}` missing its `$`, data.dir inside
	 * fuse.dir, a proxy without target. */
	char **warnings;
	size_t n_warnings;
};

/* Fills cfg with the defaults. Returns 0 or ERR_NOMEM (then cfg holds
 * nothing). Caller frees with config_free(). */
int config_init(struct config *cfg);

/* Frees everything cfg owns and zeroes it. NULL and zeroed structs are
 * no-ops; calling it twice is safe. */
void config_free(struct config *cfg);

/*
 * Parses text[0..len) (which need not be NUL-terminated) into cfg, which
 * this function initializes (any previous content is NOT freed). `name`
 * prefixes messages ("litefs.yml:7: ..."). When expand_env is true the
 * text is expanded first with getenv_fn/env_ctx (getenv_fn NULL means
 * goenv_getenv_process).
 *
 * Returns 0; ERR_CONFIG with every problem found (one per line, up to 16)
 * in errbuf; ERR_NOMEM. On failure cfg holds nothing (config_free is still
 * safe). errbuf may be NULL when errlen is 0.
 */
int config_parse(const char *text, size_t len, const char *name, bool expand_env,
		 goenv_getenv_fn getenv_fn, void *env_ctx, struct config *cfg,
		 char *errbuf, size_t errlen);

/*
 * Reads `path` and parses it with the process environment. Returns what
 * config_parse returns, or a negative errno when the file cannot be read
 * (message in errbuf), or ERR_CONFIG when it is larger than
 * CONFIG_MAX_FILE_SIZE. Messages use `path` as given.
 */
int config_load_file(const char *path, bool expand_env, struct config *cfg,
		     char *errbuf, size_t errlen);

/*
 * Chooses the file to read, as LiteFS does: explicit_path if non-NULL and
 * non-empty (not checked for existence); otherwise the first that exists
 * of ./litefs.yml (made absolute), ~/litefs.yml (the user's home directory
 * from the password database, else $HOME), /etc/litefs.yml.
 * Returns 0 with the path in out; -ENOENT when none exists; another
 * negative errno when a candidate exists but cannot be examined (its path
 * is in out); -ENAMETOOLONG when out is too small.
 */
int config_find(const char *explicit_path, char *out, size_t outlen);

/*
 * Applies the environment settings LiteFS reads outside the file, whatever
 * -no-expand-env says: LITEFS_CLOUD_TOKEN (when backup.type is "" or
 * "litefs-cloud": sets the type, and the token unless auth-token is set)
 * and LITEFS_CLOUD_ENDPOINT (ours: backup.url unless set); then defaults
 * backup.url for litefs-cloud; LITEFS_SECRET (ours) sets http.secret when
 * the file left it empty. getenv_fn NULL means the process
 * environment. Returns 0 or ERR_NOMEM.
 */
int config_apply_env(struct config *cfg, goenv_getenv_fn getenv_fn, void *env_ctx);

/*
 * Semantic checks for `litefs mount`: fuse.dir and data.dir set and
 * different; lease.type known, with what it needs (consul key, etcd
 * endpoints); no lease.databases on a candidate; addresses are host:port;
 * durations >= 0 and intervals > 0; log.format, backup.type known; every
 * exec cmd splits into arguments (base/shellwords.h) with no unquoted
 * shell operator; for one, the message (several lines) shows the
 * if-primary/list form or `sh -c` to write instead. Returns 0 or
 * ERR_CONFIG with every problem found in errbuf ("name:line: path:
 * message" when the key has a line, "name: path: message" otherwise).
 */
int config_validate(const struct config *cfg, char *errbuf, size_t errlen);

/* A configured feature this build does not implement. */
struct config_issue {
	const char *msg; /* static string, e.g. "proxy is not supported yet" (the consul
	                  * message, which quotes the file, is valid until the next call) */
	bool fatal;      /* true: `litefs mount` must refuse; false: it is ignored */
};

/* Fills up to max issues for what cfg asks and this build cannot do;
 * returns how many there are (possibly more than max). */
size_t config_unsupported(const struct config *cfg, struct config_issue *out, size_t max);

/* Line where `path` ("lease.type") was set, or 0 if it was not. */
int config_key_line(const struct config *cfg, const char *path);

/*
 * Writes the effective configuration, defaults included, as YAML that
 * config_parse reads back to the same values (with expand_env false).
 * backup.auth-token and http.secret are printed as "<redacted>" when set.
 */
void config_print(const struct config *cfg, FILE *out);

#endif
