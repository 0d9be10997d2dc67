// SPDX-License-Identifier: MIT
/*
 * Suite dirty_log_perf: the phases of the Linux KVM selftest of that name
 * (REFERENCE.md §8), on gpamm.
 *
 *   populate          every vCPU writes its whole slice once (mapping faults)
 *   enable logging    FLAGS_ONLY change of every slot to LOG_DIRTY_PAGES
 *                     (write-protects the slots; with INITIALLY_SET, the
 *                     selftest's default under manual protect, it only sets
 *                     every bit and the first CLEAR write-protects)
 *   N iterations of
 *     dirty memory    every vCPU writes one word per page of its slice
 *                     (each write takes the dirty-logging write fault)
 *     get dirty log   GET of every slot's bitmap
 *     clear dirty log CLEAR of every slot with the bitmap GET returned
 *                     (manual protect, the default; classic GET clears itself)
 *   disable logging   FLAGS_ONLY change back to no logging
 *
 * The vCPUs are threads, one per vCPU, each writing its own slice with the
 * library's memstress workload (gpamm_workload_guest: sequential, 100%
 * writes, one 8-byte store per page). Between passes a vCPU is out of the
 * guest (its program returned) and its thread waits for the next pass, as
 * the selftest's vCPU threads wait between iterations. Guest RAM is the
 * process's own anonymous memory (direct host), pre-touched before the VM
 * exists, so no phase includes a host page fault.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/gpamm.h"
#include "lib/suite.h"
#include "lib/kvm_peer.h"

static const struct bench_phase_def dl_phases[] = {
	{ "populate", "Populate memory time", NULL, "populate memory", false,
	  BENCH_NORM_VCPU_PAGE },
	{ "enable", "Enabling dirty logging time", NULL, "enable dirty logging", false,
	  BENCH_NORM_PAGE },
	{ "dirty", "dirty memory time", "Dirty memory", "dirty memory (avg)", true,
	  BENCH_NORM_VCPU_PAGE },
	{ "get", "get dirty log time", "Get dirty log", "get dirty log (avg)", true,
	  BENCH_NORM_PAGE },
	{ "clear", "clear dirty log time", "Clear dirty log", "clear dirty log (avg)", true,
	  BENCH_NORM_PAGE },
	{ "disable", "Disabling dirty logging time", NULL, "disable dirty logging", false,
	  BENCH_NORM_PAGE },
};

static const struct bench_counter_def dl_counters[] = {
	{ "pages_dirty", "pages reported dirty by GET" },
	{ "write_faults", "write faults taken by the vCPUs" },
};

static const struct bench_target dl_targets[] = {
	{ "enable", "enable dirty logging", 0.5 },
	{ "clear", "clear dirty log (all-dirty slot)", 0.5 },
	{ "get", "get dirty log", 1.0 },
	{ "dirty", "dirty-write fault per page", 0.15 },
};

/*
 * Bounds on gpamm's own figures, at 4K: enabling logging and CLEAR touch
 * each page's entry once (about a nanosecond), GET copies a bitmap, and a
 * write after either takes the fast-path fault and logs the page.
 */
static const struct bench_ratio dl_ratios[] = {
	BENCH_BOUND("enable", "enable dirty logging (write-protect)", 1.0, 12),
	BENCH_BOUND("get", "GET, all dirty", 0.1, 12),
	BENCH_BOUND("clear", "CLEAR, all dirty, one call per slot", 1.0, 12),
	BENCH_BOUND("dirty", "dirty-write fault (after enable / CLEAR)", 150, 12),
};

static bool dl_targets_apply(const struct bench_cfg *c)
{
	return c->page_shift == 12 && bench_total_bytes(c) == (1ULL << 30) && c->manual_protect;
}

/* Every iteration's GET must report every page: all of them were written. */
static bool dl_check(const struct bench_run *r, char *why, size_t len)
{
	const struct bench_suite *s = r->suite;

	for (unsigned c = 0; c < s->ncounters; c++) {
		if (strcmp(s->counters[c].key, "pages_dirty") || !r->has_count[c])
			continue;
		for (unsigned k = 0; k < r->cfg.iterations; k++) {
			if (r->count[c][k] != r->pages) {
				snprintf(why, len, "iteration %u: GET reported %llu pages dirty, "
					 "but all %llu pages were written", k + 1,
					 (unsigned long long)r->count[c][k],
					 (unsigned long long)r->pages);
				return false;
			}
		}
	}
	return true;
}

/* ---- the gpamm backend --------------------------------------------------------- */

struct dl_gpamm {
	struct bench_rig k;
	uint64_t slot_pages;
	uint64_t **bitmap;          /* per slot */
};

static int dl_body(struct dl_gpamm *d)
{
	struct bench_rig *k = &d->k;
	const struct bench_cfg *c = k->cfg;
	struct bench_run *r = k->r;
	const uint64_t words = (d->slot_pages + 63) / 64;
	struct gpamm_vm_stats st0, st1;
	double t0, t;
	int ret;

	/* populate: pass 1 of every vCPU */
	t = bench_rig_step(k, "populate");
	if (t < 0)
		return -1;
	bench_phase_record(r, "populate", 0, t);

	t0 = bench_now_ns();
	if (bench_rig_slots(k, true, GPAMM_MEM_LOG_DIRTY_PAGES, "enabling dirty logging"))
		return -1;
	bench_phase_record(r, "enable", 0, bench_now_ns() - t0);

	for (unsigned it = 1; it <= c->iterations; it++) {
		uint64_t dirty = 0;

		if (c->out)
			fputc('\n', c->out);
		gpamm_vm_stats(k->vm, &st0);
		t = bench_rig_step(k, "iteration %u", it);
		if (t < 0)
			return -1;
		gpamm_vm_stats(k->vm, &st1);
		bench_phase_record(r, "dirty", it, t);

		t0 = bench_now_ns();
		for (unsigned s = 0; s < c->slots; s++) {
			ret = gpamm_vm_get_dirty_log(k->vm, s, d->bitmap[s]);
			if (ret)
				return bench_run_fail(r, BENCH_FAILED, "GET of slot %u: %s", s,
						      strerror(-ret));
		}
		bench_phase_record(r, "get", it, bench_now_ns() - t0);

		if (c->manual_protect) {
			t0 = bench_now_ns();
			for (unsigned s = 0; s < c->slots; s++) {
				ret = gpamm_vm_clear_dirty_log(k->vm, s, 0, d->slot_pages,
							       d->bitmap[s]);
				if (ret)
					return bench_run_fail(r, BENCH_FAILED, "CLEAR of slot %u: %s",
							      s, strerror(-ret));
			}
			bench_phase_record(r, "clear", it, bench_now_ns() - t0);
		}
		for (unsigned s = 0; s < c->slots; s++)
			for (uint64_t w = 0; w < words; w++)
				dirty += (uint64_t)__builtin_popcountll(d->bitmap[s][w]);
		bench_count_record(r, "pages_dirty", it, dirty);
		bench_count_record(r, "write_faults", it, st1.faults - st0.faults);
	}
	if (c->out)
		fputc('\n', c->out);

	t0 = bench_now_ns();
	if (bench_rig_slots(k, true, 0, "disabling dirty logging"))
		return -1;
	bench_phase_record(r, "disable", 0, bench_now_ns() - t0);
	return 0;
}

static int dl_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	const unsigned caps = !c->manual_protect ? 0 :
			      GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
			      (c->initially_set ? GPAMM_DIRTY_LOG_INITIALLY_SET : 0);
	struct dl_gpamm d;
	int ret = -1;

	memset(&d, 0, sizeof(d));
	if (bench_rig_init(&d.k, c, r, 0) || bench_rig_vm_up(&d.k, caps))
		goto out;
	d.slot_pages = d.k.slot_bytes >> c->page_shift;
	d.bitmap = bench_bitmaps_alloc(c->slots, d.slot_pages);
	if (!d.bitmap) {
		bench_run_fail(r, BENCH_FAILED, "out of memory");
		goto out;
	}
	bench_rig_header(&d.k, "%u iteration%s, %s", c->iterations,
			 c->iterations == 1 ? "" : "s", bench_protect_mode(c));
	if (!bench_rig_start(&d.k))
		ret = dl_body(&d);
out:
	bench_rig_destroy(&d.k);
	bench_bitmaps_free(d.bitmap, c->slots);
	return ret;
}

const struct bench_suite bench_suite_dirty_log_perf = {
	.name = "dirty_log_perf",
	.summary = "populate, enable logging, N x [dirty, GET, CLEAR], disable (selftest)",
	.phases = dl_phases,
	.nphases = sizeof(dl_phases) / sizeof(dl_phases[0]),
	.counters = dl_counters,
	.ncounters = sizeof(dl_counters) / sizeof(dl_counters[0]),
	.run_gpamm = dl_run_gpamm,
	.run_kvm = kvm_peer_dirty_log_perf,
	.targets = dl_targets,
	.ntargets = sizeof(dl_targets) / sizeof(dl_targets[0]),
	.targets_for = "1 GiB, 4K pages, manual protect",
	.targets_apply = dl_targets_apply,
	.ratios = dl_ratios,
	.nratios = sizeof(dl_ratios) / sizeof(dl_ratios[0]),
	.check = dl_check,
};
