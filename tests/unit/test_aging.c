// SPDX-License-Identifier: MIT
/*
 * Access tracking (working-set estimation), from both ends.
 *
 * VMM side: after gpamm_vm_mark_idle() over a slot, a guest touches a
 * random, known subset of its pages (reads and writes); gpamm_vm_test_young()
 * must report exactly those pages, as a bitmap and as a count, for the whole
 * slot, for sub-ranges and for ranges that run over a hole into another
 * slot; a second mark_idle returns how many were young and resets it. This
 * runs on both hosts and in all six geometries. mark_idle must flush TLBs:
 * a page that the guest reaches only through a TLB entry cached before the
 * call must still come out young after the next access (stepwise, and with
 * the vCPU running on its own thread during the call). The rule of the
 * Linux access_tracking_perf_test (REFERENCE.md §8: fewer than 10% of
 * accessed pages may still look idle) is checked with 0% allowed.
 *
 * Host side (sim): gpamm_sim_clear_young / gpamm_sim_test_young over HVA
 * ranges with exclusive ends: true iff a page of the range was accessed
 * since it was last made old, whichever page of the range it is (the seed
 * looked at the first page only and aged one page too many, §7.9), across
 * every MMU attached to the host.
 *
 * Bad arguments give -EINVAL and change nothing (no page aged, bitmap
 * untouched).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"

/* Slot A straddles a leaf-table boundary in every geometry (1 GiB is aligned
 * to the largest leaf-table span, 512 MiB); slot B follows after a hole. */
#define A_PAGES 200
#define HOLE_PAGES 5
#define B_PAGES 70
#define A_LEAD 37 /* pages of A below 1 GiB */
#define BM_WORDS(n) (((n) + 63) / 64)
#define BM_MAX BM_WORDS(A_PAGES + HOLE_PAGES + B_PAGES)
#define GARBAGE 0xa5a5a5a5a5a5a5a5ULL

static const unsigned layouts[6][2] = { { 12, 3 }, { 12, 4 }, { 14, 2 },
					{ 14, 3 }, { 16, 2 }, { 16, 3 } };

/* ---- a small VM rig --------------------------------------------------------- */

struct rig {
	struct vt_host vh;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	unsigned ps;
	uint64_t psz;
	uint64_t ga, gb;   /* slot GPAs */
	uint64_t ha, hb;   /* their HVAs */
	struct gpamm_live live0; /* before: a failed earlier test may have leaked */
};

static void rig_init(struct rig *r, enum vt_host_kind kind, unsigned ps, unsigned levels)
{
	struct gpamm_vm_config cfg = { .page_shift = ps, .levels = levels };

	memset(r, 0, sizeof(*r));
	gpamm_live_objects(&r->live0);
	r->ps = ps;
	r->psz = 1ULL << ps;
	vt_host_create(&r->vh, kind, ps, 2 * (A_PAGES + B_PAGES) + 64);
	cfg.host = r->vh.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &r->vm), 0);
	r->ga = (1ULL << 30) - A_LEAD * r->psz;
	r->gb = r->ga + (A_PAGES + HOLE_PAGES) * r->psz;
	r->ha = vt_host_map(&r->vh, A_PAGES * r->psz, 0);
	r->hb = vt_host_map(&r->vh, B_PAGES * r->psz, 0);
	struct gpamm_userspace_memory_region ra = { .slot = 0, .guest_phys_addr = r->ga,
		.memory_size = A_PAGES * r->psz, .userspace_addr = r->ha };
	struct gpamm_userspace_memory_region rb = { .slot = 1, .guest_phys_addr = r->gb,
		.memory_size = B_PAGES * r->psz, .userspace_addr = r->hb };
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(r->vm, &ra), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(r->vm, &rb), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(r->vm, 0, &r->v), 0);
}

/* Destroy everything and prove nothing is left behind. */
static void rig_destroy(struct rig *r)
{
	struct gpamm_vm_stats st;
	struct gpamm_host_stats hs;
	struct gpamm_live l;

	gpamm_vm_stats(r->vm, &st);
	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ(st.pinned, 0);
	gpamm_vm_destroy(r->vm);
	vt_host_unmap(&r->vh, r->ha, A_PAGES * r->psz);
	vt_host_unmap(&r->vh, r->hb, B_PAGES * r->psz);
	gpamm_host_stats(r->vh.h, &hs);
	ASSERT_EQ(hs.pinned, 0);
	ASSERT_EQ(hs.frames_live, 0);
	vt_host_destroy(&r->vh);
	gpamm_live_objects(&l);
	ASSERT_EQ(l.vms, r->live0.vms);
	ASSERT_EQ(l.vcpus, r->live0.vcpus);
	ASSERT_EQ(l.tpools, r->live0.tpools);
	ASSERT_EQ(l.threads, r->live0.threads);
}

/* ---- guest programs --------------------------------------------------------- */

struct touch {
	uint64_t gpa;
	bool write;
};

struct touches {
	struct touch *t;
	unsigned n;
};

/* One access per entry: an 8-byte store or load somewhere in the page. */
static int guest_touch(struct gpamm_vcpu *v, void *arg)
{
	struct touches *ts = arg;

	for (unsigned i = 0; i < ts->n; i++) {
		if (ts->t[i].write)
			gpamm_guest_write(v, ts->t[i].gpa, 8, ts->t[i].gpa ^ 0x5a5a);
		else
			(void)gpamm_guest_read(v, ts->t[i].gpa, 8);
	}
	return 0;
}

static void run_touches(struct rig *r, struct touch *t, unsigned n)
{
	struct touches ts = { t, n };

	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r->v, guest_touch, &ts, 0), 0);
	vt_run_to_done(r->v, 0, NULL);
}

/* Write every page of [gpa, gpa + pages). */
static void populate(struct rig *r, uint64_t gpa, uint64_t pages)
{
	struct gpamm_workload w = { .gpa = gpa, .size = pages * r->psz, .write_percent = 100,
				    .passes = 1 };

	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r->v, gpamm_workload_guest, &w, 0), 0);
	vt_run_to_done(r->v, 0, NULL);
	ASSERT_EQ(w.accesses, pages);
}

/* ---- bitmap helpers ------------------------------------------------------------ */

static bool bm_test(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] >> (i % 64) & 1;
}

static void bm_set(uint64_t *bm, uint64_t i)
{
	bm[i / 64] |= 1ULL << (i % 64);
}

/* Compare the first @n bits of a bitmap with what is expected; report the first difference. */
static void assert_bits(const uint64_t *got, const uint64_t *want, uint64_t n, const char *what)
{
	for (uint64_t i = 0; i < n; i++) {
		if (bm_test(got, i) != bm_test(want, i)) {
			tap_diag("%s: page %llu reported %s, expected %s", what, (unsigned long long)i,
				 bm_test(got, i) ? "young" : "idle",
				 bm_test(want, i) ? "young" : "idle");
			ASSERT(0);
		}
	}
}

static bool bits_differ(const uint64_t *got, const uint64_t *want, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (bm_test(got, i) != bm_test(want, i))
			return true;
	return false;
}

static uint64_t bm_count(const uint64_t *bm, uint64_t n)
{
	uint64_t c = 0;

	for (uint64_t i = 0; i < n; i++)
		c += bm_test(bm, i);
	return c;
}

/* test_young over [gpa, gpa + pages) must be exactly @want (bits 0..pages-1). */
static void expect_young(struct rig *r, uint64_t gpa, uint64_t pages, const uint64_t *want,
			 const char *what)
{
	uint64_t bm[BM_MAX + 1];
	uint64_t words = BM_WORDS(pages), n = bm_count(want, pages);

	ASSERT(words <= BM_MAX);
	for (unsigned i = 0; i <= BM_MAX; i++)
		bm[i] = GARBAGE;
	int64_t c = gpamm_vm_test_young(r->vm, gpa, pages * r->psz, bm);
	ASSERT(c >= 0);
	assert_bits(bm, want, pages, what);
	ASSERT_EQ((uint64_t)c, n);
	/* nothing written past the last word the range needs */
	for (uint64_t i = words; i <= BM_MAX; i++)
		ASSERT_EQ(bm[i], GARBAGE);
	/* the count alone, without a bitmap */
	ASSERT_EQ((uint64_t)gpamm_vm_test_young(r->vm, gpa, pages * r->psz, NULL), n);
}

/* ---- 1. exact reporting after mark_idle, every geometry, both hosts ----------- */

static void exact_one(enum vt_host_kind kind, unsigned ps, unsigned levels, struct tap_rng *rng)
{
	struct rig r;
	uint64_t want[BM_MAX] = { 0 }, span[BM_MAX] = { 0 };
	struct touch t[2 * A_PAGES + B_PAGES];
	unsigned n = 0;

	rig_init(&r, kind, ps, levels);
	populate(&r, r.ga, A_PAGES);
	populate(&r, r.gb, B_PAGES);

	/* every page of A was just written: all were young */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(r.vm, r.ga, A_PAGES * r.psz), A_PAGES);
	expect_young(&r, r.ga, A_PAGES, want, "right after mark_idle");
	/* nothing was young any more */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(r.vm, r.ga, A_PAGES * r.psz), 0);

	/* a random subset, reads and writes mixed, some pages twice, in random order */
	for (uint64_t p = 0; p < A_PAGES; p++) {
		if (tap_below(rng, 100) < 30) {
			bm_set(want, p);
			t[n++] = (struct touch){ r.ga + p * r.psz + tap_below(rng, r.psz / 8) * 8,
						 tap_below(rng, 2) != 0 };
			if (tap_below(rng, 4) == 0)
				t[n++] = (struct touch){ r.ga + p * r.psz, tap_below(rng, 2) != 0 };
		}
	}
	/* the first and last pages of A, which sit at the range ends */
	if (!bm_test(want, 0)) {
		bm_set(want, 0);
		t[n++] = (struct touch){ r.ga, false };
	}
	if (!bm_test(want, A_PAGES - 1)) {
		bm_set(want, A_PAGES - 1);
		t[n++] = (struct touch){ r.ga + (A_PAGES - 1) * r.psz + r.psz - 8, true };
	}
	for (unsigned i = n; i > 1; i--) {
		unsigned j = (unsigned)tap_below(rng, i);
		struct touch x = t[i - 1];
		t[i - 1] = t[j];
		t[j] = x;
	}
	run_touches(&r, t, n);
	uint64_t touched = bm_count(want, A_PAGES);
	expect_young(&r, r.ga, A_PAGES, want, "after the touches");

	/* sub-ranges: bits relative to their own start */
	for (int k = 0; k < 8; k++) {
		uint64_t a = tap_below(rng, A_PAGES), b = a + 1 + tap_below(rng, A_PAGES - a);
		uint64_t sub[BM_MAX] = { 0 };
		for (uint64_t p = a; p < b; p++)
			if (bm_test(want, p))
				bm_set(sub, p - a);
		expect_young(&r, r.ga + a * r.psz, b - a, sub, "sub-range");
	}

	/* A, the hole, and B (never marked idle: all young) in one range */
	for (uint64_t p = 0; p < A_PAGES; p++)
		if (bm_test(want, p))
			bm_set(span, p);
	for (uint64_t p = 0; p < B_PAGES; p++)
		bm_set(span, A_PAGES + HOLE_PAGES + p);
	expect_young(&r, r.ga, A_PAGES + HOLE_PAGES + B_PAGES, span, "A + hole + B");

	/* a range with no slot at all */
	uint64_t none[BM_MAX] = { 0 };
	expect_young(&r, r.ga + A_PAGES * r.psz, HOLE_PAGES, none, "the hole");
	ASSERT_EQ_INT(gpamm_vm_mark_idle(r.vm, r.ga + A_PAGES * r.psz, HOLE_PAGES * r.psz), 0);

	/* marking only B leaves A's young pages alone */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(r.vm, r.gb, B_PAGES * r.psz), B_PAGES);
	expect_young(&r, r.ga, A_PAGES, want, "A after marking B");

	/* the second mark_idle reports what was young and resets it */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(r.vm, r.ga, A_PAGES * r.psz), (int64_t)touched);
	expect_young(&r, r.ga, A_PAGES, none, "after the second mark_idle");
	expect_young(&r, r.ga, A_PAGES + HOLE_PAGES + B_PAGES, none, "A + hole + B, all idle");

	/* touching again after the reset is seen again */
	run_touches(&r, t, n);
	expect_young(&r, r.ga, A_PAGES, want, "after touching again");
	rig_destroy(&r);
}

static void test_idle_exact(void)
{
	struct tap_rng rng;

	tap_rng_seed(&rng, tap_seed());
	for (int h = 0; h < 2; h++)
		for (int l = 0; l < 6; l++)
			exact_one(h ? VT_SIM : VT_DIRECT, layouts[l][0], layouts[l][1], &rng);
}

/* ---- 2. mark_idle flushes TLBs (stepwise) ----------------------------------------- */

#define TLB_PAGES 32 /* well inside the TLB: consecutive pages use different sets */

struct stepper {
	uint64_t gpa;
	unsigned pages;
	unsigned rounds;
	bool write;
};

/*
 * Each round: touch every page twice (the first may fault; the second goes
 * through the TLB entry that the first one filled), then exit to the VMM.
 * After the exit the VMM marks the pages idle; the next round's accesses
 * can only make them young again if mark_idle dropped those TLB entries.
 */
static int guest_stepper(struct gpamm_vcpu *v, void *arg)
{
	struct stepper *s = arg;

	for (unsigned r = 0; r < s->rounds; r++) {
		for (int twice = 0; twice < 2; twice++)
			for (unsigned p = 0; p < s->pages; p++) {
				uint64_t gpa = s->gpa + (uint64_t)p * gpamm_vm_geom(gpamm_vcpu_vm(v))->page_size;
				if (s->write)
					gpamm_guest_write(v, gpa + 8 * twice, 8, r);
				else
					(void)gpamm_guest_read(v, gpa + 8 * twice, 8);
			}
		gpamm_guest_exit(v);
	}
	return 0;
}

static void tlb_one(enum vt_host_kind kind, unsigned ps, unsigned levels, bool write)
{
	struct rig r;
	struct stepper s = { .pages = TLB_PAGES, .rounds = 6, .write = write };
	struct gpamm_run *run;
	uint64_t all[BM_MAX] = { 0 };

	rig_init(&r, kind, ps, levels);
	run = gpamm_vcpu_run_state(r.v);
	/* pages 100.. of A: the range starts inside the slot */
	s.gpa = r.ga + 100 * r.psz;
	for (unsigned p = 0; p < TLB_PAGES; p++)
		bm_set(all, p);
	populate(&r, r.ga, A_PAGES);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v, guest_stepper, &s, 0), 0);
	for (unsigned k = 0; k < s.rounds; k++) {
		ASSERT_EQ_INT(gpamm_vcpu_run(r.v), 0);
		ASSERT_EQ(run->exit_reason, GPAMM_EXIT_REQUEST);
		/* every page was accessed in this round (the first round after populate too) */
		expect_young(&r, s.gpa, TLB_PAGES, all, "after a round of accesses");
		ASSERT_EQ_INT(gpamm_vm_mark_idle(r.vm, r.ga, A_PAGES * r.psz),
			      k == 0 ? A_PAGES : TLB_PAGES);
	}
	ASSERT_EQ_INT(gpamm_vcpu_run(r.v), 0);
	ASSERT_EQ(run->exit_reason, GPAMM_EXIT_DONE);
	rig_destroy(&r);
}

static void test_idle_flushes_tlb(void)
{
	for (int h = 0; h < 2; h++)
		for (int w = 0; w < 2; w++) {
			tlb_one(h ? VT_SIM : VT_DIRECT, 12, 3, w);
			tlb_one(h ? VT_SIM : VT_DIRECT, 14, 3, w);
			tlb_one(h ? VT_SIM : VT_DIRECT, 16, 2, w);
		}
}

/* ---- 3. mark_idle while the vCPU runs on its own thread --------------------------- */

struct looper {
	struct gpamm_vcpu *v;
	uint64_t gpa, psz;
	unsigned pages;
	atomic_uint_fast64_t passes;
	atomic_int stop;
	bool bad_exit;
};

static int guest_looper(struct gpamm_vcpu *v, void *arg)
{
	struct looper *l = arg;

	for (uint64_t pass = 0; !atomic_load_explicit(&l->stop, memory_order_relaxed); pass++) {
		for (unsigned p = 0; p < l->pages; p++) {
			if ((p + pass) & 1)
				gpamm_guest_write(v, l->gpa + p * l->psz, 8, pass);
			else
				(void)gpamm_guest_read(v, l->gpa + p * l->psz, 8);
		}
		atomic_fetch_add_explicit(&l->passes, 1, memory_order_release);
	}
	return 0;
}

static void *looper_thread(void *arg)
{
	struct looper *l = arg;
	struct gpamm_run *run = gpamm_vcpu_run_state(l->v);

	for (;;) {
		if (gpamm_vcpu_run(l->v)) {
			l->bad_exit = true;
			tap_fail_async(__FILE__, __LINE__, "gpamm_vcpu_run failed");
			return NULL;
		}
		if (run->exit_reason == GPAMM_EXIT_DONE)
			return NULL;
		l->bad_exit = true;
		tap_fail_async(__FILE__, __LINE__, "unexpected exit");
		return NULL;
	}
}

static void running_one(enum vt_host_kind kind, unsigned ps, unsigned levels)
{
	struct rig r;
	struct looper l = { .pages = TLB_PAGES };
	uint64_t want[BM_MAX] = { 0 };
	pthread_t th;
	unsigned iters = (unsigned)(40 * tap_scale());

	rig_init(&r, kind, ps, levels);
	populate(&r, r.ga, A_PAGES);
	l.v = r.v;
	l.psz = r.psz;
	l.gpa = r.ga + 50 * r.psz;
	for (unsigned p = 0; p < TLB_PAGES; p++)
		bm_set(want, 50 + p);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v, guest_looper, &l, 0), 0);
	ASSERT_EQ_INT(pthread_create(&th, NULL, looper_thread, &l), 0);
	int64_t bad_count = -1;
	uint64_t bm[BM_MAX];
	unsigned k;

	for (k = 0; k < iters && !l.bad_exit; k++) {
		int64_t n = gpamm_vm_mark_idle(r.vm, r.ga, A_PAGES * r.psz);
		if (n < 0) {
			bad_count = n;
			break;
		}
		/* two whole passes that began after the call returned */
		uint64_t p0 = atomic_load_explicit(&l.passes, memory_order_acquire);
		while (atomic_load_explicit(&l.passes, memory_order_acquire) < p0 + 2 && !l.bad_exit)
			sched_yield();
		/* only the looped-over pages, and every one of them */
		int64_t c = gpamm_vm_test_young(r.vm, r.ga, A_PAGES * r.psz, bm);
		if (c != TLB_PAGES || bits_differ(bm, want, A_PAGES)) {
			bad_count = c;
			break;
		}
	}
	atomic_store(&l.stop, 1);
	pthread_join(th, NULL);
	ASSERT(!l.bad_exit);
	if (bad_count != -1) {
		tap_diag("iteration %u: %lld young, expected %d", k, (long long)bad_count, TLB_PAGES);
		ASSERT(bad_count >= 0);
		assert_bits(bm, want, A_PAGES, "while running");
		ASSERT_EQ_INT(bad_count, TLB_PAGES);
	}
	rig_destroy(&r);
}

static void test_idle_while_running(void)
{
	for (int h = 0; h < 2; h++) {
		running_one(h ? VT_SIM : VT_DIRECT, 12, 4);
		running_one(h ? VT_SIM : VT_DIRECT, 14, 3);
	}
}

/* ---- 4. the access_tracking_perf_test rule ---------------------------------------- */

#define AT_VCPUS 2
#define AT_PAGES_PER_VCPU 512

struct at_vcpu {
	struct gpamm_vcpu *v;
	struct gpamm_workload w;
	bool failed;
};

static void *at_thread(void *arg)
{
	struct at_vcpu *a = arg;
	struct gpamm_run *run = gpamm_vcpu_run_state(a->v);

	if (gpamm_vcpu_set_guest(a->v, gpamm_workload_guest, &a->w, 0) || gpamm_vcpu_run(a->v) ||
	    run->exit_reason != GPAMM_EXIT_DONE || a->w.passes_done != 1) {
		a->failed = true;
		tap_fail_async(__FILE__, __LINE__, "workload did not complete");
	}
	return NULL;
}

/* Every vCPU runs one pass over its own slice, all at once. */
static void at_pass(struct at_vcpu *a, uint64_t base, uint64_t psz, unsigned write_percent,
		    uint64_t seed)
{
	pthread_t th[AT_VCPUS];

	for (unsigned i = 0; i < AT_VCPUS; i++) {
		a[i].w = (struct gpamm_workload){
			.gpa = base + (uint64_t)i * AT_PAGES_PER_VCPU * psz,
			.size = AT_PAGES_PER_VCPU * psz, .write_percent = write_percent,
			.order = (seed & 1) ? GPAMM_ORDER_RANDOM : GPAMM_ORDER_SEQUENTIAL,
			.passes = 1, .seed = seed + i, .stride = 0 };
		ASSERT_EQ_INT(pthread_create(&th[i], NULL, at_thread, &a[i]), 0);
	}
	for (unsigned i = 0; i < AT_VCPUS; i++)
		pthread_join(th[i], NULL);
	for (unsigned i = 0; i < AT_VCPUS; i++)
		ASSERT(!a[i].failed);
}

/*
 * A random-order pass of n accesses does not visit every page (it draws n
 * pages with replacement), so the idle check uses the sequential order;
 * the random passes only shuffle the TLB beforehand.
 */
static void at_one(enum vt_host_kind kind, unsigned ps, unsigned levels)
{
	const uint64_t total = (uint64_t)AT_VCPUS * AT_PAGES_PER_VCPU;
	struct gpamm_vm_config cfg = { .page_shift = ps, .levels = levels };
	struct vt_host vh;
	struct gpamm_vm *vm;
	struct at_vcpu a[AT_VCPUS];
	uint64_t psz = 1ULL << ps, base = 4ULL << 30, hva;
	uint64_t *bm = calloc(BM_WORDS(total), sizeof(uint64_t));
	struct gpamm_live l, l0;

	ASSERT(bm);
	memset(a, 0, sizeof(a));
	gpamm_live_objects(&l0);
	vt_host_create(&vh, kind, ps, 2 * total);
	cfg.host = vh.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	hva = vt_host_map(&vh, total * psz, 0);
	struct gpamm_userspace_memory_region reg = { .slot = 3, .guest_phys_addr = base,
		.memory_size = total * psz, .userspace_addr = hva };
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &reg), 0);
	for (unsigned i = 0; i < AT_VCPUS; i++)
		ASSERT_EQ_INT(gpamm_vcpu_create(vm, i, &a[i].v), 0);

	at_pass(a, base, psz, 100, 2);  /* populate */
	at_pass(a, base, psz, 100, 5);  /* write (random order) */
	at_pass(a, base, psz, 0, 7);    /* read (random order) */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(vm, base, total * psz), (int64_t)total);
	ASSERT_EQ_INT(gpamm_vm_test_young(vm, base, total * psz, NULL), 0);

	at_pass(a, base, psz, 100, 8);  /* write to idle memory */
	int64_t young = gpamm_vm_test_young(vm, base, total * psz, bm);
	ASSERT(young >= 0);
	tap_diag("%s %uK/%u: idle after writing idle memory: %.2f%% (Linux fails at >= 10%%)",
		 vt_host_name(kind), 1u << (ps - 10), levels,
		 100.0 * (double)(total - (uint64_t)young) / (double)total);
	ASSERT_EQ((uint64_t)young, total);
	ASSERT_EQ(bm_count(bm, total), total);

	ASSERT_EQ_INT(gpamm_vm_mark_idle(vm, base, total * psz), (int64_t)total);
	at_pass(a, base, psz, 0, 10);   /* read idle memory */
	young = gpamm_vm_test_young(vm, base, total * psz, bm);
	tap_diag("%s %uK/%u: idle after reading idle memory: %.2f%%", vt_host_name(kind),
		 1u << (ps - 10), levels, 100.0 * (double)(total - (uint64_t)young) / (double)total);
	ASSERT_EQ((uint64_t)young, total);
	ASSERT_EQ(bm_count(bm, total), total);

	struct gpamm_vm_stats st;
	gpamm_vm_stats(vm, &st);
	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ(st.pinned, 0);
	gpamm_vm_destroy(vm);
	vt_host_unmap(&vh, hva, total * psz);
	vt_host_destroy(&vh);
	free(bm);
	gpamm_live_objects(&l);
	ASSERT_EQ(l.vms + l.vcpus + l.tpools + l.threads, l0.vms + l0.vcpus + l0.tpools + l0.threads);
}

static void test_access_tracking_rule(void)
{
	for (int h = 0; h < 2; h++) {
		at_one(h ? VT_SIM : VT_DIRECT, 12, 3);
		at_one(h ? VT_SIM : VT_DIRECT, 16, 3);
	}
}

/* ---- 5. host-driven aging (sim) --------------------------------------------------------- */

static bool sim_young(struct rig *r, uint64_t hva, uint64_t len)
{
	bool y = true;

	ASSERT_EQ_INT(gpamm_sim_test_young(r->vh.h, hva, len, &y), 0);
	return y;
}

static bool sim_clear(struct rig *r, uint64_t hva, uint64_t len, bool flush)
{
	bool y = false;

	ASSERT_EQ_INT(gpamm_sim_clear_young(r->vh.h, hva, len, flush, &y), 0);
	return y;
}

static void touch_page(struct rig *r, uint64_t page, bool write)
{
	struct touch t = { r->ga + page * r->psz + 16, write };

	run_touches(r, &t, 1);
}

static void host_aging_one(unsigned ps, unsigned levels, struct tap_rng *rng)
{
	struct rig r;
	const uint64_t len = A_PAGES * (1ULL << ps);
	uint64_t none[BM_MAX] = { 0 };

	rig_init(&r, VT_SIM, ps, levels);
	const uint64_t h0 = r.ha, psz = r.psz, hend = r.ha + len;
	/* nothing mapped in the guest yet */
	ASSERT(!sim_young(&r, h0, len));
	ASSERT(!sim_clear(&r, h0, len, true));
	populate(&r, r.ga, A_PAGES);
	ASSERT(sim_young(&r, h0, len));
	ASSERT(sim_young(&r, hend - psz, psz));
	ASSERT(sim_clear(&r, h0, len, true));
	ASSERT(!sim_young(&r, h0, len));
	ASSERT(!sim_clear(&r, h0, len, true));
	expect_young(&r, r.ga, A_PAGES, none, "after host clear_flush_young");

	for (int iter = 0; iter < 12; iter++) {
		/* a page away from the ends, so that every neighbouring range exists */
		uint64_t k = 4 + tap_below(rng, A_PAGES - 8), hk = h0 + k * psz;
		uint64_t want[BM_MAX] = { 0 };

		bm_set(want, k);
		touch_page(&r, k, iter & 1);
		ASSERT(sim_young(&r, hk, psz));
		ASSERT(sim_young(&r, h0, len));
		/* exclusive ends: ranges that end where page k begins, or begin after it */
		ASSERT(!sim_young(&r, h0, hk - h0));
		ASSERT(!sim_young(&r, hk - psz, psz));
		ASSERT(!sim_young(&r, hk + psz, hend - hk - psz));
		/* page k anywhere in a range: last, middle, first */
		ASSERT(sim_young(&r, hk - 3 * psz, 4 * psz));
		ASSERT(sim_young(&r, hk - 2 * psz, 5 * psz));
		ASSERT(sim_young(&r, hk, 3 * psz));
		/* clearing the neighbours does not age page k */
		ASSERT(!sim_clear(&r, h0, hk - h0, true));
		ASSERT(!sim_clear(&r, hk + psz, hend - hk - psz, iter & 2));
		ASSERT(sim_young(&r, hk, psz));
		expect_young(&r, r.ga, A_PAGES, want, "VM view of host aging");
		/* clearing a range where page k is last ages it */
		ASSERT(sim_clear(&r, hk - 2 * psz, 3 * psz, true));
		ASSERT(!sim_young(&r, h0, len));
		expect_young(&r, r.ga, A_PAGES, none, "after clearing page k");
		/* and the next access makes it young again (the TLB was flushed) */
		touch_page(&r, k, !(iter & 1));
		ASSERT(sim_young(&r, hk, psz));
		ASSERT(sim_clear(&r, hk, psz, true));
	}

	/* clear_young without flush: old at once; young again once the
	 * guest reaches the page through a fresh walk */
	touch_page(&r, 7, false);
	ASSERT(sim_clear(&r, h0 + 7 * psz, psz, false));
	ASSERT(!sim_young(&r, h0 + 7 * psz, psz));
	gpamm_vm_flush_remote_tlbs(r.vm);
	touch_page(&r, 7, true);
	ASSERT(sim_young(&r, h0 + 7 * psz, psz));

	/* ranges partly or wholly outside the VMA: only mapped pages count */
	ASSERT(sim_young(&r, h0 + 7 * psz, len));
	ASSERT(!sim_young(&r, hend, 16 * psz));
	ASSERT(!sim_young(&r, r.hb, B_PAGES * psz)); /* slot B was never touched */

	/* host aging and VMM aging are the same state */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(r.vm, r.ga, len), 1);
	ASSERT(!sim_young(&r, h0, len));
	rig_destroy(&r);
}

static void test_host_aging(void)
{
	struct tap_rng rng;

	tap_rng_seed(&rng, tap_seed() ^ 0x1234);
	host_aging_one(12, 3, &rng);
	host_aging_one(14, 2, &rng);
	host_aging_one(16, 3, &rng);
}

/* Two VMs map the same host memory: the host asks both. */
static void test_host_aging_two_vms(void)
{
	const unsigned ps = 12;
	const uint64_t psz = 1ULL << ps, pages = 64, len = pages * psz;
	struct vt_host vh;
	struct gpamm_vm *vm[2];
	struct gpamm_vcpu *v[2];
	uint64_t hva;

	vt_host_create(&vh, VT_SIM, ps, 4 * pages);
	hva = vt_host_map(&vh, len, 0);
	for (int i = 0; i < 2; i++) {
		struct gpamm_vm_config cfg = { .page_shift = ps, .levels = 3, .host = vh.h };
		ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm[i]), 0);
		struct gpamm_userspace_memory_region reg = { .slot = 0,
			.guest_phys_addr = (uint64_t)(i + 1) << 30, .memory_size = len,
			.userspace_addr = hva };
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm[i], &reg), 0);
		ASSERT_EQ_INT(gpamm_vcpu_create(vm[i], 0, &v[i]), 0);
		struct gpamm_workload w = { .gpa = (uint64_t)(i + 1) << 30, .size = len,
					    .write_percent = i ? 0 : 100, .passes = 1 };
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(v[i], gpamm_workload_guest, &w, 0), 0);
		vt_run_to_done(v[i], 0, NULL);
	}
	bool y;
	ASSERT_EQ_INT(gpamm_sim_clear_young(vh.h, hva, len, true, &y), 0);
	ASSERT(y);
	ASSERT_EQ_INT(gpamm_sim_test_young(vh.h, hva, len, &y), 0);
	ASSERT(!y);
	ASSERT_EQ_INT(gpamm_vm_test_young(vm[0], 1ULL << 30, len, NULL), 0);
	ASSERT_EQ_INT(gpamm_vm_test_young(vm[1], 2ULL << 30, len, NULL), 0);

	/* VM 0 touches page 10, VM 1 touches page 40 */
	for (int i = 0; i < 2; i++) {
		struct touch t = { ((uint64_t)(i + 1) << 30) + (i ? 40 : 10) * psz, i == 0 };
		struct touches ts = { &t, 1 };
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(v[i], guest_touch, &ts, 0), 0);
		vt_run_to_done(v[i], 0, NULL);
	}
	ASSERT_EQ_INT(gpamm_sim_test_young(vh.h, hva + 10 * psz, psz, &y), 0);
	ASSERT(y);
	ASSERT_EQ_INT(gpamm_sim_test_young(vh.h, hva + 40 * psz, psz, &y), 0);
	ASSERT(y);
	ASSERT_EQ_INT(gpamm_sim_test_young(vh.h, hva + 11 * psz, 29 * psz, &y), 0);
	ASSERT(!y);
	ASSERT_EQ_INT(gpamm_sim_test_young(vh.h, hva, 10 * psz, &y), 0);
	ASSERT(!y);
	ASSERT_EQ_INT(gpamm_sim_test_young(vh.h, hva + 41 * psz, len - 41 * psz, &y), 0);
	ASSERT(!y);
	/* page 40 is young in VM 1 only; clearing it there leaves page 10 in VM 0 */
	ASSERT_EQ_INT(gpamm_sim_clear_young(vh.h, hva + 40 * psz, psz, true, &y), 0);
	ASSERT(y);
	ASSERT_EQ_INT(gpamm_sim_test_young(vh.h, hva + 40 * psz, psz, &y), 0);
	ASSERT(!y);
	ASSERT_EQ_INT(gpamm_sim_test_young(vh.h, hva, len, &y), 0);
	ASSERT(y);
	ASSERT_EQ_INT(gpamm_vm_test_young(vm[0], 1ULL << 30, len, NULL), 1);
	ASSERT_EQ_INT(gpamm_vm_test_young(vm[1], 2ULL << 30, len, NULL), 0);

	for (int i = 0; i < 2; i++)
		gpamm_vm_destroy(vm[i]);
	vt_host_unmap(&vh, hva, len);
	struct gpamm_host_stats hs;
	gpamm_host_stats(vh.h, &hs);
	ASSERT_EQ(hs.frames_live, 0);
	ASSERT_EQ(hs.pinned, 0);
	vt_host_destroy(&vh);
}

/* ---- 6. bad arguments ------------------------------------------------------------------- */

static void bad_one(enum vt_host_kind kind, unsigned ps, unsigned levels, struct tap_rng *rng)
{
	struct rig r;
	uint64_t want[BM_MAX] = { 0 }, bm[BM_MAX];
	struct touch t[A_PAGES];
	unsigned n = 0;

	rig_init(&r, kind, ps, levels);
	const uint64_t psz = r.psz, len = A_PAGES * psz;
	const uint64_t space = gpamm_geom_space(gpamm_vm_geom(r.vm));
	populate(&r, r.ga, A_PAGES);
	ASSERT_EQ_INT(gpamm_vm_mark_idle(r.vm, r.ga, len), A_PAGES);
	for (uint64_t p = 0; p < A_PAGES; p++)
		if (tap_below(rng, 2)) {
			bm_set(want, p);
			t[n++] = (struct touch){ r.ga + p * psz, p & 1 };
		}
	run_touches(&r, t, n);
	expect_young(&r, r.ga, A_PAGES, want, "before the bad calls");

	const struct { uint64_t gpa, size; const char *why; } bad[] = {
		{ r.ga + 8, len, "unaligned gpa" },
		{ r.ga + psz / 2, len, "gpa off by half a page" },
		{ r.ga, len - 8, "unaligned size" },
		{ r.ga, psz + 1, "size not a page multiple" },
		{ r.ga, 0, "zero size" },
		{ 0, 0, "zero size at 0" },
		{ -psz, 2 * psz, "wraps" },
		{ r.ga, -r.ga, "end wraps to 0" },
		{ r.ga, UINT64_MAX - psz + 1, "huge size" },
		{ space - psz, 2 * psz, "runs past the GPA space" },
		{ space, psz, "starts at the end of the GPA space" },
		{ 0, space + psz, "larger than the GPA space" },
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (unsigned w = 0; w < BM_MAX; w++)
			bm[w] = GARBAGE;
		int64_t a = gpamm_vm_mark_idle(r.vm, bad[i].gpa, bad[i].size);
		int64_t b = gpamm_vm_test_young(r.vm, bad[i].gpa, bad[i].size, bm);
		int64_t c = gpamm_vm_test_young(r.vm, bad[i].gpa, bad[i].size, NULL);
		if (a != -EINVAL || b != -EINVAL || c != -EINVAL)
			tap_diag("%s (gpa 0x%llx size 0x%llx): mark_idle %lld, test_young %lld / %lld",
				 bad[i].why, (unsigned long long)bad[i].gpa,
				 (unsigned long long)bad[i].size, (long long)a, (long long)b,
				 (long long)c);
		ASSERT_EQ_INT(a, -EINVAL);
		ASSERT_EQ_INT(b, -EINVAL);
		ASSERT_EQ_INT(c, -EINVAL);
		for (unsigned w = 0; w < BM_MAX; w++)
			ASSERT_EQ(bm[w], GARBAGE);
		/* nothing aged */
		expect_young(&r, r.ga, A_PAGES, want, bad[i].why);
	}
	/* the edges that are valid */
	ASSERT_EQ_INT(gpamm_vm_test_young(r.vm, space - psz, psz, NULL), 0);
	ASSERT_EQ_INT(gpamm_vm_mark_idle(r.vm, space - psz, psz), 0);
	ASSERT_EQ_INT(gpamm_vm_test_young(r.vm, 0, space, NULL),
		      (int64_t)bm_count(want, A_PAGES)); /* B was never touched */
	expect_young(&r, r.ga, A_PAGES, want, "after the valid edge calls");

	if (kind == VT_SIM) {
		const struct { uint64_t hva, len; } hbad[] = {
			{ r.ha + 8, len }, { r.ha, len - 8 }, { r.ha + 1, psz },
			{ -psz, 2 * psz }, { r.ha, -r.ha },
		};
		for (unsigned i = 0; i < sizeof(hbad) / sizeof(hbad[0]); i++) {
			bool y = false;
			ASSERT_EQ_INT(gpamm_sim_clear_young(r.vh.h, hbad[i].hva, hbad[i].len, true, &y),
				      -EINVAL);
			ASSERT_EQ_INT(gpamm_sim_clear_young(r.vh.h, hbad[i].hva, hbad[i].len, false, &y),
				      -EINVAL);
			ASSERT_EQ_INT(gpamm_sim_test_young(r.vh.h, hbad[i].hva, hbad[i].len, &y),
				      -EINVAL);
			expect_young(&r, r.ga, A_PAGES, want, "after a bad host aging call");
		}
		/* an empty range is either refused or holds nothing young */
		bool y = true;
		int rc = gpamm_sim_clear_young(r.vh.h, r.ha, 0, true, &y);
		ASSERT(rc == -EINVAL || (rc == 0 && !y));
		expect_young(&r, r.ga, A_PAGES, want, "after an empty host clear_young");
	}
	rig_destroy(&r);
}

static void test_bad_args(void)
{
	struct tap_rng rng;

	tap_rng_seed(&rng, tap_seed() ^ 0xbad);
	for (int h = 0; h < 2; h++) {
		bad_one(h ? VT_SIM : VT_DIRECT, 12, 3, &rng);
		bad_one(h ? VT_SIM : VT_DIRECT, 14, 2, &rng);
		bad_one(h ? VT_SIM : VT_DIRECT, 16, 3, &rng);
	}
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_idle_exact);
	TEST(test_idle_flushes_tlb);
	TEST(test_idle_while_running);
	TEST(test_access_tracking_rule);
	TEST(test_host_aging);
	TEST(test_host_aging_two_vms);
	TEST(test_bad_args);
	return tap_done();
}
