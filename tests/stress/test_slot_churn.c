// SPDX-License-Identifier: MIT
/*
 * Memslot DELETE and MOVE while vCPUs run, on the sim host in checking
 * mode: every guest access verifies that the frame it reaches is live and
 * still mapped at the HVA its slot gives, so a translation that outlived
 * its slot (and the host memory that was unmapped after the delete) is
 * reported. vCPU threads run random reads and writes over the GPA ranges
 * where the slots come and go (MMIO exits where there is no slot); the VMM
 * thread moves slot 0 back and forth and deletes slot 1, unmaps its memory,
 * maps fresh memory and creates the slot again. Zero stale accesses, zero
 * pins and frames, and all accounting back to zero after destroy.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "harness/tap.h"
#include "harness/vmtest.h"

#define PS 12
#define PSZ (1ULL << PS)
#define PAGES 128
#define LEN (PAGES * PSZ)
#define NVCPU 3
/* GPA windows: slot 0 moves between A0 and A1; slot 1 lives at B */
#define A0 (1ULL << 30)
#define A1 (2ULL << 30)
#define B (3ULL << 30)

static atomic_int stop;

struct vctx {
	struct gpamm_vcpu *v;
	pthread_t th;
	uint64_t seed;
	atomic_ulong accesses, mmio;
};

static int guest(struct gpamm_vcpu *v, void *arg)
{
	struct vctx *c = arg;
	uint64_t x = c->seed | 1;
	static const uint64_t bases[3] = { A0, A1, B };

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		tap_xorshift(&x);
		uint64_t gpa = bases[x % 3] + ((x >> 8) % PAGES) * PSZ + ((x >> 32) % 512) * 8;
		if (x & (1ULL << 63))
			gpamm_guest_write(v, gpa, 8, x);
		else
			(void)gpamm_guest_read(v, gpa, 8);
		atomic_fetch_add_explicit(&c->accesses, 1, memory_order_relaxed);
	}
	return 0;
}

static void *vthread(void *arg)
{
	struct vctx *c = arg;
	struct gpamm_run *run = gpamm_vcpu_run_state(c->v);

	while (!gpamm_vcpu_run(c->v)) {
		if (run->exit_reason == GPAMM_EXIT_DONE)
			break;
		if (run->exit_reason == GPAMM_EXIT_MMIO)
			atomic_fetch_add_explicit(&c->mmio, 1, memory_order_relaxed);
		else
			tap_fail_async(__FILE__, __LINE__, "unexpected exit");
	}
	return NULL;
}

static void test_delete_move_while_running(void)
{
	struct vt_host vh;
	struct gpamm_vm *vm;
	struct gpamm_vm_config cfg = { .page_shift = PS, .levels = 3 };
	struct vctx c[NVCPU];
	uint64_t seed = tap_seed(), ha, hb;
	unsigned rounds = (unsigned)(300 * tap_scale());

	vt_host_create(&vh, VT_SIM, PS, 4 * PAGES);
	cfg.host = vh.h;
	ASSERT_EQ_INT(gpamm_vm_create(&cfg, &vm), 0);
	ha = vt_host_map(&vh, LEN, 0);
	hb = vt_host_map(&vh, LEN, 0);
	struct gpamm_userspace_memory_region ra = { .slot = 0, .guest_phys_addr = A0,
		.memory_size = LEN, .userspace_addr = ha };
	struct gpamm_userspace_memory_region rb = { .slot = 1, .guest_phys_addr = B,
		.memory_size = LEN, .userspace_addr = hb };
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &ra), 0);
	ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &rb), 0);

	atomic_store(&stop, 0);
	memset(c, 0, sizeof(c));
	for (unsigned i = 0; i < NVCPU; i++) {
		ASSERT_EQ_INT(gpamm_vcpu_create(vm, i, &c[i].v), 0);
		c[i].seed = seed * (i + 1) + i;
		ASSERT_EQ_INT(gpamm_vcpu_set_guest(c[i].v, guest, &c[i], 0), 0);
		ASSERT_EQ_INT(pthread_create(&c[i].th, NULL, vthread, &c[i]), 0);
	}
	for (unsigned r = 0; r < rounds; r++) {
		uint64_t until = atomic_load(&c[r % NVCPU].accesses) + 200;
		while (atomic_load(&c[r % NVCPU].accesses) < until)
			sched_yield();
		/* MOVE slot 0 */
		ra.guest_phys_addr = ra.guest_phys_addr == A0 ? A1 : A0;
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &ra), 0);
		/* DELETE slot 1, give its memory back to the host, start afresh */
		rb.memory_size = 0;
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &rb), 0);
		vt_host_unmap(&vh, hb, LEN);
		hb = vt_host_map(&vh, LEN, 0);
		rb.memory_size = LEN;
		rb.userspace_addr = hb;
		ASSERT_EQ_INT(gpamm_vm_set_memory_region(vm, &rb), 0);
	}
	atomic_store(&stop, 1);
	for (unsigned i = 0; i < NVCPU; i++)
		pthread_join(c[i].th, NULL);

	struct gpamm_vm_stats st;
	gpamm_vm_stats(vm, &st);
	uint64_t acc = 0, mmio = 0;
	for (unsigned i = 0; i < NVCPU; i++) {
		acc += c[i].accesses;
		mmio += c[i].mmio;
	}
	tap_diag("%u rounds: %llu accesses, %llu MMIO exits, %llu faults, %llu stale",
		 rounds, (unsigned long long)acc, (unsigned long long)mmio,
		 (unsigned long long)st.faults, (unsigned long long)st.stale_accesses);
	ASSERT_EQ(st.stale_accesses, 0);
	ASSERT_EQ(st.pinned, 0);
	ASSERT(mmio > 0);
	gpamm_vm_destroy(vm);
	vt_host_unmap(&vh, ha, LEN);
	vt_host_unmap(&vh, hb, LEN);
	struct gpamm_host_stats hs;
	gpamm_host_stats(vh.h, &hs);
	ASSERT_EQ(hs.frames_live, 0);
	ASSERT_EQ(hs.pinned, 0);
	vt_host_destroy(&vh);
	struct gpamm_live l;
	gpamm_live_objects(&l);
	ASSERT_EQ(l.vms + l.vcpus + l.tpools + l.threads, 0);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_delete_move_while_running);
	return tap_done();
}
