// SPDX-License-Identifier: MIT
/*
 * The memstress VM that the vCPU-workload suites of "gpamm bench" run on
 * (suite.h, struct bench_rig): test memory at the top of the GPA space,
 * pre-touched by the host, split into equal memslots; one vCPU per slice,
 * each with the library's sequential workload, stepped one pass at a time
 * by a gang of threads. A suite keeps only what it measures.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gpamm/gpamm.h"
#include "suite.h"

int bench_rig_init(struct bench_rig *k, const struct bench_cfg *c, struct bench_run *r,
		   unsigned nvcpus)
{
	const uint64_t psz = 1ULL << c->page_shift;
	struct gpamm_geom g;
	char err[256], sz[32];

	memset(k, 0, sizeof(*k));
	k->cfg = c;
	k->r = r;
	k->total = bench_total_bytes(c);
	k->slot_bytes = k->total / c->slots;
	k->nvcpus = nvcpus ? nvcpus : c->vcpus;
	k->write_percent = 100;
	if (gpamm_geom_init(&g, c->page_shift, c->levels))
		return bench_run_fail(r, BENCH_FAILED, "no layout with %u-byte pages and %u levels",
				      1u << c->page_shift, c->levels);
	if (k->total > gpamm_geom_space(&g))
		return bench_run_fail(r, BENCH_FAILED, "%s does not fit in the %u-bit GPA space",
				      bench_size_str(k->total, sz, sizeof(sz)), g.gpa_bits);
	/* As memstress: the test memory sits at the top of the guest-physical space. */
	r->gpa_base = (gpamm_geom_space(&g) - k->total) & ~(gpamm_geom_huge_size(&g) - 1);

	k->vcpu = calloc(k->nvcpus, sizeof(*k->vcpu));
	k->w = calloc(k->nvcpus, sizeof(*k->w));
	k->vcpu_ns = calloc(k->nvcpus, sizeof(*k->vcpu_ns));
	k->vcpu_cpu_ns = calloc(k->nvcpus, sizeof(*k->vcpu_cpu_ns));
	k->verr = calloc(k->nvcpus, sizeof(*k->verr));
	if (!k->vcpu || !k->w || !k->vcpu_ns || !k->vcpu_cpu_ns || !k->verr)
		return bench_run_fail(r, BENCH_FAILED, "out of memory");

	if (c->out && k->total >= (4ULL << 30)) {
		fprintf(c->out, "(%s: pre-touching %s of host memory first; this can take a while)\n",
			r->backend, bench_size_str(k->total, sz, sizeof(sz)));
		fflush(c->out);
	}
	if (bench_mem_alloc(&k->mem, k->total, psz, c->thp, err, sizeof(err)))
		return bench_run_fail(r, BENCH_FAILED, "%s", err);
	r->touch_s = k->mem.touch_s;
	snprintf(r->host_desc, sizeof(r->host_desc),
		 "direct host (guest RAM is this process's memory), anonymous %s, MAP_NORESERVE",
		 c->thp ? "THP-backed" : "4K host pages (THP off)");
	return 0;
}

int bench_rig_slots(struct bench_rig *k, bool on, uint32_t flags, const char *what)
{
	for (unsigned s = 0; s < k->cfg->slots; s++) {
		struct gpamm_userspace_memory_region reg = {
			.slot = s,
			.flags = flags,
			.guest_phys_addr = k->r->gpa_base + s * k->slot_bytes,
			.memory_size = on ? k->slot_bytes : 0,
			.userspace_addr = (uintptr_t)(k->mem.p + s * k->slot_bytes),
		};
		int ret = gpamm_vm_set_memory_region(k->vm, &reg);

		if (ret)
			return bench_run_fail(k->r, BENCH_FAILED, "%s of memslot %u: %s", what, s,
					      strerror(-ret));
	}
	return 0;
}

int bench_rig_vm_up(struct bench_rig *k, unsigned dirty_caps)
{
	const struct bench_cfg *c = k->cfg;
	struct gpamm_vm_config vcfg = { .page_shift = c->page_shift, .levels = c->levels,
					.max_vcpus = k->nvcpus,
					.flags = k->vm_flags |
						 (c->serial_faults ? GPAMM_VM_SERIAL_FAULTS : 0) };
	int ret = 0;

	k->host = gpamm_host_direct_create(c->page_shift);
	vcfg.host = k->host;
	if (!k->host || (ret = gpamm_vm_create(&vcfg, &k->vm)))
		return bench_run_fail(k->r, BENCH_FAILED, "cannot create the VM: %s",
				      k->host ? strerror(-ret) : "no host");
	if (dirty_caps && (ret = gpamm_vm_enable_manual_dirty_log_protect(k->vm, dirty_caps)))
		return bench_run_fail(k->r, BENCH_FAILED, "manual dirty-log protect: %s",
				      strerror(-ret));
	if (bench_rig_slots(k, true, 0, "creation"))
		return -1;
	/* memstress: vCPU i owns [base + i * slice, + slice), one access per page */
	for (unsigned i = 0; i < k->nvcpus; i++) {
		ret = gpamm_vcpu_create(k->vm, i, &k->vcpu[i]);
		if (ret)
			return bench_run_fail(k->r, BENCH_FAILED, "vCPU %u: %s", i, strerror(-ret));
		k->w[i] = (struct gpamm_workload){
			.gpa = k->r->gpa_base + i * (k->total / k->nvcpus),
			.size = k->total / k->nvcpus,
			.write_percent = 100,
			.order = GPAMM_ORDER_SEQUENTIAL,
		};
	}
	return 0;
}

void bench_rig_vm_down(struct bench_rig *k)
{
	if (k->vm)
		gpamm_vm_destroy(k->vm); /* its vCPUs too */
	gpamm_host_destroy(k->host);
	k->vm = NULL;
	k->host = NULL;
	if (k->vcpu)
		memset(k->vcpu, 0, k->nvcpus * sizeof(*k->vcpu));
}

/* One pass of vCPU @i: its program reads or writes its slice once more, then returns. */
static int rig_vcpu_pass(void *ctx, unsigned i, uint64_t gen)
{
	struct bench_rig *k = ctx;
	struct gpamm_vcpu *v = k->vcpu[i];
	struct gpamm_workload *w = &k->w[i];
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	double t0, c0;
	int ret;

	if (k->active && i >= k->active) { /* sits this step out */
		k->vcpu_ns[i] = k->vcpu_cpu_ns[i] = 0;
		return 0;
	}
	t0 = bench_now_ns();
	c0 = bench_thread_cpu_ns();
	w->write_percent = k->write_percent; /* ordered by bench_gang_step() */
	w->passes = w->passes_done + 1;
	ret = gpamm_vcpu_set_guest(v, gpamm_workload_guest, w, 0);
	if (!ret)
		ret = gpamm_vcpu_run(v);
	k->vcpu_ns[i] = bench_now_ns() - t0;
	k->vcpu_cpu_ns[i] = bench_thread_cpu_ns() - c0;
	if (ret) {
		snprintf(k->verr[i], sizeof(k->verr[i]), "vCPU %u: run: %s", i, strerror(-ret));
		return -1;
	}
	if (run->exit_reason != GPAMM_EXIT_DONE || run->guest_ret || w->passes_done != w->passes) {
		snprintf(k->verr[i], sizeof(k->verr[i]),
			 "vCPU %u: exit reason %u (guest returned %d, %llu passes done, %llu wanted)",
			 i, run->exit_reason, run->guest_ret, (unsigned long long)w->passes_done,
			 (unsigned long long)w->passes);
		return -1;
	}
	return 0;
}

int bench_rig_start(struct bench_rig *k)
{
	if (bench_gang_start(&k->gang, k->nvcpus, rig_vcpu_pass, k))
		return bench_run_fail(k->r, BENCH_FAILED, "cannot start the vCPU threads");
	k->gang_on = true;
	return 0;
}

double bench_rig_step(struct bench_rig *k, const char *what_fmt, ...)
{
	double t = bench_gang_step(&k->gang);
	const char *why = "a vCPU failed";
	char what[160];
	va_list ap;

	if (t >= 0)
		return t;
	for (unsigned i = 0; i < k->nvcpus; i++) {
		if (k->verr[i][0]) {
			why = k->verr[i];
			break;
		}
	}
	va_start(ap, what_fmt);
	vsnprintf(what, sizeof(what), what_fmt, ap);
	va_end(ap);
	return bench_run_fail(k->r, BENCH_FAILED, "%s: %s", what, why);
}

void bench_rig_header(const struct bench_rig *k, const char *tail_fmt, ...)
{
	const struct bench_cfg *c = k->cfg;
	const struct bench_run *r = k->r;
	char lay[32], tot[32], per[32], tail[200];
	va_list ap;

	if (!c->out)
		return;
	va_start(ap, tail_fmt);
	vsnprintf(tail, sizeof(tail), tail_fmt, ap);
	va_end(ap);
	fprintf(c->out, "== gpamm: %s, %u vCPU%s x %s = %s (%llu pages), %u slot%s, %s\n",
		bench_layout_name(c->page_shift, c->levels, lay, sizeof(lay)), k->nvcpus,
		k->nvcpus == 1 ? "" : "s",
		bench_size_str(k->total / k->nvcpus, per, sizeof(per)),
		bench_size_str(k->total, tot, sizeof(tot)), (unsigned long long)r->pages,
		c->slots, c->slots == 1 ? "" : "s", tail);
	fprintf(c->out, "host: %s; pre-touched by the host in %.2fs before the VM started, "
		"so no phase includes a host page fault\n", r->host_desc, r->touch_s);
	fprintf(c->out, "guest physical test memory: [0x%llx, 0x%llx)\n",
		(unsigned long long)r->gpa_base, (unsigned long long)(r->gpa_base + k->total));
}

void bench_rig_destroy(struct bench_rig *k)
{
	if (k->gang_on)
		bench_gang_stop(&k->gang);
	k->gang_on = false;
	bench_rig_vm_down(k);
	free(k->vcpu);
	free(k->w);
	free(k->vcpu_ns);
	free(k->vcpu_cpu_ns);
	free(k->verr);
	bench_mem_free(&k->mem);
	memset(k, 0, sizeof(*k));
}
