// SPDX-License-Identifier: MIT
/*
 * "gpamm info": the six LoongArch GPA-table layouts as this build of the
 * library computes them. Every number comes from gpamm_geom_init(), not
 * from a table in this file, so the output doubles as a check that the
 * geometry code still derives what REFERENCE.md section 3 lists.
 */
#include <stdio.h>
#include <string.h>

#include "gpamm/geom.h"
#include "gpamm/pte.h"
#include "cli.h"

enum { OPT_HELP = 1 };

static const struct cli_opt info_opts[] = {
	{ "help", false, OPT_HELP, 'h' },
	{ NULL, false, 0, 0 },
};

static void info_usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm info\n"
		"\n"
		"Print the six LoongArch GPA-table layouts: page size, levels, entries\n"
		"per table, the address shift of each level (leaf first), GPA bits, the\n"
		"size a huge (level-1, \"PMD\") leaf maps, and how many table pages one\n"
		"fault may have to allocate (levels - 1, what the memcache is topped up to).\n");
}

static int info_run(int argc, char **argv)
{
	struct cli_parser p;
	const char *val;
	bool capped = false;
	unsigned i, l;
	int opt;

	cli_parser_init(&p, "info", argc, argv);
	while ((opt = cli_next(&p, info_opts, &val)) != CLI_OPT_END) {
		switch (opt) {
		case OPT_HELP:
			info_usage(stdout);
			return CLI_EXIT_OK;
		case CLI_OPT_POS:
			return cli_usage_error("info", "unexpected argument '%s'", val);
		default:
			return CLI_EXIT_USAGE;
		}
	}

	printf("%-12s %-7s %-6s %-7s %-15s %-8s %-20s %s\n", "layout", "page",
	       "levels", "entries", "shifts(leaf up)", "GPA bits", "huge (PMD) size",
	       "fault pages");
	for (i = 0; i < 6; i++) {
		char name[32], page[32], huge[48], shifts[32];
		struct gpamm_geom g;
		size_t n = 0;

		if (gpamm_geom_init(&g, gpamm_geom_layouts[i][0], gpamm_geom_layouts[i][1])) {
			fprintf(stderr, "gpamm info: gpamm_geom_init rejected layout %u/%u\n",
				gpamm_geom_layouts[i][0], gpamm_geom_layouts[i][1]);
			return CLI_EXIT_FAIL;
		}
		shifts[0] = '\0';
		for (l = 0; l < g.levels; l++)
			n += (size_t)snprintf(shifts + n, sizeof(shifts) - n, "%s%u",
					      l ? " " : "", g.shift[l]);
		cli_size(gpamm_geom_huge_size(&g), huge, sizeof(huge));
		/* In a 2-level layout level 1 is the root: huge leaves sit in it. */
		if (g.levels == 2)
			strcat(huge, " (top level)");
		if (g.gpa_bits > GPAMM_PTE_PFN_END)
			capped = true;
		printf("%-12s %-7s %-6u %-7u %-15s %-2u%-6s %-20s %u%s\n",
		       cli_layout_name(g.page_shift, g.levels, name, sizeof(name)),
		       cli_size(g.page_size, page, sizeof(page)), g.levels, g.entries,
		       shifts, g.gpa_bits, g.gpa_bits > GPAMM_PTE_PFN_END ? " *" : "",
		       huge, g.levels - 1u,
		       g.page_shift == 14 && g.levels == 3 ? "   (Linux default)" : "");
	}
	printf("\nfault pages: table pages one fault may have to allocate (levels - 1),\n"
	       "what the per-vCPU memcache is topped up to before taking the MMU lock.\n");
	if (capped)
		printf("* GPA space only: the PTE's PFN field ends below bit %u (PALEN),\n"
		       "  so the host addresses such a table maps stay below 2^%u.\n",
		       GPAMM_PTE_PFN_END, GPAMM_PTE_PFN_END);
	return CLI_EXIT_OK;
}

const struct cli_cmd cli_cmd_info = {
	.name = "info",
	.summary = "the six LoongArch GPA-table layouts",
	.run = info_run,
	.usage = info_usage,
};
