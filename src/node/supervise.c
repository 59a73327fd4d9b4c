#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "node/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/shellwords.h"
#include "node/supervise.h"

extern char **environ;

#define MAX_WORKERS 16
#define WORKER_GRACE_MS 10000

struct worker {
	char **argv;
	pid_t pid; /* 0 when not running */
};

struct supervisor {
	pid_t app;          /* 0 when none or exited */
	int app_code;
	bool app_exited;
	struct worker workers[MAX_WORKERS];
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

static int exit_code_of(int status)
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
	return exit_code_of(status);
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

int supervisor_start(const struct config *cfg, char **override, bool is_candidate, bool is_primary,
		     struct supervisor **out)
{
	struct supervisor *s = calloc(1, sizeof(*s));
	int rc = 0;
	if (s == NULL)
		return ERR_NOMEM;
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
			if (s->n_workers == MAX_WORKERS) {
				shellwords_free(argv);
				LOG_ERROR("exec", "msg=\"too many if-primary commands\" max=%d", MAX_WORKERS);
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
	supervisor_set_primary(s, is_primary);
	return 0;
}

static void stop_worker(struct worker *w)
{
	if (w->pid <= 0)
		return;
	kill(w->pid, SIGTERM);
	for (int waited = 0; waited < WORKER_GRACE_MS; waited += 50) {
		if (waitpid(w->pid, NULL, WNOHANG) == w->pid) {
			w->pid = 0;
			return;
		}
		struct timespec ts = { 0, 50 * 1000000L };
		nanosleep(&ts, NULL);
	}
	LOG_WARN("exec", "msg=\"worker did not stop; killing it\" cmd=\"%s\" pid=%d", w->argv[0], (int)w->pid);
	kill(w->pid, SIGKILL);
	waitpid(w->pid, NULL, 0);
	w->pid = 0;
}

void supervisor_set_primary(struct supervisor *s, bool is_primary)
{
	for (int i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];
		if (is_primary && w->pid == 0)
			spawn(w->argv, &w->pid);
		else if (!is_primary && w->pid > 0)
			stop_worker(w);
	}
}

bool supervisor_reap(struct supervisor *s, int *code)
{
	int status;
	/* Only our own children: the node has other ones (sqlchild.c) whose
	 * owners reap them. */
	if (s->app > 0 && waitpid(s->app, &status, WNOHANG) == s->app) {
		s->app = 0;
		s->app_exited = true;
		s->app_code = exit_code_of(status);
	}
	for (int i = 0; i < s->n_workers; i++) {
		if (s->workers[i].pid > 0 && waitpid(s->workers[i].pid, &status, WNOHANG) == s->workers[i].pid) {
			LOG_WARN("exec", "msg=\"if-primary worker exited\" cmd=\"%s\" code=%d", s->workers[i].argv[0],
				 exit_code_of(status));
			s->workers[i].pid = 0;
		}
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
	if (s->app > 0)
		kill(s->app, sig);
	for (int i = 0; i < s->n_workers; i++)
		if (s->workers[i].pid > 0)
			kill(s->workers[i].pid, sig);
}

int supervisor_wait(struct supervisor *s, int timeout_ms)
{
	int code = 0;
	for (int waited = 0; s->app > 0; waited += 20) {
		int status;
		pid_t pid = waitpid(s->app, &status, WNOHANG);
		if (pid == s->app) {
			code = exit_code_of(status);
			s->app = 0;
			break;
		}
		if (waited >= timeout_ms) {
			LOG_WARN("exec", "msg=\"application did not exit; killing it\" pid=%d", (int)s->app);
			kill(s->app, SIGKILL);
		}
		struct timespec ts = { 0, 20 * 1000000L };
		nanosleep(&ts, NULL);
	}
	if (s->app_exited)
		code = s->app_code;
	supervisor_set_primary(s, false);
	return code;
}

void supervisor_free(struct supervisor *s)
{
	if (s == NULL)
		return;
	for (int i = 0; i < s->n_workers; i++)
		shellwords_free(s->workers[i].argv);
	free(s);
}
