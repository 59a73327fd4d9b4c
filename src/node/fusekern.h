/*
 * fusekern.h — the FUSE wire headers that fusepass.c and fuseuring.c read
 * and write themselves, in the kernel's layout (include/uapi/linux/fuse.h),
 * for features that the installed libfuse 3.14 and its 7.38 header predate.
 */
#ifndef LITEFS_FUSEKERN_H
#define LITEFS_FUSEKERN_H

#include <stdint.h>

struct k_in_header { /* struct fuse_in_header */
	uint32_t len, opcode;
	uint64_t unique, nodeid;
	uint32_t uid, gid, pid;
	uint16_t total_extlen, padding;
};
struct k_out_header { /* struct fuse_out_header */
	uint32_t len;
	int32_t error;
	uint64_t unique;
};
_Static_assert(sizeof(struct k_in_header) == 40, "fuse_in_header layout");
_Static_assert(sizeof(struct k_out_header) == 16, "fuse_out_header layout");

#endif
