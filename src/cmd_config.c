#include <stdio.h>

#include "cmd.h"

int cmd_config_main(int argc, char **argv)
{
	fprintf(stderr, "litefs config: not implemented yet\n");
	return 2;
}
