#include <stdio.h>
#include <string.h>

#include "base/err.h"

const char *err_str(int rc)
{
	static _Thread_local char buf[64];

	if (rc == 0)
		return "success";
	switch (rc) {
#define ERR_STR_(name, value, msg) case value: return msg;
		ERR_TABLE(ERR_STR_)
#undef ERR_STR_
	}
	if (rc < 0 && rc > -1000)
		return strerror(-rc);
	snprintf(buf, sizeof(buf), "unknown error %d", rc);
	return buf;
}

const char *err_name(int rc)
{
	if (rc == 0)
		return "OK";
	switch (rc) {
#define ERR_NAME_(name, value, msg) case value: return #name;
		ERR_TABLE(ERR_NAME_)
#undef ERR_NAME_
	}
	return "errno";
}
