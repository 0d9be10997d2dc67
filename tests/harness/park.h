/* SPDX-License-Identifier: MIT */
/*
 * Forcing interleavings: a parking lot where threads of the code under test
 * stop at chosen places until the test lets them go.
 *
 * The places are the fault path's pause points (gpamm/inject.h; install
 * park_pause_hook with the lot as its argument) and the host calls of a
 * parking host (park_host_create), which wraps another host, forwards every
 * call to it, and can stop a thread right after an inner get_page() pinned
 * a page (the thread is "inside the host's get_page") or before an inner
 * put_page(). The parking host also keeps the MMU notifier registered on
 * it, so a test can hold an invalidation open (start without end) while
 * faults run: something the sim host, which does start, change and end
 * with the range excluded from faults (its mm, VMA and page-table locks),
 * never lets a fault see.
 *
 * A trap is armed for one place and one key (the page-aligned HVA of a host
 * call, the GPA of a pause point, or PARK_ANY) and catches the (skip + 1)th
 * matching call. park_wait() returns once a thread is parked there, or
 * false when park_abort() was called (e.g. by a vCPU thread whose guest
 * ended without reaching the trap) or after 10 s (a hang guard, never a
 * way of ordering events). Every test ordering is forced by these waits.
 */
#ifndef GPAMM_PARK_H
#define GPAMM_PARK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "gpamm/gpamm.h"
#include "gpamm/inject.h"

enum {
	PARK_AT_GET = GPAMM_PAUSE_NR, /* after the inner get_page() pinned the page */
	PARK_AT_PUT,                  /* before the inner put_page() */
	PARK_NR
	/* 0 .. GPAMM_PAUSE_NR - 1: the pause points */
};
#define PARK_ANY (~0ULL)

struct park_lot;

struct park_lot *park_lot_create(void);
void park_lot_destroy(struct park_lot *l);
void park_arm(struct park_lot *l, unsigned where, uint64_t key, unsigned skip);
bool park_wait(struct park_lot *l, unsigned where);
/* The parked thread goes on; the trap is disarmed. */
void park_release(struct park_lot *l, unsigned where);
/* Every later and present park_wait() returns false; parked threads go on. */
void park_abort(struct park_lot *l);
/* How many calls passed @where (matching or not, parked or not). */
unsigned park_hits(struct park_lot *l, unsigned where);
/* Whether the thread parked at @where was the given vCPU (-1: none parked). */
int park_who(struct park_lot *l, unsigned where);

/* A gpamm_pause_fn; pass the lot as the hook's argument. */
void park_pause_hook(void *lot, enum gpamm_pause_point pp, struct gpamm_vcpu *vcpu, uint64_t gpa);

/*
 * A vCPU run (vt_run_once(), MMIO reads answered with @mmio_fill) on a
 * thread of its own, which aborts @lot (if any) when the run returns, so
 * that a park_wait() for a trap its guest never reached returns false.
 * The exit reason is in @reason after park_thread_join().
 */
struct park_thread {
	pthread_t tid;
	struct gpamm_vcpu *v;
	struct park_lot *lot;
	uint8_t mmio_fill;
	uint32_t reason;
};
/* Return: 0, or pthread_create()'s error. */
int park_thread_start(struct park_thread *t, struct gpamm_vcpu *v, struct park_lot *lot,
		      uint8_t mmio_fill);
void park_thread_join(struct park_thread *t);

/* A host wrapped around @inner (same page shift, checking and frames). */
struct gpamm_host *park_host_create(struct gpamm_host *inner, struct park_lot *l);
/* Call the registered MMU's notifier directly (HVA byte range [start, end)). */
void park_host_invalidate_start(struct gpamm_host *h, uint64_t start, uint64_t end);
void park_host_invalidate_end(struct gpamm_host *h, uint64_t start, uint64_t end);
bool park_host_clear_young(struct gpamm_host *h, uint64_t start, uint64_t end, bool flush);
/* While on, check_access() reports every access stale (-ESTALE), as a
 * checking host (an inner host created with checking on) does
 * for a translation that outlived its page. */
void park_host_force_stale(struct gpamm_host *h, bool on);
/* Accesses reported stale by the forcing above. */
uint64_t park_host_forced_stale(struct gpamm_host *h);

#endif
