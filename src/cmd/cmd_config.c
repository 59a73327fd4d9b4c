/*
 * cmd_config.c — `litefs config check`: validate litefs.yml without
 * mounting anything (like `nginx -t`) and print the effective
 * configuration.
 *
 * stdout gets only the effective configuration (YAML that litefs reads
 * back), so it can be piped; problems, warnings and the verdict go to
 * stderr. Exit status: 0 valid, 1 invalid or unreadable, 2 usage error,
 * 3 valid but refused by `litefs mount` of this build (a feature not
 * supported yet): a check that says "successful" for a file the mount
 * then refuses would only move the surprise to deploy time.
 * Options follow Go's flag package, as LiteFS's do: -config PATH,
 * -config=PATH, -no-expand-env[=BOOL]; a double dash works too.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "node/config.h"
#include "base/err.h"

static const char check_usage[] =
	"Usage: litefs config check [-config PATH] [-no-expand-env]\n"
	"\n"
	"Validates a litefs.yml without mounting anything and prints the effective\n"
	"configuration, defaults included, on stdout. Problems and warnings go to\n"
	"stderr. Exits 0 when the file is valid, 1 when it is not, 3 when it is\n"
	"valid but uses a feature this build does not support (litefs mount would\n"
	"refuse it: lease.type etcd or consul, proxy, ...).\n"
	"\n"
	"Without -config, the first file that exists of ./litefs.yml, ~/litefs.yml\n"
	"and /etc/litefs.yml is checked.\n"
	"\n"
	"Options:\n"
	"  -config PATH      config file path\n"
	"  -no-expand-env    do not expand environment variables in the config\n"
	"  -h, -help         show this help\n"
	"\n"
	"See docs/config.md for every key.\n";

static const char config_usage[] =
	"Usage: litefs config <command>\n"
	"\n"
	"Commands:\n"
	"  check [-config PATH] [-no-expand-env]\n"
	"                 validate litefs.yml and print the effective configuration\n";

/* Go strconv.ParseBool. Returns 0 and sets *out, or -1. */
static int parse_go_bool(const char *s, bool *out)
{
	static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True" };
	static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False" };
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (!strcmp(s, t[i])) {
			*out = true;
			return 0;
		}
		if (!strcmp(s, f[i])) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* If arg is -name, --name, -name=V or --name=V, returns true and points
 * *value at V (NULL when there is no '='). */
static bool match_flag(const char *arg, const char *name, const char **value)
{
	if (arg[0] != '-')
		return false;
	arg++;
	if (arg[0] == '-')
		arg++;
	size_t n = strlen(name);
	if (strncmp(arg, name, n) != 0)
		return false;
	if (arg[n] == '\0') {
		*value = NULL;
		return true;
	}
	if (arg[n] == '=') {
		*value = arg + n + 1;
		return true;
	}
	return false;
}

static int cmd_config_check(int argc, char **argv)
{
	const char *config_path = NULL;
	bool no_expand_env = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		if (!strcmp(a, "--"))  {
			if (i + 1 < argc) {
				fprintf(stderr, "litefs config check: unexpected argument %s\n\n%s", argv[i + 1], check_usage);
				return 2;
			}
			break;
		}
		if (match_flag(a, "h", &v) || match_flag(a, "help", &v)) {
			fputs(check_usage, stdout);
			return 0;
		}
		if (match_flag(a, "config", &v)) {
			if (!v) {
				if (i + 1 >= argc) {
					fprintf(stderr, "litefs config check: flag needs an argument: -config\n\n%s",
						check_usage);
					return 2;
				}
				v = argv[++i];
			}
			config_path = v;
			continue;
		}
		if (match_flag(a, "no-expand-env", &v)) {
			if (v && parse_go_bool(v, &no_expand_env) < 0) {
				fprintf(stderr, "litefs config check: invalid boolean value \"%s\" for -no-expand-env\n",
					v);
				return 2;
			}
			if (!v)
				no_expand_env = true;
			continue;
		}
		if (a[0] == '-')
			fprintf(stderr, "litefs config check: flag provided but not defined: %s\n\n%s", a, check_usage);
		else
			fprintf(stderr, "litefs config check: unexpected argument %s\n\n%s", a, check_usage);
		return 2;
	}
	if (config_path && !config_path[0]) {
		fprintf(stderr, "litefs config check: -config needs a non-empty path\n");
		return 2;
	}

	char path[PATH_MAX + 32];
	int rc = config_find(config_path, path, sizeof(path));
	if (rc == -ENOENT && !config_path) {
		fprintf(stderr, "litefs: config file not found (looked for ./litefs.yml, ~/litefs.yml, "
				"/etc/litefs.yml); use -config PATH\n");
		return 1;
	}
	if (rc) {
		fprintf(stderr, "litefs: cannot use config file %s: %s\n", path, err_str(rc));
		return 1;
	}

	struct config cfg;
	char errbuf[16384];
	rc = config_load_file(path, !no_expand_env, &cfg, errbuf, sizeof(errbuf));
	if (rc == 0)
		rc = config_apply_env(&cfg, NULL, NULL);
	if (rc) {
		fprintf(stderr, "%s\n", errbuf[0] ? errbuf : err_str(rc));
		fprintf(stderr, "litefs: configuration file %s test failed\n", path);
		config_free(&cfg);
		return 1;
	}

	for (size_t i = 0; i < cfg.n_warnings; i++)
		fprintf(stderr, "warning: %s\n", cfg.warnings[i]);

	rc = config_validate(&cfg, errbuf, sizeof(errbuf));
	if (rc) {
		fprintf(stderr, "%s\n", errbuf[0] ? errbuf : err_str(rc));
		fprintf(stderr, "litefs: configuration file %s test failed\n", path);
		config_free(&cfg);
		return 1;
	}

	struct config_issue issues[16];
	size_t n = config_unsupported(&cfg, issues, sizeof(issues) / sizeof(issues[0]));
	size_t shown = n < sizeof(issues) / sizeof(issues[0]) ? n : sizeof(issues) / sizeof(issues[0]);
	bool refused = false;
	for (size_t i = 0; i < shown; i++) {
		if (issues[i].fatal) {
			refused = true;
			fprintf(stderr, "unsupported: %s: %s (litefs mount refuses this)\n", path, issues[i].msg);
		} else {
			fprintf(stderr, "warning: %s: %s (litefs mount ignores it)\n", path, issues[i].msg);
		}
	}

	printf("# effective configuration of %s (defaults included)\n", path);
	config_print(&cfg, stdout);
	fflush(stdout);
	if (refused) {
		fprintf(stderr, "litefs: configuration file %s is valid, but not supported by this build:", path);
		const char *sep = " ";
		for (size_t i = 0; i < shown; i++) {
			if (issues[i].fatal) {
				fprintf(stderr, "%s%s", sep, issues[i].msg);
				sep = "; ";
			}
		}
		fprintf(stderr, "\n");
	} else {
		fprintf(stderr, "litefs: configuration file %s test is successful\n", path);
	}
	config_free(&cfg);
	return refused ? 3 : 0;
}

int cmd_config_main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(config_usage, stderr);
		return 2;
	}
	const char *sub = argv[1];
	if (!strcmp(sub, "-h") || !strcmp(sub, "--help") || !strcmp(sub, "-help") || !strcmp(sub, "help")) {
		fputs(config_usage, stdout);
		return 0;
	}
	if (!strcmp(sub, "check"))
		return cmd_config_check(argc - 1, argv + 1);
	fprintf(stderr, "litefs config: unknown command %s\n\n%s", sub, config_usage);
	return 2;
}
