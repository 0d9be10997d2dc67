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
#include "bench.h"
#include "cli.h"

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

struct dp_gpamm {
	const struct bench_cfg *cfg;
	struct bench_run *r;
	struct gpamm_host *host;    /* host, VM and vCPUs: new for every iteration */
	struct gpamm_vm *vm;
	struct gpamm_vcpu **vcpu;
	struct gpamm_workload *w;   /* per vCPU: its slice */
	double *vcpu_ns;            /* per vCPU: its execution time in this iteration */
	char (*verr)[160];          /* per vCPU: what went wrong */
	struct bench_mem mem;
};

/* vCPU @i writes its slice once on the current VM and times itself (the selftest's vcpu_worker). */
static int dp_vcpu_pass(void *ctx, unsigned i, uint64_t gen)
{
	struct dp_gpamm *d = ctx;
	struct gpamm_vcpu *v = d->vcpu[i];
	struct gpamm_workload *w = &d->w[i];
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	double t0 = bench_now_ns();
	int ret;

	ret = gpamm_vcpu_set_guest(v, gpamm_workload_guest, w, 0);
	if (!ret)
		ret = gpamm_vcpu_run(v);
	d->vcpu_ns[i] = bench_now_ns() - t0;
	if (ret) {
		snprintf(d->verr[i], sizeof(d->verr[i]), "vCPU %u: run: %s", i, strerror(-ret));
		return -1;
	}
	if (run->exit_reason != GPAMM_EXIT_DONE || run->guest_ret || w->passes_done != 1) {
		snprintf(d->verr[i], sizeof(d->verr[i]),
			 "vCPU %u: exit reason %u (guest returned %d, %llu passes done)",
			 i, run->exit_reason, run->guest_ret, (unsigned long long)w->passes_done);
		return -1;
	}
	return 0;
}

static const char *gang_error(struct dp_gpamm *d)
{
	for (unsigned i = 0; i < d->cfg->vcpus; i++)
		if (d->verr[i][0])
			return d->verr[i];
	return "a vCPU failed";
}

static void dp_vm_down(struct dp_gpamm *d)
{
	if (d->vm)
		gpamm_vm_destroy(d->vm); /* frees the vCPUs too */
	gpamm_host_destroy(d->host);
	d->vm = NULL;
	d->host = NULL;
	memset(d->vcpu, 0, d->cfg->vcpus * sizeof(*d->vcpu));
}

/* A VM with an empty GPA table, its memslots over the test memory and its vCPUs. */
static int dp_vm_up(struct dp_gpamm *d)
{
	const struct bench_cfg *c = d->cfg;
	struct bench_run *r = d->r;
	const uint64_t slot_bytes = bench_total_bytes(c) / c->slots;
	struct gpamm_vm_config vcfg = { .page_shift = c->page_shift, .levels = c->levels,
					.max_vcpus = c->vcpus };
	int ret = 0;

	d->host = gpamm_host_direct_create(c->page_shift);
	vcfg.host = d->host;
	if (!d->host || (ret = gpamm_vm_create(&vcfg, &d->vm)))
		return bench_run_fail(r, BENCH_FAILED, "cannot create the VM: %s",
				      d->host ? strerror(-ret) : "no host");
	for (unsigned s = 0; s < c->slots; s++) {
		struct gpamm_userspace_memory_region reg = {
			.slot = s,
			.guest_phys_addr = r->gpa_base + s * slot_bytes,
			.memory_size = slot_bytes,
			.userspace_addr = (uintptr_t)(d->mem.p + s * slot_bytes),
		};

		ret = gpamm_vm_set_memory_region(d->vm, &reg);
		if (ret)
			return bench_run_fail(r, BENCH_FAILED, "memslot %u: %s", s, strerror(-ret));
	}
	/* memstress: vCPU i owns [base + i * bytes_per_vcpu, + bytes_per_vcpu), 100% writes */
	for (unsigned i = 0; i < c->vcpus; i++) {
		ret = gpamm_vcpu_create(d->vm, i, &d->vcpu[i]);
		if (ret)
			return bench_run_fail(r, BENCH_FAILED, "vCPU %u: %s", i, strerror(-ret));
		d->w[i] = (struct gpamm_workload){
			.gpa = r->gpa_base + i * c->bytes_per_vcpu,
			.size = c->bytes_per_vcpu,
			.write_percent = 100,
			.order = GPAMM_ORDER_SEQUENTIAL,
			.passes = 1,
			.stride = 0, /* one write per page */
		};
	}
	return 0;
}

static int dp_iteration(struct dp_gpamm *d, struct bench_gang *gang, unsigned it)
{
	const struct bench_cfg *c = d->cfg;
	struct bench_run *r = d->r;
	struct gpamm_vm_stats st0, st1;
	double t, sum = 0;
	int64_t mapped;

	if (dp_vm_up(d))
		return -1;
	gpamm_vm_stats(d->vm, &st0);
	t = bench_gang_step(gang);
	if (t < 0)
		return bench_run_fail(r, BENCH_FAILED, "iteration %u: %s", it, gang_error(d));
	gpamm_vm_stats(d->vm, &st1);
	mapped = gpamm_vm_test_young(d->vm, r->gpa_base, bench_total_bytes(c), NULL);
	if (mapped < 0)
		return bench_run_fail(r, BENCH_FAILED, "test young: %s", strerror((int)-mapped));

	if (c->out)
		fputc('\n', c->out);
	for (unsigned i = 0; i < c->vcpus; i++) {
		sum += d->vcpu_ns[i];
		if (c->out)
			fprintf(c->out, "vCPU %u execution time: %.9fs (%.1f pgs/sec)\n", i,
				d->vcpu_ns[i] / 1e9, (double)r->pages_per_vcpu / (d->vcpu_ns[i] / 1e9));
	}
	bench_phase_record(r, "vcpu", it, sum / c->vcpus);
	bench_phase_record(r, "total", it, t);
	if (c->out)
		fprintf(c->out, "Iteration %u Overall demand paging rate: %f pgs/sec\n", it,
			(double)r->pages / (t / 1e9));
	bench_count_record(r, "faults", it, st1.faults - st0.faults);
	bench_count_record(r, "pages_mapped", it, (uint64_t)mapped);
	bench_count_record(r, "table_pages", it, st1.table_pages);
	dp_vm_down(d);
	return 0;
}

static int dp_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	const uint64_t psz = 1ULL << c->page_shift, total = bench_total_bytes(c);
	struct gpamm_geom g;
	struct bench_gang gang;
	struct dp_gpamm d;
	char err[256], sz[32];
	double sum = 0;
	int ret = -1;

	memset(&d, 0, sizeof(d));
	d.cfg = c;
	d.r = r;
	if (gpamm_geom_init(&g, c->page_shift, c->levels))
		return bench_run_fail(r, BENCH_FAILED, "no layout with %u-byte pages and %u levels",
				      1u << c->page_shift, c->levels);
	if (total > gpamm_geom_space(&g))
		return bench_run_fail(r, BENCH_FAILED, "%s does not fit in the %u-bit GPA space",
				      bench_size_str(total, sz, sizeof(sz)), g.gpa_bits);
	/* As memstress: the test memory sits at the top of the guest-physical space. */
	r->gpa_base = (gpamm_geom_space(&g) - total) & ~(gpamm_geom_huge_size(&g) - 1);

	d.vcpu = calloc(c->vcpus, sizeof(*d.vcpu));
	d.w = calloc(c->vcpus, sizeof(*d.w));
	d.vcpu_ns = calloc(c->vcpus, sizeof(*d.vcpu_ns));
	d.verr = calloc(c->vcpus, sizeof(*d.verr));
	if (!d.vcpu || !d.w || !d.vcpu_ns || !d.verr) {
		ret = bench_run_fail(r, BENCH_FAILED, "out of memory");
		goto out;
	}
	if (c->out && total >= (4ULL << 30)) {
		fprintf(c->out, "(%s: pre-touching %s of host memory first; this can take a while)\n",
			r->backend, bench_size_str(total, sz, sizeof(sz)));
		fflush(c->out);
	}
	if (bench_mem_alloc(&d.mem, total, psz, c->thp, err, sizeof(err))) {
		ret = bench_run_fail(r, BENCH_FAILED, "%s", err);
		goto out;
	}
	r->touch_s = d.mem.touch_s;
	snprintf(r->host_desc, sizeof(r->host_desc),
		 "direct host (guest RAM is this process's memory), anonymous %s, MAP_NORESERVE",
		 c->thp ? "THP-backed" : "4K host pages (THP off)");
	if (c->out) {
		char lay[32], tot[32], per[32];

		fprintf(c->out, "== gpamm: %s, %u vCPU%s x %s = %s (%llu pages), %u slot%s, "
			"%u iteration%s, each on a fresh VM\n",
			cli_layout_name(c->page_shift, c->levels, lay, sizeof(lay)), c->vcpus,
			c->vcpus == 1 ? "" : "s", bench_size_str(c->bytes_per_vcpu, per, sizeof(per)),
			bench_size_str(total, tot, sizeof(tot)), (unsigned long long)r->pages,
			c->slots, c->slots == 1 ? "" : "s", c->iterations,
			c->iterations == 1 ? "" : "s");
		fprintf(c->out, "host: %s; pre-touched by the host in %.2fs before the VM "
			"started, so the faults measured are gpamm's alone (no host page fault)\n",
			r->host_desc, r->touch_s);
		fprintf(c->out, "guest physical test memory: [0x%llx, 0x%llx)\n",
			(unsigned long long)r->gpa_base, (unsigned long long)(r->gpa_base + total));
	}
	if (bench_gang_start(&gang, c->vcpus, dp_vcpu_pass, &d)) {
		ret = bench_run_fail(r, BENCH_FAILED, "cannot start the vCPU threads");
		goto out;
	}
	ret = 0;
	for (unsigned it = 1; !ret && it <= c->iterations; it++)
		ret = dp_iteration(&d, &gang, it);
	bench_gang_stop(&gang);
	if (!ret && c->out) {
		for (unsigned k = 0; k < c->iterations; k++)
			sum += r->ns[bench_phase_index(r->suite, "total")][k];
		fprintf(c->out, "\nOverall demand paging rate over %u iteration%s: %f pgs/sec\n",
			c->iterations, c->iterations == 1 ? "" : "s",
			(double)r->pages * c->iterations / (sum / 1e9));
	}
out:
	if (d.vcpu)
		dp_vm_down(&d);
	free(d.vcpu);
	free(d.w);
	free(d.vcpu_ns);
	free(d.verr);
	bench_mem_free(&d.mem);
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
