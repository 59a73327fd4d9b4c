/*
 * cmd_mount.c — `litefs mount`: read litefs.yml, open the data directory,
 * mount the FUSE file system, run the application, and shut down cleanly.
 *
 * Threads: the FUSE loop runs in its own thread; the main thread waits for
 * signals (SIGINT/SIGTERM/SIGHUP, blocked everywhere else and taken with
 * sigwaitinfo) and for the application to exit (SIGCHLD). Shutdown order:
 * stop the application (forward the signal, wait), unmount (which ends the
 * FUSE loop), then close the store, which writes the clean-shutdown
 * markers that make the next start O(1).
 *
 * Roles (static lease): lease.candidate: true makes this node the primary;
 * it creates the cluster ID if there is none and serves POST /stream.
 * lease.candidate: false makes it a replica: the replication client
 * (replica.c) follows the primary at lease.advertise-url, and the
 * application starts only after the first full sync (unless skip-sync),
 * while signals still stop the node. The replica stops before the HTTP
 * API and the mount, so no apply runs while they go away.
 *
 * A stop always stops (the stop guard, below): a thread stuck holding a
 * database's mutex (a hung fsync, a lost wake-up) would otherwise block
 * the FUSE loop's join, the HTTP server's and the store's for ever. From
 * the moment a stop begins, a guard thread watches the clock: once
 * MOUNT_STOP_GRACE_MS passed while a database's mutex is stalled (held
 * longer than the watchdog's bound, store.h), or MOUNT_STOP_HARD_MS
 * passed whatever the cause, it marks clean the databases whose mutex it
 * can still take (the others are recovered at the next start, never
 * trusted), aborts the FUSE connection, detaches the mount and ends the
 * process with MOUNT_EXIT_FORCED and a level=error line. It joins no
 * thread: the stuck ones end with the process.
 *
 * Backup (backup.c): on the primary, with backup.type litefs-cloud (or
 * LITEFS_CLOUD_TOKEN), the backup client starts after the HTTP API; the
 * application waits for its first sync with the service — without limit
 * when the data directory held no database (so a node started empty gets
 * every database back first), at most MOUNT_BACKUP_WAIT_MS otherwise —
 * unless skip-sync. It stops first, before the replica and the mount.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "proto/cluster.h"
#include "cmd/cmd.h"
#include "node/config.h"
#include "base/err.h"
#include "node/fusefs.h"
#include "node/http.h"
#include "node/lease.h"
#include "node/backup.h"
#include "base/log.h"
#include "node/replica.h"
#include "node/store.h"
#include "node/supervise.h"
#include "node/syncrepl.h"
#include "node/writelock.h"
#include "proxy/proxy.h"
#include "base/sys.h"

/* How long a primary that has databases waits for its first sync with the
 * backup service before starting the application anyway. */
#define MOUNT_BACKUP_WAIT_MS 5000
/* The stop guard (see above): requests in flight get this long when a
 * database's mutex is stalled, and a stop this long whatever holds it up
 * (above the application's 30 s and the HTTP API's 10 s of grace). */
#define MOUNT_STOP_GRACE_MS 10000
#define MOUNT_STOP_HARD_MS 60000
/* Exit status of a forced stop: not the application's, not a signal's
 * (EX_SOFTWARE of sysexits.h). */
#define MOUNT_EXIT_FORCED 70

static const char mount_usage[] =
	"Usage: litefs mount [-config PATH] [-no-expand-env] [-- CMD [ARGS...]]\n"
	"\n"
	"Mounts the LiteFS file system at fuse.dir, keeping databases and their LTX\n"
	"history in data.dir, and runs the application given by exec (or by the\n"
	"command after --, which overrides exec).\n"
	"\n"
	"Options:\n"
	"  -config PATH      configuration file (default: ./litefs.yml, ~/litefs.yml,\n"
	"                    /etc/litefs.yml, the first that exists)\n"
	"  -no-expand-env    do not expand $VAR and ${...} in the configuration\n"
	"  -h, --help        show this help\n"
	"\n"
	"Environment:\n"
	"  LITEFS_CLOUD_TOKEN    back up to a LiteFS Cloud compatible service (litefs-cloud)\n"
	"                        with this token when litefs.yml has no backup section\n"
	"  LITEFS_CLOUD_ENDPOINT its URL (default https://litefs.fly.io); see docs/backup.md\n"
	"  LITEFS_SECRET         http.secret when litefs.yml sets none\n"
	"  LITEFS_LOCK_STALL_MS  watchdog bound: a database lock held longer is logged\n"
	"                        at level=error and counted (default 10000)\n"
	"  LITEFS_FUSE_PASSTHROUGH=0|1\n"
	"                        FUSE passthrough of rollback journals off or on,\n"
	"                        whatever fuse.passthrough says (see docs/mount.md)\n"
	"  LITEFS_FUSE_URING=0|1 FUSE requests through io_uring off or on, whatever\n"
	"                        fuse.uring says (Linux 6.14+; see docs/mount.md)\n"
	"  LITEFS_FAULT=call:N[:errno][:stall=MS][:path=TEXT]\n"
	"                        (tests) make the Nth pwrite/fsync/rename/unlink/ftruncate\n"
	"                        of the commit path fail with EIO (or errno); stall=MS\n"
	"                        makes it hang MS ms instead, path=TEXT counts only calls\n"
	"                        on files whose path contains TEXT (see src/base/sys.h);\n"
	"                        selfopen:N counts the node's own opens of its mount\n"
	"\n"
	"The node exits with the application's exit code. SIGINT and SIGTERM are\n"
	"forwarded to the application; the file system is unmounted when it exits.\n"
	"A stop that cannot finish (a database lock stuck for 10 s, or 60 s in all)\n"
	"is forced: the mount is detached and the node exits with status 70.\n"
	"See docs/config.md for every configuration key.\n";

/* This node's name for other nodes: lease.hostname, else the OS's. */
static void node_hostname(const struct config *cfg, char *buf, size_t len)
{
	if (cfg->lease.hostname[0]) {
		snprintf(buf, len, "%s", cfg->lease.hostname);
		return;
	}
	if (gethostname(buf, len) != 0)
		snprintf(buf, len, "localhost");
	buf[len - 1] = '\0';
}

struct fuse_thread {
	struct fusefs *fs;
	int rc;
	bool done;
};

static void *fuse_thread_main(void *arg)
{
	struct fuse_thread *ft = arg;
	ft->rc = fusefs_run(ft->fs);
	ft->done = true;
	/* Wake the main thread so that it notices the loop ended. */
	kill(getpid(), SIGUSR1);
	return NULL;
}

/* The node ID is random, created once per data directory (as LiteFS). */
static uint64_t load_node_id(const char *data_dir)
{
	char path[4096];
	uint64_t id = 0;
	snprintf(path, sizeof(path), "%s/id", data_dir);
	FILE *f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%" SCNx64, &id) != 1)
			id = 0;
		fclose(f);
	}
	if (id != 0)
		return id;
	while (id == 0)
		if (getrandom(&id, sizeof(id), 0) != sizeof(id))
			id = (uint64_t)getpid() << 32 | (uint64_t)time(NULL);
	f = fopen(path, "w");
	if (f) {
		fprintf(f, "%016" PRIx64 "\n", id);
		fflush(f);
		fsync(fileno(f));
		fclose(f);
	}
	return id;
}

/* A first sync to wait for: the replica's with its primary, or the
 * primary's with the backup service. */
struct first_sync {
	const char *what;                          /* for the log lines */
	bool (*wait)(void *ctx, int timeout_ms);   /* true once synced */
	void *ctx;
	int64_t max_ms;                            /* < 0: no limit */
};

static bool replica_synced(void *ctx, int timeout_ms)
{
	return replica_wait_synced(ctx, timeout_ms);
}

struct lease_ready {
	struct lease *lease;
	struct replica *rep;
};

static bool lease_ready(void *ctx, int timeout_ms)
{
	struct lease_ready *lr = ctx;
	return lease_wait_ready(lr->lease, lr->rep, timeout_ms);
}

static bool backup_synced(void *ctx, int timeout_ms)
{
	return backup_wait_synced(ctx, timeout_ms);
}

/* Waits for a first sync while still taking the stop signals. Returns 0
 * when synced (or when max_ms passed), the signal that asked to stop, or
 * -1 when the file system loop ended. */
static int wait_first_sync(const struct first_sync *fs, const sigset_t *sigs, const struct fuse_thread *ft)
{
	LOG_INFO("mount", "msg=\"waiting for the first sync with the %s before starting the application\"", fs->what);
	for (int64_t waited = 0;; waited += 200) {
		if (fs->wait(fs->ctx, 200))
			return 0;
		if (fs->max_ms >= 0 && waited >= fs->max_ms) {
			LOG_WARN("mount", "msg=\"no sync with the %s yet; starting the application anyway\" waited_ms=%" PRId64,
				 fs->what, waited);
			return 0;
		}
		struct timespec zero = { 0, 0 };
		siginfo_t si;
		int sig = sigtimedwait(sigs, &si, &zero);
		if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
			LOG_INFO("mount", "msg=\"signal received before the first sync; shutting down\" signal=%d", sig);
			return sig;
		}
		if (sig == SIGUSR1 && ft->done) {
			LOG_WARN("mount", "msg=\"file system loop ended\"");
			return -1;
		}
	}
}

/* The stop guard (see the top of the file). */
struct stop_guard {
	struct store *st;             /* borrowed; never freed while the guard runs */
	char mountpoint[4096];        /* a copy: fusefs_unmount() frees its own */
	unsigned fuse_conn;           /* /sys/fs/fuse/connections/<n>; 0: unknown */
	int64_t start_ms;             /* clock_mono_ms() when the stop began */
	int64_t lock_stall_ms;        /* st's, read before the thread starts */
	pthread_mutex_t mu;           /* with cond: guards the three flags */
	pthread_cond_t cond;
	bool done;                    /* the stop finished by itself */
	bool store_closing;           /* main thread in store_close(): st is its alone */
	bool forcing;                 /* the guard took over; main must not touch st */
	atomic_bool never;            /* clock_wait_flag's stop flag, never set */
	pthread_t tid;
	bool started;
};

/* The FUSE connection's number (the mount's minor device number, as
 * /sys/fs/fuse/connections names it), read from /proc/self/mountinfo so
 * that no request to the possibly stuck file system is needed. 0 if not
 * found. */
static unsigned fuse_conn_of(const char *mountpoint)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[8192];
	unsigned conn = 0;
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned major, minor;
		char mnt[4096];
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &major, &minor, mnt) == 3 && major == 0 &&
		    strcmp(mnt, mountpoint) == 0)
			conn = minor; /* the last one is on top */
	}
	fclose(f);
	return conn;
}

/* Ends the FUSE connection: every request in flight (an application stuck
 * in fsync) fails with ENOTCONN instead of waiting for a thread that will
 * never answer. Needs fusectl mounted; otherwise the end of the process
 * does it, when the kernel closes /dev/fuse. */
static void fuse_abort_conn(unsigned conn)
{
	char path[128];
	if (conn == 0)
		return;
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", conn);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, "1", 1) == 1)
		LOG_WARN("mount", "msg=\"FUSE connection aborted\" conn=%u", conn);
	close(fd);
}

/* Called with forcing set, or with store_closing set (then st belongs to
 * the main thread and is not touched). */
static _Noreturn void stop_guard_force(struct stop_guard *g, bool store_closing, int64_t waited_ms, int stalled)
{
	LOG_ERROR("mount",
		  "msg=\"stop did not finish in time; forcing it: databases whose lock is stuck are left for "
		  "recovery, the FUSE connection is aborted and the mount detached\" waited_ms=%" PRId64
		  " stalled_dbs=%d code=%d",
		  waited_ms, stalled, MOUNT_EXIT_FORCED);
	int unclean = -1;
	if (!store_closing) {
		unclean = store_close_forced(g->st, 500);
	} else if (clock_wait_flag(&g->mu, &g->cond, &g->done, &g->never, 2000)) {
		/* store_close() finished its markers after all: the main thread
		 * ends normally. */
		pthread_exit(NULL);
	}
	fuse_abort_conn(g->fuse_conn);
	if (umount2(g->mountpoint, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
		LOG_ERROR("mount", "msg=\"cannot detach the mount\" dir=%s err=\"%s\"", g->mountpoint, strerror(errno));
	LOG_ERROR("mount", "msg=\"stopped by force\" code=%d unclean_dbs=%d", MOUNT_EXIT_FORCED, unclean < 0 ? 0 : unclean);
	fflush(stderr);
	/* Not exit(): atexit handlers and stdio teardown must not run while
	 * other threads are stuck in the middle of their work. */
	_exit(MOUNT_EXIT_FORCED);
}

static void *stop_guard_main(void *arg)
{
	struct stop_guard *g = arg;
	/* Not g->st->lock_stall_ms: the thread may first run after the main
	 * thread closed (and freed) the store. */
	int64_t stall_ms = g->lock_stall_ms;
	for (;;) {
		if (clock_wait_flag(&g->mu, &g->cond, &g->done, &g->never, 250))
			return NULL;
		/* Decided under mu, so that the main thread either sees forcing
		 * before it enters store_close() or the guard sees store_closing
		 * and leaves st alone (store_close frees it). */
		pthread_mutex_lock(&g->mu);
		if (g->done) {
			pthread_mutex_unlock(&g->mu);
			return NULL;
		}
		bool closing = g->store_closing;
		int64_t waited = clock_mono_ms() - g->start_ms;
		int stalled = closing ? 0 : store_locks_held_over(g->st, stall_ms);
		bool force = (waited >= MOUNT_STOP_GRACE_MS && stalled > 0) || waited >= MOUNT_STOP_HARD_MS;
		if (force && !closing)
			g->forcing = true;
		pthread_mutex_unlock(&g->mu);
		if (force)
			stop_guard_force(g, closing, waited, stalled);
	}
}

/* Starts the guard once, when a stop begins; a failure to start it only
 * loses the guarantee. */
static void stop_guard_start(struct stop_guard *g, struct store *st, const char *mountpoint)
{
	if (g->started || st == NULL)
		return;
	g->st = st;
	g->lock_stall_ms = st->lock_stall_ms;
	snprintf(g->mountpoint, sizeof(g->mountpoint), "%s", mountpoint);
	g->fuse_conn = fuse_conn_of(g->mountpoint);
	g->start_ms = clock_mono_ms();
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cond, NULL);
	atomic_init(&g->never, false);
	g->started = pthread_create(&g->tid, NULL, stop_guard_main, g) == 0;
	if (!g->started)
		LOG_WARN("mount", "msg=\"cannot start the stop guard; a stuck stop would not be forced\"");
}

/* The main thread is about to close the store: from now on the guard does
 * not touch it. If the guard already took over, the process is about to
 * end: wait for that. */
static void stop_guard_enter_close(struct stop_guard *g)
{
	if (!g->started)
		return;
	pthread_mutex_lock(&g->mu);
	if (g->forcing) {
		pthread_mutex_unlock(&g->mu);
		for (;;)
			pause();
	}
	g->store_closing = true;
	pthread_mutex_unlock(&g->mu);
}

/* The stop finished by itself: the guard ends without acting. */
static void stop_guard_finish(struct stop_guard *g)
{
	if (!g->started)
		return;
	pthread_mutex_lock(&g->mu);
	g->done = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->mu);
	pthread_join(g->tid, NULL);
	g->started = false;
}

/* A fuse.* switch, unless the environment variable env is 0 or 1 (A/B
 * benchmarks, tests); any other value leaves the file's setting. */
static bool fuse_switch(const char *env, bool configured)
{
	const char *v = getenv(env);
	if (v && strcmp(v, "0") == 0)
		return false;
	if (v && strcmp(v, "1") == 0)
		return true;
	return configured;
}

/* LITEFS_LOCK_STALL_MS: the watchdog's bound (0: the default). */
static int64_t lock_stall_ms_from_env(void)
{
	const char *v = getenv("LITEFS_LOCK_STALL_MS");
	char *end;
	long long ms = v ? strtoll(v, &end, 10) : 0;
	if (v == NULL || *v == '\0' || *end != '\0' || ms <= 0) {
		if (v != NULL && *v != '\0')
			LOG_WARN("mount", "msg=\"ignoring LITEFS_LOCK_STALL_MS: not a positive number of ms\" value=\"%s\"", v);
		return 0;
	}
	return ms;
}

int cmd_mount_main(int argc, char **argv)
{
	const char *config_path = NULL;
	bool expand_env = true;
	char **override_cmd = NULL;
	char errbuf[4096];
	struct config cfg;
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			if (i + 1 < argc)
				override_cmd = &argv[i + 1];
			break;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help") || !strcmp(a, "-help")) {
			fputs(mount_usage, stdout);
			return 0;
		} else if ((!strcmp(a, "-config") || !strcmp(a, "--config")) && i + 1 < argc) {
			config_path = argv[++i];
		} else if (!strncmp(a, "-config=", 8) || !strncmp(a, "--config=", 9)) {
			config_path = strchr(a, '=') + 1;
		} else if (!strcmp(a, "-no-expand-env") || !strcmp(a, "--no-expand-env")) {
			expand_env = false;
		} else {
			fprintf(stderr, "litefs mount: unknown argument %s\n\n%s", a, mount_usage);
			return 2;
		}
	}

	if (sys_fault_init_from_env() != 0)
		return 2;

	char path[4096];
	int rc = config_find(config_path, path, sizeof(path));
	if (rc) {
		fprintf(stderr, "litefs mount: no configuration file found (tried ./litefs.yml, ~/litefs.yml, "
				"/etc/litefs.yml); pass -config PATH\n");
		return 1;
	}
	rc = config_load_file(path, expand_env, &cfg, errbuf, sizeof(errbuf));
	if (rc == 0)
		rc = config_apply_env(&cfg, NULL, NULL);
	if (rc == 0)
		rc = config_validate(&cfg, errbuf, sizeof(errbuf));
	if (rc) {
		fprintf(stderr, "litefs mount: %s\n", rc == ERR_CONFIG || rc < 0 ? errbuf : err_str(rc));
		config_free(&cfg);
		return 1;
	}
	struct config_issue issues[16];
	size_t n_issues = config_unsupported(&cfg, issues, 16);
	bool fatal = false;
	for (size_t k = 0; k < n_issues && k < 16; k++) {
		fprintf(stderr, "litefs mount: %s: %s\n", path, issues[k].msg);
		fatal |= issues[k].fatal;
	}
	if (fatal) {
		config_free(&cfg);
		return 1;
	}
	for (size_t k = 0; k < cfg.n_warnings; k++)
		LOG_WARN("config", "msg=\"%s\"", cfg.warnings[k]);
	if (cfg.log.debug || cfg.fuse.debug)
		log_min_level = LOG_LEVEL_DEBUG;

	/* Every signal the main thread handles is blocked in all threads. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGCHLD);
	sigaddset(&sigs, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct store *st = NULL;
	struct fusefs *fs = NULL;
	struct http_server *http = NULL;
	struct supervisor *sup = NULL;
	struct replica *rep = NULL;
	struct backup *bk = NULL;
	struct lease *lease = NULL;
	struct proxy *px = NULL;
	struct cluster cluster = { 0 };
	struct syncrepl *sync = NULL;
	struct writelock *wl = NULL;
	bool candidate = cfg.lease.candidate;
	/* With etcd the role moves (lease.c): every node starts as a replica
	 * of nobody and the lease decides. */
	bool etcd = !strcmp(cfg.lease.type, "etcd");
	char hostname[256];
	int exit_code = 1;

	if (mkdir(cfg.data.dir, FILEIO_DIR_MODE) != 0 && errno != EEXIST) {
		fprintf(stderr, "litefs mount: cannot create data.dir %s: %s\n", cfg.data.dir, strerror(errno));
		goto out;
	}
	struct store_opts so = {
		.data_dir = cfg.data.dir,
		.compress = cfg.data.compress,
		.retention_ms = cfg.data.retention_ms,
		.retention_monitor_ms = cfg.data.retention_monitor_interval_ms,
		.node_id = load_node_id(cfg.data.dir),
		.lock_stall_ms = lock_stall_ms_from_env(),
	};
	if ((rc = store_open(&so, &st)) != 0) {
		if (rc == ERR_DATA_DIR_BUSY) {
			int holder = store_data_dir_holder(cfg.data.dir);
			char who[64] = "another litefs node";
			if (holder > 0)
				snprintf(who, sizeof(who), "another litefs node (pid %d)", holder);
			fprintf(stderr, "litefs mount: data.dir %s is in use by %s; each node needs its own data.dir\n",
				cfg.data.dir, who);
		} else {
			fprintf(stderr, "litefs mount: cannot open data.dir %s: %s\n", cfg.data.dir, err_str(rc));
		}
		goto out;
	}
	/* A primary that starts with no database at all (a fresh data.dir)
	 * gets them back from the backup service before the application. */
	bool fresh = store_count(st) == 0;
	/* Before the mount serves anything: a replica refuses writes from the
	 * first request on. */
	node_set_role(&st->node, candidate && !etcd, NULL);
	node_hostname(&cfg, hostname, sizeof(hostname));
	/* Advertised by the lease and the stream handshake (docs/proxy.md). */
	proxy_advertise_url(&cfg, hostname, st->node.proxy_url, sizeof(st->node.proxy_url));
	/* A fresh primary that backs up takes its cluster's ID from the
	 * service (backup.c), so that the cluster comes back after every node
	 * lost its data directory; any other primary creates one if needed. */
	bool id_from_backup = candidate && fresh && backup_configured(&cfg);
	/* With etcd the cluster ID comes from etcd, or is created there once
	 * (lease_start). */
	if ((rc = cluster_open(&cluster, cfg.data.dir, candidate && !id_from_backup && !etcd)) != 0) {
		fprintf(stderr, "litefs mount: cannot read or create %s/clusterid: %s\n", cfg.data.dir,
			rc == ERR_CONFIG ? "the file does not hold a cluster ID (LFSC + 16 hex digits)" : err_str(rc));
		goto out;
	}
	/* Synchronous replication: commits wait on it once this node is the
	 * primary (from the first FUSE request; replicas never commit). */
	if (cfg.lease.sync_replicas > 0) {
		struct syncrepl_opts sro = {
			.replicas = (unsigned)cfg.lease.sync_replicas,
			.timeout_ms = cfg.lease.sync_timeout_ms,
			.fail_on_timeout = !strcmp(cfg.lease.sync_on_timeout, "fail"),
		};
		if (!(sync = syncrepl_new(&sro))) {
			fprintf(stderr, "litefs mount: out of memory\n");
			goto out;
		}
		st->node.sync = sync;
		LOG_INFO("mount", "msg=\"synchronous replication: a commit returns once replicas hold it\" "
				  "replicas=%u timeout_ms=%lld on_timeout=%s",
			 sro.replicas, (long long)sro.timeout_ms, cfg.lease.sync_on_timeout);
	}
	struct fusefs_opts fo = {
		.mountpoint = cfg.fuse.dir,
		.allow_other = cfg.fuse.allow_other,
		.debug = cfg.fuse.debug,
		.attr_timeout = 1.0,
		.passthrough = fuse_switch("LITEFS_FUSE_PASSTHROUGH", cfg.fuse.passthrough),
		.uring = fuse_switch("LITEFS_FUSE_URING", cfg.fuse.uring),
	};
	if (fo.passthrough && strcmp(cfg.lease.type, "static") != 0)
		LOG_WARN("mount", "msg=\"FUSE passthrough forced on by LITEFS_FUSE_PASSTHROUGH with a lease that moves: a "
				  "demotion while a client has a journal open can corrupt the database (docs/mount.md)\" "
				  "lease=%s", cfg.lease.type);
	if ((rc = fusefs_mount(st, &fo, &fs)) != 0) {
		fprintf(stderr, "litefs mount: cannot mount %s: %s\n", cfg.fuse.dir, err_str(rc));
		goto out;
	}
	if ((rc = store_start(st)) != 0)
		goto out;
	if (etcd && (rc = replica_start_follower(st, &cfg, cfg.data.dir, &cluster, &rep)) != 0) {
		fprintf(stderr, "litefs mount: cannot start replication: %s\n", err_str(rc));
		goto out;
	}
	if (etcd && (rc = lease_start(st, rep, &cluster, &cfg, hostname, &lease)) != 0) {
		fprintf(stderr, "litefs mount: %s: %s\n",
			rc == ERR_LEASE_CLUSTER ? "refusing to join: etcd holds another cluster's ID under lease.etcd.key "
						  "(see the log line above)"
						: "cannot start the etcd lease",
			err_str(rc));
		goto out;
	}
	if ((rc = writelock_start(st, &cluster, cfg.http.secret, &wl)) != 0)
		goto out;
	writelock_set_replica(wl, rep);
	struct http_opts ho = {
		.writelock = wl,
		.addr = cfg.http.addr,
		.secret = cfg.http.secret,
		.hostname = hostname,
		.candidate = candidate,
		.cluster = &cluster,
		.lease = lease,
	};
	if ((rc = http_start(st, fs, &ho, &http)) != 0) {
		fprintf(stderr, "litefs mount: cannot serve HTTP on %s: %s\n", cfg.http.addr, err_str(rc));
		goto out;
	}
	if (cfg.proxy.target[0] && (rc = proxy_start(st, &cfg, hostname, &px)) != 0) {
		fprintf(stderr, "litefs mount: cannot start the proxy on %s: %s\n", cfg.proxy.addr, err_str(rc));
		goto out;
	}

	static struct stop_guard guard; /* static: outlives nothing it may touch after _exit */
	struct fuse_thread ft = { .fs = fs };
	pthread_t tid;
	if (pthread_create(&tid, NULL, fuse_thread_main, &ft) != 0)
		goto out;

	int stop = 0;
	if (!candidate && !etcd && (rc = replica_start(st, &cfg, cfg.data.dir, &cluster, &rep)) != 0) {
		fprintf(stderr, "litefs mount: cannot start replication: %s\n", err_str(rc));
		stop = -1;
	}
	writelock_set_replica(wl, rep);
	if (stop == 0 && candidate && backup_configured(&cfg) &&
	    (rc = backup_start(st, &cfg, cfg.data.dir, &cluster, &bk)) != 0) {
		fprintf(stderr, "litefs mount: cannot start the backup client: %s\n", err_str(rc));
		stop = -1;
	}
	if (stop == 0 && lease && !cfg.skip_sync) {
		struct lease_ready lr = { lease, rep };
		struct first_sync w = { "primary (or the lease)", lease_ready, &lr, -1 };
		stop = wait_first_sync(&w, &sigs, &ft);
	} else if (stop == 0 && rep && !cfg.skip_sync) {
		struct first_sync w = { "primary", replica_synced, rep, -1 };
		stop = wait_first_sync(&w, &sigs, &ft);
	}
	/* A fresh primary must not start its application on empty databases
	 * that the service would then overwrite; one with data waits a little
	 * (a restore made while it was down), then starts anyway. */
	if (stop == 0 && bk && !cfg.skip_sync) {
		struct first_sync w = { "backup service", backup_synced, bk, fresh ? -1 : MOUNT_BACKUP_WAIT_MS };
		stop = wait_first_sync(&w, &sigs, &ft);
	}

	/* The application: `-- cmd` overrides exec. The if-primary workers
	 * follow the node's role (node_set_role) for as long as it runs. */
	struct supervise_role role;
	supervise_role_of_node(&role, &st->node);
	rc = stop == 0 ? supervisor_start(&cfg, override_cmd, candidate, &role, NULL, &sup) : 0;
	if (stop != 0) {
		exit_code = stop > 0 ? 0 : 1;
	} else if (rc) {
		exit_code = 1;
	} else {
		exit_code = 0;
		for (;;) {
			siginfo_t si;
			int sig = sigwaitinfo(&sigs, &si);
			if (sig < 0)
				continue;
			if (sig == SIGCHLD) {
				int code;
				if (supervisor_reap(sup, &code)) {
					exit_code = code;
					LOG_INFO("mount", "msg=\"application exited; unmounting\" code=%d", code);
					break;
				}
				continue;
			}
			if (sig == SIGUSR1) {
				if (ft.done) {
					LOG_WARN("mount", "msg=\"file system loop ended\"");
					break;
				}
				continue;
			}
			LOG_INFO("mount", "msg=\"signal received; shutting down\" signal=%d", sig);
			stop_guard_start(&guard, st, fusefs_mountpoint(fs));
			if (supervisor_running(sup)) {
				supervisor_signal(sup, sig);
				exit_code = supervisor_wait(sup, 30000);
			}
			break;
		}
	}
	stop_guard_start(&guard, st, fusefs_mountpoint(fs));
	supervisor_free(sup);
	sup = NULL;
	proxy_stop(px);
	px = NULL;
	/* Released before anything else stops: another candidate takes
	 * over at once instead of after the TTL. */
	lease_stop(lease);
	lease = NULL;
	backup_stop(bk);
	bk = NULL;
	http_stop(http);
	http = NULL;
	writelock_stop(wl); /* its locks hold descriptors on the mount */
	replica_stop(rep);
	rep = NULL;
	fusefs_stop(fs);
	pthread_join(tid, NULL);
	fusefs_unmount(fs);
	fs = NULL;
	writelock_free(wl);
	stop_guard_enter_close(&guard);
	store_close(st);
	st = NULL;
	stop_guard_finish(&guard);
	syncrepl_free(sync);
	cluster_close(&cluster);
	config_free(&cfg);
	LOG_INFO("mount", "msg=\"stopped\" code=%d", exit_code);
	return exit_code;

out:
	supervisor_free(sup);
	proxy_stop(px);
	lease_stop(lease);
	http_stop(http);
	writelock_stop(wl);
	replica_stop(rep);
	fusefs_unmount(fs);
	writelock_free(wl);
	store_close(st);
	syncrepl_free(sync);
	cluster_close(&cluster);
	config_free(&cfg);
	return exit_code ? exit_code : 1;
}
