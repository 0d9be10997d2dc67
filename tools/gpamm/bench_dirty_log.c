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
#include "bench.h"
#include "cli.h"
#include "kvm_peer.h"

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
	const struct bench_cfg *cfg;
	struct bench_run *r;
	struct gpamm_host *host;
	struct gpamm_vm *vm;
	struct gpamm_vcpu **vcpu;
	struct gpamm_workload *w;
	char (*verr)[160];          /* per vCPU: what went wrong */
	struct bench_mem mem;
	uint64_t slot_bytes, slot_pages;
	uint64_t **bitmap;          /* per slot */
};

/* One pass of vCPU @i: its program writes its slice once more, then returns. */
static int dl_vcpu_pass(void *ctx, unsigned i, uint64_t gen)
{
	struct dl_gpamm *d = ctx;
	struct gpamm_vcpu *v = d->vcpu[i];
	struct gpamm_workload *w = &d->w[i];
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	int ret;

	w->passes = gen; /* passes_done carries over: exactly one more pass */
	ret = gpamm_vcpu_set_guest(v, gpamm_workload_guest, w, 0);
	if (!ret)
		ret = gpamm_vcpu_run(v);
	if (ret) {
		snprintf(d->verr[i], sizeof(d->verr[i]), "vCPU %u: run: %s", i, strerror(-ret));
		return -1;
	}
	if (run->exit_reason != GPAMM_EXIT_DONE || run->guest_ret || w->passes_done != gen) {
		snprintf(d->verr[i], sizeof(d->verr[i]),
			 "vCPU %u: exit reason %u (guest returned %d, %llu passes done, %llu wanted)",
			 i, run->exit_reason, run->guest_ret, (unsigned long long)w->passes_done,
			 (unsigned long long)gen);
		return -1;
	}
	return 0;
}

static int dl_set_logging(struct dl_gpamm *d, bool on)
{
	for (unsigned s = 0; s < d->cfg->slots; s++) {
		struct gpamm_userspace_memory_region reg = {
			.slot = s,
			.flags = on ? GPAMM_MEM_LOG_DIRTY_PAGES : 0,
			.guest_phys_addr = d->r->gpa_base + s * d->slot_bytes,
			.memory_size = d->slot_bytes,
			.userspace_addr = (uintptr_t)(d->mem.p + s * d->slot_bytes),
		};
		int ret = gpamm_vm_set_memory_region(d->vm, &reg);

		if (ret)
			return bench_run_fail(d->r, BENCH_FAILED, "%s dirty logging on slot %u: %s",
					      on ? "enabling" : "disabling", s, strerror(-ret));
	}
	return 0;
}

static const char *gang_error(struct dl_gpamm *d)
{
	for (unsigned i = 0; i < d->cfg->vcpus; i++)
		if (d->verr[i][0])
			return d->verr[i];
	return "a vCPU failed";
}

static int dl_body(struct dl_gpamm *d, struct bench_gang *gang)
{
	const struct bench_cfg *c = d->cfg;
	struct bench_run *r = d->r;
	const uint64_t words = (d->slot_pages + 63) / 64;
	struct gpamm_vm_stats st0, st1;
	double t0, t;
	int ret;

	/* populate: pass 1 of every vCPU */
	t = bench_gang_step(gang);
	if (t < 0)
		return bench_run_fail(r, BENCH_FAILED, "populate: %s", gang_error(d));
	bench_phase_record(r, "populate", 0, t);

	t0 = bench_now_ns();
	if (dl_set_logging(d, true))
		return -1;
	bench_phase_record(r, "enable", 0, bench_now_ns() - t0);

	for (unsigned it = 1; it <= c->iterations; it++) {
		uint64_t dirty = 0;

		if (c->out)
			fputc('\n', c->out);
		gpamm_vm_stats(d->vm, &st0);
		t = bench_gang_step(gang);
		if (t < 0)
			return bench_run_fail(r, BENCH_FAILED, "iteration %u: %s", it, gang_error(d));
		gpamm_vm_stats(d->vm, &st1);
		bench_phase_record(r, "dirty", it, t);

		t0 = bench_now_ns();
		for (unsigned s = 0; s < c->slots; s++) {
			ret = gpamm_vm_get_dirty_log(d->vm, s, d->bitmap[s]);
			if (ret)
				return bench_run_fail(r, BENCH_FAILED, "GET of slot %u: %s", s,
						      strerror(-ret));
		}
		bench_phase_record(r, "get", it, bench_now_ns() - t0);

		if (c->manual_protect) {
			t0 = bench_now_ns();
			for (unsigned s = 0; s < c->slots; s++) {
				ret = gpamm_vm_clear_dirty_log(d->vm, s, 0, d->slot_pages,
							       d->bitmap[s]);
				if (ret)
					return bench_run_fail(r, BENCH_FAILED, "CLEAR of slot %u: %s",
							      s, strerror(-ret));
			}
			bench_phase_record(r, "clear", it, bench_now_ns() - t0);
		}
		for (unsigned s = 0; s < c->slots; s++)
			for (uint64_t k = 0; k < words; k++)
				dirty += (uint64_t)__builtin_popcountll(d->bitmap[s][k]);
		bench_count_record(r, "pages_dirty", it, dirty);
		bench_count_record(r, "write_faults", it, st1.faults - st0.faults);
	}
	if (c->out)
		fputc('\n', c->out);

	t0 = bench_now_ns();
	if (dl_set_logging(d, false))
		return -1;
	bench_phase_record(r, "disable", 0, bench_now_ns() - t0);
	return 0;
}

static int dl_run_gpamm(const struct bench_cfg *c, struct bench_run *r)
{
	const uint64_t psz = 1ULL << c->page_shift, total = bench_total_bytes(c);
	struct gpamm_vm_config vcfg = { .page_shift = c->page_shift, .levels = c->levels,
					.max_vcpus = c->vcpus };
	struct gpamm_geom g;
	struct bench_gang gang;
	struct dl_gpamm d;
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
	d.slot_bytes = total / c->slots;
	d.slot_pages = d.slot_bytes / psz;

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
	ret = gpamm_vm_enable_manual_dirty_log_protect(
		d.vm, !c->manual_protect ? 0
		      : GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
			(c->initially_set ? GPAMM_DIRTY_LOG_INITIALLY_SET : 0));
	if (ret) {
		ret = bench_run_fail(r, BENCH_FAILED, "manual dirty-log protect: %s",
				     strerror(-ret));
		goto out;
	}
	for (unsigned s = 0; s < c->slots; s++) {
		struct gpamm_userspace_memory_region reg = {
			.slot = s,
			.guest_phys_addr = r->gpa_base + s * d.slot_bytes,
			.memory_size = d.slot_bytes,
			.userspace_addr = (uintptr_t)(d.mem.p + s * d.slot_bytes),
		};

		ret = gpamm_vm_set_memory_region(d.vm, &reg);
		if (ret) {
			ret = bench_run_fail(r, BENCH_FAILED, "memslot %u: %s", s, strerror(-ret));
			goto out;
		}
	}
	d.bitmap = calloc(c->slots, sizeof(*d.bitmap));
	d.vcpu = calloc(c->vcpus, sizeof(*d.vcpu));
	d.w = calloc(c->vcpus, sizeof(*d.w));
	d.verr = calloc(c->vcpus, sizeof(*d.verr));
	if (!d.bitmap || !d.vcpu || !d.w || !d.verr) {
		ret = bench_run_fail(r, BENCH_FAILED, "out of memory");
		goto out;
	}
	for (unsigned s = 0; s < c->slots; s++) {
		d.bitmap[s] = calloc((d.slot_pages + 63) / 64, sizeof(uint64_t));
		if (!d.bitmap[s]) {
			ret = bench_run_fail(r, BENCH_FAILED, "out of memory");
			goto out;
		}
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
			.write_percent = 100,
			.order = GPAMM_ORDER_SEQUENTIAL,
			.stride = 0, /* one write per page */
		};
	}
	if (c->out) {
		char lay[32], tot[32], per[32];

		fprintf(c->out, "== gpamm: %s, %u vCPU%s x %s = %s (%llu pages), %u slot%s, "
			"%u iteration%s, %s\n",
			cli_layout_name(c->page_shift, c->levels, lay, sizeof(lay)), c->vcpus,
			c->vcpus == 1 ? "" : "s", bench_size_str(c->bytes_per_vcpu, per, sizeof(per)),
			bench_size_str(total, tot, sizeof(tot)), (unsigned long long)r->pages,
			c->slots, c->slots == 1 ? "" : "s", c->iterations,
			c->iterations == 1 ? "" : "s", bench_protect_mode(c));
		fprintf(c->out, "host: %s; pre-touched by the host in %.2fs before the VM "
			"started, so no phase includes a host page fault\n",
			r->host_desc, r->touch_s);
		fprintf(c->out, "guest physical test memory: [0x%llx, 0x%llx)\n",
			(unsigned long long)r->gpa_base, (unsigned long long)(r->gpa_base + total));
	}
	if (bench_gang_start(&gang, c->vcpus, dl_vcpu_pass, &d)) {
		ret = bench_run_fail(r, BENCH_FAILED, "cannot start the vCPU threads");
		goto out;
	}
	gang_on = true;
	ret = dl_body(&d, &gang);
out:
	if (gang_on)
		bench_gang_stop(&gang);
	if (d.vm)
		gpamm_vm_destroy(d.vm);
	gpamm_host_destroy(d.host);
	if (d.bitmap)
		for (unsigned s = 0; s < c->slots; s++)
			free(d.bitmap[s]);
	free(d.bitmap);
	free(d.vcpu);
	free(d.w);
	free(d.verr);
	bench_mem_free(&d.mem);
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
	.check = dl_check,
};
