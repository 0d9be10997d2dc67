// SPDX-License-Identifier: MIT
/*
 * VM life cycle, statistics and process-wide accounting. A VM owns its
 * table-page pool, its GPA table, its memslot set and its vCPUs; it borrows
 * the host. Destroying it leaves no table page, pin or vCPU behind, and the
 * counters here let tests prove it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>


#include "arch/loongarch/walker.h"
#include "vm.h"

#ifdef GPAMM_TSAN
char gpamm_rcu_tsan_sync; /* rcu.h: the one object grace periods order through */
#endif

_Atomic uint64_t gpamm_live_vms, gpamm_live_vcpus, gpamm_live_tpools, gpamm_live_threads;

/* Every VM of the process, for gpamm_rcu_wait_begin() (RCU is process-wide). */
static pthread_mutex_t all_vms_lock = PTHREAD_MUTEX_INITIALIZER;
static struct gpamm_vm *all_vms;

void gpamm_vms_for_each_vcpu(void (*fn)(struct gpamm_vcpu *v))
{
	pthread_mutex_lock(&all_vms_lock);
	for (struct gpamm_vm *vm = all_vms; vm; vm = vm->next_vm)
		for (unsigned i = 0; i < atomic_load(&vm->nr_vcpus); i++)
			fn(vm->vcpus[i]);
	pthread_mutex_unlock(&all_vms_lock);
}

int gpamm_vm_create(const struct gpamm_vm_config *cfg, struct gpamm_vm **out)
{
	unsigned ps, levels, maxv;
	struct gpamm_vm *vm;
	int r;

	if (!cfg || !out || !cfg->host)
		return -EINVAL;
	ps = cfg->page_shift ? cfg->page_shift : 14;
	levels = cfg->levels ? cfg->levels : 3;
	maxv = cfg->max_vcpus ? cfg->max_vcpus : 64;
	if (maxv > GPAMM_MAX_VCPUS || (cfg->flags & ~(GPAMM_VM_PTW | GPAMM_VM_SERIAL_FAULTS)) ||
	    cfg->host->page_shift != ps)
		return -EINVAL;
	/* cache-line aligned: mmu_lock's writer flag has a line of its own */
	vm = aligned_alloc(64, (sizeof(*vm) + 63) & ~(size_t)63);
	if (!vm)
		return -ENOMEM;
	memset(vm, 0, sizeof(*vm));
	r = gpamm_geom_init(&vm->geom, ps, levels);
	if (r)
		goto err_free;
	for (unsigned i = 0; i < 6; i++)
		if (gpamm_geom_layouts[i][0] == ps && gpamm_geom_layouts[i][1] == levels)
			vm->layout = i;
	vm->host = cfg->host;
	vm->flags = cfg->flags;
	vm->max_vcpus = maxv;
	r = -ENOMEM;
	vm->vcpus = calloc(maxv, sizeof(*vm->vcpus));
	vm->tpool = gpamm_tpool_create(ps);
	if (!vm->vcpus || !vm->tpool)
		goto err_pool;
	gpamm_tpool_ops(vm->tpool, &vm->mm);
	r = gpamm_pgt_init(&vm->pgt, &vm->geom, &vm->mm);
	if (r)
		goto err_pool;
	r = gpamm_memslots_init(vm);
	if (r)
		goto err_pgt;
	r = mmu_rwlock_init(&vm->mmu_lock, maxv, cfg->flags & GPAMM_VM_SERIAL_FAULTS);
	if (r)
		goto err_slots_only;
	pthread_mutex_init(&vm->vcpus_lock, NULL);
	pthread_mutex_init(&vm->dirty_lock, NULL);
	r = gpamm_mmu_notifier_attach(vm);
	if (r)
		goto err_slots;
	/* the host lives while the VM does, whatever order they go in */
	gpamm_host_hold(vm->host);
	pthread_mutex_lock(&all_vms_lock);
	vm->next_vm = all_vms;
	all_vms = vm;
	pthread_mutex_unlock(&all_vms_lock);
	atomic_fetch_add(&gpamm_live_vms, 1);
	*out = vm;
	return 0;

err_slots:
	mmu_rwlock_destroy(&vm->mmu_lock);
	pthread_mutex_destroy(&vm->vcpus_lock);
	pthread_mutex_destroy(&vm->dirty_lock);
err_slots_only:
	gpamm_memslots_destroy(vm);
err_pgt:
	gpamm_pgt_destroy(&vm->pgt);
err_pool:
	gpamm_tpool_destroy(vm->tpool);
	free(vm->vcpus);
err_free:
	free(vm);
	return r;
}

int gpamm_vm_destroy(struct gpamm_vm *vm)
{
	struct gpamm_pgt_freelist fl = { 0 };
	uint64_t leaked;

	if (!vm)
		return 0;
	/*
	 * A vCPU inside gpamm_vcpu_run() would use what is freed here: refuse.
	 * Each vCPU is claimed (running 0 -> 2) so that no run can start
	 * while the others are checked; on a refusal the claims are undone.
	 */
	pthread_mutex_lock(&vm->vcpus_lock);
	for (unsigned i = 0; i < atomic_load(&vm->nr_vcpus); i++) {
		int idle = 0;

		if (!atomic_compare_exchange_strong(&vm->vcpus[i]->running, &idle, 2)) {
			while (i--)
				atomic_store(&vm->vcpus[i]->running, 0);
			pthread_mutex_unlock(&vm->vcpus_lock);
			return -EBUSY;
		}
	}
	pthread_mutex_unlock(&vm->vcpus_lock);
	pthread_mutex_lock(&all_vms_lock);
	for (struct gpamm_vm **pp = &all_vms; *pp; pp = &(*pp)->next_vm)
		if (*pp == vm) {
			*pp = vm->next_vm;
			break;
		}
	pthread_mutex_unlock(&all_vms_lock);
	gpamm_mmu_notifier_detach(vm);
	/* No vCPU runs any more, so no TLB can hold a translation. */
	for (unsigned i = 0; i < atomic_load(&vm->nr_vcpus); i++)
		gpamm_vcpu_free(vm->vcpus[i]);
	atomic_store(&vm->nr_vcpus, 0);
	mmu_write_lock(&vm->mmu_lock);
	gpamm_pgt_flush_range(&vm->pgt, 0, UINT64_MAX, &fl);
	mmu_write_unlock(&vm->mmu_lock);
	gpamm_pgt_free_deferred(&vm->pgt, &fl);
	/* tables unlinked earlier wait for a grace period: let them go first */
	gpamm_rcu_barrier();
	gpamm_pgt_destroy(&vm->pgt);
	gpamm_memslots_destroy(vm);
	leaked = gpamm_tpool_destroy(vm->tpool);
	GPAMM_BUG_ON(leaked != 0);
	mmu_rwlock_destroy(&vm->mmu_lock);
	pthread_mutex_destroy(&vm->vcpus_lock);
	pthread_mutex_destroy(&vm->dirty_lock);
	free(vm->vcpus);
	gpamm_host_drop(vm->host);
	free(vm);
	atomic_fetch_sub(&gpamm_live_vms, 1);
	return 0;
}

const struct gpamm_geom *gpamm_vm_geom(const struct gpamm_vm *vm)
{
	return &vm->geom;
}

struct gpamm_host *gpamm_vm_host(const struct gpamm_vm *vm)
{
	return vm ? vm->host : NULL;
}

void gpamm_vm_stats(struct gpamm_vm *vm, struct gpamm_vm_stats *st)
{
	struct gpamm_host_stats hs;
	unsigned n;

	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!vm)
		return;
	n = atomic_load(&vm->nr_vcpus);
	st->table_pages = gpamm_pgt_live_tables(&vm->pgt);
	st->remote_flushes = atomic_load(&vm->st_remote_flushes);
	gpamm_rcu_read_lock();
	st->slots = atomic_load_explicit(&vm->slots, memory_order_acquire)->nr;
	gpamm_rcu_read_unlock();
	st->vcpus = n;
	st->threads = atomic_load(&gpamm_live_threads);
	for (unsigned i = 0; i < n; i++) {
		struct gpamm_vcpu *v = vm->vcpus[i];
#define RD(x) __atomic_load_n(&v->x, __ATOMIC_RELAXED)
		st->faults += RD(st_faults);
		st->fast_faults += RD(st_fast);
		st->slow_faults += RD(st_slow);
		st->fault_retries += RD(st_retries);
		st->mmio_exits += RD(st_mmio);
		st->memory_fault_exits += RD(st_memfault);
		st->gpa_flushes += RD(st_gpa_flushes);
		st->tlb_misses += RD(st_tlb_misses);
		st->pinned += (uint64_t)RD(st_pins);
#undef RD
	}
	gpamm_host_stats(vm->host, &hs);
	/* the host's checks (dead or moved frames) and the VM's (a translation
	 * that outlived its memslot) */
	st->stale_accesses = hs.stale_accesses + atomic_load(&vm->st_stale_slot);
}

void gpamm_live_objects(struct gpamm_live *l)
{
	l->vms = atomic_load(&gpamm_live_vms);
	l->vcpus = atomic_load(&gpamm_live_vcpus);
	l->tpools = atomic_load(&gpamm_live_tpools);
	l->threads = atomic_load(&gpamm_live_threads);
}

int gpamm_vm_translate(struct gpamm_vm *vm, uint64_t gpa, gpamm_pte_t *pte, unsigned *level)
{
	gpamm_pte_t e, *ptep;
	unsigned lv = 0;

	if (!vm || gpa >= gpamm_geom_space(&vm->geom))
		return -EINVAL;
	/*
	 * Lock-free, as the hardware walker: an RCU reader, so a table that a
	 * range operation unlinks meanwhile stays until the walk is done.
	 */
	gpamm_rcu_read_lock();
	ptep = la_walk_descend(vm->pgt.root, vm->layout, gpa, false, &e, &lv);
	if (unlikely(vm->pause_fn != NULL))
		vm->pause_fn(vm->pause_arg, GPAMM_PAUSE_WALK, NULL, gpa);
	if (!lv)
		e = pte_read_acquire(ptep);
	gpamm_rcu_read_unlock();
	if (!gpamm_pte_present(e))
		return -ENOENT;
	if (pte)
		*pte = e;
	if (level)
		*level = lv;
	return 0;
}

/* ---- race and fault injection (gpamm/inject.h) --------------------------- */

/* The table core's race windows, as the VM's pause points (the cache is the vCPU's). */
static void vm_pgt_race(void *arg, enum gpamm_pgt_race where, uint64_t gpa,
			struct gpamm_memcache *mc)
{
	struct gpamm_vcpu *vcpu = (struct gpamm_vcpu *)((char *)mc -
						       offsetof(struct gpamm_vcpu, mc));

	vm_pause_point(vcpu, where == GPAMM_PGT_RACE_TABLE ? GPAMM_PAUSE_TABLE_LINK
							   : GPAMM_PAUSE_LEAF_INSTALL, gpa);
	(void)arg;
}

int gpamm_vm_set_pause_hook(struct gpamm_vm *vm, gpamm_pause_fn fn, void *arg)
{
	if (!vm)
		return -EINVAL;
	vm->pause_arg = arg;
	__atomic_store_n(&vm->pause_fn, fn, __ATOMIC_RELEASE);
	vm->pgt.race_arg = vm;
	__atomic_store_n(&vm->pgt.race_hook, fn ? vm_pgt_race : NULL, __ATOMIC_RELEASE);
	return 0;
}

int gpamm_vm_mmu_lock_state(struct gpamm_vm *vm, unsigned *readers, bool *writer)
{
	unsigned n = 0;

	if (!vm)
		return -EINVAL;
	for (unsigned i = 0; i < atomic_load(&vm->mmu_lock.nr_readers); i++)
		n += atomic_load(&vm->mmu_lock.readers[i].active) != 0;
	if (readers)
		*readers = n;
	if (writer)
		*writer = atomic_load(&vm->mmu_lock.writer) != 0;
	return 0;
}

int gpamm_vm_inject(struct gpamm_vm *vm, unsigned flags)
{
	if (!vm || (flags & ~(GPAMM_INJECT_SKIP_SLOT_FLUSH | GPAMM_INJECT_NO_GRACE)))
		return -EINVAL;
	vm->inject = flags;
	return 0;
}
