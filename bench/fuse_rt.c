/*
 * fuse_rt — the cost of one FUSE round trip, and this machine's floor for
 * any round trip between two processes.
 *
 *   fuse_rt [FILE...]
 *
 * For each FILE (a database's -pos file on a mount: the node answers every
 * read of it at once, and the kernel caches none), the best of 3 runs of
 * 20,000 34-byte preads, in µs per read. Then a one-byte pipe ping-pong
 * between two processes, on the same CPU and on any CPU: what a request
 * and its answer cost here with no work at all on either side.
 * bench/fuse_rt.py runs it on a mount on /dev/fuse and one on io_uring.
 * Prints numbers; never fails on timing.
 */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	(void)sched_setaffinity(0, sizeof(set), &set);
}

static double pingpong(int same_cpu, int n)
{
	int a[2], b[2];
	char c = 0;
	if (pipe(a) != 0 || pipe(b) != 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		if (same_cpu)
			pin(0);
		for (int i = 0; i < n; i++)
			if (read(a[0], &c, 1) != 1 || write(b[1], &c, 1) != 1)
				_exit(1);
		_exit(0);
	}
	if (same_cpu)
		pin(0);
	double t0 = now_s();
	for (int i = 0; i < n; i++)
		if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1)
			break;
	double t = now_s() - t0;
	waitpid(pid, NULL, 0);
	close(a[0]), close(a[1]), close(b[0]), close(b[1]);
	return t / n * 1e6;
}

int main(int argc, char **argv)
{
	for (int f = 1; f < argc; f++) {
		int fd = open(argv[f], O_RDONLY);
		if (fd < 0) {
			perror(argv[f]);
			return 1;
		}
		char buf[64];
		double best = 1e9;
		for (int r = 0; r < 3; r++) {
			double t0 = now_s();
			for (int i = 0; i < 20000; i++)
				if (pread(fd, buf, 34, 0) < 0) {
					perror("pread");
					return 1;
				}
			double t = now_s() - t0;
			if (t < best)
				best = t;
		}
		close(fd);
		printf("file=%s us_per_read=%.1f\n", argv[f], best / 20000 * 1e6);
	}
	printf("pipe_pingpong_same_cpu_us=%.1f\n", pingpong(1, 20000));
	printf("pipe_pingpong_any_cpu_us=%.1f\n", pingpong(0, 20000));
	return 0;
}
