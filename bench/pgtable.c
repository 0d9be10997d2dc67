// SPDX-License-Identifier: MIT
/*
 * Suite pgtable: the page-table core's operations (include/gpamm/pgtable.h)
 * over every page of the configured memory, next to the memory-bound limit
 * measured in the same iteration: a plain scalar pass over as many 64-bit
 * words as there are pages, i.e. what a range operation would cost if the
 * table walk were free. Each iteration, on a fresh table:
 *
 *   map             every page, as the fault path does (memcache top-up
 *                   and map, both timed)
 *   random lookup   every page once, in random order, at a random byte
 *   mkclean range   write-protect the whole range in one call (enable
 *                   logging); every page dirtied again first, untimed
 *   mkclean mask    the same, 64 pages per call (KVM_CLEAR_DIRTY_LOG)
 *   mkold           clear the young bit of the whole range (aging)
 *   test_young      scan the whole range for a young page: none is left,
 *                   so the scan cannot stop early
 *   limit           the scalar pass
 *   unmap           clear every leaf; the tables stay
 *   flush           map again (untimed), then clear every leaf, unlink the
 *                   emptied tables and free them (memslot delete)
 *
 * One untimed iteration comes first, so that the pool holds its table
 * pages and the caches the code, as in a VM that has run for a while.
 * Everything is ns per page (per lookup for lookups); the ratios to the
 * limit are medians of the per-iteration ratios. The table maps fake
 * frame numbers: no guest RAM is allocated, so -v, -m and --backing do
 * not apply. The operations are the kernels of bench/lib/kernels_pgtable.c;
 * a count that does not match (a page
 * not mapped, not found, not changed) fails the run. The command's thread
 * is pinned to CPU 0 for the run.
 */
#include <math.h>
#include <string.h>

#include "lib/suite.h"
#include "lib/common.h"
#include "lib/kernels_pgtable.h"

#define PT_SEED 0x6770616d6d2d6265ULL
#define PT_CPU  0

static const struct bench_phase_def pt_phases[] = {
	{ "map", "map time (with memcache top-up)", "Map", "map (avg)", true, BENCH_NORM_PAGE },
	{ "lookup", "random lookup time", "Random lookup", "random lookup (avg)", true,
	  BENCH_NORM_PAGE },
	{ "mkclean_range", "mkclean range time", "Mkclean range", "mkclean range (avg)", true,
	  BENCH_NORM_PAGE },
	{ "mkclean_mask", "mkclean by mask time", "Mkclean by mask", "mkclean mask (avg)", true,
	  BENCH_NORM_PAGE },
	{ "mkold", "mkold range time", "Mkold range", "mkold range (avg)", true,
	  BENCH_NORM_PAGE },
	{ "test_young", "test_young time", "Test_young", "test_young (avg)", true,
	  BENCH_NORM_PAGE },
	{ "limit", "limit pass time", "Limit pass", "limit pass (avg)", true, BENCH_NORM_PAGE },
	{ "unmap", "unmap range time", "Unmap range", "unmap range (avg)", true,
	  BENCH_NORM_PAGE },
	{ "flush", "flush + free_deferred time", "Flush + free_deferred", "flush range (avg)",
	  true, BENCH_NORM_PAGE },
};

enum { PT_MAPPED, PT_FOUND, PT_CLEANED, PT_FLUSHED };

static const struct bench_counter_def pt_counters[] = {
	[PT_MAPPED] = { "pages_mapped", "pages mapped" },
	[PT_FOUND] = { "lookups_found", "lookups that found their page" },
	[PT_CLEANED] = { "pages_cleaned", "pages write-protected by mkclean range" },
	[PT_FLUSHED] = { "pages_flushed", "pages cleared by flush" },
};

/* The targets of the page-table core; the other ratios are for reading. */
static const struct bench_ratio pt_ratios[] = {
	{ "map", "limit", "map / limit", 0, 0 },
	{ "lookup", "limit", "random lookup / limit", 0, 0 },
	{ "mkclean_range", "limit", "mkclean range / limit", 1.6, 0 },
	{ "mkclean_mask", "limit", "mkclean by mask / limit", 2.5, 0 },
	{ "mkold", "limit", "mkold range / limit", 0, 0 },
	{ "test_young", "limit", "test_young / limit", 0, 0 },
	{ "unmap", "limit", "unmap range / limit", 0, 0 },
	{ "flush", "limit", "flush + free_deferred / limit", 0, 0 },
	BENCH_BOUND("map", "map (with memcache top-up)", 40, 0),
	BENCH_BOUND("lookup", "random lookup", 10, 0),
};

/* Every page mapped, found, cleaned and flushed exactly once per iteration. */
static bool pt_check(const struct bench_run *r, char *why, size_t len)
{
	for (unsigned c = 0; c < r->suite->ncounters; c++) {
		for (unsigned k = 0; k < r->cfg.iterations; k++) {
			if (r->has_count[c] && r->count[c][k] == r->pages)
				continue;
			snprintf(why, len, "iteration %u: %s: %llu, but there are %llu pages",
				 k + 1, r->suite->counters[c].label,
				 r->has_count[c] ? (unsigned long long)r->count[c][k] : 0ULL,
				 (unsigned long long)r->pages);
			return false;
		}
	}
	return true;
}

/* ---- the sweep's explanation ---------------------------------------------------------- */

static double fig(const struct bench_run *r, const char *key)
{
	return bench_phase_per_page(r, bench_phase_index(r->suite, key));
}

/* The first sweep value whose leaf tables (8 bytes per page) exceed @bytes, or NULL. */
static const char *first_above(const struct bench_run *const *runs, const char *const *labels,
			       unsigned n, uint64_t bytes)
{
	for (unsigned i = 0; bytes && i < n; i++)
		if (runs[i]->pages * 8 > bytes)
			return labels[i];
	return NULL;
}

/*
 * Random lookups are the figure that grows: each one ends at a random leaf
 * entry, and the leaf tables (8 bytes per page) outgrow the caches. The
 * range operations read the same entries in order, as the limit streams
 * through its words; say how far each moved, from the runs themselves.
 */
static void pt_sweep_explain(const struct bench_run *const *runs, const char *const *labels,
			     unsigned n, FILE *f)
{
	static const char *const range_ops[] = { "mkclean_range", "mkclean_mask", "mkold",
						  "test_young", "unmap", "flush" };
	const uint64_t l2 = bench_cache_bytes(2), l3 = bench_cache_bytes(3);
	const struct bench_run *a = runs[0], *z = runs[n - 1];
	const char *past_l2 = first_above(runs, labels, n, l2);
	const char *past_l3 = first_above(runs, labels, n, l3 ? l3 - 1 : 0);
	double worst = 0, lim_lo = INFINITY, lim_hi = 0, r_lo = INFINITY, r_hi = 0;
	const char *worst_op = "";
	char b1[32], b2[32];

	fprintf(f, "  what the operations meet (L2 %s, L3 %s):\n",
		l2 ? bench_size_str(l2, b1, sizeof(b1)) : "?",
		l3 ? bench_size_str(l3, b2, sizeof(b2)) : "?");
	fprintf(f, "    %-8s %12s %12s %14s %18s\n", "mem", "leaf tables", "lookup ns",
		"limit ns/page", "mkclean/limit");
	for (unsigned i = 0; i < n; i++) {
		const struct bench_run *r = runs[i];
		char t[32], x[32], y[32];

		lim_lo = fmin(lim_lo, fig(r, "limit"));
		lim_hi = fmax(lim_hi, fig(r, "limit"));
		for (unsigned k = 2; k < sizeof(pt_ratios) / sizeof(pt_ratios[0]); k++) {
			double v = bench_ratio_value(r, &pt_ratios[k]);

			r_lo = fmin(r_lo, v);
			r_hi = fmax(r_hi, v);
		}
		fprintf(f, "    %-8s %12s %12s %14s %17.2fx\n", labels[i],
			bench_size_str(r->pages * 8, t, sizeof(t)),
			bench_fmt_ns(fig(r, "lookup"), x, sizeof(x)),
			bench_fmt_ns(fig(r, "limit"), y, sizeof(y)),
			bench_ratio_value(r, &pt_ratios[2]));
	}
	for (unsigned k = 0; k < sizeof(range_ops) / sizeof(range_ops[0]); k++) {
		double lo = INFINITY, hi = 0;

		for (unsigned i = 0; i < n; i++) {
			lo = fmin(lo, fig(runs[i], range_ops[k]));
			hi = fmax(hi, fig(runs[i], range_ops[k]));
		}
		if (hi / lo > worst) {
			worst = hi / lo;
			worst_op = range_ops[k];
		}
	}
	fprintf(f, "  why: from %s to %s a random lookup went %.2fx. Each one ends at a random "
		"leaf entry, and the leaf tables (8 bytes per page) ", labels[0], labels[n - 1],
		fig(z, "lookup") / fig(a, "lookup"));
	if (past_l2 && past_l3)
		fprintf(f, "outgrow the L2 from %s on and reach the L3's size at %s", past_l2,
			past_l3);
	else if (past_l2)
		fprintf(f, "outgrow the L2 from %s on (the L3 still holds them)", past_l2);
	else
		fprintf(f, "stay within the L2 here");
	fprintf(f, ", so ever more lookups wait for the cache or memory behind it (and for a "
		"walk of the host's TLB: the tables are ever more pages). The range "
		"operations read the same entries in order, which the prefetchers keep ahead of: "
		"per page they moved %.2fx at most (%s). The limit, the same number of bytes "
		"streamed, moved %.2fx as its words left the caches, so the ratios to it span "
		"%.2fx..%.2fx over the sweep.\n", worst, worst_op, lim_hi / lim_lo, r_lo, r_hi);
}

/* ---- the gpamm backend ------------------------------------------------------------------ */

/*
 * A kernel's time, or the run's failure when its count was wrong.
 * Iteration 0 is the warm-up: nothing is recorded (bench_phase_record()
 * and bench_count_record() take iterations from 1).
 */
static const char *when(unsigned it, char *buf, size_t len)
{
	if (it)
		snprintf(buf, len, "iteration %u", it);
	else
		snprintf(buf, len, "warm-up");
	return buf;
}

static int rec(struct bench_run *r, struct bk_pgt *b, const char *key, unsigned it, double ns)
{
	char w[32];

	if (ns < 0)
		return bench_run_fail(r, BENCH_FAILED, "%s: %s", when(it, w, sizeof(w)), b->err);
	bench_phase_record(r, key, it, ns > 0 ? ns : 1);
	return 0;
}

static int pt_iteration(const struct bench_cfg *c, struct bench_run *r, struct bk_pgt *b,
			unsigned it)
{
	char w[32];

	if (bk_pgt_start(b))
		return bench_run_fail(r, BENCH_FAILED, "%s: %s", when(it, w, sizeof(w)), b->err);
	if (rec(r, b, "map", it, bk_pgt_map_all(b)))
		return -1;
	bench_count_record(r, "pages_mapped", it, b->count);
	if (it == 1 && c->out) {
		const uint64_t live = gpamm_pgt_live_tables(&b->pgt);
		struct gpamm_tpool_stats st;
		char t[32], p[32];

		gpamm_tpool_stats(b->pool, &st);
		fprintf(c->out, "(after mapping: %llu table pages live, %s of tables; pool mapped "
			"%s)\n", (unsigned long long)live,
			bench_size_str(live << c->page_shift, t, sizeof(t)),
			bench_size_str(st.bytes, p, sizeof(p)));
	}
	if (rec(r, b, "lookup", it, bk_pgt_lookups(b)))
		return -1;
	bench_count_record(r, "lookups_found", it, b->count);
	/* the dirty-logging steady state: cleaned once, then dirtied again (in the kernel) */
	gpamm_pgt_mkclean_range(&b->pgt, 0, b->bytes);
	if (rec(r, b, "mkclean_range", it, bk_pgt_mkclean_range(b)))
		return -1;
	bench_count_record(r, "pages_cleaned", it, b->count);
	if (rec(r, b, "mkclean_mask", it, bk_pgt_mkclean_mask(b)) ||
	    rec(r, b, "mkold", it, bk_pgt_mkold_range(b)) ||
	    rec(r, b, "test_young", it, bk_pgt_test_young(b)) ||
	    rec(r, b, "limit", it, bk_pgt_limit(b)) ||
	    rec(r, b, "unmap", it, bk_pgt_unmap_range(b)))
		return -1;
	if (bk_pgt_map_all(b) < 0)
		return bench_run_fail(r, BENCH_FAILED, "%s: map again: %s",
				      when(it, w, sizeof(w)), b->err);
	if (rec(r, b, "flush", it, bk_pgt_flush_range(b)))
		return -1;
	bench_count_record(r, "pages_flushed", it, b->count);
	bk_pgt_stop(b);
	return 0;
}

static int pt_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	const uint64_t total = bench_total_bytes(c);
	struct gpamm_tpool_stats st;
	struct bk_pgt b;
	cpu_set_t saved;
	char lay[32], tot[32];
	int cpu, ret = 0;

	if (bk_pgt_setup(&b, c->page_shift, c->levels, total, 0, PT_SEED))
		return bench_run_fail(r, BENCH_FAILED, "%s", b.err);
	snprintf(r->host_desc, sizeof(r->host_desc),
		 "none: the table maps fake frame numbers, no guest RAM");
	cpu = bench_pin_cpu(PT_CPU, &saved);
	if (c->out) {
		fprintf(c->out, "== gpamm: %s, %s of GPA (%llu pages), %u iteration%s after an "
			"untimed one, a fresh table each; %s%d\n",
			bench_layout_name(c->page_shift, c->levels, lay, sizeof(lay)),
			bench_size_str(total, tot, sizeof(tot)), (unsigned long long)r->pages,
			c->iterations, c->iterations == 1 ? "" : "s",
			cpu < 0 ? "not pinned: CPU " : "pinned to CPU ", cpu < 0 ? PT_CPU : cpu);
		if (c->vcpus > 1 || c->slots > 1 || c->thp)
			fprintf(c->out, "(no guest RAM: -v, -m and --backing do not apply; the "
				"table covers all %s)\n", tot);
		fflush(c->out);
	}
	ret = pt_iteration(c, r, &b, 0);
	for (unsigned it = 1; it <= c->iterations && !ret; it++) {
		if (c->out)
			fputc('\n', c->out);
		ret = pt_iteration(c, r, &b, it);
	}
	if (c->out)
		fputc('\n', c->out);
	bk_pgt_stop(&b);
	gpamm_memcache_release(&b.mc);
	gpamm_tpool_stats(b.pool, &st);
	if (!ret && st.live)
		ret = bench_run_fail(r, BENCH_FAILED, "%llu table pages live after the table was "
				     "destroyed", (unsigned long long)st.live);
	bk_pgt_teardown(&b);
	if (cpu >= 0)
		sched_setaffinity(0, sizeof(saved), &saved);
	return ret;
}

const struct bench_suite bench_suite_pgtable = {
	.name = "pgtable",
	.summary = "page-table core: map, lookup, mkclean, mkold, test_young, unmap, flush",
	.phases = pt_phases,
	.nphases = sizeof(pt_phases) / sizeof(pt_phases[0]),
	.counters = pt_counters,
	.ncounters = sizeof(pt_counters) / sizeof(pt_counters[0]),
	.run_gpamm = pt_run_gpamm,
	.run_kvm = NULL,
	.check = pt_check,
	.ratios = pt_ratios,
	.nratios = sizeof(pt_ratios) / sizeof(pt_ratios[0]),
	.sweep_explain = pt_sweep_explain,
};
