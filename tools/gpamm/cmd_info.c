// SPDX-License-Identifier: MIT
/*
 * "gpamm info": the six LoongArch GPA-table layouts as this build of the
 * library computes them. Every number comes from gpamm_geom_init(), not
 * from a table in this file, so the output doubles as a check that the
 * geometry code still derives what REFERENCE.md section 3 lists. The
 * text table and the JSON (--json) are printed from the same facts, one
 * struct per layout, so they cannot say different things.
 */
#include <stdio.h>
#include <string.h>

#include "gpamm/geom.h"
#include "gpamm/pte.h"
#include "lib/json.h"
#include "cli.h"

enum { OPT_HELP = 1, OPT_JSON };

static const struct cli_opt info_opts[] = {
	{ "help", false, OPT_HELP, 'h' },
	{ "json", false, OPT_JSON, 0 },
	{ NULL, false, 0, 0 },
};

static void info_usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm info [--json]\n"
		"\n"
		"Print the six LoongArch GPA-table layouts: page size, levels, entries\n"
		"per table, the address shift of each level (leaf first), GPA bits, the\n"
		"size a huge (level-1, \"PMD\") leaf maps, and how many table pages one\n"
		"fault may have to allocate (levels - 1, what the memcache is topped up to).\n"
		"\n"
		"options:\n"
		"  --json  the same facts as one JSON object on stdout\n");
}

/* What one layout is, as both outputs print it. */
struct layout_facts {
	struct gpamm_geom g;
	char name[32];
	uint64_t huge_size;
	bool huge_in_root;  /* 2 levels: level 1 is the root */
	bool linux_default; /* 16K/3-level */
	bool pfn_capped;    /* GPA space wider than the PTE's PFN field */
};

static int layout_facts(unsigned i, struct layout_facts *lf)
{
	if (gpamm_geom_init(&lf->g, gpamm_geom_layouts[i][0], gpamm_geom_layouts[i][1])) {
		fprintf(stderr, "gpamm info: gpamm_geom_init rejected layout %u/%u\n",
			gpamm_geom_layouts[i][0], gpamm_geom_layouts[i][1]);
		return -1;
	}
	cli_layout_name(lf->g.page_shift, lf->g.levels, lf->name, sizeof(lf->name));
	lf->huge_size = gpamm_geom_huge_size(&lf->g);
	lf->huge_in_root = lf->g.levels == 2;
	lf->linux_default = lf->g.page_shift == 14 && lf->g.levels == 3;
	lf->pfn_capped = lf->g.gpa_bits > GPAMM_PTE_PFN_END;
	return 0;
}

static int info_json(void)
{
	struct jw w;
	unsigned i, l;

	jw_init(&w, stdout);
	jw_obj(&w, NULL);
	jw_u64(&w, "pfn_end_bit", GPAMM_PTE_PFN_END);
	jw_arr(&w, "layouts");
	for (i = 0; i < 6; i++) {
		struct layout_facts lf;

		if (layout_facts(i, &lf))
			return CLI_EXIT_FAIL;
		jw_obj(&w, NULL);
		jw_str(&w, "name", lf.name);
		jw_u64(&w, "page_shift", lf.g.page_shift);
		jw_u64(&w, "page_size", lf.g.page_size);
		jw_u64(&w, "levels", lf.g.levels);
		jw_u64(&w, "entries", lf.g.entries);
		jw_u64(&w, "bits_per_level", lf.g.bits_per_level);
		jw_arr(&w, "shifts");
		for (l = 0; l < lf.g.levels; l++)
			jw_u64(&w, NULL, lf.g.shift[l]);
		jw_arr_end(&w);
		jw_u64(&w, "gpa_bits", lf.g.gpa_bits);
		jw_u64(&w, "gpa_space", gpamm_geom_space(&lf.g));
		jw_u64(&w, "huge_size", lf.huge_size);
		jw_bool(&w, "huge_in_top_level", lf.huge_in_root);
		jw_u64(&w, "fault_pages", lf.g.levels - 1u);
		jw_bool(&w, "pfn_capped", lf.pfn_capped);
		jw_bool(&w, "linux_default", lf.linux_default);
		jw_obj_end(&w);
	}
	jw_arr_end(&w);
	jw_obj_end(&w);
	jw_finish(&w);
	return ferror(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

static int info_text(void)
{
	bool capped = false;
	unsigned i, l;

	printf("%-12s %-7s %-6s %-7s %-15s %-8s %-20s %s\n", "layout", "page",
	       "levels", "entries", "shifts(leaf up)", "GPA bits", "huge (PMD) size",
	       "fault pages");
	for (i = 0; i < 6; i++) {
		char page[32], huge[48], shifts[32];
		struct layout_facts lf;
		size_t n = 0;

		if (layout_facts(i, &lf))
			return CLI_EXIT_FAIL;
		shifts[0] = '\0';
		for (l = 0; l < lf.g.levels; l++)
			n += (size_t)snprintf(shifts + n, sizeof(shifts) - n, "%s%u",
					      l ? " " : "", lf.g.shift[l]);
		cli_size(lf.huge_size, huge, sizeof(huge));
		/* In a 2-level layout level 1 is the root: huge leaves sit in it. */
		if (lf.huge_in_root)
			strcat(huge, " (top level)");
		capped |= lf.pfn_capped;
		printf("%-12s %-7s %-6u %-7u %-15s %-2u%-6s %-20s %u%s\n", lf.name,
		       cli_size(lf.g.page_size, page, sizeof(page)), lf.g.levels, lf.g.entries,
		       shifts, lf.g.gpa_bits, lf.pfn_capped ? " *" : "", huge, lf.g.levels - 1u,
		       lf.linux_default ? "   (Linux default)" : "");
	}
	printf("\nfault pages: table pages one fault may have to allocate (levels - 1),\n"
	       "what the per-vCPU memcache is topped up to before taking the MMU lock.\n");
	if (capped)
		printf("* GPA space only: the PTE's PFN field ends below bit %u (PALEN),\n"
		       "  so the host addresses such a table maps stay below 2^%u.\n",
		       GPAMM_PTE_PFN_END, GPAMM_PTE_PFN_END);
	return CLI_EXIT_OK;
}

static int info_run(int argc, char **argv)
{
	struct cli_parser p;
	const char *val;
	bool json = false;
	int opt;

	cli_parser_init(&p, "info", argc, argv);
	while ((opt = cli_next(&p, info_opts, &val)) != CLI_OPT_END) {
		switch (opt) {
		case OPT_HELP:
			info_usage(stdout);
			return CLI_EXIT_OK;
		case OPT_JSON:
			json = true;
			break;
		case CLI_OPT_POS:
			return cli_usage_error("info", "unexpected argument '%s'", val);
		default:
			return CLI_EXIT_USAGE;
		}
	}
	return json ? info_json() : info_text();
}

const struct cli_cmd cli_cmd_info = {
	.name = "info",
	.summary = "the six LoongArch GPA-table layouts",
	.run = info_run,
	.usage = info_usage,
};
