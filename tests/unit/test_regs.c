// SPDX-License-Identifier: MIT
/*
 * The vCPU register block: get/set between runs, the guest's own view,
 * -EBUSY while a run is in progress (forced: the guest parks itself until
 * the test has made its calls), -EINVAL on NULL, and a guest program that
 * keeps its state there continuing on another vCPU of another VM.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "gpamm/gpamm.h"
#include "harness/tap.h"

#define PS 12
#define GPA0 0x100000ULL
#define NPAGES 16

struct rig {
	struct gpamm_host *host;
	struct gpamm_vm *vm;
	struct gpamm_vcpu *v;
	void *mem;
};

static void rig_up(struct rig *r)
{
	struct gpamm_vm_config c = { .page_shift = PS, .levels = 3, .max_vcpus = 2 };
	r->host = gpamm_host_direct_create(PS);
	ASSERT(r->host);
	c.host = r->host;
	ASSERT_EQ(gpamm_vm_create(&c, &r->vm), 0);
	r->mem = aligned_alloc(1 << PS, NPAGES << PS);
	ASSERT(r->mem);
	memset(r->mem, 0, NPAGES << PS);
	struct gpamm_userspace_memory_region reg = {
		.slot = 0, .guest_phys_addr = GPA0, .memory_size = NPAGES << PS,
		.userspace_addr = (uint64_t)(uintptr_t)r->mem,
	};
	ASSERT_EQ(gpamm_vm_set_memory_region(r->vm, &reg), 0);
	ASSERT_EQ(gpamm_vcpu_create(r->vm, 0, &r->v), 0);
}

static void rig_down(struct rig *r)
{
	ASSERT_EQ(gpamm_vm_destroy(r->vm), 0);
	gpamm_host_destroy(r->host);
	free(r->mem);
}

/* r0: counter, r1: next GPA offset, pc: 1 after the first step. Exits every 4 writes. */
static int counting_guest(struct gpamm_vcpu *v, void *arg)
{
	struct gpamm_regs *r = gpamm_vcpu_regs(v);
	uint64_t until = *(uint64_t *)arg;

	while (r->gpr[0] < until) {
		gpamm_guest_write(v, GPA0 + r->gpr[1], 8, r->gpr[0] + 1000);
		r->gpr[0]++;
		r->gpr[1] = (r->gpr[1] + 8) % (NPAGES << PS);
		r->pc = 1;
		if (!(r->gpr[0] % 4))
			gpamm_guest_exit(v); /* a stop point: the block is complete */
	}
	return 0;
}

static void test_get_set_roundtrip(void)
{
	struct rig r;
	struct gpamm_regs a, b;

	rig_up(&r);
	ASSERT_EQ(gpamm_vcpu_get_regs(r.v, &a), 0);
	for (int i = 0; i < 32; i++)
		ASSERT_EQ(a.gpr[i], 0); /* a new vCPU starts zeroed */
	for (int i = 0; i < 32; i++)
		a.gpr[i] = 0x1111ULL * (i + 1);
	a.pc = 0xdead;
	ASSERT_EQ(gpamm_vcpu_set_regs(r.v, &a), 0);
	ASSERT_EQ(gpamm_vcpu_get_regs(r.v, &b), 0);
	ASSERT(!memcmp(&a, &b, sizeof(a)));
	ASSERT_EQ(gpamm_vcpu_get_regs(NULL, &b), -EINVAL);
	ASSERT_EQ(gpamm_vcpu_get_regs(r.v, NULL), -EINVAL);
	ASSERT_EQ(gpamm_vcpu_set_regs(NULL, &a), -EINVAL);
	ASSERT_EQ(gpamm_vcpu_set_regs(r.v, NULL), -EINVAL);
	ASSERT(gpamm_vcpu_regs(NULL) == NULL);
	rig_down(&r);
}

struct parked {
	atomic_int in_guest, release;
};

static int parking_guest(struct gpamm_vcpu *v, void *arg)
{
	struct parked *p = arg;

	gpamm_vcpu_regs(v)->gpr[5] = 55;
	atomic_store(&p->in_guest, 1);
	while (!atomic_load(&p->release))
		gpamm_guest_read(v, GPA0, 8); /* keeps reaching access boundaries */
	return 0;
}

struct runner {
	struct gpamm_vcpu *v;
	int ret;
};

static void *run_thread(void *arg)
{
	struct runner *rn = arg;
	rn->ret = gpamm_vcpu_run(rn->v);
	return NULL;
}

static void test_busy_while_running(void)
{
	struct rig r;
	struct parked p = { 0 };
	struct runner rn;
	struct gpamm_regs x;
	pthread_t th;

	memset(&x, 0, sizeof(x));
	rig_up(&r);
	ASSERT_EQ(gpamm_vcpu_set_guest(r.v, parking_guest, &p, 0), 0);
	rn.v = r.v;
	ASSERT_EQ(pthread_create(&th, NULL, run_thread, &rn), 0);
	while (!atomic_load(&p.in_guest))
		sched_yield();
	/* the run is in progress, the guest parked inside it */
	ASSERT_EQ(gpamm_vcpu_get_regs(r.v, &x), -EBUSY);
	x.gpr[5] = 99;
	ASSERT_EQ(gpamm_vcpu_set_regs(r.v, &x), -EBUSY);
	atomic_store(&p.release, 1);
	pthread_join(th, NULL);
	ASSERT_EQ(rn.ret, 0);
	ASSERT_EQ(gpamm_vcpu_get_regs(r.v, &x), 0);
	ASSERT_EQ(x.gpr[5], 55); /* the refused set changed nothing */
	rig_down(&r);
}

/* A program stopped at an exit continues on another VM's vCPU from its block. */
static void test_state_moves_between_vms(void)
{
	struct rig a, b;
	struct gpamm_regs st;
	uint64_t until = 10;
	struct gpamm_run *run;

	rig_up(&a);
	rig_up(&b);
	ASSERT_EQ(gpamm_vcpu_set_guest(a.v, counting_guest, &until, 0), 0);
	run = gpamm_vcpu_run_state(a.v);
	ASSERT_EQ(gpamm_vcpu_run(a.v), 0);
	ASSERT_EQ(run->exit_reason, GPAMM_EXIT_REQUEST);
	ASSERT_EQ(gpamm_vcpu_get_regs(a.v, &st), 0);
	ASSERT_EQ(st.gpr[0], 4);
	/* memory and registers move; the program restarts from the block */
	memcpy(b.mem, a.mem, NPAGES << PS);
	ASSERT_EQ(gpamm_vcpu_set_regs(b.v, &st), 0);
	ASSERT_EQ(gpamm_vcpu_set_guest(b.v, counting_guest, &until, 0), 0);
	run = gpamm_vcpu_run_state(b.v);
	do
		ASSERT_EQ(gpamm_vcpu_run(b.v), 0);
	while (run->exit_reason == GPAMM_EXIT_REQUEST);
	ASSERT_EQ(run->exit_reason, GPAMM_EXIT_DONE);
	ASSERT_EQ(gpamm_vcpu_get_regs(b.v, &st), 0);
	ASSERT_EQ(st.gpr[0], 10);
	for (uint64_t i = 0; i < 10; i++)
		ASSERT_EQ(((uint64_t *)b.mem)[i], 1000 + i);
	ASSERT_EQ(((uint64_t *)a.mem)[4], 0); /* the source stopped after 4 */
	rig_down(&a);
	rig_down(&b);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_get_set_roundtrip);
	TEST(test_busy_while_running);
	TEST(test_state_moves_between_vms);
	return tap_done();
}
