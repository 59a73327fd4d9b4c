/*
 * cmd.h — entry points of the `litefs` subcommands. Each takes the
 * arguments after the subcommand name (argv[0] is the subcommand) and
 * returns the process exit code. Each prints its own --help.
 */
#ifndef LITEFS_CMD_H
#define LITEFS_CMD_H

int cmd_ltx_main(int argc, char **argv);    /* cmd_ltx.c: litefs ltx ... */
int cmd_config_main(int argc, char **argv); /* cmd_config.c: litefs config check */
int cmd_mount_main(int argc, char **argv);  /* cmd_mount.c: litefs mount */
int cmd_import_main(int argc, char **argv); /* cmd_import.c: litefs import */
int cmd_export_main(int argc, char **argv); /* cmd_import.c: litefs export */
int cmd_promote_main(int argc, char **argv); /* cmd_promote.c: litefs promote */
int cmd_run_main(int argc, char **argv);    /* cmd_run.c: litefs run --with-write-lock */
/* The `litefs-cloud` command line: argv[0] is the program. */
int cmd_cloud_main(int argc, char **argv); /* cmd_cloud.c: litefs-cloud ... */

#endif
