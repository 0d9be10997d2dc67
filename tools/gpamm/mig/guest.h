/* SPDX-License-Identifier: MIT */
/*
 * The migration workload: a guest program whose whole state is its vCPU's
 * register block (struct gpamm_regs), so that it can stop at an exit on
 * the source and go on from the same registers on the destination.
 *
 * Each step draws from a xorshift generator and writes one word, keyed by
 * the vCPU: vCPU i of n writes only the words whose index in their page is
 * i mod n, with the value (i << 56) | step. Most steps go to a hot set of
 * pages. The registers are updated after each write completes, so an exit
 * inside an access (a kick, a full ring, a memory fault) leaves the block
 * at "before this write": the write is made once, on whichever side runs
 * the vCPU next. The writes from one block to a later one are a pure
 * function of the two: mig_guest_replay() makes them again.
 */
#ifndef GPAMM_MIG_GUEST_H
#define GPAMM_MIG_GUEST_H

#include <stdatomic.h>
#include <stdint.h>

#include "gpamm/gpamm.h"

/* The workload's generator (xorshift64*): also the source's host-event picks. */
static inline uint64_t mig_xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* Register assignment (the program's ABI). */
enum {
	MG_R_STEP = 0,   /* writes done */
	MG_R_RNG = 1,    /* generator state (never 0) */
	MG_R_ID = 2,     /* this vCPU's index */
	MG_R_NVCPUS = 3,
	MG_R_NPAGES = 4,
	MG_R_HOT = 5,    /* pages in the hot set (>= 1) */
	MG_R_HOTPCT = 6, /* percent of writes to the hot set */
	MG_R_PSHIFT = 7,
	MG_R_GPA = 8,    /* guest-physical base of the memory written */
	MG_R_RATE = 9,   /* writes per second, 0: unthrottled */
	MG_R_T0 = 10,    /* CLOCK_MONOTONIC ns of the rate's origin */
	MG_R_DONE = 11,  /* steps at which the program returns (0: never) */
};

struct mig_guest_cfg {
	unsigned id, nvcpus, page_shift, hot_pct, hot_writes;
	uint64_t npages, gpa, rate, seed;
};

/* The block a fresh vCPU starts from. */
void mig_guest_init_regs(struct gpamm_regs *r, const struct mig_guest_cfg *c);
/*
 * Whether block @r is one this program can run as vCPU @id of @nvcpus over
 * @npages pages of 2^@page_shift bytes at @gpa (a block from the wire is
 * input: a zero divisor or a page outside memory must never reach the
 * program). Return: NULL, or what is wrong.
 */
const char *mig_guest_check_regs(const struct gpamm_regs *r, unsigned id, unsigned nvcpus,
				 unsigned page_shift, uint64_t npages, uint64_t gpa);

/*
 * What the program shares with its VMM thread (not state: flags to stop).
 * @pause: exit at the next stop point; @writes: steps done, for rates.
 */
struct mig_guest_ctl {
	atomic_int pause;
	atomic_uint_fast64_t writes;
};

/* The guest program (gpamm_guest_fn); @arg is a struct mig_guest_ctl. */
int mig_guest_fn(struct gpamm_vcpu *v, void *arg);

/* The write of step @step from generator state *@rng (advanced). */
struct mig_write {
	uint64_t gpa, val;
};
struct mig_write mig_guest_step(const struct gpamm_regs *r, uint64_t *rng, uint64_t step);

/*
 * Replay the writes a vCPU made from block @from to block @to (same vCPU,
 * to's step >= from's): @put(arg, gpa, value) for each, in order.
 * Return: writes replayed; -1 when the blocks do not belong together (other
 * program constants, or the generator does not arrive at @to's state);
 * @put's non-zero return.
 */
typedef int (*mig_put_fn)(void *arg, uint64_t gpa, uint64_t val);
int64_t mig_guest_replay(const struct gpamm_regs *from, const struct gpamm_regs *to,
			 mig_put_fn put, void *arg);

#endif
