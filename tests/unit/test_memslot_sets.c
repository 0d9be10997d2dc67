// SPDX-License-Identifier: MIT
/*
 * The two memslot sets and their indexes (memslot.h), from the outside:
 * slots that alias one HVA range are all found by a host event on it; the
 * full LoongArch slot count (32767) can be created, looked up through the
 * guest, moved and deleted; a notifier call over many slots issues one
 * remote flush; and random create/move/delete sequences agree with a flat
 * model of GPA -> HVA at every step (seeded: tap_seed()).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)

static int guest_read_list(struct gpamm_vcpu *v, void *arg)
{
	uint64_t *list = arg; /* list[0] = n, then n GPAs; the values read replace them */

	for (uint64_t i = 1; i <= list[0]; i++)
		list[i] = gpamm_guest_read(v, list[i], 8);
	return 0;
}

static void run_reads(struct gpamm_vcpu *v, uint64_t *list, unsigned *mmio)
{
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, guest_read_list, list, 0), 0);
	vt_run_to_done(v, ~0ULL, mmio);
}

/* Two slots on one HVA range: a host unmap there removes both translations. */
static void test_hva_aliases_both_unmapped(void)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 64, .checking = true };
	struct gpamm_host *h = gpamm_host_sim_create(&sc);
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .host = h };
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	struct gpamm_vm_stats st;
	uint64_t hva, val = 0x1122334455667788ULL;
	const uint64_t ga = 0x100000, gb = 0x800000;

	ASSERT(h);
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 4 * PSZ, 0, &hva), 0);
	ASSERT_EQ_INT(gpamm_sim_write(h, hva, &val, 8), 0);
	for (unsigned s = 0; s < 2; s++)
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
			.slot = s, .guest_phys_addr = s ? gb : ga, .memory_size = 4 * PSZ,
			.userspace_addr = hva }), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	{
		uint64_t list[] = { 2, ga, gb };
		run_reads(v, list, NULL);
		ASSERT_EQ(list[1], val);
		ASSERT_EQ(list[2], val);
	}
	ASSERT_EQ_INT(gpamm_vm_translate(vm, ga, NULL, NULL), 0);
	ASSERT_EQ_INT(gpamm_vm_translate(vm, gb, NULL, NULL), 0);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva, PSZ), 0);
	ASSERT_EQ_INT(gpamm_vm_translate(vm, ga, NULL, NULL), -ENOENT);
	ASSERT_EQ_INT(gpamm_vm_translate(vm, gb, NULL, NULL), -ENOENT);
	{
		uint64_t list[] = { 2, ga, gb };
		run_reads(v, list, NULL);
		ASSERT_EQ(list[1], 0); /* both see the host's zeros, never the old frame */
		ASSERT_EQ(list[2], 0);
	}
	gpamm_vm_stats(vm, &st);
	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
}

/* 32767 one-page slots over one direct-host region; one bad id past them. */
static void test_full_slot_count(void)
{
	const unsigned n = GPAMM_USER_MEM_SLOTS;
	struct gpamm_host *h;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &h);
	uint8_t *ram = vt_alloc((size_t)n * PSZ, PS);
	struct gpamm_vcpu *v;
	struct gpamm_vm_stats st;
	uint64_t *list = malloc((1 + 64) * sizeof(*list));
	unsigned mmio = 0;

	ASSERT(ram && list);
	ASSERT_EQ(n, 32767);
	/* every page holds its own slot number; slots at every other GPA page */
	for (unsigned i = 0; i < n; i++) {
		*(uint64_t *)(ram + (size_t)i * PSZ) = i;
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
			.slot = i, .guest_phys_addr = (uint64_t)i * 2 * PSZ, .memory_size = PSZ,
			.userspace_addr = (uintptr_t)ram + (uint64_t)i * PSZ }), 0);
	}
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = n, .guest_phys_addr = 1ULL << 32, .memory_size = PSZ,
		.userspace_addr = (uintptr_t)ram }), -EINVAL);
	gpamm_vm_stats(vm, &st);
	ASSERT_EQ(st.slots, n);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	/* 64 slots spread over the range, and the holes between them */
	list[0] = 64;
	for (unsigned k = 0; k < 64; k++)
		list[1 + k] = (uint64_t)(k * 511 % n) * 2 * PSZ + (k & 1 ? PSZ : 0);
	run_reads(v, list, &mmio);
	for (unsigned k = 0; k < 64; k++)
		ASSERT_EQ(list[1 + k], k & 1 ? ~0ULL : (uint64_t)(k * 511 % n));
	ASSERT_EQ(mmio, 32);
	/* move the middle slot into a hole far away, delete its neighbour */
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = n / 2, .guest_phys_addr = 1ULL << 33, .memory_size = PSZ,
		.userspace_addr = (uintptr_t)ram + (uint64_t)(n / 2) * PSZ }), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = n / 2 + 1 }), 0);
	list[0] = 3;
	list[1] = 1ULL << 33;
	list[2] = (uint64_t)(n / 2) * 2 * PSZ;
	list[3] = (uint64_t)(n / 2 + 1) * 2 * PSZ;
	mmio = 0;
	run_reads(v, list, &mmio);
	ASSERT_EQ(list[1], n / 2);
	ASSERT_EQ(list[2], ~0ULL);
	ASSERT_EQ(list[3], ~0ULL);
	ASSERT_EQ(mmio, 2);
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
	vt_free(ram, (size_t)n * PSZ);
	free(list);
}

/* A host event over the pages of 64 slots: one remote flush, not 64. */
static void test_one_flush_per_notifier_call(void)
{
	struct gpamm_sim_config sc = { .page_shift = PS, .frames = 256, .checking = false };
	struct gpamm_host *h = gpamm_host_sim_create(&sc);
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3, .host = h };
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	struct gpamm_vm_stats a, b;
	uint64_t hva, list[1 + 64];

	ASSERT(h);
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	ASSERT_EQ_INT(gpamm_sim_mmap(h, 64 * PSZ, 0, &hva), 0);
	for (unsigned s = 0; s < 64; s++)
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
			.slot = s, .guest_phys_addr = 0x100000 + (uint64_t)s * 4 * PSZ,
			.memory_size = PSZ, .userspace_addr = hva + (uint64_t)s * PSZ }), 0);
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	list[0] = 64;
	for (unsigned s = 0; s < 64; s++)
		list[1 + s] = 0x100000 + (uint64_t)s * 4 * PSZ;
	run_reads(v, list, NULL);
	gpamm_vm_stats(vm, &a);
	ASSERT_EQ_INT(gpamm_sim_madv_dontneed(h, hva, 64 * PSZ), 0);
	gpamm_vm_stats(vm, &b);
	ASSERT_EQ(b.remote_flushes - a.remote_flushes, 1);
	for (unsigned s = 0; s < 64; s++)
		ASSERT_EQ_INT(gpamm_vm_translate(vm, 0x100000 + (uint64_t)s * 4 * PSZ, NULL, NULL),
			      -ENOENT);
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
}

/*
 * Random CREATE / MOVE / DELETE / logging flips of up to 48 slots on 256
 * GPA "places", checked against a model after every call: the guest reads
 * a page of every place (a slot's page holds its id, or MMIO), so the
 * lookups of both sets, the per-vCPU slot cache and the flushes of old
 * translations are all exercised.
 */
#define PLACES 256
#define MSLOTS 48

static void test_random_changes_against_model(void)
{
	struct gpamm_host *h;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &h);
	uint8_t *ram = vt_alloc(MSLOTS * PSZ, PS);
	int at[MSLOTS];           /* place of each slot, -1: none */
	int owner[PLACES];        /* slot at each place, -1: none */
	unsigned logging[MSLOTS] = { 0 };
	struct gpamm_vcpu *v;
	struct tap_rng r;
	uint64_t *list = malloc((1 + PLACES) * sizeof(*list));

	ASSERT(ram && list);
	tap_rng_seed(&r, tap_seed());
	for (unsigned i = 0; i < MSLOTS; i++) {
		at[i] = -1;
		*(uint64_t *)(ram + i * PSZ) = 1000 + i;
	}
	for (unsigned p = 0; p < PLACES; p++)
		owner[p] = -1;
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	for (unsigned step = 0; step < 400; step++) {
		unsigned s = (unsigned)tap_below(&r, MSLOTS), p = (unsigned)tap_below(&r, PLACES);
		struct gpamm_userspace_memory_region reg = {
			.slot = s, .guest_phys_addr = (uint64_t)p * PSZ, .memory_size = PSZ,
			.userspace_addr = (uintptr_t)ram + s * PSZ, .flags = logging[s],
		};
		int want, got;

		if (at[s] >= 0 && tap_below(&r, 3) == 0) {
			reg.memory_size = 0; /* DELETE */
			want = 0;
		} else if (at[s] >= 0 && tap_below(&r, 4) == 0) {
			reg.guest_phys_addr = (uint64_t)at[s] * PSZ; /* FLAGS_ONLY */
			reg.flags = logging[s] ^= GPAMM_MEM_LOG_DIRTY_PAGES;
			want = 0;
		} else {
			want = owner[p] >= 0 && owner[p] != (int)s ? -EEXIST : 0;
		}
		got = gpamm_vm_set_memory_region(vm, &reg);
		ASSERT_EQ_INT(got, want);
		if (!got && !reg.memory_size) {
			owner[at[s]] = -1;
			at[s] = -1;
			logging[s] = 0;
		} else if (!got) {
			if (at[s] >= 0)
				owner[at[s]] = -1;
			at[s] = (int)(reg.guest_phys_addr / PSZ);
			owner[at[s]] = (int)s;
		}
		if (step % 8)
			continue;
		list[0] = PLACES;
		for (unsigned q = 0; q < PLACES; q++)
			list[1 + q] = (uint64_t)q * PSZ;
		run_reads(v, list, NULL);
		for (unsigned q = 0; q < PLACES; q++)
			ASSERT_EQ(list[1 + q], owner[q] >= 0 ? 1000 + (uint64_t)owner[q] : ~0ULL);
	}
	ASSERT_EQ_INT(gpamm_vm_destroy(vm), 0);
	gpamm_host_destroy(h);
	vt_free(ram, MSLOTS * PSZ);
	free(list);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_hva_aliases_both_unmapped);
	TEST(test_full_slot_count);
	TEST(test_one_flush_per_notifier_call);
	TEST(test_random_changes_against_model);
	return tap_done();
}
