/*
 * cloud_merge.c — a restore plan read into the state it builds (contract:
 * cloud_merge.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/fdio.h"
#include "base/log.h"
#include "base/sys.h"
#include "cloud/cloud_merge.h"
#include "cloud/cloud_object.h"
#include "cloud/cloud_zltx.h"
#include "ltx/ltxmerge.h"

/* The size of cloud_merge_to_fd()'s writes: small enough that the pages
 * copied into the buffer are still in the CPU cache when the kernel copies
 * them out (4 MiB writes cost twice the system time, measured). */
#define MERGE_WRITE_BYTES (256u << 10)

/* Stored files at least this large are read as they download (a backend
 * with get_stream: S3), at most STREAM_MAX of them per merge (each is a
 * thread and a connection); smaller ones are fetched whole first. */
#define STREAM_MIN_BYTES (4u << 20)
#define STREAM_MAX 4

struct cloud_merge {
	struct ltxmerge *lm;
	struct cloud_zltx_reader *in; /* one per stored file, either form */
	size_t n;
	struct cloud_backend *be;
	void *stream[STREAM_MAX];
	size_t n_streams;
	struct ltx_pos want;
	char name[64];
	int64_t db_id;
	bool logged; /* the failure was logged */
};

/* Logs the first failure, once. */
static int settle(struct cloud_merge *m, int rc)
{
	if (rc < 0 && !m->logged) {
		m->logged = true;
		LOG_ERROR("cloud", "msg=\"stored files do not build the state\" db=%s db_id=%016" PRIx64
			  " txid=%016" PRIx64 " files=%zu err=\"%s\"", m->name, (uint64_t)m->db_id, m->want.txid,
			  m->n, err_str(rc));
	}
	return rc;
}

int cloud_merge_open(struct cloud_backend *be, int64_t db_id, const char *name, const struct cloud_plan *plan,
		     struct ltx_pos want, ltx_read_fn read, struct cloud_merge **out)
{
	*out = NULL;
	struct cloud_merge *m = calloc(1, sizeof(*m));
	struct ltxmerge_input *in = calloc(plan->n ? plan->n : 1, sizeof(*in));
	if (m)
		m->in = calloc(plan->n ? plan->n : 1, sizeof(*m->in));
	if (!m || !in || !m->in) {
		free(in);
		cloud_merge_free(m);
		return ERR_NOMEM;
	}
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->be = be;
	m->db_id = db_id;
	m->want = want;
	int rc = plan->n ? 0 : ERR_CLOUD_WINDOW;
	for (; rc == 0 && m->n < plan->n; m->n++) {
		int fd;
		const struct cat_file *f = &plan->f[m->n];
		if (m->n_streams < STREAM_MAX && f->size >= STREAM_MIN_BYTES) {
			rc = cloud_object_stream(be, db_id, f, &fd, &m->stream[m->n_streams]);
			if (rc == 0)
				m->n_streams++;
		} else {
			rc = cloud_object_open(be, db_id, f, &fd);
		}
		if (rc < 0)
			break;
		cloud_zltx_reader_init(&m->in[m->n], fd);
		cloud_zltx_reader_set_source(&m->in[m->n], read);
		in[m->n] = (struct ltxmerge_input){ cloud_zltx_read, &m->in[m->n] };
	}
	if (rc == 0) {
		rc = ltxmerge_new(&m->lm, in, plan->n, &m->want);
		if (rc < 0)
			settle(m, rc);
	}
	free(in);
	if (rc < 0) {
		cloud_merge_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

void cloud_merge_free(struct cloud_merge *m)
{
	if (m == NULL)
		return;
	ltxmerge_free(m->lm);
	for (size_t i = 0; i < m->n; i++) {
		cloud_zltx_reader_done(&m->in[i]);
		close(m->in[i].fd);
	}
	/* After the reading ends are closed: a download still running stops. */
	for (size_t i = 0; i < m->n_streams; i++)
		cloud_object_stream_end(m->be, m->stream[i]);
	free(m->in);
	free(m);
}

uint32_t cloud_merge_page_size(const struct cloud_merge *m)
{
	return ltxmerge_header(m->lm)->page_size;
}

uint64_t cloud_merge_size(const struct cloud_merge *m)
{
	const struct ltx_header *h = ltxmerge_header(m->lm);
	return (uint64_t)h->commit * h->page_size;
}

int cloud_merge_next(struct cloud_merge *m, uint32_t *pgno, const uint8_t **page, uint64_t *sum)
{
	int rc = ltxmerge_next(m->lm, pgno, page, sum);
	return rc < 0 ? settle(m, rc) : rc;
}

uint64_t cloud_merge_page_crc(const struct cloud_merge *m)
{
	return ltxmerge_page_crc(m->lm);
}

ssize_t cloud_merge_read(struct cloud_merge *m, void *buf, size_t max)
{
	ssize_t n = ltxmerge_read(m->lm, buf, max);
	return n < 0 ? settle(m, (int)n) : n;
}

int cloud_merge_to_fd(struct cloud_merge *m, int fd)
{
	uint8_t *buf = malloc(MERGE_WRITE_BYTES);
	if (buf == NULL)
		return ERR_NOMEM;
	int rc = sys_ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0 ? -errno : 0;
	if (rc == 0)
		rc = settle(m, ltxmerge_copy(m->lm, fdio_write, &fd, buf, MERGE_WRITE_BYTES));
	free(buf);
	return rc;
}
