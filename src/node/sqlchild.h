/*
 * sqlchild.h — SQLite work on the node's own mount, done in a child
 * process (see the design comment at the top of sqlchild.c for why the
 * node itself must never map its own files).
 */
#ifndef LITEFS_SQLCHILD_H
#define LITEFS_SQLCHILD_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

struct sqlchild {
	pid_t pid;
	FILE *from; /* the child's stdout */
	int to;     /* the child's stdin */
};

/* Starts /proc/self/exe with argv (argv[0] = "litefs", argv[1] =
 * "__sqlite", ...). 0 or -errno. Finish with sqlchild_finish(). */
int sqlchild_start(struct sqlchild *c, char *const argv[]);
/* Reads one line (without the newline). 0, or -EPIPE with an "ERR" line
 * describing the helper's death in line. */
int sqlchild_read(struct sqlchild *c, char *line, size_t len);
int sqlchild_write(struct sqlchild *c, const char *line);
/* Splits "ERR <rc> <message>": true with *sqlite_rc and *msg (pointing
 * into line) set, false (nothing set) when line is not an error line. */
bool sqlchild_parse_err(const char *line, int *sqlite_rc, const char **msg);
/* Closes the pipes and reaps the child; returns its exit code. */
int sqlchild_finish(struct sqlchild *c);

/* The helper's side: `litefs __sqlite ARGS` (main.c dispatches here).
 * Returns the process exit code. */
int sqlchild_main(int argc, char **argv);

#endif
