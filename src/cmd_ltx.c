#include <stdio.h>

#include "cmd.h"

int cmd_ltx_main(int argc, char **argv)
{
	fprintf(stderr, "litefs ltx: not implemented yet\n");
	return 2;
}
