// SPDX-License-Identifier: MIT
/*
 * Suite access_cost: what one guest access through a vCPU costs, next to
 * a plain native store loop over the same host memory, measured in the
 * same run, so that the ratio of the two is the price of the translation.
 *
 *   N iterations (-i) of
 *     populate        the first access of every page (a mapping fault
 *                     each; host memory pre-touched, so no host fault);
 *                     from the second iteration on the memslots are
 *                     deleted and created again first, untimed, so that
 *                     nothing is mapped
 *     TLB hit         one 8-byte store per word over the first 32 pages,
 *                     many passes: every access hits the vCPU's TLB
 *     native store    the same stores, straight to the host memory
 *     TLB miss        one 8-byte store per page at random pages of all of
 *                     memory (as many stores as pages per pass, passes
 *                     enough for a million stores): with far more pages
 *                     than the TLB holds, nearly every store walks
 *     native random   the same pages in the same order, straight
 *
 * Targets, informational: TLB hit <= 2x native, TLB miss <= 5x native;
 * each ratio is the median of the per-iteration ratios. The loops are the
 * kernels of bench/lib/kernels_vm.c.
 *
 * One vCPU does every access, on the command's own thread pinned to CPU 0
 * (the machine's CPUs may differ in speed); with -v N the vCPU simply has
 * all N x -b bytes. Populate is ns per page, the loops ns per access
 * ("ns/op"). A sweep over memory sizes ends with the measured account of
 * why the TLB-miss cost grows with memory: the caches and the host's own
 * TLB, on both sides of the ratio.
 */
#include <errno.h>
#include <math.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/gpamm.h"
#include "lib/suite.h"
#include "lib/common.h"
#include "lib/kernels_vm.h"

#define AC_HIT_PAGES  32          /* well inside the TLB */
#define AC_HIT_STORES (1u << 24)  /* per iteration, each side */
#define AC_MISS_STORES (1u << 20) /* at least, per iteration: whole passes over memory */
#define AC_MISS_SEED  7
#define AC_CPU        0

static const struct bench_phase_def ac_phases[] = {
	{ "populate", "populate memory time", "Populate memory", "populate (avg)", true,
	  BENCH_NORM_PAGE },
	{ "tlb_hit", "TLB-hit access time", "TLB-hit access", "TLB-hit access (avg)", true,
	  BENCH_NORM_OP },
	{ "native_hit", "native store time", "Native store", "native store (avg)", true,
	  BENCH_NORM_OP },
	{ "tlb_miss", "TLB-miss access time", "TLB-miss access", "TLB-miss access (avg)", true,
	  BENCH_NORM_OP },
	{ "native_miss", "native random store time", "Native random store",
	  "native random (avg)", true, BENCH_NORM_OP },
	{ "populate_fresh", "populate fresh memory time", "Populate fresh memory",
	  "populate fresh (avg)", true, BENCH_NORM_OP },
	{ "first_touch", "native first touch time", "Native first touch", "first touch (avg)",
	  true, BENCH_NORM_OP },
};

enum { AC_POP_FAULTS, AC_HIT_MISSES, AC_MISS_MISSES, AC_TABLE_PAGES };

static const struct bench_counter_def ac_counters[] = {
	[AC_POP_FAULTS] = { "populate_faults", "faults taken by populate" },
	[AC_HIT_MISSES] = { "hit_tlb_misses", "guest TLB misses in the TLB-hit loop" },
	[AC_MISS_MISSES] = { "miss_tlb_misses", "guest TLB misses in the TLB-miss loop" },
	[AC_TABLE_PAGES] = { "table_pages", "GPA table pages live, root included" },
};

static const struct bench_ratio ac_ratios[] = {
	{ "tlb_hit", "native_hit", "TLB-hit access / native store", 2.0, 0 },
	{ "tlb_miss", "native_miss", "TLB-miss access / native random store", 5.0, 0 },
	{ "populate_fresh", "first_touch", "populate fresh memory / native first touch", 1.2, 12 },
	BENCH_BOUND("populate", "populate (host memory pre-touched)", 250, 12),
};

static double counter_mean(const struct bench_run *r, unsigned c)
{
	double sum = 0;

	if (!r->has_count[c] || !r->cfg.iterations)
		return NAN;
	for (unsigned k = 0; k < r->cfg.iterations; k++)
		sum += (double)r->count[c][k];
	return sum / r->cfg.iterations;
}

/*
 * The native loops did as many stores as the guest accesses, the TLB-hit
 * loop stayed in the TLB, and no TLB-miss store missed more than once.
 */
static bool ac_check(const struct bench_run *r, char *why, size_t len)
{
	const struct bench_suite *s = r->suite;
	const int hit = bench_phase_index(s, "tlb_hit");
	const int nhit = bench_phase_index(s, "native_hit");
	const int miss = bench_phase_index(s, "tlb_miss");
	const int nmiss = bench_phase_index(s, "native_miss");

	if (r->ops[hit] != r->ops[nhit] || r->ops[miss] != r->ops[nmiss] || !r->ops[hit] ||
	    !r->ops[miss] || r->ops[miss] % r->pages) {
		snprintf(why, len, "store counts differ: TLB hit %llu, native %llu; TLB miss %llu, "
			 "native %llu (%llu pages)", (unsigned long long)r->ops[hit],
			 (unsigned long long)r->ops[nhit], (unsigned long long)r->ops[miss],
			 (unsigned long long)r->ops[nmiss], (unsigned long long)r->pages);
		return false;
	}
	for (unsigned k = 0; k < r->cfg.iterations; k++) {
		if (r->count[AC_MISS_MISSES][k] > r->ops[miss]) {
			snprintf(why, len, "iteration %u: %llu TLB misses in %llu stores", k + 1,
				 (unsigned long long)r->count[AC_MISS_MISSES][k],
				 (unsigned long long)r->ops[miss]);
			return false;
		}
		if (r->count[AC_HIT_MISSES][k] * 100 > r->ops[hit]) {
			snprintf(why, len, "iteration %u: the TLB-hit loop missed %llu times in "
				 "%llu stores", k + 1, (unsigned long long)r->count[AC_HIT_MISSES][k],
				 (unsigned long long)r->ops[hit]);
			return false;
		}
	}
	return true;
}

/* ---- the sweep's explanation ---------------------------------------------------------- */

static double per_op(const struct bench_run *r, const char *key)
{
	return bench_phase_per_page(r, bench_phase_index(r->suite, key));
}

/*
 * Why the TLB-miss figures are not flat, from the runs themselves: the
 * miss rate, the size of the GPA tables and of the host's page tables next
 * to the caches, and how the native loop moved over the same range.
 */
static void ac_sweep_explain(const struct bench_run *const *runs, const char *const *labels,
			     unsigned n, FILE *f)
{
	const struct bench_run *a = runs[0], *z = runs[n - 1];
	const uint64_t l2 = bench_cache_bytes(2), l3 = bench_cache_bytes(3);
	double g, nat, tables, rlo = INFINITY, rhi = 0;
	char b1[32], b2[32];

	fprintf(f, "  what the TLB-miss loop meets (L2 %s, L3 %s):\n",
		l2 ? bench_size_str(l2, b1, sizeof(b1)) : "?",
		l3 ? bench_size_str(l3, b2, sizeof(b2)) : "?");
	fprintf(f, "    %-8s %12s %14s %10s %11s %12s %9s\n", "mem", "GPA tables",
		"host PTEs (4K)", "miss rate", "TLB miss", "native rand", "ratio");
	for (unsigned i = 0; i < n; i++) {
		const struct bench_run *r = runs[i];
		const uint64_t bytes = bench_total_bytes(&r->cfg);
		double tb = counter_mean(r, AC_TABLE_PAGES) * (double)r->page_size;
		double rate = counter_mean(r, AC_MISS_MISSES) /
			      (double)r->ops[bench_phase_index(r->suite, "tlb_miss")];
		double ratio = bench_ratio_value(r, &ac_ratios[1]);
		char t[32], h[32], m[32], x[32];

		rlo = fmin(rlo, ratio);
		rhi = fmax(rhi, ratio);
		fprintf(f, "    %-8s %12s %14s %9.1f%% %8s ns %9s ns %8.2fx\n", labels[i],
			bench_size_str((uint64_t)tb, t, sizeof(t)),
			r->cfg.thp ? "(THP)" : bench_size_str(bytes / 512, h, sizeof(h)),
			100 * rate, bench_fmt_ns(per_op(r, "tlb_miss"), m, sizeof(m)),
			bench_fmt_ns(per_op(r, "native_miss"), x, sizeof(x)), ratio);
	}
	g = per_op(z, "tlb_miss") / per_op(a, "tlb_miss");
	nat = per_op(z, "native_miss") / per_op(a, "native_miss");
	tables = counter_mean(z, AC_TABLE_PAGES) * (double)z->page_size;
	fprintf(f, "  why: from %s to %s the TLB-miss access went %.2fx and the native random "
		"store to the same pages %.2fx; the ratio of the two ranged over "
		"%.2fx..%.2fx. Both loops store to a random page each time: once the range "
		"outgrows the caches and what the host's DTLB covers, every store misses the "
		"caches and%s walks the host's page tables, whose entries stop fitting in the "
		"caches too, on both sides alike. The guest side adds its walk of the GPA tables "
		"(%s at %s, %s the L3). TLB-hit and native store do not depend on the size.\n",
		labels[0], labels[n - 1], g, nat, rlo, rhi,
		z->cfg.thp ? " (THP: rarely)" : " (4K host pages)",
		bench_size_str((uint64_t)tables, b1, sizeof(b1)), labels[n - 1],
		!l3 ? "next to" : tables > (double)l3 ? "more than" : "within");
}

/* ---- the gpamm backend ------------------------------------------------------------------ */

static uint64_t table_pages(struct gpamm_vm *vm)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(vm, &st);
	return st.table_pages;
}

static const char *exit_why(struct gpamm_vcpu *v, char *buf, size_t len)
{
	const struct gpamm_run *run = gpamm_vcpu_run_state(v);

	snprintf(buf, len, "exit reason %u, guest returned %d", run->exit_reason, run->guest_ret);
	return buf;
}

/*
 * Populate of memory the host has never touched, next to the native first
 * touch of as much fresh memory: both take a host page fault per page, so
 * the ratio is what the guest's fault adds to the host's. Each side gets
 * its own new mapping per iteration; a VM of its own (direct host, one
 * slot) for the guest side.
 */
#define AC_FRESH_MAX (1ULL << 30)

static void *ac_fresh_map(uint64_t len, bool thp)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
		       MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return p;
}

static int ac_fresh(struct bench_rig *d, unsigned it, uint64_t len)
{
	const struct bench_cfg *c = d->cfg;
	struct bench_run *r = d->r;
	struct gpamm_vm_config vcfg = { .page_shift = c->page_shift, .levels = c->levels };
	struct gpamm_host *h = gpamm_host_direct_create(c->page_shift);
	struct gpamm_vm *vm = NULL;
	struct gpamm_vcpu *v;
	uint8_t *m = ac_fresh_map(len, c->thp);
	char why[96];
	double t;
	int ret = -1;

	vcfg.host = h;
	if (!h || !m || gpamm_vm_create(&vcfg, &vm) || gpamm_vcpu_create(vm, 0, &v)) {
		bench_run_fail(r, BENCH_FAILED, "iteration %u: fresh-memory VM: cannot set up", it);
		goto out;
	}
	struct gpamm_userspace_memory_region reg = { .slot = 0, .guest_phys_addr = r->gpa_base,
		.memory_size = len, .userspace_addr = (uintptr_t)m };
	if (gpamm_vm_set_memory_region(vm, &reg)) {
		bench_run_fail(r, BENCH_FAILED, "iteration %u: fresh-memory slot", it);
		goto out;
	}
	t = bk_populate(v, r->gpa_base, len);
	if (t < 0) {
		bench_run_fail(r, BENCH_FAILED, "iteration %u: populate fresh: %s", it,
			       exit_why(v, why, sizeof(why)));
		goto out;
	}
	bench_phase_record(r, "populate_fresh", it, t);
	gpamm_vm_destroy(vm);
	vm = NULL;
	munmap(m, len);
	m = ac_fresh_map(len, c->thp);
	if (!m) {
		bench_run_fail(r, BENCH_FAILED, "iteration %u: no fresh memory", it);
		goto out;
	}
	t = bench_now_ns();
	bk_native_first_touch(m, len, c->page_shift);
	bench_phase_record(r, "first_touch", it, bench_now_ns() - t);
	ret = 0;
out:
	if (vm)
		gpamm_vm_destroy(vm);
	gpamm_host_destroy(h);
	if (m)
		munmap(m, len);
	return ret;
}

static int ac_body(struct bench_rig *d)
{
	const struct bench_cfg *c = d->cfg;
	struct bench_run *r = d->r;
	const uint64_t total = bench_total_bytes(c);
	const uint64_t hit_pages = r->pages < AC_HIT_PAGES ? r->pages : AC_HIT_PAGES;
	const uint64_t hit_len = hit_pages << c->page_shift;
	const uint64_t words = hit_len / 8;
	const uint64_t passes = words >= AC_HIT_STORES ? 1 : AC_HIT_STORES / words;
	const uint64_t mpasses = (AC_MISS_STORES + r->pages - 1) / r->pages;
	const uint64_t fresh_len = total < AC_FRESH_MAX ? total : AC_FRESH_MAX;
	struct gpamm_vm_stats st0, st1;
	char why[96], tb[32], hb[32];
	double t;

	if (c->out) {
		fprintf(c->out, "TLB-hit loop: %llu pages (%s), one 8-byte store per word, %llu "
			"passes = %llu stores per iteration; TLB-miss loop: one 8-byte store per "
			"page at random pages, %llu pass%s = %llu stores per iteration\n",
			(unsigned long long)(hit_len >> c->page_shift),
			bench_size_str(hit_len, hb, sizeof(hb)), (unsigned long long)passes,
			(unsigned long long)(passes * words), (unsigned long long)mpasses,
			mpasses == 1 ? "" : "es", (unsigned long long)(mpasses * r->pages));
		fflush(c->out);
	}

	bench_phase_ops(r, "tlb_hit", passes * words);
	bench_phase_ops(r, "native_hit", passes * words);
	bench_phase_ops(r, "tlb_miss", mpasses * r->pages);
	bench_phase_ops(r, "native_miss", mpasses * r->pages);
	bench_phase_ops(r, "populate_fresh", fresh_len >> c->page_shift);
	bench_phase_ops(r, "first_touch", fresh_len >> c->page_shift);
	for (unsigned it = 1; it <= c->iterations; it++) {
		struct bk_access a;

		if (c->out)
			fputc('\n', c->out);
		/* nothing mapped: delete the slots (every translation goes) and add them again */
		if (it > 1 && (bench_rig_slots(d, false, 0, "deletion") ||
			       bench_rig_slots(d, true, 0, "creation")))
			return -1;
		gpamm_vm_stats(d->vm, &st0);
		t = bk_populate(d->vcpu[0], r->gpa_base, total);
		if (t < 0)
			return bench_run_fail(r, BENCH_FAILED, "iteration %u: populate: %s", it,
					      exit_why(d->vcpu[0], why, sizeof(why)));
		gpamm_vm_stats(d->vm, &st1);
		bench_phase_record(r, "populate", it, t);
		bench_count_record(r, "populate_faults", it, st1.faults - st0.faults);
		if (it == 1 && c->out)
			fprintf(c->out, "(GPA tables after populate: %llu pages, %s)\n",
				(unsigned long long)st1.table_pages,
				bench_size_str(st1.table_pages << c->page_shift, tb, sizeof(tb)));

		if (bk_tlb_hit(d->vcpu[0], r->gpa_base, d->mem.p, hit_len, passes, &a))
			return bench_run_fail(r, BENCH_FAILED, "iteration %u: TLB-hit loop: %s", it,
					      exit_why(d->vcpu[0], why, sizeof(why)));
		if (a.accesses != passes * words)
			return bench_run_fail(r, BENCH_FAILED, "iteration %u: TLB-hit loop did "
					      "%llu accesses, not %llu", it,
					      (unsigned long long)a.accesses,
					      (unsigned long long)(passes * words));
		bench_phase_record(r, "tlb_hit", it, a.guest_ns);
		bench_phase_record(r, "native_hit", it, a.native_ns > 0 ? a.native_ns : 1);
		bench_count_record(r, "hit_tlb_misses", it, a.tlb_misses);

		if (bk_tlb_miss(d->vcpu[0], r->gpa_base, d->mem.p, total, c->page_shift, mpasses,
				AC_MISS_SEED + it - 1, &a))
			return bench_run_fail(r, BENCH_FAILED, "iteration %u: TLB-miss loop: %s",
					      it, exit_why(d->vcpu[0], why, sizeof(why)));
		if (a.accesses != mpasses * r->pages)
			return bench_run_fail(r, BENCH_FAILED, "iteration %u: TLB-miss loop did "
					      "%llu accesses, not %llu", it,
					      (unsigned long long)a.accesses,
					      (unsigned long long)(mpasses * r->pages));
		bench_phase_record(r, "tlb_miss", it, a.guest_ns);
		bench_phase_record(r, "native_miss", it, a.native_ns > 0 ? a.native_ns : 1);
		bench_count_record(r, "miss_tlb_misses", it, a.tlb_misses);
		bench_count_record(r, "table_pages", it, table_pages(d->vm));
		if (ac_fresh(d, it, fresh_len))
			return -1;
	}
	if (c->out)
		fputc('\n', c->out);
	return 0;
}

static int ac_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	struct bench_rig k;
	cpu_set_t saved;
	char sz[32];
	int cpu, ret = -1;

	/* one vCPU, on this thread, with all the memory */
	if (bench_rig_init(&k, c, r, 1) || bench_rig_vm_up(&k, 0))
		goto out;
	/* The guest runs on this thread: pin it for the whole measurement. */
	cpu = bench_pin_cpu(AC_CPU, &saved);
	bench_rig_header(&k, "%u iteration%s; the vCPU runs on this thread, %s%d",
			 c->iterations, c->iterations == 1 ? "" : "s",
			 cpu < 0 ? "not pinned: CPU " : "pinned to CPU ", cpu < 0 ? AC_CPU : cpu);
	if (c->out && c->vcpus > 1)
		fprintf(c->out, "(access_cost measures one vCPU; it has all %u x %s)\n",
			c->vcpus, bench_size_str(c->bytes_per_vcpu, sz, sizeof(sz)));
	ret = ac_body(&k);
	if (cpu >= 0)
		sched_setaffinity(0, sizeof(saved), &saved);
out:
	bench_rig_destroy(&k);
	return ret;
}

const struct bench_suite bench_suite_access_cost = {
	.name = "access_cost",
	.summary = "guest access cost: TLB hit, TLB miss vs native stores; populate",
	.phases = ac_phases,
	.nphases = sizeof(ac_phases) / sizeof(ac_phases[0]),
	.counters = ac_counters,
	.ncounters = sizeof(ac_counters) / sizeof(ac_counters[0]),
	.run_gpamm = ac_run_gpamm,
	.run_kvm = NULL,
	.check = ac_check,
	.ratios = ac_ratios,
	.nratios = sizeof(ac_ratios) / sizeof(ac_ratios[0]),
	.sweep_explain = ac_sweep_explain,
};
