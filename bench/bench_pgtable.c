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
 * match) does fail it, since then the figures mean nothing.
 */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpamm/geom.h"
#include "gpamm/pgtable.h"
#include "gpamm/pte.h"

#define MIN_REPS      7
#define GIB           (1ULL << 30)
#define QUICK_BYTES   (64ULL << 20)
#define NR_LOOKUPS    (1u << 20)
#define QUICK_LOOKUPS (1u << 16)
#define RNG_SEED      0x6770616d6d2d6265ULL
#define NOISY         1.25 /* max/min spread that makes a figure worth a note */

/* A write-faulted, cached, writable page: what most of guest RAM looks like. */
#define PROT_DIRTY (GPAMM_PTE_PRESENT | GPAMM_PTE_VALID | GPAMM_PTE_MAT_CC | \
		    GPAMM_PTE_WR_MARKER | GPAMM_PTE_WRITEABLE)
#define PFN_BASE   0x1000ULL

/* Keeps the compiler from dropping computed results. */
static volatile uint64_t sink;

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

struct bench {
	struct gpamm_geom g;
	struct gpamm_tpool *pool;
	struct gpamm_mm_ops mm;
	struct gpamm_memcache mc;
	struct gpamm_pgt pgt;
	uint64_t pages, bytes;
	unsigned shift, reps;
	uint64_t *gpas;		/* random lookup addresses */
	uint64_t nr_lookups;
	uint64_t *words;	/* the limit's array: one word per page */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n & 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void fail(const char *what, uint64_t got, uint64_t want)
{
	fprintf(stderr, "bench_pgtable: %s: got %llu, expected %llu\n", what,
		(unsigned long long)got, (unsigned long long)want);
	exit(1);
}

/*
 * Map every page as a fault does: top up (a no-op unless a table was
 * taken), then map. Both calls are what a vCPU pays per fault, so both
 * are inside the timed region. Return: the elapsed ns.
 */
static uint64_t map_all(struct bench *b)
{
	unsigned need = gpamm_pgt_map_pages(&b->pgt);
	uint64_t i, t0, t1;
	int err = 0;

	t0 = now_ns();
	for (i = 0; i < b->pages; i++) {
		err |= gpamm_memcache_topup(&b->mc, need);
		err |= gpamm_pgt_map(&b->pgt, i << b->shift, 0,
				     gpamm_pte_mk(PFN_BASE + i, b->shift, PROT_DIRTY),
				     &b->mc) != 1;
	}
	t1 = now_ns();
	if (err)
		fail("map: a map did not install its page", 1, 0);
	return t1 - t0;
}

/*
 * Make every page dirty again the way guest writes between two log rounds
 * do: through the fast fault path's mkdirty (an atomic update per page).
 */
static void redirty_all(struct bench *b)
{
	uint64_t i;

	for (i = 0; i < b->pages; i++)
		if (gpamm_pgt_mkdirty(&b->pgt, i << b->shift, NULL) != 1)
			fail("mkdirty before a timed mkclean", 0, 1);
}

static double time_lookups(struct bench *b)
{
	const uint64_t *gpas = b->gpas;
	const uint64_t n = b->nr_lookups;
	uint64_t i, t0, t1, sum = 0;

	t0 = now_ns();
	for (i = 0; i < n; i++)
		sum += gpamm_pgt_lookup(&b->pgt, gpas[i], NULL);
	t1 = now_ns();
	sink = sum;
	if (!sum)
		fail("lookup: nothing found", 0, 1);
	return (double)(t1 - t0) / (double)n;
}

static double time_mkclean_range(struct bench *b)
{
	uint64_t n, t0, t1;

	redirty_all(b);
	t0 = now_ns();
	n = gpamm_pgt_mkclean_range(&b->pgt, 0, b->bytes);
	t1 = now_ns();
	if (n != b->pages)
		fail("mkclean_range: entries changed", n, b->pages);
	return (double)(t1 - t0) / (double)b->pages;
}

/* KVM_CLEAR_DIRTY_LOG's arch hook, once per 64-page word of the bitmap. */
static double time_mkclean_mask(struct bench *b)
{
	const uint64_t groups = b->pages / 64;
	uint64_t g, n = 0, t0, t1;

	redirty_all(b);
	t0 = now_ns();
	for (g = 0; g < groups; g++)
		n += gpamm_pgt_mkclean_mask(&b->pgt, g * 64, ~0ULL);
	t1 = now_ns();
	if (n != groups * 64)
		fail("mkclean_mask: entries changed", n, groups * 64);
	return (double)(t1 - t0) / (double)(groups * 64);
}

/*
 * The limit: one pass over one 8-byte word per page, clearing a bit in
 * each, word by word, as the table operations must (entries are read and
 * written as whole 64-bit atomics). The same pass as the compiler
 * vectorises it is timed too and printed beside it, for information.
 */
static __attribute__((noinline, optimize("no-tree-vectorize"))) void
clear_bit_scalar(uint64_t *w, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		w[i] &= ~GPAMM_PTE_DIRTY;
	__asm__ volatile("" : : "r"(w) : "memory");
}

static __attribute__((noinline)) void clear_bit_simd(uint64_t *w, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		w[i] &= ~GPAMM_PTE_DIRTY;
	__asm__ volatile("" : : "r"(w) : "memory");
}

static double time_limit_with(struct bench *b, void (*pass)(uint64_t *, uint64_t))
{
	uint64_t *w = b->words;
	const uint64_t n = b->pages; /* a local: the stores cannot alias it */
	uint64_t i, t0, t1;

	for (i = 0; i < n; i++)
		w[i] = PROT_DIRTY;
	t0 = now_ns();
	pass(w, n);
	t1 = now_ns();
	return (double)(t1 - t0) / (double)n;
}

static double time_limit(struct bench *b)
{
	return time_limit_with(b, clear_bit_scalar);
}

/* Memslot delete: clear, unlink the emptied tables, free them after the "TLB flush". */
static double time_flush(struct bench *b)
{
	struct gpamm_pgt_freelist fl = { NULL, 0 };
	uint64_t n, t0, t1;

	t0 = now_ns();
	n = gpamm_pgt_flush_range(&b->pgt, 0, b->bytes, &fl);
	gpamm_pgt_free_deferred(&b->pgt, &fl);
	t1 = now_ns();
	if (n != b->pages)
		fail("flush_range: entries cleared", n, b->pages);
	if (gpamm_pgt_live_tables(&b->pgt) != 1)
		fail("flush_range: tables left besides the root",
		     gpamm_pgt_live_tables(&b->pgt), 1);
	return (double)(t1 - t0) / (double)b->pages;
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
	struct bench b;
	uint64_t i, seed = RNG_SEED;
	double *v, *ratios;
	unsigned r, f;

	memset(&b, 0, sizeof(b));
	memset(res, 0, sizeof(*res));
	if (gpamm_geom_init(&b.g, page_shift, levels))
		fail("gpamm_geom_init", 1, 0);
	b.shift = page_shift;
	b.bytes = bytes;
	b.pages = bytes >> page_shift;
	b.reps = reps;
	b.nr_lookups = nr_lookups;
	b.pool = gpamm_tpool_create(page_shift);
	b.gpas = malloc(nr_lookups * sizeof(*b.gpas));
	b.words = malloc(b.pages * sizeof(*b.words));
	v = malloc(NR_FIGS * reps * sizeof(*v));
	ratios = malloc(reps * sizeof(*ratios));
	if (!b.pool || !b.gpas || !b.words || !v || !ratios) {
		fprintf(stderr, "bench_pgtable: out of memory\n");
		exit(1);
	}
	gpamm_tpool_ops(b.pool, &b.mm);
	gpamm_memcache_init(&b.mc, &b.mm);
	/* Any byte of the range: lookups hit every page and every offset. */
	for (i = 0; i < nr_lookups; i++)
		b.gpas[i] = splitmix64(&seed) & (bytes - 1);

	res->page_shift = page_shift;
	res->levels = levels;
	res->pages = b.pages;
	res->lookups = nr_lookups;

	for (r = 0; r < reps; r++) {
		if (gpamm_pgt_init(&b.pgt, &b.g, &b.mm))
			fail("gpamm_pgt_init", 1, 0);
		v[F_MAP * reps + r] = (double)map_all(&b) / (double)b.pages;
		if (r == 0) {
			gpamm_tpool_stats(b.pool, &st);
			res->live_tables = gpamm_pgt_live_tables(&b.pgt);
			res->table_bytes = res->live_tables << page_shift;
			res->pool_bytes = st.bytes;
		}
		v[F_LOOKUP * reps + r] = time_lookups(&b);
		/*
		 * An untimed clean first, so that both timed cleans start from
		 * the dirty-logging steady state: pages cleaned by the previous
		 * round and dirtied again through the fault path's mkdirty.
		 */
		gpamm_pgt_mkclean_range(&b.pgt, 0, b.bytes);
		v[F_MKCLEAN * reps + r] = time_mkclean_range(&b);
		v[F_MASK * reps + r] = time_mkclean_mask(&b);
		v[F_LIMIT * reps + r] = time_limit(&b);
		v[F_LIMIT_VEC * reps + r] = time_limit_with(&b, clear_bit_simd);
		v[F_FLUSH * reps + r] = time_flush(&b);
		gpamm_pgt_destroy(&b.pgt);
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
	gpamm_tpool_destroy(b.pool);
	free(b.gpas);
	free(b.words);
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

/*
 * Stay on one CPU for the whole run. On a VM the vCPUs can differ in speed
 * by 2x (a busy host core behind one of them); a migration in the middle
 * of a run would mix both into one median. Which CPU that is stays the
 * caller's choice (taskset); this only stops the scheduler moving us.
 * Return: the CPU, or -1 if pinning is not possible (then we just run).
 */
static int pin_to_current_cpu(void)
{
	cpu_set_t set;
	int cpu = sched_getcpu();

	if (cpu < 0)
		return -1;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -1 : cpu;
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

	cpu = pin_to_current_cpu();
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
