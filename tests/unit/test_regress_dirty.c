// SPDX-License-Identifier: MIT
/*
 * Regression tests for the seed defects of REFERENCE.md §7 that touch dirty
 * logging and aging, each named after its item, through the VM API, with a
 * look into the GPA table (vm->pgt) where the defect is in an entry's bits:
 *
 * §7.5  change_pte could install a writable entry on a logged or read-only
 *       slot: after the host changes the page under a mapping (migration,
 *       KSM merge, the guest breaking a merged page's share) the entry is
 *       never left writable (DIRTY|WRITE only after a logged write fault),
 *       the next guest write faults and is logged, a read-only slot never
 *       becomes writable, and nobody reads or writes a stale page.
 * §7.7  the "may be made writable" marker in WRITE, which a walker with PTW
 *       treats as a hardware bit: on a GPAMM_VM_PTW VM write-protection must
 *       stick (entries keep MODIFIED and lose DIRTY and WRITE) so that every
 *       write is reported; and the mechanism itself: an entry with WRITE but
 *       without DIRTY is made dirty by the PTW walker without a fault, so
 *       that write is never logged.
 * §7.8  read-only slots and INITIALLY_SET ignored by dirty logging.
 * (and) a slot's bitmap storage lives as long as the slot, so a second
 *       logging period must start from a clean (or, INITIALLY_SET, a full)
 *       bitmap, never from the bits the first period left.
 * §7.9  inclusive ends: host unmap and aging touched one page too many and
 *       test_young looked at the first page only; the same at VM level
 *       (gpamm_vm_mark_idle / gpamm_vm_test_young).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"
#include "vm.h" /* vm->pgt */

#define PS 12
#define PSZ (1ULL << PS)
#define WBITS GPAMM_PTE_WRITEABLE /* DIRTY | WRITE */
#define MARK GPAMM_PTE_WR_MARKER  /* MODIFIED */

/* ---- a small VM on the sim host, driven one guest access at a time ------ */

struct env {
	struct vt_host vh;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	unsigned mmio;
};

static void env_create(struct env *e, unsigned vm_flags, unsigned manual, uint32_t ring)
{
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .flags = vm_flags };

	memset(e, 0, sizeof(*e));
	vt_host_create(&e->vh, VT_SIM, PS, 512); /* checking mode */
	cfg.host = e->vh.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &e->vm), 0);
	if (manual)
		ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(e->vm, manual), 0);
	if (ring)
		ASSERT_EQ_INT(gpamm_vm_enable_dirty_ring(e->vm, ring), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(e->vm, 0, &e->v), 0);
}

static void env_destroy(struct env *e)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(e->vm, &st);
	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ(st.pinned, 0);
	gpamm_vm_destroy(e->vm);
	vt_host_destroy(&e->vh);
}

/* a slot of @pages pages at @gpa over fresh sim memory; returns its HVA */
static uint64_t env_slot(struct env *e, uint32_t id, uint64_t gpa, uint64_t pages, uint32_t flags)
{
	uint64_t hva = vt_host_map(&e->vh, pages * PSZ, 0);

	ASSERT_EQ_INT(gpamm_vm_set_memory_region(e->vm, &(struct gpamm_userspace_memory_region){
		.slot = id, .flags = flags, .guest_phys_addr = gpa, .memory_size = pages * PSZ,
		.userspace_addr = hva }), 0);
	return hva;
}

static void set_flags(struct env *e, uint32_t id, uint64_t gpa, uint64_t pages, uint64_t hva,
		      uint32_t flags)
{
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(e->vm, &(struct gpamm_userspace_memory_region){
		.slot = id, .flags = flags, .guest_phys_addr = gpa, .memory_size = pages * PSZ,
		.userspace_addr = hva }), 0);
}

struct op { uint64_t gpa; bool write; uint64_t val; };

static int one_op(struct gpamm_vcpu *v, void *arg)
{
	struct op *o = arg;

	if (o->write)
		gpamm_guest_write(v, o->gpa, 8, o->val);
	else
		o->val = gpamm_guest_read(v, o->gpa, 8);
	return 0;
}

static uint64_t g_read(struct env *e, uint64_t gpa)
{
	struct op o = { gpa, false, 0 };

	ASSERT_EQ_INT(gpamm_vcpu_set_guest(e->v, one_op, &o, 0), 0);
	vt_run_to_done(e->v, 0xdeadbeefULL, &e->mmio);
	return o.val;
}

static void g_write(struct env *e, uint64_t gpa, uint64_t val)
{
	struct op o = { gpa, true, val };

	ASSERT_EQ_INT(gpamm_vcpu_set_guest(e->v, one_op, &o, 0), 0);
	vt_run_to_done(e->v, 0, &e->mmio);
}

static uint64_t h_read(struct env *e, uint64_t hva)
{
	uint64_t v = 0;

	vt_host_read(&e->vh, hva, &v, 8);
	return v;
}

static gpamm_pte_t pte(struct env *e, uint64_t gpa)
{
	return gpamm_pgt_lookup(&e->vm->pgt, gpa, NULL);
}

static uint64_t faults(struct env *e)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(e->vm, &st);
	return st.faults;
}

/* GET on a slot of at most 64 pages: the one bitmap word */
static uint64_t get_log(struct env *e, uint32_t slot)
{
	uint64_t bm[2] = { 0, 0x77 };

	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e->vm, slot, bm), 0);
	ASSERT_EQ(bm[1], 0x77);
	return bm[0];
}

/* not writable in hardware: a write cannot go through without a fault */
#define ASSERT_NOT_WRITABLE(e, gpa)                                              \
	do {                                                                     \
		gpamm_pte_t pte__ = pte(e, gpa);                                 \
		if (pte__ & WBITS)                                               \
			tap_diag("entry 0x%llx", (unsigned long long)pte__);     \
		ASSERT_EQ(pte__ & WBITS, 0);                                     \
	} while (0)

/* ---- §7.5 ----------------------------------------------------------------- */

static void test_7_5_change_pte_logged_slot(void)
{
	struct env e;
	const uint64_t G = 0x100000;
	uint64_t hva, f;

	env_create(&e, 0, 0, 0);
	hva = env_slot(&e, 0, G, 8, GPAMM_MEM_LOG_DIRTY_PAGES);

	/* migration under a clean (write-protected) entry */
	g_write(&e, G, 0x1111);
	ASSERT_EQ(pte(&e, G) & WBITS, WBITS);
	ASSERT_EQ(get_log(&e, 0), 1);
	ASSERT_NOT_WRITABLE(&e, G);
	ASSERT(pte(&e, G) & MARK);
	ASSERT_EQ(gpamm_sim_migrate(e.vh.h, hva, PSZ), 1);
	ASSERT_NOT_WRITABLE(&e, G);
	ASSERT_EQ(get_log(&e, 0), 0); /* the host moving a page is not a guest write */
	ASSERT_EQ(g_read(&e, G), 0x1111);
	ASSERT_NOT_WRITABLE(&e, G);
	ASSERT_EQ(get_log(&e, 0), 0);
	f = faults(&e);
	g_write(&e, G, 0x2222);
	ASSERT(faults(&e) > f);
	ASSERT_EQ(get_log(&e, 0), 1);
	ASSERT_EQ(h_read(&e, hva), 0x2222);

	/* migration under a dirty entry: the bit stays, the new entry is not writable */
	g_write(&e, G, 0x3333);
	ASSERT_EQ(pte(&e, G) & WBITS, WBITS);
	ASSERT_EQ(gpamm_sim_migrate(e.vh.h, hva, PSZ), 1);
	ASSERT_NOT_WRITABLE(&e, G);
	ASSERT_EQ(g_read(&e, G), 0x3333);
	ASSERT_NOT_WRITABLE(&e, G);
	ASSERT_EQ(get_log(&e, 0), 1);
	f = faults(&e);
	g_write(&e, G, 0x4444);
	ASSERT(faults(&e) > f);
	ASSERT_EQ(get_log(&e, 0), 1);

	/* KSM: two identical pages merged, then the guest breaks the share */
	g_write(&e, G + PSZ, 0xabc);
	g_write(&e, G + 2 * PSZ, 0xabc);
	ASSERT_EQ(get_log(&e, 0), 6);
	ASSERT_EQ(gpamm_sim_merge(e.vh.h, hva + PSZ, 2 * PSZ), 1);
	ASSERT_NOT_WRITABLE(&e, G + PSZ);
	ASSERT_NOT_WRITABLE(&e, G + 2 * PSZ);
	ASSERT_EQ(g_read(&e, G + PSZ), 0xabc);
	ASSERT_EQ(g_read(&e, G + 2 * PSZ), 0xabc);
	ASSERT_NOT_WRITABLE(&e, G + PSZ);
	ASSERT_NOT_WRITABLE(&e, G + 2 * PSZ);
	ASSERT_EQ(get_log(&e, 0), 0);
	f = faults(&e);
	g_write(&e, G + 2 * PSZ, 0xdef); /* breaks the share */
	ASSERT(faults(&e) > f);
	ASSERT_EQ(get_log(&e, 0), 4);     /* this page only */
	ASSERT_NOT_WRITABLE(&e, G + PSZ); /* the other one stays protected */
	ASSERT_EQ(g_read(&e, G + PSZ), 0xabc);
	ASSERT_EQ(h_read(&e, hva + PSZ), 0xabc);
	ASSERT_EQ(h_read(&e, hva + 2 * PSZ), 0xdef);
	ASSERT_NOT_WRITABLE(&e, G + PSZ);
	f = faults(&e);
	g_write(&e, G + PSZ, 0x123);
	ASSERT(faults(&e) > f);
	ASSERT_EQ(get_log(&e, 0), 2);
	ASSERT_EQ(h_read(&e, hva + PSZ), 0x123);
	ASSERT_EQ(h_read(&e, hva + 2 * PSZ), 0xdef);

	/* merged while the guest's entries were dirty: the write after still logs */
	g_write(&e, G + 3 * PSZ, 0x55);
	g_write(&e, G + 4 * PSZ, 0x55);
	ASSERT_EQ(gpamm_sim_merge(e.vh.h, hva + 3 * PSZ, 2 * PSZ), 1);
	ASSERT_NOT_WRITABLE(&e, G + 3 * PSZ);
	ASSERT_NOT_WRITABLE(&e, G + 4 * PSZ);
	ASSERT_EQ(get_log(&e, 0), 0x18);
	g_write(&e, G + 3 * PSZ, 0x56);
	ASSERT_EQ(get_log(&e, 0), 0x8);
	ASSERT_EQ(g_read(&e, G + 4 * PSZ), 0x55);
	ASSERT_EQ(h_read(&e, hva + 3 * PSZ), 0x56);
	ASSERT_EQ(e.mmio, 0);
	env_destroy(&e);
}

static void test_7_5_change_pte_readonly_slot(void)
{
	struct env e;
	const uint64_t G = 0x200000;
	uint64_t hva, v;

	env_create(&e, 0, 0, 0);
	hva = env_slot(&e, 1, G, 4, GPAMM_MEM_READONLY);
	v = 0x77;
	vt_host_write(&e.vh, hva, &v, 8);
	vt_host_write(&e.vh, hva + PSZ, &v, 8);
	v = 0x99;
	vt_host_write(&e.vh, hva + 2 * PSZ, &v, 8);
	for (unsigned i = 0; i < 3; i++)
		ASSERT_EQ(g_read(&e, G + i * PSZ), i == 2 ? 0x99 : 0x77);
	for (unsigned i = 0; i < 3; i++) {
		ASSERT(pte(&e, G + i * PSZ) & GPAMM_PTE_PRESENT);
		ASSERT_EQ(pte(&e, G + i * PSZ) & (WBITS | MARK), 0);
	}
	/* migration */
	ASSERT_EQ(gpamm_sim_migrate(e.vh.h, hva + 2 * PSZ, PSZ), 1);
	ASSERT_EQ(pte(&e, G + 2 * PSZ) & (WBITS | MARK), 0);
	ASSERT_EQ(g_read(&e, G + 2 * PSZ), 0x99);
	ASSERT_EQ(pte(&e, G + 2 * PSZ) & (WBITS | MARK), 0);
	/* merge, a guest write (MMIO), the host breaking the share */
	ASSERT_EQ(gpamm_sim_merge(e.vh.h, hva, 2 * PSZ), 1);
	ASSERT_EQ(pte(&e, G) & (WBITS | MARK), 0);
	ASSERT_EQ(pte(&e, G + PSZ) & (WBITS | MARK), 0);
	ASSERT_EQ(g_read(&e, G), 0x77);
	ASSERT_EQ(g_read(&e, G + PSZ), 0x77);
	g_write(&e, G + PSZ, 0x1);
	ASSERT_EQ(e.mmio, 1);
	ASSERT_EQ(h_read(&e, hva + PSZ), 0x77);
	for (unsigned i = 0; i < 2; i++)
		ASSERT_EQ(pte(&e, G + i * PSZ) & (WBITS | MARK), 0);
	v = 0x78;
	vt_host_write(&e.vh, hva, &v, 8); /* the host breaks the share */
	ASSERT_EQ(g_read(&e, G), 0x78);
	ASSERT_EQ(g_read(&e, G + PSZ), 0x77);
	g_write(&e, G, 0x2);
	ASSERT_EQ(e.mmio, 2);
	ASSERT_EQ(h_read(&e, hva), 0x78);
	for (unsigned i = 0; i < 3; i++)
		ASSERT_EQ(pte(&e, G + i * PSZ) & (WBITS | MARK), 0);
	env_destroy(&e);
}

/* ---- §7.7 ----------------------------------------------------------------- */

#define P77 64

static void ptw_rounds(bool manual)
{
	struct env e;
	const uint64_t G = 0x400000;
	uint64_t hva, f, want, got[1];
	struct tap_rng rng;

	tap_rng_seed(&rng, tap_seed() + manual);
	env_create(&e, GPAMM_VM_PTW, manual ? GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE : 0, 0);
	hva = env_slot(&e, 0, G, P77, 0);
	for (unsigned i = 0; i < P77; i++)
		g_write(&e, G + i * PSZ, i + 1);
	for (unsigned i = 0; i < P77; i++)
		ASSERT_EQ(pte(&e, G + i * PSZ) & 0xfff, 0x393); /* mapped dirty, no logging */

	/* logging on (flags only): write-protected, marker kept */
	set_flags(&e, 0, G, P77, hva, GPAMM_MEM_LOG_DIRTY_PAGES);
	for (unsigned i = 0; i < P77; i++) {
		gpamm_pte_t p = pte(&e, G + i * PSZ);
		ASSERT(p & GPAMM_PTE_PRESENT);
		ASSERT_EQ(p & (GPAMM_PTE_DIRTY | GPAMM_PTE_WRITE), 0);
		ASSERT(p & MARK);
	}
	for (unsigned r = 0; r < 8; r++) {
		want = r == 0 ? ~0ULL : tap_rand(&rng);
		f = faults(&e);
		for (unsigned i = 0; i < P77; i++)
			if (want >> i & 1)
				g_write(&e, G + i * PSZ, r * 1000 + i);
		ASSERT_GE(faults(&e) - f, (uint64_t)__builtin_popcountll(want)); /* each one faulted */
		ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 0, got), 0);
		ASSERT_EQ(got[0], want); /* every write reported */
		if (manual)
			ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(e.vm, 0, 0, P77, got), 0);
		for (unsigned i = 0; i < P77; i++) {
			gpamm_pte_t p = pte(&e, G + i * PSZ);
			ASSERT_EQ(p & (GPAMM_PTE_DIRTY | GPAMM_PTE_WRITE), 0);
			ASSERT(p & MARK);
			if (want >> i & 1)
				ASSERT_EQ(h_read(&e, hva + i * PSZ), r * 1000 + i);
		}
	}

	/*
	 * The mechanism: give page 5 the seed's encoding of "may be made
	 * writable" (WRITE without DIRTY). The PTW walker sets DIRTY itself:
	 * the write goes through without a fault and the log never hears of it.
	 */
	gpamm_pte_t old, now;
	ASSERT_EQ_INT(gpamm_pgt_update_leaf(&e.vm->pgt, G + 5 * PSZ, GPAMM_PTE_WRITE, 0, &old,
					    &now), 1);
	ASSERT_EQ(now & (GPAMM_PTE_DIRTY | GPAMM_PTE_WRITE), GPAMM_PTE_WRITE);
	gpamm_vm_flush_remote_tlbs(e.vm);
	f = faults(&e);
	g_write(&e, G + 5 * PSZ, 0x5555);
	ASSERT_EQ(faults(&e), f);                                /* no fault ... */
	ASSERT(pte(&e, G + 5 * PSZ) & GPAMM_PTE_DIRTY);         /* the walker made it dirty */
	ASSERT_EQ(h_read(&e, hva + 5 * PSZ), 0x5555);            /* the write landed ... */
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 0, got), 0);
	ASSERT_EQ(got[0], 0);                                    /* ... and was never logged */
	env_destroy(&e);
}

static void test_7_7_ptw_write_protect_sticks(void)
{
	ptw_rounds(false);
	ptw_rounds(true);
}

/* Read faults under logging map the page clean, with the marker: 0x291. */
static void test_7_7_ptw_read_then_write_logged(void)
{
	struct env e;
	const uint64_t G = 0x800000;
	uint64_t f;

	env_create(&e, GPAMM_VM_PTW, 0, 0);
	env_slot(&e, 0, G, 4, GPAMM_MEM_LOG_DIRTY_PAGES);
	ASSERT_EQ(g_read(&e, G + PSZ), 0);
	ASSERT_EQ(pte(&e, G + PSZ) & 0xfff, 0x291);
	f = faults(&e);
	g_write(&e, G + PSZ, 7);
	ASSERT(faults(&e) > f);
	ASSERT_EQ(pte(&e, G + PSZ) & 0xfff, 0x393);
	ASSERT_EQ(get_log(&e, 0), 2);
	ASSERT_EQ((pte(&e, G + PSZ) & 0xfff) & ~GPAMM_PTE_VALID, 0x290);
	env_destroy(&e);
}

/* ---- §7.8 ----------------------------------------------------------------- */

static void test_7_8_readonly_slot_logging(void)
{
	struct env e;
	const uint64_t G = 0x1000000, H = 0x2000000;
	uint64_t hva, hva2, v = 0x42, bm[2];
	gpamm_pte_t before[4];

	env_create(&e, 0, 0, 0);
	/* created logging */
	hva = env_slot(&e, 2, G, 4, GPAMM_MEM_READONLY | GPAMM_MEM_LOG_DIRTY_PAGES);
	vt_host_write(&e.vh, hva, &v, 8);
	ASSERT_EQ(g_read(&e, G), 0x42);
	g_write(&e, G, 0x43);
	g_write(&e, G + 3 * PSZ, 0x44);
	ASSERT_EQ(e.mmio, 2);
	ASSERT_EQ(h_read(&e, hva), 0x42);
	ASSERT_EQ(get_log(&e, 2), 0); /* the bitmap exists and stays clear */
	ASSERT_EQ(pte(&e, G) & (WBITS | MARK), 0);

	/* logging turned on later: nothing is write-protected there (nothing changes) */
	hva2 = env_slot(&e, 3, H, 4, GPAMM_MEM_READONLY);
	for (unsigned i = 0; i < 4; i++)
		(void)g_read(&e, H + i * PSZ);
	for (unsigned i = 0; i < 4; i++) {
		before[i] = pte(&e, H + i * PSZ);
		ASSERT(before[i] & GPAMM_PTE_PRESENT);
	}
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 3, bm), -ENOENT); /* does not log yet */
	set_flags(&e, 3, H, 4, hva2, GPAMM_MEM_READONLY | GPAMM_MEM_LOG_DIRTY_PAGES);
	for (unsigned i = 0; i < 4; i++)
		ASSERT_EQ(pte(&e, H + i * PSZ), before[i]);
	g_write(&e, H + PSZ, 1);
	ASSERT_EQ(e.mmio, 3);
	ASSERT_EQ(get_log(&e, 3), 0);
	for (unsigned i = 0; i < 4; i++)
		ASSERT_EQ(pte(&e, H + i * PSZ), before[i]);
	/* and off again */
	set_flags(&e, 3, H, 4, hva2, GPAMM_MEM_READONLY);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 3, bm), -ENOENT);
	env_destroy(&e);

	/* a ring VM: writes to a read-only logged slot push nothing */
	env_create(&e, 0, 0, 2 * GPAMM_DIRTY_RING_RSVD);
	uint32_t n = 0;
	struct gpamm_dirty_gfn *ring = gpamm_vcpu_dirty_ring(e.v, &n);
	ASSERT(ring);
	hva = env_slot(&e, 2, G, 4, GPAMM_MEM_READONLY | GPAMM_MEM_LOG_DIRTY_PAGES);
	g_write(&e, G + 2 * PSZ, 0x43);
	ASSERT_EQ(e.mmio, 1);
	for (uint32_t i = 0; i < n; i++)
		ASSERT_EQ(__atomic_load_n(&ring[i].flags, __ATOMIC_ACQUIRE), 0);
	ASSERT_EQ_INT(gpamm_vm_reset_dirty_rings(e.vm), 0);
	env_destroy(&e);
}

static void test_7_8_initially_set(void)
{
	struct env e;
	const uint64_t G = 0x3000000;
	const unsigned N = 40;
	uint64_t hva, f, all = (1ULL << N) - 1, bm[1];

	env_create(&e, 0, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | GPAMM_DIRTY_LOG_INITIALLY_SET, 0);
	hva = env_slot(&e, 0, G, N, 0);
	for (unsigned i = 0; i < N; i += 2)
		g_write(&e, G + i * PSZ, i);
	for (unsigned i = 0; i < N; i += 2)
		ASSERT_EQ(pte(&e, G + i * PSZ) & WBITS, WBITS);

	/* logging on: every bit set, nothing write-protected */
	set_flags(&e, 0, G, N, hva, GPAMM_MEM_LOG_DIRTY_PAGES);
	for (unsigned i = 0; i < N; i += 2)
		ASSERT_EQ(pte(&e, G + i * PSZ) & WBITS, WBITS);
	ASSERT_EQ(get_log(&e, 0), all);
	f = faults(&e);
	for (unsigned i = 0; i < N; i += 2)
		g_write(&e, G + i * PSZ, 100 + i); /* still writable: no fault */
	ASSERT_EQ(faults(&e), f);
	ASSERT_EQ(get_log(&e, 0), all);       /* GET alone clears nothing */

	/* CLEAR a part: exactly those pages are protected and their bits cleared */
	bm[0] = 0x00ff00ffULL;
	ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(e.vm, 0, 0, N, bm), 0);
	for (unsigned i = 0; i < N; i += 2)
		ASSERT_EQ(pte(&e, G + i * PSZ) & WBITS, (bm[0] >> i & 1) ? 0 : WBITS);
	ASSERT_EQ(get_log(&e, 0), all & ~bm[0]);
	f = faults(&e);
	g_write(&e, G + 2 * PSZ, 7);  /* protected: faults, logged */
	g_write(&e, G + 10 * PSZ, 8); /* still writable: no fault */
	ASSERT_EQ(faults(&e), f + 1);
	ASSERT_EQ(get_log(&e, 0), (all & ~bm[0]) | 4);
	ASSERT_EQ(h_read(&e, hva + 2 * PSZ), 7);
	ASSERT_EQ(h_read(&e, hva + 10 * PSZ), 8);
	env_destroy(&e);
}

/*
 * Logging on, pages dirtied, logging off, more writes, logging on again:
 * the second period reports nothing old (classic and manual), or every
 * page (INITIALLY_SET); writes while logging was off are never reported.
 */
static void relog_case(unsigned manual)
{
	struct env e;
	const uint64_t G = 0x5000000;
	const unsigned N = 48;
	const uint64_t all = (1ULL << N) - 1;
	bool init_set = manual & GPAMM_DIRTY_LOG_INITIALLY_SET;
	uint64_t hva, bm[1];

	env_create(&e, 0, manual, 0);
	hva = env_slot(&e, 0, G, N, 0);
	for (unsigned i = 0; i < N; i++)
		g_write(&e, G + i * PSZ, i);
	set_flags(&e, 0, G, N, hva, GPAMM_MEM_LOG_DIRTY_PAGES);
	if (init_set) { /* protect everything first, as a VMM does */
		bm[0] = all;
		ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(e.vm, 0, 0, N, bm), 0);
	}
	for (unsigned i = 0; i < N; i += 3)
		g_write(&e, G + i * PSZ, 1000 + i);
	/* first period: exactly the pages written (not collected on purpose) */
	set_flags(&e, 0, G, N, hva, 0);
	for (unsigned i = 1; i < N; i += 3)
		g_write(&e, G + i * PSZ, 2000 + i); /* not logging */
	set_flags(&e, 0, G, N, hva, GPAMM_MEM_LOG_DIRTY_PAGES);
	ASSERT_EQ(get_log(&e, 0), init_set ? all : 0);
	if (manual) {
		bm[0] = all;
		ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(e.vm, 0, 0, N, bm), 0);
	}
	g_write(&e, G + 5 * PSZ, 5);
	ASSERT_EQ(get_log(&e, 0), 1ULL << 5);
	ASSERT_EQ(h_read(&e, hva + 4 * PSZ), 2004);
	env_destroy(&e);
}

static void test_relog_starts_clean(void)
{
	relog_case(0);
	relog_case(GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
	relog_case(GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | GPAMM_DIRTY_LOG_INITIALLY_SET);
}

/* ---- §7.9 ----------------------------------------------------------------- */

#define P79 16

static bool young(struct env *e, uint64_t gpa)
{
	gpamm_pte_t p = pte(e, gpa);

	ASSERT(p & GPAMM_PTE_PRESENT);
	return p & GPAMM_PTE_VALID;
}

static void test_7_9_host_aging_exclusive_end(void)
{
	struct env e;
	const uint64_t G = 0x5000000;
	uint64_t hva, f;
	bool y;

	env_create(&e, 0, 0, 0);
	hva = env_slot(&e, 0, G, P79, 0);
	for (unsigned i = 0; i < P79; i++)
		g_write(&e, G + i * PSZ, i + 1);
	for (unsigned i = 0; i < P79; i++)
		ASSERT(young(&e, G + i * PSZ));

	/* clear_young over pages 4..7: page 8 (the end) and page 3 stay young */
	ASSERT_EQ_INT(gpamm_sim_clear_young(e.vh.h, hva + 4 * PSZ, 4 * PSZ, false, &y), 0);
	ASSERT(y);
	for (unsigned i = 0; i < P79; i++)
		ASSERT_EQ(young(&e, G + i * PSZ), i < 4 || i >= 8);
	ASSERT_EQ_INT(gpamm_sim_clear_young(e.vh.h, hva + 4 * PSZ, 4 * PSZ, false, &y), 0);
	ASSERT(!y);
	/* test_young sees only the range, and all of it */
	ASSERT_EQ_INT(gpamm_sim_test_young(e.vh.h, hva + 4 * PSZ, 4 * PSZ, &y), 0);
	ASSERT(!y); /* page 8 is young but past the end */
	gpamm_vm_flush_remote_tlbs(e.vm); /* clear_young does not flush: make the next access walk */
	f = faults(&e);
	ASSERT_EQ(g_read(&e, G + 7 * PSZ), 8); /* old: faults, young again */
	ASSERT(faults(&e) > f);
	ASSERT(young(&e, G + 7 * PSZ));
	ASSERT_EQ_INT(gpamm_sim_test_young(e.vh.h, hva + 4 * PSZ, 4 * PSZ, &y), 0);
	ASSERT(y); /* the young page is the last of the range */
	ASSERT_EQ_INT(gpamm_sim_test_young(e.vh.h, hva + 4 * PSZ, 3 * PSZ, &y), 0);
	ASSERT(!y);
	ASSERT(young(&e, G + 7 * PSZ)); /* test_young only asks */
	/* clear_flush_young, ending exactly at page 8 */
	ASSERT_EQ_INT(gpamm_sim_clear_young(e.vh.h, hva + 5 * PSZ, 3 * PSZ, true, &y), 0);
	ASSERT(y);
	for (unsigned i = 0; i < P79; i++)
		ASSERT_EQ(young(&e, G + i * PSZ), i < 4 || i >= 8);
	f = faults(&e);
	g_write(&e, G + 6 * PSZ, 0x66); /* the flush made it fault */
	ASSERT(faults(&e) > f);
	ASSERT(young(&e, G + 6 * PSZ));
	/* from the start of the slot, ending at page 1 */
	ASSERT_EQ_INT(gpamm_sim_clear_young(e.vh.h, hva, PSZ, true, &y), 0);
	ASSERT(y);
	ASSERT(!young(&e, G));
	ASSERT(young(&e, G + PSZ));
	ASSERT_EQ_INT(gpamm_sim_clear_young(e.vh.h, hva + 1, PSZ, false, &y), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_test_young(e.vh.h, hva, PSZ + 8, &y), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_clear_young(e.vh.h, hva, 0, true, &y), -EINVAL);
	ASSERT_EQ_INT(gpamm_sim_test_young(e.vh.h, hva, 0, &y), -EINVAL);

	/* unmap through the host: the page at the end keeps its entry */
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(e.vh.h, hva + 2 * PSZ, 2 * PSZ), 0);
	ASSERT_EQ(pte(&e, G + 2 * PSZ), 0);
	ASSERT_EQ(pte(&e, G + 3 * PSZ), 0);
	ASSERT(pte(&e, G + 4 * PSZ) & GPAMM_PTE_PRESENT);
	ASSERT(pte(&e, G + PSZ) & GPAMM_PTE_PRESENT);
	ASSERT_EQ_INT(gpamm_sim_munmap(e.vh.h, hva + 10 * PSZ, 3 * PSZ), 0);
	ASSERT_EQ(pte(&e, G + 9 * PSZ) & GPAMM_PTE_PRESENT, GPAMM_PTE_PRESENT);
	for (unsigned i = 10; i < 13; i++)
		ASSERT_EQ(pte(&e, G + i * PSZ), 0);
	ASSERT(pte(&e, G + 13 * PSZ) & GPAMM_PTE_PRESENT);
	f = faults(&e);
	ASSERT_EQ(g_read(&e, G + 13 * PSZ), 14);
	ASSERT_EQ(g_read(&e, G + 9 * PSZ), 10);
	ASSERT_EQ(g_read(&e, G + PSZ), 2);
	ASSERT_EQ(faults(&e), f); /* still mapped and young: no fault */
	ASSERT_EQ(g_read(&e, G + 2 * PSZ), 0); /* dropped: zeros */
	/* the rest of the host memory goes with the slot */
	set_flags(&e, 0, G, 0, hva, 0);
	vt_host_unmap(&e.vh, hva, 10 * PSZ);
	vt_host_unmap(&e.vh, hva + 13 * PSZ, 3 * PSZ);
	{
		struct gpamm_host_stats hs;
		gpamm_host_stats(e.vh.h, &hs);
		ASSERT_EQ(hs.frames_live, 0);
	}
	env_destroy(&e);
}

static void test_7_9_vm_mark_idle_test_young(void)
{
	struct env e;
	const uint64_t G = 0x7000000;
	uint64_t bm[2], f, space;

	env_create(&e, 0, 0, 0);
	env_slot(&e, 0, G, P79, GPAMM_MEM_LOG_DIRTY_PAGES);
	space = gpamm_geom_space(gpamm_vm_geom(e.vm));
	for (unsigned i = 0; i < P79; i++)
		g_write(&e, G + i * PSZ, i + 100);
	ASSERT_EQ(get_log(&e, 0), (1ULL << P79) - 1); /* classic: clears and protects */
	for (unsigned i = 0; i < P79; i++)
		g_write(&e, G + i * PSZ, i);          /* logged again: dirty and young */
	bm[1] = 0x99;
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G, P79 * PSZ, bm), P79);
	ASSERT_EQ(bm[0], (1ULL << P79) - 1);
	ASSERT_EQ(bm[1], 0x99);

	/* mark 8 pages idle: page 8, the end, stays young */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, G, 8 * PSZ), 8);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G, P79 * PSZ, bm), 8);
	ASSERT_EQ(bm[0], 0xff00);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G + 8 * PSZ, PSZ, NULL), 1);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G, 8 * PSZ, NULL), 0);
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, G, 8 * PSZ), 0);
	for (unsigned i = 0; i < 8; i++) {
		ASSERT(!young(&e, G + i * PSZ));
		ASSERT_EQ(pte(&e, G + i * PSZ) & WBITS, WBITS); /* only VALID went */
	}

	/* accesses make exactly the pages touched young again */
	f = faults(&e);
	ASSERT_EQ(g_read(&e, G + 3 * PSZ), 3);
	g_write(&e, G + 5 * PSZ, 55);
	ASSERT_GE(faults(&e) - f, 2); /* both were old: both faulted */
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G, 8 * PSZ, bm), 2);
	ASSERT_EQ(bm[0], (1ULL << 3) | (1ULL << 5));
	ASSERT_EQ(get_log(&e, 0), (1ULL << P79) - 1); /* aging lost no dirty bit */
	g_write(&e, G + 5 * PSZ, 56);
	ASSERT_EQ(get_log(&e, 0), 1ULL << 5); /* protected by the GET: logged again */

	/* a young page only at the last page of the range is found */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, G, P79 * PSZ), 10);
	ASSERT_EQ(g_read(&e, G + 15 * PSZ), 15);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G, P79 * PSZ, NULL), 1);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G, (P79 - 1) * PSZ, NULL), 0);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G + 15 * PSZ, PSZ, bm), 1);
	ASSERT_EQ(bm[0], 1);
	/* ranges with holes (no slot, or not mapped) count only young pages */
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G - 64 * PSZ, 128 * PSZ, NULL), 1);
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, G - 64 * PSZ, 128 * PSZ), 1);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G, P79 * PSZ, NULL), 0);

	/* bad ranges */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, G + 1, PSZ), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, G, PSZ + 1), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, G, 0), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, ~0ULL & ~(PSZ - 1), 2 * PSZ), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, space, PSZ), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, space - PSZ, 2 * PSZ), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G + 8, PSZ, bm), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G, 8, bm), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, G, 0, bm), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, ~0ULL & ~(PSZ - 1), 2 * PSZ, bm), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, space, PSZ, bm), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, space - PSZ, 2 * PSZ, NULL), -EINVAL);
	/* the last page of the space is a legal range */
	ASSERT_EQ_INT(gpamm_vm_mark_idle(e.vm, space - PSZ, PSZ), 0);
	ASSERT_EQ_INT(gpamm_vm_test_young(e.vm, space - PSZ, PSZ, NULL), 0);
	env_destroy(&e);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_7_5_change_pte_logged_slot);
	TEST(test_7_5_change_pte_readonly_slot);
	TEST(test_7_7_ptw_write_protect_sticks);
	TEST(test_7_7_ptw_read_then_write_logged);
	TEST(test_7_8_readonly_slot_logging);
	TEST(test_7_8_initially_set);
	TEST(test_relog_starts_clean);
	TEST(test_7_9_host_aging_exclusive_end);
	TEST(test_7_9_vm_mark_idle_test_young);
	return tap_done();
}
