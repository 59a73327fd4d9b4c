/*
 * cloud_progress.c — per-thread progress of a long operation (see
 * cloud_progress.h).
 */
#include "base/clock.h"
#include "base/fdio.h"
#include "cloud/cloud_progress.h"

/* The reporter of the operation running on this thread, if any. A thread
 * runs one request at a time (base/httpd.c), so one slot is enough. */
static _Thread_local struct cloud_progress *current;

void cloud_progress_begin(struct cloud_progress *p)
{
	p->phase = NULL;
	p->done = p->total = 0;
	p->last_pct = 0;
	p->last_ms = 0;
	current = p;
}

void cloud_progress_end(void)
{
	current = NULL;
}

static unsigned pct(const struct cloud_progress *p)
{
	return p->total ? (unsigned)(p->done * 100 / p->total) : 100;
}

static void report(struct cloud_progress *p)
{
	p->last_ms = clock_mono_ms();
	p->last_pct = pct(p);
	p->report(p, p->phase, p->done, p->total);
}

void cloud_progress_phase(const char *phase, uint64_t total)
{
	struct cloud_progress *p = current;
	if (!p)
		return;
	p->phase = phase;
	p->done = 0;
	p->total = total;
	report(p);
}

void cloud_progress_add(uint64_t n)
{
	struct cloud_progress *p = current;
	if (!p || !p->phase || n == 0 || p->done >= p->total)
		return;
	p->done = n > p->total - p->done ? p->total : p->done + n;
	unsigned now_pct = pct(p);
	if (p->done == p->total || now_pct >= p->last_pct + CLOUD_PROGRESS_STEP_PCT ||
	    (now_pct > p->last_pct && clock_mono_ms() - p->last_ms >= CLOUD_PROGRESS_INTERVAL_MS))
		report(p);
}

ssize_t cloud_progress_read(void *ctx, void *buf, size_t len)
{
	ssize_t n = fdio_read(ctx, buf, len);
	if (n > 0)
		cloud_progress_add((uint64_t)n);
	return n;
}
