/*
 * supervise.h — runs the application (`exec` in litefs.yml) without a
 * shell: commands in order, each but the last waited for; `if-candidate`
 * entries only on candidates; `if-primary` entries (ours) are long-running
 * workers that run exactly while this node is primary.
 *
 * If-primary workers follow the role at run time. A manager thread of
 * their own watches a role source (struct supervise_role: the node's role
 * and change feed in litefs mount, a fake in the unit tests) and
 *
 *   - starts every worker when the node is (or becomes) primary;
 *   - stops them when it stops being primary: SIGTERM, then SIGKILL once
 *     the grace period (SUPERVISE_GRACE_MS, 10 s) has passed;
 *   - restarts a worker that exits while the node is primary, after a
 *     backoff: 1 s, doubling up to 30 s, back to 1 s once a run lasted
 *     60 s (SUPERVISE_BACKOFF_*_MS).
 *
 * The application is not the manager's: the caller blocks SIGCHLD (and
 * the signals it forwards) and calls supervisor_reap() when SIGCHLD
 * arrives; it only ever reaps the application, the manager thread reaps
 * its workers by pid. Children start with an empty signal mask and
 * default dispositions.
 */
#ifndef LITEFS_SUPERVISE_H
#define LITEFS_SUPERVISE_H

#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct config;
struct node;
struct supervisor;

#define SUPERVISE_GRACE_MS 10000          /* SIGTERM to SIGKILL */
#define SUPERVISE_BACKOFF_MIN_MS 1000     /* first restart after an exit */
#define SUPERVISE_BACKOFF_MAX_MS 30000    /* the delay doubles up to this */
#define SUPERVISE_BACKOFF_RESET_MS 60000  /* a run this long restarts the count */
#define SUPERVISE_POLL_MS 100             /* how soon an exited worker is noticed */
#define SUPERVISE_MAX_WORKERS 16

/* Where the manager learns the role. Both functions are called from the
 * manager thread only. */
struct supervise_role {
	void *ctx;
	bool (*is_primary)(void *ctx);
	/* Returns a counter that changes at least whenever the role does:
	 * as soon as it differs from seen, else after about timeout_ms. */
	uint64_t (*wait_change)(void *ctx, uint64_t seen, int timeout_ms);
};

/* Fills r with n's role and change feed (node_is_primary,
 * node_wait_change). n is borrowed; it must outlive the supervisor. */
void supervise_role_of_node(struct supervise_role *r, struct node *n);

/* Timings; 0 in a field means its SUPERVISE_* default. */
struct supervise_opts {
	int grace_ms;
	int backoff_min_ms;
	int backoff_max_ms;
	int backoff_reset_ms;
	int poll_ms;
};

/* Runs the pre-commands and starts the application, then the manager of
 * the if-primary workers (only when there is one; role is copied, its
 * ctx borrowed until supervisor_free()). override (NULL-terminated argv,
 * or NULL) replaces exec. opts may be NULL. *out is set even when nothing
 * is configured. Returns 0, or an error when a command could not start or
 * a pre-command failed (its exit code is logged). Caller frees with
 * supervisor_free(). */
int supervisor_start(const struct config *cfg, char **override, bool is_candidate, const struct supervise_role *role,
		     const struct supervise_opts *opts, struct supervisor **out);
/* Reaps the application if it exited. Returns true when it has, with its
 * exit code (128+signal if killed) in *code. Never reaps a worker. */
bool supervisor_reap(struct supervisor *s, int *code);
/* True while the application runs. */
bool supervisor_running(struct supervisor *s);
/* The node is stopping: ends the manager (no worker starts again),
 * forwards sig to the application and sends SIGTERM to the workers. */
void supervisor_signal(struct supervisor *s, int sig);
/* Waits up to timeout_ms for the application to exit, then SIGKILLs it,
 * and stops the workers (SIGKILL for those still running at the end of
 * their grace period). Returns the application's exit code. */
int supervisor_wait(struct supervisor *s, int timeout_ms);
/* Ends the manager and stops the workers as supervisor_wait() does; never
 * signals the application. NULL is a no-op. */
void supervisor_free(struct supervisor *s);

/* A wait status as an exit code: the code, 128+signal when killed, else 1. */
int supervise_exit_code(int status);

/* A worker as the manager last left it, for tests and logs. */
struct supervise_worker_state {
	pid_t pid;       /* 0 when not running */
	unsigned starts; /* how many times it was started */
	unsigned stops;  /* how many times it was stopped for a demotion or a stop */
	unsigned kills;  /* of which needed SIGKILL */
};
/* The number of if-primary workers; with i < that number, fills *out. */
int supervisor_workers(struct supervisor *s, int i, struct supervise_worker_state *out);

/* Starts file (looked up in PATH if search_path) with argv, an empty signal
 * mask and default signal dispositions (the node blocks the signals it
 * handles; children must not inherit that). fa may be NULL. 0 or -errno. */
int supervise_spawn(const char *file, bool search_path, const posix_spawn_file_actions_t *fa, char *const argv[],
		    pid_t *pid);

#endif
