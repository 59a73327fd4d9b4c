/*
 * cloud_object.c — stored LTX objects: names, reads, deletes and staging
 * files (see cloud_object.h; the layout is in cloud_store.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"
#include "cloud/cloud_object.h"
#include "ltx/ltx.h"

void cloud_object_name(char *buf, size_t size, int64_t db_id, int level, uint64_t min_txid, uint64_t max_txid)
{
	snprintf(buf, size, "%016" PRIx64 "/l%d/%016" PRIx64 "-%016" PRIx64 ".ltx", (uint64_t)db_id, level,
		 min_txid, max_txid);
}

int cloud_object_parse(const char *name, int64_t *db_id, int *level, uint64_t *min_txid, uint64_t *max_txid)
{
	uint64_t id;
	int n = 0;
	if (sscanf(name, "%16" SCNx64 "/l%d/%n", &id, level, &n) != 2 || n == 0 || strlen(name) < 17 ||
	    name[16] != '/' || id == 0 || id > INT64_MAX || *level < 0 || *level > CLOUD_MAX_LEVELS + 1)
		return ERR_INVAL;
	*db_id = (int64_t)id;
	return ltx_parse_filename(name + n, min_txid, max_txid);
}

int cloud_object_open(struct cloud_backend *be, int64_t db_id, const struct cat_file *f, int *fd)
{
	char name[96];
	cloud_object_name(name, sizeof(name), db_id, f->level, f->min_txid, f->max_txid);
	int rc = be->ops->get(be, name, fd);
	if (rc < 0)
		LOG_ERROR("cloud", "msg=\"stored object unreadable\" object=%s err=\"%s\"", name, err_str(rc));
	return rc;
}

int cloud_object_stream(struct cloud_backend *be, int64_t db_id, const struct cat_file *f, int *fd, void **stream)
{
	*stream = NULL;
	if (be->ops->get_stream == NULL)
		return cloud_object_open(be, db_id, f, fd);
	char name[96];
	cloud_object_name(name, sizeof(name), db_id, f->level, f->min_txid, f->max_txid);
	int rc = be->ops->get_stream(be, name, fd, stream);
	if (rc < 0)
		LOG_ERROR("cloud", "msg=\"stored object unreadable\" object=%s err=\"%s\"", name, err_str(rc));
	return rc;
}

int cloud_object_stream_end(struct cloud_backend *be, void *stream)
{
	if (stream == NULL)
		return 0;
	return be->ops->stream_end(be, stream); /* a failure is logged by the backend */
}

int cloud_object_delete(struct cloud_backend *be, int64_t db_id, const struct cat_file *f)
{
	char name[96];
	cloud_object_name(name, sizeof(name), db_id, f->level, f->min_txid, f->max_txid);
	return be->ops->del(be, name);
}

int cloud_object_tmp_create(const char *tmp_dir, char *path, size_t size)
{
	return fileio_tmp_create(tmp_dir, "tmp-", path, size);
}
