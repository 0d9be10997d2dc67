// SPDX-License-Identifier: MIT
/*
 * Breaking the parallel fault paths through the public API, with forced
 * interleavings (the parking lot; never timing luck) and bad arguments.
 * Each body runs in a forked child (isolate.h), so a crash or a hang is a
 * clean "not ok" and the other tests still run.
 *
 * Four of these found defects, fixed since; the tests keep them fixed:
 *   - test_bp_ring_reset_past_push: RESET flags on entries the vCPU never
 *     pushed moved the reset index past the push index (dirty.c
 *     ring_reset), wedging the ring for good;
 *   - test_bp_ring_reset_past_push_mid_fault: the same with a fault in
 *     flight, which then hit the ring's BUG_ON (an abort on VMM input);
 *   - test_bp_null_vcpu_calls, test_bp_null_vm_calls: the calls without an
 *     errno (kick, id, vm, dirty_ring; stats, flush_remote_tlbs, host)
 *     dereferenced NULL.
 * Every other test documents a property that held.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gpamm/inject.h"
#include "harness/isolate.h"
#include "harness/park.h"
#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define GPA0 0x100000ULL
#define NPAGES 64
#define WBITS GPAMM_PTE_WRITEABLE

enum log_mode { LOG_CLASSIC, LOG_MANUAL, LOG_RING };

/* ---- a VM over the direct host inside a parking host ------------------------ */

struct rig {
	struct park_lot *lot;
	struct gpamm_host *inner, *ph;
	struct gpamm_vm *vm;
	uint8_t *mem;
	uint64_t hva;
	struct gpamm_vcpu *v[3];
	enum log_mode mode;
	uint64_t harvested[3];
};

static void rig_create_flags(struct rig *r, enum log_mode mode, uint32_t slot_flags,
			     unsigned vm_flags)
{
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .flags = vm_flags };

	memset(r, 0, sizeof(*r));
	r->mode = mode;
	r->lot = park_lot_create();
	r->inner = gpamm_host_direct_create(PS);
	CHECK(r->inner);
	r->ph = park_host_create(r->inner, r->lot);
	CHECK(r->ph);
	cfg.host = r->ph;
	CHECK_EQ_INT(gpamm_vm_create(&cfg, &r->vm), 0);
	CHECK_EQ_INT(gpamm_vm_set_pause_hook(r->vm, park_pause_hook, r->lot), 0);
	if (mode == LOG_MANUAL)
		CHECK_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(
				     r->vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0);
	if (mode == LOG_RING)
		CHECK_EQ_INT(gpamm_vm_enable_dirty_ring(r->vm, 128), 0);
	for (unsigned i = 0; i < 3; i++)
		CHECK_EQ_INT(gpamm_vcpu_create(r->vm, i, &r->v[i]), 0);
	r->mem = vt_alloc(NPAGES * PSZ, PS);
	CHECK(r->mem);
	r->hva = (uintptr_t)r->mem;
	CHECK_EQ_INT(gpamm_vm_set_memory_region(r->vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .flags = slot_flags, .guest_phys_addr = GPA0,
		.memory_size = NPAGES * PSZ, .userspace_addr = r->hva }), 0);
}

static void rig_create(struct rig *r, enum log_mode mode, uint32_t slot_flags)
{
	rig_create_flags(r, mode, slot_flags, 0);
}

static void rig_destroy_live(struct rig *r, bool check_live)
{
	struct gpamm_vm_stats st;
	struct gpamm_live l;

	gpamm_vm_stats(r->vm, &st);
	EXPECT_EQ(st.pinned, 0);
	CHECK_EQ_INT(gpamm_vm_destroy(r->vm), 0);
	gpamm_host_destroy(r->ph);
	gpamm_host_destroy(r->inner);
	vt_free(r->mem, NPAGES * PSZ);
	park_lot_destroy(r->lot);
	if (!check_live)
		return;
	gpamm_live_objects(&l);
	EXPECT_EQ(l.vms, 0);
	EXPECT_EQ(l.vcpus, 0);
}

static void rig_destroy(struct rig *r)
{
	rig_destroy_live(r, true);
}

static uint64_t ring_harvest(struct rig *r, unsigned *count)
{
	uint64_t bm = 0, foreign = 0, n = 0;

	for (unsigned i = 0; i < 3; i++)
		n += vt_ring_harvest(r->v[i], &r->harvested[i], 0, NPAGES, &bm, &foreign);
	CHECK_EQ(foreign, 0);
	*count = (unsigned)n;
	return bm;
}

/* One round of the dirty log as a VMM does it (first word: pages 0..63). */
static uint64_t log_round(struct rig *r)
{
	uint64_t bm = 0;
	unsigned n;

	switch (r->mode) {
	case LOG_CLASSIC:
		CHECK_EQ_INT(gpamm_vm_get_dirty_log(r->vm, 0, &bm), 0);
		break;
	case LOG_MANUAL:
		CHECK_EQ_INT(gpamm_vm_get_dirty_log(r->vm, 0, &bm), 0);
		CHECK_EQ_INT(gpamm_vm_clear_dirty_log(r->vm, 0, 0, NPAGES, &bm), 0);
		break;
	case LOG_RING:
		bm = ring_harvest(r, &n);
		CHECK_EQ_INT(gpamm_vm_reset_dirty_rings(r->vm), n);
		break;
	}
	return bm;
}

static gpamm_pte_t pte_of(struct gpamm_vm *vm, uint64_t gpa)
{
	gpamm_pte_t e = 0;

	if (gpamm_vm_translate(vm, gpa, &e, NULL))
		return 0;
	return e;
}

/* Run a script on @v to its end (or its next VT_OP_EXIT), here. */
static uint32_t run_script(struct gpamm_vcpu *v, struct vt_op *ops)
{
	CHECK_EQ_INT(gpamm_vcpu_set_guest(v, vt_guest_script, ops, 0), 0);
	return vt_run_once(v, 0);
}

/* Wait (hang guard 10 s) until a writer holds or waits for mmu_lock. */
static bool wait_writer(struct gpamm_vm *vm)
{
	for (unsigned i = 0; i < 10000; i++) {
		unsigned readers;
		bool writer;

		CHECK_EQ_INT(gpamm_vm_mmu_lock_state(vm, &readers, &writer), 0);
		if (writer)
			return true;
		usleep(1000);
	}
	return false;
}

/* A VMM call on a thread of its own. */
enum vmm_call { VC_GET, VC_CLEAR, VC_RESET, VC_SETMEM, VC_SIM_MPROTECT_RO, VC_SIM_MIGRATE,
		VC_TRANSLATE };
struct vmm_thread {
	pthread_t tid;
	enum vmm_call what;
	struct gpamm_vm *vm;
	struct gpamm_host *h;
	uint64_t bm, gpa, hva, len;
	struct gpamm_userspace_memory_region r;
	gpamm_pte_t pte;
	int64_t ret;
	atomic_int done;
};

static void *vmm_main(void *arg)
{
	struct vmm_thread *t = arg;

	switch (t->what) {
	case VC_GET: t->ret = gpamm_vm_get_dirty_log(t->vm, 0, &t->bm); break;
	case VC_CLEAR: t->ret = gpamm_vm_clear_dirty_log(t->vm, 0, 0, NPAGES, &t->bm); break;
	case VC_RESET: t->ret = gpamm_vm_reset_dirty_rings(t->vm); break;
	case VC_SETMEM: t->ret = gpamm_vm_set_memory_region(t->vm, &t->r); break;
	case VC_SIM_MPROTECT_RO: t->ret = gpamm_sim_mprotect(t->h, t->hva, t->len, false); break;
	case VC_SIM_MIGRATE: t->ret = gpamm_sim_migrate(t->h, t->hva, t->len); break;
	case VC_TRANSLATE: t->ret = gpamm_vm_translate(t->vm, t->gpa, &t->pte, NULL); break;
	}
	atomic_store(&t->done, 1);
	return NULL;
}

static void vmm_start(struct vmm_thread *t)
{
	atomic_store(&t->done, 0);
	CHECK_EQ_INT(pthread_create(&t->tid, NULL, vmm_main, t), 0);
}

/* ======================================================================== */
/* 1. lost dirty pages                                                       */
/* ======================================================================== */

/*
 * A slow write fault is parked at LEAF_INSTALL (mmu_lock held for read, the
 * dirty entry computed, not yet installed) while the VMM's dirty-log call
 * (classic GET / CLEAR / ring reset) runs on another thread and waits for
 * the lock. The write must appear in this round or the next; a write made
 * after the round returned must appear in the next round.
 */
static void slow_write_vs_round(enum log_mode mode)
{
	struct rig r;
	struct park_thread ta;
	struct vmm_thread vt = { 0 };
	const unsigned pg = 5, pq = 9;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct vt_op ops_a[] = { { VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_EXIT, 0, 0 },
				 { VT_OP_WRITE, gpa, 0xa2 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_b[] = { { VT_OP_WRITE, GPA0 + pq * PSZ, 0xb1 }, { VT_OP_END, 0, 0 } };
	uint64_t bm0, bm1, bm2;
	unsigned n;

	rig_create(&r, mode, GPAMM_MEM_LOG_DIRTY_PAGES);
	step("B dirties page %u (round 0 has something to report)", pq);
	CHECK_EQ(run_script(r.v[1], ops_b), GPAMM_EXIT_DONE);
	if (mode == LOG_MANUAL) {
		CHECK_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm0), 0);
		CHECK_EQ(bm0, 1ULL << pq);
	} else if (mode == LOG_RING) {
		bm0 = ring_harvest(&r, &n);
		CHECK_EQ(bm0, 1ULL << pq);
	}
	step("A write-faults page %u, parked at LEAF_INSTALL", pg);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_LEAF_INSTALL, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&ta, r.v[0], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_LEAF_INSTALL));
	step("the VMM's round starts on another thread");
	vt.vm = r.vm;
	vt.what = mode == LOG_CLASSIC ? VC_GET : mode == LOG_MANUAL ? VC_CLEAR : VC_RESET;
	vt.bm = 1ULL << pq; /* CLEAR: what GET reported */
	vmm_start(&vt);
	CHECK(wait_writer(r.vm));
	EXPECT_EQ(atomic_load(&vt.done), 0); /* it waits for the installer */
	step("release A");
	park_release(r.lot, GPAMM_PAUSE_LEAF_INSTALL);
	park_thread_join(&ta);
	pthread_join(vt.tid, NULL);
	CHECK_EQ(ta.reason, GPAMM_EXIT_REQUEST);
	CHECK(vt.ret >= 0);
	bm1 = mode == LOG_CLASSIC ? vt.bm : 0;
	step("next round must have page %u (written during the round)", pg);
	bm2 = log_round(&r);
	EXPECT((bm1 | bm2) & (1ULL << pg));
	EXPECT_EQ(((bm1 | bm2) >> pq) & 1, mode == LOG_CLASSIC ? 1 : 0);
	step("A writes page %u again after the round returned: next round has it", pg);
	CHECK_EQ(vt_run_once(r.v[0], 0), GPAMM_EXIT_DONE);
	EXPECT_EQ(*(uint64_t *)(r.mem + pg * PSZ), 0xa2);
	bm2 = log_round(&r);
	EXPECT(bm2 & (1ULL << pg));
	rig_destroy(&r);
}

ISOLATED_TEST(test_bp_slow_write_vs_classic_get) { slow_write_vs_round(LOG_CLASSIC); }
ISOLATED_TEST(test_bp_slow_write_vs_manual_clear) { slow_write_vs_round(LOG_MANUAL); }
ISOLATED_TEST(test_bp_slow_write_vs_ring_reset) { slow_write_vs_round(LOG_RING); }

/*
 * The fast path: page P mapped clean (read first, logging on), then A's
 * write takes the fast path and is parked at PAUSE_FAST (read lock held,
 * entry not yet read) while the round waits. Then: a write after the round
 * shows up in the next one -- on a vCPU (B) that had P in its TLB dirty.
 */
static void fast_write_vs_round(enum log_mode mode)
{
	struct rig r;
	struct park_thread ta;
	struct vmm_thread vt = { 0 };
	const unsigned pg = 7;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct vt_op rd[] = { { VT_OP_READ, gpa, 0 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_a[] = { { VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_b[] = { { VT_OP_WRITE, gpa + 8, 0xb1 }, { VT_OP_EXIT, 0, 0 },
				 { VT_OP_WRITE, gpa + 16, 0xb2 }, { VT_OP_END, 0, 0 } };
	uint64_t bm1 = 0, bm2;
	gpamm_pte_t e;

	rig_create(&r, mode, GPAMM_MEM_LOG_DIRTY_PAGES);
	CHECK_EQ(run_script(r.v[2], rd), GPAMM_EXIT_DONE);
	e = pte_of(r.vm, gpa);
	CHECK(e && !(e & WBITS));
	step("A's write to clean page %u parked on the fast path", pg);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAST, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&ta, r.v[0], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_FAST));
	vt.vm = r.vm;
	vt.what = mode == LOG_CLASSIC ? VC_GET : mode == LOG_MANUAL ? VC_CLEAR : VC_RESET;
	vt.bm = ~0ULL;
	vmm_start(&vt);
	CHECK(wait_writer(r.vm));
	park_release(r.lot, GPAMM_PAUSE_FAST);
	park_thread_join(&ta);
	pthread_join(vt.tid, NULL);
	CHECK_EQ(ta.reason, GPAMM_EXIT_DONE);
	CHECK(vt.ret >= 0);
	if (mode == LOG_CLASSIC)
		bm1 = vt.bm;
	if (mode == LOG_MANUAL)
		/* CLEAR of all ones ran after A's fast path: it cleared A's bit
		 * and write-protected P; A's write came before. Nothing lost if
		 * the VMM's GET before saw it; here the CLEAR was given ~0, so
		 * the page is simply clean now. */
		bm1 = 1ULL << pg;
	bm2 = log_round(&r);
	EXPECT((bm1 | bm2) & (1ULL << pg));
	step("B writes P (dirty in B's TLB afterwards), round, B writes again");
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	CHECK_EQ(vt_run_once(r.v[1], 0), GPAMM_EXIT_REQUEST);
	bm2 = log_round(&r);
	EXPECT(bm2 & (1ULL << pg));
	CHECK_EQ(vt_run_once(r.v[1], 0), GPAMM_EXIT_DONE);
	bm2 = log_round(&r);
	EXPECT(bm2 & (1ULL << pg));
	e = pte_of(r.vm, gpa);
	EXPECT(!(e & WBITS)); /* write-protected by the last round */
	rig_destroy(&r);
}

ISOLATED_TEST(test_bp_fast_write_vs_classic_get) { fast_write_vs_round(LOG_CLASSIC); }
ISOLATED_TEST(test_bp_fast_write_vs_manual_clear) { fast_write_vs_round(LOG_MANUAL); }
ISOLATED_TEST(test_bp_fast_write_vs_ring_reset) { fast_write_vs_round(LOG_RING); }

/*
 * Two write faults on one clean page at once (slow A parked at LEAF_INSTALL
 * with the leaf read, fast B makes it dirty meanwhile): exactly one entry
 * in the ring / one bit, and nothing left writable after the round.
 */
static void two_writers_one_page(enum log_mode mode)
{
	struct rig r;
	struct park_thread ta;
	const unsigned pg = 11;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct vt_op ops_a[] = { { VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_b[] = { { VT_OP_WRITE, gpa + 8, 0xb1 }, { VT_OP_END, 0, 0 } };
	struct vt_op rd[] = { { VT_OP_READ, gpa, 0 }, { VT_OP_END, 0, 0 } };
	uint64_t bm;
	unsigned n = 0;

	rig_create(&r, mode, GPAMM_MEM_LOG_DIRTY_PAGES);
	step("A write-faults unmapped page, parked at LEAF_INSTALL");
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_LEAF_INSTALL, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&ta, r.v[0], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_LEAF_INSTALL));
	step("C maps it clean, B writes it (fast path), both while A is parked");
	CHECK_EQ(run_script(r.v[2], rd), GPAMM_EXIT_DONE);
	CHECK_EQ(run_script(r.v[1], ops_b), GPAMM_EXIT_DONE);
	park_release(r.lot, GPAMM_PAUSE_LEAF_INSTALL);
	park_thread_join(&ta);
	CHECK_EQ(ta.reason, GPAMM_EXIT_DONE);
	if (mode == LOG_RING) {
		bm = ring_harvest(&r, &n);
		EXPECT_EQ(n, 1); /* one transition clean -> dirty, one entry */
		CHECK_EQ_INT(gpamm_vm_reset_dirty_rings(r.vm), n);
	} else {
		bm = log_round(&r);
	}
	EXPECT_EQ(bm, 1ULL << pg);
	EXPECT(!(pte_of(r.vm, gpa) & WBITS));
	rig_destroy(&r);
}

ISOLATED_TEST(test_bp_two_writers_one_page_classic) { two_writers_one_page(LOG_CLASSIC); }
ISOLATED_TEST(test_bp_two_writers_one_page_ring) { two_writers_one_page(LOG_RING); }

/* ======================================================================== */
/* 2. a fault racing a notifier invalidation                                  */
/* ======================================================================== */

/*
 * A fault pinned its page (parked at FAULT_PINNED), then a whole
 * invalidation (start + end) of that page ran: the fault must retry
 * (fault_retries), never install what it pinned before.
 */
ISOLATED_TEST(test_bp_pinned_fault_retries_after_invalidation)
{
	struct rig r;
	struct park_thread ta;
	const unsigned pg = 3;
	const uint64_t gpa = GPA0 + pg * PSZ, hva;
	struct vt_op ops_a[] = { { VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_END, 0, 0 } };
	struct gpamm_vm_stats st0, st1;

	(void)hva;
	rig_create(&r, LOG_CLASSIC, 0);
	gpamm_vm_stats(r.vm, &st0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAULT_PINNED, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&ta, r.v[0], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_FAULT_PINNED));
	step("invalidate start+end of the pinned page");
	park_host_invalidate_start(r.ph, r.hva + pg * PSZ + 100, r.hva + pg * PSZ + 101);
	park_host_invalidate_end(r.ph, r.hva + pg * PSZ + 100, r.hva + pg * PSZ + 101);
	park_release(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	park_thread_join(&ta);
	CHECK_EQ(ta.reason, GPAMM_EXIT_DONE);
	gpamm_vm_stats(r.vm, &st1);
	EXPECT(st1.fault_retries > st0.fault_retries);
	EXPECT_EQ(*(uint64_t *)(r.mem + pg * PSZ), 0xa1);
	rig_destroy(&r);
}

/*
 * An invalidation held open (start, no end): a fault of that page must
 * not install while it is open (it keeps retrying: get_page is called again
 * and again), and completes after the end. Forced by watching the parking
 * host's get_page count grow.
 */
ISOLATED_TEST(test_bp_open_invalidation_blocks_install)
{
	struct rig r;
	struct park_thread ta;
	const unsigned pg = 6;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct vt_op ops_a[] = { { VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_END, 0, 0 } };
	unsigned h0;
	bool looping = false;

	rig_create(&r, LOG_CLASSIC, 0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAULT_SEQ, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&ta, r.v[0], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_FAULT_SEQ));
	step("invalidation start (held open), then release the fault");
	park_host_invalidate_start(r.ph, r.hva + pg * PSZ, r.hva + (pg + 1) * PSZ);
	h0 = park_hits(r.lot, PARK_AT_GET);
	park_release(r.lot, GPAMM_PAUSE_FAULT_SEQ);
	for (unsigned i = 0; i < 10000 && !looping; i++) {
		looping = park_hits(r.lot, PARK_AT_GET) >= h0 + 5;
		if (!looping)
			usleep(1000);
	}
	EXPECT(looping);
	EXPECT_EQ(pte_of(r.vm, gpa), 0);
	step("end the invalidation");
	park_host_invalidate_end(r.ph, r.hva + pg * PSZ, r.hva + (pg + 1) * PSZ);
	park_thread_join(&ta);
	CHECK_EQ(ta.reason, GPAMM_EXIT_DONE);
	EXPECT(pte_of(r.vm, gpa) != 0);
	rig_destroy(&r);
}

/* ---- the sim host: mprotect / migrate while a fault holds its pin --------- */

struct sim_rig {
	struct gpamm_host *h;
	struct park_lot *lot;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v[2];
	uint64_t hva;
};

static void sim_rig_create(struct sim_rig *s)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 256, .checking = true };
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };

	memset(s, 0, sizeof(*s));
	s->h = gpamm_host_sim_create(&sc);
	CHECK(s->h);
	s->lot = park_lot_create();
	cfg.host = s->h;
	CHECK_EQ_INT(gpamm_vm_create(&cfg, &s->vm), 0);
	CHECK_EQ_INT(gpamm_vm_set_pause_hook(s->vm, park_pause_hook, s->lot), 0);
	for (unsigned i = 0; i < 2; i++)
		CHECK_EQ_INT(gpamm_vcpu_create(s->vm, i, &s->v[i]), 0);
	CHECK_EQ_INT(gpamm_sim_mmap(s->h, NPAGES * PSZ, 0, &s->hva), 0);
	CHECK_EQ_INT(gpamm_vm_set_memory_region(s->vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = GPA0, .memory_size = NPAGES * PSZ,
		.userspace_addr = s->hva }), 0);
}

static void sim_rig_destroy(struct sim_rig *s)
{
	struct gpamm_host_stats hs;

	gpamm_host_stats(s->h, &hs);
	EXPECT_EQ(hs.stale_accesses, 0);
	CHECK_EQ_INT(gpamm_vm_destroy(s->vm), 0);
	gpamm_host_stats(s->h, &hs);
	EXPECT_EQ(hs.pinned, 0);
	gpamm_host_destroy(s->h);
	park_lot_destroy(s->lot);
}

/*
 * A write fault pinned a writable page (parked at FAULT_PINNED); mprotect
 * makes it read-only on another thread and returns. The fault must retry,
 * and its write must fail (memory fault, -EFAULT), never map the page
 * writable after the mprotect returned.
 */
ISOLATED_TEST(test_bp_sim_mprotect_while_write_fault_pinned)
{
	struct sim_rig s;
	struct park_thread ta;
	struct vmm_thread vt = { 0 };
	const unsigned pg = 2;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct vt_op ops_a[] = { { VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_END, 0, 0 } };
	uint64_t val = 0x77;

	sim_rig_create(&s);
	CHECK_EQ_INT(gpamm_sim_write(s.h, s.hva + pg * PSZ, &val, 8), 0); /* present */
	CHECK_EQ_INT(gpamm_vcpu_set_guest(s.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(s.lot, GPAMM_PAUSE_FAULT_PINNED, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&ta, s.v[0], s.lot, 0), 0);
	CHECK(park_wait(s.lot, GPAMM_PAUSE_FAULT_PINNED));
	step("mprotect RO of the pinned page on another thread");
	vt.what = VC_SIM_MPROTECT_RO;
	vt.h = s.h;
	vt.hva = s.hva + pg * PSZ;
	vt.len = PSZ;
	vmm_start(&vt);
	pthread_join(vt.tid, NULL);
	CHECK_EQ_INT(vt.ret, 0);
	step("release the fault");
	park_release(s.lot, GPAMM_PAUSE_FAULT_PINNED);
	park_thread_join(&ta);
	EXPECT_EQ(ta.reason, GPAMM_EXIT_MEMORY_FAULT);
	EXPECT(!(pte_of(s.vm, gpa) & WBITS));
	CHECK_EQ_INT(gpamm_sim_read(s.h, s.hva + pg * PSZ, &val, 8), 0);
	EXPECT_EQ(val, 0x77);
	sim_rig_destroy(&s);
}

/*
 * Migration while a read fault holds its pin: the pinned page is skipped;
 * once mapped, a second migration moves it and the guest reads its data
 * through the new frame (checking host: no stale access).
 */
ISOLATED_TEST(test_bp_sim_migrate_while_fault_pinned)
{
	struct sim_rig s;
	struct park_thread ta;
	struct vmm_thread vt = { 0 };
	const unsigned pg = 4;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct vt_op ops_a[] = { { VT_OP_READ, gpa, 0 }, { VT_OP_EXIT, 0, 0 },
				 { VT_OP_READ, gpa, 0 }, { VT_OP_WRITE, gpa + 8, 0x99 },
				 { VT_OP_END, 0, 0 } };
	uint64_t val = 0x1234, v2 = 0;
	gpamm_pte_t e1, e2;

	sim_rig_create(&s);
	CHECK_EQ_INT(gpamm_sim_write(s.h, s.hva + pg * PSZ, &val, 8), 0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(s.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(s.lot, GPAMM_PAUSE_FAULT_PINNED, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&ta, s.v[0], s.lot, 0), 0);
	CHECK(park_wait(s.lot, GPAMM_PAUSE_FAULT_PINNED));
	vt.what = VC_SIM_MIGRATE;
	vt.h = s.h;
	vt.hva = s.hva + pg * PSZ;
	vt.len = PSZ;
	vmm_start(&vt);
	pthread_join(vt.tid, NULL);
	EXPECT(vt.ret == 0 || vt.ret == -ENOMEM); /* the pinned page stays */
	park_release(s.lot, GPAMM_PAUSE_FAULT_PINNED);
	park_thread_join(&ta);
	CHECK_EQ(ta.reason, GPAMM_EXIT_REQUEST);
	EXPECT_EQ(ops_a[0].val, 0x1234);
	e1 = pte_of(s.vm, gpa);
	CHECK(e1);
	step("migrate again: now it moves");
	EXPECT_EQ(gpamm_sim_migrate(s.h, s.hva + pg * PSZ, PSZ), 1);
	e2 = pte_of(s.vm, gpa);
	EXPECT(!e2 || gpamm_pte_pfn(e2, PS) != gpamm_pte_pfn(e1, PS));
	CHECK_EQ(vt_run_once(s.v[0], 0), GPAMM_EXIT_DONE);
	EXPECT_EQ(ops_a[2].val, 0x1234);
	CHECK_EQ_INT(gpamm_sim_read(s.h, s.hva + pg * PSZ + 8, &v2, 8), 0);
	EXPECT_EQ(v2, 0x99);
	sim_rig_destroy(&s);
}

/* ======================================================================== */
/* 3. a fault racing a memslot delete / move                                  */
/* ======================================================================== */

/*
 * A fast-path write (present clean page, logging on) parked at PAUSE_FAST
 * holds mmu_lock for read but is no RCU reader (it left guest mode): the
 * DELETE's first grace period passes, its flush waits for the lock. After
 * the release the DELETE returns, nothing maps the old range, and the next
 * access is MMIO.
 */
static void fast_fault_vs_slot_change(bool move)
{
	struct rig r;
	struct park_thread ta;
	struct vmm_thread vt = { 0 };
	const unsigned pg = 8;
	const uint64_t gpa = GPA0 + pg * PSZ, ngpa = 0x400000ULL;
	struct vt_op rd[] = { { VT_OP_READ, gpa, 0 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_a[] = { { VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_EXIT, 0, 0 },
				 { VT_OP_WRITE, gpa, 0xa2 }, { VT_OP_END, 0, 0 } };
	struct gpamm_vm_stats st0, st1;
	uint64_t bm = 0;

	rig_create(&r, LOG_CLASSIC, GPAMM_MEM_LOG_DIRTY_PAGES);
	CHECK_EQ(run_script(r.v[2], rd), GPAMM_EXIT_DONE);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAST, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&ta, r.v[0], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_FAST));
	step("%s the slot on another thread", move ? "MOVE" : "DELETE");
	vt.vm = r.vm;
	vt.what = VC_SETMEM;
	vt.r = (struct gpamm_userspace_memory_region){ .slot = 0,
		.flags = move ? GPAMM_MEM_LOG_DIRTY_PAGES : 0,
		.guest_phys_addr = move ? ngpa : GPA0, .memory_size = move ? NPAGES * PSZ : 0,
		.userspace_addr = r.hva };
	vmm_start(&vt);
	CHECK(wait_writer(r.vm));
	EXPECT_EQ(atomic_load(&vt.done), 0);
	park_release(r.lot, GPAMM_PAUSE_FAST);
	park_thread_join(&ta);
	pthread_join(vt.tid, NULL);
	CHECK_EQ_INT(vt.ret, 0);
	CHECK_EQ(ta.reason, GPAMM_EXIT_REQUEST);
	for (unsigned p = 0; p < NPAGES; p++)
		EXPECT_EQ(pte_of(r.vm, GPA0 + p * PSZ), 0);
	gpamm_vm_stats(r.vm, &st0);
	step("A's next write to the old GPA is MMIO");
	CHECK_EQ(vt_run_once(r.v[0], 0), GPAMM_EXIT_DONE);
	gpamm_vm_stats(r.vm, &st1);
	EXPECT_EQ(st1.mmio_exits, st0.mmio_exits + 1);
	EXPECT_EQ(*(uint64_t *)(r.mem + pg * PSZ), 0xa1);
	EXPECT_EQ(pte_of(r.vm, gpa), 0);
	if (move) {
		/* the write before the move is in the moved slot's log */
		CHECK_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
		EXPECT(bm & (1ULL << pg));
	}
	rig_destroy(&r);
}

ISOLATED_TEST(test_bp_fast_fault_vs_delete) { fast_fault_vs_slot_change(false); }
ISOLATED_TEST(test_bp_fast_fault_vs_move) { fast_fault_vs_slot_change(true); }

/*
 * A slow fault parked at TABLE_LINK (read lock, a new table about to be
 * linked) while a DELETE runs: the DELETE must not return before the fault
 * is done (it is an RCU reader), and after it nothing is mapped.
 */
ISOLATED_TEST(test_bp_table_link_vs_delete)
{
	struct rig r;
	struct park_thread ta;
	struct vmm_thread vt = { 0 };
	const unsigned pg = 1;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct vt_op ops_a[] = { { VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_END, 0, 0 } };

	rig_create(&r, LOG_CLASSIC, 0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_TABLE_LINK, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&ta, r.v[0], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_TABLE_LINK));
	vt.vm = r.vm;
	vt.what = VC_SETMEM;
	vt.r = (struct gpamm_userspace_memory_region){ .slot = 0, .guest_phys_addr = GPA0,
		.memory_size = 0, .userspace_addr = r.hva };
	vmm_start(&vt);
	usleep(50 * 1000); /* not an ordering device: only gives a wrong DELETE the chance to return */
	EXPECT_EQ(atomic_load(&vt.done), 0);
	park_release(r.lot, GPAMM_PAUSE_TABLE_LINK);
	park_thread_join(&ta);
	pthread_join(vt.tid, NULL);
	CHECK_EQ_INT(vt.ret, 0);
	EXPECT_EQ(ta.reason, GPAMM_EXIT_DONE);
	EXPECT_EQ(pte_of(r.vm, gpa), 0);
	rig_destroy(&r);
}

/* ======================================================================== */
/* 4. a table freed while a walker is inside it                               */
/* ======================================================================== */

/*
 * gpamm_vm_translate() parked at PAUSE_WALK inside the leaf table's parent
 * walk (directory entries read), while the slot is deleted on another
 * thread (the flush unlinks and frees the tables). The walker must read
 * either the old leaf or an empty one, never freed memory (ASan builds
 * report it), and after the delete returns nothing translates.
 */
static void walker_vs(bool delete_slot)
{
	struct rig r;
	struct vmm_thread wt = { 0 }, dt = { 0 };
	const unsigned pg = 12;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct vt_op ops[] = { { VT_OP_WRITE, gpa, 0x5 }, { VT_OP_END, 0, 0 } };

	rig_create(&r, LOG_CLASSIC, 0);
	CHECK_EQ(run_script(r.v[0], ops), GPAMM_EXIT_DONE);
	CHECK(pte_of(r.vm, gpa));
	park_arm(r.lot, GPAMM_PAUSE_WALK, gpa, 0);
	wt.vm = r.vm;
	wt.what = VC_TRANSLATE;
	wt.gpa = gpa;
	vmm_start(&wt);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_WALK));
	if (delete_slot) {
		step("DELETE while the walker is inside");
		dt.vm = r.vm;
		dt.what = VC_SETMEM;
		dt.r = (struct gpamm_userspace_memory_region){ .slot = 0, .guest_phys_addr = GPA0,
			.memory_size = 0, .userspace_addr = r.hva };
		vmm_start(&dt);
		usleep(50 * 1000); /* gives a wrong free the chance to happen */
	} else {
		step("the host's address space goes away while the walker is inside");
		gpamm_host_destroy(r.inner); /* the parking host forwards release */
		r.inner = NULL;
	}
	park_release(r.lot, GPAMM_PAUSE_WALK);
	pthread_join(wt.tid, NULL);
	EXPECT(wt.ret == 0 || wt.ret == -ENOENT);
	if (delete_slot) {
		pthread_join(dt.tid, NULL);
		CHECK_EQ_INT(dt.ret, 0);
	}
	EXPECT_EQ(pte_of(r.vm, gpa), 0);
	if (!r.inner) {
		/* rig_destroy destroys inner: keep a harmless stand-in */
		r.inner = gpamm_host_direct_create(PS);
	}
	rig_destroy(&r);
}

ISOLATED_TEST(test_bp_walker_vs_delete) { walker_vs(true); }
ISOLATED_TEST(test_bp_walker_vs_release) { walker_vs(false); }

/*
 * The vCPU's own hardware walk across table frees: a guest reads pages of
 * the slot in a loop while the VMM deletes and re-creates the slot many
 * times (each delete unlinks and RCU-frees the tables). Checks the data
 * and, in ASan builds, that no walk read a freed table. Seeded.
 */
struct churn_arg {
	atomic_int stop;
	_Atomic uint64_t reads, bad; /* both vCPUs count */
};

static int churn_guest(struct gpamm_vcpu *v, void *arg)
{
	struct churn_arg *a = arg;
	uint64_t s = tap_seed() | 1;

	while (!atomic_load(&a->stop)) {
		unsigned pg = (unsigned)(tap_xorshift(&s) % NPAGES);
		uint64_t x = gpamm_guest_read(v, GPA0 + pg * PSZ, 8);

		/* RAM holds pg + 1 in every page; MMIO (no slot) reads 0 */
		if (x != pg + 1 && x != 0)
			atomic_fetch_add_explicit(&a->bad, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&a->reads, 1, memory_order_relaxed);
	}
	return 0;
}

struct churn_thread { pthread_t tid; struct gpamm_vcpu *v; uint32_t reason; };
static void *churn_main(void *arg)
{
	struct churn_thread *t = arg;
	t->reason = vt_run_once(t->v, 0);
	return NULL;
}

ISOLATED_TEST(test_bp_hw_walk_vs_slot_churn)
{
	struct rig r;
	struct churn_arg a = { 0 };
	struct churn_thread ct[2];

	printf("# seed %llu\n", (unsigned long long)tap_seed());
	rig_create(&r, LOG_CLASSIC, 0);
	for (unsigned p = 0; p < NPAGES; p++)
		*(uint64_t *)(r.mem + p * PSZ) = p + 1;
	for (unsigned i = 0; i < 2; i++) {
		ct[i].v = r.v[i];
		CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[i], churn_guest, &a, 0), 0);
		CHECK_EQ_INT(pthread_create(&ct[i].tid, NULL, churn_main, &ct[i]), 0);
	}
	for (unsigned k = 0; k < 200; k++) {
		struct gpamm_userspace_memory_region m = { .slot = 0, .guest_phys_addr = GPA0,
			.memory_size = 0, .userspace_addr = r.hva };
		CHECK_EQ_INT(gpamm_vm_set_memory_region(r.vm, &m), 0);
		m.memory_size = NPAGES * PSZ;
		CHECK_EQ_INT(gpamm_vm_set_memory_region(r.vm, &m), 0);
	}
	atomic_store(&a.stop, 1);
	for (unsigned i = 0; i < 2; i++) {
		pthread_join(ct[i].tid, NULL);
		EXPECT_EQ(ct[i].reason, GPAMM_EXIT_DONE);
	}
	EXPECT_EQ(atomic_load(&a.bad), 0);
	printf("# %llu guest reads\n", (unsigned long long)atomic_load(&a.reads));
	rig_destroy(&r);
}

/* ======================================================================== */
/* 5. serialised and parallel mode, same scripted interleaving                */
/* ======================================================================== */

struct outcome {
	gpamm_pte_t pte[NPAGES];
	uint64_t bm[4];
	uint64_t mem[NPAGES];
	uint32_t reason_a;
};

/*
 * Script: A's write of P parked at FAULT_PINNED; B reads P and writes Q
 * (in the serial mode too: A holds no lock at PINNED); release A; C reads
 * everything; classic GET; A writes again.
 */
static void scripted(unsigned vm_flags, struct outcome *o)
{
	struct rig r;
	struct park_thread ta;
	const unsigned p = 20, q = 21;
	struct vt_op ops_a[] = { { VT_OP_WRITE, GPA0 + p * PSZ, 0xa1 }, { VT_OP_EXIT, 0, 0 },
				 { VT_OP_WRITE, GPA0 + p * PSZ + 8, 0xa2 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_b[] = { { VT_OP_READ, GPA0 + p * PSZ, 0 },
				 { VT_OP_WRITE, GPA0 + q * PSZ, 0xb1 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_c[NPAGES + 1];

	rig_create_flags(&r, LOG_CLASSIC, GPAMM_MEM_LOG_DIRTY_PAGES, vm_flags);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAULT_PINNED, GPA0 + p * PSZ, 0);
	CHECK_EQ_INT(park_thread_start(&ta, r.v[0], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_FAULT_PINNED));
	CHECK_EQ(run_script(r.v[1], ops_b), GPAMM_EXIT_DONE);
	park_release(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	park_thread_join(&ta);
	o->reason_a = ta.reason;
	for (unsigned i = 0; i < NPAGES; i++)
		ops_c[i] = (struct vt_op){ VT_OP_READ, GPA0 + i * PSZ, 0 };
	ops_c[NPAGES] = (struct vt_op){ VT_OP_END, 0, 0 };
	CHECK_EQ(run_script(r.v[2], ops_c), GPAMM_EXIT_DONE);
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &o->bm[0]), 0);
	CHECK_EQ(vt_run_once(r.v[0], 0), GPAMM_EXIT_DONE);
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &o->bm[1]), 0);
	for (unsigned i = 0; i < NPAGES; i++) {
		o->pte[i] = pte_of(r.vm, GPA0 + i * PSZ) & ~gpamm_pte_pfn_mask(PS);
		o->mem[i] = *(uint64_t *)(r.mem + i * PSZ);
	}
	rig_destroy(&r);
}

ISOLATED_TEST(test_bp_serial_vs_parallel_scripted)
{
	static struct outcome par, ser;

	scripted(0, &par);
	scripted(GPAMM_VM_SERIAL_FAULTS, &ser);
	EXPECT_EQ(par.reason_a, ser.reason_a);
	EXPECT_EQ(par.bm[0], ser.bm[0]);
	EXPECT_EQ(par.bm[1], ser.bm[1]);
	EXPECT_EQ(par.bm[0], (1ULL << 20) | (1ULL << 21));
	EXPECT_EQ(par.bm[1], 1ULL << 20);
	for (unsigned i = 0; i < NPAGES; i++) {
		EXPECT_EQ(par.pte[i], ser.pte[i]);
		EXPECT_EQ(par.mem[i], ser.mem[i]);
	}
}

/*
 * The same random sequence of single-vCPU operations (reads, writes, GET,
 * CLEAR, mark_idle, notifier invalidations) on a parallel and a serialised
 * VM, compared after every operation: entries (without the PFN), dirty
 * bitmaps, young counts. Seeded.
 */
struct twin {
	struct rig r;
};

static int64_t twin_op(struct rig *r, unsigned op, unsigned pg, uint64_t val, uint64_t *bm)
{
	struct vt_op s[2] = { { VT_OP_END, 0, 0 }, { VT_OP_END, 0, 0 } };
	uint64_t mask;

	*bm = 0;
	switch (op) {
	case 0: s[0] = (struct vt_op){ VT_OP_READ, GPA0 + pg * PSZ, 0 };
		CHECK_EQ(run_script(r->v[pg % 3], s), GPAMM_EXIT_DONE);
		return (int64_t)s[0].val;
	case 1: case 2: s[0] = (struct vt_op){ VT_OP_WRITE, GPA0 + pg * PSZ + 8 * (val % 8), val };
		CHECK_EQ(run_script(r->v[pg % 3], s), GPAMM_EXIT_DONE);
		return 0;
	case 3: return gpamm_vm_get_dirty_log(r->vm, 0, bm);
	case 4: mask = val;
		*bm = mask;
		return gpamm_vm_clear_dirty_log(r->vm, 0, 0, NPAGES, &mask);
	case 5: return gpamm_vm_mark_idle(r->vm, GPA0 + (pg & ~7u) * PSZ, 8 * PSZ);
	case 6: park_host_invalidate_start(r->ph, r->hva + pg * PSZ, r->hva + (pg + 1) * PSZ);
		park_host_invalidate_end(r->ph, r->hva + pg * PSZ, r->hva + (pg + 1) * PSZ);
		return 0;
	default: return gpamm_vm_test_young(r->vm, GPA0, NPAGES * PSZ, bm);
	}
}

static void twin_random(enum log_mode mode)
{
	static struct twin t[2];
	struct tap_rng rng;
	uint64_t seed = tap_seed();

	printf("# seed %llu (mode %d)\n", (unsigned long long)seed, mode);
	tap_rng_seed(&rng, seed);
	rig_create_flags(&t[0].r, mode, GPAMM_MEM_LOG_DIRTY_PAGES, 0);
	rig_create_flags(&t[1].r, mode, GPAMM_MEM_LOG_DIRTY_PAGES, GPAMM_VM_SERIAL_FAULTS);
	for (unsigned k = 0; k < 400; k++) {
		unsigned op = (unsigned)tap_below(&rng, 8), pg = (unsigned)tap_below(&rng, NPAGES);
		uint64_t val = tap_rand(&rng), bm[2];
		int64_t ret[2];

		if (mode == LOG_CLASSIC && op == 4)
			op = 3;
		step("op %u: %u page %u", k, op, pg);
		for (unsigned i = 0; i < 2; i++)
			ret[i] = twin_op(&t[i].r, op, pg, val, &bm[i]);
		EXPECT_EQ_INT(ret[0], ret[1]);
		EXPECT_EQ(bm[0], bm[1]);
		for (unsigned p = 0; p < NPAGES; p++)
			EXPECT_EQ(pte_of(t[0].r.vm, GPA0 + p * PSZ) & ~gpamm_pte_pfn_mask(PS),
				  pte_of(t[1].r.vm, GPA0 + p * PSZ) & ~gpamm_pte_pfn_mask(PS));
		if (iso_failed())
			break;
	}
	rig_destroy_live(&t[0].r, false);
	rig_destroy(&t[1].r);
}

ISOLATED_TEST(test_bp_serial_vs_parallel_random_classic) { twin_random(LOG_CLASSIC); }
ISOLATED_TEST(test_bp_serial_vs_parallel_random_manual) { twin_random(LOG_MANUAL); }

/* ======================================================================== */
/* 6. bad arguments                                                          */
/* ======================================================================== */

static bool is_doc_errno(int64_t r, const int *ok, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (r == ok[i])
			return true;
	return false;
}

/*
 * Every VMM-facing call with bad arguments: a documented negative errno,
 * and the VM unchanged (same entries, same slot, same bitmap).
 */
ISOLATED_TEST(test_bp_bad_args_every_call)
{
	struct rig r;
	const unsigned pg = 3;
	struct vt_op w[] = { { VT_OP_WRITE, GPA0 + pg * PSZ, 0x42 }, { VT_OP_END, 0, 0 } };
	uint64_t bm[4] = { 0 }, big[2] = { ~0ULL, ~0ULL };
	gpamm_pte_t before, e;
	struct gpamm_vcpu *vx;
	struct gpamm_userspace_memory_region m;
	const uint64_t U = UINT64_MAX;

	rig_create(&r, LOG_MANUAL, GPAMM_MEM_LOG_DIRTY_PAGES);
	CHECK_EQ(run_script(r.v[0], w), GPAMM_EXIT_DONE);
	before = pte_of(r.vm, GPA0 + pg * PSZ);
	CHECK(before & WBITS);

	step("memslots");
	struct { struct gpamm_userspace_memory_region m; int err; } ms[] = {
		{ { 0, 1u << 5, GPA0, NPAGES * PSZ, r.hva }, -EINVAL },          /* unknown flag */
		{ { GPAMM_USER_MEM_SLOTS, 0, 0x10000000, PSZ, r.hva }, -EINVAL }, /* slot id */
		{ { UINT32_MAX, 0, 0x10000000, PSZ, r.hva }, -EINVAL },
		{ { 1, 0, 0x10000000 + 1, PSZ, r.hva }, -EINVAL },              /* unaligned gpa */
		{ { 1, 0, 0x10000000, PSZ + 1, r.hva }, -EINVAL },              /* unaligned size */
		{ { 1, 0, 0x10000000, PSZ, r.hva + 1 }, -EINVAL },              /* unaligned hva */
		{ { 1, 0, U & ~(PSZ - 1), 2 * PSZ, r.hva }, -EINVAL },          /* gpa wraps */
		{ { 1, 0, 0x10000000, 2 * PSZ, U & ~(PSZ - 1) }, -EINVAL },     /* hva wraps */
		{ { 1, 0, 0x10000000, (GPAMM_MEM_MAX_NR_PAGES + 1) * PSZ, PSZ }, -EINVAL },
		{ { 1, 0, 1ULL << 50, PSZ, r.hva }, -EFAULT },                   /* beyond space */
		{ { 1, 0, GPA0 + PSZ, PSZ, r.hva }, -EEXIST },                  /* overlap */
		{ { 2, 0, 0, 0, 0 }, -EINVAL },                                  /* delete missing */
		{ { 0, GPAMM_MEM_LOG_DIRTY_PAGES, GPA0, 2 * NPAGES * PSZ, r.hva }, -EINVAL }, /* size */
		{ { 0, GPAMM_MEM_LOG_DIRTY_PAGES, GPA0, NPAGES * PSZ, r.hva + PSZ }, -EINVAL }, /* hva */
		{ { 0, GPAMM_MEM_LOG_DIRTY_PAGES | GPAMM_MEM_READONLY, GPA0, NPAGES * PSZ, r.hva },
		  -EINVAL },                                                     /* RO change */
	};
	for (unsigned i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
		step("memslot case %u", i);
		EXPECT_EQ_INT(gpamm_vm_set_memory_region(r.vm, &ms[i].m), ms[i].err);
	}
	EXPECT_EQ_INT(gpamm_vm_set_memory_region(r.vm, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_set_memory_region(NULL, &ms[0].m), -EINVAL);
	EXPECT_EQ(pte_of(r.vm, GPA0 + pg * PSZ), before);

	step("dirty log");
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, GPAMM_USER_MEM_SLOTS, bm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, UINT32_MAX, bm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(NULL, 0, bm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 5, bm), -ENOENT);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 1, 63, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 0, 65, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 64, 64, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 0, U, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, U & ~63ULL, 64, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 0, 64, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 7, 1, 64, big), -EINVAL); /* align first */
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 7, 0, 64, big), -ENOENT);
	EXPECT_EQ_INT(gpamm_vm_reset_dirty_rings(r.vm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_reset_dirty_rings(NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_enable_dirty_ring(r.vm, 100), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_enable_dirty_ring(r.vm, 1u << 20), -E2BIG);
	EXPECT_EQ_INT(gpamm_vm_enable_dirty_ring(r.vm, 256), -EINVAL); /* vCPUs exist */
	EXPECT_EQ_INT(gpamm_vm_enable_dirty_ring(NULL, 256), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(r.vm, 4), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(r.vm, GPAMM_DIRTY_LOG_INITIALLY_SET),
		      -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(NULL, 0), -EINVAL);
	EXPECT_EQ(pte_of(r.vm, GPA0 + pg * PSZ), before); /* still writable: nothing cleared */
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, bm), 0);
	EXPECT_EQ(bm[0], 1ULL << pg);

	step("access tracking");
	const int tr_ok[] = { -EINVAL };
	int64_t tr[] = {
		gpamm_vm_mark_idle(r.vm, GPA0, 0), gpamm_vm_mark_idle(r.vm, GPA0 + 1, PSZ),
		gpamm_vm_mark_idle(r.vm, GPA0, PSZ + 1), gpamm_vm_mark_idle(r.vm, U & ~(PSZ - 1), 2 * PSZ),
		gpamm_vm_mark_idle(r.vm, 0, 1ULL << 50), gpamm_vm_mark_idle(NULL, GPA0, PSZ),
		gpamm_vm_test_young(r.vm, GPA0, 0, NULL), gpamm_vm_test_young(r.vm, 1, PSZ, NULL),
		gpamm_vm_test_young(r.vm, U & ~(PSZ - 1), 2 * PSZ, bm),
		gpamm_vm_test_young(NULL, GPA0, PSZ, bm),
	};
	for (unsigned i = 0; i < sizeof(tr) / sizeof(tr[0]); i++) {
		step("tracking case %u: %lld", i, (long long)tr[i]);
		EXPECT(is_doc_errno(tr[i], tr_ok, 1));
	}
	EXPECT_EQ(pte_of(r.vm, GPA0 + pg * PSZ), before);

	step("translate");
	EXPECT_EQ_INT(gpamm_vm_translate(NULL, GPA0, &e, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_translate(r.vm, U, &e, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_translate(r.vm, 1ULL << 50, NULL, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_translate(r.vm, GPA0 + pg * PSZ + 5, NULL, NULL), 0);

	step("vCPUs");
	EXPECT_EQ_INT(gpamm_vcpu_create(r.vm, 64, &vx), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_create(r.vm, UINT32_MAX, &vx), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_create(r.vm, 1, &vx), -EEXIST);
	EXPECT_EQ_INT(gpamm_vcpu_create(r.vm, 5, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_create(NULL, 5, &vx), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_set_guest(NULL, vt_guest_script, w, 0), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], NULL, w, 0), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, w, SIZE_MAX), -ENOMEM);
	EXPECT_EQ_INT(gpamm_vcpu_run(NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_run(r.v[2]), -EINVAL); /* no program */
	EXPECT_EQ_INT(gpamm_vm_set_pause_hook(NULL, NULL, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_inject(NULL, 0), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_inject(r.vm, 1u << 9), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_mmu_lock_state(NULL, NULL, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_destroy(NULL), 0);

	step("VM create");
	struct gpamm_vm *vm2;
	struct gpamm_vm_config bad[] = {
		{ .page_shift = 13, .host = r.ph }, { .page_shift = PS, .levels = 9, .host = r.ph },
		{ .page_shift = PS }, { .page_shift = 14, .host = r.ph },
		{ .page_shift = PS, .host = r.ph, .max_vcpus = 257 },
		{ .page_shift = PS, .host = r.ph, .flags = 1u << 7 },
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		EXPECT_EQ_INT(gpamm_vm_create(&bad[i], &vm2), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_create(NULL, &vm2), -EINVAL);

	step("state unchanged");
	EXPECT_EQ(pte_of(r.vm, GPA0 + pg * PSZ), before);
	m = (struct gpamm_userspace_memory_region){ 0 };
	(void)m;
	rig_destroy(&r);
}

/*
 * Calls on a dead VM (its host's address space gone): every one -EIO or
 * its documented answer; nothing crashes; destroy works.
 */
ISOLATED_TEST(test_bp_dead_vm_calls)
{
	struct rig r;
	struct vt_op w[] = { { VT_OP_WRITE, GPA0, 1 }, { VT_OP_END, 0, 0 } };
	uint64_t bm[2];

	rig_create(&r, LOG_CLASSIC, GPAMM_MEM_LOG_DIRTY_PAGES);
	CHECK_EQ(run_script(r.v[0], w), GPAMM_EXIT_DONE);
	gpamm_host_destroy(r.inner);
	r.inner = gpamm_host_direct_create(PS); /* stand-in for rig_destroy */
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, bm), -EIO);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 0, 64, bm), -EIO);
	EXPECT_EQ_INT(gpamm_vm_mark_idle(r.vm, GPA0, PSZ), -EIO);
	EXPECT_EQ_INT(gpamm_vm_test_young(r.vm, GPA0, PSZ, NULL), -EIO);
	EXPECT_EQ_INT(gpamm_vm_set_memory_region(r.vm, &(struct gpamm_userspace_memory_region){
		.slot = 1, .guest_phys_addr = 0x800000, .memory_size = PSZ, .userspace_addr = r.hva }),
		-EIO);
	EXPECT_EQ_INT(gpamm_vm_translate(r.vm, GPA0, NULL, NULL), -ENOENT);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, w, 0), 0);
	EXPECT_EQ_INT(gpamm_vcpu_run(r.v[0]), -EIO);
	gpamm_vm_flush_remote_tlbs(r.vm);
	rig_destroy(&r);
}

/*
 * DEFECT (bad VMM input aborts / wedges the vCPU): the ring is memory the
 * VMM writes. If it marks RESET on entries the vCPU never pushed (flags 0:
 * nothing harvested there), gpamm_vm_reset_dirty_rings() walks past the
 * push index (src/dirty.c ring_reset(), the loop at lines 272-293 stops
 * only at an entry without RESET; it is never bounded by r->push) and sets
 * r->reset beyond r->push (line 296). From then on push - reset wraps
 * (uint32_t): gpamm_dirty_ring_soft_full() is true forever, so every
 * gpamm_vcpu_run() returns GPAMM_EXIT_DIRTY_RING_FULL and no reset can
 * help (the entries are 0 now); and a vCPU that was inside guest mode and
 * faults next hits GPAMM_BUG_ON(push - reset >= size) in
 * gpamm_mark_page_dirty() (src/memslot.c:132): abort() in debug/ASan
 * builds. DESIGN.md contract 5: nothing aborts on bad input from the VMM,
 * and an error leaves the VM as it was. Expected: the reset ignores (or
 * refuses with -EINVAL) entries at or past the push index, and the vCPU
 * keeps running and logging.
 */
ISOLATED_TEST(test_bp_ring_reset_past_push)
{
	struct rig r;
	struct vt_op w1[] = { { VT_OP_WRITE, GPA0, 1 }, { VT_OP_END, 0, 0 } };
	struct vt_op w2[] = { { VT_OP_WRITE, GPA0 + PSZ, 2 }, { VT_OP_END, 0, 0 } };
	struct gpamm_dirty_gfn *ring;
	uint32_t size;
	int64_t n;
	uint64_t bm;
	unsigned cnt;

	rig_create(&r, LOG_RING, GPAMM_MEM_LOG_DIRTY_PAGES);
	CHECK_EQ(run_script(r.v[0], w1), GPAMM_EXIT_DONE);
	ring = gpamm_vcpu_dirty_ring(r.v[0], &size);
	CHECK(ring);
	CHECK_EQ(size, 128);
	step("VMM marks entry 0 (pushed) and entries 1..3 (never pushed) RESET");
	for (unsigned i = 0; i < 4; i++)
		__atomic_store_n(&ring[i].flags, (i ? 0 : GPAMM_DIRTY_GFN_F_DIRTY) |
				 GPAMM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
	n = gpamm_vm_reset_dirty_rings(r.vm);
	printf("# reset returned %lld (1 entry was pushed)\n", (long long)n);
	EXPECT(n == 1 || n == -EINVAL);
	step("the vCPU must still run and log");
	EXPECT_EQ(run_script(r.v[0], w2), GPAMM_EXIT_DONE);
	r.harvested[0] = n == 1 ? 1 : 0;
	bm = ring_harvest(&r, &cnt);
	EXPECT(bm & 2);
	rig_destroy(&r);
}

/*
 * DEFECT, same root cause, the abort: the vCPU is inside gpamm_vcpu_run()
 * (its write fault parked at FAULT_SEQ, so the run-entry soft-full check
 * is behind it) when the VMM's bogus reset moves r->reset past r->push;
 * the fault then logs its page: gpamm_mark_page_dirty() finds
 * push - reset >= size and GPAMM_BUG_ON (src/memslot.c:132) aborts the
 * process in debug and sanitizer builds (-DGPAMM_DEBUG=1); in the default
 * build it prints "gpamm: WARNING at src/memslot.c:132", writes the entry
 * anyway, and the run ends with GPAMM_EXIT_DIRTY_RING_FULL instead of the
 * guest finishing -- wedged as above.
 */
ISOLATED_TEST(test_bp_ring_reset_past_push_mid_fault)
{
	struct rig r;
	struct park_thread ta;
	struct vt_op w1[] = { { VT_OP_WRITE, GPA0, 1 }, { VT_OP_END, 0, 0 } };
	struct vt_op w2[] = { { VT_OP_WRITE, GPA0 + PSZ, 2 }, { VT_OP_END, 0, 0 } };
	struct gpamm_dirty_gfn *ring;
	uint32_t size;

	rig_create(&r, LOG_RING, GPAMM_MEM_LOG_DIRTY_PAGES);
	CHECK_EQ(run_script(r.v[0], w1), GPAMM_EXIT_DONE);
	ring = gpamm_vcpu_dirty_ring(r.v[0], &size);
	CHECK(ring);
	step("vCPU write-faults page 1, parked at FAULT_SEQ");
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, w2, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAULT_SEQ, GPA0 + PSZ, 0);
	CHECK_EQ_INT(park_thread_start(&ta, r.v[0], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_FAULT_SEQ));
	step("VMM marks entries 0..3 RESET (1..3 never pushed) and resets");
	for (unsigned i = 0; i < 4; i++)
		__atomic_store_n(&ring[i].flags, (i ? 0 : GPAMM_DIRTY_GFN_F_DIRTY) |
				 GPAMM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
	(void)gpamm_vm_reset_dirty_rings(r.vm);
	step("release the fault: it logs page 1 (BUG_ON here aborts the child)");
	park_release(r.lot, GPAMM_PAUSE_FAULT_SEQ);
	park_thread_join(&ta);
	EXPECT_EQ(ta.reason, GPAMM_EXIT_DONE);
	rig_destroy(&r);
}

/*
 * DEFECT (NULL vCPU crashes): the vCPU calls that do not return an errno
 * dereference a NULL vCPU (SIGSEGV each; UBSan names the lines:
 * gpamm_vcpu_kick() src/vcpu.c:1129, gpamm_vcpu_dirty_ring() src/dirty.c:256,
 * gpamm_vcpu_id() src/vcpu.c:1134, gpamm_vcpu_vm() src/vcpu.c:1139) while their neighbours
 * (gpamm_vcpu_run, gpamm_vcpu_set_guest) check for NULL and return
 * -EINVAL. DESIGN.md contract 5: "Nothing aborts on bad input from the
 * VMM". Each is tried in a child of its own here; the test fails on the
 * first one that crashes.
 */
static void try_in_child(const char *what, void (*fn)(void))
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		fn();
		_exit(0);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		printf("# %s: crashed (signal %d)\n", what, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		ck_failed(false, __FILE__, __LINE__, what, "crashes on NULL instead of ignoring it");
	}
}

static void null_kick(void) { gpamm_vcpu_kick(NULL); }
static void null_ring(void) { uint32_t n; (void)gpamm_vcpu_dirty_ring(NULL, &n); }
static void null_id(void) { (void)gpamm_vcpu_id(NULL); }
static void null_vcpu_vm(void) { (void)gpamm_vcpu_vm(NULL); }

ISOLATED_TEST(test_bp_null_vcpu_calls)
{
	try_in_child("gpamm_vcpu_kick(NULL)", null_kick);
	try_in_child("gpamm_vcpu_dirty_ring(NULL)", null_ring);
	try_in_child("gpamm_vcpu_id(NULL)", null_id);
	try_in_child("gpamm_vcpu_vm(NULL)", null_vcpu_vm);
}

/*
 * DEFECT (NULL VM crashes): gpamm_vm_stats(NULL, &st),
 * gpamm_vm_flush_remote_tlbs(NULL) and gpamm_vm_host(NULL) dereference the
 * VM (SIGSEGV; src/vm.c:179, src/vcpu.c:135, src/vm.c:173), while every other gpamm_vm_* call returns -EINVAL
 * for it (and gpamm_vm_destroy(NULL) is documented as 0).
 */
static void null_stats(void) { struct gpamm_vm_stats st; gpamm_vm_stats(NULL, &st); }
static void null_flush(void) { gpamm_vm_flush_remote_tlbs(NULL); }
static void null_host(void) { (void)gpamm_vm_host(NULL); }

ISOLATED_TEST(test_bp_null_vm_calls)
{
	try_in_child("gpamm_vm_stats(NULL, &st)", null_stats);
	try_in_child("gpamm_vm_flush_remote_tlbs(NULL)", null_flush);
	try_in_child("gpamm_vm_host(NULL)", null_host);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_bp_slow_write_vs_classic_get);
	TEST(test_bp_slow_write_vs_manual_clear);
	TEST(test_bp_slow_write_vs_ring_reset);
	TEST(test_bp_fast_write_vs_classic_get);
	TEST(test_bp_fast_write_vs_manual_clear);
	TEST(test_bp_fast_write_vs_ring_reset);
	TEST(test_bp_two_writers_one_page_classic);
	TEST(test_bp_two_writers_one_page_ring);
	TEST(test_bp_pinned_fault_retries_after_invalidation);
	TEST(test_bp_open_invalidation_blocks_install);
	TEST(test_bp_sim_mprotect_while_write_fault_pinned);
	TEST(test_bp_sim_migrate_while_fault_pinned);
	TEST(test_bp_fast_fault_vs_delete);
	TEST(test_bp_fast_fault_vs_move);
	TEST(test_bp_table_link_vs_delete);
	TEST(test_bp_walker_vs_delete);
	TEST(test_bp_walker_vs_release);
	TEST(test_bp_hw_walk_vs_slot_churn);
	TEST(test_bp_serial_vs_parallel_scripted);
	TEST(test_bp_serial_vs_parallel_random_classic);
	TEST(test_bp_serial_vs_parallel_random_manual);
	TEST(test_bp_bad_args_every_call);
	TEST(test_bp_dead_vm_calls);
	TEST(test_bp_ring_reset_past_push);
	TEST(test_bp_ring_reset_past_push_mid_fault);
	TEST(test_bp_null_vcpu_calls);
	TEST(test_bp_null_vm_calls);
	return tap_done();
}
