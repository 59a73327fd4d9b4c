/*
 * supervise.c — see supervise.h.
 *
 * Each if-primary worker moves through three states; the manager thread
 * (manager_main) makes every transition, so the workers need no lock
 * except for what supervisor_workers() reads (struct supervisor.mu):
 *
 *   state     pid   event                              function        next
 *   -------   ----  ---------------------------------  --------------  --------
 *   idle      0     node primary, now >= due_ms        start_worker    running
 *   running   >0    exited while primary               reap_workers    idle, due_ms = now + backoff
 *   running   >0    exited while not primary           reap_workers    idle
 *   running   >0    node not primary, or stopping      stop_workers    idle (SIGTERM, grace, SIGKILL)
 *   idle      0     node not primary                   manager_main    idle, due_ms = 0, crashes = 0
 *
 * Invariants: (W1) no worker runs while the role source says replica for
 * longer than one poll plus the grace period; (W2) once the manager has
 * ended (supervisor_signal or supervisor_free), nothing starts a worker
 * again; (W3) every pid the manager started is reaped by pid, so other
 * children of the node (the application, sqlchild.c's) are never reaped
 * here.
 *
 * A worker that cannot be started (no such program) counts as one that
 * exited at once: it is tried again with the same backoff.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/shellwords.h"
#include "node/config.h"
#include "node/node.h"
#include "node/supervise.h"

extern char **environ;

struct worker {
	char **argv;
	pid_t pid;          /* 0 when not running; written under supervisor.mu */
	unsigned starts, stops, kills; /* written under supervisor.mu */
	/* Manager thread only (or the caller once the manager has ended): */
	int64_t started_ms;
	int64_t due_ms;     /* not before this may it start again */
	unsigned crashes;   /* exits in a row, each after a run shorter than the reset */
};

struct supervisor {
	pid_t app;          /* 0 when none or exited */
	int app_code;
	bool app_exited;

	struct supervise_role role;
	struct supervise_opts opts; /* every field set */
	pthread_t manager;
	bool manager_running;       /* the caller's thread only */
	atomic_bool stopping;       /* asks the manager to end */
	int64_t term_sent_ms;       /* supervisor_signal sent SIGTERM to the workers; 0 if not */

	pthread_mutex_t mu;         /* guards workers[].pid, .starts, .stops, .kills */
	struct worker workers[SUPERVISE_MAX_WORKERS];
	int n_workers;
};

int supervise_spawn(const char *file, bool search_path, const posix_spawn_file_actions_t *fa, char *const argv[],
		    pid_t *pid)
{
	posix_spawnattr_t attr;
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	int rc = search_path ? posix_spawnp(pid, file, fa, &attr, argv, environ)
			     : posix_spawn(pid, file, fa, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	return -rc;
}

static int spawn(char **argv, pid_t *pid)
{
	int rc = -supervise_spawn(argv[0], true, NULL, argv, pid);
	if (rc != 0) {
		LOG_ERROR("exec", "msg=\"cannot start command\" cmd=\"%s\" err=\"%s\"", argv[0], strerror(rc));
		return -rc;
	}
	LOG_INFO("exec", "msg=\"started\" cmd=\"%s\" pid=%d", argv[0], (int)*pid);
	return 0;
}

/* Starts an if-primary worker that the kernel ends with SIGTERM if this
 * node dies: a worker left running by a kill -9 of its node would run
 * beside the one the new primary starts. PR_SET_PDEATHSIG follows the
 * thread that forked: the manager thread, which outlives its workers. The
 * child does only async-signal-safe calls before exec; an exec failure
 * comes back through a close-on-exec pipe, so it is reported like
 * posix_spawn's. */
static int spawn_tied(char **argv, pid_t *pid)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return -errno;
	pid_t parent = getpid();
	pid_t c = fork();
	if (c < 0) {
		int e = errno;
		close(pfd[0]);
		close(pfd[1]);
		LOG_ERROR("exec", "msg=\"cannot start command\" cmd=\"%s\" err=\"%s\"", argv[0], strerror(e));
		return -e;
	}
	if (c == 0) {
		struct sigaction dfl = { .sa_handler = SIG_DFL };
		for (int sig = 1; sig < NSIG; sig++)
			sigaction(sig, &dfl, NULL); /* fails harmlessly for SIGKILL, SIGSTOP */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) == 0) {
			if (getppid() != parent)
				_exit(127); /* the node died before the prctl */
			execvp(argv[0], argv);
		}
		int e = errno;
		ssize_t w = write(pfd[1], &e, sizeof(e));
		(void)w;
		_exit(127);
	}
	close(pfd[1]);
	int e = 0;
	ssize_t n;
	while ((n = read(pfd[0], &e, sizeof(e))) < 0 && errno == EINTR)
		;
	close(pfd[0]);
	if (n == (ssize_t)sizeof(e)) {
		while (waitpid(c, NULL, 0) < 0 && errno == EINTR)
			;
		LOG_ERROR("exec", "msg=\"cannot start command\" cmd=\"%s\" err=\"%s\"", argv[0], strerror(e));
		return -e;
	}
	*pid = c;
	LOG_INFO("exec", "msg=\"started\" cmd=\"%s\" pid=%d", argv[0], (int)c);
	return 0;
}

int supervise_exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

static int wait_pid(pid_t pid)
{
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	return supervise_exit_code(status);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Splits one exec command into argv (no shell). */
static int split(const char *cmd, char ***argv)
{
	char err[256];
	size_t argc;
	int rc = shellwords_split(cmd, argv, &argc, err, sizeof(err));
	if (rc) {
		LOG_ERROR("exec", "msg=\"%s\" cmd=\"%s\"", err, cmd);
		/* A command that does not split is a mistake in litefs.yml. */
		return rc == ERR_INVAL ? ERR_CONFIG : rc;
	}
	if (argc == 0) {
		shellwords_free(*argv);
		*argv = NULL;
	}
	return 0;
}

/* ---- The role of a node ---------------------------------------------------- */

static bool node_role_is_primary(void *ctx)
{
	return node_is_primary(ctx);
}

static uint64_t node_role_wait(void *ctx, uint64_t seen, int timeout_ms)
{
	int64_t until = clock_mono_ms() + timeout_ms;
	uint64_t seq = node_wait_change(ctx, seen, timeout_ms);
	/* Once node_stop_changes() was called the feed answers at once; keep
	 * the manager's pace rather than spin. */
	int64_t left = until - clock_mono_ms();
	if (seq == seen && left > 0)
		sleep_ms((int)left);
	return seq;
}

void supervise_role_of_node(struct supervise_role *r, struct node *n)
{
	r->ctx = n;
	r->is_primary = node_role_is_primary;
	r->wait_change = node_role_wait;
}

/* ---- If-primary workers (manager thread) ----------------------------------- */

/* One more exit in a row: the next start waits backoff_min_ms doubled
 * for each earlier one, at most backoff_max_ms. Returns that delay. */
static int schedule_restart(struct supervisor *s, struct worker *w, int64_t now)
{
	w->crashes++;
	int64_t delay = s->opts.backoff_min_ms;
	for (unsigned k = 1; k < w->crashes && delay < s->opts.backoff_max_ms; k++)
		delay *= 2;
	if (delay > s->opts.backoff_max_ms)
		delay = s->opts.backoff_max_ms;
	w->due_ms = now + delay;
	return (int)delay;
}

static void start_worker(struct supervisor *s, struct worker *w, int64_t now)
{
	pid_t pid = 0;
	int rc = spawn_tied(w->argv, &pid);
	w->started_ms = now;
	pthread_mutex_lock(&s->mu);
	w->starts++;
	if (rc == 0)
		w->pid = pid;
	pthread_mutex_unlock(&s->mu);
	if (rc != 0) /* like an exit at once: tried again after the backoff */
		schedule_restart(s, w, now);
}

/* Reaps the workers that exited; while primary, schedules their restart. */
static void reap_workers(struct supervisor *s, bool primary, int64_t now)
{
	for (int i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];
		int status;
		if (w->pid <= 0 || waitpid(w->pid, &status, WNOHANG) != w->pid)
			continue;
		pthread_mutex_lock(&s->mu);
		pid_t pid = w->pid;
		w->pid = 0;
		pthread_mutex_unlock(&s->mu);
		int64_t ran_ms = now - w->started_ms;
		if (!primary) {
			LOG_INFO("exec", "msg=\"if-primary worker exited\" cmd=\"%s\" pid=%d code=%d", w->argv[0],
				 (int)pid, supervise_exit_code(status));
			continue;
		}
		if (ran_ms >= s->opts.backoff_reset_ms)
			w->crashes = 0;
		int delay = schedule_restart(s, w, now);
		LOG_WARN("exec",
			 "msg=\"if-primary worker exited; restarting it\" cmd=\"%s\" pid=%d code=%d ran_ms=%lld "
			 "restart_in_ms=%d",
			 w->argv[0], (int)pid, supervise_exit_code(status), (long long)ran_ms, delay);
	}
}

/* Sends SIGTERM to every running worker (when term_sent_ms is 0), waits
 * until they exited or the grace period since term_sent_ms passed, then
 * SIGKILLs and reaps the rest. */
static void stop_workers(struct supervisor *s, int64_t term_sent_ms, const char *why)
{
	if (term_sent_ms == 0) {
		term_sent_ms = clock_mono_ms();
		for (int i = 0; i < s->n_workers; i++) {
			struct worker *w = &s->workers[i];
			if (w->pid > 0) {
				LOG_INFO("exec", "msg=\"stopping if-primary worker\" cmd=\"%s\" pid=%d why=%s", w->argv[0],
					 (int)w->pid, why);
				kill(w->pid, SIGTERM);
			}
		}
	}
	for (int i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];
		if (w->pid <= 0)
			continue;
		bool killed = false;
		for (;;) {
			pid_t r = waitpid(w->pid, NULL, WNOHANG);
			if (r == w->pid || (r < 0 && errno != EINTR))
				break;
			if (!killed && clock_mono_ms() - term_sent_ms >= s->opts.grace_ms) {
				LOG_WARN("exec", "msg=\"if-primary worker did not stop within the grace period; killing it\" "
						 "cmd=\"%s\" pid=%d grace_ms=%d",
					 w->argv[0], (int)w->pid, s->opts.grace_ms);
				kill(w->pid, SIGKILL);
				killed = true;
			}
			sleep_ms(killed ? 5 : 20);
		}
		pthread_mutex_lock(&s->mu);
		w->pid = 0;
		w->stops++;
		w->kills += killed;
		pthread_mutex_unlock(&s->mu);
	}
}

static bool any_running(struct supervisor *s)
{
	for (int i = 0; i < s->n_workers; i++)
		if (s->workers[i].pid > 0)
			return true;
	return false;
}

static void *manager_main(void *arg)
{
	struct supervisor *s = arg;
	uint64_t seen = 0;
	bool was_primary = false;
	while (!atomic_load(&s->stopping)) {
		bool primary = s->role.is_primary(s->role.ctx);
		int64_t now = clock_mono_ms();
		reap_workers(s, primary, now);
		int timeout = s->opts.poll_ms;
		if (!primary) {
			if (any_running(s))
				stop_workers(s, 0, "demoted");
			for (int i = 0; i < s->n_workers; i++) {
				s->workers[i].due_ms = 0;
				s->workers[i].crashes = 0;
			}
		} else {
			if (!was_primary)
				LOG_INFO("exec", "msg=\"node is primary; starting if-primary workers\" n=%d", s->n_workers);
			for (int i = 0; i < s->n_workers && !atomic_load(&s->stopping); i++) {
				struct worker *w = &s->workers[i];
				if (w->pid > 0)
					continue;
				if (now >= w->due_ms)
					start_worker(s, w, now);
				if (w->pid == 0 && w->due_ms - now < timeout)
					timeout = (int)(w->due_ms - now);
			}
		}
		was_primary = primary;
		if (timeout < 1)
			timeout = 1;
		seen = s->role.wait_change(s->role.ctx, seen, timeout);
	}
	return NULL;
}

/* Ends the manager thread; from then on the caller's thread owns the
 * workers. */
static void manager_end(struct supervisor *s)
{
	if (!s->manager_running)
		return;
	atomic_store(&s->stopping, true);
	pthread_join(s->manager, NULL);
	s->manager_running = false;
}

/* ---- The application ------------------------------------------------------- */

int supervisor_start(const struct config *cfg, char **override, bool is_candidate, const struct supervise_role *role,
		     const struct supervise_opts *opts, struct supervisor **out)
{
	struct supervisor *s = calloc(1, sizeof(*s));
	int rc = 0;
	if (s == NULL)
		return ERR_NOMEM;
	pthread_mutex_init(&s->mu, NULL);
	s->opts = (struct supervise_opts){ SUPERVISE_GRACE_MS, SUPERVISE_BACKOFF_MIN_MS, SUPERVISE_BACKOFF_MAX_MS,
					   SUPERVISE_BACKOFF_RESET_MS, SUPERVISE_POLL_MS };
	if (opts) {
		if (opts->grace_ms > 0)
			s->opts.grace_ms = opts->grace_ms;
		if (opts->backoff_min_ms > 0)
			s->opts.backoff_min_ms = opts->backoff_min_ms;
		if (opts->backoff_max_ms > 0)
			s->opts.backoff_max_ms = opts->backoff_max_ms;
		if (opts->backoff_reset_ms > 0)
			s->opts.backoff_reset_ms = opts->backoff_reset_ms;
		if (opts->poll_ms > 0)
			s->opts.poll_ms = opts->poll_ms;
	}
	*out = s;
	if (override) {
		return spawn(override, &s->app);
	}
	/* The application is the last entry that is neither filtered out nor
	 * an if-primary worker. */
	ssize_t app_idx = -1;
	for (size_t i = 0; i < cfg->n_exec; i++) {
		const struct config_exec *e = &cfg->exec[i];
		if ((e->if_candidate && !is_candidate) || e->if_primary || e->cmd[0] == '\0')
			continue;
		app_idx = (ssize_t)i;
	}
	for (size_t i = 0; i < cfg->n_exec; i++) {
		const struct config_exec *e = &cfg->exec[i];
		char **argv = NULL;
		if (e->if_candidate && !is_candidate)
			continue;
		if ((rc = split(e->cmd, &argv)) != 0)
			return rc;
		if (argv == NULL)
			continue;
		if (e->if_primary) {
			if (s->n_workers == SUPERVISE_MAX_WORKERS) {
				shellwords_free(argv);
				LOG_ERROR("exec", "msg=\"too many if-primary commands\" max=%d", SUPERVISE_MAX_WORKERS);
				return ERR_CONFIG;
			}
			s->workers[s->n_workers++].argv = argv;
			continue;
		}
		if ((ssize_t)i == app_idx) {
			rc = spawn(argv, &s->app);
			shellwords_free(argv);
			if (rc)
				return rc;
			continue;
		}
		pid_t pid;
		rc = spawn(argv, &pid);
		if (rc == 0) {
			int code = wait_pid(pid);
			if (code != 0) {
				LOG_ERROR("exec", "msg=\"command failed\" cmd=\"%s\" code=%d", argv[0], code);
				rc = ERR_CONFIG;
			} else {
				LOG_INFO("exec", "msg=\"command finished\" cmd=\"%s\"", argv[0]);
			}
		}
		shellwords_free(argv);
		if (rc)
			return rc;
	}
	if (s->n_workers == 0)
		return 0;
	if (role == NULL) {
		LOG_ERROR("exec", "msg=\"if-primary commands need the node's role\"");
		return ERR_INVAL;
	}
	s->role = *role;
	if ((rc = pthread_create(&s->manager, NULL, manager_main, s)) != 0) {
		LOG_ERROR("exec", "msg=\"cannot start the if-primary manager\" err=\"%s\"", strerror(rc));
		return -rc;
	}
	s->manager_running = true;
	return 0;
}

bool supervisor_reap(struct supervisor *s, int *code)
{
	int status;
	/* Only the application: the manager reaps its workers, and the node
	 * has other children (sqlchild.c) whose owners reap them. */
	if (s->app > 0 && waitpid(s->app, &status, WNOHANG) == s->app) {
		s->app = 0;
		s->app_exited = true;
		s->app_code = supervise_exit_code(status);
	}
	if (s->app_exited) {
		*code = s->app_code;
		return true;
	}
	return false;
}

bool supervisor_running(struct supervisor *s)
{
	return s && s->app > 0;
}

void supervisor_signal(struct supervisor *s, int sig)
{
	if (s == NULL)
		return;
	manager_end(s);
	if (s->app > 0)
		kill(s->app, sig);
	bool sent = false;
	for (int i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];
		if (w->pid > 0) {
			LOG_INFO("exec", "msg=\"stopping if-primary worker\" cmd=\"%s\" pid=%d why=stop", w->argv[0],
				 (int)w->pid);
			kill(w->pid, SIGTERM);
			sent = true;
		}
	}
	if (sent && s->term_sent_ms == 0)
		s->term_sent_ms = clock_mono_ms();
}

/* Ends the manager and stops what workers still run. */
static void workers_end(struct supervisor *s)
{
	manager_end(s);
	if (any_running(s))
		stop_workers(s, s->term_sent_ms, "stop");
}

int supervisor_wait(struct supervisor *s, int timeout_ms)
{
	int code = 0;
	for (int waited = 0; s->app > 0; waited += 20) {
		int status;
		pid_t pid = waitpid(s->app, &status, WNOHANG);
		if (pid == s->app) {
			code = supervise_exit_code(status);
			s->app = 0;
			break;
		}
		if (waited >= timeout_ms) {
			LOG_WARN("exec", "msg=\"application did not exit; killing it\" pid=%d", (int)s->app);
			kill(s->app, SIGKILL);
		}
		sleep_ms(20);
	}
	if (s->app_exited)
		code = s->app_code;
	workers_end(s);
	return code;
}

int supervisor_workers(struct supervisor *s, int i, struct supervise_worker_state *out)
{
	if (s == NULL)
		return 0;
	if (out && i >= 0 && i < s->n_workers) {
		pthread_mutex_lock(&s->mu);
		const struct worker *w = &s->workers[i];
		*out = (struct supervise_worker_state){ w->pid, w->starts, w->stops, w->kills };
		pthread_mutex_unlock(&s->mu);
	}
	return s->n_workers;
}

void supervisor_free(struct supervisor *s)
{
	if (s == NULL)
		return;
	workers_end(s);
	for (int i = 0; i < s->n_workers; i++)
		shellwords_free(s->workers[i].argv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
