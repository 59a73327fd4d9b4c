/*
 * supervise.h — runs the application (`exec` in litefs.yml) without a
 * shell: commands in order, each but the last waited for; `if-candidate`
 * entries only on candidates; `if-primary` entries (ours) are long-running
 * workers started while this node is primary and stopped (SIGTERM, then
 * SIGKILL after a grace period) when it stops being primary.
 *
 * The caller blocks SIGCHLD (and the signals it forwards) and calls
 * supervisor_reap() when SIGCHLD arrives. Children start with an empty
 * signal mask and default dispositions.
 */
#ifndef LITEFS_SUPERVISE_H
#define LITEFS_SUPERVISE_H

#include <spawn.h>
#include <stdbool.h>
#include <sys/types.h>

struct config;
struct supervisor;

/* Runs the pre-commands and starts the application and workers. override
 * (NULL-terminated argv, or NULL) replaces exec. *out is set even when
 * nothing is configured. Returns 0, or an error when a command could not
 * start or a pre-command failed (its exit code is logged). Caller frees
 * with supervisor_free(). */
int supervisor_start(const struct config *cfg, char **override, bool is_candidate, bool is_primary,
		     struct supervisor **out);
/* Starts or stops the if-primary workers after a role change. */
void supervisor_set_primary(struct supervisor *s, bool is_primary);
/* Reaps exited children. Returns true when the application has exited,
 * with its exit code (128+signal if killed) in *code. */
bool supervisor_reap(struct supervisor *s, int *code);
/* True while the application runs. */
bool supervisor_running(struct supervisor *s);
/* Forwards sig to the application and the workers. */
void supervisor_signal(struct supervisor *s, int sig);
/* Waits up to timeout_ms for the application to exit, then SIGKILLs it.
 * Returns its exit code. Stops workers too. */
int supervisor_wait(struct supervisor *s, int timeout_ms);
void supervisor_free(struct supervisor *s); /* NULL is a no-op; kills nothing */

/* Starts file (looked up in PATH if search_path) with argv, an empty signal
 * mask and default signal dispositions (the node blocks the signals it
 * handles; children must not inherit that). fa may be NULL. 0 or -errno. */
int supervise_spawn(const char *file, bool search_path, const posix_spawn_file_actions_t *fa, char *const argv[],
		    pid_t *pid);

#endif
