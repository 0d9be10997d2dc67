// SPDX-License-Identifier: MIT
/* The migration workload and its replay (guest.h). */
#include <string.h>
#include <time.h>

#include "mig/guest.h"

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void mig_guest_init_regs(struct gpamm_regs *r, const struct mig_guest_cfg *c)
{
	uint64_t hot = c->npages * c->hot_pct / 100;

	memset(r, 0, sizeof(*r));
	r->gpr[MG_R_RNG] = (c->seed * 0x9e3779b97f4a7c15ULL + c->id + 1) | 1;
	r->gpr[MG_R_ID] = c->id;
	r->gpr[MG_R_NVCPUS] = c->nvcpus;
	r->gpr[MG_R_NPAGES] = c->npages;
	r->gpr[MG_R_HOT] = hot ? hot : 1;
	r->gpr[MG_R_HOTPCT] = c->hot_writes;
	r->gpr[MG_R_PSHIFT] = c->page_shift;
	r->gpr[MG_R_GPA] = c->gpa;
	r->gpr[MG_R_RATE] = c->rate;
}

const char *mig_guest_check_regs(const struct gpamm_regs *r, unsigned id, unsigned nvcpus,
				 unsigned page_shift, uint64_t npages, uint64_t gpa)
{
	if (r->gpr[MG_R_ID] != id)
		return "its id register is another vCPU's";
	if (r->gpr[MG_R_NVCPUS] != nvcpus || !nvcpus || (1ULL << page_shift) / 8 < nvcpus)
		return "its vCPU count does not match the configuration";
	if (r->gpr[MG_R_PSHIFT] != page_shift || r->gpr[MG_R_NPAGES] != npages ||
	    r->gpr[MG_R_GPA] != gpa)
		return "its memory registers do not match the configuration";
	if (!r->gpr[MG_R_HOT] || r->gpr[MG_R_HOT] > npages || r->gpr[MG_R_HOTPCT] > 100)
		return "its hot set is out of range";
	if (!r->gpr[MG_R_RNG])
		return "its generator state is zero";
	return NULL;
}

struct mig_write mig_guest_step(const struct gpamm_regs *r, uint64_t *rng, uint64_t step)
{
	const uint64_t nv = r->gpr[MG_R_NVCPUS], id = r->gpr[MG_R_ID];
	const uint64_t words = (1ULL << r->gpr[MG_R_PSHIFT]) / 8;
	uint64_t x = mig_xorshift(rng);
	uint64_t page = (x % 100) < r->gpr[MG_R_HOTPCT] ? (x >> 8) % r->gpr[MG_R_HOT]
							 : (x >> 8) % r->gpr[MG_R_NPAGES];
	uint64_t word = ((x >> 40) % (words / nv)) * nv + id;

	return (struct mig_write){
		.gpa = r->gpr[MG_R_GPA] + (page << r->gpr[MG_R_PSHIFT]) + word * 8,
		.val = (id << 56) | (step + 1),
	};
}

/*
 * Stop points every 256 steps: a pause asked by the VMM, or the rate
 * (the program is ahead of rate x elapsed time: it exits and its thread
 * sleeps). Throttling is the VMM's (it kicks the vCPU and sleeps).
 */
int mig_guest_fn(struct gpamm_vcpu *v, void *arg)
{
	struct mig_guest_ctl *ctl = arg;
	struct gpamm_regs *r = gpamm_vcpu_regs(v);

	if (!r->pc) { /* a fresh start: the rate's origin */
		r->gpr[MG_R_T0] = mono_ns();
		r->pc = 1;
	}
	for (;;) {
		uint64_t step = r->gpr[MG_R_STEP], rng = r->gpr[MG_R_RNG];
		struct mig_write w;

		if (r->gpr[MG_R_DONE] && step >= r->gpr[MG_R_DONE])
			return 0;
		w = mig_guest_step(r, &rng, step);
		gpamm_guest_write(v, w.gpa, 8, w.val);
		/* done: the block moves past this write */
		r->gpr[MG_R_RNG] = rng;
		r->gpr[MG_R_STEP] = ++step;
		if (!(step & 255)) {
			atomic_fetch_add_explicit(&ctl->writes, 256, memory_order_relaxed);
			if (atomic_load_explicit(&ctl->pause, memory_order_relaxed)) {
				gpamm_guest_exit(v);
			} else if (r->gpr[MG_R_RATE]) {
				/* ahead of the rate: exit (the thread sleeps) until it is not */
				while (!atomic_load_explicit(&ctl->pause, memory_order_relaxed) &&
				       (double)step > (double)(mono_ns() - r->gpr[MG_R_T0]) * 1e-9 *
							      (double)r->gpr[MG_R_RATE])
					gpamm_guest_exit(v);
				if (atomic_load_explicit(&ctl->pause, memory_order_relaxed))
					gpamm_guest_exit(v);
			}
		}
	}
}

int64_t mig_guest_replay(const struct gpamm_regs *from, const struct gpamm_regs *to,
			 mig_put_fn put, void *arg)
{
	uint64_t rng = from->gpr[MG_R_RNG];
	int64_t n = 0;

	for (int i = MG_R_ID; i <= MG_R_GPA; i++)
		if (from->gpr[i] != to->gpr[i])
			return -1;
	if (to->gpr[MG_R_STEP] < from->gpr[MG_R_STEP])
		return -1;
	for (uint64_t s = from->gpr[MG_R_STEP]; s < to->gpr[MG_R_STEP]; s++, n++) {
		struct mig_write w = mig_guest_step(from, &rng, s);
		int r = put(arg, w.gpa, w.val);

		if (r)
			return r;
	}
	return rng == to->gpr[MG_R_RNG] ? n : -1;
}
