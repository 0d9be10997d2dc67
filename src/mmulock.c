// SPDX-License-Identifier: MIT
/*
 * mmu_lock's slow sides (mmulock.h): writers, and readers that met one.
 * Waits spin a little, then yield: a wait is as long as a fault (readers)
 * or a range operation (writers), and on a machine with fewer CPUs than
 * threads the one waited for may need this CPU to finish.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "mmulock.h"

#define SPINS_BEFORE_YIELD 64

static inline void wait_step(unsigned *spins)
{
	if (++*spins < SPINS_BEFORE_YIELD)
		cpu_relax();
	else
		sched_yield();
}

int mmu_rwlock_init(struct mmu_rwlock *l, unsigned max_readers, bool serial)
{
	l->readers = aligned_alloc(64, (size_t)(max_readers ? max_readers : 1) *
					   sizeof(struct mmu_reader));
	if (!l->readers)
		return -ENOMEM;
	for (unsigned i = 0; i < max_readers; i++)
		atomic_init(&l->readers[i].active, 0);
	atomic_init(&l->writer, 0);
	atomic_init(&l->nr_readers, 0);
	l->max_readers = max_readers;
	l->serial = serial;
	return 0;
}

void mmu_rwlock_destroy(struct mmu_rwlock *l)
{
	free(l->readers);
	l->readers = NULL;
}

int mmu_rwlock_add_reader(struct mmu_rwlock *l)
{
	unsigned n = atomic_load(&l->nr_readers);

	if (n >= l->max_readers)
		return -ENOSPC;
	/* seq_cst: a writer that raises its flag after this sees the slot */
	atomic_store(&l->nr_readers, n + 1);
	return (int)n;
}

void mmu_write_lock(struct mmu_rwlock *l)
{
	unsigned n, wspins = 0, zero = 0;

	/*
	 * One compare-and-exchange both excludes other writers and raises the
	 * flag readers look at: uncontended, a write lock costs about what a
	 * read lock does, so the serialised mode measures the serialisation
	 * and not a dearer lock.
	 */
	while (!atomic_compare_exchange_weak_explicit(&l->writer, &zero, 1, memory_order_seq_cst,
						      memory_order_relaxed)) {
		zero = 0;
		while (atomic_load_explicit(&l->writer, memory_order_relaxed))
			wait_step(&wspins);
	}
	/*
	 * Every slot that can be in use: a vCPU's slot exists before the vCPU
	 * can fault, and its creation is ordered before this load by the
	 * seq_cst store above and the one in mmu_rwlock_add_reader().
	 */
	n = atomic_load_explicit(&l->nr_readers, memory_order_seq_cst);
	for (unsigned i = 0; i < n; i++) {
		unsigned spins = 0;

		/* acquire: the reader's writes in its section happen before ours */
		while (atomic_load_explicit(&l->readers[i].active, memory_order_acquire))
			wait_step(&spins);
	}
}

void mmu_write_unlock(struct mmu_rwlock *l)
{
	atomic_store_explicit(&l->writer, 0, memory_order_release);
}

void mmu_read_lock_wait(struct mmu_rwlock *l, struct mmu_reader *r)
{
	for (;;) {
		unsigned spins = 0;

		/* step aside, so the writer's wait for this slot ends */
		atomic_store_explicit(&r->active, 0, memory_order_release);
		while (atomic_load_explicit(&l->writer, memory_order_acquire))
			wait_step(&spins);
		atomic_store_explicit(&r->active, 1, memory_order_seq_cst);
		if (!atomic_load_explicit(&l->writer, memory_order_seq_cst))
			return;
	}
}
