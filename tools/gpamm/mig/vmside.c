// SPDX-License-Identifier: MIT
/* One side of a migration (vmside.h). */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mig/stream.h"
#include "mig/vmside.h"

#define THROTTLE_SLICE_NS 10000000ULL /* QEMU's CPU_THROTTLE_TIMESLICE_NS */

uint64_t mig_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

struct gpamm_host *mig_vm_host(unsigned page_shift, uint64_t mem, bool checking, bool prefault)
{
	uint64_t npages = mem >> page_shift;
	struct gpamm_sim_config sc = {
		.page_shift = page_shift, .checking = checking, .prefault = prefault,
		/* room for migration targets and copy-on-write breaks, and a swap area */
		.frames = npages + npages / 4 + 64, .swap_pages = npages / 4 + 64,
	};

	return gpamm_host_sim_create(&sc);
}

int mig_vm_create(struct mig_vm *m, const struct mig_vm_cfg *c)
{
	struct gpamm_vm_config vc = {
		.page_shift = c->page_shift, .levels = c->levels, .max_vcpus = c->vcpus,
	};
	struct gpamm_userspace_memory_region reg = { 0 };
	int r = -ENOMEM;

	memset(m, 0, sizeof(*m));
	m->c = *c;
	m->psz = 1ULL << c->page_shift;
	m->npages = c->mem >> c->page_shift;
	m->host = c->host ? c->host : mig_vm_host(c->page_shift, c->mem, c->checking, c->prefault);
	m->c.host = NULL;
	if (!m->host)
		goto fail;
	vc.host = m->host;
	r = gpamm_vm_create(&vc, &m->vm);
	if (r)
		goto fail;
	if (c->ring_size)
		r = gpamm_vm_enable_dirty_ring(m->vm, c->ring_size);
	else if (c->manual_protect)
		r = gpamm_vm_enable_manual_dirty_log_protect(m->vm,
							     GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
	if (r)
		goto fail;
	r = gpamm_sim_mmap(m->host, c->mem, 0, &m->hva);
	if (r)
		goto fail;
	reg.slot = 0;
	reg.guest_phys_addr = c->gpa;
	reg.memory_size = c->mem;
	reg.userspace_addr = m->hva;
	r = gpamm_vm_set_memory_region(m->vm, &reg);
	if (r)
		goto fail;
	r = -ENOMEM;
	m->vcpu = calloc(c->vcpus, sizeof(*m->vcpu));
	m->th = calloc(c->vcpus, sizeof(*m->th));
	if (!m->vcpu || !m->th)
		goto fail;
	for (unsigned i = 0; i < c->vcpus; i++) {
		r = gpamm_vcpu_create(m->vm, i, &m->vcpu[i]);
		if (r)
			goto fail;
	}
	return 0;
fail:
	mig_vm_destroy(m);
	return r;
}

struct vcpu_arg {
	struct mig_vm *m;
	unsigned id;
};

static void park(struct mig_vm *m)
{
	uint64_t now = mig_now_ns(), zero = 0;

	atomic_compare_exchange_strong(&m->first_stop_ns, &zero, now);
	atomic_fetch_add(&m->parked, 1);
	while (atomic_load(&m->ctl.pause) && !atomic_load(&m->stop))
		usleep(100);
	atomic_fetch_sub(&m->parked, 1);
}

static void *vcpu_loop(struct mig_vm *m, unsigned id);

static void *vcpu_thread(void *arg)
{
	struct vcpu_arg a = *(struct vcpu_arg *)arg;

	free(arg);
	vcpu_loop(a.m, a.id);
	atomic_fetch_add(&a.m->exited, 1); /* a pause does not wait for it */
	return NULL;
}

static void *vcpu_loop(struct mig_vm *m, unsigned id)
{
	struct gpamm_vcpu *v = m->vcpu[id];
	struct gpamm_run *run = gpamm_vcpu_run_state(v);
	uint64_t slice0 = mig_now_ns();

	for (;;) {
		if (gpamm_vcpu_run(v)) {
			atomic_store(&m->vcpu_error, 1);
			return NULL;
		}
		switch (run->exit_reason) {
		case GPAMM_EXIT_DONE:
			return NULL;
		case GPAMM_EXIT_REQUEST:
		case GPAMM_EXIT_DIRTY_RING_FULL:
			if (atomic_load(&m->stop))
				return NULL; /* stopped at a stop point: the block is complete */
			if (atomic_load(&m->ctl.pause)) {
				park(m);
				slice0 = mig_now_ns();
				break;
			}
			int pct = atomic_load(&m->throttle_pct);
			uint64_t now = mig_now_ns();
			if (pct > 0 && now - slice0 >= THROTTLE_SLICE_NS) {
				/* QEMU's cpu_throttle: pct/(1-pct) of the time run */
				uint64_t s = (now - slice0) * (uint64_t)pct / (uint64_t)(100 - pct);
				sleep_ns(s);
				atomic_fetch_add(&m->throttled_ns, s);
				slice0 = mig_now_ns();
			} else if (run->exit_reason == GPAMM_EXIT_DIRTY_RING_FULL) {
				usleep(100); /* the VMM harvests */
			} else if (pct <= 0) {
				usleep(500); /* ahead of the rate */
			}
			break;
		case GPAMM_EXIT_MEMORY_FAULT:
			usleep(50); /* a host event or a page in flight; the access is retried */
			break;
		default:
			atomic_store(&m->vcpu_error, 1);
			return NULL;
		}
	}
}

int mig_vm_start(struct mig_vm *m)
{
	for (unsigned i = 0; i < m->c.vcpus; i++) {
		struct vcpu_arg *a = malloc(sizeof(*a));
		int r;

		if (!a)
			return -ENOMEM;
		*a = (struct vcpu_arg){ m, i };
		r = gpamm_vcpu_set_guest(m->vcpu[i], mig_guest_fn, &m->ctl, 0);
		if (!r && pthread_create(&m->th[i], NULL, vcpu_thread, a))
			r = -EAGAIN;
		if (r) {
			free(a);
			for (unsigned j = 0; j < i; j++) { /* the ones started stop */
				atomic_store(&m->stop, 1);
				gpamm_vcpu_kick(m->vcpu[j]);
			}
			for (unsigned j = 0; j < i; j++)
				pthread_join(m->th[j], NULL);
			return r;
		}
	}
	m->started = true;
	return 0;
}

int mig_vm_pause(struct mig_vm *m)
{
	atomic_store(&m->ctl.pause, 1);
	for (unsigned i = 0; i < m->c.vcpus; i++)
		gpamm_vcpu_kick(m->vcpu[i]);
	while (atomic_load(&m->parked) + atomic_load(&m->exited) < m->c.vcpus) {
		if (atomic_load(&m->vcpu_error))
			return -EIO;
		for (unsigned i = 0; i < m->c.vcpus; i++)
			gpamm_vcpu_kick(m->vcpu[i]);
		sched_yield();
	}
	return 0;
}

void mig_vm_resume(struct mig_vm *m)
{
	atomic_store(&m->first_stop_ns, 0);
	atomic_store(&m->ctl.pause, 0);
}

static void *throttle_thread(void *arg)
{
	struct mig_vm *m = arg;

	while (!atomic_load(&m->stop) && atomic_load(&m->throttle_pct) > 0) {
		for (unsigned i = 0; i < m->c.vcpus; i++)
			gpamm_vcpu_kick(m->vcpu[i]);
		sleep_ns(THROTTLE_SLICE_NS);
	}
	return NULL;
}

void mig_vm_set_throttle(struct mig_vm *m, int pct)
{
	atomic_store(&m->throttle_pct, pct);
	if (pct > 0 && !m->throttle_on) {
		if (!pthread_create(&m->throttle_th, NULL, throttle_thread, m))
			m->throttle_on = true;
	} else if (pct <= 0 && m->throttle_on) {
		pthread_join(m->throttle_th, NULL);
		m->throttle_on = false;
	}
}

void mig_vm_join(struct mig_vm *m)
{
	if (!m->started)
		return;
	atomic_store(&m->stop, 1);
	for (unsigned i = 0; i < m->c.vcpus; i++)
		gpamm_vcpu_kick(m->vcpu[i]);
	for (unsigned i = 0; i < m->c.vcpus; i++)
		pthread_join(m->th[i], NULL);
	m->started = false;
	mig_vm_set_throttle(m, 0);
}

void mig_vm_destroy(struct mig_vm *m)
{
	mig_vm_join(m);
	if (m->vm)
		gpamm_vm_destroy(m->vm);
	m->vm = NULL;
	if (m->host) {
		if (m->hva)
			gpamm_sim_munmap(m->host, m->hva, m->c.mem);
		gpamm_host_destroy(m->host);
	}
	m->host = NULL;
	free(m->vcpu);
	free(m->th);
	m->vcpu = NULL;
	m->th = NULL;
}

int mig_vm_hash(struct mig_vm *m, uint64_t *hash)
{
	uint8_t *buf = malloc(m->psz);
	uint64_t h = 0;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t p = 0; p < m->npages && !r; p++) {
		r = gpamm_sim_read(m->host, m->hva + p * m->psz, buf, m->psz);
		h = mig_hash(buf, m->psz, h);
	}
	free(buf);
	*hash = h;
	return r;
}
