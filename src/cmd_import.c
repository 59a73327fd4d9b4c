/* cmd_import.c — placeholder until `litefs import` / `litefs export` land. */
#include <stdio.h>

#include "cmd.h"

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
