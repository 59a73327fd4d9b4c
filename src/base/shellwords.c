/*
 * shellwords.c — see shellwords.h.
 *
 * One pass over the bytes with three states (inside '...', inside "...",
 * after a backslash). `got` records that an argument has started, so that
 * '' and "" make empty arguments while runs of whitespace make none.
 * Every failure leaves through err_free, which writes the one message.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/sbuf.h"
#include "base/shellwords.h"

void shellwords_free(char **argv)
{
	if (!argv)
		return;
	for (char **p = argv; *p; p++)
		free(*p);
	free(argv);
}

/* Bytes of the shell operator at p (an unquoted one of ; & | < >): two
 * for &&, ||, ;;, >>, <<, >&, <&, &>, |&, else one. */
static size_t op_len(const char *p)
{
	static const char *const two[] = { "&&", "||", ";;", ">>", "<<", ">&", "<&", "&>", "|&" };
	for (size_t i = 0; i < sizeof(two) / sizeof(two[0]); i++)
		if (p[0] == two[i][0] && p[1] == two[i][1])
			return 2;
	return 1;
}

/* Splits cmd. With ops NULL an unquoted operator is refused; otherwise
 * every one is recorded (up to max_ops, counted in *n_ops beyond) and
 * separates arguments like whitespace. */
static int split(const char *cmd, char ***argv_out, size_t *argc_out, char *errbuf, size_t errlen,
		 struct shellwords_op *ops, size_t max_ops, size_t *n_ops)
{
	char **argv = NULL;
	size_t argc = 0, cap = 0;
	struct sbuf arg = { 0 };
	bool in_single = false, in_double = false, escaped = false, got = false;
	const char *why = "out of memory";
	const char *op = NULL; /* the shell operator refused, if that is why */
	int rc = ERR_NOMEM;

	*argv_out = NULL;
	*argc_out = 0;
	for (const char *p = cmd;; p++) {
		char c = *p;
		bool end = c == '\0';
		if (!end && escaped) {
			sbuf_putn(&arg, p, 1);
			escaped = false;
			got = true;
			continue;
		}
		if (!end && c == '\\') {
			if (in_single)
				sbuf_putn(&arg, p, 1);
			else
				escaped = true;
			got = true;
			continue;
		}
		bool is_op = !end && !in_single && !in_double && strchr(";&|<>", c);
		if (is_op && !ops) {
			op = p;
			rc = ERR_INVAL;
			goto err_free;
		}
		size_t skip = 0;
		if (is_op) {
			skip = op_len(p);
			if (*n_ops < max_ops)
				ops[*n_ops] = (struct shellwords_op){ (size_t)(p - cmd), skip };
			(*n_ops)++;
		}
		bool space = is_op || c == ' ' || c == '\t' || c == '\r' || c == '\n';
		if (!end && space && (in_single || in_double)) {
			sbuf_putn(&arg, p, 1);
			continue;
		}
		if (end || space) {
			if (end && (in_single || in_double || escaped)) {
				why = escaped ? "the command ends with a lone backslash" : "unterminated quote in the command";
				rc = ERR_INVAL;
				goto err_free;
			}
			if (got) {
				/* Room for this argument and the NULL after it. */
				if (argc + 2 > cap) {
					size_t ncap = cap ? cap * 2 : 8;
					char **v = realloc(argv, ncap * sizeof(*v));
					if (!v)
						goto err_free;
					argv = v;
					cap = ncap;
				}
				sbuf_putn(&arg, "", 0);
				if (arg.oom)
					goto err_free;
				argv[argc++] = arg.p;
				argv[argc] = NULL;
				memset(&arg, 0, sizeof(arg));
				got = false;
			}
			if (end)
				break;
			if (skip > 1)
				p += skip - 1;
			continue;
		}
		if (c == '\'' && !in_double) {
			in_single = !in_single;
			got = true;
			continue;
		}
		if (c == '"' && !in_single) {
			in_double = !in_double;
			got = true;
			continue;
		}
		sbuf_putn(&arg, p, 1);
		got = true;
	}
	if (!argv && !(argv = calloc(1, sizeof(*argv))))
		goto err_free;
	*argv_out = argv;
	*argc_out = argc;
	return 0;

err_free:
	sbuf_free(&arg);
	if (argv) {
		argv[argc] = NULL;
		shellwords_free(argv);
	}
	if (errbuf && errlen && op)
		snprintf(errbuf, errlen,
			 "shell operator '%.*s' in the command; no shell runs it, so quote the character or use "
			 "sh -c '...'",
			 (int)op_len(op), op);
	else if (errbuf && errlen)
		snprintf(errbuf, errlen, "%s", why);
	return rc;
}

int shellwords_split(const char *cmd, char ***argv_out, size_t *argc_out, char *errbuf, size_t errlen)
{
	return split(cmd, argv_out, argc_out, errbuf, errlen, NULL, 0, NULL);
}

int shellwords_operators(const char *cmd, struct shellwords_op *ops, size_t max_ops, size_t *n_ops)
{
	char **argv;
	size_t argc;
	*n_ops = 0;
	int rc = split(cmd, &argv, &argc, NULL, 0, ops, max_ops, n_ops);
	shellwords_free(argv);
	return rc;
}
