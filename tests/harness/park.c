// SPDX-License-Identifier: MIT
/* The parking lot and the parking host: see park.h. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "park.h"
#include "vmtest.h"

struct park_trap {
	bool armed, parked;
	uint64_t key;
	unsigned skip;
	int who;         /* vCPU id of the parked thread, -1 for a host call without one */
	bool go;
	unsigned hits;
};

struct park_lot {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool aborted;
	struct park_trap t[PARK_NR];
};

struct park_lot *park_lot_create(void)
{
	struct park_lot *l = calloc(1, sizeof(*l));

	if (!l)
		abort();
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	return l;
}

void park_lot_destroy(struct park_lot *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->cond);
	free(l);
}

void park_arm(struct park_lot *l, unsigned where, uint64_t key, unsigned skip)
{
	pthread_mutex_lock(&l->lock);
	l->t[where] = (struct park_trap){ .armed = true, .key = key, .skip = skip, .who = -1,
					  .hits = l->t[where].hits };
	pthread_mutex_unlock(&l->lock);
}

static void deadline_in(struct timespec *ts, unsigned sec)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += sec;
}

bool park_wait(struct park_lot *l, unsigned where)
{
	struct timespec ts;
	bool ok;

	deadline_in(&ts, 10);
	pthread_mutex_lock(&l->lock);
	while (!l->t[where].parked && !l->aborted)
		if (pthread_cond_timedwait(&l->cond, &l->lock, &ts) == ETIMEDOUT)
			break;
	ok = l->t[where].parked && !l->aborted;
	pthread_mutex_unlock(&l->lock);
	return ok;
}

void park_release(struct park_lot *l, unsigned where)
{
	pthread_mutex_lock(&l->lock);
	l->t[where].armed = false;
	l->t[where].go = true;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

void park_abort(struct park_lot *l)
{
	pthread_mutex_lock(&l->lock);
	l->aborted = true;
	for (unsigned i = 0; i < PARK_NR; i++)
		l->t[i].armed = false;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

unsigned park_hits(struct park_lot *l, unsigned where)
{
	unsigned n;

	pthread_mutex_lock(&l->lock);
	n = l->t[where].hits;
	pthread_mutex_unlock(&l->lock);
	return n;
}

int park_who(struct park_lot *l, unsigned where)
{
	int w;

	pthread_mutex_lock(&l->lock);
	w = l->t[where].parked ? l->t[where].who : -1;
	pthread_mutex_unlock(&l->lock);
	return w;
}

/* A thread of the code under test passes @where with @key. */
static void park_point(struct park_lot *l, unsigned where, uint64_t key, int who)
{
	struct park_trap *t = &l->t[where];

	pthread_mutex_lock(&l->lock);
	t->hits++;
	if (t->armed && !l->aborted && (t->key == PARK_ANY || t->key == key)) {
		if (t->skip) {
			t->skip--;
		} else {
			t->armed = false;
			t->parked = true;
			t->who = who;
			t->go = false;
			pthread_cond_broadcast(&l->cond);
			while (!t->go && !l->aborted)
				pthread_cond_wait(&l->cond, &l->lock);
			t->parked = false;
		}
	}
	pthread_mutex_unlock(&l->lock);
}

void park_pause_hook(void *lot, enum gpamm_pause_point pp, struct gpamm_vcpu *vcpu, uint64_t gpa)
{
	park_point(lot, pp, gpa, vcpu ? (int)gpamm_vcpu_id(vcpu) : -1);
}

/* ---- the parking host ---------------------------------------------------- */

struct park_host {
	struct gpamm_host h; /* first: what the VM sees */
	struct gpamm_host *inner;
	struct park_lot *lot;
	struct gpamm_host_ops ops;
	const struct gpamm_mmu_notifier_ops *mn_ops;
	void *mn;
	_Atomic bool stale;
	_Atomic uint64_t nstale;
};

static inline struct park_host *to_park(struct gpamm_host *h)
{
	return (struct park_host *)h;
}

static int ph_get_page(struct gpamm_host *h, uint64_t hva, bool write, struct gpamm_host_page *out)
{
	struct park_host *p = to_park(h);
	int r = p->inner->ops->get_page(p->inner, hva, write, out);

	if (!r)
		park_point(p->lot, PARK_AT_GET, hva, -1);
	return r;
}

static void ph_put_page(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty)
{
	struct park_host *p = to_park(h);

	park_point(p->lot, PARK_AT_PUT, pfn, -1);
	p->inner->ops->put_page(p->inner, pfn, accessed, dirty);
}

static void ph_mark_page(struct gpamm_host *h, uint64_t pfn, bool accessed, bool dirty)
{
	to_park(h)->inner->ops->mark_page(to_park(h)->inner, pfn, accessed, dirty);
}

static void *ph_page_ptr(struct gpamm_host *h, uint64_t pfn)
{
	return gpamm_host_page_ptr(to_park(h)->inner, pfn);
}

static int ph_check_access(struct gpamm_host *h, uint64_t hva, uint64_t pfn, bool write)
{
	struct park_host *p = to_park(h);
	struct gpamm_host *in = p->inner;

	if (p->stale) {
		p->nstale++;
		return -ESTALE;
	}
	return in->ops->check_access ? in->ops->check_access(in, hva, pfn, write) : 0;
}

static int ph_notifier_register(struct gpamm_host *h, const struct gpamm_mmu_notifier_ops *ops,
				void *mn)
{
	struct park_host *p = to_park(h);
	int r = p->inner->ops->notifier_register(p->inner, ops, mn);

	if (!r) {
		p->mn_ops = ops;
		p->mn = mn;
	}
	return r;
}

static void ph_notifier_unregister(struct gpamm_host *h, void *mn)
{
	struct park_host *p = to_park(h);

	p->inner->ops->notifier_unregister(p->inner, mn);
	if (p->mn == mn)
		p->mn = NULL;
}

static void ph_stats(struct gpamm_host *h, struct gpamm_host_stats *st)
{
	to_park(h)->inner->ops->stats(to_park(h)->inner, st);
}

static void ph_destroy(struct gpamm_host *h)
{
	gpamm_host_drop(to_park(h)->inner);
	free(h);
}

struct gpamm_host *park_host_create(struct gpamm_host *inner, struct park_lot *l)
{
	struct park_host *p = calloc(1, sizeof(*p));

	if (!p)
		abort();
	p->inner = inner;
	gpamm_host_hold(inner); /* a VM holds the wrapper, the wrapper its inner host */
	p->lot = l;
	p->ops = (struct gpamm_host_ops){
		.name = "park", .get_page = ph_get_page, .put_page = ph_put_page,
		.mark_page = ph_mark_page, .page_ptr = ph_page_ptr,
		.check_access = ph_check_access,
		.notifier_register = ph_notifier_register,
		.notifier_unregister = ph_notifier_unregister, .stats = ph_stats,
		.destroy = ph_destroy,
	};
	p->h.ops = &p->ops;
	p->h.page_shift = inner->page_shift;
	p->h.checking = inner->checking;
	p->h.pfn_linear = inner->pfn_linear;
	p->h.pfn_linear_off = inner->pfn_linear_off;
	return &p->h;
}

void park_host_invalidate_start(struct gpamm_host *h, uint64_t start, uint64_t end)
{
	struct park_host *p = to_park(h);

	if (p->mn)
		p->mn_ops->invalidate_range_start(p->mn, start, end);
}

void park_host_invalidate_end(struct gpamm_host *h, uint64_t start, uint64_t end)
{
	struct park_host *p = to_park(h);

	if (p->mn)
		p->mn_ops->invalidate_range_end(p->mn, start, end);
}

bool park_host_clear_young(struct gpamm_host *h, uint64_t start, uint64_t end, bool flush)
{
	struct park_host *p = to_park(h);

	if (!p->mn)
		return false;
	return flush ? p->mn_ops->clear_flush_young(p->mn, start, end)
		     : p->mn_ops->clear_young(p->mn, start, end);
}

void park_host_force_stale(struct gpamm_host *h, bool on)
{
	to_park(h)->stale = on;
}

uint64_t park_host_forced_stale(struct gpamm_host *h)
{
	return to_park(h)->nstale;
}

/* ---- a vCPU on a thread of its own ---------------------------------------- */

static void *park_thread_main(void *arg)
{
	struct park_thread *t = arg;

	t->reason = vt_run_once(t->v, t->mmio_fill);
	if (t->lot)
		park_abort(t->lot);
	return NULL;
}

int park_thread_start(struct park_thread *t, struct gpamm_vcpu *v, struct park_lot *lot,
		      uint8_t mmio_fill)
{
	t->v = v;
	t->lot = lot;
	t->mmio_fill = mmio_fill;
	t->reason = GPAMM_EXIT_NONE;
	return pthread_create(&t->tid, NULL, park_thread_main, t);
}

void park_thread_join(struct park_thread *t)
{
	pthread_join(t->tid, NULL);
}
