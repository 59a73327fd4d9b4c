/*
 * test_cloud_auth.c — the token store's copies (cloud_auth_copy_to and
 * cloud_auth_load): how several litefs-cloud instances take in a change
 * made on another host (docs/cloud-s3.md, "Tokens").
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/err.h"
#include "cloud/cloud_auth.h"
#include "testutil.h"

static int n_changes;

static void on_change(void *ctx)
{
	(void)ctx;
	n_changes++;
}

/* A copy taken earlier, loaded again, is the whole store again: a token
 * made after it is gone, one revoked after it is back, the hook is not
 * called; a copy that is not a store leaves the store as it was. */
static void test_load_replaces_the_whole_store(void **state)
{
	(void)state;
	struct cloud_auth *a;
	char cluster[CLOUD_CLUSTER_NAME_MAX + 1];
	struct cloud_token t1, t2;
	char dir[512], copy[512], junk[512];
	snprintf(dir, sizeof(dir), "%s/load-a", tmp_dir);
	snprintf(copy, sizeof(copy), "%s/copy.db", tmp_dir);
	snprintf(junk, sizeof(junk), "%s/junk.db", tmp_dir);
	assert_int_equal(cloud_auth_open(dir, &a), 0);
	assert_int_equal(cloud_auth_cluster_create(a, "prod", &t1), 0);
	assert_int_equal(cloud_auth_copy_to(a, copy), 0);
	assert_int_equal(cloud_auth_token_create(a, "prod", &t2), 0);
	assert_int_equal(cloud_auth_token_revoke(a, t1.id), 0);
	assert_int_equal(cloud_auth_check(a, t1.text, cluster), ERR_REPL_AUTH);
	assert_int_equal(cloud_auth_check(a, t2.text, cluster), 0);

	cloud_auth_on_change(a, on_change, NULL);
	n_changes = 0;
	assert_int_equal(cloud_auth_load(a, copy), 0);
	assert_int_equal(n_changes, 0);
	assert_int_equal(cloud_auth_check(a, t1.text, cluster), 0);
	assert_string_equal(cluster, "prod");
	assert_int_equal(cloud_auth_check(a, t2.text, cluster), ERR_REPL_AUTH);

	/* Not a store: refused, nothing changed. */
	int fd = new_file("junk.db");
	write_all(fd, "not a database", 14);
	close(fd);
	assert_int_equal(cloud_auth_load(a, junk), -EIO);
	assert_int_equal(cloud_auth_check(a, t1.text, cluster), 0);
	/* And the store still takes changes. */
	assert_int_equal(cloud_auth_token_create(a, "prod", &t2), 0);
	assert_int_equal(n_changes, 1);
	cloud_auth_close(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_replaces_the_whole_store),
	};
	return run_in_tmp_dir("test_cloud_auth", tests, sizeof(tests) / sizeof(tests[0]));
}
