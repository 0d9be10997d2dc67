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
#include "lib/suite.h"

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

/* One pass of every vCPU (100: writes, 0: reads), recorded as phase @key. */
static int at_access(struct bench_rig *k, unsigned write_percent, const char *key, unsigned iter)
{
	double t;

	k->write_percent = write_percent;
	t = iter ? bench_rig_step(k, "%s, idle cycle %u", key, iter) : bench_rig_step(k, "%s", key);
	if (t < 0)
		return -1;
	bench_phase_record(k->r, key, iter, t);
	return 0;
}

/* Every vCPU's slice made idle by the VMM thread, recorded as phase @key. */
static int at_mark_idle(struct bench_rig *k, const char *key, unsigned iter)
{
	double t0 = bench_now_ns();

	for (unsigned i = 0; i < k->nvcpus; i++) {
		int64_t n = gpamm_vm_mark_idle(k->vm, k->w[i].gpa, k->w[i].size);

		if (n < 0)
			return bench_run_fail(k->r, BENCH_FAILED, "%s, idle cycle %u: slice of "
					      "vCPU %u: %s", key, iter, i, strerror((int)-n));
	}
	bench_phase_record(k->r, key, iter, bench_now_ns() - t0);
	return 0;
}

/* Young pages of all test memory into *@young (from the VMM thread, untimed). */
static int at_young(struct bench_rig *k, uint64_t *young)
{
	int64_t n = gpamm_vm_test_young(k->vm, k->r->gpa_base, k->total, NULL);

	if (n < 0)
		return bench_run_fail(k->r, BENCH_FAILED, "test young: %s", strerror((int)-n));
	*young = (uint64_t)n;
	return 0;
}

static int at_body(struct bench_rig *d)
{
	const struct bench_cfg *c = d->cfg;
	struct bench_run *r = d->r;
	const uint64_t pages = r->pages;

	if (at_access(d, 100, "populate", 0) ||
	    at_access(d, 100, "write_populated", 0) ||
	    at_access(d, 0, "read_populated", 0))
		return -1;

	for (unsigned it = 1; it <= c->iterations; it++) {
		uint64_t y_mark1, y_write, y_mark2, y_read;

		if (c->out)
			fputc('\n', c->out);
		if (at_mark_idle(d, "mark_idle_1", it) || at_young(d, &y_mark1) ||
		    at_access(d, 100, "write_idle", it) || at_young(d, &y_write) ||
		    at_mark_idle(d, "mark_idle_2", it) || at_young(d, &y_mark2) ||
		    at_access(d, 0, "read_idle", it) || at_young(d, &y_read))
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
	struct bench_rig k;
	int ret = -1;

	if (bench_rig_init(&k, c, r, 0) || bench_rig_vm_up(&k, 0))
		goto out;
	bench_rig_header(&k, "%u idle cycle%s", c->iterations, c->iterations == 1 ? "" : "s");
	if (c->out)
		fprintf(c->out, "marking idle: gpamm_vm_mark_idle() of each vCPU's slice by the "
			"VMM thread; young pages counted (untimed) with gpamm_vm_test_young()\n");
	if (!bench_rig_start(&k))
		ret = at_body(&k);
out:
	bench_rig_destroy(&k);
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
