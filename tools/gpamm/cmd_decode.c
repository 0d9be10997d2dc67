// SPDX-License-Identifier: MIT
/*
 * "gpamm decode": explain raw page-table entries. The first line per
 * entry is the library's own gpamm_pte_format() (so the tool and debug
 * dumps read the same); the second says what KVM makes of the entry,
 * using the predicates of gpamm/pte.h rather than re-deriving bit
 * meanings here; "note:" lines flag combinations the MMU never creates,
 * which is what one usually wants to know when staring at a bad entry.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gpamm/pte.h"
#include "cli.h"

enum { OPT_HELP = 1, OPT_PAGE_SHIFT, OPT_HUGE };

static const struct cli_opt decode_opts[] = {
	{ "help", false, OPT_HELP, 'h' },
	{ "page-shift", true, OPT_PAGE_SHIFT, 0 },
	{ "huge", false, OPT_HUGE, 0 },
	{ NULL, false, 0, 0 },
};

static void decode_usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm decode [--page-shift N] [--huge] VALUE...\n"
		"\n"
		"Print each page-table entry VALUE (hex with 0x, octal with 0, or decimal)\n"
		"bit by bit, then what KVM makes of it: present, young, dirty\n"
		"(hardware-writable), may be made writable (the MODIFIED marker), cache type.\n"
		"\n"
		"options:\n"
		"  --page-shift N  12 (4K), 14 (16K, default) or 16 (64K): where the PFN starts\n"
		"  --huge          the entries were read from a directory (level-1) entry:\n"
		"                  bit 6 is HUGE and bit 12 is HGLOBAL\n"
		"\n"
		"example: gpamm decode 0x393 0x291\n");
}

static const char *mat_meaning(gpamm_pte_t pte)
{
	switch (gpamm_pte_mat(pte)) {
	case GPAMM_PTE_MAT_SUC:
		return "strongly-ordered uncached (SUC, device memory)";
	case GPAMM_PTE_MAT_CC:
		return "coherent cached (CC, normal memory)";
	case GPAMM_PTE_MAT_WUC:
		return "weakly-ordered uncached (WUC)";
	default:
		return "reserved MAT value 3";
	}
}

static void decode_one(gpamm_pte_t pte, unsigned page_shift, bool huge)
{
	gpamm_pte_t wr = pte & GPAMM_PTE_WRITEABLE;
	char buf[256];

	gpamm_pte_format(pte, page_shift, huge, buf, sizeof(buf));
	printf("%s\n", buf);

	if (huge && !gpamm_pte_huge(pte)) {
		/* Without HUGE a directory entry is a table address, not a leaf. */
		printf("  kvm: directory entry without HUGE: the address of a "
		       "next-level table (or of the shared invalid table), not a leaf\n");
		return;
	}
	if (!gpamm_pte_present(pte)) {
		printf("  kvm: not present: any access faults into the slow path%s\n",
		       pte ? "" : " (empty entry)");
		if (pte)
			printf("  note: bits set in a non-present entry; the MMU "
			       "clears an entry to 0\n");
		return;
	}

	printf("  kvm: present%s, %s, %s, %s, cache %s\n",
	       huge ? " huge leaf" : "",
	       gpamm_pte_young(pte) ? "young" : "old (next access faults to make it young)",
	       gpamm_pte_dirty(pte) ? "dirty (hardware-writable)"
				    : "clean (a write faults)",
	       gpamm_pte_writeable(pte) ? "may be made writable (MODIFIED marker)"
					: "never made writable (no MODIFIED marker: read-only)",
	       mat_meaning(pte));

	if (wr && wr != GPAMM_PTE_WRITEABLE)
		printf("  note: only %s of DIRTY|WRITE is set; the MMU always sets "
		       "and clears them together\n", wr & GPAMM_PTE_DIRTY ? "DIRTY" : "WRITE");
	if (gpamm_pte_dirty(pte) && !gpamm_pte_writeable(pte))
		printf("  note: hardware-writable without the MODIFIED marker: a "
		       "read-only slot must never be dirty\n");
	if (!huge && gpamm_pte_huge(pte))
		printf("  note: bit 6 (GLOBAL) is set; if this entry came from a "
		       "directory, decode it again with --huge\n");
	if (gpamm_pte_mat(pte) == GPAMM_PTE_MAT_MASK)
		printf("  note: MAT 3 is reserved by the architecture\n");
	if (pte & GPAMM_PTE_PROTNONE)
		printf("  note: PROTNONE is a host-side (NUMA hinting) state; KVM "
		       "never installs it in the GPA table\n");
}

static int decode_run(int argc, char **argv)
{
	struct cli_parser p;
	gpamm_pte_t *vals;
	unsigned page_shift = 14;
	bool huge = false;
	const char *val;
	uint64_t v;
	int opt, n = 0, i;

	/* Collect every value first: a typo in the fifth prints nothing at all. */
	vals = calloc((size_t)argc, sizeof(*vals));
	if (!vals) {
		perror("gpamm decode");
		return CLI_EXIT_FAIL;
	}
	cli_parser_init(&p, "decode", argc, argv);
	while ((opt = cli_next(&p, decode_opts, &val)) != CLI_OPT_END) {
		switch (opt) {
		case OPT_HELP:
			decode_usage(stdout);
			free(vals);
			return CLI_EXIT_OK;
		case OPT_PAGE_SHIFT:
			if (!cli_parse_u64(val, &v) || (v != 12 && v != 14 && v != 16)) {
				free(vals);
				return cli_usage_error("decode", "--page-shift must be 12 (4K), "
						       "14 (16K) or 16 (64K), not '%s'", val);
			}
			page_shift = (unsigned)v;
			break;
		case OPT_HUGE:
			huge = true;
			break;
		case CLI_OPT_POS:
			if (!cli_parse_u64(val, &v)) {
				free(vals);
				return cli_usage_error("decode", "'%s' is not a 64-bit entry value", val);
			}
			vals[n++] = v;
			break;
		default:
			free(vals);
			return CLI_EXIT_USAGE;
		}
	}
	if (!n) {
		free(vals);
		return cli_usage_error("decode", "no VALUE given");
	}

	for (i = 0; i < n; i++)
		decode_one(vals[i], page_shift, huge);
	free(vals);
	return CLI_EXIT_OK;
}

const struct cli_cmd cli_cmd_decode = {
	.name = "decode",
	.summary = "explain page-table entry values bit by bit",
	.run = decode_run,
	.usage = decode_usage,
};
