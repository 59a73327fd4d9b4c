/*
 * test_store_names.c — the node's side of database names: splitting a
 * file name in the mount into a database name and a kind passes the
 * rule's reason through (store_parse_name), and the rule reserves exactly
 * the suffixes of the node's file kinds (the rule itself: test_dbname.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>

#include "node/db.h"
#include "node/store.h"
#include "proto/dbname.h"

static void test_parse_name_passes_the_reason(void **state)
{
	(void)state;
	char name[256];
	int kind = -1;
	assert_int_equal(store_parse_name("café.db-wal", name, sizeof(name), &kind), 0);
	assert_string_equal(name, "café.db");
	assert_int_equal(kind, DB_KIND_WAL);
	assert_int_equal(store_parse_name("\xff.db-journal", name, sizeof(name), &kind), -EILSEQ);
	assert_int_equal(store_parse_name("\xff.db", name, sizeof(name), &kind), -EILSEQ);
	assert_int_equal(store_parse_name(".x-shm", name, sizeof(name), &kind), -EINVAL);
}

/* A kind the node adds must be reserved by the rule both programs share,
 * or "x-<new>" would be a database to the backup service and a file of
 * "x" to the mount. */
static void test_rule_reserves_the_node_suffixes(void **state)
{
	(void)state;
	size_t n = 0;
	while (dbname_reserved_suffixes[n])
		n++;
	assert_int_equal(n, DB_KIND_COUNT - 1);
	for (int k = DB_KIND_JOURNAL; k < DB_KIND_COUNT; k++)
		assert_string_equal(dbname_reserved_suffixes[k - 1], db_kind_suffix[k]);
	assert_string_equal(db_kind_suffix[DB_KIND_DB], "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_name_passes_the_reason),
		cmocka_unit_test(test_rule_reserves_the_node_suffixes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
