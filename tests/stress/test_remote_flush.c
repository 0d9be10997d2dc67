// SPDX-License-Identifier: MIT
/*
 * DESIGN.md contract 1 with real threads: after a memslot DELETE (unmap,
 * remote TLB flush, tables freed) returns, no vCPU may still store through
 * a translation of the deleted slot. vCPU threads keep storing into the
 * slot's pages; the VMM thread deletes the slot, snapshots the host memory
 * that backed it, lets the vCPUs run on (they now get MMIO exits) and
 * checks that the memory did not change. Then the slot is created again
 * and the round repeats. Also: gpamm_vm_flush_remote_tlbs() returns with
 * vCPUs in guest mode, out of guest mode and stopped.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define PAGES 64
#define RAM (PAGES * PSZ)
#define GPA_BASE (1ULL << 32)
#define NVCPU 4

static atomic_int stop;

struct vcpu_ctx {
	struct gpamm_vcpu *v;
	pthread_t th;
	uint64_t seed;
	atomic_ulong stores, mmio;
};

static int writer(struct gpamm_vcpu *v, void *arg)
{
	struct vcpu_ctx *c = arg;
	uint64_t x = c->seed | 1, n = 0;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		tap_xorshift(&x);
		gpamm_guest_write(v, GPA_BASE + (x % PAGES) * PSZ + (x >> 40) % (PSZ / 8) * 8, 8, ++n);
		atomic_fetch_add_explicit(&c->stores, 1, memory_order_relaxed);
	}
	return 0;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_ctx *c = arg;
	struct gpamm_run *run = gpamm_vcpu_run_state(c->v);

	for (;;) {
		if (gpamm_vcpu_run(c->v))
			break;
		if (run->exit_reason == GPAMM_EXIT_MMIO) {
			atomic_fetch_add_explicit(&c->mmio, 1, memory_order_relaxed);
			continue;
		}
		if (run->exit_reason == GPAMM_EXIT_DONE)
			break;
		if (run->exit_reason != GPAMM_EXIT_REQUEST) {
			tap_fail_async(__FILE__, __LINE__, "unexpected exit");
			break;
		}
	}
	return NULL;
}

static void wait_stores(struct vcpu_ctx *c, unsigned n, uint64_t more)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t until = atomic_load(&c[i].stores) + atomic_load(&c[i].mmio) + more;
		while (atomic_load(&c[i].stores) + atomic_load(&c[i].mmio) < until)
			sched_yield();
	}
}

static void test_no_store_after_delete(void)
{
	struct gpamm_host *host;
	struct gpamm_vm *vm = vt_vm_direct(PS, 3, &host);
	uint8_t *ram = vt_alloc(RAM, PS), *snap = malloc(RAM);
	struct vcpu_ctx c[NVCPU];
	unsigned rounds = (unsigned)(100 * tap_scale());
	uint64_t seed = tap_seed();
	struct gpamm_userspace_memory_region r = {
		.slot = 0, .guest_phys_addr = GPA_BASE, .memory_size = RAM,
		.userspace_addr = (uintptr_t)ram,
	};

	ASSERT(ram && snap);
	atomic_store(&stop, 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
	memset(c, 0, sizeof(c));
	for (unsigned i = 0; i < NVCPU; i++) {
		ASSERT_EQ_INT(gpamm_vcpu_create(vm, i, &c[i].v), 0);
		c[i].seed = seed + i * 0x9e3779b97f4a7c15ULL;
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(c[i].v, writer, &c[i], 0), 0);
		ASSERT_EQ_INT(pthread_create(&c[i].th, NULL, vcpu_thread, &c[i]), 0);
	}
	for (unsigned round = 0; round < rounds; round++) {
		wait_stores(c, NVCPU, 500);           /* they store into the slot */
		r.memory_size = 0;
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
		memcpy(snap, ram, RAM);
		wait_stores(c, NVCPU, 50);            /* they keep going: MMIO now */
		if (memcmp(snap, ram, RAM)) {
			tap_diag("round %u: host memory changed after the delete returned", round);
			atomic_store(&stop, 1);
			ASSERT(0);
		}
		r.memory_size = RAM;
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &r), 0);
		/* a bare remote flush must also return with vCPUs running */
		gpamm_vm_flush_remote_tlbs(vm);
	}
	atomic_store(&stop, 1);
	for (unsigned i = 0; i < NVCPU; i++)
		pthread_join(c[i].th, NULL);
	uint64_t stores = 0, mmio = 0;
	for (unsigned i = 0; i < NVCPU; i++) {
		stores += c[i].stores;
		mmio += c[i].mmio;
	}
	tap_diag("%u rounds, %llu guest stores, %llu MMIO exits", rounds,
		 (unsigned long long)stores, (unsigned long long)mmio);
	ASSERT(mmio > 0);
	/* stopped vCPUs (out of guest mode): the flush must not wait for them */
	gpamm_vm_flush_remote_tlbs(vm);
	struct gpamm_vm_stats st;
	gpamm_vm_stats(vm, &st);
	ASSERT_EQ(st.pinned, 0);
	gpamm_vm_destroy(vm);
	gpamm_host_destroy(host);
	vt_free(ram, RAM);
	free(snap);
	struct gpamm_live l;
	gpamm_live_objects(&l);
	ASSERT_EQ(l.vms + l.vcpus + l.tpools + l.threads, 0);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_no_store_after_delete);
	return tap_done();
}
