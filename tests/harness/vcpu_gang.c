// SPDX-License-Identifier: MIT
/* vCPU threads under a controller: see vcpu_gang.h. */
#include <string.h>
#include <unistd.h>

#include "vcpu_gang.h"
#include "vmtest.h"

void vg_reset(struct vcpu_gang *g, struct gpamm_vm *vm, bool ring,
	      enum vg_exit (*on_exit)(struct vg_vcpu *c, struct gpamm_run *run))
{
	g->vm = vm;
	g->ring = ring;
	g->on_exit = on_exit;
	g->n = 0;
	g->ring_collected = g->ring_reset = 0;
	g->errors = 0;
	atomic_store(&g->pause, 0);
	atomic_store(&g->quit, 0);
	atomic_store(&g->failed, 0);
}

void vg_add(struct vcpu_gang *g, struct vg_vcpu *c, struct gpamm_vcpu *v)
{
	ASSERT(g->n < VG_MAX_VCPUS);
	memset(c, 0, sizeof(*c));
	c->v = v;
	c->gang = g;
	c->idx = g->n;
	if (g->ring)
		c->ring = gpamm_vcpu_dirty_ring(v, &c->ring_size);
	g->c[g->n++] = c;
}

/* ---- the vCPU threads ---- */

static void park(struct vg_vcpu *c)
{
	struct vcpu_gang *g = c->gang;

	pthread_mutex_lock(&g->lock);
	uint64_t gen = g->park_gen;
	c->parked = true;
	pthread_cond_broadcast(&g->cond);
	while (g->park_gen == gen && !atomic_load(&g->quit))
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
}

static void wait_reset(struct vg_vcpu *c)
{
	struct vcpu_gang *g = c->gang;

	pthread_mutex_lock(&g->lock);
	uint64_t gen = g->reset_gen;
	atomic_store(&c->ring_full, 1);
	while (g->reset_gen == gen && !atomic_load(&g->quit))
		pthread_cond_wait(&g->cond, &g->lock);
	atomic_store(&c->ring_full, 0);
	pthread_mutex_unlock(&g->lock);
}

static void *vthread(void *arg)
{
	struct vg_vcpu *c = arg;
	struct vcpu_gang *g = c->gang;
	struct gpamm_run *run = gpamm_vcpu_run_state(c->v);
	uint64_t handled = 0;

	for (;;) {
		if (gpamm_vcpu_run(c->v)) {
			tap_fail_async(__FILE__, __LINE__, "gpamm_vcpu_run failed");
			break;
		}
		switch (run->exit_reason) {
		case GPAMM_EXIT_DONE:
			return NULL;
		case GPAMM_EXIT_REQUEST:
			/* park only at the guest's own pause point, once per pause */
			if (c->pause_seq != handled) {
				handled = c->pause_seq;
				park(c);
			}
			continue;
		case GPAMM_EXIT_DIRTY_RING_FULL:
			if (!g->ring) {
				tap_fail_async(__FILE__, __LINE__, "ring-full exit without a ring");
				goto fail;
			}
			/* at the end nobody resets any more: leave the guest where it is */
			if (atomic_load(&g->quit))
				return NULL;
			atomic_fetch_add(&c->ring_full_exits, 1);
			wait_reset(c);
			continue;
		default:
			break;
		}
		switch (g->on_exit ? g->on_exit(c, run) : VG_EXIT_UNKNOWN) {
		case VG_EXIT_RUN_ON:
			continue;
		case VG_EXIT_FAIL:
			goto fail;
		case VG_EXIT_UNKNOWN:
			tap_diag("vCPU %u: unexpected exit %u", c->idx, run->exit_reason);
			tap_fail_async(__FILE__, __LINE__, "unexpected exit");
			goto fail;
		}
	}
fail:
	atomic_store(&g->failed, 1);
	pthread_mutex_lock(&g->lock);
	c->parked = true; /* so that the controller does not wait for it */
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

void vg_start(struct vcpu_gang *g)
{
	for (unsigned i = 0; i < g->n; i++)
		ASSERT_EQ_INT(pthread_create(&g->c[i]->th, NULL, vthread, g->c[i]), 0);
}

/* ---- the controller ---- */

bool vg_any_ring_full(struct vcpu_gang *g)
{
	for (unsigned i = 0; i < g->n; i++)
		if (atomic_load(&g->c[i]->ring_full))
			return true;
	return false;
}

static bool all_parked(struct vcpu_gang *g)
{
	bool all = true;

	pthread_mutex_lock(&g->lock);
	for (unsigned i = 0; i < g->n; i++)
		all &= g->c[i]->parked;
	pthread_mutex_unlock(&g->lock);
	return all;
}

void vg_release(struct vcpu_gang *g)
{
	pthread_mutex_lock(&g->lock);
	atomic_store(&g->pause, 0);
	for (unsigned i = 0; i < g->n; i++)
		g->c[i]->parked = false;
	g->park_gen++;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

bool vg_stop(struct vcpu_gang *g, unsigned tick_us, unsigned max_ticks,
	     void (*tick)(void *arg), void *arg)
{
	atomic_store_explicit(&g->pause, 1, memory_order_release);
	for (unsigned i = 0; i < g->n; i++)
		gpamm_vcpu_kick(g->c[i]->v); /* only an accelerator */
	for (unsigned t = 0; !all_parked(g); t++) {
		if (tick)
			tick(arg);
		if (t > max_ticks || vg_failed(g))
			return false;
		usleep(tick_us);
	}
	return true;
}

void vg_quit(struct vcpu_gang *g)
{
	atomic_store(&g->quit, 1);
	vg_release(g);
	for (unsigned i = 0; i < g->n; i++)
		pthread_join(g->c[i]->th, NULL);
}

uint64_t vg_ring_collect(struct vcpu_gang *g, uint32_t slot, uint64_t npages, uint64_t *bm)
{
	uint64_t n = 0;
	int64_t r;

	for (unsigned i = 0; i < g->n; i++) {
		uint64_t foreign = 0;

		n += vt_ring_harvest(g->c[i]->v, &g->c[i]->fetch, slot, npages, bm, &foreign);
		VG_CHECK(g, foreign == 0, "%llu ring entries name another slot or lie beyond it",
			 (unsigned long long)foreign);
	}
	r = gpamm_vm_reset_dirty_rings(g->vm);
	VG_CHECK(g, r == (int64_t)n, "reset %lld entries, collected %llu", (long long)r,
		 (unsigned long long)n);
	g->ring_collected += n;
	g->ring_reset += r > 0 ? (uint64_t)r : 0;
	pthread_mutex_lock(&g->lock);
	g->reset_gen++;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return n;
}
