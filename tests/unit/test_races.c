// SPDX-License-Identifier: MIT
/*
 * Races of the slow fault path against other vCPUs, the dirty log and the
 * MMU notifier, each interleaving forced with the parking lot (park.h);
 * nothing here depends on timing.
 *
 * Lost dirty write (once per dirty-log mode): vCPU B read-faults page P and
 * is parked inside the host's get_page; vCPU A write-faults P (dirty entry,
 * P logged, A's TLB caches P writable) and leaves keeping its TLB. B's slow
 * path then finishes. It must not overwrite A's dirty entry with a clean
 * one: if it does, the next dirty-log round finds nothing to write-protect,
 * skips the remote flush, A's next write goes through its stale writable
 * TLB entry, and the round after that misses P.
 *
 * Flush rule: GET, CLEAR and ring reset flush TLBs whenever they cleared a
 * reported bit or reset an entry, whether or not an entry changed; they do
 * not flush when they cleared nothing, and manual-protect GET never does.
 *
 * Invalidation ranges: a fault whose page overlaps a byte range being
 * invalidated (start called, end not yet) must retry and install nothing
 * until the end; a page outside the range (exclusive end) must not wait.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "harness/park.h"
#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define GPA0 0x100000ULL
#define NPAGES 16
#define WBITS GPAMM_PTE_WRITEABLE /* DIRTY | WRITE: 0x102 */
#define LOW12(e) ((unsigned long long)((e) & 0xfffULL))


/* ---- scripted guests ------------------------------------------------------ */






/* ---- a VM over the direct host inside a parking host ---------------------- */

enum log_mode { LOG_CLASSIC, LOG_MANUAL, LOG_RING };

static const char *const mode_name[] = { "classic", "manual", "ring" };

struct rig {
	struct park_lot *lot;
	struct gpamm_host *inner, *ph;
	struct gpamm_vm *vm;
	uint8_t *mem;
	uint64_t hva;
	struct gpamm_vcpu *v[2];
	unsigned nvcpus;
	enum log_mode mode;
	uint64_t harvested[2]; /* ring mode: next entry to harvest, per vCPU */
};

static void rig_create(struct rig *r, enum log_mode mode, unsigned manual_flags,
		       uint32_t slot_flags, unsigned nvcpus)
{
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };

	memset(r, 0, sizeof(*r));
	r->mode = mode;
	r->nvcpus = nvcpus;
	r->lot = park_lot_create();
	r->inner = gpamm_host_direct_create(PS);
	ASSERT(r->inner);
	r->ph = park_host_create(r->inner, r->lot);
	cfg.host = r->ph;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &r->vm), 0);
	ASSERT_EQ_INT(gpamm_vm_set_pause_hook(r->vm, park_pause_hook, r->lot), 0);
	if (mode == LOG_MANUAL)
		ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(r->vm, manual_flags), 0);
	if (mode == LOG_RING)
		ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(r->vm, 128), 0);
	for (unsigned i = 0; i < nvcpus; i++)
		ASSERT_EQ_INT(gpamm_vcpu_create(r->vm, i, &r->v[i]), 0);
	r->mem = vt_alloc(NPAGES * PSZ, PS);
	ASSERT(r->mem);
	r->hva = (uintptr_t)r->mem;
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(r->vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .flags = slot_flags, .guest_phys_addr = GPA0,
		.memory_size = NPAGES * PSZ, .userspace_addr = r->hva }), 0);
}

static void rig_destroy(struct rig *r)
{
	gpamm_vm_destroy(r->vm);
	gpamm_host_destroy(r->ph);
	gpamm_host_destroy(r->inner);
	vt_free(r->mem, NPAGES * PSZ);
	park_lot_destroy(r->lot);
}

static uint64_t flushes(struct gpamm_vm *vm)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(vm, &st);
	return st.remote_flushes;
}

/* Ring mode: collect every DIRTY entry of every ring, mark it RESET. */
static uint64_t ring_harvest(struct rig *r, unsigned *count)
{
	uint64_t bm = 0, foreign = 0, n = 0;

	for (unsigned i = 0; i < r->nvcpus; i++)
		n += vt_ring_harvest(r->v[i], &r->harvested[i], 0, NPAGES, &bm, &foreign);
	ASSERT_EQ(foreign, 0);
	*count = (unsigned)n;
	return bm;
}

/* One dirty-log round as a VMM does it; returns the pages it reported. */
static uint64_t log_round(struct rig *r)
{
	uint64_t bm = 0;
	unsigned n;

	switch (r->mode) {
	case LOG_CLASSIC:
		ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r->vm, 0, &bm), 0);
		break;
	case LOG_MANUAL:
		ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r->vm, 0, &bm), 0);
		ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(r->vm, 0, 0, NPAGES, &bm), 0);
		break;
	case LOG_RING:
		bm = ring_harvest(r, &n);
		ASSERT_EQ_INT(gpamm_vm_reset_dirty_rings(r->vm), n);
		break;
	}
	return bm;
}

/* ---- a) the lost dirty write ---------------------------------------------- */

static void lost_dirty_write(enum log_mode mode)
{
	const unsigned pg = 3;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct rig r;
	struct park_thread tb;
	gpamm_pte_t ea = 0, eb = 0;
	uint64_t bm1, bm2, word;
	uint32_t reason;
	bool parked, reported;
	int ret;
	unsigned manual = mode == LOG_MANUAL ? GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE : 0;
	struct vt_op ops_a[] = {
		{ VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_EXIT, 0, 0 }, { VT_OP_WRITE, gpa, 0xa2 }, { VT_OP_END, 0, 0 },
	};
	struct vt_op ops_b[] = { { VT_OP_READ, gpa, 0 }, { VT_OP_END, 0, 0 } };

	rig_create(&r, mode, manual, GPAMM_MEM_LOG_DIRTY_PAGES, 2);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);

	/* B read-faults P and stops inside get_page, P pinned, no lock held */
	park_arm(r.lot, PARK_AT_GET, r.hva + pg * PSZ, 0);
	ASSERT_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0), 0);
	parked = park_wait(r.lot, PARK_AT_GET);
	if (!parked) {
		park_abort(r.lot);
		park_thread_join(&tb);
	}
	ASSERT_MSG(parked, "vCPU B never reached get_page for P");

	/* A write-faults P: dirty entry, P logged, its TLB holds P writable */
	reason = vt_run_once(r.v[0], 0);
	ret = gpamm_vm_translate(r.vm, gpa, &ea, NULL);

	/* B's slow path goes on and finishes over A's entry */
	park_release(r.lot, PARK_AT_GET);
	park_thread_join(&tb);
	ASSERT_EQ(reason, GPAMM_EXIT_REQUEST);
	ASSERT_EQ(tb.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ_INT(ret, 0);
	ASSERT_EQ(LOW12(ea), 0x393);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, gpa, &eb, NULL), 0);
	tap_diag("%s: P after A's write fault 0x%llx, after B's read fault 0x%llx",
		 mode_name[mode], LOW12(ea), LOW12(eb));
	CHECK_MSG((eb & WBITS) == WBITS,
		  "%s: B's read fault, finding P already mapped dirty by A, left it 0x%llx "
		  "(low bits): the young/dirty state A installed was lost",
		  mode_name[mode], LOW12(eb));
	ASSERT_EQ(gpamm_pte_pfn(eb, PS), (r.hva + pg * PSZ) >> PS);

	/* round 1: reports P (A's write fault logged it) and must re-protect it */
	bm1 = log_round(&r);
	tap_diag("%s: round 1 reported 0x%llx", mode_name[mode], (unsigned long long)bm1);
	CHECK_MSG(bm1 & (1ULL << pg), "%s: round 1 did not report P (A's write fault)",
		  mode_name[mode]);

	/* A writes P again, through its TLB if nobody flushed it */
	reason = vt_run_once(r.v[0], 0);
	ASSERT_EQ(reason, GPAMM_EXIT_DONE);
	memcpy(&word, r.mem + pg * PSZ, 8);
	ASSERT_EQ(word, 0xa2);

	bm2 = log_round(&r);
	reported = bm2 & (1ULL << pg);
	rig_destroy(&r);
	ASSERT_MSG(reported,
		   "%s: A's write to P after round 1 is missing from round 2 (reported 0x%llx): "
		   "lost dirty write",
		   mode_name[mode], (unsigned long long)bm2);
}

static void test_lost_dirty_write_classic(void)
{
	lost_dirty_write(LOG_CLASSIC);
}

static void test_lost_dirty_write_manual(void)
{
	lost_dirty_write(LOG_MANUAL);
}

static void test_lost_dirty_write_ring(void)
{
	lost_dirty_write(LOG_RING);
}

/* ---- b) when GET, CLEAR and ring reset flush ------------------------------ */

/* Guest: one access of each of pages [first, first + n) of the slot. */
static void touch(struct rig *r, unsigned first, unsigned n, bool write)
{
	struct vt_op ops[NPAGES + 1];

	memset(ops, 0, sizeof(ops));
	for (unsigned i = 0; i < n; i++)
		ops[i] = (struct vt_op){ write ? VT_OP_WRITE : VT_OP_READ, GPA0 + (first + i) * PSZ, 0x77 };
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r->v[0], vt_guest_script, ops, 0), 0);
	ASSERT_EQ(vt_run_once(r->v[0], 0), GPAMM_EXIT_DONE);
}

/* The host takes page @pg away (start and end): no translation left. */
static void host_unmap_page(struct rig *r, unsigned pg)
{
	park_host_invalidate_start(r->ph, r->hva + pg * PSZ, r->hva + (pg + 1) * PSZ);
	park_host_invalidate_end(r->ph, r->hva + pg * PSZ, r->hva + (pg + 1) * PSZ);
	ASSERT_EQ_INT(gpamm_vm_translate(r->vm, GPA0 + pg * PSZ, NULL, NULL), -ENOENT);
}

static void test_flush_manual_initially_set_clear(void)
{
	struct rig r;
	uint64_t bm = 0, f0, f1, f2;

	rig_create(&r, LOG_MANUAL,
		   GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | GPAMM_DIRTY_LOG_INITIALLY_SET,
		   GPAMM_MEM_LOG_DIRTY_PAGES, 1);
	f0 = flushes(r.vm);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	f1 = flushes(r.vm);
	ASSERT_EQ(bm, (1ULL << NPAGES) - 1); /* every bit, no page ever mapped */
	ASSERT_EQ(f1 - f0, 0);               /* manual GET only reports */
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 0, NPAGES, &bm), 0);
	f2 = flushes(r.vm);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	rig_destroy(&r);
	ASSERT_EQ(bm, 0);
	ASSERT_MSG(f2 - f1 >= 1,
		   "CLEAR of %u reported bits (pages never mapped) made %llu remote flushes; "
		   "it cleared reported bits, so it must flush",
		   NPAGES, (unsigned long long)(f2 - f1));
}

static void test_flush_manual_get_never(void)
{
	struct rig r;
	uint64_t bm = 0, f0, f1, f2;

	rig_create(&r, LOG_MANUAL, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
		   GPAMM_MEM_LOG_DIRTY_PAGES, 1);
	touch(&r, 0, 4, true);
	f0 = flushes(r.vm);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	f1 = flushes(r.vm);
	ASSERT_EQ(bm, 0xf);
	ASSERT_EQ(f1 - f0, 0);
	/* and the CLEAR of those mapped dirty pages does flush */
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 0, NPAGES, &bm), 0);
	f2 = flushes(r.vm);
	ASSERT_GE(f2 - f1, 1);
	rig_destroy(&r);
}

static void test_flush_classic_get_zero(void)
{
	struct rig r;
	uint64_t bm = ~0ULL, f0, f1, f2;

	rig_create(&r, LOG_CLASSIC, 0, GPAMM_MEM_LOG_DIRTY_PAGES, 1);
	touch(&r, 0, 4, false); /* mapped clean: nothing logged */
	f0 = flushes(r.vm);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	f1 = flushes(r.vm);
	ASSERT_EQ(bm, 0);
	ASSERT_EQ(f1 - f0, 0);
	/* a reported, mapped dirty page is re-protected and flushed */
	touch(&r, 0, 1, true);
	f1 = flushes(r.vm);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	f2 = flushes(r.vm);
	ASSERT_EQ(bm, 1);
	ASSERT_GE(f2 - f1, 1);
	rig_destroy(&r);
}

static void test_flush_classic_get_unmapped(void)
{
	struct rig r;
	uint64_t bm = 0, f0, f1;

	rig_create(&r, LOG_CLASSIC, 0, GPAMM_MEM_LOG_DIRTY_PAGES, 1);
	touch(&r, 0, 1, true); /* page 0 logged ... */
	host_unmap_page(&r, 0); /* ... and no longer mapped */
	f0 = flushes(r.vm);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	f1 = flushes(r.vm);
	rig_destroy(&r);
	ASSERT_EQ(bm, 1);
	ASSERT_MSG(f1 - f0 >= 1,
		   "classic GET cleared a reported bit (page no longer mapped) and made "
		   "%llu remote flushes; it must flush",
		   (unsigned long long)(f1 - f0));
}

static void test_flush_ring_reset_zero(void)
{
	struct rig r;
	uint64_t f0, f1;

	rig_create(&r, LOG_RING, 0, GPAMM_MEM_LOG_DIRTY_PAGES, 1);
	touch(&r, 0, 4, false); /* mapped clean: nothing pushed */
	f0 = flushes(r.vm);
	ASSERT_EQ_INT(gpamm_vm_reset_dirty_rings(r.vm), 0);
	f1 = flushes(r.vm);
	rig_destroy(&r);
	ASSERT_EQ(f1 - f0, 0);
}

static void test_flush_ring_reset_mapped(void)
{
	struct rig r;
	uint64_t bm, f0, f1;
	unsigned n;

	rig_create(&r, LOG_RING, 0, GPAMM_MEM_LOG_DIRTY_PAGES, 1);
	touch(&r, 0, 2, true);
	bm = ring_harvest(&r, &n);
	ASSERT_EQ(bm, 3);
	f0 = flushes(r.vm);
	ASSERT_EQ_INT(gpamm_vm_reset_dirty_rings(r.vm), 2);
	f1 = flushes(r.vm);
	rig_destroy(&r);
	ASSERT_GE(f1 - f0, 1);
}

static void test_flush_ring_reset_unmapped(void)
{
	struct rig r;
	uint64_t bm, f0, f1;
	unsigned n;

	rig_create(&r, LOG_RING, 0, GPAMM_MEM_LOG_DIRTY_PAGES, 1);
	touch(&r, 0, 1, true); /* pushed ... */
	host_unmap_page(&r, 0); /* ... and no longer mapped */
	bm = ring_harvest(&r, &n);
	ASSERT_EQ(bm, 1);
	ASSERT_EQ(n, 1);
	f0 = flushes(r.vm);
	ASSERT_EQ_INT(gpamm_vm_reset_dirty_rings(r.vm), 1);
	f1 = flushes(r.vm);
	rig_destroy(&r);
	ASSERT_MSG(f1 - f0 >= 1,
		   "ring reset of 1 entry (page no longer mapped) made %llu remote flushes; "
		   "it reset an entry, so it must flush",
		   (unsigned long long)(f1 - f0));
}

/* ---- c), d) faults during an invalidation --------------------------------- */

/*
 * The test holds the invalidation [H + start_off, H + end_off) open (H: the
 * HVA of slot page 1) while a vCPU read-faults slot page 1 + @page.
 * @held: the fault must retry and install nothing until the end; else it
 * must install at once, on its first pin.
 */
static void inval_case(int64_t start_off, int64_t end_off, unsigned page, bool held)
{
	struct rig r;
	struct park_thread t;
	const uint64_t pattern = 0x5eed0000cafe0000ULL + page;
	uint64_t hbase, s, e, gpa;
	struct vt_op ops[2];
	struct gpamm_vm_stats st;
	gpamm_pte_t pte = 0;
	bool parked;
	int r_open, r_after;
	unsigned hits_open, hits_end;

	rig_create(&r, LOG_CLASSIC, 0, 0, 1);
	hbase = r.hva + PSZ; /* H */
	s = hbase + start_off;
	e = hbase + end_off;
	gpa = GPA0 + (1 + page) * PSZ;
	memcpy(r.mem + (1 + page) * PSZ, &pattern, 8);
	ops[0] = (struct vt_op){ VT_OP_READ, gpa, 0 };
	ops[1] = (struct vt_op){ VT_OP_END, 0, 0 };
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops, 0), 0);

	park_host_invalidate_start(r.ph, s, e);
	/* the second pin is the fault's retry */
	park_arm(r.lot, GPAMM_PAUSE_FAULT_PINNED, gpa, 1);
	ASSERT_EQ_INT(park_thread_start(&t, r.v[0], r.lot, 0), 0);
	parked = park_wait(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	/* parked: the retry is stopped; not parked: the guest ended */
	r_open = gpamm_vm_translate(r.vm, gpa, &pte, NULL);
	hits_open = park_hits(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	if (parked)
		park_release(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	/* (the released fault spins on its retry until here) */
	park_host_invalidate_end(r.ph, s, e);
	park_thread_join(&t);
	hits_end = park_hits(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	r_after = gpamm_vm_translate(r.vm, gpa, &pte, NULL);
	gpamm_vm_stats(r.vm, &st);
	tap_diag("invalidation [H%+lld, H%+lld), fault on H%+lld: parked %d, translate "
		 "during %d, pins %u (%u at the end), retries %llu",
		 (long long)start_off, (long long)end_off, (long long)(page * PSZ), parked,
		 r_open, hits_open, hits_end, (unsigned long long)st.fault_retries);
	rig_destroy(&r);

	ASSERT_EQ(t.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(ops[0].val, pattern);
	ASSERT_EQ_INT(r_after, 0);
	ASSERT_EQ(st.pinned, 0);
	if (held) {
		ASSERT_MSG(parked && r_open == -ENOENT,
			   "the read fault on the page at H%+lld, which overlaps the open "
			   "invalidation [H%+lld, H%+lld), did not retry: %s (translate %d "
			   "during the invalidation, %u pins)",
			   (long long)(page * PSZ), (long long)start_off, (long long)end_off,
			   parked ? "installed" : "it installed on its first try and the guest finished",
			   r_open, hits_open);
		ASSERT_GE(st.fault_retries, 1);
	} else {
		ASSERT_MSG(!parked && r_open == 0 && hits_end == 1,
			   "the read fault on the page at H%+lld, outside the invalidation "
			   "[H%+lld, H%+lld), was held back (parked %d, translate %d, %u pins)",
			   (long long)(page * PSZ), (long long)start_off, (long long)end_off,
			   parked, r_open, hits_end);
		ASSERT_EQ(st.fault_retries, 0);
	}
}

/* c) an 8-byte range inside page H */
static void test_inval_subpage_holds_fault(void)
{
	inval_case(8, 16, 0, true);
}

/* c) [H + psz - 1, H + psz + 1): the last byte of H and the first of H + 1 */
static void test_inval_straddle_holds_first_page(void)
{
	inval_case((int64_t)PSZ - 1, (int64_t)PSZ + 1, 0, true);
}

static void test_inval_straddle_holds_second_page(void)
{
	inval_case((int64_t)PSZ - 1, (int64_t)PSZ + 1, 1, true);
}

/* c) [H - 8, H): the end is exclusive, page H is not in it */
static void test_inval_exclusive_end_not_held(void)
{
	inval_case(-8, 0, 0, false);
}

/* d) the in-progress leg: the whole page, start called, end not yet */
static void test_inval_in_progress_whole_page(void)
{
	inval_case(0, (int64_t)PSZ, 0, true);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_lost_dirty_write_classic);
	TEST(test_lost_dirty_write_manual);
	TEST(test_lost_dirty_write_ring);
	TEST(test_flush_manual_initially_set_clear);
	TEST(test_flush_manual_get_never);
	TEST(test_flush_classic_get_zero);
	TEST(test_flush_classic_get_unmapped);
	TEST(test_flush_ring_reset_zero);
	TEST(test_flush_ring_reset_mapped);
	TEST(test_flush_ring_reset_unmapped);
	TEST(test_inval_subpage_holds_fault);
	TEST(test_inval_straddle_holds_first_page);
	TEST(test_inval_straddle_holds_second_page);
	TEST(test_inval_exclusive_end_not_held);
	TEST(test_inval_in_progress_whole_page);
	return tap_done();
}
