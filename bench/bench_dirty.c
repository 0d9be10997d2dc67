// SPDX-License-Identifier: MIT
/*
 * Dirty-logging and access-tracking benchmark, after the Linux
 * dirty_log_perf_test and access_tracking_perf_test (REFERENCE.md §8):
 * 1 GiB of guest RAM (--quick: 128 MiB) at 4K and at 16K pages, on the
 * direct host with the memory pre-touched, one vCPU that first writes
 * every page (the populate). Then, per repetition, per page:
 *   enable logging     FLAGS_ONLY with LOG_DIRTY_PAGES: write-protect the slot
 *   GET                manual protect, every page dirty: a copy of the bitmap
 *   CLEAR              one call over the whole all-dirty slot, all-ones bitmap
 *   dirty-write fault  after CLEAR, one write per page through the vCPU: each
 *                      faults on the fast path and is logged
 *   age                gpamm_vm_mark_idle over the whole range
 *   test-young         gpamm_vm_test_young over the whole range, with a bitmap
 * Figures are medians of at least 5 repetitions. Targets (4K): enable <= 1.0,
 * CLEAR <= 1.0, GET <= 0.1, dirty-write fault <= 150 ns/page; a MISS is
 * reported, not fatal (exit 0). A figure whose sanity check fails (GET not
 * all ones, a count off) makes the run fail (exit 1): its number means
 * nothing. Published figures for comparison (REFERENCE.md §8): clear 45-75
 * ns (x86, 4K), enable 7-20 ns, get < 0.2 ns, dirty write 0.7-1.2 us with
 * hardware exits; LoongArch 16K: clear 6.4 ns, enable 6.9 ns.
 * Options: --quick (128 MiB), --json. Pinned to the CPU it starts on.
 */
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench_common.h"
#include "gpamm/gpamm.h"

#define GPA_BASE (1ULL << 32)

static bool quick, json;
static int reps = 5;
static int failures;

static void bad(const char *what, unsigned ps, long long got, long long want)
{
	fprintf(stderr, "bench_dirty: %uK: %s: got %lld, expected %lld\n", 1u << (ps - 10), what,
		got, want);
	failures++;
}

/* ---- figures ------------------------------------------------------------------- */

struct fig {
	const char *name;
	double value;
	const char *unit;
	double target; /* NAN when none */
};

static struct fig figs[64];
static int nfigs;

static void fig(const char *name, double value, const char *unit, double target)
{
	figs[nfigs++] = (struct fig){ strdup(name), value, unit, target };
}

static const char *verdict(const struct fig *f)
{
	if (isnan(f->target))
		return "";
	return f->value <= f->target ? "PASS" : "MISS";
}

/* ---- the rig ------------------------------------------------------------------- */

struct rig {
	struct gpamm_host *host;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *vcpu;
	uint8_t *mem;
	size_t len;
	unsigned ps;
	uint64_t pages;
};

static void *map_touched(size_t len, unsigned shift)
{
	size_t align = (size_t)1 << shift;
	uint8_t *raw = mmap(NULL, len + align, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint8_t *p;

	if (raw == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	p = (uint8_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	/* host pages of the guest's size: what a 4K / 16K host kernel would have */
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, 1, len);
	return p;
}

static void set_logging(struct rig *r, bool on)
{
	struct gpamm_userspace_memory_region reg = { .slot = 0,
		.flags = on ? GPAMM_MEM_LOG_DIRTY_PAGES : 0, .guest_phys_addr = GPA_BASE,
		.memory_size = r->len, .userspace_addr = (uintptr_t)r->mem };
	int rc = gpamm_vm_set_memory_region(r->vm, &reg);

	if (rc) {
		fprintf(stderr, "set_memory_region (logging %s): %d\n", on ? "on" : "off", rc);
		exit(1);
	}
}

static void rig_init(struct rig *r, unsigned ps, size_t len)
{
	struct gpamm_vm_config cfg = { .page_shift = ps, .levels = 3 };

	memset(r, 0, sizeof(*r));
	r->ps = ps;
	r->len = len;
	r->pages = len >> ps;
	r->host = gpamm_host_direct_create(ps);
	cfg.host = r->host;
	if (!r->host || gpamm_vm_create(&cfg, &r->vm) ||
	    gpamm_vm_enable_manual_dirty_log_protect(r->vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) ||
	    gpamm_vcpu_create(r->vm, 0, &r->vcpu)) {
		fprintf(stderr, "VM setup failed\n");
		exit(1);
	}
	r->mem = map_touched(len, ps);
	set_logging(r, false);
}

static void rig_destroy(struct rig *r)
{
	gpamm_vm_destroy(r->vm);
	gpamm_host_destroy(r->host);
	munmap(r->mem, r->len);
}

/* One pass over every page, sequential; returns ns. */
static double pass(struct rig *r, unsigned write_percent)
{
	struct gpamm_workload w = { .gpa = GPA_BASE, .size = r->len,
				    .write_percent = write_percent, .passes = 1 };
	double t0 = now_ns();

	gpamm_vcpu_set_guest(r->vcpu, gpamm_workload_guest, &w, 0);
	gpamm_vcpu_run(r->vcpu);
	double t = now_ns() - t0;
	if (gpamm_vcpu_run_state(r->vcpu)->exit_reason != GPAMM_EXIT_DONE || w.accesses != r->pages) {
		fprintf(stderr, "workload exited with %u after %llu accesses\n",
			gpamm_vcpu_run_state(r->vcpu)->exit_reason, (unsigned long long)w.accesses);
		exit(1);
	}
	return t;
}

static uint64_t fast_faults(struct rig *r)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(r->vm, &st);
	return st.fast_faults;
}

/* ---- the measurement --------------------------------------------------------------- */

#define MAX_REPS 16

static void bench_one(unsigned ps)
{
	const size_t len = quick ? (128u << 20) : (1u << 30);
	double pop, en[MAX_REPS], get[MAX_REPS], clr[MAX_REPS], dwf[MAX_REPS], age[MAX_REPS],
		ty[MAX_REPS], first[MAX_REPS];
	char name[96];
	struct rig r;

	rig_init(&r, ps, len);
	const uint64_t pages = r.pages, words = (pages + 63) / 64;
	uint64_t *bm = malloc(words * sizeof(uint64_t)), *ones = malloc(words * sizeof(uint64_t));
	if (!bm || !ones) {
		perror("malloc");
		exit(1);
	}
	for (uint64_t i = 0; i < words; i++)
		ones[i] = ~0ULL;
	if (pages % 64)
		ones[words - 1] = (1ULL << (pages % 64)) - 1;

	/* populate: every page written, so every entry is present, young and dirty */
	pop = pass(&r, 100) / pages;

	for (int k = 0; k < reps; k++) {
		double t0;
		int64_t n;
		uint64_t ff;

		/* logging is off and every page is dirty: turning it on protects them all */
		t0 = now_ns();
		set_logging(&r, true);
		en[k] = (now_ns() - t0) / pages;

		/* every page dirty in the log: the first write after enable faults on each */
		ff = fast_faults(&r);
		first[k] = pass(&r, 100) / pages;
		if (fast_faults(&r) - ff != pages)
			bad("fast faults of the first write pass", ps, (long long)(fast_faults(&r) - ff),
			    (long long)pages);

		memset(bm, 0, words * sizeof(uint64_t));
		t0 = now_ns();
		int rc = gpamm_vm_get_dirty_log(r.vm, 0, bm);
		get[k] = (now_ns() - t0) / pages;
		if (rc)
			bad("GET", ps, rc, 0);
		if (memcmp(bm, ones, words * sizeof(uint64_t)))
			bad("GET: pages reported dirty", ps, 0, (long long)pages);

		t0 = now_ns();
		rc = gpamm_vm_clear_dirty_log(r.vm, 0, 0, pages, ones);
		clr[k] = (now_ns() - t0) / pages;
		if (rc)
			bad("CLEAR", ps, rc, 0);

		/* after CLEAR: one write per page, each a fast-path fault that logs it */
		ff = fast_faults(&r);
		dwf[k] = pass(&r, 100) / pages;
		if (fast_faults(&r) - ff != pages)
			bad("fast faults of the dirty-write pass", ps, (long long)(fast_faults(&r) - ff),
			    (long long)pages);
		memset(bm, 0, words * sizeof(uint64_t));
		if (gpamm_vm_get_dirty_log(r.vm, 0, bm) || memcmp(bm, ones, words * sizeof(uint64_t)))
			bad("GET after the dirty-write pass: all pages dirty", ps, 0, (long long)pages);

		/* every page is young: age them all */
		t0 = now_ns();
		n = gpamm_vm_mark_idle(r.vm, GPA_BASE, len);
		age[k] = (now_ns() - t0) / pages;
		if (n != (int64_t)pages)
			bad("mark_idle: pages that were young", ps, n, (long long)pages);

		/* read every page (young again), then ask */
		pass(&r, 0);
		t0 = now_ns();
		n = gpamm_vm_test_young(r.vm, GPA_BASE, len, bm);
		ty[k] = (now_ns() - t0) / pages;
		if (n != (int64_t)pages || memcmp(bm, ones, words * sizeof(uint64_t)))
			bad("test_young: young pages", ps, n, (long long)pages);

		/* logging off again (the bitmap goes with it); every entry is still
		 * dirty from the dirty-write pass, as after the populate */
		set_logging(&r, false);
	}
	rig_destroy(&r);
	free(bm);
	free(ones);

	const unsigned kib = 1u << (ps - 10);
	const bool t4 = ps == 12;
	snprintf(name, sizeof name, "%uK populate (pre-touched, info)", kib);
	fig(name, pop, "ns/page", NAN);
	snprintf(name, sizeof name, "%uK enable logging (write-protect)", kib);
	fig(name, median(en, reps), "ns/page", t4 ? 1.0 : NAN);
	snprintf(name, sizeof name, "%uK first write after enable (info)", kib);
	fig(name, median(first, reps), "ns/page", NAN);
	snprintf(name, sizeof name, "%uK GET, all dirty (manual protect)", kib);
	fig(name, median(get, reps), "ns/page", t4 ? 0.1 : NAN);
	snprintf(name, sizeof name, "%uK CLEAR, all dirty, one call", kib);
	fig(name, median(clr, reps), "ns/page", t4 ? 1.0 : NAN);
	snprintf(name, sizeof name, "%uK dirty-write fault (after CLEAR)", kib);
	fig(name, median(dwf, reps), "ns/page", t4 ? 150 : NAN);
	snprintf(name, sizeof name, "%uK age whole range (mark_idle)", kib);
	fig(name, median(age, reps), "ns/page", NAN);
	snprintf(name, sizeof name, "%uK test-young whole range", kib);
	fig(name, median(ty, reps), "ns/page", NAN);
}

int main(int argc, char **argv)
{
	if (bench_parse_quick_json(argc, argv, &quick, &json))
		return 2;
	/* Single-threaded: one CPU, the one we start on (a VM's CPUs can differ 2x). */
	int cpu = bench_pin_here(NULL);

	bench_one(12);
	bench_one(14);

	if (json) {
		printf("{\"bench\":\"dirty\",\"reps\":%d,\"quick\":%s,\"cpu\":%d,\"figures\":[", reps,
		       quick ? "true" : "false", cpu);
		for (int i = 0; i < nfigs; i++) {
			printf("%s{\"name\":\"%s\",\"value\":%.4f,\"unit\":\"%s\",", i ? "," : "",
			       figs[i].name, figs[i].value, figs[i].unit);
			if (isnan(figs[i].target))
				printf("\"target\":null,\"verdict\":null}");
			else
				printf("\"target\":%.4f,\"verdict\":\"%s\"}", figs[i].target,
				       verdict(&figs[i]));
		}
		printf("],\"sanity_failures\":%d}\n", failures);
	} else {
		printf("\n== gpamm dirty-log / access-tracking benchmark (median of %d; direct host;"
		       " %s per page size; pinned to CPU %d) ==\n", reps, quick ? "128 MiB" : "1 GiB", cpu);
		printf("%-42s %12s %-8s %8s %s\n", "figure", "value", "unit", "target", "");
		for (int i = 0; i < nfigs; i++) {
			char target[16] = "";
			if (!isnan(figs[i].target))
				snprintf(target, sizeof target, "<=%g", figs[i].target);
			printf("%-42s %12.3f %-8s %8s %s\n", figs[i].name, figs[i].value, figs[i].unit,
			       target, verdict(&figs[i]));
		}
		if (failures)
			printf("%d sanity check(s) failed: see stderr; these figures are not valid\n",
			       failures);
	}
	return failures ? 1 : 0;
}
