/*
 * test_config.c — litefs.yml parsing, expansion, validation, printing.
 * The Go-compatible pieces it is built on have their own tests:
 * test_goenv.c, test_yamltree.c, test_godur.c, test_shellwords.c.
 *
 * The real-world corpus is read from $LITEFS_TESTDATA/real-configs, or
 * ../shared/testdata/real-configs relative to the repository root (the
 * directory the tests run from). Every file is parsed twice: with an empty
 * environment and with a Fly.io-like one, through the injectable getenv,
 * so the process environment is never touched.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#include "base/err.h"
#include "base/shellwords.h"
#include "node/config.h"

/* ------------------------------------------------------------------ */
/* Fake environments.                                                  */

static const struct env_var fly_vars[] = {
	{ "FLY_REGION", "ord" },
	{ "PRIMARY_REGION", "ord" },
	{ "FLY_APP_NAME", "myapp" },
	{ "FLY_ALLOC_ID", "148e21ea7a5e89" },
	{ "HOSTNAME", "148e21ea7a5e89" },
	{ "FLY_CONSUL_URL", "https://:token@consul-fra.fly-shared.net/myapp-xyz/" },
	{ "FLY_PROCESS_GROUP", "app" },
	{ "INTERNAL_PORT", "8080" },
	{ "PORT", "8081" },
	{ "LITEFS_DIR", "/litefs" },
	{ "DATABASE_FILENAME", "sqlite.db" },
	{ "DATABASE_PATH", "/litefs/sqlite.db" },
	{ "CACHE_DATABASE_PATH", "/litefs/cache.db" },
	{ "QUEUE_DATABASE_PATH", "/litefs/queue.db" },
	{ "DATA_DIR", "/data" },
};

static struct fake_env env_empty = { NULL, 0 };
static struct fake_env env_fly = { fly_vars, sizeof(fly_vars) / sizeof(fly_vars[0]) };

/* ------------------------------------------------------------------ */
/* Helpers.                                                            */

static char errbuf[16384];

static int parse_env(const char *text, struct fake_env *env, struct config *cfg)
{
	return config_parse(text, strlen(text), "t.yml", true, fake_getenv, env, cfg, errbuf, sizeof(errbuf));
}

static int parse(const char *text, struct config *cfg)
{
	return parse_env(text, &env_empty, cfg);
}

/* Parses text expecting failure; asserts errbuf contains every needle. */
static void expect_error(const char *text, ...)
{
	struct config cfg;
	int rc = parse(text, &cfg);
	if (rc != ERR_CONFIG)
		fail_msg("expected ERR_CONFIG for:\n%s\ngot %d", text, rc);
	va_list ap;
	va_start(ap, text);
	for (const char *needle = va_arg(ap, const char *); needle; needle = va_arg(ap, const char *))
		if (!strstr(errbuf, needle))
			fail_msg("error for:\n%s\nis:\n%s\nwhich lacks: %s", text, errbuf, needle);
	va_end(ap);
	config_free(&cfg);
}

/* Parses text expecting success, then validation failure naming needle. */
static void expect_invalid(const char *text, const char *needle)
{
	struct config cfg;
	if (parse(text, &cfg) != 0)
		fail_msg("parse failed for:\n%s\n%s", text, errbuf);
	int rc = config_validate(&cfg, errbuf, sizeof(errbuf));
	if (rc != ERR_CONFIG)
		fail_msg("expected validation failure for:\n%s", text);
	if (!strstr(errbuf, needle))
		fail_msg("validation error for:\n%s\nis:\n%s\nwhich lacks: %s", text, errbuf, needle);
	config_free(&cfg);
}

static const char *testdata_dir(void)
{
	const char *d = getenv("LITEFS_TESTDATA");
	return d && d[0] ? d : "../shared/testdata";
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(CONFIG_MAX_FILE_SIZE + 1);
	size_t n = buf ? fread(buf, 1, CONFIG_MAX_FILE_SIZE, f) : 0;
	fclose(f);
	if (buf)
		buf[n] = '\0';
	*len = n;
	return buf;
}

/* File names of the corpus, by number (1..40). */
static char corpus_names[41][256];

static const char *corpus_path(int num, char *buf, size_t len)
{
	snprintf(buf, len, "%s/real-configs/%s", testdata_dir(), corpus_names[num]);
	return buf;
}

static int corpus_setup(void **state)
{
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/real-configs", testdata_dir());
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "cannot open %s (set LITEFS_TESTDATA): %s\n", dir, strerror(errno));
		return -1;
	}
	int found = 0;
	for (struct dirent *de; (de = readdir(d));) {
		int num;
		size_t n = strlen(de->d_name);
		if (sscanf(de->d_name, "%d-", &num) == 1 && num >= 1 && num <= 40 && n < sizeof(corpus_names[0]) &&
		    !corpus_names[num][0]) {
			memcpy(corpus_names[num], de->d_name, n + 1);
			found++;
		}
	}
	closedir(d);
	if (found != 40) {
		fprintf(stderr, "expected 40 corpus files in %s, found %d\n", dir, found);
		return -1;
	}
	return 0;
}

/* Parses corpus file num with env; returns config_parse's result. */
static int parse_corpus(int num, struct fake_env *env, struct config *cfg)
{
	char path[600];
	size_t len = 0;
	char *text = read_all(corpus_path(num, path, sizeof(path)), &len);
	assert_non_null(text);
	int rc = config_parse(text, len, corpus_names[num], true, fake_getenv, env, cfg, errbuf, sizeof(errbuf));
	free(text);
	return rc;
}

static void load_corpus_ok(int num, struct fake_env *env, struct config *cfg)
{
	int rc = parse_corpus(num, env, cfg);
	if (rc != 0)
		fail_msg("%s: expected to parse, got %d: %s", corpus_names[num], rc, errbuf);
}

/* ------------------------------------------------------------------ */
/* The real-world corpus.                                              */

static void test_corpus_accepted(void **state)
{
	struct fake_env *envs[] = { &env_empty, &env_fly };
	for (int num = 1; num <= 28; num++) {
		for (size_t e = 0; e < 2; e++) {
			struct config cfg;
			load_corpus_ok(num, envs[e], &cfg);
			/* With real values in the environment, every accepted file
			 * is also valid for `litefs mount`. */
			if (envs[e] == &env_fly && config_validate(&cfg, errbuf, sizeof(errbuf)) != 0)
				fail_msg("%s: expected valid in the Fly env: %s", corpus_names[num], errbuf);
			config_free(&cfg);
		}
	}
}

struct rejection {
	int num;
	int line;
	const char *text; /* what the message must contain after "name:line: " */
};

/* From the corpus README's table: the key named and its line. */
static const struct rejection rejections[] = {
	{ 29, 4, "unknown key \"mount-dir\"" },
	{ 29, 10, "unknown key \"data-dir\"" },
	{ 29, 19, "unknown key \"candidate\"" },
	{ 29, 23, "unknown key \"debug\"" },
	{ 29, 29, "unknown key \"retention\"" },
	{ 29, 44, "unknown key \"consul\"" },
	{ 29, 73, "unknown key \"static\"" },
	{ 30, 1, "unknown key \"mount-dir\"" },
	{ 30, 2, "unknown key \"debug\"" },
	{ 30, 7, "unknown key \"consul\"" },
	{ 31, 2, "unknown key \"mount-dir\"" },
	{ 31, 5, "unknown key \"static\"" },
	{ 32, 2, "unknown key \"mount-dir\"" },
	{ 32, 5, "unknown key \"data-dir\"" },
	{ 32, 12, "unknown key \"consul\"" },
	{ 33, 1, "unknown key \"mount-dir\"" },
	{ 33, 6, "unknown key \"consul\"" },
	{ 34, 1, "unknown key \"mount-dir\"" },
	{ 34, 2, "unknown key \"data-dir\"" },
	{ 35, 16, "unknown key \"consul\"" },
	{ 36, 4, "unknown key \"mount\"" },
	{ 37, 15, "unknown key \"rules\"" },
	{ 38, 24, "unknown key \"lease.timeout\"" },
	{ 38, 28, "unknown key \"skip-sync-on-start\"" },
	{ 39, 21, "exec[1].cmd: expected a string, got a list" },
	{ 40, 26, "lease.candidate: expected a boolean" },
};

static void test_corpus_rejected(void **state)
{
	struct fake_env *envs[] = { &env_empty, &env_fly };
	for (int num = 29; num <= 40; num++) {
		for (size_t e = 0; e < 2; e++) {
			struct config cfg;
			int rc = parse_corpus(num, envs[e], &cfg);
			if (rc != ERR_CONFIG)
				fail_msg("%s: expected rejection, got %d", corpus_names[num], rc);
			int n_expected = 0, n_lines = 1;
			for (const char *p = errbuf; *p; p++)
				n_lines += *p == '\n';
			for (size_t i = 0; i < sizeof(rejections) / sizeof(rejections[0]); i++) {
				if (rejections[i].num != num)
					continue;
				n_expected++;
				char want[400];
				snprintf(want, sizeof(want), "%s:%d: %s", corpus_names[num], rejections[i].line,
					 rejections[i].text);
				if (!strstr(errbuf, want))
					fail_msg("%s: message lacks [%s]:\n%s", corpus_names[num], want, errbuf);
			}
			assert_true(n_expected > 0);
			/* Nothing else is reported. */
			if (n_lines != n_expected)
				fail_msg("%s: %d problems expected, message has %d lines:\n%s", corpus_names[num],
					 n_expected, n_lines, errbuf);
			config_free(&cfg);
		}
	}
}

/* Pre-0.4 keys are refused with their new spelling. */
static void test_corpus_legacy_hints(void **state)
{
	struct config cfg;
	assert_int_equal(parse_corpus(29, &env_empty, &cfg), ERR_CONFIG);
	const char *needles[] = {
		"\"mount-dir\" (pre-0.4 layout; now spelled fuse.dir)",
		"\"data-dir\" (pre-0.4 layout; now spelled data.dir)",
		"\"candidate\" (pre-0.4 layout; now spelled lease.candidate)",
		"now lease.consul", "with lease.type: consul",
		"now lease.type: static with lease.candidate (was static.primary)",
		"data.retention (was retention.duration)",
	};
	for (size_t i = 0; i < sizeof(needles) / sizeof(needles[0]); i++)
		if (!strstr(errbuf, needles[i]))
			fail_msg("lacks [%s]:\n%s", needles[i], errbuf);
	config_free(&cfg);
}

static void test_corpus_values(void **state)
{
	struct config cfg;
	struct env_var vars[4];
	struct fake_env env = { vars, 0 };

	/* 01: the official sample. */
	load_corpus_ok(1, &env_empty, &cfg);
	assert_string_equal(cfg.fuse.dir, "/litefs");
	assert_string_equal(cfg.data.dir, "/var/lib/litefs");
	assert_int_equal(cfg.n_exec, 1);
	assert_string_equal(cfg.exec[0].cmd, "myapp -addr :8081");
	assert_false(cfg.exit_on_error);
	assert_int_equal(cfg.proxy.passthrough.n, 2);
	assert_string_equal(cfg.proxy.passthrough.items[0], "/debug/*");
	assert_string_equal(cfg.proxy.passthrough.items[1], "*.png");
	assert_string_equal(cfg.lease.type, "consul");
	assert_int_equal(cfg.lease.consul.ttl_ms, 10000);
	assert_int_equal(cfg.lease.consul.lock_delay_ms, 1000);
	assert_int_equal(cfg.tracing.max_size, 64);
	assert_int_equal(cfg.tracing.max_count, 10);
	assert_true(cfg.tracing.compress);
	assert_int_equal(cfg.data.retention_ms, 600000);
	config_free(&cfg);

	/* 02: candidate: $IS_PRIMARY; unset means null, so the default stays. */
	load_corpus_ok(2, &env_empty, &cfg);
	assert_true(cfg.lease.candidate);
	assert_string_equal(cfg.lease.type, "static");
	assert_int_equal(config_key_line(&cfg, "lease.type"), 23);
	config_free(&cfg);
	vars[0] = (struct env_var){ "IS_PRIMARY", "false" };
	env.n = 1;
	load_corpus_ok(2, &env, &cfg);
	assert_false(cfg.lease.candidate);
	config_free(&cfg);

	/* 03: ${FLY_REGION == PRIMARY_REGION}: equal when both are unset too. */
	load_corpus_ok(3, &env_empty, &cfg);
	assert_true(cfg.lease.candidate);
	assert_true(cfg.exec[0].if_candidate);
	assert_false(cfg.exec[1].if_candidate);
	config_free(&cfg);
	vars[0] = (struct env_var){ "FLY_REGION", "ams" };
	vars[1] = (struct env_var){ "PRIMARY_REGION", "ord" };
	env.n = 2;
	load_corpus_ok(3, &env, &cfg);
	assert_false(cfg.lease.candidate);
	config_free(&cfg);
	load_corpus_ok(3, &env_fly, &cfg);
	assert_true(cfg.lease.candidate);
	assert_string_equal(cfg.lease.advertise_url, "http://148e21ea7a5e89.vm.myapp.internal:20202");
	assert_string_equal(cfg.lease.consul.key, "myapp/primary");
	config_free(&cfg);

	/* 04 and 05: proxy keys. */
	load_corpus_ok(4, &env_fly, &cfg);
	assert_int_equal(cfg.proxy.primary_redirect_timeout_ms, 5000);
	assert_string_equal(cfg.proxy.db, "data.db");
	config_free(&cfg);
	load_corpus_ok(5, &env_fly, &cfg);
	assert_int_equal(cfg.proxy.always_forward.n, 1);
	assert_string_equal(cfg.proxy.always_forward.items[0], "^/always-write");
	config_free(&cfg);

	/* 06: backup, and "{ANDASY_APP}" missing its "$" is kept and warned about. */
	load_corpus_ok(6, &env_empty, &cfg);
	assert_string_equal(cfg.backup.type, "litefs-cloud");
	assert_string_equal(cfg.backup.url, "https://litefs.fly.io");
	assert_string_equal(cfg.backup.auth_token, "");
	assert_string_equal(cfg.lease.advertise_url, "http://{ANDASY_APP}.internal:20202");
	assert_int_equal(cfg.n_warnings, 1);
	assert_non_null(strstr(cfg.warnings[0], ":35: lease.advertise-url: \"{ANDASY_APP}\""));
	config_free(&cfg);

	/* 07: an unquoted scalar built from variables. */
	load_corpus_ok(7, &env_fly, &cfg);
	assert_string_equal(cfg.lease.hostname, "ord.myapp.internal");
	assert_string_equal(cfg.exec[0].cmd, "headscale serve");
	config_free(&cfg);

	/* 08: a bare $VAR for http.addr that is unset keeps the default. */
	load_corpus_ok(8, &env_empty, &cfg);
	assert_string_equal(cfg.http.addr, ":20202");
	assert_int_equal(cfg.lease.sync_replicas, 0);
	assert_int_equal(cfg.lease.sync_timeout_ms, 5000);
	assert_string_equal(cfg.lease.sync_on_timeout, "async");
	assert_true(cfg.lease.candidate);
	assert_int_equal(cfg.n_exec, 0);
	config_free(&cfg);

	/* 09: retention: 60m, and a double-quoted expression literal. */
	load_corpus_ok(9, &env_empty, &cfg);
	assert_int_equal(cfg.data.retention_ms, 3600000);
	assert_string_equal(cfg.data.dir, "/litefs");
	assert_false(cfg.lease.candidate);
	config_free(&cfg);
	vars[0] = (struct env_var){ "FLY_PROCESS_GROUP", "manager" };
	env.n = 1;
	load_corpus_ok(9, &env, &cfg);
	assert_true(cfg.lease.candidate);
	config_free(&cfg);

	/* 10: ${PODS > 0} is looked up as a variable named "PODS > 0". */
	load_corpus_ok(10, &env_empty, &cfg);
	assert_true(cfg.lease.candidate);
	config_free(&cfg);
	vars[0] = (struct env_var){ "PODS > 0", "false" };
	env.n = 1;
	load_corpus_ok(10, &env, &cfg);
	assert_false(cfg.lease.candidate);
	config_free(&cfg);

	/* 11: plain scalars, one starting with ':'. */
	load_corpus_ok(11, &env_empty, &cfg);
	assert_string_equal(cfg.proxy.addr, ":8080");
	assert_string_equal(cfg.lease.consul.url, "http://10.0.0.2:8500");
	assert_string_equal(cfg.lease.advertise_url, "");
	assert_int_equal(cfg.n_exec, 3);
	assert_string_equal(cfg.exec[0].cmd, "litefs run -promote -- bin/rails db:prepare");
	config_free(&cfg);

	/* 12: quoted durations. */
	load_corpus_ok(12, &env_empty, &cfg);
	assert_int_equal(cfg.data.retention_ms, 3600000);
	assert_int_equal(cfg.data.retention_monitor_interval_ms, 300000);
	assert_string_equal(cfg.http.addr, "127.0.0.1:20202");
	assert_true(cfg.fuse.allow_other);
	config_free(&cfg);

	/* 13: nested single quotes in a cmd split into arguments. */
	load_corpus_ok(13, &env_empty, &cfg);
	assert_int_equal(cfg.proxy.passthrough.n, 7);
	char **argv;
	size_t argc;
	assert_int_equal(shellwords_split(cfg.exec[0].cmd, &argv, &argc, errbuf, sizeof(errbuf)), 0);
	assert_int_equal(argc, 6);
	assert_string_equal(argv[4], "uvicorn friendlyface.api.app:app --host 0.0.0.0 --port 8000");
	assert_string_equal(argv[5], "ffuser");
	shellwords_free(argv);
	config_free(&cfg);

	/* 14: 4-space indentation. */
	load_corpus_ok(14, &env_fly, &cfg);
	assert_string_equal(cfg.fuse.dir, "/var/www/html/storage/database");
	assert_string_equal(cfg.lease.consul.key, "litefs/myapp");
	assert_true(cfg.lease.candidate);
	config_free(&cfg);

	/* 15: hostname "" and a double-quoted literal. */
	load_corpus_ok(15, &env_empty, &cfg);
	assert_string_equal(cfg.lease.hostname, "");
	assert_int_not_equal(config_key_line(&cfg, "lease.hostname"), 0);
	assert_false(cfg.lease.candidate);
	assert_false(cfg.exit_on_error);
	assert_false(cfg.skip_sync);
	assert_int_equal(cfg.lease.databases.n, 0);
	config_free(&cfg);
	vars[0] = (struct env_var){ "MY_REGION", "primary" };
	env.n = 1;
	load_corpus_ok(15, &env, &cfg);
	assert_true(cfg.lease.candidate);
	config_free(&cfg);

	/* 17: no lease section: static by default; data.dir inside fuse.dir warns. */
	load_corpus_ok(17, &env_empty, &cfg);
	assert_string_equal(cfg.lease.type, "static");
	assert_int_equal(cfg.n_warnings, 1);
	assert_non_null(strstr(cfg.warnings[0], "inside fuse.dir"));
	config_free(&cfg);

	/* 19: bare $VAR inside a plain cmd; 3 of 4 items if-candidate. */
	load_corpus_ok(19, &env_fly, &cfg);
	assert_int_equal(cfg.n_exec, 4);
	assert_string_equal(cfg.exec[1].cmd, "sqlite3 /litefs/sqlite.db \"PRAGMA journal_mode = WAL;\"");
	assert_true(cfg.exec[0].if_candidate && cfg.exec[1].if_candidate && cfg.exec[2].if_candidate);
	assert_false(cfg.exec[3].if_candidate);
	assert_string_equal(cfg.exec[3].cmd, "npm start");
	assert_string_equal(cfg.proxy.addr, ":8080");
	config_free(&cfg);

	/* 20: escaped quotes inside double quotes. */
	load_corpus_ok(20, &env_empty, &cfg);
	assert_string_equal(cfg.exec[0].cmd, "dotnet \"Battle Spells.Api.dll\"");
	assert_int_equal(shellwords_split(cfg.exec[0].cmd, &argv, &argc, errbuf, sizeof(errbuf)), 0);
	assert_int_equal(argc, 2);
	assert_string_equal(argv[1], "Battle Spells.Api.dll");
	shellwords_free(argv);
	config_free(&cfg);

	/* 21: ${FLY_REGION == 'den'} with a single-quoted literal. */
	load_corpus_ok(21, &env_empty, &cfg);
	assert_false(cfg.lease.candidate);
	assert_string_equal(cfg.proxy.addr, ":");
	config_free(&cfg);
	load_corpus_ok(21, &env_fly, &cfg);
	assert_false(cfg.lease.candidate);
	assert_string_equal(cfg.proxy.addr, ":8080");
	assert_string_equal(cfg.proxy.target, "localhost:8081");
	assert_int_equal(cfg.proxy.passthrough.n, 9);
	assert_string_equal(cfg.proxy.passthrough.items[8], "__metronome");
	config_free(&cfg);
	vars[0] = (struct env_var){ "FLY_REGION", "den" };
	env.n = 1;
	load_corpus_ok(21, &env, &cfg);
	assert_true(cfg.lease.candidate);
	config_free(&cfg);

	/* 22: candidate: false. 23: passthrough: []. */
	load_corpus_ok(22, &env_fly, &cfg);
	assert_false(cfg.lease.candidate);
	config_free(&cfg);
	load_corpus_ok(23, &env_fly, &cfg);
	assert_int_equal(cfg.proxy.passthrough.n, 0);
	assert_true(cfg.exec[0].if_candidate);
	config_free(&cfg);

	/* 24: inline comments with accents. */
	load_corpus_ok(24, &env_fly, &cfg);
	assert_string_equal(cfg.fuse.dir, "/litefs");
	assert_string_equal(cfg.proxy.target, "localhost:5000");
	assert_true(cfg.lease.promote);
	config_free(&cfg);

	/* 26: "passthrough: " with a trailing space, then a block list. */
	load_corpus_ok(26, &env_fly, &cfg);
	assert_int_equal(cfg.proxy.passthrough.n, 2);
	config_free(&cfg);

	/* 27: CRLF line endings leave no '\r' in values; lines still count. */
	load_corpus_ok(27, &env_empty, &cfg);
	assert_true(cfg.exit_on_error);
	assert_string_equal(cfg.data.dir, "/pds/data-litefs-persist");
	assert_string_equal(cfg.lease.advertise_url, "http://primary:20202");
	assert_true(cfg.lease.candidate);
	assert_int_equal(config_key_line(&cfg, "lease.type"), 13);
	config_free(&cfg);

	/* 28: if-primary is ours and parsed; it is not an ignored key here. */
	load_corpus_ok(28, &env_fly, &cfg);
	assert_int_equal(cfg.n_exec, 2);
	assert_true(cfg.exec[0].if_primary);
	assert_false(cfg.exec[0].if_candidate);
	assert_false(cfg.exec[1].if_primary);
	assert_true(cfg.exec[1].if_candidate);
	assert_int_equal(cfg.n_warnings, 0);
	config_free(&cfg);
}

/* The printed configuration parses back to the same configuration. */
static void test_corpus_print_roundtrip(void **state)
{
	for (int num = 1; num <= 28; num++) {
		struct config a, b;
		load_corpus_ok(num, &env_fly, &a);
		char *p1 = NULL, *p2 = NULL;
		size_t n1 = 0, n2 = 0;
		FILE *f = open_memstream(&p1, &n1);
		config_print(&a, f);
		fclose(f);
		if (config_parse(p1, n1, "printed", false, NULL, NULL, &b, errbuf, sizeof(errbuf)) != 0)
			fail_msg("%s: printed config does not parse: %s\n%s", corpus_names[num], errbuf, p1);
		f = open_memstream(&p2, &n2);
		config_print(&b, f);
		fclose(f);
		assert_string_equal(p1, p2);
		assert_int_equal(config_validate(&b, errbuf, sizeof(errbuf)), 0);
		free(p1);
		free(p2);
		config_free(&a);
		config_free(&b);
	}
}

/* ------------------------------------------------------------------ */
/* Environment expansion (the expansion itself: test_goenv.c).         */

/* Line numbers refer to the file as written even when an expansion adds
 * or removes line breaks. */
static void test_expand_line_numbers(void **state)
{
	static const struct env_var vars[] = { { "X", "1\n# 2\n# 3" }, { "Y", "\"oops\n\n" } };
	struct fake_env env = { vars, 2 };
	struct config cfg;
	assert_int_equal(parse_env("# ${X}\nfuse:\n  dir: /litefs\nbogus: 1\n", &env, &cfg), ERR_CONFIG);
	assert_non_null(strstr(errbuf, "t.yml:4: unknown key \"bogus\""));
	config_free(&cfg);
	/* A syntax error inside an expanded value points at the line of the
	 * reference. */
	assert_int_equal(parse_env("fuse:\n  dir: /litefs\ndata: $Y\n", &env, &cfg), ERR_CONFIG);
	assert_non_null(strstr(errbuf, "while scanning a quoted scalar that began at line 3)"));
	config_free(&cfg);
	/* A "${" whose "}" is on a later line eats the lines between. */
	assert_int_equal(parse_env("# ${\n# }\nfuse:\n  dir: /x\nbogus: 1\n", &env, &cfg), ERR_CONFIG);
	assert_non_null(strstr(errbuf, "t.yml:5: unknown key \"bogus\""));
	config_free(&cfg);
	/* Without expansion the text is taken as is. */
	assert_int_equal(config_parse("k: $X\n", 6, "t.yml", false, fake_getenv, &env, &cfg, errbuf, sizeof(errbuf)),
			 ERR_CONFIG);
	assert_non_null(strstr(errbuf, "t.yml:1: unknown key \"k\""));
	config_free(&cfg);
	assert_int_equal(config_parse("fuse:\n  dir: $X\n", 16, "t.yml", false, NULL, NULL, &cfg, errbuf,
				      sizeof(errbuf)),
			 0);
	assert_string_equal(cfg.fuse.dir, "$X");
	config_free(&cfg);
}


/* ------------------------------------------------------------------ */
/* Decoding.                                                           */

static void test_defaults(void **state)
{
	struct config cfg;
	assert_int_equal(parse("fuse:\n  dir: /litefs\n", &cfg), 0);
	assert_true(cfg.exit_on_error);
	assert_false(cfg.skip_sync);
	assert_true(cfg.data.compress);
	assert_false(cfg.fuse.passthrough); /* opt-in: docs/mount.md */
	assert_int_equal(cfg.data.retention_ms, 600000);
	assert_int_equal(cfg.data.retention_monitor_interval_ms, 60000);
	assert_string_equal(cfg.http.addr, ":20202");
	assert_string_equal(cfg.lease.type, "static");
	assert_true(cfg.lease.candidate);
	assert_int_equal(cfg.lease.reconnect_delay_ms, 1000);
	assert_int_equal(cfg.lease.demote_delay_ms, 10000);
	assert_int_equal(cfg.proxy.max_lag_ms, 10000);
	assert_string_equal(cfg.log.format, "text");
	assert_true(cfg.tracing.enabled);
	assert_int_equal(cfg.tracing.max_size, 64);
	assert_int_equal(cfg.tracing.max_count, 8);
	assert_string_equal(cfg.data.dir, "");
	assert_string_equal(cfg.name, "t.yml");
	config_free(&cfg);
	config_free(&cfg); /* twice is fine */
	config_free(NULL);

	/* null keeps defaults; an explicit value overrides them. */
	assert_int_equal(parse("data:\n  compress:\n  retention: ~\nlease:\n  candidate: null\n"
			       "exit-on-error: false\n",
			       &cfg),
			 0);
	assert_true(cfg.data.compress);
	assert_int_equal(cfg.data.retention_ms, 600000);
	assert_true(cfg.lease.candidate);
	assert_false(cfg.exit_on_error);
	config_free(&cfg);

	/* Consul's TTL and lock delay: 0 means the default, as in LiteFS. */
	assert_int_equal(parse("lease:\n  consul:\n    ttl: \"0s\"\n    lock-delay: \"0\"\n", &cfg), 0);
	assert_int_equal(cfg.lease.consul.ttl_ms, 10000);
	assert_int_equal(cfg.lease.consul.lock_delay_ms, 1000);
	config_free(&cfg);

	/* A document that is only "---" (a null root) is all defaults. */
	assert_int_equal(parse("---\n", &cfg), 0);
	config_free(&cfg);
}

/* Sets lease.hostname to s; true if printing and parsing give s back. */
static bool set_and_roundtrip(struct config *cfg, const char *s)
{
	char *saved = cfg->lease.hostname;
	cfg->lease.hostname = (char *)s;
	char *p = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&p, &n);
	config_print(cfg, f);
	fclose(f);
	cfg->lease.hostname = saved;
	struct config b;
	bool ok = config_parse(p, n, "p", false, NULL, NULL, &b, errbuf, sizeof(errbuf)) == 0 &&
		  !strcmp(b.lease.hostname, s);
	free(p);
	config_free(&b);
	return ok;
}

static void test_every_key(void **state)
{
	static const char text[] =
		"exit-on-error: false\n"
		"skip-sync: true\n"
		"strict-verify: true\n"
		"exec:\n"
		"  - cmd: migrate\n"
		"    if-candidate: true\n"
		"  - cmd: worker\n"
		"    if-primary: true\n"
		"  - cmd: app serve\n"
		"data:\n"
		"  dir: /var/lib/litefs\n"
		"  compress: false\n"
		"  retention: 20m\n"
		"  retention-monitor-interval: 30s\n"
		"fuse:\n"
		"  dir: /litefs\n"
		"  allow-other: true\n"
		"  debug: true\n"
		"  passthrough: false\n"
		"http:\n"
		"  addr: 127.0.0.1:20203\n"
		"  snapshot-timeout: 2m\n"
		"proxy:\n"
		"  addr: :8080\n"
		"  target: localhost:8081\n"
		"  db: app.db\n"
		"  max-lag: 5s\n"
		"  debug: true\n"
		"  passthrough: [\"*.png\", \"/static/*\"]\n"
		"  always-forward: [\"/login\"]\n"
		"  primary-redirect-timeout: 3s\n"
		"  read-timeout: 1s\n"
		"  read-header-timeout: 2s\n"
		"  write-timeout: 3s\n"
		"  idle-timeout: 4s\n"
		"lease:\n"
		"  type: etcd\n"
		"  hostname: node1\n"
		"  advertise-url: http://node1:20202\n"
		"  candidate: false\n"
		"  promote: true\n"
		"  reconnect-delay: 2s\n"
		"  demote-delay: 20s\n"
		"  databases: [app.db, other.db]\n"
		"  sync-replicas: 2\n"
		"  sync-timeout: 750ms\n"
		"  sync-on-timeout: fail\n"
		"  consul:\n"
		"    url: http://consul:8500\n"
		"    key: litefs/primary\n"
		"    ttl: 15s\n"
		"    lock-delay: 2s\n"
		"  etcd:\n"
		"    endpoints: [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]\n"
		"    key: clusters/a/primary\n"
		"    ttl: 5s\n"
		"backup:\n"
		"  type: litefs-cloud\n"
		"  path: /backup\n"
		"  url: http://127.0.0.1:9000\n"
		"  cluster: prod\n"
		"  auth-token: secret\n"
		"  delay: 250ms\n"
		"  full-sync-interval: 1m\n"
		"log:\n"
		"  format: json\n"
		"  timestamp: true\n"
		"  debug: true\n"
		"tracing:\n"
		"  enabled: false\n"
		"  path: /var/log/trace.log\n"
		"  max-size: 0x10\n"
		"  max-count: 3\n"
		"  compress: false\n";
	struct config cfg;
	if (parse(text, &cfg) != 0)
		fail_msg("%s", errbuf);
	assert_false(cfg.exit_on_error);
	assert_true(cfg.skip_sync);
	assert_true(cfg.strict_verify);
	assert_int_equal(cfg.n_exec, 3);
	assert_true(cfg.exec[0].if_candidate);
	assert_true(cfg.exec[1].if_primary);
	assert_string_equal(cfg.exec[2].cmd, "app serve");
	assert_int_equal(cfg.exec[2].line, 9);
	assert_false(cfg.data.compress);
	assert_int_equal(cfg.data.retention_ms, 1200000);
	assert_int_equal(cfg.data.retention_monitor_interval_ms, 30000);
	assert_true(cfg.fuse.allow_other && cfg.fuse.debug && !cfg.fuse.passthrough);
	assert_string_equal(cfg.http.addr, "127.0.0.1:20203");
	assert_int_equal(cfg.http.snapshot_timeout_ms, 120000);
	assert_string_equal(cfg.proxy.target, "localhost:8081");
	assert_int_equal(cfg.proxy.max_lag_ms, 5000);
	assert_int_equal(cfg.proxy.passthrough.n, 2);
	assert_string_equal(cfg.proxy.always_forward.items[0], "/login");
	assert_int_equal(cfg.proxy.primary_redirect_timeout_ms, 3000);
	assert_int_equal(cfg.proxy.read_timeout_ms, 1000);
	assert_int_equal(cfg.proxy.read_header_timeout_ms, 2000);
	assert_int_equal(cfg.proxy.write_timeout_ms, 3000);
	assert_int_equal(cfg.proxy.idle_timeout_ms, 4000);
	assert_string_equal(cfg.lease.type, "etcd");
	assert_false(cfg.lease.candidate);
	assert_true(cfg.lease.promote);
	assert_int_equal(cfg.lease.reconnect_delay_ms, 2000);
	assert_int_equal(cfg.lease.demote_delay_ms, 20000);
	assert_int_equal(cfg.lease.databases.n, 2);
	assert_string_equal(cfg.lease.databases.items[1], "other.db");
	assert_int_equal(cfg.lease.sync_replicas, 2);
	assert_int_equal(cfg.lease.sync_timeout_ms, 750);
	assert_string_equal(cfg.lease.sync_on_timeout, "fail");
	assert_int_equal(cfg.lease.consul.ttl_ms, 15000);
	assert_int_equal(cfg.lease.etcd.endpoints.n, 2);
	assert_string_equal(cfg.lease.etcd.key, "clusters/a/primary");
	assert_int_equal(cfg.lease.etcd.ttl_ms, 5000);
	assert_string_equal(cfg.backup.auth_token, "secret");
	assert_int_equal(cfg.backup.delay_ms, 250);
	assert_int_equal(cfg.backup.full_sync_interval_ms, 60000);
	assert_string_equal(cfg.log.format, "json");
	assert_true(cfg.log.timestamp && cfg.log.debug);
	assert_false(cfg.tracing.enabled);
	assert_int_equal(cfg.tracing.max_size, 16);
	assert_int_equal(cfg.tracing.max_count, 3);
	assert_int_equal(config_key_line(&cfg, "lease.etcd.ttl"), 56);
	assert_int_equal(config_key_line(&cfg, "lease.sync-on-timeout"), 47);
	assert_int_equal(config_key_line(&cfg, "nope"), 0);
	assert_int_equal(config_validate(&cfg, errbuf, sizeof(errbuf)), 0);

	/* Printing redacts the token. */
	assert_true(set_and_roundtrip(&cfg, "a\"b\\c\td\ne\xc2\x85" "f\xe2\x80\xa8g\xe2\x80\xa9h\x7fi\xc3\xa9"));
	char *p = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&p, &n);
	config_print(&cfg, f);
	fclose(f);
	assert_null(strstr(p, "secret"));
	assert_non_null(strstr(p, "auth-token: \"<redacted>\""));
	assert_non_null(strstr(p, "retention: \"20m\""));
	free(p);
	config_free(&cfg);
}

static void test_exec_forms(void **state)
{
	struct config cfg;

	assert_int_equal(parse("exec: \"myapp serve\"\n", &cfg), 0);
	assert_int_equal(cfg.n_exec, 1);
	assert_string_equal(cfg.exec[0].cmd, "myapp serve");
	assert_false(cfg.exec[0].if_candidate);
	config_free(&cfg);

	assert_int_equal(parse("exec: myapp -addr :8080\n", &cfg), 0);
	assert_string_equal(cfg.exec[0].cmd, "myapp -addr :8080");
	config_free(&cfg);

	assert_int_equal(parse("exec:\n", &cfg), 0);
	assert_int_equal(cfg.n_exec, 0);
	assert_null(cfg.exec);
	config_free(&cfg);

	assert_int_equal(parse("exec: []\n", &cfg), 0);
	assert_int_equal(cfg.n_exec, 0);
	config_free(&cfg);

	assert_int_equal(parse("exec: !!str 123\n", &cfg), 0);
	assert_string_equal(cfg.exec[0].cmd, "123");
	config_free(&cfg);

	/* Unknown keys in exec items are ignored with a warning, as LiteFS does. */
	assert_int_equal(parse("exec:\n  - cmd: a\n    if-leader: true\n    env: {X: 1}\n", &cfg), 0);
	assert_int_equal(cfg.n_exec, 1);
	assert_int_equal(cfg.n_warnings, 2);
	assert_non_null(strstr(cfg.warnings[0], "t.yml:3: exec[0]: unknown key \"if-leader\" ignored"));
	config_free(&cfg);

	/* A null item parses; validation then reports its missing cmd. */
	assert_int_equal(parse("exec:\n  -\n  - cmd: app\n", &cfg), 0);
	assert_int_equal(cfg.n_exec, 2);
	assert_int_equal(config_validate(&cfg, errbuf, sizeof(errbuf)), ERR_CONFIG);
	assert_non_null(strstr(errbuf, "t.yml:2: exec[0].cmd: the command is empty"));
	config_free(&cfg);

	expect_error("exec: 123\n", "t.yml:1: exec: expected a command string or a list", "the integer 123", NULL);
	expect_error("exec: true\n", "t.yml:1: exec: expected", "the boolean true", NULL);
	expect_error("exec: {cmd: a}\n", "t.yml:1: exec: expected", "a mapping", NULL);
	expect_error("exec:\n  - a\n  - b\n", "t.yml:2: exec[0]: expected a mapping", "t.yml:3: exec[1]", NULL);
	expect_error("exec:\n  - cmd: [a, b]\n", "t.yml:2: exec[0].cmd: expected a string, got a list", NULL);
	expect_error("exec:\n  - cmd: a\n    if-candidate: \"true\"\n",
		     "t.yml:3: exec[0].if-candidate: expected a boolean", NULL);
	expect_error("exec:\n  - cmd: a\n    cmd: b\n", "t.yml:3: duplicate key \"exec[0].cmd\" (already defined at line 2)",
		     NULL);
}

static void test_unknown_and_duplicate_keys(void **state)
{
	expect_error("fuse:\n  dir: /litefs\nmount-dir: /x\n",
		     "t.yml:3: unknown key \"mount-dir\" (pre-0.4 layout; now spelled fuse.dir)", NULL);
	expect_error("lease:\n  consul:\n    url: http://x\n    bogus: 1\n",
		     "t.yml:4: unknown key \"lease.consul.bogus\"", NULL);
	expect_error("data:\n  dirr: /x\n", "t.yml:2: unknown key \"data.dirr\" (did you mean \"dir\"?)", NULL);
	expect_error("proxy:\n  addr: :1\nproxy:\n  addr: :2\n",
		     "t.yml:3: duplicate key \"proxy\" (already defined at line 1)", NULL);
	expect_error("lease:\n  type: static\n  candidate: true\n  type: consul\n",
		     "t.yml:4: duplicate key \"lease.type\" (already defined at line 2)", NULL);
	/* Every problem is reported, not only the first. */
	expect_error("a: 1\nb: 2\nfuse:\n  x: 1\n", "t.yml:1: unknown key \"a\"", "t.yml:2: unknown key \"b\"",
		     "t.yml:4: unknown key \"fuse.x\"", NULL);
	expect_error("? [a]\n: 1\n", "t.yml:1: mapping keys must be plain names", NULL);
	expect_error("<<: {fuse: {dir: /x}}\n", "t.yml:1: top level: YAML merge keys (<<) are not supported", NULL);

	/* Many problems are capped. */
	char text[4000] = "";
	for (int i = 0; i < 40; i++) {
		char line[32];
		snprintf(line, sizeof(line), "k%d: 1\n", i);
		strcat(text, line);
	}
	expect_error(text, "t.yml:16: unknown key \"k15\"", "(further errors not shown)", NULL);
}

static void test_type_errors(void **state)
{
	struct config cfg;

	expect_error("fuse:\n  dir: [a, b]\n", "t.yml:2: fuse.dir: expected a string, got a list", NULL);
	expect_error("fuse:\n  dir: {a: b}\n", "t.yml:2: fuse.dir: expected a string, got a mapping", NULL);
	expect_error("fuse: /litefs\n", "t.yml:1: fuse: expected a mapping, got the string \"/litefs\"", NULL);
	expect_error("lease:\n  candidate: true\"\n",
		     "t.yml:2: lease.candidate: expected a boolean (true or false), got the string \"true\\\"\"", NULL);
	expect_error("lease:\n  candidate: \"true\"\n", "t.yml:2: lease.candidate: expected a boolean", NULL);
	expect_error("lease:\n  candidate: 1\n", "lease.candidate: expected a boolean", "the integer 1", NULL);
	expect_error("data:\n  retention: 60\n",
		     "t.yml:2: data.retention: expected a duration string", "the integer 60", NULL);
	expect_error("data:\n  retention: \"60\"\n", "t.yml:2: data.retention: invalid duration \"60\"", NULL);
	expect_error("data:\n  retention: 10 minutes\n", "data.retention: invalid duration \"10 minutes\"", NULL);
	expect_error("data:\n  retention: 1.5\n", "data.retention: expected a duration", "the number 1.5", NULL);
	expect_error("tracing:\n  max-size: \"64\"\n", "t.yml:2: tracing.max-size: expected an integer", NULL);
	expect_error("tracing:\n  max-size: 1.5\n", "tracing.max-size: expected an integer", NULL);
	expect_error("tracing:\n  max-size: 99999999999999999999\n", "tracing.max-size: integer", "out of range",
		     NULL);
	expect_error("proxy:\n  passthrough: \"*.png\"\n", "t.yml:2: proxy.passthrough: expected a list of strings",
		     NULL);
	expect_error("proxy:\n  passthrough:\n    - [a]\n", "t.yml:3: proxy.passthrough[0]: expected a string", NULL);
	expect_error("fuse:\n  dir: !custom x\n", "t.yml:2: fuse.dir: unsupported tag \"!custom\"", NULL);
	expect_error("lease:\n  candidate: !!bool maybe\n", "lease.candidate: unsupported tag", NULL);
	expect_error("- a\n- b\n", "t.yml:1: top level: expected a mapping of settings, got a list", NULL);
	expect_error("just text\n", "top level: expected a mapping", NULL);

	/* YAML 1.1 booleans work, even quoted; plain True works. */
	assert_int_equal(parse("lease:\n  candidate: \"off\"\n  promote: yes\nskip-sync: True\n", &cfg), 0);
	assert_false(cfg.lease.candidate);
	assert_true(cfg.lease.promote);
	assert_true(cfg.skip_sync);
	config_free(&cfg);
	assert_int_equal(parse("lease:\n  candidate: !!bool \"false\"\n", &cfg), 0);
	assert_false(cfg.lease.candidate);
	config_free(&cfg);

	/* Any scalar is a string as written. */
	assert_int_equal(parse("fuse:\n  dir: 123\nlease:\n  hostname: true\n  databases: [1, ~]\n", &cfg), 0);
	assert_string_equal(cfg.fuse.dir, "123");
	assert_string_equal(cfg.lease.hostname, "true");
	assert_string_equal(cfg.lease.databases.items[0], "1");
	assert_string_equal(cfg.lease.databases.items[1], "");
	config_free(&cfg);

	/* A quoted "0" is a valid duration; null empties a list. */
	assert_int_equal(parse("data:\n  retention: \"0\"\nproxy:\n  passthrough:\n", &cfg), 0);
	assert_int_equal(cfg.data.retention_ms, 0);
	assert_int_equal(cfg.proxy.passthrough.n, 0);
	config_free(&cfg);
}

static void test_yaml_features(void **state)
{
	struct config cfg;

	/* Anchors and aliases. */
	assert_int_equal(parse("lease:\n  databases: &dbs [a, b]\nproxy:\n  passthrough: *dbs\n"
			       "fuse: &f\n  dir: /litefs\n",
			       &cfg),
			 0);
	assert_int_equal(cfg.proxy.passthrough.n, 2);
	assert_string_equal(cfg.proxy.passthrough.items[1], "b");
	config_free(&cfg);
	expect_error("fuse:\n  dir: *nope\n", "t.yml:2: unknown anchor \"nope\"", NULL);
	expect_error("fuse: &a\n  dir: *a\n", "unknown anchor \"a\"", NULL); /* no self-reference */

	/* Only the first document counts. */
	assert_int_equal(parse("fuse:\n  dir: /a\n---\nbogus: 1\n", &cfg), 0);
	assert_string_equal(cfg.fuse.dir, "/a");
	config_free(&cfg);

	/* Syntax errors carry the line. */
	expect_error("fuse:\n  dir: /a\n bad indent: [\n", "t.yml:3: YAML syntax error", NULL);
	expect_error("fuse:\n  dir: \"unterminated\n", "YAML syntax error", NULL);
	expect_error("", "no YAML document", NULL);
	expect_error("# only a comment\n\n", "no YAML document", NULL);

	/* Deep nesting is refused before it costs anything. */
	char deep[400];
	memset(deep, '[', 200);
	deep[200] = '\0';
	expect_error(deep, "nesting deeper than", NULL);

	/* A UTF-8 BOM and CRLF line ends. */
	assert_int_equal(parse("\xef\xbb\xbf" "fuse:\r\n  dir: /x\r\nbogus: 1\r\n", &cfg), ERR_CONFIG);
	assert_non_null(strstr(errbuf, "t.yml:3: unknown key \"bogus\""));
	config_free(&cfg);

	/* errbuf may be tiny or absent. */
	char small[8];
	assert_int_equal(config_parse("x: 1\n", 5, "t.yml", false, NULL, NULL, &cfg, small, sizeof(small)),
			 ERR_CONFIG);
	assert_string_equal(small, "t.yml:1");
	assert_int_equal(config_parse("x: 1\n", 5, "t.yml", false, NULL, NULL, &cfg, NULL, 0), ERR_CONFIG);
}

/* ------------------------------------------------------------------ */
/* Validation, unsupported features, the backup environment.           */

#define DIRS "fuse:\n  dir: /litefs\ndata:\n  dir: /var/lib/litefs\n"

static void test_validate(void **state)
{
	struct config cfg;
	assert_int_equal(parse(DIRS, &cfg), 0);
	assert_int_equal(config_validate(&cfg, errbuf, sizeof(errbuf)), 0);
	assert_string_equal(errbuf, "");
	config_free(&cfg);

	expect_invalid("data:\n  dir: /d\n", "t.yml: fuse.dir: required");
	expect_invalid("fuse:\n  dir: /f\n", "t.yml: data.dir: required");
	expect_invalid("fuse:\n  dir: /x/\ndata:\n  dir: /x\n", "t.yml:4: data.dir: must differ from fuse.dir");
	expect_invalid(DIRS "lease:\n  type: fly\n", "t.yml:6: lease.type: unknown lease type \"fly\"");
	expect_invalid(DIRS "lease:\n  type: \"\"\n", "lease.type: unknown lease type \"\"");
	expect_invalid(DIRS "lease:\n  type: consul\n", "lease.consul.key: required when lease.type is consul");
	expect_invalid(DIRS "lease:\n  type: consul\n  consul:\n    key: k\n    url: consul:8500\n",
		       "t.yml:9: lease.consul.url: \"consul:8500\" is not an http:// or https:// URL");
	expect_invalid(DIRS "lease:\n  type: etcd\n", "lease.etcd.endpoints: required when lease.type is etcd");
	expect_invalid(DIRS "lease:\n  type: etcd\n  etcd:\n    endpoints: [127.0.0.1:2379]\n",
		       "lease.etcd.endpoints: \"127.0.0.1:2379\" is not an http");
	expect_invalid(DIRS "lease:\n  type: etcd\n  etcd:\n    endpoints: [http://e:2379]\n    ttl: 500ms\n",
		       "lease.etcd.ttl: must be at least 1s");
	expect_invalid(DIRS "lease:\n  databases: [a.db]\n", "lease.databases: a database filter is only allowed");
	expect_invalid(DIRS "lease:\n  advertise-url: node1:20202\n", "lease.advertise-url: \"node1:20202\"");
	expect_invalid(DIRS "http:\n  addr: 20202\n", "t.yml:6: http.addr: \"20202\": missing port");
	expect_invalid(DIRS "http:\n  addr: \":http\"\n", "http.addr: \":http\": port is not a number");
	expect_invalid(DIRS "http:\n  addr: \":70000\"\n", "port is larger than 65535");
	expect_invalid(DIRS "http:\n  addr: \"::1:20202\"\n", "too many colons");
	expect_invalid(DIRS "proxy:\n  target: localhost:8081\n", "proxy.addr: required when proxy.target is set");
	expect_invalid(DIRS "proxy:\n  target: localhost:8081\n  addr: :8080\n", "proxy.db: required");
	expect_invalid(DIRS "proxy:\n  target: localhost\n  addr: :8080\n  db: x\n", "proxy.target: \"localhost\"");
	expect_invalid(DIRS "proxy:\n  target: localhost:1\n  addr: \":20202\"\n  db: x\n",
		       "proxy.addr: \":20202\" is also http.addr");
	expect_invalid("fuse:\n  dir: /f\ndata:\n  dir: /d\n  retention: -1s\n",
		       "t.yml:5: data.retention: must not be negative");
	expect_invalid("fuse:\n  dir: /f\ndata:\n  dir: /d\n  retention-monitor-interval: \"0\"\n",
		       "data.retention-monitor-interval: must be greater than zero");
	expect_invalid(DIRS "lease:\n  demote-delay: -5s\n", "lease.demote-delay: must not be negative");
	expect_invalid(DIRS "lease:\n  sync-replicas: -1\n", "t.yml:6: lease.sync-replicas: must be between 0");
	expect_invalid(DIRS "lease:\n  sync-timeout: \"0\"\n", "lease.sync-timeout: must be positive");
	expect_invalid(DIRS "lease:\n  sync-on-timeout: block\n",
		       "t.yml:6: lease.sync-on-timeout: unknown value \"block\"; use \"async\" or \"fail\"");
	expect_invalid(DIRS "log:\n  format: xml\n", "t.yml:6: log.format: unknown log format \"xml\"");
	expect_invalid(DIRS "backup:\n  type: s3\n", "backup.type: unknown backup type \"s3\"");
	expect_invalid(DIRS "backup:\n  type: file\n", "backup.path: required when backup.type is file");
	expect_invalid(DIRS "backup:\n  full-sync-interval: \"0\"\n", "backup.full-sync-interval: must be greater");
	expect_invalid(DIRS "tracing:\n  max-count: -1\n", "tracing.max-count: must not be negative");
	expect_invalid(DIRS "exec: \"app 'unterminated\"\n", "t.yml:5: exec[0].cmd: unterminated quote");
	expect_invalid(DIRS "exec: \"app && other\"\n", "exec[0].cmd: \"app && other\" holds the shell operator '&&'");
	expect_invalid(DIRS "exec:\n  - cmd: \"  \"\n", "t.yml:6: exec[0].cmd: the command is empty");

	/* Validation reports every problem. */
	assert_int_equal(parse("lease:\n  type: x\nlog:\n  format: y\n", &cfg), 0);
	assert_int_equal(config_validate(&cfg, errbuf, sizeof(errbuf)), ERR_CONFIG);
	assert_non_null(strstr(errbuf, "fuse.dir"));
	assert_non_null(strstr(errbuf, "data.dir"));
	assert_non_null(strstr(errbuf, "t.yml:2: lease.type"));
	assert_non_null(strstr(errbuf, "t.yml:4: log.format"));
	config_free(&cfg);

	/* A database filter on a replica is fine. */
	assert_int_equal(parse(DIRS "lease:\n  candidate: false\n  databases: [a.db]\n", &cfg), 0);
	assert_int_equal(config_validate(&cfg, errbuf, sizeof(errbuf)), 0);
	config_free(&cfg);
}

/* The exact message for each kind of shell operator in an exec command
 * (what litefs config check and litefs mount print after "t.yml:N: "). */
static void expect_exec_msg(const char *yaml, const char *want)
{
	struct config cfg;
	if (parse(yaml, &cfg) != 0)
		fail_msg("parse failed for:\n%s\n%s", yaml, errbuf);
	assert_int_equal(config_validate(&cfg, errbuf, sizeof(errbuf)), ERR_CONFIG);
	if (strcmp(errbuf, want))
		fail_msg("message for:\n%s\nis:\n%s\nwant:\n%s", yaml, errbuf, want);
	config_free(&cfg);
}

#define NO_SHELL                                                                                              \
	"but exec commands run without a shell: each is split into arguments and started directly (LiteFS 0.5 " \
	"silently drops everything from the operator on)."

static void test_exec_shell_operators(void **state)
{
	/* A trailing '&' before the application: the if-primary form, with
	 * the next item as the application. */
	expect_exec_msg(DIRS "exec:\n  - cmd: \"celery -A proj worker &\"\n  - cmd: \"gunicorn app:app\"\n",
			"t.yml:6: exec[0].cmd: \"celery -A proj worker &\" holds the shell operator '&', " NO_SHELL
			" So '&' cannot put a program in the background, and an item that never exits blocks the items "
			"after it. Give each program its own exec item; one with if-primary: true runs beside the "
			"application, only while this node is primary:\n"
			"    exec:\n"
			"      - cmd: \"celery -A proj worker\"\n"
			"        if-primary: true\n"
			"      - cmd: \"gunicorn app:app\"\n"
			"  or start a shell yourself: cmd: \"sh -c 'celery -A proj worker & exec gunicorn app:app'\"\n"
			"  (To pass '&' to the program as an argument, quote it.)");
	/* '&' alone, in a one-command exec: a placeholder application. */
	expect_exec_msg(DIRS "exec: \"worker --x &\"\n",
			"t.yml:5: exec[0].cmd: \"worker --x &\" holds the shell operator '&', " NO_SHELL
			" So '&' cannot put a program in the background, and an item that never exits blocks the items "
			"after it. Give each program its own exec item; one with if-primary: true runs beside the "
			"application, only while this node is primary:\n"
			"    exec:\n"
			"      - cmd: \"worker --x\"\n"
			"        if-primary: true\n"
			"      - cmd: \"your-app\"\n"
			"  or start a shell yourself: cmd: \"sh -c 'worker --x & exec your-app'\"\n"
			"  (To pass '&' to the program as an argument, quote it.)");
	/* '&&' and ';': items in order. */
	expect_exec_msg(DIRS "exec: \"python3 manage.py migrate && gunicorn app; echo done\"\n",
			"t.yml:5: exec[0].cmd: \"python3 manage.py migrate && gunicorn app; echo done\" holds the shell "
			"operator '&&', " NO_SHELL
			" Give each program its own exec item: items run in order, each but the last is waited for and "
			"must succeed:\n"
			"    exec:\n"
			"      - cmd: \"python3 manage.py migrate\"\n"
			"      - cmd: \"gunicorn app\"\n"
			"      - cmd: \"echo done\"\n"
			"  or start a shell yourself: cmd: \"sh -c 'python3 manage.py migrate && gunicorn app; echo "
			"done'\"\n"
			"  (To pass '&&' to the program as an argument, quote it.)");
	/* Redirections and pipes: only a shell; a command holding ' gets
	 * the general form. */
	expect_exec_msg(DIRS "exec:\n  - cmd: \"app >> /var/log/app.log 2>&1\"\n",
			"t.yml:6: exec[0].cmd: \"app >> /var/log/app.log 2>&1\" holds the shell operator '>>', " NO_SHELL
			" Pipes, redirections and conditionals need a shell: cmd: \"sh -c 'app >> /var/log/app.log "
			"2>&1'\"\n"
			"  (To pass '>>' to the program as an argument, quote it.)");
	expect_exec_msg(DIRS "exec:\n  - cmd: \"cat x | grep 'y'\"\n",
			"t.yml:6: exec[0].cmd: \"cat x | grep 'y'\" holds the shell operator '|', " NO_SHELL
			" Pipes, redirections and conditionals need a shell: cmd: \"sh -c '...'\"\n"
			"  (To pass '|' to the program as an argument, quote it.)");
	/* Mixed kinds, or an empty side, are not split into items. */
	expect_invalid(DIRS "exec: \"a && b | c\"\n", "'&&', " NO_SHELL " Pipes, redirections");
	expect_invalid(DIRS "exec: \"a &&\"\n", "'&&', " NO_SHELL " Pipes, redirections");
	expect_invalid(DIRS "exec: \"& a\"\n", "'&', " NO_SHELL " Pipes, redirections");

	/* Quoted or escaped, an operator is an ordinary byte of an argument:
	 * valid. */
	struct config cfg;
	assert_int_equal(parse(DIRS "exec:\n  - cmd: \"echo 'a|b' \\\"c && d\\\" e\\\\;f\"\n", &cfg), 0);
	assert_int_equal(config_validate(&cfg, errbuf, sizeof(errbuf)), 0);
	config_free(&cfg);
}

static void test_unsupported(void **state)
{
	struct config cfg;
	struct config_issue is[8];

	assert_int_equal(parse(DIRS, &cfg), 0);
	assert_int_equal(config_unsupported(&cfg, is, 8), 0);
	config_free(&cfg);

	assert_int_equal(parse(DIRS "lease:\n  type: consul\nproxy:\n  target: a:1\nbackup:\n  type: file\n"
				    "tracing:\n  path: /t\nlog:\n  format: json\n",
			       &cfg),
			 0);
	size_t n = config_unsupported(&cfg, is, 8);
	assert_int_equal(n, 4);
	/* Consul is refused with the etcd lines that replace the block. */
	assert_non_null(strstr(is[0].msg, "lease.type: consul (line 6) is not supported; this build elects the "
					  "primary through etcd. Replace the lease.consul block with:"));
	assert_non_null(strstr(is[0].msg, "type: etcd"));
	assert_non_null(strstr(is[0].msg, "endpoints:"));
	assert_true(is[0].fatal);
	/* The proxy is supported (it landed: docs/proxy.md). */
	assert_string_equal(is[1].msg, "backup.type: file is not supported yet; use litefs-cloud");
	assert_true(is[1].fatal);
	assert_false(is[2].fatal);
	assert_false(is[3].fatal);
	/* The count is complete even when the array is short. */
	assert_int_equal(config_unsupported(&cfg, is, 1), 4);
	config_free(&cfg);

	/* etcd is supported (the lease landed). */
	assert_int_equal(parse(DIRS "lease:\n  type: etcd\n  advertise-url: http://n:20202\n  etcd:\n"
				    "    endpoints: [http://e:2379]\n",
			       &cfg),
			 0);
	assert_int_equal(config_unsupported(&cfg, is, 8), 0);
	config_free(&cfg);

	/* A static replica is supported (replication landed). */
	assert_int_equal(parse(DIRS "lease:\n  type: static\n  candidate: false\n", &cfg), 0);
	assert_int_equal(config_unsupported(&cfg, is, 8), 0);
	config_free(&cfg);

	/* A static primary is supported. */
	assert_int_equal(parse(DIRS "lease:\n  type: static\n  candidate: true\n", &cfg), 0);
	assert_int_equal(config_unsupported(&cfg, is, 8), 0);
	config_free(&cfg);
}

static void test_apply_env(void **state)
{
	struct config cfg;
	static const struct env_var tok[] = { { "LITEFS_CLOUD_TOKEN", "  tok123 \n" } };
	static const struct env_var tok_ep[] = { { "LITEFS_CLOUD_TOKEN", "tok" },
					    { "LITEFS_CLOUD_ENDPOINT", "http://127.0.0.1:7000" } };
	struct fake_env e1 = { tok, 1 }, e2 = { tok_ep, 2 };

	assert_int_equal(parse(DIRS, &cfg), 0);
	assert_int_equal(config_apply_env(&cfg, fake_getenv, &env_empty), 0);
	assert_string_equal(cfg.backup.type, "");
	assert_int_equal(config_apply_env(&cfg, fake_getenv, &e1), 0);
	assert_string_equal(cfg.backup.type, "litefs-cloud");
	assert_string_equal(cfg.backup.auth_token, "tok123");
	assert_string_equal(cfg.backup.url, "https://litefs.fly.io");
	config_free(&cfg);

	assert_int_equal(parse(DIRS, &cfg), 0);
	assert_int_equal(config_apply_env(&cfg, fake_getenv, &e2), 0);
	assert_string_equal(cfg.backup.url, "http://127.0.0.1:7000");
	config_free(&cfg);

	/* The file wins over the environment; another backup type is left alone. */
	assert_int_equal(parse(DIRS "backup:\n  type: litefs-cloud\n  auth-token: mine\n", &cfg), 0);
	assert_int_equal(config_apply_env(&cfg, fake_getenv, &e1), 0);
	assert_string_equal(cfg.backup.auth_token, "mine");
	config_free(&cfg);
	assert_int_equal(parse(DIRS "backup:\n  type: file\n  path: /b\n", &cfg), 0);
	assert_int_equal(config_apply_env(&cfg, fake_getenv, &e1), 0);
	assert_string_equal(cfg.backup.type, "file");
	assert_string_equal(cfg.backup.auth_token, "");
	config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* Files.                                                              */

static void test_load_and_find(void **state)
{
	struct config cfg;
	char path[600];

	/* A real file, with the path as the message prefix. */
	corpus_path(38, path, sizeof(path));
	assert_int_equal(config_load_file(path, true, &cfg, errbuf, sizeof(errbuf)), ERR_CONFIG);
	assert_true(!strncmp(errbuf, path, strlen(path)));
	config_free(&cfg);
	corpus_path(2, path, sizeof(path));
	assert_int_equal(config_load_file(path, true, &cfg, errbuf, sizeof(errbuf)), 0);
	assert_string_equal(cfg.name, path);
	config_free(&cfg);

	assert_int_equal(config_load_file("/nonexistent/litefs.yml", true, &cfg, errbuf, sizeof(errbuf)), -ENOENT);
	assert_non_null(strstr(errbuf, "/nonexistent/litefs.yml"));
	config_free(&cfg);
	assert_int_equal(config_load_file("/", true, &cfg, errbuf, sizeof(errbuf)), -EISDIR);

	char dir[] = "/tmp/test_config.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char file[128];
	snprintf(file, sizeof(file), "%s/litefs.yml", dir);

	/* Too large. */
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	for (unsigned i = 0; i < CONFIG_MAX_FILE_SIZE / 16 + 1; i++)
		fputs("# padding.......\n", f);
	fclose(f);
	assert_int_equal(config_load_file(file, true, &cfg, errbuf, sizeof(errbuf)), ERR_CONFIG);
	assert_non_null(strstr(errbuf, "larger than"));

	/* config_find: an explicit path is taken as is; ./litefs.yml comes first. */
	char out[4200];
	assert_int_equal(config_find("/some/where.yml", out, sizeof(out)), 0);
	assert_string_equal(out, "/some/where.yml");
	assert_int_equal(config_find("/some/where.yml", out, 4), -ENAMETOOLONG);

	char cwd[4096];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(dir), 0);
	assert_int_equal(config_find(NULL, out, sizeof(out)), 0);
	char real[200];
	assert_non_null(realpath(file, real));
	assert_string_equal(out, real);
	assert_int_equal(config_find("", out, sizeof(out)), 0);
	assert_string_equal(out, real);
	unlink(file);
	/* Without ./litefs.yml: ~/litefs.yml or /etc/litefs.yml, or nothing. */
	int rc = config_find(NULL, out, sizeof(out));
	assert_true(rc == -ENOENT || (rc == 0 && strcmp(out, real) != 0));
	assert_int_equal(chdir(cwd), 0);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_corpus_accepted),
		cmocka_unit_test(test_corpus_rejected),
		cmocka_unit_test(test_corpus_legacy_hints),
		cmocka_unit_test(test_corpus_values),
		cmocka_unit_test(test_corpus_print_roundtrip),
		cmocka_unit_test(test_expand_line_numbers),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_exec_forms),
		cmocka_unit_test(test_unknown_and_duplicate_keys),
		cmocka_unit_test(test_type_errors),
		cmocka_unit_test(test_yaml_features),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_exec_shell_operators),
		cmocka_unit_test(test_unsupported),
		cmocka_unit_test(test_apply_env),
		cmocka_unit_test(test_load_and_find),
	};
	return cmocka_run_group_tests(tests, corpus_setup, NULL);
}
