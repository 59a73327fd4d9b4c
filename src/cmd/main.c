/* litefs — the node: FUSE mount, replication, backup client, LTX tools. */
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "node/sqlchild.h"

#define LITEFS_VERSION "0.1.0-dev"

static const char usage[] =
	"litefs " LITEFS_VERSION " — a C implementation of LiteFS (distributed SQLite)\n"
	"\n"
	"Usage: litefs <command> [arguments]\n"
	"\n"
	"Commands:\n"
	"  mount [-config PATH] [-- CMD ARGS...]\n"
	"                 mount the FUSE file system, capture every SQLite commit as LTX,\n"
	"                 and run the application (exec) if configured\n"
	"  import -name NAME FILE   import a SQLite database file as one transaction\n"
	"  export -name NAME FILE   export a database from a running node to FILE\n"
	"  promote [-url URL]       make this node the primary by a handoff (etcd lease)\n"
	"  run --with-write-lock DB -- CMD [ARGS...]\n"
	"                 run CMD holding the write lock on DB: it may write DB on a replica\n"
	"  config check [-config PATH]\n"
	"                 validate litefs.yml and print the effective configuration\n"
	"  ltx <subcommand>         inspect, verify, apply and compact LTX files\n"
	"                 (dump, list, verify, checksum, apply, encode-db, compact)\n"
	"  version        print the version\n"
	"\n"
	"Run 'litefs <command> --help' for a command's options.\n";

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "-help") || !strcmp(cmd, "help")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version") || !strcmp(cmd, "-version")) {
		printf("litefs %s\n", LITEFS_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "ltx"))
		return cmd_ltx_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "config"))
		return cmd_config_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "mount"))
		return cmd_mount_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "import"))
		return cmd_import_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "export"))
		return cmd_export_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "run"))
		return cmd_run_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "promote"))
		return cmd_promote_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "__sqlite"))
		return sqlchild_main(argc - 1, argv + 1);
	fprintf(stderr, "litefs: unknown command %s\n\n%s", cmd, usage);
	return 2;
}
