// SPDX-License-Identifier: MIT
/*
 * Breaking the memslot sets with forced interleavings (parking lot): a vCPU
 * parked mid-fault (each pause point, and inside the host's get_page)
 * across a MOVE / DELETE of its slot, then an ABA re-CREATE at the old GPA
 * (its per-vCPU slot cache still names the freed slot); host events on an
 * HVA aliased by several slots while the DELETE waits for the parked
 * fault; an invalidation held open while an alias slot is created on its
 * HVA. A sim host with checking on sits inside the parking host: every
 * legitimate access must count 0 stale. alarm() is a hang guard only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gpamm/inject.h"
#include "harness/park.h"
#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define NP 8
#define GA 0x100000ULL
#define GB 0x400000ULL
#define GC 0x800000ULL


#define MMIO_READ 0x3333333333333333ULL


struct mr_thread {
	pthread_t tid;
	struct gpamm_vm *vm;
	struct gpamm_userspace_memory_region r;
	int ret;
	atomic_int done;
};
static void *mr_main(void *arg)
{
	struct mr_thread *t = arg;

	t->ret = gpamm_vm_set_memory_region(t->vm, &t->r);
	atomic_store(&t->done, 1);
	return NULL;
}
static void mr_start(struct mr_thread *m, struct gpamm_vm *vm, uint32_t slot, uint32_t flags,
		     uint64_t gpa, uint64_t size, uint64_t hva)
{
	memset(m, 0, sizeof(*m));
	m->vm = vm;
	m->r = (struct gpamm_userspace_memory_region){ .slot = slot, .flags = flags,
		.guest_phys_addr = gpa, .memory_size = size, .userspace_addr = hva };
	ASSERT_EQ_INT(pthread_create(&m->tid, NULL, mr_main, m), 0);
}

struct rig {
	struct park_lot *lot;
	struct gpamm_host *inner, *ph;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v[3];
	uint64_t hva, hva2;
};

static int set_region(struct gpamm_vm *vm, uint32_t slot, uint32_t flags, uint64_t gpa,
		      uint64_t size, uint64_t hva)
{
	return gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = slot, .flags = flags, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = hva });
}

/* Two VMAs of NP pages: page p of the first holds 0x1000 + p, of the second 0x2000 + p. */
static void rig_create(struct rig *r)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 512, .checking = true };
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };

	memset(r, 0, sizeof(*r));
	alarm(60);
	r->lot = park_lot_create();
	r->inner = gpamm_host_sim_create(&sc);
	ASSERT(r->lot && r->inner);
	r->ph = park_host_create(r->inner, r->lot);
	ASSERT(r->ph);
	cfg.host = r->ph;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &r->vm), 0);
	ASSERT_EQ_INT(gpamm_vm_set_pause_hook(r->vm, park_pause_hook, r->lot), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(r->inner, NP * PSZ, 0, &r->hva), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(r->inner, NP * PSZ, 0, &r->hva2), 0);
	for (uint64_t p = 0; p < NP; p++) {
		uint64_t a = 0x1000 + p, b = 0x2000 + p;
		ASSERT_EQ_INT(gpamm_sim_write(r->inner, r->hva + p * PSZ, &a, 8), 0);
		ASSERT_EQ_INT(gpamm_sim_write(r->inner, r->hva2 + p * PSZ, &b, 8), 0);
	}
	for (unsigned i = 0; i < 3; i++)
		ASSERT_EQ_INT(gpamm_vcpu_create(r->vm, i, &r->v[i]), 0);
}

static uint64_t stale(struct rig *r)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(r->vm, &st);
	return st.stale_accesses;
}

static void rig_destroy(struct rig *r)
{
	ASSERT_EQ(stale(r), 0);
	ASSERT_EQ_INT(gpamm_vm_destroy(r->vm), 0);
	gpamm_host_destroy(r->ph);
	gpamm_host_destroy(r->inner);
	park_lot_destroy(r->lot);
	alarm(0);
}

/*
 * B reads GA + PSZ (slot 0, first VMA) and parks at @where; the VMM moves
 * slot 0 to GB (or deletes it) on another thread, which must wait for B.
 * B goes on, exits; the move completes: no translation at GA. Then slot 1
 * is created at GA over the second VMA (the freed slot's GPA again: B's
 * cached slot is stale), and B reads GA + PSZ and GB + PSZ.
 */
static void parked_across_change(unsigned where, bool del)
{
	struct rig r;
	struct park_thread tb;
	struct mr_thread m;
	struct vt_op ops[] = { { VT_OP_READ, GA + PSZ, 0 }, { VT_OP_EXIT, 0, 0 },
			    { VT_OP_READ, GA + PSZ, 0 }, { VT_OP_READ, GB + PSZ, 0 },
			    { VT_OP_READ, GA + 2 * PSZ, 0 }, { VT_OP_END, 0, 0 } };

	rig_create(&r);
	ASSERT_EQ_INT(set_region(r.vm, 0, 0, GA, NP * PSZ, r.hva), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops, 0), 0);
	park_arm(r.lot, where, where == PARK_AT_GET ? r.hva + PSZ : GA + PSZ, 0);
	ASSERT_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0x33), 0);
	ASSERT(park_wait(r.lot, where));
	if (del)
		mr_start(&m, r.vm, 0, 0, 0, 0, 0);
	else
		mr_start(&m, r.vm, 0, 0, GB, NP * PSZ, r.hva);
	/* give the change every chance to (wrongly) finish: it must wait for B */
	{
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	ASSERT_EQ(atomic_load(&m.done), 0);
	park_release(r.lot, where);
	pthread_join(tb.tid, NULL);
	pthread_join(m.tid, NULL);
	ASSERT_EQ_INT(m.ret, 0);
	ASSERT_EQ(tb.reason, GPAMM_EXIT_REQUEST);
	ASSERT_EQ(ops[0].val, 0x1001);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, GA + PSZ, NULL, NULL), -ENOENT);
	/* ABA: a new slot (another id) at the old GPA over other memory */
	ASSERT_EQ_INT(set_region(r.vm, 1, 0, GA, NP * PSZ, r.hva2), 0);
	ASSERT_EQ_INT(park_thread_start(&tb, r.v[1], NULL, 0x33), 0);
	pthread_join(tb.tid, NULL);
	ASSERT_EQ(tb.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(ops[2].val, 0x2001);
	ASSERT_EQ(ops[3].val, del ? MMIO_READ : 0x1001);
	ASSERT_EQ(ops[4].val, 0x2002);
	/* and slot 0 (if moved) comes back to GC with the same id: B's vCPU is fine */
	if (!del) {
		struct vt_op ops2[] = { { VT_OP_READ, GC, 0 }, { VT_OP_READ, GB, 0 }, { VT_OP_READ, GA, 0 },
				     { VT_OP_END, 0, 0 } };
		ASSERT_EQ_INT(set_region(r.vm, 0, 0, GC, NP * PSZ, r.hva), 0);
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops2, 0), 0);
		ASSERT_EQ(vt_run_once(r.v[1], 0x33), GPAMM_EXIT_DONE);
		ASSERT_EQ(ops2[0].val, 0x1000);
		ASSERT_EQ(ops2[1].val, MMIO_READ);
		ASSERT_EQ(ops2[2].val, 0x2000);
	}
	rig_destroy(&r);
}

static void test_move_while_parked_seq(void) { parked_across_change(GPAMM_PAUSE_FAULT_SEQ, false); }
static void test_move_while_parked_pinned(void) { parked_across_change(GPAMM_PAUSE_FAULT_PINNED, false); }
static void test_move_while_parked_install(void) { parked_across_change(GPAMM_PAUSE_FAULT_INSTALL, false); }
static void test_move_while_parked_in_get(void) { parked_across_change(PARK_AT_GET, false); }
static void test_delete_while_parked_seq(void) { parked_across_change(GPAMM_PAUSE_FAULT_SEQ, true); }
static void test_delete_while_parked_pinned(void) { parked_across_change(GPAMM_PAUSE_FAULT_PINNED, true); }
static void test_delete_while_parked_install(void) { parked_across_change(GPAMM_PAUSE_FAULT_INSTALL, true); }

/*
 * Slots 0 (GA) and 2 (GC) alias the first VMA. B write-faults GA + PSZ and
 * parks with the page pinned. A DELETE of slot 0 starts (its INVALID copy
 * is published; it waits for B). The host drops the aliased pages
 * (madvise DONTNEED): GC's translations must go as well; B retries and
 * maps a fresh page. When everything is done, neither alias has a stale
 * translation, GC reads the zeroed page with B's write on it, and slot 0's
 * old range has nothing.
 */
static void test_alias_event_while_delete_waits(void)
{
	struct rig r;
	struct park_thread tb;
	struct mr_thread m;
	struct vt_op ops_b[] = { { VT_OP_WRITE, GA + PSZ, 0xbeef }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_c[] = { { VT_OP_READ, GC + PSZ, 0 }, { VT_OP_READ, GC + 3 * PSZ, 0 }, { VT_OP_END, 0, 0 } };

	rig_create(&r);
	ASSERT_EQ_INT(set_region(r.vm, 0, 0, GA, NP * PSZ, r.hva), 0);
	ASSERT_EQ_INT(set_region(r.vm, 2, 0, GC, NP * PSZ, r.hva), 0);
	/* C maps GC's pages first */
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[2], vt_guest_script, ops_c, 0), 0);
	ASSERT_EQ(vt_run_once(r.v[2], 0x33), GPAMM_EXIT_DONE);
	ASSERT_EQ(ops_c[0].val, 0x1001);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, GC + 3 * PSZ, NULL, NULL), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAULT_PINNED, GA + PSZ, 0);
	ASSERT_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0x33), 0);
	ASSERT(park_wait(r.lot, GPAMM_PAUSE_FAULT_PINNED));
	mr_start(&m, r.vm, 0, 0, 0, 0, 0);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(r.inner, r.hva, NP * PSZ), 0);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, GC + 3 * PSZ, NULL, NULL), -ENOENT);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, GC + PSZ, NULL, NULL), -ENOENT);
	park_release(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	pthread_join(tb.tid, NULL);
	pthread_join(m.tid, NULL);
	ASSERT_EQ_INT(m.ret, 0);
	ASSERT_EQ(tb.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, GA + PSZ, NULL, NULL), -ENOENT);
	ops_c[0].val = ops_c[1].val = 0;
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[2], vt_guest_script, ops_c, 0), 0);
	ASSERT_EQ(vt_run_once(r.v[2], 0x33), GPAMM_EXIT_DONE);
	ASSERT_EQ(ops_c[0].val, 0xbeef);
	ASSERT_EQ(ops_c[1].val, 0);
	rig_destroy(&r);
}

/*
 * An invalidation of the first VMA's page 2 is held open. Slot 3 is created
 * at GC as an alias of slot 0 (GA) over that VMA. B read-faults GC + 2 * PSZ:
 * it must not install while the invalidation is open (it retries), and
 * once the invalidation ends it maps the page. Meanwhile GA + 2 * PSZ,
 * faulted by nobody, stays unmapped, and GA + 3 * PSZ (outside) maps at once.
 */
static void test_open_invalidation_new_alias(void)
{
	struct rig r;
	struct park_thread tb;
	struct vt_op ops_b[] = { { VT_OP_READ, GC + 2 * PSZ, 0 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_c[] = { { VT_OP_READ, GA + 3 * PSZ, 0 }, { VT_OP_READ, GC + 3 * PSZ, 0 }, { VT_OP_END, 0, 0 } };
	struct timespec ts = { 0, 1000 * 1000 };
	unsigned spins = 0;

	rig_create(&r);
	ASSERT_EQ_INT(set_region(r.vm, 0, 0, GA, NP * PSZ, r.hva), 0);
	park_host_invalidate_start(r.ph, r.hva + 2 * PSZ, r.hva + 3 * PSZ);
	ASSERT_EQ_INT(set_region(r.vm, 3, 0, GC, NP * PSZ, r.hva), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[2], vt_guest_script, ops_c, 0), 0);
	ASSERT_EQ(vt_run_once(r.v[2], 0x33), GPAMM_EXIT_DONE);
	ASSERT_EQ(ops_c[0].val, 0x1003);
	ASSERT_EQ(ops_c[1].val, 0x1003);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	ASSERT_EQ_INT(park_thread_start(&tb, r.v[1], NULL, 0x33), 0);
	/* wait (hang guard poll) until B has retried a few times */
	while (park_hits(r.lot, GPAMM_PAUSE_FAULT_PINNED) < 5 && spins++ < 5000)
		nanosleep(&ts, NULL);
	ASSERT_GE(park_hits(r.lot, GPAMM_PAUSE_FAULT_PINNED), 5);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, GC + 2 * PSZ, NULL, NULL), -ENOENT);
	park_host_invalidate_end(r.ph, r.hva + 2 * PSZ, r.hva + 3 * PSZ);
	pthread_join(tb.tid, NULL);
	ASSERT_EQ(tb.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(ops_b[0].val, 0x1002);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, GC + 2 * PSZ, NULL, NULL), 0);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, GA + 2 * PSZ, NULL, NULL), -ENOENT);
	rig_destroy(&r);
}

/*
 * Logging slot 0 is moved while B's write fault to it is parked after the
 * pin: B's write must land and be logged (at its offset in the slot), and
 * after the move a write at the new GPA is logged at the same offset.
 */
static void test_dirty_write_parked_across_move(void)
{
	struct rig r;
	struct park_thread tb;
	struct mr_thread m;
	struct vt_op ops_b[] = { { VT_OP_WRITE, GA + 5 * PSZ, 0xd1 }, { VT_OP_EXIT, 0, 0 },
			      { VT_OP_WRITE, GB + 6 * PSZ, 0xd2 }, { VT_OP_READ, GB + 5 * PSZ, 0 },
			      { VT_OP_END, 0, 0 } };
	uint64_t bm = 0, val = 0;

	rig_create(&r);
	ASSERT_EQ_INT(set_region(r.vm, 0, GPAMM_MEM_LOG_DIRTY_PAGES, GA, NP * PSZ, r.hva), 0);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	park_arm(r.lot, GPAMM_PAUSE_FAULT_PINNED, GA + 5 * PSZ, 0);
	ASSERT_EQ_INT(park_thread_start(&tb, r.v[1], r.lot, 0x33), 0);
	ASSERT(park_wait(r.lot, GPAMM_PAUSE_FAULT_PINNED));
	mr_start(&m, r.vm, 0, GPAMM_MEM_LOG_DIRTY_PAGES, GB, NP * PSZ, r.hva);
	park_release(r.lot, GPAMM_PAUSE_FAULT_PINNED);
	pthread_join(tb.tid, NULL);
	pthread_join(m.tid, NULL);
	ASSERT_EQ_INT(m.ret, 0);
	ASSERT_EQ(tb.reason, GPAMM_EXIT_REQUEST);
	ASSERT_EQ_INT(gpamm_sim_read(r.inner, r.hva + 5 * PSZ, &val, 8), 0);
	ASSERT_EQ(val, 0xd1);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	ASSERT_EQ(bm, 1ULL << 5);
	ASSERT_EQ_INT(park_thread_start(&tb, r.v[1], NULL, 0x33), 0);
	pthread_join(tb.tid, NULL);
	ASSERT_EQ(tb.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(ops_b[3].val, 0xd1);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	ASSERT_EQ(bm, 1ULL << 6);
	rig_destroy(&r);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_move_while_parked_seq);
	TEST(test_move_while_parked_pinned);
	TEST(test_move_while_parked_install);
	TEST(test_move_while_parked_in_get);
	TEST(test_delete_while_parked_seq);
	TEST(test_delete_while_parked_pinned);
	TEST(test_delete_while_parked_install);
	TEST(test_alias_event_while_delete_waits);
	TEST(test_open_invalidation_new_alias);
	TEST(test_dirty_write_parked_across_move);
	return tap_done();
}
