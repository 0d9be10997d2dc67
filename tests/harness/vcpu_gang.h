/* SPDX-License-Identifier: MIT */
/*
 * A gang of vCPU threads under a controller, for stress tests that stop
 * their guests at known points (the dirty-log invariant, migration).
 *
 * Each vCPU of the gang runs on a thread of its own, in gpamm_vcpu_run(),
 * until its guest is done or the gang quits. The controller (the test's
 * thread) raises "pause"; a guest that sees vg_pausing() leaves with
 * vg_guest_park(), and its thread then parks outside gpamm_vcpu_run()
 * until the controller releases the gang: once per such exit, and nowhere
 * else, so every access a parked vCPU issued has completed (an exit in
 * the middle of an access, a kick or a full ring, is resumed). With a
 * dirty ring, a vCPU whose ring is full waits until the controller has
 * harvested and reset the rings (vg_ring_collect()). Any other exit goes
 * to the test's on_exit hook, if any, or fails the test; a failing vCPU
 * counts as parked, so that the controller never waits for it.
 *
 * While the vCPUs run the controller cannot ASSERT (it would leave them
 * running): it checks with VG_CHECK(), which counts failures in the
 * gang's errors (showing the first 12) for one ASSERT after vg_quit().
 *
 * Context: vg_guest_*() and vg_pausing()/vg_quitting() in the guest; the
 * rest on the controller's thread.
 */
#ifndef GPAMM_VCPU_GANG_H
#define GPAMM_VCPU_GANG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "gpamm/gpamm.h"
#include "tap.h"

#define VG_MAX_VCPUS 8

struct vcpu_gang;

/* One vCPU of the gang; a test's own per-vCPU state can embed it. */
struct vg_vcpu {
	struct gpamm_vcpu *v;
	struct vcpu_gang *gang;
	unsigned idx;                 /* order of vg_add() */
	pthread_t th;
	uint64_t pause_seq;           /* guest side: one more at each vg_guest_park() */
	atomic_int ring_full;         /* waiting for a reset */
	atomic_ulong ring_full_exits;
	bool parked;                  /* under the gang's lock */
	/* the controller's side of the dirty ring (ring gangs) */
	struct gpamm_dirty_gfn *ring;
	uint32_t ring_size;
	uint64_t fetch;
};

/* What an on_exit hook made of an exit the gang does not handle itself. */
enum vg_exit { VG_EXIT_RUN_ON, VG_EXIT_FAIL, VG_EXIT_UNKNOWN };

struct vcpu_gang {
	struct gpamm_vm *vm;
	bool ring;                    /* the VM has a dirty ring */
	/* an exit other than DONE, REQUEST and DIRTY_RING_FULL; NULL: all unknown */
	enum vg_exit (*on_exit)(struct vg_vcpu *c, struct gpamm_run *run);
	unsigned n;
	struct vg_vcpu *c[VG_MAX_VCPUS];
	atomic_int pause, quit, failed;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t park_gen, reset_gen; /* under lock */
	uint64_t ring_collected, ring_reset;
	int errors;                   /* failed VG_CHECK()s */
};

#define VCPU_GANG_INIT { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER }

#define VG_CHECK(g, cond, ...)                                                  \
	do {                                                                    \
		if (!(cond)) {                                                  \
			if ((g)->errors++ < 12)                                 \
				tap_diag(__VA_ARGS__);                          \
		}                                                               \
	} while (0)

/* A new run over @vm: no vCPUs yet, nothing paused, failed or counted. */
void vg_reset(struct vcpu_gang *g, struct gpamm_vm *vm, bool ring,
	      enum vg_exit (*on_exit)(struct vg_vcpu *c, struct gpamm_run *run));
/* Add @v as @c (its ring too, on a ring gang: c->ring is NULL if it has none). */
void vg_add(struct vcpu_gang *g, struct vg_vcpu *c, struct gpamm_vcpu *v);
/* Start a thread for each vCPU added. */
void vg_start(struct vcpu_gang *g);

/* ---- the guest ---- */
static inline bool vg_pausing(struct vcpu_gang *g)
{
	return atomic_load_explicit(&g->pause, memory_order_acquire);
}

static inline bool vg_quitting(struct vcpu_gang *g)
{
	return atomic_load_explicit(&g->quit, memory_order_relaxed);
}

/* Leave gpamm_vcpu_run() to park until the controller releases the gang. */
static inline void vg_guest_park(struct vg_vcpu *c)
{
	c->pause_seq++;
	gpamm_guest_exit(c->v);
}

/* ---- the controller ---- */
static inline bool vg_failed(struct vcpu_gang *g)
{
	return atomic_load(&g->failed);
}

bool vg_any_ring_full(struct vcpu_gang *g);
/* Lower "pause" and let every parked vCPU go on. */
void vg_release(struct vcpu_gang *g);
/*
 * Raise "pause" (and kick, which only hurries the vCPUs) and wait until
 * every vCPU is parked, calling @tick (if not NULL) with @arg and sleeping
 * @tick_us between looks. False when that took more than @max_ticks looks
 * or a vCPU failed.
 */
bool vg_stop(struct vcpu_gang *g, unsigned tick_us, unsigned max_ticks,
	     void (*tick)(void *arg), void *arg);
/* Make the guests leave, release the gang and join its threads. */
void vg_quit(struct vcpu_gang *g);
/*
 * Harvest every vCPU's ring: each entry sets its page's bit in @bm (a
 * bitmap of @slot, @npages pages) and is marked RESET; then the rings are
 * reset and the vCPUs waiting on a full ring go on. Checked: each entry
 * names @slot and a page inside it, and the reset frees exactly the
 * entries harvested. Returns how many there were.
 */
uint64_t vg_ring_collect(struct vcpu_gang *g, uint32_t slot, uint64_t npages, uint64_t *bm);

#endif
