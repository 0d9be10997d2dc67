// SPDX-License-Identifier: MIT
/*
 * VM life cycle, statistics and process-wide accounting. A VM owns its
 * table-page pool, its GPA table, its memslot set and its vCPUs; it borrows
 * the host. Destroying it leaves no table page, pin or vCPU behind, and the
 * counters here let tests prove it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vm.h"

_Atomic uint64_t gpamm_live_vms, gpamm_live_vcpus, gpamm_live_tpools, gpamm_live_threads;

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
	if (maxv > GPAMM_MAX_VCPUS || (cfg->flags & ~GPAMM_VM_PTW) ||
	    cfg->host->page_shift != ps)
		return -EINVAL;
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
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
	pthread_mutex_init(&vm->mmu_lock, NULL);
	pthread_mutex_init(&vm->vcpus_lock, NULL);
	pthread_mutex_init(&vm->dirty_lock, NULL);
	r = gpamm_mmu_notifier_attach(vm);
	if (r)
		goto err_slots;
	/* the host lives while the VM does, whatever order they go in */
	gpamm_host_hold(vm->host);
	atomic_fetch_add(&gpamm_live_vms, 1);
	*out = vm;
	return 0;

err_slots:
	pthread_mutex_destroy(&vm->mmu_lock);
	pthread_mutex_destroy(&vm->vcpus_lock);
	pthread_mutex_destroy(&vm->dirty_lock);
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
	gpamm_mmu_notifier_detach(vm);
	/* No vCPU runs any more, so no TLB can hold a translation. */
	for (unsigned i = 0; i < atomic_load(&vm->nr_vcpus); i++)
		gpamm_vcpu_free(vm->vcpus[i]);
	atomic_store(&vm->nr_vcpus, 0);
	pthread_mutex_lock(&vm->mmu_lock);
	gpamm_pgt_flush_range(&vm->pgt, 0, UINT64_MAX, &fl);
	pthread_mutex_unlock(&vm->mmu_lock);
	gpamm_pgt_free_deferred(&vm->pgt, &fl);
	gpamm_pgt_destroy(&vm->pgt);
	gpamm_memslots_destroy(vm);
	leaked = gpamm_tpool_destroy(vm->tpool);
	GPAMM_BUG_ON(leaked != 0);
	pthread_mutex_destroy(&vm->mmu_lock);
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
	return vm->host;
}

void gpamm_vm_stats(struct gpamm_vm *vm, struct gpamm_vm_stats *st)
{
	struct gpamm_host_stats hs;
	unsigned n = atomic_load(&vm->nr_vcpus);

	memset(st, 0, sizeof(*st));
	st->table_pages = gpamm_pgt_live_tables(&vm->pgt);
	st->pinned = atomic_load(&vm->st_pinned);
	st->remote_flushes = atomic_load(&vm->st_remote_flushes);
	pthread_mutex_lock(&vm->mmu_lock);
	st->slots = vm->slots_locked->nr;
	pthread_mutex_unlock(&vm->mmu_lock);
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
	gpamm_pte_t e;
	unsigned lv = 0;

	if (!vm || gpa >= gpamm_geom_space(&vm->geom))
		return -EINVAL;
	pthread_mutex_lock(&vm->mmu_lock);
	e = gpamm_pgt_lookup(&vm->pgt, gpa, &lv);
	pthread_mutex_unlock(&vm->mmu_lock);
	if (!gpamm_pte_present(e))
		return -ENOENT;
	if (pte)
		*pte = e;
	if (level)
		*level = lv;
	return 0;
}

/* ---- race and fault injection (gpamm/inject.h) --------------------------- */

int gpamm_vm_set_pause_hook(struct gpamm_vm *vm, gpamm_pause_fn fn, void *arg)
{
	if (!vm)
		return -EINVAL;
	vm->pause_arg = arg;
	__atomic_store_n(&vm->pause_fn, fn, __ATOMIC_RELEASE);
	return 0;
}

int gpamm_vm_inject(struct gpamm_vm *vm, unsigned flags)
{
	if (!vm || (flags & ~GPAMM_INJECT_SKIP_SLOT_FLUSH))
		return -EINVAL;
	vm->inject = flags;
	return 0;
}
