// SPDX-License-Identifier: MIT
/* Checks that say where they failed: see where.h. */
#include "where.h"
#include "tap.h"

char tap_where[320];

void where_fail_cmp(const char *file, int line, const char *expr, const char *kind,
		    unsigned long long a, unsigned long long b)
{
	char d[160];

	tap_diag("at: %s", tap_where);
	tap_fmt2(d, sizeof(d), kind, a, b);
	tap_fail(file, line, expr, d);
}

void where_fail_expr(const char *file, int line, const char *expr)
{
	tap_diag("at: %s", tap_where);
	tap_fail(file, line, expr, NULL);
}
