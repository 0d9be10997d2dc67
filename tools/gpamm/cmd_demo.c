// SPDX-License-Identifier: MIT
/*
 * "gpamm demo": a guided tour of the page-table API on a real table. It
 * builds a table-page pool and one GPA table, installs the entries the
 * fault path would (dirty, clean-writable, read-only, device, one huge
 * block), shows what lookups return, then runs the dirty-logging and
 * aging operations and a full flush, printing every change count and the
 * table-page counts as the deferred-free protocol moves them. It ends by
 * tearing everything down and printing the pool's live count, so a leak
 * anywhere in the library shows up as a non-zero line and exit status 1.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gpamm/geom.h"
#include "gpamm/pgtable.h"
#include "gpamm/pte.h"
#include "cli.h"

enum { OPT_HELP = 1, OPT_PAGE_SHIFT, OPT_LEVELS };

static const struct cli_opt demo_opts[] = {
	{ "help", false, OPT_HELP, 'h' },
	{ "page-shift", true, OPT_PAGE_SHIFT, 0 },
	{ "levels", true, OPT_LEVELS, 0 },
	{ NULL, false, 0, 0 },
};

static void demo_usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm demo [--page-shift N] [--levels N]\n"
		"\n"
		"Build a GPA table, map a few pages and one huge block as the fault path\n"
		"would, look them up, run mkclean / mkclean_mask / mkold / test_young and a\n"
		"full flush with the deferred table free, then destroy everything and check\n"
		"that no table page is left.\n"
		"\n"
		"options:\n"
		"  --page-shift N  12 (4K), 14 (16K, default) or 16 (64K)\n"
		"  --levels N      3 (default); 4K also 4; 16K and 64K also 2\n");
}

/* What the fault path installs (REFERENCE.md section 2 and 5). */
#define PROT_BASE      (GPAMM_PTE_PRESENT | GPAMM_PTE_VALID)
#define PROT_WRITE_FLT (PROT_BASE | GPAMM_PTE_MAT_CC | GPAMM_PTE_WR_MARKER | GPAMM_PTE_WRITEABLE)
#define PROT_READ_FLT  (PROT_BASE | GPAMM_PTE_MAT_CC | GPAMM_PTE_WR_MARKER)
#define PROT_RDONLY    (PROT_BASE | GPAMM_PTE_MAT_CC)
#define PROT_DEVICE    (PROT_BASE | GPAMM_PTE_MAT_SUC | GPAMM_PTE_WR_MARKER | GPAMM_PTE_WRITEABLE)

struct demo {
	struct gpamm_geom g;
	struct gpamm_tpool *pool;
	struct gpamm_mm_ops mm;
	struct gpamm_memcache mc;
	struct gpamm_pgt pgt;
};

static uint64_t pool_live(struct demo *d)
{
	struct gpamm_tpool_stats st;

	gpamm_tpool_stats(d->pool, &st);
	return st.live;
}

static const char *errname(int err)
{
	switch (err) {
	case -EINVAL: return "-EINVAL";
	case -ENOMEM: return "-ENOMEM";
	case -EEXIST: return "-EEXIST";
	case -ENOENT: return "-ENOENT";
	default:      return "error";
	}
}

/* One map as the fault path does it: top up outside the lock, then map. */
static int demo_map(struct demo *d, const char *what, uint64_t gpa, unsigned level,
		    uint64_t pfn, uint64_t prot, int expect)
{
	int ret = gpamm_memcache_topup(&d->mc, gpamm_pgt_map_pages(&d->pgt));

	if (!ret)
		ret = gpamm_pgt_map(&d->pgt, gpa, level,
				    gpamm_pte_mk(pfn, d->g.page_shift, prot), &d->mc);
	printf("  %-34s 0x%-14llx %s%s\n", what, (unsigned long long)gpa,
	       ret == 1 ? "installed" : ret == 0 ? "unchanged" : errname(ret),
	       ret == expect ? (ret < 0 ? " (as expected)" : "") : "  <-- UNEXPECTED");
	return ret == expect ? 0 : -1;
}

static void demo_lookup(struct demo *d, uint64_t gpa, const char *what)
{
	unsigned level = 0;
	gpamm_pte_t pte = gpamm_pgt_lookup(&d->pgt, gpa, &level);
	char buf[200];

	if (!pte) {
		printf("  0x%-14llx %-10s none\n", (unsigned long long)gpa, what);
		return;
	}
	gpamm_pte_format(pte, d->g.page_shift, level >= 1, buf, sizeof(buf));
	printf("  0x%-14llx %-10s L%u %s\n", (unsigned long long)gpa, what, level, buf);
}

static void demo_tables(struct demo *d, const char *when)
{
	printf("  %-32s tables linked %llu, pool pages live %llu\n", when,
	       (unsigned long long)gpamm_pgt_live_tables(&d->pgt),
	       (unsigned long long)pool_live(d));
}

static int demo_body(struct demo *d)
{
	const uint64_t P = d->g.page_size, H = gpamm_geom_huge_size(&d->g);
	const uint64_t top = gpamm_geom_space(&d->g) - P;
	const uint64_t huge_pages = H / P;
	struct gpamm_pgt_freelist fl = { NULL, 0 };
	gpamm_pte_t pte;
	uint64_t n, flushed;
	int bad = 0;

	printf("map (memcache topped up to %u page(s) before each, as the fault path does)\n",
	       gpamm_pgt_map_pages(&d->pgt));
	bad |= demo_map(d, "page, write fault (dirty)", 0, 0, 0x100, PROT_WRITE_FLT, 1);
	bad |= demo_map(d, "page, read fault (clean, writable)", P, 0, 0x101, PROT_READ_FLT, 1);
	bad |= demo_map(d, "page, read-only slot", 2 * P, 0, 0x102, PROT_RDONLY, 1);
	bad |= demo_map(d, "page, next leaf table", H + 7 * P, 0, 0x107, PROT_WRITE_FLT, 1);
	bad |= demo_map(d, "page, top of GPA space (device)", top, 0, 0x200, PROT_DEVICE, 1);
	bad |= demo_map(d, "huge block, write fault", 2 * H, 1, 4 * huge_pages,
			PROT_WRITE_FLT | GPAMM_PTE_HUGE, 1);
	bad |= demo_map(d, "same page again", 0, 0, 0x100, PROT_WRITE_FLT, 0);
	bad |= demo_map(d, "page inside the huge block", 2 * H + 4 * P, 0, 0x300,
			PROT_WRITE_FLT, -EEXIST);
	/* The memcache's spare pages go back, so pool live == tables linked. */
	gpamm_memcache_release(&d->mc);
	demo_tables(d, "after mapping:");

	printf("\nlookup\n");
	demo_lookup(d, 0, "dirty");
	demo_lookup(d, P, "clean");
	demo_lookup(d, 2 * P, "read-only");
	demo_lookup(d, H + 7 * P, "leaf 2");
	demo_lookup(d, top, "device");
	demo_lookup(d, 2 * H + 4 * P, "in huge");
	demo_lookup(d, 3 * P, "unmapped");

	printf("\ndirty logging and aging over the whole space [0, UINT64_MAX)\n");
	n = gpamm_pgt_mkclean_range(&d->pgt, 0, UINT64_MAX);
	printf("  mkclean_range: %llu entries write-protected (the dirty ones; MODIFIED stays)\n",
	       (unsigned long long)n);
	demo_lookup(d, 0, "cleaned");
	demo_lookup(d, 2 * H, "cleaned");
	n = gpamm_pgt_mkold_range(&d->pgt, 0, UINT64_MAX);
	printf("  mkold_range: %llu entries made old\n", (unsigned long long)n);
	printf("  test_young(whole space): %s\n",
	       gpamm_pgt_test_young(&d->pgt, 0, UINT64_MAX) ? "yes" : "no");
	gpamm_pgt_mkyoung(&d->pgt, P, NULL);
	printf("  after mkyoung(0x%llx): test_young [0x%llx, 0x%llx) %s, [0x%llx, 0x%llx) %s\n",
	       (unsigned long long)P, (unsigned long long)P, (unsigned long long)(2 * P),
	       gpamm_pgt_test_young(&d->pgt, P, 2 * P) ? "yes" : "no",
	       (unsigned long long)(2 * P), (unsigned long long)(3 * P),
	       gpamm_pgt_test_young(&d->pgt, 2 * P, 3 * P) ? "yes" : "no");
	/* Guest writes to pages 0 and 1 fault and the fast path marks them dirty. */
	gpamm_pgt_mkdirty(&d->pgt, 0, NULL);
	gpamm_pgt_mkdirty(&d->pgt, P, NULL);
	n = gpamm_pgt_mkclean_mask(&d->pgt, 0, 0x1);
	printf("  pages 0 and 1 dirtied; mkclean_mask(gfn 0, mask 0x1): %llu changed\n",
	       (unsigned long long)n);
	demo_lookup(d, 0, "bit 0");
	demo_lookup(d, P, "bit 1 off");

	printf("\nflush the whole space (memslot delete / VM teardown)\n");
	demo_tables(d, "before flush:");
	flushed = gpamm_pgt_flush_range(&d->pgt, 0, UINT64_MAX, &fl);
	printf("  flush_range: %llu entries cleared, %llu table(s) unlinked\n",
	       (unsigned long long)flushed, (unsigned long long)fl.nr);
	/* Here the MMU would flush remote TLBs; unlinked tables are still readable. */
	demo_tables(d, "after flush (TLB flush due):");
	gpamm_pgt_free_deferred(&d->pgt, &fl);
	demo_tables(d, "after free_deferred:");
	pte = gpamm_pgt_lookup(&d->pgt, 0, NULL);
	printf("  lookup 0x0 after flush: %s\n", pte ? "STILL MAPPED" : "none");
	if (pte)
		bad = -1;
	return bad;
}

static int demo_run(int argc, char **argv)
{
	unsigned page_shift = 14, levels = 3;
	struct gpamm_tpool_stats st;
	struct cli_parser p;
	struct demo d;
	char name[32], page[32], huge[32];
	const char *val;
	uint64_t v;
	int opt, bad;

	cli_parser_init(&p, "demo", argc, argv);
	while ((opt = cli_next(&p, demo_opts, &val)) != CLI_OPT_END) {
		switch (opt) {
		case OPT_HELP:
			demo_usage(stdout);
			return CLI_EXIT_OK;
		case OPT_PAGE_SHIFT:
			if (!cli_parse_u64(val, &v) || (v != 12 && v != 14 && v != 16))
				return cli_usage_error("demo", "--page-shift must be 12 (4K), "
						       "14 (16K) or 16 (64K), not '%s'", val);
			page_shift = (unsigned)v;
			break;
		case OPT_LEVELS:
			if (!cli_parse_u64(val, &v) || v < 2 || v > 4)
				return cli_usage_error("demo", "--levels must be 2, 3 or 4, not '%s'",
						       val);
			levels = (unsigned)v;
			break;
		case CLI_OPT_POS:
			return cli_usage_error("demo", "unexpected argument '%s'", val);
		default:
			return CLI_EXIT_USAGE;
		}
	}

	memset(&d, 0, sizeof(d));
	if (gpamm_geom_init(&d.g, page_shift, levels))
		return cli_usage_error("demo", "no LoongArch layout has %u-byte pages and "
				       "%u levels (4K: 3 or 4 levels; 16K, 64K: 2 or 3)",
				       1u << page_shift, levels);

	printf("gpamm demo: %s (page %s, %u entries per table, %u GPA bits, huge leaf %s)\n\n",
	       cli_layout_name(page_shift, levels, name, sizeof(name)),
	       cli_size(d.g.page_size, page, sizeof(page)), d.g.entries, d.g.gpa_bits,
	       cli_size(gpamm_geom_huge_size(&d.g), huge, sizeof(huge)));

	d.pool = gpamm_tpool_create(page_shift);
	if (!d.pool) {
		fprintf(stderr, "gpamm demo: cannot create the table-page pool\n");
		return CLI_EXIT_FAIL;
	}
	gpamm_tpool_ops(d.pool, &d.mm);
	gpamm_memcache_init(&d.mc, &d.mm);
	if (gpamm_pgt_init(&d.pgt, &d.g, &d.mm)) {
		fprintf(stderr, "gpamm demo: gpamm_pgt_init: out of memory\n");
		gpamm_tpool_destroy(d.pool);
		return CLI_EXIT_FAIL;
	}
	demo_tables(&d, "empty table (root only):");
	printf("\n");

	bad = demo_body(&d);

	gpamm_pgt_destroy(&d.pgt);
	gpamm_memcache_release(&d.mc);
	gpamm_tpool_stats(d.pool, &st);
	printf("\ndestroy: pool allocated %llu pages in total, freed %llu\n",
	       (unsigned long long)st.allocs, (unsigned long long)st.frees);
	printf("tables live after destroy: %llu\n", (unsigned long long)st.live);
	gpamm_tpool_destroy(d.pool);
	if (st.live || bad) {
		fprintf(stderr, "gpamm demo: %s\n", st.live ? "table pages leaked"
							   : "unexpected result above");
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

const struct cli_cmd cli_cmd_demo = {
	.name = "demo",
	.summary = "a short tour of the page table: map, lookup, clean, age, flush",
	.run = demo_run,
	.usage = demo_usage,
};
