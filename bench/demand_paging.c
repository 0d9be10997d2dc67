// SPDX-License-Identifier: MIT
/*
 * Suite demand_paging: the Linux KVM selftest of that name (REFERENCE.md
 * §8) on gpamm, in its plain form (no userfaultfd): every vCPU writes one
 * word per page of its own slice on a VM whose GPA table is empty, so each
 * access takes a first-time (slow) fault that pins the host page and maps
 * it, building the table as it goes. Printed as the selftest does: each
 * vCPU's execution time, "Total guest execution time" (from the go signal
 * to the last vCPU done) and "Overall demand paging rate" in pages/s.
 *
 * What is measured is gpamm's fault-in, not the host's: guest RAM is this
 * process's anonymous memory (direct host), pre-touched before any VM
 * exists, so no fault waits for the host kernel to allocate or zero a
 * page. (The selftest without -u pays those host faults inside KVM's
 * fault path; with -u it adds a userfaultfd round trip per page.)
 *
 * Each iteration (-i; the selftest runs once) creates a fresh VM with its
 * memslots and vCPUs on the same host memory, runs one pass and destroys
 * the VM, so every iteration faults in all memory again. The vCPU threads
 * live across iterations; VM set-up and teardown are not timed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/gpamm.h"
#include "lib/suite.h"

static const struct bench_phase_def dp_phases[] = {
	{ "total", "Total guest execution time", "Demand paging (total guest execution)",
	  "total execution (avg)", true, BENCH_NORM_VCPU_PAGE },
	{ "vcpu", "vCPU execution time (mean of the vCPUs)", "vCPU execution (mean of the vCPUs)",
	  "vCPU execution (avg)", true, BENCH_NORM_VCPU_PAGE },
};

enum { DP_FAULTS, DP_MAPPED, DP_TABLES };

static const struct bench_counter_def dp_counters[] = {
	[DP_FAULTS] = { "faults", "faults taken by the vCPUs" },
	[DP_MAPPED] = { "pages_mapped", "pages mapped after the pass" },
	[DP_TABLES] = { "table_pages", "GPA table pages built (root included)" },
};

/* Every page was faulted in exactly once, and is mapped afterwards. */
static bool dp_check(const struct bench_run *r, char *why, size_t len)
{
	if (!r->has_count[DP_FAULTS] || !r->has_count[DP_MAPPED]) {
		snprintf(why, len, "no fault counts were recorded");
		return false;
	}
	for (unsigned k = 0; k < r->cfg.iterations; k++) {
		if (r->count[DP_MAPPED][k] != r->pages) {
			snprintf(why, len, "iteration %u: %llu of %llu pages mapped after the pass",
				 k + 1, (unsigned long long)r->count[DP_MAPPED][k],
				 (unsigned long long)r->pages);
			return false;
		}
		if (r->count[DP_FAULTS][k] != r->pages) {
			snprintf(why, len, "iteration %u: %llu faults for %llu first-time accesses",
				 k + 1, (unsigned long long)r->count[DP_FAULTS][k],
				 (unsigned long long)r->pages);
			return false;
		}
	}
	return true;
}

/* ---- the gpamm backend --------------------------------------------------------- */

static int dp_iteration(struct bench_rig *k, unsigned it)
{
	const struct bench_cfg *c = k->cfg;
	struct bench_run *r = k->r;
	struct gpamm_vm_stats st0, st1;
	double t, sum = 0;
	int64_t mapped;

	/* a VM with an empty GPA table over the same (pre-touched) memory */
	if (bench_rig_vm_up(k, 0))
		return -1;
	gpamm_vm_stats(k->vm, &st0);
	t = bench_rig_step(k, "iteration %u", it);
	if (t < 0)
		return -1;
	gpamm_vm_stats(k->vm, &st1);
	mapped = gpamm_vm_test_young(k->vm, r->gpa_base, k->total, NULL);
	if (mapped < 0)
		return bench_run_fail(r, BENCH_FAILED, "test young: %s", strerror((int)-mapped));

	if (c->out)
		fputc('\n', c->out);
	for (unsigned i = 0; i < k->nvcpus; i++) {
		sum += k->vcpu_ns[i];
		if (c->out)
			fprintf(c->out, "vCPU %u execution time: %.9fs (%.1f pgs/sec)\n", i,
				k->vcpu_ns[i] / 1e9, (double)r->pages_per_vcpu / (k->vcpu_ns[i] / 1e9));
	}
	bench_phase_record(r, "vcpu", it, sum / k->nvcpus);
	bench_phase_record(r, "total", it, t);
	if (c->out)
		fprintf(c->out, "Iteration %u Overall demand paging rate: %f pgs/sec\n", it,
			(double)r->pages / (t / 1e9));
	bench_count_record(r, "faults", it, st1.faults - st0.faults);
	bench_count_record(r, "pages_mapped", it, (uint64_t)mapped);
	bench_count_record(r, "table_pages", it, st1.table_pages);
	bench_rig_vm_down(k);
	return 0;
}

static int dp_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	struct bench_rig k;
	double sum = 0;
	int ret = -1;

	if (bench_rig_init(&k, c, r, 0))
		goto out;
	bench_rig_header(&k, "%u iteration%s, each on a fresh VM", c->iterations,
			 c->iterations == 1 ? "" : "s");
	if (bench_rig_start(&k))
		goto out;
	ret = 0;
	for (unsigned it = 1; !ret && it <= c->iterations; it++)
		ret = dp_iteration(&k, it);
	if (!ret && c->out) {
		for (unsigned i = 0; i < c->iterations; i++)
			sum += r->ns[bench_phase_index(r->suite, "total")][i];
		fprintf(c->out, "\nOverall demand paging rate over %u iteration%s: %f pgs/sec\n",
			c->iterations, c->iterations == 1 ? "" : "s",
			(double)r->pages * c->iterations / (sum / 1e9));
	}
out:
	bench_rig_destroy(&k);
	return ret;
}

const struct bench_suite bench_suite_demand_paging = {
	.name = "demand_paging",
	.summary = "N x fault-in of all memory on a fresh VM, host RAM pre-touched (selftest: -i 1)",
	.phases = dp_phases,
	.nphases = sizeof(dp_phases) / sizeof(dp_phases[0]),
	.counters = dp_counters,
	.ncounters = sizeof(dp_counters) / sizeof(dp_counters[0]),
	.run_gpamm = dp_run_gpamm,
	.run_kvm = NULL,
	.check = dp_check,
};
