/* SPDX-License-Identifier: MIT */
/*
 * RCU for every room: liburcu's bulletproof flavour (urcu-bp), behind
 * wrappers that tell ThreadSanitizer about the ordering a grace period
 * gives. liburcu is an uninstrumented system library, so TSan sees
 * neither the reader registry a grace period scans nor the queue that
 * carries call_rcu callbacks; without the annotations every free after a
 * grace period would be reported as a race with the readers it waited for.
 *
 * The edges, all on one sync object:
 *  - a read-side section's end releases; a synchronize returning and a
 *    callback starting acquire: every access made in a section that the
 *    grace period waited for happens before what follows the grace period;
 *  - call_rcu releases before it queues: what the caller wrote before
 *    handing an object over happens before the callback;
 *  - a callback's end releases and a barrier's return acquires.
 * Readers never acquire here: publication goes through C11 atomics
 * (release store of a pointer, acquire or dependent load), which TSan sees.
 *
 * In builds without TSan the annotations are empty and these are
 * liburcu's calls, inlined where the build asks for it (_LGPL_SOURCE).
 */
#ifndef GPAMM_RCU_H
#define GPAMM_RCU_H

#include <urcu/urcu-bp.h>

#include "util.h"

#ifdef GPAMM_TSAN
#include <sanitizer/tsan_interface.h>
extern char gpamm_rcu_tsan_sync;
#define RCU_TSAN_RELEASE() __tsan_release(&gpamm_rcu_tsan_sync)
#define RCU_TSAN_ACQUIRE() __tsan_acquire(&gpamm_rcu_tsan_sync)
#else
#define RCU_TSAN_RELEASE() ((void)0)
#define RCU_TSAN_ACQUIRE() ((void)0)
#endif

static ALWAYS_INLINE void gpamm_rcu_read_lock(void)
{
	urcu_bp_read_lock();
}

static ALWAYS_INLINE void gpamm_rcu_read_unlock(void)
{
	RCU_TSAN_RELEASE();
	urcu_bp_read_unlock();
}

/* Context: not in a read-side section. */
static inline void gpamm_rcu_synchronize(void)
{
	urcu_bp_synchronize_rcu();
	RCU_TSAN_ACQUIRE();
}

/* @fn must begin with gpamm_rcu_callback_begin() and end with _end(). */
static inline void gpamm_rcu_call(struct rcu_head *head, void (*fn)(struct rcu_head *))
{
	RCU_TSAN_RELEASE();
	urcu_bp_call_rcu(head, fn);
}

static inline void gpamm_rcu_callback_begin(void)
{
	RCU_TSAN_ACQUIRE();
}

static inline void gpamm_rcu_callback_end(void)
{
	RCU_TSAN_RELEASE();
}

/* Every callback queued before the call has run. Context: not in a section. */
static inline void gpamm_rcu_barrier(void)
{
	urcu_bp_barrier();
	RCU_TSAN_ACQUIRE();
}

#endif
