/* SPDX-License-Identifier: MIT */
/*
 * mmu_lock: a reader-writer lock built for faults. Readers are the vCPUs'
 * faults, each with a reader slot of its own (a cache line), so that two
 * vCPUs taking the read lock never write the same line: a read lock is a
 * store and a full fence on the vCPU's own slot, then a look at the writer
 * flag. A writer (the notifier, dirty-log and aging calls, memslot
 * flushes, anything that rewrites or frees ranges) raises the writer flag
 * with a compare-and-exchange (which also keeps other writers out: they
 * spin, then yield), then waits until every reader slot is clear.
 *
 * The store-fence-load on each side is Dekker's handshake: of a reader
 * that set its slot and a writer that set its flag, at least one sees the
 * other (sequentially consistent accesses on both), so they never both
 * proceed. A reader that sees the flag clears its slot and waits for the
 * writer to finish, so writers are not starved by a stream of faults.
 *
 * Threads without a reader slot (the VMM's) take the write lock. The
 * "serialised" mode of a VM (GPAMM_VM_SERIAL_FAULTS) makes every read lock
 * a write lock: the same code, one fault at a time, to be measured side by
 * side with the parallel mode.
 */
#ifndef GPAMM_MMULOCK_H
#define GPAMM_MMULOCK_H

#include <stdatomic.h>
#include <stdbool.h>

#include "util.h"

struct mmu_reader {
	_Atomic unsigned active;
} __attribute__((aligned(64)));

/* The writer flag, polled by every fault, has a cache line of its own. */
struct mmu_rwlock {
	_Atomic unsigned writer __attribute__((aligned(64))); /* 1: a writer holds the lock or waits for readers */
	bool serial;                    /* every read lock is a write lock */
	_Atomic unsigned nr_readers;    /* slots handed out */
	unsigned max_readers;
	struct mmu_reader *readers;     /* max_readers slots */
} __attribute__((aligned(64)));

/* Return: 0, -ENOMEM. */
int mmu_rwlock_init(struct mmu_rwlock *l, unsigned max_readers, bool serial);
void mmu_rwlock_destroy(struct mmu_rwlock *l);
/* A reader slot for a new vCPU. Return: its index, or -ENOSPC. Context: creation, serialised. */
int mmu_rwlock_add_reader(struct mmu_rwlock *l);

void mmu_write_lock(struct mmu_rwlock *l);
void mmu_write_unlock(struct mmu_rwlock *l);
/* The slow side of mmu_read_lock(): a writer is there. */
void mmu_read_lock_wait(struct mmu_rwlock *l, struct mmu_reader *r);

static ALWAYS_INLINE void mmu_read_lock(struct mmu_rwlock *l, unsigned slot)
{
	struct mmu_reader *r = &l->readers[slot];

	if (unlikely(l->serial)) {
		mmu_write_lock(l);
		return;
	}
	atomic_store_explicit(&r->active, 1, memory_order_seq_cst);
	if (unlikely(atomic_load_explicit(&l->writer, memory_order_seq_cst)))
		mmu_read_lock_wait(l, r);
}

static ALWAYS_INLINE void mmu_read_unlock(struct mmu_rwlock *l, unsigned slot)
{
	if (unlikely(l->serial)) {
		mmu_write_unlock(l);
		return;
	}
	/* release: the reader's table writes happen before a writer's reads */
	atomic_store_explicit(&l->readers[slot].active, 0, memory_order_release);
}

#endif
