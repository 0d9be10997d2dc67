// SPDX-License-Identifier: MIT
/*
 * Checking mode must catch a translation that outlived its memslot.
 *
 * A vCPU reads a page of slot S (its TLB now holds the translation) and
 * leaves with gpamm_guest_exit(), keeping its TLB. With
 * GPAMM_INJECT_SKIP_SLOT_FLUSH the VMM then deletes S, or moves it to a new
 * GPA, and the remote TLB flush that should come with it is skipped. The
 * vCPU resumes and reads the old GPA again: a TLB hit through a stale
 * translation. The host page behind it is still alive and still mapped at
 * its HVA, so only a check of the access's GPA -> HVA against the memslots
 * can tell; stale_accesses must count it.
 *
 * Controls: the same sequences without the injection turn the access into
 * an MMIO exit and count nothing; normal operation counts nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gpamm/inject.h"
#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define G_OLD 0x100000ULL
#define G_NEW 0x400000ULL
#define NP 4
#define MMIO_VAL 0x6d6d696f6d6d696fULL



struct env {
	struct gpamm_host *h;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	uint64_t hva;
	unsigned mmio;
};

static void env_create(struct env *e)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 64, .swap_pages = 0,
				       .checking = true };
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };

	memset(e, 0, sizeof(*e));
	e->h = gpamm_host_sim_create(&sc);
	ASSERT(e->h);
	ASSERT(e->h->checking);
	cfg.host = e->h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &e->vm), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(e->vm, 0, &e->v), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(e->h, NP * PSZ, 0, &e->hva), 0);
	for (unsigned i = 0; i < NP; i++) {
		uint64_t pat = 0x1000 + i;

		ASSERT_EQ_INT(gpamm_sim_write(e->h, e->hva + i * PSZ, &pat, 8), 0);
	}
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(e->vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = G_OLD, .memory_size = NP * PSZ,
		.userspace_addr = e->hva }), 0);
}

static void env_destroy(struct env *e)
{
	gpamm_vm_destroy(e->vm);
	ASSERT_EQ_INT(gpamm_sim_munmap(e->h, e->hva, NP * PSZ), 0);
	gpamm_host_destroy(e->h);
}

/* Run to the next guest exit or the end; MMIO reads get MMIO_VAL. */
static uint32_t run_once(struct env *e)
{
	struct gpamm_run *run = gpamm_vcpu_run_state(e->v);

	for (;;) {
		ASSERT_EQ_INT(gpamm_vcpu_run(e->v), 0);
		if (run->exit_reason != GPAMM_EXIT_MMIO)
			return run->exit_reason;
		e->mmio++;
		if (!run->mmio.is_write) {
			uint64_t v = MMIO_VAL;

			memcpy(run->mmio.data, &v, 8);
		}
	}
}

static uint64_t stale(struct env *e)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(e->vm, &st);
	return st.stale_accesses;
}

enum change { CH_DELETE, CH_MOVE };

/*
 * Read G_OLD (TLB filled), exit, change slot 0, read G_OLD again.
 * Returns the stale count; *@second gets what the second read returned.
 */
static uint64_t after_change(enum change ch, bool inject, uint64_t *second, unsigned *mmio)
{
	struct env e;
	struct vt_op ops[] = {
		{ VT_OP_READ, G_OLD, 0 }, { VT_OP_EXIT, 0, 0 }, { VT_OP_READ, G_OLD, 0 },
		{ VT_OP_END, 0, 0 },
	};
	uint64_t n, first;
	gpamm_pte_t pte;

	env_create(&e);
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(e.v, vt_guest_script, ops, 0), 0);
	ASSERT_EQ(run_once(&e), GPAMM_EXIT_REQUEST);
	first = ops[0].val;
	ASSERT_EQ_INT(gpamm_vm_translate(e.vm, G_OLD, &pte, NULL), 0);
	ASSERT_EQ(stale(&e), 0);

	if (inject)
		ASSERT_EQ_INT(gpamm_vm_inject(e.vm, GPAMM_INJECT_SKIP_SLOT_FLUSH), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(e.vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = ch == CH_MOVE ? G_NEW : G_OLD,
		.memory_size = ch == CH_MOVE ? NP * PSZ : 0, .userspace_addr = e.hva }), 0);
	/* the translation is gone from the table either way */
	ASSERT_EQ_INT(gpamm_vm_translate(e.vm, G_OLD, &pte, NULL), -ENOENT);

	ASSERT_EQ(run_once(&e), GPAMM_EXIT_DONE);
	n = stale(&e);
	*second = ops[2].val;
	*mmio = e.mmio;
	tap_diag("%s%s: first read 0x%llx, second 0x%llx, %u MMIO exits, %llu stale accesses",
		 ch == CH_MOVE ? "move" : "delete", inject ? " (flush skipped)" : "",
		 (unsigned long long)first, (unsigned long long)*second, e.mmio,
		 (unsigned long long)n);
	ASSERT_EQ(first, 0x1000);

	if (ch == CH_MOVE) {
		/* the slot's pages are at the new GPA */
		struct vt_op o2[] = { { VT_OP_READ, G_NEW + PSZ, 0 }, { VT_OP_END, 0, 0 } };

		ASSERT_EQ_INT(gpamm_vm_inject(e.vm, 0), 0);
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(e.v, vt_guest_script, o2, 0), 0);
		ASSERT_EQ(run_once(&e), GPAMM_EXIT_DONE);
		ASSERT_EQ(o2[0].val, 0x1001);
		ASSERT_EQ(stale(&e), n);          /* a proper access adds nothing */
	}
	env_destroy(&e);
	return n;
}

static void test_stale_after_delete(void)
{
	uint64_t val;
	unsigned mmio;
	uint64_t n = after_change(CH_DELETE, true, &val, &mmio);

	ASSERT_MSG(n >= 1,
		   "a read at 0x%llx through a TLB entry that outlived the deletion of its "
		   "slot was not reported (stale_accesses %llu, read 0x%llx, %u MMIO exits)",
		   G_OLD, (unsigned long long)n, (unsigned long long)val, mmio);
}

static void test_stale_after_move(void)
{
	uint64_t val;
	unsigned mmio;
	uint64_t n = after_change(CH_MOVE, true, &val, &mmio);

	ASSERT_MSG(n >= 1,
		   "a read at the old GPA 0x%llx through a TLB entry that outlived the move "
		   "of its slot to 0x%llx was not reported (stale_accesses %llu, read 0x%llx, "
		   "%u MMIO exits)",
		   G_OLD, G_NEW, (unsigned long long)n, (unsigned long long)val, mmio);
}

static void test_control_delete(void)
{
	uint64_t val;
	unsigned mmio;

	ASSERT_EQ(after_change(CH_DELETE, false, &val, &mmio), 0);
	ASSERT_EQ(mmio, 1);          /* no slot there any more */
	ASSERT_EQ(val, MMIO_VAL);
}

static void test_control_move(void)
{
	uint64_t val;
	unsigned mmio;

	ASSERT_EQ(after_change(CH_MOVE, false, &val, &mmio), 0);
	ASSERT_EQ(mmio, 1);
	ASSERT_EQ(val, MMIO_VAL);
}

/* Normal operation: reads, writes, exits and resumes, a flags change. */
static void test_control_normal(void)
{
	struct env e;
	struct vt_op ops[3 * NP + 4];
	unsigned k = 0;

	env_create(&e);
	for (unsigned i = 0; i < NP; i++)
		ops[k++] = (struct vt_op){ VT_OP_READ, G_OLD + i * PSZ, 0 };
	ops[k++] = (struct vt_op){ VT_OP_EXIT, 0, 0 };
	for (unsigned i = 0; i < NP; i++)
		ops[k++] = (struct vt_op){ VT_OP_WRITE, G_OLD + i * PSZ + 16, 0x2000 + i };
	ops[k++] = (struct vt_op){ VT_OP_EXIT, 0, 0 };
	for (unsigned i = 0; i < NP; i++)
		ops[k++] = (struct vt_op){ VT_OP_READ, G_OLD + i * PSZ + 16, 0 };
	ops[k++] = (struct vt_op){ VT_OP_READ, G_OLD, 0 };
	ops[k] = (struct vt_op){ VT_OP_END, 0, 0 };
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(e.v, vt_guest_script, ops, 0), 0);

	ASSERT_EQ(run_once(&e), GPAMM_EXIT_REQUEST);
	/* logging on (write-protects the slot) between the exits */
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(e.vm, &(struct gpamm_userspace_memory_region){
		.slot = 0, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = G_OLD,
		.memory_size = NP * PSZ, .userspace_addr = e.hva }), 0);
	ASSERT_EQ(run_once(&e), GPAMM_EXIT_REQUEST);
	{
		uint64_t bm = 0;

		ASSERT_EQ_INT(gpamm_vm_get_dirty_log(e.vm, 0, &bm), 0);
		ASSERT_EQ(bm, (1ULL << NP) - 1);
	}
	ASSERT_EQ(run_once(&e), GPAMM_EXIT_DONE);
	for (unsigned i = 0; i < NP; i++) {
		ASSERT_EQ(ops[i].val, 0x1000 + i);
		ASSERT_EQ(ops[2 * NP + 2 + i].val, 0x2000 + i);
	}
	ASSERT_EQ(ops[3 * NP + 2].val, 0x1000);
	ASSERT_EQ(e.mmio, 0);
	ASSERT_EQ(stale(&e), 0);
	env_destroy(&e);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_control_normal);
	TEST(test_control_delete);
	TEST(test_control_move);
	TEST(test_stale_after_delete);
	TEST(test_stale_after_move);
	return tap_done();
}
