// SPDX-License-Identifier: MIT
/*
 * Memslot validation, one named test per rule of KVM_SET_USER_MEMORY_REGION:
 * each asserts the errno and that nothing changed (the slot set and what
 * the guest sees through it). Also the legal changes: create, flags-only,
 * move and delete, and what a vCPU sees after each.
 */
#include <errno.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 14
#define PSZ (1ULL << PS)
#define RAM (4 * 1024 * 1024ULL)

static struct gpamm_host *host;
static struct gpamm_vm *vm;
static uint8_t *ram, *ram2;

static void setup(void)
{
	vm = vt_vm_direct(PS, 3, &host);
	ram = vt_alloc(RAM, PS);
	ram2 = vt_alloc(RAM, PS);
	ASSERT(ram && ram2);
	struct gpamm_userspace_memory_region r = {
		.slot = 1, .guest_phys_addr = 1ULL << 30, .memory_size = RAM,
		.userspace_addr = (uintptr_t)ram,
	};
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
}

static void teardown(void)
{
	struct gpamm_live l;

	gpamm_vm_destroy(vm);
	gpamm_host_destroy(host);
	vt_free(ram, RAM);
	vt_free(ram2, RAM);
	gpamm_live_objects(&l);
	ASSERT_EQ(l.vms, 0);
	ASSERT_EQ(l.tpools, 0);
}

static uint64_t nslots(void)
{
	struct gpamm_vm_stats st;
	gpamm_vm_stats(vm, &st);
	return st.slots;
}

/* Expect @err and no change to the set. */
static void expect_reject(struct gpamm_userspace_memory_region r, int err)
{
	uint64_t before = nslots();

	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), err);
	ASSERT_EQ(nslots(), before);
}

static struct gpamm_userspace_memory_region good(uint32_t slot, uint64_t gpa)
{
	struct gpamm_userspace_memory_region r = {
		.slot = slot, .guest_phys_addr = gpa, .memory_size = RAM,
		.userspace_addr = (uintptr_t)ram2,
	};
	return r;
}

static void test_reject_unknown_flags(void)
{
	setup();
	struct gpamm_userspace_memory_region r = good(2, 2ULL << 30);
	r.flags = 1u << 5;
	expect_reject(r, -EINVAL);
	teardown();
}

static void test_reject_slot_id_out_of_range(void)
{
	setup();
	expect_reject(good(GPAMM_USER_MEM_SLOTS, 2ULL << 30), -EINVAL);
	expect_reject(good(UINT32_MAX, 2ULL << 30), -EINVAL);
	teardown();
}

static void test_reject_unaligned_gpa(void)
{
	setup();
	expect_reject(good(2, (2ULL << 30) + 4096), -EINVAL);
	teardown();
}

static void test_reject_unaligned_size(void)
{
	setup();
	struct gpamm_userspace_memory_region r = good(2, 2ULL << 30);
	r.memory_size = RAM - 4096;
	expect_reject(r, -EINVAL);
	teardown();
}

static void test_reject_unaligned_hva(void)
{
	setup();
	struct gpamm_userspace_memory_region r = good(2, 2ULL << 30);
	r.userspace_addr += 4096;
	expect_reject(r, -EINVAL);
	teardown();
}

static void test_reject_gpa_overflow(void)
{
	setup();
	struct gpamm_userspace_memory_region r = good(2, UINT64_MAX - PSZ + 1);
	expect_reject(r, -EINVAL);
	teardown();
}

static void test_reject_hva_overflow(void)
{
	setup();
	struct gpamm_userspace_memory_region r = good(2, 2ULL << 30);
	r.userspace_addr = UINT64_MAX - PSZ + 1;
	expect_reject(r, -EINVAL);
	teardown();
}

static void test_reject_delete_missing(void)
{
	setup();
	struct gpamm_userspace_memory_region r = good(7, 0);
	r.memory_size = 0;
	expect_reject(r, -EINVAL);
	teardown();
}

static void test_reject_overlap(void)
{
	setup();
	/* starts inside slot 1, ends after it; and one that covers it */
	expect_reject(good(2, (1ULL << 30) + RAM - PSZ), -EEXIST);
	struct gpamm_userspace_memory_region r = good(2, (1ULL << 30) - PSZ);
	r.memory_size = RAM + 2 * PSZ;
	expect_reject(r, -EEXIST);
	/* touching is not overlapping */
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 2, .guest_phys_addr = (1ULL << 30) + RAM, .memory_size = RAM,
		.userspace_addr = (uintptr_t)ram2 }), 0);
	teardown();
}

static void test_reject_change_size(void)
{
	setup();
	struct gpamm_userspace_memory_region r = {
		.slot = 1, .guest_phys_addr = 1ULL << 30, .memory_size = RAM / 2,
		.userspace_addr = (uintptr_t)ram,
	};
	expect_reject(r, -EINVAL);
	teardown();
}

static void test_reject_change_hva(void)
{
	setup();
	struct gpamm_userspace_memory_region r = {
		.slot = 1, .guest_phys_addr = 1ULL << 30, .memory_size = RAM,
		.userspace_addr = (uintptr_t)ram2,
	};
	expect_reject(r, -EINVAL);
	teardown();
}

static void test_reject_change_readonly(void)
{
	setup();
	struct gpamm_userspace_memory_region r = {
		.slot = 1, .flags = GPAMM_MEM_READONLY, .guest_phys_addr = 1ULL << 30,
		.memory_size = RAM, .userspace_addr = (uintptr_t)ram,
	};
	expect_reject(r, -EINVAL);
	teardown();
}

static void test_reject_beyond_gpa_space(void)
{
	setup();
	/* 16K/3-level: 47 GPA bits */
	expect_reject(good(2, (1ULL << 47) - RAM / 2), -EFAULT);
	expect_reject(good(2, 1ULL << 47), -EFAULT);
	/* the very last bytes are fine */
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &(struct gpamm_userspace_memory_region){
		.slot = 2, .guest_phys_addr = (1ULL << 47) - RAM, .memory_size = RAM,
		.userspace_addr = (uintptr_t)ram2 }), 0);
	teardown();
}

static void test_reject_null_args(void)
{
	setup();
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, NULL), -EINVAL);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(NULL, NULL), -EINVAL);
	teardown();
}

/* ---- legal changes, seen by a vCPU ------------------------------------- */

struct probe { uint64_t gpa; uint64_t val; };

static int probe_read(struct gpamm_vcpu *v, void *arg)
{
	struct probe *p = arg;
	p->val = gpamm_guest_read(v, p->gpa, 8);
	return 0;
}

static uint64_t guest_read(struct gpamm_vcpu *v, uint64_t gpa, unsigned *mmio)
{
	struct probe p = { .gpa = gpa };
	ASSERT_EQ_INT(gpamm_vcpu_set_guest(v, probe_read, &p, 0), 0);
	vt_run_to_done(v, 0xdead, mmio);
	return p.val;
}

static void test_create_move_delete_seen_by_vcpu(void)
{
	struct gpamm_vcpu *v;
	unsigned mmio = 0;

	setup();
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	memcpy(ram + 3 * PSZ, &(uint64_t){ 0x1122334455667788ULL }, 8);
	ASSERT_EQ(guest_read(v, (1ULL << 30) + 3 * PSZ, &mmio), 0x1122334455667788ULL);
	ASSERT_EQ(mmio, 0);

	/* MOVE: the old GPA is MMIO now, the new one reaches the same bytes */
	struct gpamm_userspace_memory_region r = {
		.slot = 1, .guest_phys_addr = 3ULL << 30, .memory_size = RAM,
		.userspace_addr = (uintptr_t)ram,
	};
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
	ASSERT_EQ(guest_read(v, (1ULL << 30) + 3 * PSZ, &mmio), 0xdead);
	ASSERT_EQ(mmio, 1);
	ASSERT_EQ(guest_read(v, (3ULL << 30) + 3 * PSZ, &mmio), 0x1122334455667788ULL);
	ASSERT_EQ(mmio, 1);

	/* nothing to change: accepted, no effect */
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);

	/* DELETE: MMIO, and the tables of the slot are gone */
	r.memory_size = 0;
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
	ASSERT_EQ(guest_read(v, (3ULL << 30) + 3 * PSZ, &mmio), 0xdead);
	ASSERT_EQ(mmio, 2);
	struct gpamm_vm_stats st;
	gpamm_vm_stats(vm, &st);
	ASSERT_EQ(st.table_pages, 1);
	ASSERT_EQ(st.slots, 0);
	ASSERT_EQ(st.pinned, 0);
	teardown();
}

static void test_flags_only_logging_write_protects(void)
{
	struct gpamm_vcpu *v;

	setup();
	ASSERT_EQ_INT(gpamm_vcpu_create(vm, 0, &v), 0);
	(void)guest_read(v, 1ULL << 30, NULL);
	struct gpamm_vm_stats st0, st1;
	gpamm_vm_stats(vm, &st0);
	struct gpamm_userspace_memory_region r = {
		.slot = 1, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = 1ULL << 30,
		.memory_size = RAM, .userspace_addr = (uintptr_t)ram,
	};
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
	gpamm_vm_stats(vm, &st1);
	/* the page mapped dirty (no logging then) was cleaned: a remote flush */
	ASSERT_EQ(st1.remote_flushes, st0.remote_flushes + 1);
	teardown();
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_reject_unknown_flags);
	TEST(test_reject_slot_id_out_of_range);
	TEST(test_reject_unaligned_gpa);
	TEST(test_reject_unaligned_size);
	TEST(test_reject_unaligned_hva);
	TEST(test_reject_gpa_overflow);
	TEST(test_reject_hva_overflow);
	TEST(test_reject_delete_missing);
	TEST(test_reject_overlap);
	TEST(test_reject_change_size);
	TEST(test_reject_change_hva);
	TEST(test_reject_change_readonly);
	TEST(test_reject_beyond_gpa_space);
	TEST(test_reject_null_args);
	TEST(test_create_move_delete_seen_by_vcpu);
	TEST(test_flags_only_logging_write_protects);
	return tap_done();
}
