#include <stdio.h>

#include "cmd.h"

int cmd_mount_main(int argc, char **argv)
{
	fprintf(stderr, "litefs mount: not implemented yet\n");
	return 2;
}

int cmd_import_main(int argc, char **argv)
{
	fprintf(stderr, "litefs import: not implemented yet\n");
	return 2;
}

int cmd_export_main(int argc, char **argv)
{
	fprintf(stderr, "litefs export: not implemented yet\n");
	return 2;
}
