// SPDX-License-Identifier: MIT
/* Breaking gpamm with bad arguments: every bad call must return a listed errno, change nothing, never abort. Each body runs in a forked child. */
#include <errno.h>
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

/* ---- helpers ---------------------------------------------------------------- */

#define PS 12
#define PSZ (1ULL << PS)
#define GPA0 0x100000ULL
#define NPG 100 /* not a multiple of 64, and GPA0's gfn (256) is 64-aligned */



struct drig {
	struct gpamm_host *h;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	uint8_t *mem;
	uint64_t len;
};

static void drig_create(struct drig *d, uint64_t npages, uint32_t flags)
{
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };

	memset(d, 0, sizeof(*d));
	d->h = gpamm_host_direct_create(PS);
	CHECK(d->h);
	cfg.host = d->h;
	CHECK_EQ_INT(gpamm_vm_create(&cfg, &d->vm), 0);
	CHECK_EQ_INT(gpamm_vcpu_create(d->vm, 0, &d->v), 0);
	d->len = npages * PSZ;
	d->mem = vt_alloc(d->len, PS);
	CHECK(d->mem);
	CHECK_EQ_INT(gpamm_vm_set_memory_region(d->vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .flags = flags, .guest_phys_addr = GPA0, .memory_size = d->len,
		.userspace_addr = (uintptr_t)d->mem }), 0);
}

static void drig_destroy(struct drig *d)
{
	CHECK_EQ_INT(gpamm_vm_destroy(d->vm), 0);
	gpamm_host_destroy(d->h);
	vt_free(d->mem, d->len);
}

static uint64_t nslots(struct gpamm_vm *vm)
{
	struct gpamm_vm_stats st;
	gpamm_vm_stats(vm, &st);
	return st.slots;
}

/* ---- 1. gpamm_sim_* on a host that is not a sim host ------------------------- */

/*
 * errors.md: every sim call answers -EINVAL for "not a sim host", and
 * nothing aborts on bad input from the VMM (GPAMM_BUG_ON is for internal
 * invariants only).
 */
ISOLATED_TEST(test_break_sim_call_on_direct_host)
{
	struct gpamm_host *d = gpamm_host_direct_create(PS);
	uint64_t hva = 0, buf = 0;
	bool young;

	CHECK(d);
	step("gpamm_sim_mmap(direct host)");
	EXPECT_EQ_INT(gpamm_sim_mmap(d, PSZ, 0, &hva), -EINVAL);
	step("gpamm_sim_munmap(direct host)");
	EXPECT_EQ_INT(gpamm_sim_munmap(d, 0x10000, PSZ), -EINVAL);
	step("gpamm_sim_read(direct host)");
	EXPECT_EQ_INT(gpamm_sim_read(d, 0x10000, &buf, 8), -EINVAL);
	step("gpamm_sim_clear_young(direct host)");
	EXPECT_EQ_INT(gpamm_sim_clear_young(d, 0x10000, PSZ, false, &young), -EINVAL);
	gpamm_host_destroy(d);
}

ISOLATED_TEST(test_break_sim_call_on_null_host)
{
	uint64_t hva = 0;

	step("gpamm_sim_mmap(NULL)");
	EXPECT_EQ_INT(gpamm_sim_mmap(NULL, PSZ, 0, &hva), -EINVAL);
	step("gpamm_sim_reclaim(NULL)");
	EXPECT_EQ_INT(gpamm_sim_reclaim(NULL, 0x10000, PSZ, 1), -EINVAL);
}

/* ---- 2. memslot calls: every bad call fails with its errno, changes nothing -- */

ISOLATED_TEST(test_break_memslot_bad_args_unchanged)
{
	struct drig d;
	struct vt_op ops[] = { { VT_OP_WRITE, GPA0 + 5 * PSZ, 0x1234 }, { VT_OP_READ, GPA0 + 5 * PSZ, 0 },
			    { VT_OP_END, 0, 0 } };
	gpamm_pte_t e0 = 0, e1 = 0;
	uint8_t *other = vt_alloc(16 * PSZ, PS);

	CHECK(other);
	drig_create(&d, NPG, 0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(d.v, vt_guest_script, ops, 0), 0);
	CHECK_EQ(vt_run_once(d.v, 0), GPAMM_EXIT_DONE);
	CHECK_EQ_INT(gpamm_vm_translate(d.vm, GPA0 + 5 * PSZ, &e0, NULL), 0);
	/* a second slot to collide with */
	CHECK_EQ_INT(gpamm_vm_set_memory_region(d.vm, &(struct gpamm_userspace_memory_region){
		.slot = 7, .guest_phys_addr = 0x4000000, .memory_size = 16 * PSZ,
		.userspace_addr = (uintptr_t)other }), 0);

	const uint64_t ua = (uintptr_t)d.mem;
	const uint64_t gspace = gpamm_geom_space(gpamm_vm_geom(d.vm));
	struct {
		const char *what;
		struct gpamm_userspace_memory_region r;
		int err;
	} bad[] = {
		{ "unknown flag", { 0, 1u << 5, GPA0, NPG * PSZ, ua }, -EINVAL },
		{ "slot id 32767", { GPAMM_USER_MEM_SLOTS, 0, 0x8000000, PSZ, ua }, -EINVAL },
		{ "slot id UINT32_MAX", { UINT32_MAX, 0, 0x8000000, PSZ, ua }, -EINVAL },
		{ "unaligned gpa", { 1, 0, 0x8000000 + 8, PSZ, ua }, -EINVAL },
		{ "unaligned size", { 1, 0, 0x8000000, PSZ + 8, ua }, -EINVAL },
		{ "unaligned hva", { 1, 0, 0x8000000, PSZ, ua + 8 }, -EINVAL },
		{ "gpa + size wraps", { 1, 0, ~(PSZ - 1), 2 * PSZ, ua }, -EINVAL },
		{ "gpa + size == 2^64", { 1, 0, ~(PSZ - 1), PSZ, ua }, -EINVAL /* or -EFAULT */ },
		{ "hva + size wraps", { 1, 0, 0x8000000, 2 * PSZ, ~(PSZ - 1) }, -EINVAL },
		{ "2^31 pages", { 1, 0, 0, (1ULL << 31) * PSZ, ua }, -EINVAL },
		{ "huge size", { 1, 0, 0, ~(PSZ - 1) & ~(1ULL << 63), PSZ }, -EINVAL },
		{ "delete missing slot", { 3, 0, 0, 0, 0 }, -EINVAL },
		{ "delete missing slot at max id", { GPAMM_USER_MEM_SLOTS - 1, 0, 0, 0, 0 }, -EINVAL },
		{ "change size", { 0, 0, GPA0, (NPG - 1) * PSZ, ua }, -EINVAL },
		{ "change hva", { 0, 0, GPA0, NPG * PSZ, ua + PSZ }, -EINVAL },
		{ "change readonly", { 0, GPAMM_MEM_READONLY, GPA0, NPG * PSZ, ua }, -EINVAL },
		{ "create overlapping slot 0", { 1, 0, GPA0 + 99 * PSZ, PSZ, ua }, -EEXIST },
		{ "create overlapping slot 0 from below", { 1, 0, GPA0 - PSZ, 2 * PSZ, ua }, -EEXIST },
		{ "move onto slot 7", { 0, 0, 0x4000000 - 4 * PSZ, NPG * PSZ, ua }, -EEXIST },
		{ "move + log onto slot 7", { 0, GPAMM_MEM_LOG_DIRTY_PAGES, 0x4000000, NPG * PSZ, ua }, -EEXIST },
		{ "create beyond space", { 1, 0, gspace, PSZ, ua }, -EFAULT },
		{ "create straddling end of space", { 1, 0, gspace - PSZ, 2 * PSZ, ua }, -EFAULT },
		{ "move beyond space", { 0, 0, gspace - PSZ, NPG * PSZ, ua }, -EFAULT },
		{ "move + log beyond space", { 0, GPAMM_MEM_LOG_DIRTY_PAGES, gspace, NPG * PSZ, ua }, -EFAULT },
	};

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r;

		step("bad memslot call %u: %s", i, bad[i].what);
		r = gpamm_vm_set_memory_region(d.vm, &bad[i].r);
		if (r != bad[i].err && !(i == 7 && r == -EFAULT)) {
			printf("# %s: got %d, want %d\n", bad[i].what, r, bad[i].err);
			EXPECT_EQ_INT(r, bad[i].err);
		}
		EXPECT_EQ(nslots(d.vm), 2);
		EXPECT_EQ_INT(gpamm_vm_translate(d.vm, GPA0 + 5 * PSZ, &e1, NULL), 0);
		EXPECT_EQ(e1, e0);
	}
	step("NULL arguments");
	EXPECT_EQ_INT(gpamm_vm_set_memory_region(d.vm, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_set_memory_region(NULL, &bad[0].r), -EINVAL);
	/* no logging was turned on by any failed call */
	{
		uint64_t bm[2];
		EXPECT_EQ_INT(gpamm_vm_get_dirty_log(d.vm, 0, bm), -ENOENT);
	}
	/* the guest still sees slot 0 where it was, and nothing at slot 7's neighbours */
	step("guest after the bad calls");
	ops[0].val = 0x5678;
	CHECK_EQ_INT(gpamm_vcpu_set_guest(d.v, vt_guest_script, ops, 0), 0);
	CHECK_EQ(vt_run_once(d.v, 0), GPAMM_EXIT_DONE);
	EXPECT_EQ(ops[1].val, 0x5678);
	drig_destroy(&d);
	vt_free(other, 16 * PSZ);
}

/* ---- 3. dirty-log calls: bad arguments, and bitmaps at the slot's end ------- */

static void all_write_ops(struct vt_op *ops, unsigned first, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		ops[i] = (struct vt_op){ VT_OP_WRITE, GPA0 + (first + i) * PSZ, 0x100 + first + i };
	ops[n] = (struct vt_op){ VT_OP_END, 0, 0 };
}

ISOLATED_TEST(test_break_dirty_log_bad_args_and_tail)
{
	struct drig d;
	struct vt_op ops[NPG + 1];
	uint64_t bm[2] = { 0, 0 }, want1;
	uint64_t big[4] = { ~0ULL, ~0ULL, ~0ULL, ~0ULL };

	drig_create(&d, NPG, GPAMM_MEM_LOG_DIRTY_PAGES);
	CHECK_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(d.vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0);
	all_write_ops(ops, 0, NPG);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(d.v, vt_guest_script, ops, 0), 0);
	CHECK_EQ(vt_run_once(d.v, 0), GPAMM_EXIT_DONE);
	step("GET after writing every page");
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(d.vm, 0, bm), 0);
	want1 = (1ULL << (NPG - 64)) - 1;
	EXPECT_EQ(bm[0], ~0ULL);
	EXPECT_EQ(bm[1], want1);

	step("bad GET/CLEAR");
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(d.vm, 0, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(NULL, 0, bm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(d.vm, GPAMM_USER_MEM_SLOTS, bm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(d.vm, UINT32_MAX, bm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_get_dirty_log(d.vm, 1, bm), -ENOENT);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 0, NPG, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 1, 63, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 0, 63, big), -EINVAL); /* not to the end */
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 0, NPG + 1, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 64, NPG - 63, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 128, 0, big), -EINVAL); /* first past the end */
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, ~63ULL, 64, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 64, ~0ULL, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 64, UINT64_MAX - 63, big), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 1, 0, 64, big), -ENOENT);
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, GPAMM_USER_MEM_SLOTS, 0, 64, big), -EINVAL);
	/* nothing changed by those */
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(d.vm, 0, bm), 0);
	EXPECT_EQ(bm[0], ~0ULL);
	EXPECT_EQ(bm[1], want1);
	for (unsigned i = 0; i < NPG; i++) {
		gpamm_pte_t e = 0;
		EXPECT_EQ_INT(gpamm_vm_translate(d.vm, GPA0 + i * PSZ, &e, NULL), 0);
		EXPECT_EQ(e & GPAMM_PTE_WRITEABLE, GPAMM_PTE_WRITEABLE);
	}

	/* CLEAR of the tail: [64, 100) with every bit of the word set (bits past
	 * the end included): only pages 64..99 are cleared and protected */
	step("CLEAR tail with extra bits");
	CHECK_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 64, NPG - 64, big), 0);
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(d.vm, 0, bm), 0);
	EXPECT_EQ(bm[0], ~0ULL);
	EXPECT_EQ(bm[1], 0);
	for (unsigned i = 0; i < NPG; i++) {
		gpamm_pte_t e = 0;
		EXPECT_EQ_INT(gpamm_vm_translate(d.vm, GPA0 + i * PSZ, &e, NULL), 0);
		EXPECT_EQ(e & GPAMM_PTE_WRITEABLE, i < 64 ? GPAMM_PTE_WRITEABLE : 0);
	}
	/* CLEAR of zero pages at the end is fine and does nothing */
	EXPECT_EQ_INT(gpamm_vm_clear_dirty_log(d.vm, 0, 64, 0, big), 0);
	/* write the tail again: logged again */
	all_write_ops(ops, 64, NPG - 64);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(d.v, vt_guest_script, ops, 0), 0);
	CHECK_EQ(vt_run_once(d.v, 0), GPAMM_EXIT_DONE);
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(d.vm, 0, bm), 0);
	EXPECT_EQ(bm[1], want1);
	drig_destroy(&d);
}

/* A slot whose first GFN is not 64-aligned and whose 64-page words straddle
 * a leaf table (512 entries with 4K pages): classic GET must protect every
 * reported page, and a write after GET must be logged again. */
ISOLATED_TEST(test_break_dirty_log_unaligned_slot_straddles_table)
{
	const uint64_t gpa = (512 - 10) * PSZ; /* gfn 502: words cross gfn 512 */
	const unsigned np = 80;
	struct gpamm_host *h = gpamm_host_direct_create(PS);
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .host = h };
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	uint8_t *mem = vt_alloc(np * PSZ, PS);
	struct vt_op ops[81];
	uint64_t bm[2];

	CHECK(h && mem);
	CHECK_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	CHECK_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	CHECK_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = gpa,
		.memory_size = np * PSZ, .userspace_addr = (uintptr_t)mem }), 0);
	for (unsigned i = 0; i < np; i++)
		ops[i] = (struct vt_op){ VT_OP_WRITE, gpa + i * PSZ, i + 1 };
	ops[np] = (struct vt_op){ VT_OP_END, 0, 0 };
	CHECK_EQ_INT(gpamm_vcpu_set_guest(v, vt_guest_script, ops, 0), 0);
	CHECK_EQ(vt_run_once(v, 0), GPAMM_EXIT_DONE);
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	EXPECT_EQ(bm[0], ~0ULL);
	EXPECT_EQ(bm[1], (1ULL << (np - 64)) - 1);
	for (unsigned i = 0; i < np; i++) {
		gpamm_pte_t e = 0;
		EXPECT_EQ_INT(gpamm_vm_translate(vm, gpa + i * PSZ, &e, NULL), 0);
		if (e & GPAMM_PTE_WRITEABLE)
			printf("# page %u (gfn %llu) still writable after GET: 0x%llx\n", i,
			       (unsigned long long)(gpa / PSZ + i), (unsigned long long)e);
		EXPECT_EQ(e & GPAMM_PTE_WRITEABLE, 0);
	}
	CHECK_EQ_INT(gpamm_vcpu_set_guest(v, vt_guest_script, ops, 0), 0);
	CHECK_EQ(vt_run_once(v, 0), GPAMM_EXIT_DONE);
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	EXPECT_EQ(bm[0], ~0ULL);
	EXPECT_EQ(bm[1], (1ULL << (np - 64)) - 1);
	/* manual mode, CLEAR of the straddling words */
	CHECK_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE), 0);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(v, vt_guest_script, ops, 0), 0);
	CHECK_EQ(vt_run_once(v, 0), GPAMM_EXIT_DONE);
	CHECK_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	bm[0] = 0xf00000000000f00fULL; /* includes gfn 511/512 neighbourhood: bits 9, 10 */
	bm[0] |= 3ULL << 9;
	CHECK_EQ_INT(gpamm_vm_clear_dirty_log(vm, 0, 0, np, bm), 0);
	for (unsigned i = 0; i < 64; i++) {
		gpamm_pte_t e = 0;
		EXPECT_EQ_INT(gpamm_vm_translate(vm, gpa + i * PSZ, &e, NULL), 0);
		EXPECT_EQ(!!(e & GPAMM_PTE_WRITEABLE), !((bm[0] >> i) & 1));
	}
	CHECK_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
	vt_free(mem, np * PSZ);
}

/* ---- 4. vCPU, ring, tracking and injection calls ------------------------------ */

static int guest_ret7(struct gpamm_vcpu *v, void *arg)
{
	(void)v; (void)arg;
	return 7;
}

ISOLATED_TEST(test_break_vcpu_ring_tracking_bad_args)
{
	struct drig d;
	struct gpamm_vcpu *x = NULL;
	uint64_t bm[4];

	drig_create(&d, NPG, 0);
	step("vcpu_create");
	EXPECT_EQ_INT(gpamm_vcpu_create(d.vm, 64, &x), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_create(d.vm, UINT32_MAX, &x), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_create(d.vm, 0, &x), -EEXIST);
	EXPECT_EQ_INT(gpamm_vcpu_create(d.vm, 1, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_create(NULL, 1, &x), -EINVAL);
	{
		struct gpamm_vm_stats st;
		gpamm_vm_stats(d.vm, &st);
		EXPECT_EQ(st.vcpus, 1);
	}
	step("run without program");
	EXPECT_EQ_INT(gpamm_vcpu_run(d.v), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_run(NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_set_guest(d.v, NULL, NULL, 0), -EINVAL);
	EXPECT_EQ_INT(gpamm_vcpu_set_guest(NULL, guest_ret7, NULL, 0), -EINVAL);
	CHECK_EQ_INT(gpamm_vcpu_set_guest(d.v, guest_ret7, NULL, 0), 0);
	EXPECT_EQ_INT(gpamm_vcpu_set_guest(d.v, guest_ret7, NULL, SIZE_MAX), -ENOMEM);
	EXPECT_EQ_INT(gpamm_vcpu_set_guest(d.v, guest_ret7, NULL, (size_t)1 << 47), -ENOMEM);
	CHECK_EQ(vt_run_once(d.v, 0), GPAMM_EXIT_DONE);
	EXPECT_EQ_INT(gpamm_vcpu_run_state(d.v)->guest_ret, 7);
	EXPECT_EQ_INT(gpamm_vcpu_run(d.v), -EINVAL); /* it already returned */

	step("dirty ring");
	EXPECT_EQ_INT(gpamm_vm_enable_dirty_ring(d.vm, 128), -EINVAL); /* vCPUs exist */
	EXPECT_EQ_INT(gpamm_vm_reset_dirty_rings(d.vm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_enable_dirty_ring(NULL, 128), -EINVAL);
	EXPECT(gpamm_vcpu_dirty_ring(d.v, NULL) == NULL);
	EXPECT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(d.vm, 4), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(d.vm, GPAMM_DIRTY_LOG_INITIALLY_SET), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_enable_manual_dirty_log_protect(NULL, 0), -EINVAL);

	step("tracking");
	const uint64_t gs = gpamm_geom_space(gpamm_vm_geom(d.vm));
	EXPECT_EQ_INT(gpamm_vm_mark_idle(d.vm, GPA0, 0), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_mark_idle(d.vm, GPA0 + 1, PSZ), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_mark_idle(d.vm, GPA0, PSZ + 1), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_mark_idle(d.vm, ~(PSZ - 1), 2 * PSZ), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_mark_idle(d.vm, gs - PSZ, 2 * PSZ), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_mark_idle(d.vm, gs, PSZ), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_mark_idle(NULL, GPA0, PSZ), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_test_young(d.vm, GPA0, 0, bm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_test_young(d.vm, ~(PSZ - 1), 2 * PSZ, bm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_test_young(d.vm, gs - PSZ, 2 * PSZ, bm), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_mark_idle(d.vm, 0, gs), 0);
	EXPECT_EQ_INT(gpamm_vm_test_young(d.vm, 0, gs, NULL), 0);
	EXPECT_EQ_INT(gpamm_vm_translate(d.vm, gs, NULL, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_translate(d.vm, UINT64_MAX, NULL, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_translate(NULL, 0, NULL, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_translate(d.vm, gs - 1, NULL, NULL), -ENOENT);

	step("injection");
	EXPECT_EQ_INT(gpamm_vm_set_pause_hook(NULL, NULL, NULL), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_inject(NULL, 0), -EINVAL);
	EXPECT_EQ_INT(gpamm_vm_inject(d.vm, 4), -EINVAL); /* flags 1 and 2 exist */
	EXPECT_EQ_INT(gpamm_vm_mmu_lock_state(NULL, NULL, NULL), -EINVAL);
	drig_destroy(&d);
}

/* Ring sizes at and around every limit. */
ISOLATED_TEST(test_break_ring_sizes)
{
	static const struct { uint32_t n; int err; } c[] = {
		{ 0, -EINVAL }, { 1, -EINVAL }, { 64, -EINVAL }, { 127, -EINVAL }, { 129, -EINVAL },
		{ 65537, -EINVAL }, { 131072, -E2BIG }, { 1u << 31, -E2BIG }, { UINT32_MAX, -EINVAL },
		{ 3u << 16, -EINVAL },
	};

	for (unsigned i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct gpamm_host *h = gpamm_host_direct_create(PS);
		struct gpamm_vm_config cfg = { .page_shift = PS, .host = h };
		struct gpamm_vm *vm;

		step("ring size %u", c[i].n);
		CHECK_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
		EXPECT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, c[i].n), c[i].err);
		/* nothing set: a good size still works */
		EXPECT_EQ_INT(gpamm_vm_enable_dirty_ring(vm, 65536), 0);
		CHECK_EQ_INT(gpamm_vm_destroy(vm), 0);
		gpamm_host_destroy(h);
	}
}

/* ---- 5. a guest stack smaller than what a guest access needs ------------------ */

static int guest_touch(struct gpamm_vcpu *v, void *arg)
{
	gpamm_guest_write(v, GPA0, 8, 0xabc);
	return (int)gpamm_guest_read(v, GPA0, 8);
}

/* A VMM asks for a 1-byte stack: set_guest either refuses (-EINVAL/-ENOMEM)
 * or the guest must run; the process must not crash. */
ISOLATED_TEST(test_break_tiny_guest_stack)
{
	struct drig d;
	int r;

	drig_create(&d, NPG, 0);
	step("set_guest with a 1-byte stack");
	r = gpamm_vcpu_set_guest(d.v, guest_touch, NULL, 1);
	if (r == 0) {
		step("run on the tiny stack (guest faults a page)");
		EXPECT_EQ(vt_run_once(d.v, 0), GPAMM_EXIT_DONE);
		EXPECT_EQ_INT(gpamm_vcpu_run_state(d.v)->guest_ret, 0xabc);
	} else {
		EXPECT(r == -EINVAL || r == -ENOMEM);
	}
	drig_destroy(&d);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_break_sim_call_on_direct_host);
	TEST(test_break_sim_call_on_null_host);
	TEST(test_break_memslot_bad_args_unchanged);
	TEST(test_break_dirty_log_bad_args_and_tail);
	TEST(test_break_dirty_log_unaligned_slot_straddles_table);
	TEST(test_break_vcpu_ring_tracking_bad_args);
	TEST(test_break_ring_sizes);
	TEST(test_break_tiny_guest_stack);
	return tap_done();
}
