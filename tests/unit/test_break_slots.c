// SPDX-License-Identifier: MIT
/*
 * Breaking the memslot sets (memslot.c, gfnidx.c, mtree.c) with tricky
 * sequences, single-threaded: overlap detection in every geometric case
 * (CREATE and MOVE, own old range, adjacency), the GPA-space edges, HVA
 * near the top, the per-vCPU slot cache across DELETE / re-CREATE / MOVE
 * of the same id (ABA), HVA aliasing with every host event on a checking
 * sim host, dirty logging across a MOVE, a random model with multi-page
 * aliasing slots and host events (the mtree corner cases are in
 * test_mtree, the GFN index's in test_gfnidx).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define MMIO_VAL 0x6d6d696f6d6d696fULL

/* ---- helpers -------------------------------------------------------------- */

static int guest_read_list(struct gpamm_vcpu *v, void *arg)
{
	uint64_t *list = arg; /* list[0] = n, then n GPAs; the values read replace them */

	for (uint64_t i = 1; i <= list[0]; i++)
		list[i] = gpamm_guest_read(v, list[i], 8);
	return 0;
}

static uint64_t read1(struct gpamm_vcpu *v, uint64_t gpa)
{
	uint64_t list[2] = { 1, gpa };

	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, guest_read_list, list, 0), 0);
	vt_run_to_done(v, MMIO_VAL, NULL);
	return list[1];
}

struct wr { uint64_t gpa, val; };
static int guest_write_list(struct gpamm_vcpu *v, void *arg)
{
	for (struct wr *w = arg; w->gpa != ~0ULL; w++)
		gpamm_guest_write(v, w->gpa, 8, w->val);
	return 0;
}

static void write1(struct gpamm_vcpu *v, uint64_t gpa, uint64_t val)
{
	struct wr w[2] = { { gpa, val }, { ~0ULL, 0 } };

	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, guest_write_list, w, 0), 0);
	vt_run_to_done(v, MMIO_VAL, NULL);
}

static int set_region(struct gpamm_vm *vm, uint32_t slot, uint32_t flags, uint64_t gpa,
		      uint64_t size, uint64_t hva)
{
	return gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = slot, .flags = flags, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = hva });
}

static uint64_t nslots(struct gpamm_vm *vm)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(vm, &st);
	return st.slots;
}

static uint64_t stale(struct gpamm_vm *vm)
{
	struct gpamm_vm_stats st;

	gpamm_vm_stats(vm, &st);
	return st.stale_accesses;
}

/* ---- overlap detection, every geometric case -------------------------------- */

/*
 * Slots A = [16, 24) and B = [32, 40) (pages); every CREATE [a, b) with
 * 8 <= a < b <= 48 must be -EEXIST exactly when it meets A or B; every
 * MOVE of B (8 pages) to each base 0..56 must be -EEXIST exactly when the
 * new range meets A (its own old range does not count), and succeed
 * otherwise (adjacent to A on either side too). Each page holds its
 * ram page index, so reads check the state after every failure.
 */
static void test_overlap_every_case(void)
{
	struct gpamm_host *h;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &h);
	uint8_t *ram = vt_alloc(64 * PSZ, PS);
	struct gpamm_vcpu *v;
	const uint64_t ua = (uintptr_t)ram;

	ASSERT(ram);
	for (unsigned i = 0; i < 64; i++)
		*(uint64_t *)(ram + i * PSZ) = 0xa000 + i;
	ASSERT_EQ_INT(set_region(vm, 0, 0, 16 * PSZ, 8 * PSZ, ua), 0);
	ASSERT_EQ_INT(set_region(vm, 1, 0, 32 * PSZ, 8 * PSZ, ua + 8 * PSZ), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);

	for (unsigned a = 8; a < 48; a++) {
		for (unsigned b = a + 1; b <= 48; b++) {
			bool meets = (a < 24 && b > 16) || (a < 40 && b > 32);
			int got = set_region(vm, 2, 0, (uint64_t)a * PSZ, (uint64_t)(b - a) * PSZ,
					     ua + 16 * PSZ);

			ASSERT_MSG(got == (meets ? -EEXIST : 0), "create [%u, %u): %d", a, b, got);
			if (!got)
				ASSERT_EQ_INT(set_region(vm, 2, 0, 0, 0, 0), 0);
			ASSERT_EQ(nslots(vm), 2);
		}
	}
	ASSERT_EQ(read1(v, 16 * PSZ), 0xa000);
	ASSERT_EQ(read1(v, 23 * PSZ), 0xa000 + 7);
	/* the same, with the new range overlapping B's own old range too */
	for (unsigned base = 0; base <= 56; base++) {
		bool meets = base < 24 && base + 8 > 16;
		int got = set_region(vm, 1, 0, (uint64_t)base * PSZ, 8 * PSZ, ua + 8 * PSZ);

		ASSERT_MSG(got == (meets ? -EEXIST : 0), "move B to %u: %d", base, got);
		if (!got) {
			/* the new place reads B's pages, the old one (outside) MMIO */
			ASSERT_EQ(read1(v, (uint64_t)base * PSZ), 0xa000 + 8);
			ASSERT_EQ(read1(v, (uint64_t)(base + 7) * PSZ), 0xa000 + 15);
			if (base + 8 <= 32 || base >= 40)
				ASSERT_EQ(read1(v, 32 * PSZ), MMIO_VAL);
			/* A's translations (same leaf table) survive B's flushes */
			ASSERT_EQ_INT(gpamm_vm_translate(vm, 16 * PSZ, NULL, NULL), 0);
			ASSERT_EQ_INT(gpamm_vm_translate(vm, 23 * PSZ, NULL, NULL), 0);
			ASSERT_EQ_INT(set_region(vm, 1, 0, 32 * PSZ, 8 * PSZ, ua + 8 * PSZ), 0);
			ASSERT_EQ_INT(gpamm_vm_translate(vm, 16 * PSZ, NULL, NULL), 0);
			ASSERT_EQ_INT(gpamm_vm_translate(vm, 23 * PSZ, NULL, NULL), 0);
			ASSERT_EQ_INT(gpamm_vm_translate(vm, (uint64_t)base * PSZ, NULL, NULL),
				      base == 32 ? 0 : -ENOENT);
		}
		ASSERT_EQ(read1(v, 16 * PSZ), 0xa000);
		ASSERT_EQ(read1(v, 23 * PSZ), 0xa000 + 7);
		ASSERT_EQ(read1(v, 32 * PSZ), 0xa000 + 8);
		ASSERT_EQ(read1(v, 39 * PSZ), 0xa000 + 15);
	}
	/* A moved over B from below and above: every overlap fails, A unchanged */
	for (unsigned base = 25; base < 40; base++) {
		int got = set_region(vm, 0, 0, (uint64_t)base * PSZ, 8 * PSZ, ua);

		ASSERT_MSG(got == -EEXIST, "move A to %u: %d", base, got);
	}
	ASSERT_EQ(read1(v, 16 * PSZ), 0xa000);
	/* adjacency: A moved to end exactly where B begins, then right after B */
	ASSERT_EQ_INT(set_region(vm, 0, 0, 24 * PSZ, 8 * PSZ, ua), 0);
	ASSERT_EQ(read1(v, 31 * PSZ), 0xa000 + 7);
	ASSERT_EQ(read1(v, 32 * PSZ), 0xa000 + 8);
	ASSERT_EQ_INT(set_region(vm, 0, 0, 40 * PSZ, 8 * PSZ, ua), 0);
	ASSERT_EQ(read1(v, 39 * PSZ), 0xa000 + 15);
	ASSERT_EQ(read1(v, 40 * PSZ), 0xa000);
	ASSERT_EQ(read1(v, 24 * PSZ), MMIO_VAL);
	/* a 1-page slot filling the exact 1-page hole between two slots */
	ASSERT_EQ_INT(set_region(vm, 1, 0, 31 * PSZ, 8 * PSZ, ua + 8 * PSZ), 0); /* [31, 39) */
	ASSERT_EQ_INT(set_region(vm, 3, 0, 39 * PSZ, PSZ, ua + 40 * PSZ), 0);
	ASSERT_EQ(read1(v, 38 * PSZ), 0xa000 + 15);
	ASSERT_EQ(read1(v, 39 * PSZ), 0xa000 + 40);
	ASSERT_EQ(read1(v, 40 * PSZ), 0xa000);
	ASSERT_EQ_INT(set_region(vm, 3, 0, 38 * PSZ, PSZ, ua + 40 * PSZ), -EEXIST);
	ASSERT_EQ_INT(set_region(vm, 3, 0, 40 * PSZ, PSZ, ua + 40 * PSZ), -EEXIST);
	ASSERT_EQ(read1(v, 39 * PSZ), 0xa000 + 40);
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
	vt_free(ram, 64 * PSZ);
}

/* ---- GPA space edges, HVA near the top ---------------------------------------- */

static void test_edges(void)
{
	struct gpamm_host *h;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &h);
	const uint64_t space = gpamm_geom_space(gpamm_vm_geom(vm));
	uint8_t *ram = vt_alloc(8 * PSZ, PS);
	const uint64_t ua = (uintptr_t)ram;
	struct gpamm_vcpu *v;

	ASSERT(ram);
	for (unsigned i = 0; i < 8; i++)
		*(uint64_t *)(ram + i * PSZ) = 0xe000 + i;
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	/* GFN 0 and the last page of the GPA space */
	ASSERT_EQ_INT(set_region(vm, 0, 0, 0, PSZ, ua), 0);
	ASSERT_EQ_INT(set_region(vm, 1, 0, space - 2 * PSZ, 2 * PSZ, ua + PSZ), 0);
	ASSERT_EQ(read1(v, 0), 0xe000);
	ASSERT_EQ(read1(v, space - PSZ), 0xe002);
	ASSERT_EQ(read1(v, space - 2 * PSZ), 0xe001);
	ASSERT_EQ(read1(v, PSZ), MMIO_VAL);
	/* one page past the end: -EFAULT, also for a MOVE; nothing changed */
	ASSERT_EQ_INT(set_region(vm, 2, 0, space - PSZ, 2 * PSZ, ua + 3 * PSZ), -EEXIST);
	ASSERT_EQ_INT(set_region(vm, 2, 0, space, PSZ, ua + 3 * PSZ), -EFAULT);
	ASSERT_EQ_INT(set_region(vm, 0, 0, space, PSZ, ua), -EFAULT);
	ASSERT_EQ_INT(set_region(vm, 1, 0, space - PSZ, 2 * PSZ, ua + PSZ), -EFAULT);
	ASSERT_EQ(read1(v, 0), 0xe000);
	ASSERT_EQ(read1(v, space - PSZ), 0xe002);
	/* GPA + size wrapping */
	ASSERT_EQ_INT(set_region(vm, 2, 0, 0ULL - PSZ, PSZ, ua), -EINVAL);
	ASSERT_EQ_INT(set_region(vm, 2, 0, 0ULL - PSZ, 2 * PSZ, ua), -EINVAL);
	/* MOVE of the top slot to GFN 1 (adjacent to slot 0) and back to the top */
	ASSERT_EQ_INT(set_region(vm, 1, 0, PSZ, 2 * PSZ, ua + PSZ), 0);
	ASSERT_EQ(read1(v, space - PSZ), MMIO_VAL);
	ASSERT_EQ(read1(v, 2 * PSZ), 0xe002);
	ASSERT_EQ_INT(set_region(vm, 1, 0, space - 2 * PSZ, 2 * PSZ, ua + PSZ), 0);
	ASSERT_EQ(read1(v, PSZ), MMIO_VAL);
	ASSERT_EQ(read1(v, space - PSZ), 0xe002);
	/* HVA at the very top: the last possible page is accepted, a wrap refused */
	ASSERT_EQ_INT(set_region(vm, 3, 0, 0x100000, PSZ, 0ULL - 2 * PSZ), 0);
	ASSERT_EQ_INT(set_region(vm, 4, 0, 0x200000, PSZ, 0ULL - PSZ), -EINVAL);
	ASSERT_EQ_INT(set_region(vm, 4, 0, 0x200000, 2 * PSZ, 0ULL - 2 * PSZ), -EINVAL);
	/* a second slot aliasing it, then both deleted */
	ASSERT_EQ_INT(set_region(vm, 4, 0, 0x200000, PSZ, 0ULL - 2 * PSZ), 0);
	ASSERT_EQ(nslots(vm), 4);
	ASSERT_EQ_INT(set_region(vm, 3, 0, 0, 0, 0), 0);
	ASSERT_EQ_INT(set_region(vm, 4, 0, 0, 0, 0), 0);
	/* a slot overlapping the top one and beyond the space: -EEXIST is checked first */
	ASSERT_EQ_INT(set_region(vm, 5, 0, space - PSZ, 4 * PSZ, 1ULL << 40), -EEXIST);
	ASSERT_EQ_INT(set_region(vm, 5, 0, 1ULL << 20, space, 1ULL << 40), -EEXIST);
	/* the largest slot allowed (64 KiB pages: a 2^55 space), and one page more */
	{
		struct gpamm_host *h2;
		struct gpamm_vm *vm2 = vt_vm_direct(16, 3, &h2);
		const uint64_t big = 1ULL << 16;

		ASSERT_EQ_INT(set_region(vm2, 5, 0, 1ULL << 50, GPAMM_MEM_MAX_NR_PAGES * big,
					 1ULL << 50), 0);
		ASSERT_EQ_INT(set_region(vm2, 6, 0, 0, (GPAMM_MEM_MAX_NR_PAGES + 1) * big,
					 1ULL << 52), -EINVAL);
		/* MOVE it to GFN 0, then to end exactly at the end of the space */
		ASSERT_EQ_INT(set_region(vm2, 5, 0, 0, GPAMM_MEM_MAX_NR_PAGES * big, 1ULL << 50), 0);
		ASSERT_EQ_INT(set_region(vm2, 5, 0, (1ULL << 55) - GPAMM_MEM_MAX_NR_PAGES * big,
					 GPAMM_MEM_MAX_NR_PAGES * big, 1ULL << 50), 0);
		ASSERT_EQ_INT(set_region(vm2, 6, 0, 0, big, 1ULL << 50), 0); /* HVA alias */
		ASSERT_EQ_INT(set_region(vm2, 5, 0, 0, 0, 0), 0);
		ASSERT_EQ_INT(gpamm_vm_destroy(vm2), 0);
		gpamm_host_destroy(h2);
	}
	ASSERT_EQ(nslots(vm), 2);
	ASSERT_EQ(read1(v, 0), 0xe000);
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
	vt_free(ram, 8 * PSZ);
}

/* ---- the per-vCPU slot cache and ABA ---------------------------------------- */

/*
 * One vCPU reads the same GPA around every change, so its last-used slot
 * is always the one of that GPA: DELETE and re-CREATE of the same id at
 * the same GPA with another HVA (the slot struct is likely reused by
 * malloc), another id at the same GPA, a MOVE away and another slot moved
 * in, FLAGS_ONLY changes. The value read must always be the current one.
 */
static void test_slot_cache_aba(void)
{
	struct gpamm_host *h;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &h);
	uint8_t *ram = vt_alloc(16 * PSZ, PS);
	const uint64_t ua = (uintptr_t)ram, g = 0x40000, g2 = 0x80000;
	struct gpamm_vcpu *v;

	ASSERT(ram);
	for (unsigned i = 0; i < 16; i++)
		*(uint64_t *)(ram + i * PSZ) = 0xc000 + i;
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	for (unsigned it = 0; it < 50; it++) {
		unsigned k = it % 8;

		ASSERT_EQ_INT(set_region(vm, 7, 0, g, PSZ, ua + k * PSZ), 0);
		ASSERT_EQ(read1(v, g), 0xc000 + k);
		ASSERT_EQ_INT(set_region(vm, 7, 0, 0, 0, 0), 0);
		ASSERT_EQ(read1(v, g), MMIO_VAL);
		/* same id, same GPA, another HVA */
		ASSERT_EQ_INT(set_region(vm, 7, 0, g, PSZ, ua + (k + 1) * PSZ), 0);
		ASSERT_EQ(read1(v, g), 0xc000 + k + 1);
		ASSERT_EQ_INT(set_region(vm, 7, 0, 0, 0, 0), 0);
		/* another id at the same GPA */
		ASSERT_EQ_INT(set_region(vm, 9, 0, g, PSZ, ua + (k + 2) * PSZ), 0);
		ASSERT_EQ(read1(v, g), 0xc000 + k + 2);
		/* moved away, then the old id comes back at the GPA */
		ASSERT_EQ_INT(set_region(vm, 9, 0, g2, PSZ, ua + (k + 2) * PSZ), 0);
		ASSERT_EQ(read1(v, g), MMIO_VAL);
		ASSERT_EQ(read1(v, g2), 0xc000 + k + 2);
		ASSERT_EQ_INT(set_region(vm, 7, 0, g, PSZ, ua + (k + 3) * PSZ), 0);
		ASSERT_EQ(read1(v, g), 0xc000 + k + 3);
		/* FLAGS_ONLY (logging on) keeps the translation source */
		ASSERT_EQ_INT(set_region(vm, 7, GPAMM_MEM_LOG_DIRTY_PAGES, g, PSZ, ua + (k + 3) * PSZ), 0);
		ASSERT_EQ(read1(v, g), 0xc000 + k + 3);
		/* a MOVE of 9 onto 7's GPA fails, 7 delete, then 9 moved onto it */
		ASSERT_EQ_INT(set_region(vm, 9, 0, g, PSZ, ua + (k + 2) * PSZ), -EEXIST);
		ASSERT_EQ_INT(set_region(vm, 7, 0, 0, 0, 0), 0);
		ASSERT_EQ_INT(set_region(vm, 9, 0, g, PSZ, ua + (k + 2) * PSZ), 0);
		ASSERT_EQ(read1(v, g), 0xc000 + k + 2);
		ASSERT_EQ(read1(v, g2), MMIO_VAL);
		ASSERT_EQ_INT(set_region(vm, 9, 0, 0, 0, 0), 0);
		ASSERT_EQ(read1(v, g), MMIO_VAL);
	}
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
	vt_free(ram, 16 * PSZ);
}

/* ---- HVA aliasing with host events ------------------------------------------ */

/*
 * Slots over one 16-page VMA at offsets (pages): A [0, 8) at GA, B [4, 12)
 * at GB (partial overlap), C [2, 4) at GC (inside A), D [0, 8) at GD (the
 * same as A), E [12, 16) at GE (adjacent to B's end). For each event over
 * HVA pages [lo, hi) every GPA whose HVA lies there loses its translation,
 * every other keeps it, and a read afterwards sees the data the host has
 * there (checking on: no stale access).
 */
#define NA 5
static const struct { uint64_t off, np, gpa; } alias[NA] = {
	{ 0, 8, 0x100000 }, { 4, 8, 0x200000 }, { 2, 2, 0x300000 }, { 0, 8, 0x400000 },
	{ 12, 4, 0x500000 },
};

enum ev { EV_DONTNEED, EV_MPROTECT, EV_RECLAIM, EV_MIGRATE, EV_MUNMAP, EV_NR };

static void read_all_aliases(struct gpamm_vcpu *v, uint64_t *vals, unsigned *mmio)
{
	uint64_t list[1 + NA * 8];
	unsigned n = 0;

	for (unsigned s = 0; s < NA; s++)
		for (unsigned p = 0; p < alias[s].np; p++)
			list[1 + n++] = alias[s].gpa + p * PSZ;
	list[0] = n;
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, guest_read_list, list, 0), 0);
	vt_run_to_done(v, MMIO_VAL, mmio);
	memcpy(vals, list + 1, n * sizeof(*vals));
}

static void alias_event(enum ev e, unsigned lo, unsigned hi)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 256, .swap_pages = 64,
				       .checking = true };
	struct gpamm_host *h = gpamm_host_sim_create(&sc);
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .host = h };
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	uint64_t hva, vals[NA * 8];
	unsigned n, mmio = 0;

	ASSERT(h);
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 16 * PSZ, 0, &hva), 0);
	for (uint64_t p = 0; p < 16; p++) {
		uint64_t val = 0x5000 + p;
		ASSERT_EQ_INT(gpamm_sim_write(h, hva + p * PSZ, &val, 8), 0);
	}
	for (unsigned s = 0; s < NA; s++)
		ASSERT_EQ_INT(set_region(vm, s, 0, alias[s].gpa, alias[s].np * PSZ,
					 hva + alias[s].off * PSZ), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	read_all_aliases(v, vals, NULL);
	n = 0;
	for (unsigned s = 0; s < NA; s++)
		for (unsigned p = 0; p < alias[s].np; p++)
			ASSERT_EQ(vals[n++], 0x5000 + alias[s].off + p);

	switch (e) {
	case EV_DONTNEED:
		ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva + lo * PSZ, (hi - lo) * PSZ), 0);
		break;
	case EV_MPROTECT:
		ASSERT_EQ_INT(gpamm_sim_mprotect(h, hva + lo * PSZ, (hi - lo) * PSZ, false), 0);
		break;
	case EV_RECLAIM:
		ASSERT(gpamm_sim_reclaim(h, hva + lo * PSZ, (hi - lo) * PSZ, ~0ULL) >= 0);
		break;
	case EV_MIGRATE:
		ASSERT(gpamm_sim_migrate(h, hva + lo * PSZ, (hi - lo) * PSZ) >= 0);
		break;
	case EV_MUNMAP:
		ASSERT_EQ_INT(gpamm_sim_munmap(h, hva + lo * PSZ, (hi - lo) * PSZ), 0);
		break;
	default:
		break;
	}
	for (unsigned s = 0; s < NA; s++) {
		for (unsigned p = 0; p < alias[s].np; p++) {
			uint64_t hp = alias[s].off + p, gpa = alias[s].gpa + p * PSZ;
			gpamm_pte_t pte = 0;
			int r = gpamm_vm_translate(vm, gpa, &pte, NULL);
			bool in = hp >= lo && hp < hi;

			if (in && e == EV_MPROTECT)
				ASSERT_MSG(r == -ENOENT || !(pte & GPAMM_PTE_WRITEABLE),
					   "ev %d [%u,%u): slot %u page %u still writable", e, lo,
					   hi, s, p);
			else if (in)
				ASSERT_MSG(r == -ENOENT, "ev %d [%u,%u): slot %u page %u still mapped",
					   e, lo, hi, s, p);
			else
				ASSERT_MSG(r == 0, "ev %d [%u,%u): slot %u page %u lost (%d)", e, lo,
					   hi, s, p, r);
		}
	}
	if (e != EV_MUNMAP) {
		read_all_aliases(v, vals, &mmio);
		n = 0;
		for (unsigned s = 0; s < NA; s++) {
			for (unsigned p = 0; p < alias[s].np; p++) {
				uint64_t hp = alias[s].off + p;
				uint64_t want = e == EV_DONTNEED && hp >= lo && hp < hi ? 0 : 0x5000 + hp;

				ASSERT_MSG(vals[n] == want, "ev %d: slot %u page %u read %#llx", e, s,
					   p, (unsigned long long)vals[n]);
				n++;
			}
		}
		ASSERT_EQ(mmio, 0);
	}
	ASSERT_EQ(stale(vm), 0);
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
}

static void test_alias_host_events(void)
{
	static const unsigned ranges[][2] = {
		{ 0, 1 }, { 3, 4 }, { 2, 5 }, { 4, 8 }, { 7, 9 }, { 11, 13 }, { 12, 16 },
		{ 0, 16 }, { 1, 15 }, { 8, 12 },
	};

	for (unsigned e = 0; e < EV_NR; e++)
		for (unsigned i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
			alias_event(e, ranges[i][0], ranges[i][1]);
}

/* ---- dirty logging across a MOVE ------------------------------------------------ */

static void test_dirty_log_across_move(void)
{
	struct gpamm_host *h;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &h);
	uint8_t *ram = vt_alloc(128 * PSZ, PS);
	const uint64_t ua = (uintptr_t)ram, g1 = 0x100000, g2 = g1 + 64 * PSZ;
	uint64_t bm[2];
	struct gpamm_vcpu *v;

	ASSERT(ram);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	ASSERT_EQ_INT(set_region(vm, 0, GPAMM_MEM_LOG_DIRTY_PAGES, g1, 128 * PSZ, ua), 0);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	ASSERT_EQ(bm[0] | bm[1], 0);
	write1(v, g1 + 1 * PSZ, 1);
	write1(v, g1 + 70 * PSZ, 2);
	/* MOVE overlapping its own old range, logging stays on */
	ASSERT_EQ_INT(set_region(vm, 0, GPAMM_MEM_LOG_DIRTY_PAGES, g2, 128 * PSZ, ua), 0);
	ASSERT_EQ(read1(v, g2 + 1 * PSZ), 1);
	ASSERT_EQ(read1(v, g2 + 70 * PSZ), 2);
	ASSERT_EQ(read1(v, g1), MMIO_VAL);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	tap_diag("after MOVE: bitmap %#llx %#llx", (unsigned long long)bm[0],
		 (unsigned long long)bm[1]);
	/* whatever carried over, no page but those written may be reported */
	ASSERT_EQ(bm[0] & ~(1ULL << 1), 0);
	ASSERT_EQ(bm[1] & ~(1ULL << 6), 0);
	/* writes at the new place are logged at their offsets in the slot */
	write1(v, g2 + 5 * PSZ, 3);
	write1(v, g2 + 127 * PSZ, 4);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	ASSERT_EQ(bm[0], 1ULL << 5);
	ASSERT_EQ(bm[1], 1ULL << 63);
	/* write-protected again by GET: the next write faults and is logged */
	write1(v, g2 + 5 * PSZ, 5);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	ASSERT_EQ(bm[0], 1ULL << 5);
	ASSERT_EQ(bm[1], 0);
	/* MOVE back turning logging off, then on again with a MOVE: starts clean */
	ASSERT_EQ_INT(set_region(vm, 0, 0, g1, 128 * PSZ, ua), 0);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), -ENOENT);
	write1(v, g1 + 9 * PSZ, 6); /* mapped writable and dirty at once: no logging */
	ASSERT_EQ_INT(set_region(vm, 0, GPAMM_MEM_LOG_DIRTY_PAGES, g2, 128 * PSZ, ua), 0);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	ASSERT_EQ(bm[0] | bm[1], 0);
	write1(v, g2 + 9 * PSZ, 7);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	ASSERT_EQ(bm[0], 1ULL << 9);
	ASSERT_EQ(bm[1], 0);
	/* FLAGS_ONLY on, with a page mapped writable before: it must be protected */
	ASSERT_EQ_INT(set_region(vm, 0, 0, g2, 128 * PSZ, ua), 0);
	write1(v, g2 + 10 * PSZ, 8);
	ASSERT_EQ_INT(set_region(vm, 0, GPAMM_MEM_LOG_DIRTY_PAGES, g2, 128 * PSZ, ua), 0);
	write1(v, g2 + 10 * PSZ, 9);
	ASSERT_EQ_INT(gpamm_vm_get_dirty_log(vm, 0, bm), 0);
	ASSERT_EQ(bm[0], 1ULL << 10);
	ASSERT_EQ(bm[1], 0);
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
	vt_free(ram, 128 * PSZ);
}

/* ---- random model: multi-page aliasing slots, moves, host events ----------------- */

#define RP 96       /* GPA pages */
#define RH 24       /* HVA pages of the one VMA */
#define RS 12       /* slot ids */

struct rslot { bool live; unsigned base, np, hoff, flags; };

static void test_random_alias_model(void)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 256, .checking = true };
	struct gpamm_host *h = gpamm_host_sim_create(&sc);
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .host = h };
	const uint64_t G0 = 0x100000;
	struct rslot m[RS] = { { 0 } };
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	struct tap_rng r;
	uint64_t hva, list[1 + RP];

	ASSERT(h);
	tap_rng_seed(&r, tap_seed() ^ 0x51075);
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, RH * PSZ, 0, &hva), 0);
	for (uint64_t p = 0; p < RH; p++) {
		uint64_t val = 0x7000 + p;
		ASSERT_EQ_INT(gpamm_sim_write(h, hva + p * PSZ, &val, 8), 0);
	}
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	for (unsigned step = 0; step < 600; step++) {
		unsigned s = (unsigned)tap_below(&r, RS), op = (unsigned)tap_below(&r, 10);
		struct rslot want = m[s];
		int exp = 0, got;

		if (op < 2 && m[s].live) {
			want.live = false;
			got = set_region(vm, s, 0, 0, 0, 0);
		} else if (op < 3 && m[s].live) {
			want.flags ^= GPAMM_MEM_LOG_DIRTY_PAGES;
			got = set_region(vm, s, want.flags, G0 + m[s].base * PSZ, m[s].np * PSZ,
					 hva + m[s].hoff * PSZ);
		} else if (op < 5 && m[s].live) {
			/* a MOVE near its old place: often overlapping it, or adjacent */
			int nb = (int)m[s].base + (int)tap_below(&r, 2 * m[s].np + 3) - (int)m[s].np - 1;
			want.base = nb < 0 ? 0 : nb + want.np > RP ? RP - want.np : (unsigned)nb;
			goto place;
		} else if (op < 6 && m[s].live) {
			/* host event over a random HVA range: checked below */
			unsigned lo = (unsigned)tap_below(&r, RH), hi = lo + 1 + (unsigned)tap_below(&r, RH - lo);
			ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva + lo * PSZ, (hi - lo) * PSZ), 0);
			for (unsigned t = 0; t < RS; t++) {
				if (!m[t].live)
					continue;
				for (unsigned p = 0; p < m[t].np; p++) {
					unsigned hp = m[t].hoff + p;
					if (hp >= lo && hp < hi)
						ASSERT_MSG(gpamm_vm_translate(vm, G0 + (m[t].base + p) * PSZ,
									      NULL, NULL) == -ENOENT,
							   "step %u: slot %u page %u survived dontneed [%u,%u)",
							   step, t, p, lo, hi);
				}
			}
			for (uint64_t p = lo; p < hi; p++) {
				uint64_t val = 0x7000 + p;
				ASSERT_EQ_INT(gpamm_sim_write(h, hva + p * PSZ, &val, 8), 0);
			}
			continue;
		} else if (!m[s].live) {
			want.live = true;
			want.np = 1 + (unsigned)tap_below(&r, 8);
			want.base = (unsigned)tap_below(&r, RP - want.np + 1);
			want.hoff = (unsigned)tap_below(&r, RH - want.np + 1);
			want.flags = 0;
place:
			for (unsigned t = 0; t < RS; t++)
				if (t != s && m[t].live && want.base < m[t].base + m[t].np &&
				    m[t].base < want.base + want.np)
					exp = -EEXIST;
			got = set_region(vm, s, want.flags, G0 + want.base * PSZ, want.np * PSZ,
					 hva + want.hoff * PSZ);
		} else {
			continue;
		}
		ASSERT_MSG(got == exp, "step %u slot %u op %u: got %d, want %d", step, s, op, got, exp);
		if (!got)
			m[s] = want;
		if (step % 4)
			continue;
		list[0] = RP;
		for (unsigned q = 0; q < RP; q++)
			list[1 + q] = G0 + q * PSZ;
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, guest_read_list, list, 0), 0);
		vt_run_to_done(v, MMIO_VAL, NULL);
		for (unsigned q = 0; q < RP; q++) {
			uint64_t w = MMIO_VAL;
			for (unsigned t = 0; t < RS; t++)
				if (m[t].live && q >= m[t].base && q < m[t].base + m[t].np)
					w = 0x7000 + m[t].hoff + (q - m[t].base);
			ASSERT_MSG(list[1 + q] == w, "step %u: gpa page %u read %#llx want %#llx", step,
				   q, (unsigned long long)list[1 + q], (unsigned long long)w);
		}
		ASSERT_EQ(stale(vm), 0);
	}
	ASSERT_EQ(stale(vm), 0);
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
}

/* ---- the full slot set with random deletes and re-creates ------------------------- */

static void test_full_set_churn(void)
{
	const unsigned n = GPAMM_USER_MEM_SLOTS;
	struct gpamm_host *h;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &h);
	uint8_t *ram = vt_alloc(64 * PSZ, PS);
	uint32_t *at = malloc(n * sizeof(*at)); /* GPA page of each slot; ~0: none */
	uint32_t *own = malloc(4 * (size_t)n * sizeof(*own)); /* slot at each page */
	uint64_t list[1 + 64];
	struct gpamm_vcpu *v;
	struct tap_rng r;

	ASSERT(ram && at && own);
	tap_rng_seed(&r, tap_seed() ^ 0xf011);
	for (unsigned i = 0; i < 64; i++)
		*(uint64_t *)(ram + i * PSZ) = 0xd000 + i;
	for (unsigned p = 0; p < 4 * n; p++)
		own[p] = ~0u;
	for (unsigned i = 0; i < n; i++) {
		at[i] = 2 * i;
		own[2 * i] = i;
		ASSERT_EQ_INT(set_region(vm, i, 0, (uint64_t)at[i] * PSZ, PSZ,
					 (uintptr_t)ram + (i % 64) * PSZ), 0);
	}
	ASSERT_EQ(nslots(vm), n);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	for (unsigned step = 0; step < 600; step++) {
		unsigned s = (unsigned)tap_below(&r, n), p = (unsigned)tap_below(&r, 4 * n);
		int got, exp;

		if (at[s] != ~0u && tap_below(&r, 2)) {
			ASSERT_EQ_INT(set_region(vm, s, 0, 0, 0, 0), 0);
			own[at[s]] = ~0u;
			at[s] = ~0u;
		} else {
			exp = own[p] != ~0u && own[p] != s ? -EEXIST : 0;
			got = set_region(vm, s, 0, (uint64_t)p * PSZ, PSZ, (uintptr_t)ram + (s % 64) * PSZ);
			ASSERT_MSG(got == exp, "step %u: slot %u to page %u: %d want %d", step, s, p, got,
				   exp);
			if (!got) {
				if (at[s] != ~0u)
					own[at[s]] = ~0u;
				at[s] = p;
				own[p] = s;
			}
		}
		if (step % 10)
			continue;
		list[0] = 64;
		for (unsigned k = 0; k < 64; k++) {
			unsigned q = (unsigned)tap_below(&r, 4 * n);
			if (k < 8 && at[s] != ~0u)
				q = at[s] + (k & 1); /* the slot just touched and its neighbour */
			list[1 + k] = (uint64_t)q * PSZ;
		}
		{
			uint64_t gp[64];
			for (unsigned k = 0; k < 64; k++)
				gp[k] = list[1 + k] / PSZ;
			ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, guest_read_list, list, 0), 0);
			vt_run_to_done(v, MMIO_VAL, NULL);
			for (unsigned k = 0; k < 64; k++) {
				uint32_t o = own[gp[k]];
				ASSERT_MSG(list[1 + k] == (o == ~0u ? MMIO_VAL : 0xd000 + o % 64),
					   "step %u: page %llu read %#llx (owner %u)", step,
					   (unsigned long long)gp[k], (unsigned long long)list[1 + k], o);
			}
		}
	}
	{
		unsigned live = 0;
		for (unsigned i = 0; i < n; i++)
			live += at[i] != ~0u;
		ASSERT_EQ(nslots(vm), live);
	}
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
	vt_free(ram, 64 * PSZ);
	free(at);
	free(own);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_overlap_every_case);
	TEST(test_edges);
	TEST(test_slot_cache_aba);
	TEST(test_alias_host_events);
	TEST(test_dirty_log_across_move);
	TEST(test_random_alias_model);
	TEST(test_full_set_churn);
	return tap_done();
}
