// SPDX-License-Identifier: MIT
/*
 * Suite access_tracking_perf: the phases of the Linux KVM selftest of that
 * name (REFERENCE.md §8), on gpamm, with gpamm's aging API in place of
 * /sys/kernel/mm/page_idle.
 *
 *   populate                      every vCPU writes its whole slice (mapping faults)
 *   write to populated memory     one 8-byte store per page, nothing to fault
 *   read from populated memory    one 8-byte load per page
 *   N idle cycles (-i; the selftest runs one) of
 *     mark memory idle            gpamm_vm_mark_idle() of every slice: each page
 *                                 goes old (VALID cleared) and TLBs are flushed
 *     write to idle memory        each store takes the fast fault that makes
 *                                 its page young again
 *     mark memory idle
 *     read from idle memory       the same, with loads
 *
 * Marking is the VMM's work: the VMM thread calls gpamm_vm_mark_idle() once
 * per vCPU slice, in turn, while the vCPUs are out of the guest between
 * passes. (The selftest has each vCPU thread mark its own slice one pfn at
 * a time through page_idle, and those calls serialise on the MMU lock in
 * KVM's clear_young notifier anyway; gpamm's call takes a range and the
 * lock once, and doing it on the VMM thread keeps a thread hand-off out of
 * a phase that lasts well under a millisecond per 256 MiB.) So the mark
 * phases are wall time per page of all memory; the access passes are wall
 * time per page of one vCPU's slice, as dirty_log_perf's dirty memory.
 *
 * After every mark and every access to idle memory the VMM counts young
 * pages with gpamm_vm_test_young() (outside the timed phases). The
 * selftest's verdict is kept: a run fails when 10% or more of the pages
 * still look idle after being accessed; and a mark that leaves any page
 * young is a failure too. Guest RAM is pre-touched anonymous memory of this
 * process (direct host), so no phase includes a host page fault.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/gpamm.h"
#include "bench.h"
#include "cli.h"

static const struct bench_phase_def at_phases[] = {
	{ "populate", "Populating memory", NULL, "populate memory", false,
	  BENCH_NORM_VCPU_PAGE },
	{ "write_populated", "Writing to populated memory", NULL, "write populated", false,
	  BENCH_NORM_VCPU_PAGE },
	{ "read_populated", "Reading from populated memory", NULL, "read populated", false,
	  BENCH_NORM_VCPU_PAGE },
	{ "mark_idle_1", "Mark memory idle", "Mark memory idle (before writing)",
	  "mark idle 1 (avg)", true, BENCH_NORM_PAGE },
	{ "write_idle", "Writing to idle memory", "Writing to idle memory", "write idle (avg)",
	  true, BENCH_NORM_VCPU_PAGE },
	{ "mark_idle_2", "Mark memory idle", "Mark memory idle (before reading)",
	  "mark idle 2 (avg)", true, BENCH_NORM_PAGE },
	{ "read_idle", "Reading from idle memory", "Reading from idle memory", "read idle (avg)",
	  true, BENCH_NORM_VCPU_PAGE },
};

enum { AT_IDLE_AFTER_MARK, AT_YOUNG_AFTER_WRITE, AT_YOUNG_AFTER_READ, AT_STILL_IDLE };

static const struct bench_counter_def at_counters[] = {
	[AT_IDLE_AFTER_MARK] = { "idle_after_mark",
				 "pages idle right after marking (the fewer of the two marks)" },
	[AT_YOUNG_AFTER_WRITE] = { "young_after_write", "pages young after writing to idle memory" },
	[AT_YOUNG_AFTER_READ] = { "young_after_read", "pages young after reading from idle memory" },
	[AT_STILL_IDLE] = { "still_idle",
			    "pages still idle after being accessed (the more of the two passes)" },
};

/*
 * The selftest's verdict (fewer than 10% of the pages may still look idle
 * after being accessed), and marking must have made every page idle.
 */
static bool at_check(const struct bench_run *r, char *why, size_t len)
{
	if (!r->has_count[AT_IDLE_AFTER_MARK] || !r->has_count[AT_STILL_IDLE]) {
		snprintf(why, len, "no idle-page counts were recorded");
		return false;
	}
	for (unsigned k = 0; k < r->cfg.iterations; k++) {
		uint64_t idle = r->count[AT_IDLE_AFTER_MARK][k];
		uint64_t still = r->count[AT_STILL_IDLE][k];

		if (idle != r->pages) {
			snprintf(why, len, "idle cycle %u: marking memory idle left %llu of %llu "
				 "pages young", k + 1, (unsigned long long)(r->pages - idle),
				 (unsigned long long)r->pages);
			return false;
		}
		if (still && still * 10 >= r->pages) {
			snprintf(why, len, "idle cycle %u: %llu of %llu pages (%.1f%%) still idle "
				 "after being accessed (the selftest fails at 10%%)", k + 1,
				 (unsigned long long)still, (unsigned long long)r->pages,
				 100.0 * (double)still / (double)r->pages);
			return false;
		}
	}
	return true;
}

/* ---- the gpamm backend --------------------------------------------------------- */

struct at_gpamm {
	const struct bench_cfg *cfg;
	struct bench_run *r;
	struct gpamm_host *host;
	struct gpamm_vm *vm;
	struct gpamm_vcpu **vcpu;
	struct gpamm_workload *w;   /* per vCPU: its slice and its access pattern */
	char (*verr)[160];          /* per vCPU: what went wrong */
	struct bench_mem mem;
	unsigned write_percent;     /* the next pass: 100 (writes) or 0 (reads); set
				     * between steps, bench_gang_step() orders it */
};

/* One pass of vCPU @i: its program reads or writes its slice once more, then returns. */
static int at_vcpu_pass(void *ctx, unsigned i, uint64_t gen)
{
	struct at_gpamm *d = ctx;
	struct gpamm_workload *w = &d->w[i];
	struct gpamm_vcpu *v = d->vcpu[i];
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	int ret;

	w->write_percent = d->write_percent;
	w->passes = w->passes_done + 1; /* exactly one more pass */
	ret = gpamm_vcpu_set_guest(v, gpamm_workload_guest, w, 0);
	if (!ret)
		ret = gpamm_vcpu_run(v);
	if (ret) {
		snprintf(d->verr[i], sizeof(d->verr[i]), "vCPU %u: run: %s", i, strerror(-ret));
		return -1;
	}
	if (run->exit_reason != GPAMM_EXIT_DONE || run->guest_ret || w->passes_done != w->passes) {
		snprintf(d->verr[i], sizeof(d->verr[i]),
			 "vCPU %u: exit reason %u (guest returned %d, %llu passes done, %llu wanted)",
			 i, run->exit_reason, run->guest_ret, (unsigned long long)w->passes_done,
			 (unsigned long long)w->passes);
		return -1;
	}
	return 0;
}

static const char *gang_error(struct at_gpamm *d)
{
	for (unsigned i = 0; i < d->cfg->vcpus; i++)
		if (d->verr[i][0])
			return d->verr[i];
	return "a vCPU failed";
}

/* One pass of every vCPU (100: writes, 0: reads), recorded as phase @key. */
static int at_access(struct at_gpamm *d, struct bench_gang *gang, unsigned write_percent,
		     const char *key, unsigned iter)
{
	double t;

	d->write_percent = write_percent;
	t = bench_gang_step(gang);
	if (t < 0) {
		if (iter)
			return bench_run_fail(d->r, BENCH_FAILED, "%s, idle cycle %u: %s", key,
					      iter, gang_error(d));
		return bench_run_fail(d->r, BENCH_FAILED, "%s: %s", key, gang_error(d));
	}
	bench_phase_record(d->r, key, iter, t);
	return 0;
}

/* Every vCPU's slice made idle by the VMM thread, recorded as phase @key. */
static int at_mark_idle(struct at_gpamm *d, const char *key, unsigned iter)
{
	double t0 = bench_now_ns();

	for (unsigned i = 0; i < d->cfg->vcpus; i++) {
		int64_t n = gpamm_vm_mark_idle(d->vm, d->w[i].gpa, d->w[i].size);

		if (n < 0)
			return bench_run_fail(d->r, BENCH_FAILED, "%s, idle cycle %u: slice of "
					      "vCPU %u: %s", key, iter, i, strerror((int)-n));
	}
	bench_phase_record(d->r, key, iter, bench_now_ns() - t0);
	return 0;
}

/* Young pages of all test memory into *@young (from the VMM thread, untimed). */
static int at_young(struct at_gpamm *d, uint64_t *young)
{
	int64_t n = gpamm_vm_test_young(d->vm, d->r->gpa_base, bench_total_bytes(d->cfg), NULL);

	if (n < 0)
		return bench_run_fail(d->r, BENCH_FAILED, "test young: %s", strerror((int)-n));
	*young = (uint64_t)n;
	return 0;
}

static int at_body(struct at_gpamm *d, struct bench_gang *gang)
{
	const struct bench_cfg *c = d->cfg;
	struct bench_run *r = d->r;
	const uint64_t pages = r->pages;

	if (at_access(d, gang, 100, "populate", 0) ||
	    at_access(d, gang, 100, "write_populated", 0) ||
	    at_access(d, gang, 0, "read_populated", 0))
		return -1;

	for (unsigned it = 1; it <= c->iterations; it++) {
		uint64_t y_mark1, y_write, y_mark2, y_read;

		if (c->out)
			fputc('\n', c->out);
		if (at_mark_idle(d, "mark_idle_1", it) || at_young(d, &y_mark1) ||
		    at_access(d, gang, 100, "write_idle", it) || at_young(d, &y_write) ||
		    at_mark_idle(d, "mark_idle_2", it) || at_young(d, &y_mark2) ||
		    at_access(d, gang, 0, "read_idle", it) || at_young(d, &y_read))
			return -1;
		bench_count_record(r, "idle_after_mark", it,
				   pages - (y_mark1 > y_mark2 ? y_mark1 : y_mark2));
		bench_count_record(r, "young_after_write", it, y_write);
		bench_count_record(r, "young_after_read", it, y_read);
		bench_count_record(r, "still_idle", it, pages - (y_write < y_read ? y_write : y_read));
	}
	if (c->out)
		fputc('\n', c->out);
	return 0;
}

static int at_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	const uint64_t psz = 1ULL << c->page_shift, total = bench_total_bytes(c);
	const uint64_t slot_bytes = total / c->slots;
	struct gpamm_vm_config vcfg = { .page_shift = c->page_shift, .levels = c->levels,
					.max_vcpus = c->vcpus };
	struct gpamm_geom g;
	struct bench_gang gang;
	struct at_gpamm d;
	char err[256], sz[32];
	bool gang_on = false;
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

	if (c->out && total >= (4ULL << 30)) {
		fprintf(c->out, "(%s: pre-touching %s of host memory first; this can take a while)\n",
			r->backend, bench_size_str(total, sz, sizeof(sz)));
		fflush(c->out);
	}
	if (bench_mem_alloc(&d.mem, total, psz, c->thp, err, sizeof(err)))
		return bench_run_fail(r, BENCH_FAILED, "%s", err);
	r->touch_s = d.mem.touch_s;
	snprintf(r->host_desc, sizeof(r->host_desc),
		 "direct host (guest RAM is this process's memory), anonymous %s, MAP_NORESERVE",
		 c->thp ? "THP-backed" : "4K host pages (THP off)");

	d.host = gpamm_host_direct_create(c->page_shift);
	vcfg.host = d.host;
	if (!d.host || (ret = gpamm_vm_create(&vcfg, &d.vm))) {
		bench_run_fail(r, BENCH_FAILED, "cannot create the VM: %s",
			       d.host ? strerror(-ret) : "no host");
		ret = -1;
		goto out;
	}
	for (unsigned s = 0; s < c->slots; s++) {
		struct gpamm_userspace_memory_region reg = {
			.slot = s,
			.guest_phys_addr = r->gpa_base + s * slot_bytes,
			.memory_size = slot_bytes,
			.userspace_addr = (uintptr_t)(d.mem.p + s * slot_bytes),
		};

		ret = gpamm_vm_set_memory_region(d.vm, &reg);
		if (ret) {
			ret = bench_run_fail(r, BENCH_FAILED, "memslot %u: %s", s, strerror(-ret));
			goto out;
		}
	}
	d.vcpu = calloc(c->vcpus, sizeof(*d.vcpu));
	d.w = calloc(c->vcpus, sizeof(*d.w));
	d.verr = calloc(c->vcpus, sizeof(*d.verr));
	if (!d.vcpu || !d.w || !d.verr) {
		ret = bench_run_fail(r, BENCH_FAILED, "out of memory");
		goto out;
	}
	/* memstress: vCPU i owns [base + i * bytes_per_vcpu, + bytes_per_vcpu) */
	for (unsigned i = 0; i < c->vcpus; i++) {
		ret = gpamm_vcpu_create(d.vm, i, &d.vcpu[i]);
		if (ret) {
			ret = bench_run_fail(r, BENCH_FAILED, "vCPU %u: %s", i, strerror(-ret));
			goto out;
		}
		d.w[i] = (struct gpamm_workload){
			.gpa = r->gpa_base + i * c->bytes_per_vcpu,
			.size = c->bytes_per_vcpu,
			.order = GPAMM_ORDER_SEQUENTIAL,
			.stride = 0, /* one access per page */
		};
	}
	if (c->out) {
		char lay[32], tot[32], per[32];

		fprintf(c->out, "== gpamm: %s, %u vCPU%s x %s = %s (%llu pages), %u slot%s, "
			"%u idle cycle%s\n",
			cli_layout_name(c->page_shift, c->levels, lay, sizeof(lay)), c->vcpus,
			c->vcpus == 1 ? "" : "s", bench_size_str(c->bytes_per_vcpu, per, sizeof(per)),
			bench_size_str(total, tot, sizeof(tot)), (unsigned long long)r->pages,
			c->slots, c->slots == 1 ? "" : "s", c->iterations,
			c->iterations == 1 ? "" : "s");
		fprintf(c->out, "host: %s; pre-touched by the host in %.2fs before the VM "
			"started, so no phase includes a host page fault\n",
			r->host_desc, r->touch_s);
		fprintf(c->out, "guest physical test memory: [0x%llx, 0x%llx)\n",
			(unsigned long long)r->gpa_base, (unsigned long long)(r->gpa_base + total));
		fprintf(c->out, "marking idle: gpamm_vm_mark_idle() of each vCPU's slice by the "
			"VMM thread; young pages counted (untimed) with gpamm_vm_test_young()\n");
	}
	if (bench_gang_start(&gang, c->vcpus, at_vcpu_pass, &d)) {
		ret = bench_run_fail(r, BENCH_FAILED, "cannot start the vCPU threads");
		goto out;
	}
	gang_on = true;
	ret = at_body(&d, &gang);
out:
	if (gang_on)
		bench_gang_stop(&gang);
	if (d.vm)
		gpamm_vm_destroy(d.vm);
	gpamm_host_destroy(d.host);
	free(d.vcpu);
	free(d.w);
	free(d.verr);
	bench_mem_free(&d.mem);
	return ret;
}

const struct bench_suite bench_suite_access_tracking_perf = {
	.name = "access_tracking_perf",
	.summary = "populate, write, read, N x [mark idle, write, mark idle, read] (selftest: -i 1)",
	.phases = at_phases,
	.nphases = sizeof(at_phases) / sizeof(at_phases[0]),
	.counters = at_counters,
	.ncounters = sizeof(at_counters) / sizeof(at_counters[0]),
	.run_gpamm = at_run_gpamm,
	.run_kvm = NULL,
	.check = at_check,
};
