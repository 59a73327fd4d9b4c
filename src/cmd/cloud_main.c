/* litefs-cloud — the backup service and its command line (cmd_cloud.c). */
#include <curl/curl.h>

#include "cmd/cmd.h"

int main(int argc, char **argv)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int rc = cmd_cloud_main(argc, argv);
	curl_global_cleanup();
	return rc;
}
