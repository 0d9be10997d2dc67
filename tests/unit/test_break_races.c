// SPDX-License-Identifier: MIT
/* Breaking gpamm with forced interleavings (parking lot), each body in a forked child. */
#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gpamm/inject.h"
#include "harness/park.h"
#include "harness/isolate.h"
#include "harness/tap.h"
#include "harness/vmtest.h"

/* ---- a small VM rig (child side: CHECK, never ASSERT) ------------------------- */

#define PS 12
#define PSZ (1ULL << PS)
#define GPA0 0x100000ULL
#define NPAGES 64
#define WBITS GPAMM_PTE_WRITEABLE





/* ---- a VM over the direct host inside a parking host ------------------------ */

enum log_mode { LOG_CLASSIC, LOG_MANUAL, LOG_RING };
static const char *const mode_name[] = { "classic", "manual", "ring" };

struct rig {
	struct park_lot *lot;
	struct gpamm_host *inner, *ph;
	struct gpamm_vm *vm;
	uint8_t *mem;
	uint64_t hva;
	struct gpamm_vcpu *v[3];
	enum log_mode mode;
	uint64_t harvested[3];
	bool inner_gone;
};

static void rig_create(struct rig *r, enum log_mode mode, uint32_t slot_flags)
{
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };

	memset(r, 0, sizeof(*r));
	r->mode = mode;
	r->lot = park_lot_create();
	r->inner = gpamm_host_direct_create(PS);
	CHECK(r->inner);
	r->ph = park_host_create(r->inner, r->lot);
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

static void rig_destroy(struct rig *r)
{
	struct gpamm_live l;

	CHECK_EQ_INT(gpamm_vm_destroy(r->vm), 0);
	gpamm_host_destroy(r->ph);
	if (!r->inner_gone)
		gpamm_host_destroy(r->inner);
	vt_free(r->mem, NPAGES * PSZ);
	park_lot_destroy(r->lot);
	gpamm_live_objects(&l);
	EXPECT_EQ(l.vms, 0);
	EXPECT_EQ(l.vcpus, 0);
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

static gpamm_pte_t pte_of(struct rig *r, unsigned pg)
{
	gpamm_pte_t e = 0;

	if (gpamm_vm_translate(r->vm, GPA0 + pg * PSZ, &e, NULL))
		return 0;
	return e;
}

/* ---- 1. sim calls from guest code while a host event waits for that vCPU ----- */

/*
 * gpamm.h: "Guest code may call the sim host's event calls (gpamm_sim_*)
 * ...: they leave guest mode for the call". A host event on another thread
 * holds the sim host's mm lock while its invalidate_range_start waits (a
 * remote TLB flush) for every vCPU in guest mode to reach its next access.
 * If the vCPU's guest code now calls a gpamm_sim_* function that takes the
 * mm lock without leaving guest mode, neither can go on.
 *
 * Forced: a notifier of our own, registered on the sim host before the VM's,
 * is called first by the event with the mm lock held; it raises a flag the
 * guest waits for, so the guest's call is made while the event holds the
 * lock and before the vCPU acknowledged the event's flush.
 */
static atomic_int ev_in_event;
static void my_start(void *mn, uint64_t s, uint64_t e) { (void)mn; (void)s; (void)e; atomic_store(&ev_in_event, 1); }
static void my_end(void *mn, uint64_t s, uint64_t e) { (void)mn; (void)s; (void)e; }
static bool my_age(void *mn, uint64_t s, uint64_t e) { (void)mn; (void)s; (void)e; return false; }
static void my_release(void *mn) { (void)mn; }
static const struct gpamm_mmu_notifier_ops my_ops = {
	.invalidate_range_start = my_start, .invalidate_range_end = my_end,
	.clear_flush_young = my_age, .clear_young = my_age, .test_young = my_age,
	.release = my_release,
};
static int my_mn;

enum gcall { GC_TEST_YOUNG, GC_READ, GC_MMAP, GC_CLEAR_YOUNG };

struct gc_arg {
	struct gpamm_host *h;
	uint64_t hva;
	enum gcall what;
	int ret;
};

static int guest_call_during_event(struct gpamm_vcpu *v, void *arg)
{
	struct gc_arg *a = arg;
	uint64_t buf = 0, nh = 0;
	bool young;

	(void)gpamm_guest_read(v, GPA0, 8);         /* map page 0: the event must flush */
	gpamm_guest_exit(v);                        /* the test starts the event */
	while (!atomic_load(&ev_in_event))
		;                                   /* the event holds the mm lock now */
	switch (a->what) {
	case GC_TEST_YOUNG: a->ret = gpamm_sim_test_young(a->h, a->hva + PSZ, PSZ, &young); break;
	case GC_READ: a->ret = gpamm_sim_read(a->h, a->hva + PSZ, &buf, 8); break;
	case GC_MMAP: a->ret = gpamm_sim_mmap(a->h, PSZ, 0, &nh); break;
	case GC_CLEAR_YOUNG: a->ret = gpamm_sim_clear_young(a->h, a->hva + PSZ, PSZ, false, &young); break;
	}
	(void)gpamm_guest_read(v, GPA0 + PSZ, 8);
	return 0;
}

struct ev_thread { pthread_t tid; struct gpamm_host *h; uint64_t hva; int ret; };
static void *ev_main(void *arg)
{
	struct ev_thread *t = arg;
	t->ret = gpamm_sim_madv_dontneed(t->h, t->hva, PSZ);
	return NULL;
}

static void guest_call_case(enum gcall what)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 64 };
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };
	struct gpamm_host *h = gpamm_host_sim_create(&sc);
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	struct gc_arg a = { .what = what };
	struct ev_thread ev;
	uint64_t hva;

	CHECK(h);
	CHECK_EQ_INT(h->ops->notifier_register(h, &my_ops, &my_mn), 0); /* before the VM's */
	cfg.host = h;
	CHECK_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	CHECK_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	CHECK_EQ_INT(gpamm_sim_mmap(h, 4 * PSZ, 0, &hva), 0);
	CHECK_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = GPA0, .memory_size = 4 * PSZ, .userspace_addr = hva }), 0);
	a.h = h;
	a.hva = hva;
	CHECK_EQ_INT(gpamm_vcpu_set_guest(v, guest_call_during_event, &a, 0), 0);
	step("guest maps page 0");
	CHECK_EQ(vt_run_once(v, 0), GPAMM_EXIT_REQUEST);
	ev.h = h;
	ev.hva = hva;
	atomic_store(&ev_in_event, 0);
	step("host event (MADV_DONTNEED of page 0) on another thread, guest calls the host meanwhile");
	CHECK_EQ_INT(pthread_create(&ev.tid, NULL, ev_main, &ev), 0);
	CHECK_EQ(vt_run_once(v, 0), GPAMM_EXIT_DONE);
	pthread_join(ev.tid, NULL);
	EXPECT_EQ_INT(ev.ret, 0);
	EXPECT_EQ_INT(a.ret, 0);
	step("teardown");
	CHECK_EQ_INT(gpamm_vm_destroy(vm), 0);
	h->ops->notifier_unregister(h, &my_mn);
	gpamm_host_destroy(h);
}

ISOLATED_TEST(test_break_guest_sim_test_young_during_event)
{
	guest_call_case(GC_TEST_YOUNG);
}

ISOLATED_TEST(test_break_guest_sim_read_during_event)
{
	guest_call_case(GC_READ);
}

ISOLATED_TEST(test_break_guest_sim_mmap_during_event)
{
	guest_call_case(GC_MMAP);
}

/* control: clear_young is wrapped (leaves guest mode) */
ISOLATED_TEST(test_break_guest_sim_clear_young_during_event)
{
	guest_call_case(GC_CLEAR_YOUNG);
}

/* ---- 2. logging turned on while a read fault is parked after its pin -------- */

/*
 * vCPU B read-faults page P of a slot that does not log: it samples the slot
 * (no logging: a writable page is mapped dirty at once) and parks after the
 * pin. The VMM turns logging on (FLAGS_ONLY) on another thread. Forced: the
 * test waits until the new flags are published (vCPU C's read fault on a
 * fresh page maps it clean). Then B goes on. When the VMM call has returned,
 * P must not be writable (logging on write-protects the slot), and a write
 * to P must be logged.
 */
struct mr_thread { pthread_t tid; struct gpamm_vm *vm; struct gpamm_userspace_memory_region r; int ret; atomic_int done; };
static void *mr_main(void *arg)
{
	struct mr_thread *t = arg;
	t->ret = gpamm_vm_set_memory_region(t->vm, &t->r);
	atomic_store(&t->done, 1);
	return NULL;
}

static void test_log_on_during_fault(unsigned where, bool write_b)
{
	struct rig r;
	struct park_thread tb;
	struct mr_thread m = { 0 };
	const unsigned pg = 3;
	struct vt_op ops_b[] = { { write_b ? VT_OP_WRITE : VT_OP_READ, GPA0 + pg * PSZ, 0xb0b }, { VT_OP_EXIT, 0, 0 },
			      { VT_OP_WRITE, GPA0 + pg * PSZ, 0xb1b }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_c[2];
	unsigned probe;
	bool published = false;
	uint64_t bm;
	gpamm_pte_t e;

	rig_create(&r, LOG_CLASSIC, 0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	park_arm(r.lot, where, where == PARK_AT_GET ? r.hva + pg * PSZ : GPA0 + pg * PSZ, 0);
	CHECK_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0), 0);
	CHECK(park_wait(r.lot, where));
	step("B parked; VMM turns logging on");
	m.vm = r.vm;
	m.r = (struct gpamm_userspace_memory_region){ .slot = 0, .flags = GPAMM_MEM_LOG_DIRTY_PAGES,
		.guest_phys_addr = GPA0, .memory_size = NPAGES * PSZ, .userspace_addr = r.hva };
	CHECK_EQ_INT(pthread_create(&m.tid, NULL, mr_main, &m), 0);
	/* wait for the publish: C read-faults fresh pages until one maps clean */
	for (probe = 10; probe < NPAGES && !published; probe++) {
		ops_c[0] = (struct vt_op){ VT_OP_READ, GPA0 + probe * PSZ, 0 };
		ops_c[1] = (struct vt_op){ VT_OP_END, 0, 0 };
		CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[2], vt_guest_script, ops_c, 0), 0);
		CHECK_EQ(vt_run_once(r.v[2], 0), GPAMM_EXIT_DONE);
		e = pte_of(&r, probe);
		CHECK(e);
		published = !(e & WBITS);
		if (!published) {
			struct timespec ts = { 0, 20 * 1000 * 1000 }; /* a hang guard's poll */
			nanosleep(&ts, NULL);
		}
	}
	CHECK(published);
	EXPECT_EQ(atomic_load(&m.done), 0); /* it waits for B */
	step("release B");
	park_release(r.lot, where);
	pthread_join(tb.tid, NULL);
	pthread_join(m.tid, NULL);
	CHECK_EQ_INT(m.ret, 0);
	CHECK_EQ(tb.reason, GPAMM_EXIT_REQUEST);
	e = pte_of(&r, pg);
	if (e & WBITS)
		printf("# P is 0x%llx after logging was turned on: still writable\n",
		       (unsigned long long)e);
	EXPECT_EQ(e & WBITS, 0);
	/* bits from before logging: none reported; B writes P: reported */
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	EXPECT_EQ(bm & ~(1ULL << pg), 0);
	tb.lot = NULL;
	CHECK_EQ_INT(park_thread_start(&tb, r.v[1], NULL, 0), 0);
	pthread_join(tb.tid, NULL);
	CHECK_EQ(tb.reason, GPAMM_EXIT_DONE);
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	if (!(bm & (1ULL << pg)))
		printf("# B's write to P after logging was turned on is not in the log (0x%llx)\n",
		       (unsigned long long)bm);
	EXPECT(bm & (1ULL << pg));
	rig_destroy(&r);
}

ISOLATED_TEST(test_break_log_on_while_read_fault_pinned)
{
	test_log_on_during_fault(GPAMM_PAUSE_FAULT_PINNED, false);
}

ISOLATED_TEST(test_break_log_on_while_read_fault_in_get_page)
{
	test_log_on_during_fault(PARK_AT_GET, false);
}

ISOLATED_TEST(test_break_log_on_while_write_fault_seq)
{
	test_log_on_during_fault(GPAMM_PAUSE_FAULT_SEQ, true);
}

/* ---- 3. DELETE / MOVE while a fault is parked ---------------------------------- */

static void slot_change_during_fault(unsigned where, bool move, bool write_b)
{
	struct rig r;
	struct park_thread tb;
	struct mr_thread m = { 0 };
	const unsigned pg = 5;
	const uint64_t newgpa = 0x800000;
	struct vt_op ops_b[] = { { write_b ? VT_OP_WRITE : VT_OP_READ, GPA0 + pg * PSZ, 0xb0b }, { VT_OP_EXIT, 0, 0 },
			      { VT_OP_READ, GPA0 + pg * PSZ, 0 }, { VT_OP_READ, newgpa + pg * PSZ, 0 },
			      { VT_OP_END, 0, 0 } };
	struct gpamm_vm_stats st;
	uint64_t word = 0x77aa;

	rig_create(&r, LOG_CLASSIC, 0);
	memcpy(r.mem + pg * PSZ, &word, 8);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	park_arm(r.lot, where, where == PARK_AT_GET ? r.hva + pg * PSZ : GPA0 + pg * PSZ, 0);
	CHECK_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0), 0);
	CHECK(park_wait(r.lot, where));
	step("B parked; VMM %s slot 0", move ? "moves" : "deletes");
	m.vm = r.vm;
	m.r = (struct gpamm_userspace_memory_region){ .slot = 0, .guest_phys_addr = move ? newgpa : 0,
		.memory_size = move ? NPAGES * PSZ : 0, .userspace_addr = move ? r.hva : 0 };
	CHECK_EQ_INT(pthread_create(&m.tid, NULL, mr_main, &m), 0);
	park_release(r.lot, where);
	pthread_join(m.tid, NULL);
	CHECK_EQ_INT(m.ret, 0);
	step("after the change returned");
	/* nothing left at the old GPA, whatever B did */
	EXPECT_EQ_INT(gpamm_vm_translate(r.vm, GPA0 + pg * PSZ, NULL, NULL), -ENOENT);
	pthread_join(tb.tid, NULL);
	CHECK_EQ(tb.reason, GPAMM_EXIT_REQUEST);
	EXPECT_EQ_INT(gpamm_vm_translate(r.vm, GPA0 + pg * PSZ, NULL, NULL), -ENOENT);
	tb.lot = NULL;
	CHECK_EQ_INT(park_thread_start(&tb, r.v[1], NULL, 0), 0);
	pthread_join(tb.tid, NULL);
	CHECK_EQ(tb.reason, GPAMM_EXIT_DONE);
	EXPECT_EQ(ops_b[2].val, 0);                    /* the old GPA is MMIO now */
	EXPECT_EQ(ops_b[3].val, move ? (write_b ? 0xb0b : 0x77aa) : 0);
	EXPECT_EQ_INT(gpamm_vm_translate(r.vm, GPA0 + pg * PSZ, NULL, NULL), -ENOENT);
	gpamm_vm_stats(r.vm, &st);
	EXPECT_EQ(st.pinned, 0);
	rig_destroy(&r);
}

ISOLATED_TEST(test_break_delete_while_fault_pinned)
{
	slot_change_during_fault(GPAMM_PAUSE_FAULT_PINNED, false, false);
}

ISOLATED_TEST(test_break_move_while_write_fault_pinned)
{
	slot_change_during_fault(GPAMM_PAUSE_FAULT_PINNED, true, true);
}

ISOLATED_TEST(test_break_move_while_fault_in_get_page)
{
	slot_change_during_fault(PARK_AT_GET, true, false);
}

/* ---- 4. the host's address space goes away while a fault is parked ------------ */

static void host_gone_during_fault(unsigned where)
{
	struct rig r;
	struct park_thread tb;
	const unsigned pg = 2;
	struct vt_op ops_b[] = { { VT_OP_WRITE, GPA0 + pg * PSZ, 0xb0b }, { VT_OP_END, 0, 0 } };
	struct gpamm_vm_stats st;
	uint64_t bm[1];

	rig_create(&r, LOG_CLASSIC, GPAMM_MEM_LOG_DIRTY_PAGES);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	park_arm(r.lot, where, where == PARK_AT_GET ? r.hva + pg * PSZ : GPA0 + pg * PSZ, 0);
	CHECK_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0), 0);
	CHECK(park_wait(r.lot, where));
	step("B parked; the owner destroys the (inner) host");
	gpamm_host_destroy(r.inner);
	r.inner_gone = true;
	step("VMM calls after the host is gone");
	EXPECT_EQ_INT(gpamm_vm_set_memory_region(r.vm, &(struct gpamm_userspace_memory_region){
		.slot = 1, .guest_phys_addr = 0x4000000, .memory_size = PSZ, .userspace_addr = r.hva }), -EIO);
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, bm), -EIO);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 0, NPAGES, bm), -EIO);
	EXPECT_EQ_INT(gpamm_vm_mark_idle(r.vm, GPA0, PSZ), -EIO);
	EXPECT_EQ_INT(gpamm_vm_test_young(r.vm, GPA0, PSZ, NULL), -EIO);
	EXPECT_EQ_INT(gpamm_vm_destroy(r.vm), -EBUSY); /* B is inside run */
	step("release B");
	park_release(r.lot, where);
	pthread_join(tb.tid, NULL);
	EXPECT_EQ(tb.reason, GPAMM_EXIT_MEMORY_FAULT);
	EXPECT_EQ_INT(gpamm_vcpu_run_state(r.v[1])->memory_fault.error, -EFAULT);
	EXPECT_EQ_INT(gpamm_vm_translate(r.vm, GPA0 + pg * PSZ, NULL, NULL), -ENOENT);
	EXPECT_EQ_INT(gpamm_vcpu_run(r.v[1]), -EIO);
	gpamm_vm_stats(r.vm, &st);
	EXPECT_EQ(st.pinned, 0);
	rig_destroy(&r);
}

ISOLATED_TEST(test_break_host_gone_while_fault_pinned)
{
	host_gone_during_fault(GPAMM_PAUSE_FAULT_PINNED);
}

ISOLATED_TEST(test_break_host_gone_while_fault_in_get_page)
{
	host_gone_during_fault(PARK_AT_GET);
}

ISOLATED_TEST(test_break_host_gone_while_fault_seq)
{
	host_gone_during_fault(GPAMM_PAUSE_FAULT_SEQ);
}

/* The host's address space goes away while a DELETE is under way: the
 * DELETE is parked (it waits for B's RCU read side), the host goes, then
 * both go on. */
ISOLATED_TEST(test_break_host_gone_during_delete)
{
	struct rig r;
	struct park_thread tb;
	struct mr_thread m = { 0 };
	struct vt_op ops_b[] = { { VT_OP_READ, GPA0, 0 }, { VT_OP_END, 0, 0 } };

	rig_create(&r, LOG_CLASSIC, 0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAULT_PINNED, GPA0, 0);
	CHECK_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_FAULT_PINNED));
	m.vm = r.vm;
	m.r = (struct gpamm_userspace_memory_region){ .slot = 0 };
	CHECK_EQ_INT(pthread_create(&m.tid, NULL, mr_main, &m), 0);
	gpamm_host_destroy(r.inner);
	r.inner_gone = true;
	park_release(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	pthread_join(m.tid, NULL);
	pthread_join(tb.tid, NULL);
	EXPECT(m.ret == 0 || m.ret == -EIO);
	EXPECT_EQ(tb.reason, GPAMM_EXIT_MEMORY_FAULT);
	EXPECT_EQ_INT(gpamm_vm_translate(r.vm, GPA0, NULL, NULL), -ENOENT);
	rig_destroy(&r);
}

/* ---- 5. two write faults on one page with a dirty-log round in between -------- */

/*
 * B write-faults P and parks after its pin. A write-faults P (dirty, logged,
 * A caches it writable). The VMM's round reports P and write-protects it.
 * B goes on: it must make P dirty again and log it (its store follows), and
 * no later round may miss a write.
 */
static void write_write_round(enum log_mode mode)
{
	struct rig r;
	struct park_thread tb;
	const unsigned pg = 4;
	const uint64_t gpa = GPA0 + pg * PSZ;
	struct vt_op ops_a[] = { { VT_OP_WRITE, gpa, 0xa1 }, { VT_OP_EXIT, 0, 0 }, { VT_OP_WRITE, gpa, 0xa2 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_b[] = { { VT_OP_WRITE, gpa, 0xb1 }, { VT_OP_END, 0, 0 } };
	uint64_t bm1, bm2, bm3, word;

	rig_create(&r, mode, GPAMM_MEM_LOG_DIRTY_PAGES);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, ops_a, 0), 0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAULT_PINNED, gpa, 0);
	CHECK_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_FAULT_PINNED));
	CHECK_EQ(vt_run_once(r.v[0], 0), GPAMM_EXIT_REQUEST);
	bm1 = log_round(&r);
	EXPECT(bm1 & (1ULL << pg));
	EXPECT_EQ(pte_of(&r, pg) & WBITS, 0);
	park_release(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	pthread_join(tb.tid, NULL);
	CHECK_EQ(tb.reason, GPAMM_EXIT_DONE);
	memcpy(&word, r.mem + pg * PSZ, 8);
	EXPECT_EQ(word, 0xb1);
	EXPECT_EQ(pte_of(&r, pg) & WBITS, WBITS);
	bm2 = log_round(&r);
	if (!(bm2 & (1ULL << pg)))
		printf("# %s: B's write after round 1 not reported by round 2 (0x%llx)\n",
		       mode_name[mode], (unsigned long long)bm2);
	EXPECT(bm2 & (1ULL << pg));
	CHECK_EQ(vt_run_once(r.v[0], 0), GPAMM_EXIT_DONE);
	bm3 = log_round(&r);
	EXPECT(bm3 & (1ULL << pg));
	rig_destroy(&r);
}

ISOLATED_TEST(test_break_write_write_round_classic) { write_write_round(LOG_CLASSIC); }
ISOLATED_TEST(test_break_write_write_round_manual) { write_write_round(LOG_MANUAL); }
ISOLATED_TEST(test_break_write_write_round_ring) { write_write_round(LOG_RING); }

/* ---- 6. the ring fills up while a write fault is parked ---------------------- */

/*
 * vCPU B's ring (128, 64 reserved) holds 63 entries; B write-faults page 63
 * and parks after the pin. The push that makes the ring soft-full happens
 * when B goes on: B must exit DIRTY_RING_FULL and not run until a reset;
 * after the reset the write completes and every page is reported.
 */
ISOLATED_TEST(test_break_ring_full_mid_fault)
{
	struct rig r;
	struct park_thread tb;
	struct vt_op ops[NPAGES + 2];
	uint64_t word;
	unsigned n = 0;
	uint64_t bm;

	rig_create(&r, LOG_RING, GPAMM_MEM_LOG_DIRTY_PAGES);
	for (unsigned i = 0; i < 63; i++)
		ops[i] = (struct vt_op){ VT_OP_WRITE, GPA0 + i * PSZ, 0x100 + i };
	ops[63] = (struct vt_op){ VT_OP_WRITE, GPA0 + 63 * PSZ, 0x1063 };
	ops[64] = (struct vt_op){ VT_OP_READ, GPA0 + 63 * PSZ, 0 };
	ops[65] = (struct vt_op){ VT_OP_END, 0, 0 };
	CHECK_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAULT_PINNED, GPA0 + 63 * PSZ, 0);
	CHECK_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0), 0);
	CHECK(park_wait(r.lot, GPAMM_PAUSE_FAULT_PINNED));
	park_release(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	pthread_join(tb.tid, NULL);
	EXPECT_EQ(tb.reason, GPAMM_EXIT_DIRTY_RING_FULL);
	/* not reset: it will not run */
	EXPECT_EQ(vt_run_once(r.v[1], 0), GPAMM_EXIT_DIRTY_RING_FULL);
	bm = ring_harvest(&r, &n);
	EXPECT_EQ(n, 64);
	EXPECT_EQ(bm, ~0ULL);
	EXPECT_EQ_INT(gpamm_vm_reset_dirty_rings(r.vm), 64);
	EXPECT_EQ(vt_run_once(r.v[1], 0), GPAMM_EXIT_DONE);
	EXPECT_EQ(ops[64].val, 0x1063);
	memcpy(&word, r.mem + 63 * PSZ, 8);
	EXPECT_EQ(word, 0x1063);
	bm = ring_harvest(&r, &n);
	/* the write that filled the ring faulted again after the reset */
	EXPECT(bm & (1ULL << 63));
	EXPECT_EQ_INT(gpamm_vm_reset_dirty_rings(r.vm), n);
	rig_destroy(&r);
}

/* ---- 7. checking mode: no false stale accesses during memslot churn ----------- */

struct churn_guest { atomic_int stop; uint64_t bad; _Atomic uint64_t iters; };

/* wait (hang guard 5 s) until the guest has done at least one more pass */
static bool wait_iters(struct churn_guest *g, uint64_t after)
{
	for (unsigned i = 0; i < 500000; i++) {
		if (atomic_load(&g->iters) > after)
			return true;
		struct timespec ts = { 0, 10000 };
		nanosleep(&ts, NULL);
	}
	return false;
}
static int guest_hammer(struct gpamm_vcpu *v, void *arg)
{
	struct churn_guest *g = arg;

	while (!atomic_load(&g->stop)) {
		for (unsigned i = 0; i < 8; i++) {
			uint64_t gpa = GPA0 + i * PSZ, val = gpa ^ 0x5a5a;
			gpamm_guest_write(v, gpa, 8, val);
			if (gpamm_guest_read(v, gpa, 8) != val)
				g->bad++;
		}
		atomic_fetch_add(&g->iters, 1);
	}
	return 0;
}

ISOLATED_TEST(test_break_checking_no_false_stale_churn)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 256, .checking = true };
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };
	struct gpamm_host *h = gpamm_host_sim_create(&sc);
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	struct churn_guest g = { 0 };
	struct park_thread t;
	struct gpamm_vm_stats st;
	uint64_t hva_a, hva_b;

	CHECK(h);
	cfg.host = h;
	CHECK_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	CHECK_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	CHECK_EQ_INT(gpamm_sim_mmap(h, 8 * PSZ, 0, &hva_a), 0);
	CHECK_EQ_INT(gpamm_sim_mmap(h, 16 * PSZ, 0, &hva_b), 0);
	CHECK_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = GPA0, .memory_size = 8 * PSZ, .userspace_addr = hva_a }), 0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(v, guest_hammer, &g, 0), 0);
	CHECK_EQ_INT(park_thread_start(&t, v, NULL, 0), 0);
	for (unsigned round = 0; round < 200; round++) {
		uint64_t base = 0x1000000 + (round % 4) * 0x100000;

		step("churn round %u", round);
		CHECK(wait_iters(&g, atomic_load(&g.iters)));
		CHECK_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
			.slot = 1 + round % 3, .guest_phys_addr = base, .memory_size = 16 * PSZ,
			.userspace_addr = hva_b }), 0);
		CHECK_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
			.slot = 1 + round % 3, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = base,
			.memory_size = 16 * PSZ, .userspace_addr = hva_b }), 0);
		CHECK_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
			.slot = 1 + round % 3, .flags = GPAMM_MEM_LOG_DIRTY_PAGES,
			.guest_phys_addr = base + 0x80000, .memory_size = 16 * PSZ,
			.userspace_addr = hva_b }), 0);
		CHECK_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
			.slot = 1 + round % 3 }), 0);
		/* slot 0 too: log on and off (FLAGS_ONLY of the slot being hammered) */
		CHECK_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
			.slot = 0, .flags = (round & 1) ? 0 : GPAMM_MEM_LOG_DIRTY_PAGES,
			.guest_phys_addr = GPA0, .memory_size = 8 * PSZ, .userspace_addr = hva_a }), 0);
	}
	atomic_store(&g.stop, 1);
	pthread_join(t.tid, NULL);
	CHECK_EQ(t.reason, GPAMM_EXIT_DONE);
	gpamm_vm_stats(vm, &st);
	printf("# %llu guest iterations, %llu stale, %llu bad reads\n", (unsigned long long)atomic_load(&g.iters),
	       (unsigned long long)st.stale_accesses, (unsigned long long)g.bad);
	EXPECT_EQ(st.stale_accesses, 0);
	EXPECT_EQ(g.bad, 0);
	CHECK_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_break_guest_sim_test_young_during_event);
	TEST(test_break_guest_sim_read_during_event);
	TEST(test_break_guest_sim_mmap_during_event);
	TEST(test_break_guest_sim_clear_young_during_event);
	TEST(test_break_log_on_while_read_fault_pinned);
	TEST(test_break_log_on_while_read_fault_in_get_page);
	TEST(test_break_log_on_while_write_fault_seq);
	TEST(test_break_delete_while_fault_pinned);
	TEST(test_break_move_while_write_fault_pinned);
	TEST(test_break_move_while_fault_in_get_page);
	TEST(test_break_host_gone_while_fault_pinned);
	TEST(test_break_host_gone_while_fault_in_get_page);
	TEST(test_break_host_gone_while_fault_seq);
	TEST(test_break_host_gone_during_delete);
	TEST(test_break_write_write_round_classic);
	TEST(test_break_write_write_round_manual);
	TEST(test_break_write_write_round_ring);
	TEST(test_break_ring_full_mid_fault);
	TEST(test_break_checking_no_false_stale_churn);
	return tap_done();
}
