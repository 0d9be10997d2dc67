// SPDX-License-Identifier: MIT
/*
 * The option parser and helpers behind every gpamm subcommand. It is
 * written out rather than built on getopt_long so that the tool controls
 * its own messages (one style, always naming the subcommand) and so that
 * a subcommand's options are parsed without global state, which keeps
 * later subcommands that call each other (bench driving demo-like runs,
 * replay driving decode) free of optind resets.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_parser_init(struct cli_parser *p, const char *cmd, int argc, char **argv)
{
	p->cmd = cmd;
	p->argc = argc;
	p->argv = argv;
	p->i = 1;
	p->only_positional = false;
}

static const struct cli_opt *find_long(const struct cli_opt *opts,
				       const char *name, size_t n)
{
	for (; opts->name; opts++)
		if (strlen(opts->name) == n && !strncmp(opts->name, name, n))
			return opts;
	return NULL;
}

static const struct cli_opt *find_short(const struct cli_opt *opts, char c)
{
	for (; opts->name; opts++)
		if (opts->shortc && opts->shortc == c)
			return opts;
	return NULL;
}

int cli_next(struct cli_parser *p, const struct cli_opt *opts, const char **val)
{
	const struct cli_opt *o;
	const char *a, *eq;

	*val = NULL;
	if (p->i >= p->argc)
		return CLI_OPT_END;
	a = p->argv[p->i++];

	/* A lone "-" and anything not starting with '-' are positional. */
	if (p->only_positional || a[0] != '-' || a[1] == '\0') {
		*val = a;
		return CLI_OPT_POS;
	}
	if (!strcmp(a, "--")) {
		p->only_positional = true;
		return cli_next(p, opts, val);
	}

	if (a[1] == '-') {
		eq = strchr(a + 2, '=');
		o = find_long(opts, a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
		if (!o) {
			cli_usage_error(p->cmd, "unknown option '%.*s'",
					eq ? (int)(eq - a) : (int)strlen(a), a);
			return CLI_OPT_ERR;
		}
		if (!o->has_arg && eq) {
			cli_usage_error(p->cmd, "option '--%s' takes no value", o->name);
			return CLI_OPT_ERR;
		}
		if (o->has_arg) {
			if (eq) {
				*val = eq + 1;
			} else if (p->i < p->argc) {
				*val = p->argv[p->i++];
			} else {
				cli_usage_error(p->cmd, "option '--%s' needs a value", o->name);
				return CLI_OPT_ERR;
			}
		}
		return o->id;
	}

	/* Short aliases: one letter each, no bundling (there are too few to need it). */
	o = a[2] == '\0' ? find_short(opts, a[1]) : NULL;
	if (!o) {
		cli_usage_error(p->cmd, "unknown option '%s'", a);
		return CLI_OPT_ERR;
	}
	if (o->has_arg) {
		if (p->i >= p->argc) {
			cli_usage_error(p->cmd, "option '%s' needs a value", a);
			return CLI_OPT_ERR;
		}
		*val = p->argv[p->i++];
	}
	return o->id;
}

bool cli_parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	/* strtoull quietly negates "-1" and skips blanks; neither is a number here. */
	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ' || *s == '\t')
		return false;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "gpamm%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'gpamm %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
	return CLI_EXIT_USAGE;
}

const char *cli_layout_name(unsigned page_shift, unsigned levels, char *buf, size_t len)
{
	snprintf(buf, len, "%uK/%u-level", 1u << (page_shift - 10), levels);
	return buf;
}

const char *cli_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	unsigned u = 0;

	while (u < 6 && bytes >= 1024 && !(bytes & 1023)) {
		bytes >>= 10;
		u++;
	}
	snprintf(buf, len, "%llu %s", (unsigned long long)bytes, unit[u]);
	return buf;
}

bool cli_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	uint64_t mul = 1;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'k': case 'K': mul = 1ULL << 10; end++; break;
	case 'm': case 'M': mul = 1ULL << 20; end++; break;
	case 'g': case 'G': mul = 1ULL << 30; end++; break;
	case 't': case 'T': mul = 1ULL << 40; end++; break;
	default: break;
	}
	if (mul > 1 && end[0] == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end || (v && v > UINT64_MAX / mul))
		return false;
	*out = v * mul;
	return true;
}
