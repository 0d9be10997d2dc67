// SPDX-License-Identifier: MIT
/*
 * bench_pgtable - how fast the GPA table's hot operations are, measured
 * against the cheapest thing each could possibly be. For 1 GiB of GPA in
 * the 4K/3-level and 16K/3-level layouts it times mapping every page the
 * way the fault path does (memcache top-up included), random lookups,
 * write-protecting the whole range (enabling dirty logging, classic
 * KVM_GET_DIRTY_LOG), write-protecting it 64 pages at a time by mask
 * (KVM_CLEAR_DIRTY_LOG), and flushing it (memslot delete). Next to them it
 * times the "limit": a plain linear pass clearing one bit in as many
 * 8-byte words as there are pages, i.e. what a range operation would cost
 * if the table walk were free. One repetition takes every figure once,
 * back to back; each figure is the median over at least seven, and a
 * ratio to the limit is the median of the per-repetition ratios, which
 * stays steady when a shared machine slows down for a while. Targets are
 * reported PASS/MISS, but a miss never fails the run: this is a
 * measurement, not a timed test. A wrong result (a count that does not
 * match) does fail it, since then the figures mean nothing. The timed
 * operations are the kernels of lib/kernels_pgtable.c, the same that
 * "gpamm bench pgtable" runs.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "gpamm/geom.h"
#include "gpamm/pgtable.h"
#include "lib/kernels_pgtable.h"

#define MIN_REPS      7
#define GIB           (1ULL << 30)
#define QUICK_BYTES   (64ULL << 20)
#define NR_LOOKUPS    (1u << 20)
#define QUICK_LOOKUPS (1u << 16)
#define RNG_SEED      0x6770616d6d2d6265ULL
#define NOISY         1.25 /* max/min spread that makes a figure worth a note */

enum fig_id { F_MAP, F_LOOKUP, F_MKCLEAN, F_MASK, F_FLUSH, F_LIMIT, F_LIMIT_VEC, NR_FIGS };
enum target_kind { TGT_NONE, TGT_NS, TGT_LIMIT };

static const struct fig_desc {
	const char *key;	/* JSON key */
	const char *label;
	const char *unit;
	enum target_kind kind;
	double target;		/* ns, or a multiple of the limit */
	bool ratio;		/* print the ratio to the limit */
} figs[NR_FIGS] = {
	[F_MAP]     = { "map", "map (with memcache top-up)", "ns/page", TGT_NS, 40.0, false },
	[F_LOOKUP]  = { "lookup", "random lookup", "ns", TGT_NS, 10.0, false },
	[F_MKCLEAN] = { "mkclean_range", "mkclean whole range", "ns/page", TGT_LIMIT, 1.6, true },
	[F_MASK]    = { "mkclean_mask", "mkclean by mask (64 bits set)", "ns/page", TGT_LIMIT, 2.5, true },
	[F_FLUSH]   = { "flush", "flush + free_deferred", "ns/page", TGT_NONE, 0, true },
	[F_LIMIT]   = { "limit", "limit: clear 1 bit per word", "ns/page", TGT_NONE, 0, true },
	[F_LIMIT_VEC] = { "limit_simd", "  same pass, compiler-vectorised", "ns/page", TGT_NONE, 0, true },
};

struct result {
	unsigned page_shift, levels;
	uint64_t pages, lookups;
	uint64_t live_tables, table_bytes, pool_bytes;
	double ns[NR_FIGS];	/* medians */
	double lo[NR_FIGS], hi[NR_FIGS];
	double ratio[NR_FIGS];	/* median of the per-repetition ratios to the limit */
};

static void fail(const char *what, uint64_t got, uint64_t want)
{
	fprintf(stderr, "bench_pgtable: %s: got %llu, expected %llu\n", what,
		(unsigned long long)got, (unsigned long long)want);
	exit(1);
}

/* A kernel that returned a wrong count: the figures would mean nothing. */
static double must(const struct bk_pgt *b, double ns)
{
	if (ns < 0) {
		fprintf(stderr, "bench_pgtable: %s\n", b->err);
		exit(1);
	}
	return ns;
}

/*
 * One repetition times every figure once, back to back: map from an empty
 * table, look up, mkclean both ways, the limit, flush. A slow spell of the
 * machine (this may be a shared VM) then hits all figures of a repetition
 * alike, and the ratio to the limit is taken within a repetition, where
 * it is steady, before the median is taken across repetitions.
 */
static void run_layout(unsigned page_shift, unsigned levels, uint64_t bytes,
		       unsigned reps, uint64_t nr_lookups, struct result *res)
{
	struct gpamm_tpool_stats st;
	struct bk_pgt b;
	double *v, *ratios, pages;
	unsigned r, f;

	memset(res, 0, sizeof(*res));
	if (bk_pgt_setup(&b, page_shift, levels, bytes, nr_lookups, RNG_SEED)) {
		fprintf(stderr, "bench_pgtable: %s\n", b.err);
		exit(1);
	}
	pages = (double)b.pages;
	v = malloc(NR_FIGS * reps * sizeof(*v));
	ratios = malloc(reps * sizeof(*ratios));
	if (!v || !ratios) {
		fprintf(stderr, "bench_pgtable: out of memory\n");
		exit(1);
	}

	res->page_shift = page_shift;
	res->levels = levels;
	res->pages = b.pages;
	res->lookups = nr_lookups;

	for (r = 0; r < reps; r++) {
		if (bk_pgt_start(&b))
			must(&b, -1);
		v[F_MAP * reps + r] = must(&b, bk_pgt_map_all(&b)) / pages;
		if (r == 0) {
			gpamm_tpool_stats(b.pool, &st);
			res->live_tables = gpamm_pgt_live_tables(&b.pgt);
			res->table_bytes = res->live_tables << page_shift;
			res->pool_bytes = st.bytes;
		}
		v[F_LOOKUP * reps + r] = must(&b, bk_pgt_lookups(&b)) / (double)nr_lookups;
		/*
		 * An untimed clean first, so that both timed cleans start from
		 * the dirty-logging steady state: pages cleaned by the previous
		 * round and dirtied again through the fault path's mkdirty.
		 */
		gpamm_pgt_mkclean_range(&b.pgt, 0, b.bytes);
		v[F_MKCLEAN * reps + r] = must(&b, bk_pgt_mkclean_range(&b)) / pages;
		v[F_MASK * reps + r] = must(&b, bk_pgt_mkclean_mask(&b)) / pages;
		v[F_LIMIT * reps + r] = bk_pgt_limit(&b) / pages;
		v[F_LIMIT_VEC * reps + r] = bk_pgt_limit_simd(&b) / pages;
		v[F_FLUSH * reps + r] = must(&b, bk_pgt_flush_range(&b)) / pages;
		bk_pgt_stop(&b);
	}

	for (f = 0; f < NR_FIGS; f++) {
		double *s = &v[f * reps];

		for (r = 0; r < reps; r++)
			ratios[r] = s[r] / v[F_LIMIT * reps + r];
		res->ratio[f] = median(ratios, reps);
		res->ns[f] = median(s, reps); /* sorts s: ratios first */
		res->lo[f] = s[0];
		res->hi[f] = s[reps - 1];
	}

	gpamm_memcache_release(&b.mc);
	gpamm_tpool_stats(b.pool, &st);
	if (st.live)
		fail("table pages live after destroy", st.live, 0);
	bk_pgt_teardown(&b);
	free(v);
	free(ratios);
}

/* ---- reporting --------------------------------------------------------- */

static double ratio(const struct result *r, enum fig_id f)
{
	return r->ratio[f];
}

static bool has_target(enum fig_id f)
{
	return figs[f].kind != TGT_NONE;
}

static bool passed(const struct result *r, enum fig_id f)
{
	switch (figs[f].kind) {
	case TGT_NS:
		return r->ns[f] <= figs[f].target;
	case TGT_LIMIT:
		return ratio(r, f) <= figs[f].target;
	default:
		return true;
	}
}

static const char *size_str(uint64_t bytes, char *buf, size_t len)
{
	if (bytes >= GIB && !(bytes % GIB))
		snprintf(buf, len, "%llu GiB", (unsigned long long)(bytes / GIB));
	else if (bytes >= (1ULL << 20))
		snprintf(buf, len, "%.1f MiB", (double)bytes / (1 << 20));
	else
		snprintf(buf, len, "%.1f KiB", (double)bytes / 1024);
	return buf;
}

static unsigned print_table(const struct result *res, unsigned n, uint64_t bytes,
			    unsigned reps, int cpu)
{
	unsigned i, misses = 0, checked = 0;
	enum fig_id f;
	char sz[32], tb[32], pb[32];

	printf("bench_pgtable: %s of GPA per layout; each figure is the median of %u "
	       "repetitions", size_str(bytes, sz, sizeof(sz)), reps);
	if (cpu >= 0)
		printf("; pinned to CPU %d", cpu);
	printf("\n");
	for (i = 0; i < n; i++) {
		const struct result *r = &res[i];

		printf("\n%uK/%u-level: %llu pages; after mapping: %llu table pages live, "
		       "%s of tables (pool mapped %s)\n",
		       1u << (r->page_shift - 10), r->levels,
		       (unsigned long long)r->pages, (unsigned long long)r->live_tables,
		       size_str(r->table_bytes, tb, sizeof(tb)),
		       size_str(r->pool_bytes, pb, sizeof(pb)));
		printf("  %-30s %14s  %-15s  %-16s %7s  %s\n", "figure", "median",
		       "min..max", "target", "x limit", "result");
		for (f = 0; f < NR_FIGS; f++) {
			char val[32], spread[32], tgt[32], rat[16];

			snprintf(val, sizeof(val), "%.2f %s", r->ns[f], figs[f].unit);
			snprintf(spread, sizeof(spread), "%.2f..%.2f", r->lo[f], r->hi[f]);
			if (figs[f].kind == TGT_NS)
				snprintf(tgt, sizeof(tgt), "<= %.0f %s", figs[f].target,
					 figs[f].unit);
			else if (figs[f].kind == TGT_LIMIT)
				snprintf(tgt, sizeof(tgt), "<= %.1fx limit", figs[f].target);
			else
				snprintf(tgt, sizeof(tgt), "-");
			if (figs[f].ratio)
				snprintf(rat, sizeof(rat), "%.2fx", ratio(r, f));
			else
				snprintf(rat, sizeof(rat), "-");
			if (has_target(f)) {
				checked++;
				misses += !passed(r, f);
			}
			printf("  %-30s %14s  %-15s  %-16s %7s  %s\n", figs[f].label, val,
			       spread, tgt, rat,
			       has_target(f) ? (passed(r, f) ? "PASS" : "MISS") : "");
		}
		printf("  (random lookup: %llu addresses per repetition; x limit: median of "
		       "the per-repetition ratios)\n", (unsigned long long)r->lookups);
		for (f = 0; f < NR_FIGS; f++)
			if (r->hi[f] > NOISY * r->lo[f])
				break;
		if (f < NR_FIGS) {
			printf("  note: noisy run, max > %.2fx min for:", NOISY);
			for (f = 0; f < NR_FIGS; f++)
				if (r->hi[f] > NOISY * r->lo[f])
					printf(" %s", figs[f].key);
			printf(" (shared machine? try --reps 21)\n");
		}
	}
	printf("\ntargets: %u checked, %u PASS, %u MISS%s\n", checked, checked - misses,
	       misses, misses ? " (figures only: the run still succeeds)" : "");
	return misses;
}

static void print_json(const struct result *res, unsigned n, uint64_t bytes,
		       unsigned reps, int cpu)
{
	unsigned i, misses = 0, checked = 0;
	enum fig_id f;

	printf("{\n  \"bench\": \"pgtable\",\n  \"gpa_bytes\": %llu,\n"
	       "  \"repetitions\": %u,\n  \"statistic\": \"median\",\n  \"cpu\": %d,\n"
	       "  \"layouts\": [\n", (unsigned long long)bytes, reps, cpu);
	for (i = 0; i < n; i++) {
		const struct result *r = &res[i];

		printf("    {\n      \"layout\": \"%uK/%u-level\",\n      \"page_shift\": %u,\n"
		       "      \"levels\": %u,\n      \"pages\": %llu,\n"
		       "      \"lookups_per_repetition\": %llu,\n"
		       "      \"live_tables\": %llu,\n      \"table_bytes\": %llu,\n"
		       "      \"pool_bytes\": %llu,\n      \"figures\": {\n",
		       1u << (r->page_shift - 10), r->levels, r->page_shift, r->levels,
		       (unsigned long long)r->pages, (unsigned long long)r->lookups,
		       (unsigned long long)r->live_tables,
		       (unsigned long long)r->table_bytes, (unsigned long long)r->pool_bytes);
		for (f = 0; f < NR_FIGS; f++) {
			printf("        \"%s\": { \"value\": %.3f, \"min\": %.3f, \"max\": %.3f, "
			       "\"unit\": \"%s\"", figs[f].key, r->ns[f], r->lo[f], r->hi[f],
			       figs[f].unit);
			if (figs[f].ratio)
				printf(", \"ratio_to_limit\": %.3f", ratio(r, f));
			if (figs[f].kind == TGT_NS)
				printf(", \"target\": %.1f, \"target_unit\": \"%s\"",
				       figs[f].target, figs[f].unit);
			else if (figs[f].kind == TGT_LIMIT)
				printf(", \"target\": %.1f, \"target_unit\": \"x limit\"",
				       figs[f].target);
			if (has_target(f)) {
				checked++;
				misses += !passed(r, f);
				printf(", \"result\": \"%s\"", passed(r, f) ? "PASS" : "MISS");
			}
			printf(" }%s\n", f + 1 < NR_FIGS ? "," : "");
		}
		printf("      }\n    }%s\n", i + 1 < n ? "," : "");
	}
	printf("  ],\n  \"targets_checked\": %u,\n  \"targets_missed\": %u\n}\n",
	       checked, misses);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_pgtable [--json] [--quick] [--reps N]\n"
		"\n"
		"Time map, random lookup, mkclean (range and 64-bit mask) and flush over\n"
		"1 GiB of GPA at 4K/3-level and 16K/3-level, against a linear pass that\n"
		"clears one bit per page-sized word (the limit). Figures are medians.\n"
		"\n"
		"  --json     print the results as JSON\n"
		"  --quick    64 MiB instead of 1 GiB (smoke test)\n"
		"  --reps N   repetitions per figure (at least %u, default %u)\n"
		"\n"
		"Exit status: 0 (also when a target is missed), 1 if the library returned\n"
		"a wrong result, 2 on bad usage.\n", MIN_REPS, MIN_REPS);
}

int main(int argc, char **argv)
{
	static const unsigned layouts[][2] = { { 12, 3 }, { 14, 3 } };
	struct result res[2];
	uint64_t bytes = GIB, nr_lookups = NR_LOOKUPS;
	unsigned reps = MIN_REPS, i;
	bool json = false;
	int cpu;

	for (i = 1; i < (unsigned)argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--json")) {
			json = true;
		} else if (!strcmp(a, "--quick")) {
			bytes = QUICK_BYTES;
			nr_lookups = QUICK_LOOKUPS;
		} else if (!strcmp(a, "--reps") || !strncmp(a, "--reps=", 7)) {
			const char *v = a[6] == '=' ? a + 7 : (i + 1 < (unsigned)argc ? argv[++i] : NULL);
			char *end = NULL;
			unsigned long n = 0;

			errno = 0;
			if (v && *v >= '0' && *v <= '9')
				n = strtoul(v, &end, 10);
			if (!end || errno || *end || n < MIN_REPS || n > 1000) {
				fprintf(stderr, "bench_pgtable: --reps needs a number from %u to 1000\n",
					MIN_REPS);
				return 2;
			}
			reps = (unsigned)n;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "bench_pgtable: unknown argument '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}

	cpu = bench_pin_here(NULL);
	for (i = 0; i < 2; i++) {
		if (!json)
			fprintf(stderr, "bench_pgtable: running %uK/%u-level...\n",
				1u << (layouts[i][0] - 10), layouts[i][1]);
		run_layout(layouts[i][0], layouts[i][1], bytes, reps, nr_lookups, &res[i]);
	}
	if (json)
		print_json(res, 2, bytes, reps, cpu);
	else
		print_table(res, 2, bytes, reps, cpu);
	return 0;
}
