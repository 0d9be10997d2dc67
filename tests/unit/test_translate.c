// SPDX-License-Identifier: MIT
/*
 * gpamm_vm_translate(): the leaf entry a GPA is mapped by, and its level,
 * after each kind of fault, checked bit for bit (low 12 bits and PFN) on
 * the 4K, 16K and 64K layouts, over the direct host (PFN = HVA >> shift)
 * and the sim host (PFN checked through the bytes it names):
 *
 *   write fault, cached writable page           0x393
 *   read fault, no logging, writable page       0x393 (dirty at once)
 *   read fault under dirty logging              0x291 (clean, marker set)
 *   write fault under dirty logging             0x393
 *   read fault on a read-only slot              0x091 (no marker, no write bits);
 *                                               a write there is an MMIO exit
 *   device memory (sim GPAMM_SIM_DEVICE)        MAT 0x00 (0x383)
 *   host mapping mprotect'ed read-only (sim)    0x091; a write is a memory fault
 *
 * and the errors: -ENOENT when nothing maps the GPA, -EINVAL beyond the GPA
 * space or without a VM.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"

#define LOW12(e) ((unsigned long long)((e) & 0xfffULL))

/* ---- one access per guest run --------------------------------------------- */

struct one {
	uint64_t gpa, val;
	bool write;
};

static int guest_one(struct gpamm_vcpu *v, void *arg)
{
	struct one *o = arg;

	if (o->write)
		gpamm_guest_write(v, o->gpa, 8, o->val);
	else
		o->val = gpamm_guest_read(v, o->gpa, 8);
	return 0;
}

struct env {
	unsigned ps, levels;
	uint64_t psz;
	struct gpamm_host *h;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
};

static void env_create(struct env *e, struct gpamm_host *h, unsigned ps, unsigned levels)
{
	struct gpamm_vm_config cfg = { .page_shift = ps, .levels = levels, .host = h };

	memset(e, 0, sizeof(*e));
	e->ps = ps;
	e->levels = levels;
	e->psz = 1ULL << ps;
	e->h = h;
	ASSERT(h);
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &e->vm), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(e->vm, 0, &e->v), 0);
}

static void env_destroy(struct env *e)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(e->vm, &st);
	ASSERT_EQ(st.pinned, 0);
	ASSERT_EQ(st.stale_accesses, 0);
	gpamm_vm_destroy(e->vm);
	gpamm_host_destroy(e->h);
}

static void slot(struct env *e, uint32_t id, uint32_t flags, uint64_t gpa, uint64_t pages,
		 uint64_t hva)
{
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(e->vm, &(struct gpamm_userspace_memory_region){
		.slot = id, .flags = flags, .guest_phys_addr = gpa,
		.memory_size = pages * e->psz, .userspace_addr = hva }), 0);
}

/* One access; returns the exit that ended it (DONE, or the first other exit). */
static uint32_t access1(struct env *e, uint64_t gpa, bool write, uint64_t val, uint64_t *got)
{
	static struct one o; /* lives across runs of a guest left mid-access */
	struct gpamm_run *run = gpamm_vcpu_run_state(e->v);

	o = (struct one){ .gpa = gpa, .val = val, .write = write };
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(e->v, guest_one, &o, 0), 0);
	ASSERT_EQ_INT(gpamm_vcpu_run(e->v), 0);
	if (got)
		*got = o.val;
	return run->exit_reason;
}

static void access_ok(struct env *e, uint64_t gpa, bool write, uint64_t val, uint64_t *got)
{
	ASSERT_EQ(access1(e, gpa, write, val, got), GPAMM_EXIT_DONE);
}

/* Finish a guest left at an exit. */
static void resume_to_done(struct env *e)
{
	struct gpamm_run *run = gpamm_vcpu_run_state(e->v);

	if (run->exit_reason == GPAMM_EXIT_MMIO && !run->mmio.is_write)
		memset(run->mmio.data, 0, sizeof(run->mmio.data));
	ASSERT_EQ_INT(gpamm_vcpu_run(e->v), 0);
	ASSERT_EQ(run->exit_reason, GPAMM_EXIT_DONE);
}

/* The entry at @gpa: present, level 0, the given low bits; returns its PFN. */
static uint64_t expect_leaf(struct env *e, uint64_t gpa, unsigned low, const char *what)
{
	gpamm_pte_t pte = 0;
	unsigned level = 99;
	int r = gpamm_vm_translate(e->vm, gpa, &pte, &level);

	if (r || LOW12(pte) != low || level != 0)
		tap_diag("%uK/%u %s: translate %d, entry 0x%llx, level %u (want 0x%03x, level 0)",
			 1u << (e->ps - 10), e->levels, what, r, (unsigned long long)pte, level, low);
	ASSERT_EQ_INT(r, 0);
	ASSERT_EQ(level, 0);
	ASSERT_EQ(LOW12(pte), low);
	/* nothing above the PFN field, nothing between bit 12 and the PFN */
	ASSERT_EQ(pte & ~(gpamm_pte_pfn_mask(e->ps) | 0xfffULL), 0);
	return gpamm_pte_pfn(pte, e->ps);
}

static void expect_none(struct env *e, uint64_t gpa)
{
	gpamm_pte_t pte = 0x5a5a;
	unsigned level = 77;

	ASSERT_EQ_INT(gpamm_vm_translate(e->vm, gpa, &pte, &level), -ENOENT);
}

/* ---- direct host ------------------------------------------------------------- */

/* GPAs that are page aligned on every layout and inside every GPA space. */
#define G_RW  (16ULL << 20)
#define G_LOG (32ULL << 20)
#define G_RO  (48ULL << 20)
#define NP 4

static void direct_layout(unsigned ps, unsigned levels)
{
	struct env e;
	uint64_t psz = 1ULL << ps, got, mmio_gpa;
	uint8_t *rw, *lg, *ro;
	struct gpamm_run *run;
	const uint64_t pat = 0x0123456789abcdefULL;

	env_create(&e, gpamm_host_direct_create(ps), ps, levels);
	run = gpamm_vcpu_run_state(e.v);
	rw = vt_alloc(NP * psz, ps);
	lg = vt_alloc(NP * psz, ps);
	ro = vt_alloc(NP * psz, ps);
	ASSERT(rw && lg && ro);
	memcpy(ro, &pat, 8);
	slot(&e, 0, 0, G_RW, NP, (uintptr_t)rw);
	slot(&e, 1, GPAMM_MEM_LOG_DIRTY_PAGES, G_LOG, NP, (uintptr_t)lg);
	slot(&e, 2, GPAMM_MEM_READONLY, G_RO, NP, (uintptr_t)ro);

	/* nothing mapped yet */
	expect_none(&e, G_RW);
	expect_none(&e, G_RO + psz);
	expect_none(&e, 0);

	/* writable, no logging: write fault, read fault */
	access_ok(&e, G_RW + 8, true, 0x11, NULL);
	ASSERT_EQ(expect_leaf(&e, G_RW, 0x393, "write fault"), ((uintptr_t)rw) >> ps);
	ASSERT_EQ(expect_leaf(&e, G_RW + psz - 1, 0x393, "write fault (last byte)"),
		  ((uintptr_t)rw) >> ps);
	access_ok(&e, G_RW + psz, false, 0, NULL);
	ASSERT_EQ(expect_leaf(&e, G_RW + psz, 0x393, "read fault, no logging"),
		  ((uintptr_t)rw + psz) >> ps);
	expect_none(&e, G_RW + 2 * psz);

	/* logging: a read maps clean with the marker, a write dirty */
	access_ok(&e, G_LOG, false, 0, NULL);
	ASSERT_EQ(expect_leaf(&e, G_LOG, 0x291, "read fault, logging"), ((uintptr_t)lg) >> ps);
	access_ok(&e, G_LOG + psz, true, 0x22, NULL);
	ASSERT_EQ(expect_leaf(&e, G_LOG + psz, 0x393, "write fault, logging"),
		  ((uintptr_t)lg + psz) >> ps);
	/* the clean page made dirty by a later write (fast path) */
	access_ok(&e, G_LOG, true, 0x33, NULL);
	ASSERT_EQ(expect_leaf(&e, G_LOG, 0x393, "write after read, logging"),
		  ((uintptr_t)lg) >> ps);

	/* read-only slot */
	access_ok(&e, G_RO, false, 0, &got);
	ASSERT_EQ(got, pat);
	ASSERT_EQ(expect_leaf(&e, G_RO, 0x091, "read fault, read-only slot"),
		  ((uintptr_t)ro) >> ps);
	/* a write is an MMIO exit and maps nothing writable */
	mmio_gpa = G_RO + psz + 16;
	ASSERT_EQ(access1(&e, mmio_gpa, true, 0x44, NULL), GPAMM_EXIT_MMIO);
	ASSERT(run->mmio.is_write);
	ASSERT_EQ(run->mmio.phys_addr, mmio_gpa);
	resume_to_done(&e);
	expect_none(&e, G_RO + psz);
	ASSERT_EQ(access1(&e, G_RO + 8, true, 0x55, NULL), GPAMM_EXIT_MMIO);
	resume_to_done(&e);
	expect_leaf(&e, G_RO, 0x091, "read-only slot after a write");
	memcpy(&got, ro + 8, 8);
	ASSERT_EQ(got, 0); /* the write never reached the page */

	/* -EINVAL beyond the space, -ENOENT just below its end */
	{
		uint64_t space = gpamm_geom_space(gpamm_vm_geom(e.vm));

		ASSERT_EQ_INT(gpamm_vm_translate(e.vm, space, NULL, NULL), -EINVAL);
		ASSERT_EQ_INT(gpamm_vm_translate(e.vm, space + psz, NULL, NULL), -EINVAL);
		ASSERT_EQ_INT(gpamm_vm_translate(e.vm, UINT64_MAX, NULL, NULL), -EINVAL);
		ASSERT_EQ_INT(gpamm_vm_translate(e.vm, space - 1, NULL, NULL), -ENOENT);
		/* both out pointers may be NULL */
		ASSERT_EQ_INT(gpamm_vm_translate(e.vm, G_RW, NULL, NULL), 0);
	}

	env_destroy(&e);
	vt_free(rw, NP * psz);
	vt_free(lg, NP * psz);
	vt_free(ro, NP * psz);
}

static void test_translate_direct_4k(void)
{
	direct_layout(12, 3);
}

static void test_translate_direct_16k(void)
{
	direct_layout(14, 3);
}

static void test_translate_direct_64k(void)
{
	direct_layout(16, 2);
}

/* ---- sim host: device memory, mprotect --------------------------------------- */

/* The PFN names the host page at @hva: its bytes are the ones there. */
static void expect_pfn_is(struct env *e, uint64_t pfn, uint64_t hva, uint64_t val)
{
	uint64_t at_pfn, at_hva;

	memcpy(&at_pfn, gpamm_host_page_ptr(e->h, pfn), 8);
	ASSERT_EQ_INT(gpamm_sim_read(e->h, hva, &at_hva, 8), 0);
	ASSERT_EQ(at_pfn, val);
	ASSERT_EQ(at_hva, val);
}

static void sim_layout(unsigned ps, unsigned levels)
{
	struct gpamm_sim_config sc = { .page_shift = ps, .frames = 32, .swap_pages = 0,
				       .checking = true };
	struct env e;
	uint64_t psz = 1ULL << ps, ram, dev, prot, pfn, got;
	struct gpamm_run *run;
	const uint64_t pat = 0xfeedf00d00c0ffeeULL;

	env_create(&e, gpamm_host_sim_create(&sc), ps, levels);
	run = gpamm_vcpu_run_state(e.v);
	ASSERT_EQ_INT(gpamm_sim_mmap(e.h, NP * psz, 0, &ram), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(e.h, NP * psz, GPAMM_SIM_DEVICE, &dev), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(e.h, NP * psz, 0, &prot), 0);
	slot(&e, 0, 0, G_RW, NP, ram);
	slot(&e, 1, 0, G_LOG, NP, dev);
	slot(&e, 2, 0, G_RO, NP, prot);

	/* ordinary memory */
	access_ok(&e, G_RW, true, 0xabc, NULL);
	pfn = expect_leaf(&e, G_RW, 0x393, "sim: write fault");
	expect_pfn_is(&e, pfn, ram, 0xabc);
	access_ok(&e, G_RW + psz, false, 0, NULL);
	expect_leaf(&e, G_RW + psz, 0x393, "sim: read fault");

	/* device memory: uncached (MAT SUC), otherwise as RAM */
	access_ok(&e, G_LOG, false, 0, NULL);
	expect_leaf(&e, G_LOG, 0x383, "sim: device, read fault");
	access_ok(&e, G_LOG + psz, true, 0xdef, NULL);
	pfn = expect_leaf(&e, G_LOG + psz, 0x383, "sim: device, write fault");
	expect_pfn_is(&e, pfn, dev + psz, 0xdef);
	{
		gpamm_pte_t pte;

		ASSERT_EQ_INT(gpamm_vm_translate(e.vm, G_LOG + psz, &pte, NULL), 0);
		ASSERT_EQ(gpamm_pte_mat(pte), GPAMM_PTE_MAT_SUC);
		ASSERT_EQ_INT(gpamm_vm_translate(e.vm, G_RW, &pte, NULL), 0);
		ASSERT_EQ(gpamm_pte_mat(pte), GPAMM_PTE_MAT_CC);
	}

	/* a host mapping made read-only: a read maps without marker or write bits */
	ASSERT_EQ_INT(gpamm_sim_write(e.h, prot, &pat, 8), 0);
	ASSERT_EQ_INT(gpamm_sim_mprotect(e.h, prot, NP * psz, false), 0);
	access_ok(&e, G_RO, false, 0, &got);
	ASSERT_EQ(got, pat);
	pfn = expect_leaf(&e, G_RO, 0x091, "sim: mprotect read-only, read fault");
	expect_pfn_is(&e, pfn, prot, pat);
	/* a write there is a memory fault and changes nothing ... */
	ASSERT_EQ(access1(&e, G_RO + 8, true, 0x99, NULL), GPAMM_EXIT_MEMORY_FAULT);
	ASSERT_EQ_INT(run->memory_fault.error, -EFAULT);
	ASSERT(run->memory_fault.flags & GPAMM_MEMORY_EXIT_FLAG_WRITE);
	ASSERT_EQ(run->memory_fault.gpa, G_RO);
	expect_leaf(&e, G_RO, 0x091, "sim: mprotect read-only, after the write");
	/* ... until the host makes the range writable again */
	ASSERT_EQ_INT(gpamm_sim_mprotect(e.h, prot, NP * psz, true), 0);
	expect_none(&e, G_RO);
	resume_to_done(&e);
	expect_leaf(&e, G_RO, 0x393, "sim: writable again, write fault");

	env_destroy(&e);
}

static void test_translate_sim_4k(void)
{
	sim_layout(12, 3);
}

static void test_translate_sim_16k(void)
{
	sim_layout(14, 3);
}

static void test_translate_sim_64k(void)
{
	sim_layout(16, 2);
}

static void test_translate_errors(void)
{
	struct gpamm_host *h;
	struct gpamm_vm *vm = vt_vm_direct(12, 3, &h);
	gpamm_pte_t pte = 0x1234;
	unsigned level = 5;

	ASSERT_EQ_INT(gpamm_vm_translate(NULL, 0, &pte, &level), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_translate(NULL, 0, NULL, NULL), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_translate(vm, 0, &pte, &level), -ENOENT);
	ASSERT_EQ_INT(gpamm_vm_translate(vm, gpamm_geom_space(gpamm_vm_geom(vm)), &pte, &level),
		      -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_translate(vm, 1ULL << 63, &pte, &level), -EINVAL);
	gpamm_vm_destroy(vm);
	gpamm_host_destroy(h);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_translate_errors);
	TEST(test_translate_direct_4k);
	TEST(test_translate_direct_16k);
	TEST(test_translate_direct_64k);
	TEST(test_translate_sim_4k);
	TEST(test_translate_sim_16k);
	TEST(test_translate_sim_64k);
	return tap_done();
}
