// SPDX-License-Identifier: MIT
/*
 * Faults in parallel: the races that faults under mmu_lock for read open,
 * each interleaving forced with the parking lot (park.h) at the install's
 * race windows (gpamm/inject.h: TABLE_LINK, LEAF_INSTALL, FAST), never by
 * timing.
 *
 * a) Two faults link the same table: A has a new table filled and is about
 *    to link it; B links its own and maps its page under it. A's link must
 *    fail and A must use B's table (its page back in its cache): a plain
 *    store would cut B's page (and table) off.
 * b) Two faults on one leaf, read against write with logging on: A has
 *    read the empty leaf and made a clean entry; B maps the page dirty and
 *    logs it. A's install must keep B's dirty state (locking.rst's lost
 *    dirty bit, here between two installers).
 * c) A writer against a parked installer (locking.rst's ABA window): while
 *    A holds the read lock between reading the leaf and its
 *    compare-and-exchange, an invalidation of the page waits for the lock,
 *    so the entry cannot be zapped and remade under A.
 * d) A fast (dirty) fault against CLEAR: CLEAR waits for the fault that
 *    holds the read lock; after it the page is write-protected and the next
 *    write is logged again.
 * e) The serialised mode: a parked fault holds mmu_lock for write.
 * f) A lock-free walker against a table being freed: gpamm_vm_translate()
 *    walks as the hardware walker does; parked holding a leaf table's
 *    address while the host's exit (release) unlinks and frees every
 *    table, it must still read a live table: the free waits for its RCU
 *    read-side section. With the grace period removed
 *    (GPAMM_INJECT_NO_GRACE) the walker reads freed memory, which ASan
 *    reports (the table pool poisons freed tables): shown in a child, in
 *    ASan builds.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/park.h"
#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define GPA0 0x40000000ULL /* 1 GiB: no table below the root exists before a fault */
#define NPAGES 16
#define WBITS GPAMM_PTE_WRITEABLE
#define LOW12(e) ((unsigned long long)((e) & 0xfffULL))

struct rig {
	struct park_lot *lot;
	struct gpamm_host *inner, *ph;
	struct gpamm_vm *vm;
	uint8_t *mem;
	uint64_t hva;
	struct gpamm_vcpu *v[2];
};

static void rig_create(struct rig *r, unsigned vm_flags, uint32_t slot_flags, unsigned manual)
{
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .flags = vm_flags };

	memset(r, 0, sizeof(*r));
	r->lot = park_lot_create();
	r->inner = gpamm_host_direct_create(PS);
	ASSERT(r->inner);
	r->ph = park_host_create(r->inner, r->lot);
	cfg.host = r->ph;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &r->vm), 0);
	ASSERT_EQ_INT(gpamm_vm_set_pause_hook(r->vm, park_pause_hook, r->lot), 0);
	if (manual)
		ASSERT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(r->vm, manual), 0);
	for (unsigned i = 0; i < 2; i++)
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
	struct gpamm_vm_stats st;

	gpamm_vm_stats(r->vm, &st);
	ASSERT_EQ(st.pinned, 0);
	ASSERT_EQ_INT(gpamm_vm_destroy(r->vm), 0);
	gpamm_host_destroy(r->ph);
	gpamm_host_destroy(r->inner);
	vt_free(r->mem, NPAGES * PSZ);
	park_lot_destroy(r->lot);
}

static uint64_t table_pages(struct gpamm_vm *vm)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(vm, &st);
	return st.table_pages;
}

/* Start vCPU @i of @r on a thread with @ops and wait until it parks at @where for @gpa. */
static void start_parked(struct rig *r, struct park_thread *t, unsigned i, struct vt_op *ops,
			 unsigned where, uint64_t gpa)
{
	bool parked;

	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r->v[i], vt_guest_script, ops, 0), 0);
	park_arm(r->lot, where, gpa, 0);
	ASSERT_EQ_INT(park_thread_start(t, r->v[i], r->lot, 0), 0);
	parked = park_wait(r->lot, where);
	if (!parked) {
		park_abort(r->lot);
		park_thread_join(t);
	}
	ASSERT_MSG(parked, "vCPU %u never reached pause point %u for 0x%llx", i, where,
		   (unsigned long long)gpa);
}

/* Wait (a hang guard, not an ordering) until mmu_lock has a writer waiting. */
static bool wait_writer(struct gpamm_vm *vm)
{
	for (unsigned n = 0; n < 10000000; n++) {
		bool w;

		gpamm_vm_mmu_lock_state(vm, NULL, &w);
		if (w)
			return true;
		sched_yield();
	}
	return false;
}

/* ---- a) two faults link the same table -------------------------------------------- */

static void test_table_link_race(void)
{
	const uint64_t p = GPA0 + 2 * PSZ, q = GPA0 + 5 * PSZ;
	struct vt_op ops_a[] = { { VT_OP_WRITE, p, 0xa }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_b[] = { { VT_OP_WRITE, q, 0xb }, { VT_OP_END, 0, 0 } };
	struct park_thread ta;
	gpamm_pte_t ep = 0, eq = 0;
	unsigned links_before;
	struct rig r;

	rig_create(&r, 0, 0, 0);
	ASSERT_EQ(table_pages(r.vm), 1); /* the root alone */
	/* A has its first new table (the level below the root) filled, not linked */
	start_parked(&r, &ta, 0, ops_a, GPAMM_PAUSE_TABLE_LINK, p);
	links_before = park_hits(r.lot, GPAMM_PAUSE_TABLE_LINK);

	/* B faults under the same tables meanwhile: it links both and maps Q */
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	ASSERT_EQ(vt_run_once(r.v[1], 0), GPAMM_EXIT_DONE);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, q, &eq, NULL), 0);
	ASSERT_EQ(table_pages(r.vm), 3);
	CHECK_MSG(park_hits(r.lot, GPAMM_PAUSE_TABLE_LINK) == links_before + 2,
		  "B linked %u tables while A was parked, expected 2",
		  park_hits(r.lot, GPAMM_PAUSE_TABLE_LINK) - links_before);

	/* A's link must fail; A goes on under B's tables */
	park_release(r.lot, GPAMM_PAUSE_TABLE_LINK);
	park_thread_join(&ta);
	ASSERT_EQ(ta.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, p, &ep, NULL), 0);
	CHECK_MSG(gpamm_vm_translate(r.vm, q, &eq, NULL) == 0,
		  "B's page Q is gone after A linked its table over B's: a plain store "
		  "replaced the table that maps Q");
	CHECK_MSG(table_pages(r.vm) == 3, "%llu table pages after both faults, expected 3 "
		  "(root and one table per level: the loser's page goes back to its cache)",
		  (unsigned long long)table_pages(r.vm));
	ASSERT_EQ(gpamm_pte_pfn(ep, PS), (r.hva + 2 * PSZ) >> PS);
	ASSERT_EQ(gpamm_pte_pfn(eq, PS), (r.hva + 5 * PSZ) >> PS);
	rig_destroy(&r);
}

/* ---- b) read against write on one leaf, logging on --------------------------------- */

static void test_leaf_race_read_vs_write(void)
{
	const unsigned pg = 7;
	const uint64_t p = GPA0 + pg * PSZ;
	struct vt_op ops_a[] = { { VT_OP_READ, p, 0 }, { VT_OP_END, 0, 0 } };
	struct vt_op ops_b[] = { { VT_OP_WRITE, p, 0xb1 }, { VT_OP_END, 0, 0 } };
	struct park_thread ta;
	gpamm_pte_t eb = 0, e = 0;
	uint64_t bm = 0;
	struct rig r;

	rig_create(&r, 0, GPAMM_MEM_LOG_DIRTY_PAGES, 0);
	/* A read-faults P: the leaf read (empty), a clean entry made */
	start_parked(&r, &ta, 0, ops_a, GPAMM_PAUSE_LEAF_INSTALL, p);
	/* B write-faults P meanwhile: dirty, logged */
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, ops_b, 0), 0);
	ASSERT_EQ(vt_run_once(r.v[1], 0), GPAMM_EXIT_DONE);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, p, &eb, NULL), 0);
	ASSERT_EQ(eb & WBITS, WBITS);

	park_release(r.lot, GPAMM_PAUSE_LEAF_INSTALL);
	park_thread_join(&ta);
	ASSERT_EQ(ta.reason, GPAMM_EXIT_DONE);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, p, &e, NULL), 0);
	tap_diag("P after B's write fault 0x%llx, after A's read fault 0x%llx", LOW12(eb),
		 LOW12(e));
	CHECK_MSG((e & WBITS) == WBITS, "A's read fault, installing after B's write fault, "
		  "left P 0x%llx (low bits): the dirty state B installed and logged was lost",
		  LOW12(e));
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	CHECK_MSG(bm == 1ULL << pg, "the dirty log reported 0x%llx, expected P alone",
		  (unsigned long long)bm);
	rig_destroy(&r);
}

/* ---- c) a writer waits for a parked installer ---------------------------------------- */

struct inval_arg {
	struct rig *r;
	uint64_t start, end;
	atomic_bool done;
};

static void *inval_thread(void *arg)
{
	struct inval_arg *a = arg;

	park_host_invalidate_start(a->r->ph, a->start, a->end);
	park_host_invalidate_end(a->r->ph, a->start, a->end);
	atomic_store(&a->done, true);
	return NULL;
}

static void test_writer_waits_for_installer(void)
{
	const unsigned pg = 4;
	const uint64_t p = GPA0 + pg * PSZ;
	struct vt_op ops_a[] = { { VT_OP_READ, p, 0 }, { VT_OP_END, 0, 0 } };
	struct inval_arg ia;
	struct park_thread ta;
	pthread_t th;
	unsigned readers;
	bool writer, waiting, done_while_parked, mapped_while_parked;
	gpamm_pte_t e = 0;
	struct rig r;

	rig_create(&r, 0, 0, 0);
	start_parked(&r, &ta, 0, ops_a, GPAMM_PAUSE_LEAF_INSTALL, p);
	ia = (struct inval_arg){ .r = &r, .start = r.hva + pg * PSZ, .end = r.hva + (pg + 1) * PSZ };
	atomic_init(&ia.done, false);
	ASSERT_EQ_INT(pthread_create(&th, NULL, inval_thread, &ia), 0);
	/* the invalidation is at mmu_lock, waiting for A's read section */
	waiting = wait_writer(r.vm);
	gpamm_vm_mmu_lock_state(r.vm, &readers, &writer);
	done_while_parked = atomic_load(&ia.done);
	mapped_while_parked = gpamm_vm_translate(r.vm, p, NULL, NULL) == 0;
	park_release(r.lot, GPAMM_PAUSE_LEAF_INSTALL);
	park_thread_join(&ta);
	pthread_join(th, NULL);
	ASSERT_MSG(waiting, "the invalidation never reached mmu_lock");
	ASSERT_EQ(readers, 1);
	CHECK_MSG(!done_while_parked, "the invalidation completed while a fault was between "
		  "reading the leaf and its compare-and-exchange");
	CHECK_MSG(!mapped_while_parked, "P was mapped while A was parked before its install");
	ASSERT_EQ(ta.reason, GPAMM_EXIT_DONE);
	/* A installed, the invalidation zapped after it; A's access, retried,
	 * may have mapped P again since: if so, to the page the host has now */
	if (gpamm_vm_translate(r.vm, p, &e, NULL) == 0)
		ASSERT_EQ(gpamm_pte_pfn(e, PS), (r.hva + pg * PSZ) >> PS);
	rig_destroy(&r);
}

/* ---- d) a fast dirty fault against CLEAR ---------------------------------------------- */

struct clear_arg {
	struct rig *r;
	uint64_t mask;
	int ret;
	atomic_bool done;
};

static void *clear_thread(void *arg)
{
	struct clear_arg *a = arg;

	a->ret = gpamm_vm_clear_dirty_log(a->r->vm, 0, 0, NPAGES, &a->mask);
	atomic_store(&a->done, true);
	return NULL;
}

static void test_fast_fault_vs_clear(void)
{
	const unsigned pg = 9;
	const uint64_t p = GPA0 + pg * PSZ;
	struct vt_op map_all[NPAGES + 1], ops_a[] = { { VT_OP_WRITE, p, 0xd1 }, { VT_OP_END, 0, 0 } };
	struct vt_op again[] = { { VT_OP_WRITE, p, 0xd2 }, { VT_OP_END, 0, 0 } };
	struct clear_arg ca;
	struct park_thread ta;
	gpamm_pte_t e = 0;
	uint64_t bm = 0;
	pthread_t th;
	bool waiting, done_while_parked;
	struct rig r;

	rig_create(&r, 0, 0, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
	memset(map_all, 0, sizeof(map_all));
	for (unsigned i = 0; i < NPAGES; i++)
		map_all[i] = (struct vt_op){ VT_OP_READ, GPA0 + i * PSZ, 0 };
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[1], vt_guest_script, map_all, 0), 0);
	ASSERT_EQ(vt_run_once(r.v[1], 0), GPAMM_EXIT_DONE);
	/* logging on: every page write-protected (clean, the marker kept) */
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(r.vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = GPA0,
		.memory_size = NPAGES * PSZ, .userspace_addr = r.hva }), 0);
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, p, &e, NULL), 0);
	ASSERT_EQ(e & WBITS, 0);

	/* A's write takes the fast path and stops holding the read lock */
	start_parked(&r, &ta, 0, ops_a, GPAMM_PAUSE_FAST, p);
	ca = (struct clear_arg){ .r = &r, .mask = 1ULL << pg };
	atomic_init(&ca.done, false);
	ASSERT_EQ_INT(pthread_create(&th, NULL, clear_thread, &ca), 0);
	waiting = wait_writer(r.vm);
	done_while_parked = atomic_load(&ca.done);
	park_release(r.lot, GPAMM_PAUSE_FAST);
	park_thread_join(&ta);
	pthread_join(th, NULL);
	ASSERT_MSG(waiting, "CLEAR never reached mmu_lock");
	CHECK_MSG(!done_while_parked, "CLEAR write-protected while a fast fault held the read "
		  "lock");
	ASSERT_EQ_INT(ca.ret, 0);
	ASSERT_EQ(ta.reason, GPAMM_EXIT_DONE);
	/*
	 * The fault came first, then CLEAR write-protected P. A's store itself
	 * may come after CLEAR (it is retried after the fault returns): then it
	 * faulted again, and P is dirty and in the log. Either way no write is
	 * left writable and unlogged.
	 */
	ASSERT_EQ_INT(gpamm_vm_translate(r.vm, p, &e, NULL), 0);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	tap_diag("after CLEAR: P 0x%llx, log 0x%llx", LOW12(e), (unsigned long long)bm);
	CHECK_MSG((e & WBITS) == 0 || (bm & (1ULL << pg)),
		  "P is 0x%llx after CLEAR, writable, and not in the log", LOW12(e));
	if (bm & (1ULL << pg))
		ASSERT_EQ_INT(gpamm_vm_clear_dirty_log(r.vm, 0, 0, NPAGES, &bm), 0);
	/* and the next write is logged */
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(r.v[0], vt_guest_script, again, 0), 0);
	ASSERT_EQ(vt_run_once(r.v[0], 0), GPAMM_EXIT_DONE);
	bm = 0;
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(r.vm, 0, &bm), 0);
	CHECK_MSG(bm & (1ULL << pg), "the write after CLEAR is not in the log (0x%llx)",
		  (unsigned long long)bm);
	rig_destroy(&r);
}

/* ---- e) the serialised mode ------------------------------------------------------------ */

static void lock_held_by_parked_fault(bool serial)
{
	const uint64_t p = GPA0 + 3 * PSZ;
	struct vt_op ops_a[] = { { VT_OP_WRITE, p, 0xe }, { VT_OP_END, 0, 0 } };
	struct park_thread ta;
	unsigned readers = 99;
	bool writer = !serial;
	struct rig r;

	rig_create(&r, serial ? GPAMM_VM_SERIAL_FAULTS : 0, 0, 0);
	start_parked(&r, &ta, 0, ops_a, GPAMM_PAUSE_LEAF_INSTALL, p);
	ASSERT_EQ_INT(gpamm_vm_mmu_lock_state(r.vm, &readers, &writer), 0);
	park_release(r.lot, GPAMM_PAUSE_LEAF_INSTALL);
	park_thread_join(&ta);
	tap_diag("%s: a parked fault holds %u reader slot(s), writer %s",
		 serial ? "serialised" : "parallel", readers, writer ? "yes" : "no");
	CHECK_MSG(readers == (serial ? 0u : 1u), "%u reader slots held", readers);
	CHECK_MSG(writer == serial, "writer %d", writer);
	ASSERT_EQ(ta.reason, GPAMM_EXIT_DONE);
	rig_destroy(&r);
}

static void test_parallel_fault_holds_read_lock(void)
{
	lock_held_by_parked_fault(false);
}

static void test_serial_fault_holds_write_lock(void)
{
	lock_held_by_parked_fault(true);
}

/* ---- f) a lock-free walker against a table being freed ------------------------------- */

struct walk_arg {
	struct gpamm_vm *vm;
	uint64_t gpa;
	int ret;
	gpamm_pte_t e;
};

static void *walk_thread(void *arg)
{
	struct walk_arg *a = arg;

	a->ret = gpamm_vm_translate(a->vm, a->gpa, &a->e, NULL);
	return NULL;
}

/*
 * Map a page, park a translate inside its walk, let the host go (release:
 * every table unlinked and freed), then let the walk finish. Return: what
 * the walk found (0 or -ENOENT), or -1000 when it never parked.
 */
static int walk_across_release(unsigned inject)
{
	const uint64_t p = GPA0 + 6 * PSZ;
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };
	struct vt_op ops[] = { { VT_OP_WRITE, p, 0xf }, { VT_OP_END, 0, 0 } };
	struct park_lot *lot = park_lot_create();
	struct gpamm_host *h = gpamm_host_direct_create(PS);
	struct walk_arg wa;
	struct gpamm_vcpu *v;
	struct gpamm_vm *vm;
	uint8_t *mem = vt_alloc(NPAGES * PSZ, PS);
	pthread_t th;
	bool parked;

	cfg.host = h;
	if (!lot || !h || !mem || gpamm_vm_create(&cfg, &vm) || gpamm_vcpu_create(vm, 0, &v))
		return -2000;
	gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = GPA0, .memory_size = NPAGES * PSZ,
		.userspace_addr = (uintptr_t)mem });
	gpamm_vcpu_set_guest(v, vt_guest_script, ops, 0);
	if (vt_run_once(v, 0) != GPAMM_EXIT_DONE || gpamm_vm_translate(vm, p, NULL, NULL))
		return -3000;
	gpamm_vm_inject(vm, inject);
	gpamm_vm_set_pause_hook(vm, park_pause_hook, lot);
	park_arm(lot, GPAMM_PAUSE_WALK, p, 0);
	wa = (struct walk_arg){ .vm = vm, .gpa = p };
	pthread_create(&th, NULL, walk_thread, &wa);
	parked = park_wait(lot, GPAMM_PAUSE_WALK);
	/* the host's exit: release() unlinks every table and frees them */
	gpamm_host_destroy(h);
	park_release(lot, GPAMM_PAUSE_WALK);
	pthread_join(th, NULL);
	gpamm_vm_set_pause_hook(vm, NULL, NULL);
	gpamm_vm_destroy(vm);
	vt_free(mem, NPAGES * PSZ);
	park_lot_destroy(lot);
	return parked ? wa.ret : -1000;
}

static void test_walker_vs_table_free(void)
{
	int ret = walk_across_release(0);

	ASSERT_MSG(ret != -1000, "the walk never reached its pause point");
	ASSERT_EQ_INT(ret, -ENOENT); /* a live table, its leaf cleared by the release */
}

/* The same with the grace period removed, in a child: it must be caught reading freed memory. */
static void test_walker_vs_table_free_no_grace(void)
{
#if defined(__SANITIZE_ADDRESS__)
	int fds[2], status;
	char buf[8192];
	ssize_t n, len = 0;
	pid_t pid;

	ASSERT_EQ_INT(pipe(fds), 0);
	fflush(NULL);
	pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], 2);
		close(fds[0]);
		_exit(walk_across_release(GPAMM_INJECT_NO_GRACE) == -ENOENT ? 0 : 3);
	}
	close(fds[1]);
	while ((n = read(fds[0], buf + len, sizeof(buf) - 1 - (size_t)len)) > 0)
		len += n;
	buf[len] = '\0';
	close(fds[0]);
	ASSERT_EQ_INT(waitpid(pid, &status, 0), pid);
	tap_diag("no grace period: child %s %d", WIFEXITED(status) ? "exit" : "signal",
		 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	CHECK_MSG(!(WIFEXITED(status) && WEXITSTATUS(status) == 0),
		  "with the grace period removed the walker read the freed table unnoticed");
	CHECK_MSG(strstr(buf, "AddressSanitizer") != NULL, "no ASan report in the child's "
		  "output:\n%.200s", buf);
	CHECK_MSG(strstr(buf, "gpamm_vm_translate") != NULL, "the report is not the walker's");
#else
	tap_skip("not an ASan build: make check-asan runs this half");
#endif
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_table_link_race);
	TEST(test_leaf_race_read_vs_write);
	TEST(test_writer_waits_for_installer);
	TEST(test_fast_fault_vs_clear);
	TEST(test_parallel_fault_holds_read_lock);
	TEST(test_serial_fault_holds_write_lock);
	TEST(test_walker_vs_table_free);
	TEST(test_walker_vs_table_free_no_grace);
	return tap_done();
}
