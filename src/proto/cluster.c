/*
 * cluster.c — the cluster ID file (see cluster.h). The file holds the ID
 * and a newline; it is written to a temp file, fsynced and renamed, then
 * the directory is fsynced, so a crash leaves the old state or the new.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "proto/cluster.h"
#include "base/err.h"
#include "base/fileio.h"

bool cluster_id_valid(const char *s)
{
	if (!s || strlen(s) != CLUSTER_ID_LEN || memcmp(s, "LFSC", 4) != 0)
		return false;
	for (int i = 4; i < CLUSTER_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

int cluster_id_generate(char *out)
{
	unsigned char r[8];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return -errno;
	memcpy(out, "LFSC", 4);
	for (int i = 0; i < 8; i++)
		snprintf(out + 4 + 2 * i, 3, "%02X", r[i]);
	return 0;
}

/* Reads the file: 0 with id (or "" when absent), ERR_CONFIG, -errno. */
static int read_id(const char *path, char *id)
{
	char buf[64];
	id[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	int err = errno;
	close(fd);
	if (n < 0)
		return -err;
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (!cluster_id_valid(buf))
		return ERR_CONFIG;
	memcpy(id, buf, CLUSTER_ID_LEN + 1);
	return 0;
}

static int write_id(const char *path, const char *id)
{
	char line[CLUSTER_ID_LEN + 2];
	snprintf(line, sizeof(line), "%s\n", id);
	return fileio_replace_file(path, line, CLUSTER_ID_LEN + 1, FILEIO_FILE_MODE);
}

int cluster_open(struct cluster *c, const char *data_dir, bool create)
{
	memset(c, 0, sizeof(*c));
	if (asprintf(&c->path, "%s/clusterid", data_dir) < 0) {
		c->path = NULL;
		return ERR_NOMEM;
	}
	pthread_mutex_init(&c->mu, NULL);
	int rc = read_id(c->path, c->id);
	if (rc == 0 && create && c->id[0] == '\0') {
		char id[CLUSTER_ID_LEN + 1];
		if ((rc = cluster_id_generate(id)) == 0 && (rc = write_id(c->path, id)) == 0)
			memcpy(c->id, id, sizeof(id));
	}
	if (rc != 0)
		cluster_close(c);
	return rc;
}

void cluster_close(struct cluster *c)
{
	if (!c->path)
		return;
	pthread_mutex_destroy(&c->mu);
	free(c->path);
	c->path = NULL;
}

void cluster_get(struct cluster *c, char *buf)
{
	pthread_mutex_lock(&c->mu);
	memcpy(buf, c->id, CLUSTER_ID_LEN + 1);
	pthread_mutex_unlock(&c->mu);
}

int cluster_adopt(struct cluster *c, const char *id)
{
	if (!cluster_id_valid(id))
		return ERR_INVAL;
	pthread_mutex_lock(&c->mu);
	int rc = 0;
	if (c->id[0] == '\0') {
		if ((rc = write_id(c->path, id)) == 0)
			memcpy(c->id, id, CLUSTER_ID_LEN + 1);
	} else if (strcmp(c->id, id) != 0) {
		rc = ERR_REPL_CLUSTER;
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}
