/* cloud_json.c — see cloud_json.h. */
#include <inttypes.h>
#include <stdio.h>

#include "cloud/cloud_json.h"

json_t *cloud_json_hex(uint64_t v)
{
	char b[17];
	snprintf(b, sizeof(b), "%016" PRIx64, v);
	return json_string(b);
}
