// SPDX-License-Identifier: MIT
/*
 * Suite fault_scaling: do faults on different pages proceed in parallel?
 * One run has -v vCPUs and measures, for each fault mode -- parallel (the
 * default: faults under mmu_lock for read) and serialised
 * (GPAMM_VM_SERIAL_FAULTS: every fault takes it for write, one at a time,
 * the same code otherwise) -- on a fresh VM each iteration:
 *
 *   populate   every vCPU writes each page of its own slice once: one slow
 *              fault per page (mapping it)
 *   dirty      logging enabled (every page write-protected), then every
 *              vCPU writes each page again: one fast fault per page (made
 *              dirty and logged)
 *   demand     a fresh VM again, every vCPU reads each page of its slice:
 *              the demand-paging fault, a slow fault per page
 *   overlap    a fresh VM, every vCPU writes each page of the same slice
 *              (vCPU 0's): faults on the same pages at the same time, one
 *              of them maps and the others find it mapped
 *
 * and, next to them, what the machine gives the same number of threads on
 * its own: "plain", one 8-byte store per page of each thread's slice of the
 * same (pre-touched) memory, no VM. Each gpamm phase has its wall time (per
 * page per vCPU: what each vCPU pays for one page) and the CPU time of its
 * vCPU threads per fault ("..._cpu", ns per fault).
 *
 * With 2 or more vCPUs, each iteration also runs populate, dirty and demand
 * with vCPU 0 alone ("solo") and the plain loop on one thread, interleaved
 * with the rest: on a shared machine, whose speed drifts by 2x within
 * seconds, only ratios taken within one iteration are worth judging.
 *
 * Swept over the vCPU count (--sweep vcpus=1,2: the total memory stays),
 * the suite prints the scaling across the sweep's runs and judges its
 * targets in the 2-vCPU run, on disjoint memory, for each of populate,
 * dirty and demand, from the medians of per-iteration ratios: throughput
 * at least 1.8x vCPU 0 alone and at least 0.9x the plain loop's own
 * 2-thread scaling, at least 1.5x the serialised mode's, and CPU time per
 * fault within 1.15x of vCPU 0 alone. Throughput scaling at N vCPUs is
 * N x (cost per page per vCPU alone) / (the same with N). More vCPU threads than online CPUs are reported as
 * oversubscribed: the figures are then the scheduler's.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/gpamm.h"
#include "lib/common.h"
#include "lib/suite.h"

enum { FS_POP, FS_DIRTY, FS_DEMAND, FS_OVERLAP, FS_NWORK };
enum { FS_PAR, FS_SER, FS_NMODE, FS_SOLO = FS_NMODE };

static const char *const fs_work[FS_NWORK] = { "populate", "dirty", "demand", "overlap" };

#define PH(w, m, l, t)                                                                  \
	{ w "_" m, l " time", l, t " (avg)", true, BENCH_NORM_VCPU_PAGE },              \
	{ w "_" m "_cpu", l " CPU time per fault", l " CPU per fault", t " CPU/fault",  \
	  true, BENCH_NORM_OP }

/* Index of phase (work, mode, cpu) in the table: 4 per work, in this order. */
#define FS_PHASE(w, m, cpu) ((w) * 4 + (m) * 2 + (cpu))
#define FS_PLAIN            (FS_NWORK * 4)

static const struct bench_phase_def fs_phases[] = {
	PH("populate", "par", "populate (parallel)", "populate par"),
	PH("populate", "ser", "populate (serialised)", "populate ser"),
	PH("dirty", "par", "dirty-write faults (parallel)", "dirty par"),
	PH("dirty", "ser", "dirty-write faults (serialised)", "dirty ser"),
	PH("demand", "par", "demand paging (parallel)", "demand par"),
	PH("demand", "ser", "demand paging (serialised)", "demand ser"),
	PH("overlap", "par", "populate, one shared slice (parallel)", "overlap par"),
	PH("overlap", "ser", "populate, one shared slice (serialised)", "overlap ser"),
	{ "plain", "plain store loop time", "Plain store loop", "plain loop (avg)", true,
	  BENCH_NORM_VCPU_PAGE },
	/* with 2+ vCPUs, interleaved with the above: vCPU 0 alone, and one plain thread */
	PH("populate", "solo", "populate (parallel, vCPU 0 alone)", "populate solo"),
	PH("dirty", "solo", "dirty-write faults (parallel, vCPU 0 alone)", "dirty solo"),
	PH("demand", "solo", "demand paging (parallel, vCPU 0 alone)", "demand solo"),
	{ "plain_solo", "plain store loop time, one thread", "Plain store loop, one thread",
	  "plain loop 1 thread", true, BENCH_NORM_VCPU_PAGE },
};

/* The solo phases: populate, dirty and demand with vCPU 0 alone (+1: CPU per fault). */
#define FS_SOLO_PHASE(w, cpu) (FS_PLAIN + 1 + (w) * 2 + (cpu))
#define FS_PLAIN_SOLO         (FS_PLAIN + 1 + 3 * 2)

enum { FS_C_POP_FAULTS, FS_C_DIRTY_FAULTS, FS_C_DEMAND_FAULTS };

static const struct bench_counter_def fs_counters[] = {
	[FS_C_POP_FAULTS] = { "populate_faults", "faults in populate (parallel)" },
	[FS_C_DIRTY_FAULTS] = { "dirty_faults", "faults in dirty (parallel)" },
	[FS_C_DEMAND_FAULTS] = { "demand_faults", "faults in demand (parallel)" },
};

/* Within one run: the serialised mode's cost over the parallel one's. */
static const struct bench_ratio fs_ratios[] = {
	{ "populate_ser", "populate_par", "populate: serialised / parallel", 0, 0 },
	{ "dirty_ser", "dirty_par", "dirty: serialised / parallel", 0, 0 },
	{ "demand_ser", "demand_par", "demand: serialised / parallel", 0, 0 },
	{ "overlap_ser", "overlap_par", "overlap: serialised / parallel", 0, 0 },
};

/* ---- one measured pass ------------------------------------------------------------ */

/* One pass of every vCPU: wall time recorded as @phase, CPU per fault as @phase + 1. */
static int fs_pass(struct bench_rig *k, unsigned it, int phase, unsigned write_percent,
		   uint64_t *faults)
{
	struct gpamm_vm_stats st0, st1;
	double t, cpu = 0;

	k->write_percent = write_percent;
	gpamm_vm_stats(k->vm, &st0);
	t = bench_rig_step(k, "%s", fs_phases[phase].key);
	if (t < 0)
		return -1;
	gpamm_vm_stats(k->vm, &st1);
	for (unsigned i = 0; i < k->nvcpus; i++)
		cpu += k->vcpu_cpu_ns[i];
	*faults = st1.faults - st0.faults;
	bench_phase_record(k->r, fs_phases[phase].key, it, t);
	/* recorded per fault already */
	bench_phase_ops(k->r, fs_phases[phase + 1].key, 1);
	bench_phase_record(k->r, fs_phases[phase + 1].key, it,
			   *faults ? cpu / (double)*faults : NAN);
	return 0;
}

/* A fresh VM in @mode with vCPU i on its own slice, or all on slice 0 (@shared). */
static int fs_vm(struct bench_rig *k, unsigned mode, bool shared)
{
	bench_rig_vm_down(k);
	k->vm_flags = mode == FS_SER ? GPAMM_VM_SERIAL_FAULTS : 0;
	if (bench_rig_vm_up(k, 0))
		return -1;
	if (shared)
		for (unsigned i = 0; i < k->nvcpus; i++)
			k->w[i].gpa = k->r->gpa_base;
	return 0;
}

/* The phase of @w in @mode (FS_SOLO: the parallel mode with vCPU 0 alone). */
static int fs_phase(unsigned w, unsigned mode)
{
	return mode == FS_SOLO ? FS_SOLO_PHASE(w, 0) : FS_PHASE(w, mode, 0);
}

static int fs_mode_iter(struct bench_rig *k, unsigned mode, unsigned it)
{
	struct bench_run *r = k->r;
	const bool solo = mode == FS_SOLO;
	uint64_t f;

	k->active = solo ? 1 : 0;
	if (solo)
		mode = FS_PAR;
	/* populate, then dirty-write faults on the same VM */
	if (fs_vm(k, mode, false) ||
	    fs_pass(k, it, fs_phase(FS_POP, solo ? FS_SOLO : mode), 100, &f))
		return -1;
	if (mode == FS_PAR && !solo)
		bench_count_record(r, "populate_faults", it, f);
	if (bench_rig_slots(k, true, GPAMM_MEM_LOG_DIRTY_PAGES, "enabling dirty logging") ||
	    fs_pass(k, it, fs_phase(FS_DIRTY, solo ? FS_SOLO : mode), 100, &f))
		return -1;
	if (mode == FS_PAR && !solo)
		bench_count_record(r, "dirty_faults", it, f);
	/* demand paging: reads on a fresh VM */
	if (fs_vm(k, mode, false) ||
	    fs_pass(k, it, fs_phase(FS_DEMAND, solo ? FS_SOLO : mode), 0, &f))
		return -1;
	if (mode == FS_PAR && !solo)
		bench_count_record(r, "demand_faults", it, f);
	k->active = 0;
	if (solo)
		return 0;
	/* every vCPU on the same pages */
	if (fs_vm(k, mode, true) || fs_pass(k, it, FS_PHASE(FS_OVERLAP, mode, 0), 100, &f))
		return -1;
	return 0;
}

/* ---- the plain loop ------------------------------------------------------------------ */

struct fs_plain {
	uint8_t *mem;
	uint64_t pages_per_thread;
	unsigned page_shift;
	pthread_barrier_t *go;
	double t0, t1;
};

static void *fs_plain_thread(void *arg)
{
	struct fs_plain *p = arg;

	pthread_barrier_wait(p->go);
	p->t0 = bench_now_ns();
	for (uint64_t i = 0; i < p->pages_per_thread; i++)
		*(volatile uint64_t *)(p->mem + (i << p->page_shift)) = i;
	p->t1 = bench_now_ns();
	return NULL;
}

/*
 * N threads, one store per page of their slices: the wall time from the
 * first thread's start to the last one's end (each thread takes its own
 * times: the caller may not run again until they are done).
 */
static double fs_plain(struct bench_rig *k, unsigned n)
{
	const uint64_t ppt = (k->total >> k->cfg->page_shift) / k->nvcpus;
	struct fs_plain *p = calloc(n, sizeof(*p));
	pthread_t *th = calloc(n, sizeof(*th));
	pthread_barrier_t go;
	double first = INFINITY, last = 0, t = -1;
	unsigned started = 0;

	if (!p || !th)
		goto out;
	pthread_barrier_init(&go, NULL, n + 1);
	for (unsigned i = 0; i < n; i++) {
		p[i] = (struct fs_plain){ .mem = k->mem.p + ((i * ppt) << k->cfg->page_shift),
					  .pages_per_thread = ppt,
					  .page_shift = k->cfg->page_shift, .go = &go };
		if (pthread_create(&th[i], NULL, fs_plain_thread, &p[i]))
			break;
		started++;
	}
	if (started == n) {
		pthread_barrier_wait(&go);
		for (unsigned i = 0; i < n; i++) {
			pthread_join(th[i], NULL);
			first = fmin(first, p[i].t0);
			last = fmax(last, p[i].t1);
		}
		t = last - first;
	} else {
		/* the barrier can never fill: nothing was measured */
		for (unsigned i = 0; i < started; i++)
			pthread_cancel(th[i]);
		for (unsigned i = 0; i < started; i++)
			pthread_join(th[i], NULL);
	}
	pthread_barrier_destroy(&go);
out:
	free(p);
	free(th);
	return t;
}

/*
 * The plain loop is short (one store per page): one pass is at the mercy
 * of a thread started late on a shared machine, so each iteration records
 * the median of FS_PLAIN_PASSES passes.
 */
#define FS_PLAIN_PASSES 5

static double fs_plain_median(struct bench_rig *k, unsigned nthreads)
{
	double v[FS_PLAIN_PASSES];

	for (int i = 0; i < FS_PLAIN_PASSES; i++)
		if ((v[i] = fs_plain(k, nthreads)) < 0)
			return -1;
	return median(v, FS_PLAIN_PASSES);
}

static int fs_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	struct bench_rig k;
	unsigned cpus = bench_online_cpus();
	int ret = -1;

	if (c->serial_faults)
		return bench_run_fail(r, BENCH_FAILED, "fault_scaling runs both modes itself: "
				      "drop --serial-faults");
	if (bench_rig_init(&k, c, r, 0) || bench_rig_start(&k))
		goto out;
	bench_rig_header(&k, "%u iteration%s per mode%s", c->iterations,
			 c->iterations == 1 ? "" : "s",
			 c->vcpus > cpus ? " (oversubscribed: more vCPU threads than CPUs)" : "");
	for (unsigned it = 1; it <= c->iterations; it++) {
		double t;

		if (c->out)
			fprintf(c->out, "\n");
		/* with 2+ vCPUs also vCPU 0 alone, interleaved: same-run scaling */
		for (unsigned m = 0; m < (k.nvcpus > 1 ? FS_NMODE + 1 : FS_NMODE); m++) {
			if (fs_mode_iter(&k, m, it))
				goto out;
		}
		bench_rig_vm_down(&k);
		t = fs_plain_median(&k, k.nvcpus);
		if (t < 0) {
			bench_run_fail(r, BENCH_FAILED, "plain loop: no threads");
			goto out;
		}
		bench_phase_record(r, "plain", it, t);
		if (k.nvcpus > 1) {
			t = fs_plain_median(&k, 1);
			if (t < 0) {
				bench_run_fail(r, BENCH_FAILED, "plain loop: no thread");
				goto out;
			}
			bench_phase_record(r, "plain_solo", it, t);
		}
	}
	ret = 0;
out:
	bench_rig_destroy(&k);
	return ret;
}

/* Every page faulted exactly once in each pass of the parallel mode. */
static bool fs_check(const struct bench_run *r, char *why, size_t len)
{
	for (unsigned c = 0; c < r->suite->ncounters; c++)
		for (unsigned k = 0; k < r->cfg.iterations; k++)
			if (r->count[c][k] != r->pages) {
				snprintf(why, len, "iteration %u: %llu %s, expected %llu (one per page)",
					 k + 1, (unsigned long long)r->count[c][k],
					 r->suite->counters[c].label, (unsigned long long)r->pages);
				return false;
			}
	return true;
}

/* ---- the targets, across the sweep -------------------------------------------------- */

static double fs_pp(const struct bench_run *r, int idx)
{
	return bench_phase_median_per_page(r, idx);
}

/*
 * Median over the iterations of run @r of phase @a's sample over phase
 * @b's (same normalisation: the ratio of the per-page figures). NAN
 * without samples.
 */
static double fs_iter_ratio(const struct bench_run *r, int a, int b)
{
	double v[BENCH_MAX_ITERS];
	unsigned n = 0;

	if (!r->has[a] || !r->has[b])
		return NAN;
	for (unsigned k = 0; k < r->nsamples[a] && k < r->nsamples[b] && n < BENCH_MAX_ITERS; k++)
		if (r->ns[b][k] > 0)
			v[n++] = r->ns[a][k] / r->ns[b][k];
	return n ? median(v, (int)n) : NAN;
}

/* Throughput of run @r relative to run @one: N x per-page-per-vCPU cost at 1 / at N,
 * from the medians of the iterations. */
static double fs_scaling(const struct bench_run *one, const struct bench_run *r, int idx)
{
	return r->cfg.vcpus * fs_pp(one, idx) / fs_pp(r, idx);
}

static void fs_sweep_targets(const struct bench_run *const *runs, const char *const *labels,
			     unsigned n, FILE *f)
{
	const struct bench_run *one = NULL, *two = NULL;
	unsigned cpus = bench_online_cpus();
	char what[96], val[32], tgt[32];

	for (unsigned i = 0; i < n; i++) {
		if (runs[i]->cfg.vcpus == 1)
			one = runs[i];
		if (runs[i]->cfg.vcpus == 2)
			two = runs[i];
	}
	if (f) {
		fprintf(f, "  fault_scaling: throughput relative to 1 vCPU (N x cost per page per "
			"vCPU at 1 / at N), and CPU per fault relative to 1 vCPU:\n");
		fprintf(f, "    %-8s", "vcpus");
		for (unsigned w = 0; w < FS_NWORK; w++)
			fprintf(f, " %9s %9s", fs_work[w], "ser");
		fprintf(f, " %9s\n", "plain");
		for (unsigned i = 0; one && i < n; i++) {
			fprintf(f, "    %-8s", labels[i]);
			for (unsigned w = 0; w < FS_NWORK; w++)
				fprintf(f, " %8.2fx %8.2fx",
					fs_scaling(one, runs[i], FS_PHASE(w, FS_PAR, 0)),
					fs_scaling(one, runs[i], FS_PHASE(w, FS_SER, 0)));
			fprintf(f, " %8.2fx%s\n", fs_scaling(one, runs[i], FS_PLAIN),
				runs[i]->cfg.vcpus > cpus ? "  (oversubscribed)" : "");
		}
	}
	if (!one || !two) {
		if (f)
			fprintf(f, "  fault_scaling: the targets compare 2 vCPUs with 1: sweep "
				"vcpus=1,2\n");
		return;
	}
	if (f)
		fprintf(f, "  targets at 2 vCPUs, disjoint memory, measured in the 2-vCPU run itself: "
			"each iteration also ran vCPU 0 alone and the plain loop on one thread, "
			"interleaved (medians of the per-iteration ratios):\n");
	for (unsigned w = FS_POP; w <= FS_DEMAND; w++) {
		const int par = FS_PHASE(w, FS_PAR, 0), ser = FS_PHASE(w, FS_SER, 0);
		const int solo = FS_SOLO_PHASE(w, 0);
		/* throughput: 2 pages for each page vCPU 0 does alone in the same time */
		double s = 2 * fs_iter_ratio(two, solo, par);
		double plain = 2 * fs_iter_ratio(two, FS_PLAIN_SOLO, FS_PLAIN);
		double vs_ser = fs_iter_ratio(two, ser, par);
		double cpu = fs_iter_ratio(two, par + 1, solo + 1);

		snprintf(what, sizeof(what), "%s: throughput, 2 vCPUs / 1", fs_work[w]);
		snprintf(val, sizeof(val), "%.2fx", s);
		bench_target_report(f, what, val, ">= 1.80x", s >= 1.8);
		snprintf(what, sizeof(what), "%s: scaling / the plain loop's (%.2fx)", fs_work[w],
			 plain);
		snprintf(val, sizeof(val), "%.2fx", s / plain);
		bench_target_report(f, what, val, ">= 0.90x", s / plain >= 0.9);
		snprintf(what, sizeof(what), "%s: parallel / serialised throughput, 2 vCPUs",
			 fs_work[w]);
		snprintf(val, sizeof(val), "%.2fx", vs_ser);
		bench_target_report(f, what, val, ">= 1.50x", vs_ser >= 1.5);
		snprintf(what, sizeof(what), "%s: CPU per fault, 2 vCPUs / 1", fs_work[w]);
		snprintf(val, sizeof(val), "%.2fx", cpu);
		snprintf(tgt, sizeof(tgt), "<= 1.15x");
		bench_target_report(f, what, val, tgt, cpu <= 1.15);
	}
}

const struct bench_suite bench_suite_fault_scaling = {
	.name = "fault_scaling",
	.summary = "populate, dirty-write and demand faults on -v vCPUs, parallel and serialised, "
		   "next to a plain loop (sweep vcpus=1,2)",
	.phases = fs_phases,
	.nphases = sizeof(fs_phases) / sizeof(fs_phases[0]),
	.counters = fs_counters,
	.ncounters = sizeof(fs_counters) / sizeof(fs_counters[0]),
	.run_gpamm = fs_run_gpamm,
	.check = fs_check,
	.ratios = fs_ratios,
	.nratios = sizeof(fs_ratios) / sizeof(fs_ratios[0]),
	.sweep_targets = fs_sweep_targets,
};
