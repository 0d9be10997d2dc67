// SPDX-License-Identifier: MIT
/*
 * gpamm receive - the destination of a live migration (docs/migration.md).
 *
 * Listens, takes the source's two connections (the main stream, and the
 * post-copy channel), builds the VM the CONFIG record describes (logging
 * off, no rings), places the pages as they come, and at the switchover
 * loads the vCPU states and resumes the guest. In post-copy it resumes
 * with pages still missing: a vCPU that touches one faults through the MMU
 * into the sim host, whose missing-page handler asks the source for it on
 * the post-copy channel and waits (no host lock held) until the channel's
 * reader has placed it. After resuming, the guest runs for --run-ms; then
 * the vCPUs stop, and the ACK(done) carries the memory hash and the vCPU
 * states back, so the source can compute what memory must be.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "cli.h"
#include "mig/guest.h"
#include "mig/net.h"
#include "mig/stream.h"
#include "mig/vmside.h"

struct rcv_cfg {
	char host[64];
	uint16_t port;
	int ready_fd;
	unsigned run_ms, page_shift;
	int timeout_ms;
	uint64_t prealloc;
	bool checking, quiet;
};

struct rcv {
	struct rcv_cfg c;
	int lfd;
	struct mig_conn main, pc;
	struct mig_reader rd, pcrd;
	struct mig_writer ackw, reqw;
	struct mig_config cfg;
	struct gpamm_host *prehost; /* --prealloc: made and faulted in before listening */
	struct mig_vm vm;
	bool vm_up;
	uint64_t session;
	/* pages: received (placed, or a zero page known), requested */
	_Atomic uint8_t *received, *requested;
	uint64_t nreceived, zero_pages;
	uint8_t *zero;
	/* post-copy */
	bool postcopy;
	pthread_t pc_th;
	bool pc_th_on;
	pthread_mutex_t lock; /* the request writer; the waits below */
	pthread_cond_t placed;
	atomic_int pc_dead;
	atomic_int pc_bad;     /* the post-copy channel carried something malformed */
	char pc_err[240];
	uint64_t nreq;
	uint64_t *lat; /* ns per request, under lock */
	size_t nlat, caplat;
	uint64_t resume_ns;
	struct mig_vcpu_state *states;
	uint32_t nstates;
};

static const struct cli_opt opts[] = {
	{ "help", false, 1, 'h' },
	{ "listen", true, 2, 'l' },
	{ "ready-fd", true, 3, 0 },
	{ "run-ms", true, 4, 0 },
	{ "timeout", true, 5, 0 },
	{ "no-checking", false, 6, 0 },
	{ "quiet", false, 7, 'q' },
	{ "prealloc", true, 8, 0 },
	{ "page-shift", true, 9, 0 },
	{ NULL, false, 0, 0 },
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm receive --listen [ADDR:]PORT [options]\n"
		"\n"
		"The destination of a live migration: a VM of its own, built from the\n"
		"source's configuration, filled from the stream, resumed at the switchover\n"
		"(docs/migration.md). One migration, then it exits.\n"
		"\n"
		"  -l, --listen [ADDR:]PORT  where to listen (ADDR default 0.0.0.0; PORT 0: any)\n"
		"      --ready-fd FD         write the bound port and a newline to FD once listening\n"
		"      --run-ms N            run the guest N ms after resuming (default 200)\n"
		"      --timeout S           give up when the source is silent S seconds (default 30)\n"
		"      --no-checking         sim host without per-access checks\n"
		"      --prealloc SIZE       make the host's RAM for SIZE of guest memory and fault\n"
		"                            it in before listening (QEMU's -mem-prealloc)\n"
		"      --page-shift N        its page size: 12, 14 (default) or 16\n"
		"  -q, --quiet               no progress on stderr\n"
		"\n"
		"Exit status: 0 when the migration completed, 1 when it failed (a malformed\n"
		"or truncated stream, another version, a lost connection), 2 on bad usage.\n");
}

static int parse(struct rcv_cfg *c, int argc, char **argv)
{
	struct cli_parser p;
	const char *val;
	uint64_t v;
	bool have_listen = false;
	int opt;

	*c = (struct rcv_cfg){ .ready_fd = -1, .run_ms = 200, .timeout_ms = 30000,
			       .checking = true, .page_shift = 14 };
	cli_parser_init(&p, "receive", argc, argv);
	while ((opt = cli_next(&p, opts, &val)) != CLI_OPT_END) {
		switch (opt) {
		case CLI_OPT_ERR:
			return CLI_EXIT_USAGE;
		case CLI_OPT_POS:
			return cli_usage_error("receive", "unexpected argument '%s'", val);
		case 1:
			usage(stdout);
			return -1;
		case 2:
			if (mig_parse_addr(val, true, c->host, &c->port))
				return cli_usage_error("receive", "--listen wants [ADDR:]PORT, not '%s'", val);
			have_listen = true;
			break;
		case 3:
			if (!cli_parse_u64(val, &v) || v > 1024)
				return cli_usage_error("receive", "--ready-fd wants a descriptor, not '%s'", val);
			c->ready_fd = (int)v;
			break;
		case 4:
			if (!cli_parse_u64(val, &v) || v > 600000)
				return cli_usage_error("receive", "--run-ms wants 0..600000, not '%s'", val);
			c->run_ms = (unsigned)v;
			break;
		case 5:
			if (!cli_parse_u64(val, &v) || !v || v > 3600)
				return cli_usage_error("receive", "--timeout wants 1..3600 seconds, not '%s'", val);
			c->timeout_ms = (int)v * 1000;
			break;
		case 6:
			c->checking = false;
			break;
		case 7:
			c->quiet = true;
			break;
		case 8:
			if (!cli_parse_size(val, &c->prealloc) || !c->prealloc || c->prealloc > (64ULL << 30))
				return cli_usage_error("receive", "--prealloc wants a size up to 64G, not '%s'", val);
			break;
		case 9:
			if (!cli_parse_u64(val, &v) || (v != 12 && v != 14 && v != 16))
				return cli_usage_error("receive", "--page-shift wants 12, 14 or 16, not '%s'", val);
			c->page_shift = (unsigned)v;
			break;
		}
	}
	if (!have_listen)
		return cli_usage_error("receive", "--listen [ADDR:]PORT is required");
	return 0;
}

static int fail(struct rcv *d, const char *fmt, const char *detail)
{
	fprintf(stderr, "gpamm receive: ");
	fprintf(stderr, fmt, detail);
	fputc('\n', stderr);
	(void)d;
	return -1;
}

/* A read failure, said plainly. */
static int read_fail(struct rcv *d, struct mig_reader *r, int e, const char *what)
{
	char msg[300];

	if (e == -EPROTO)
		snprintf(msg, sizeof(msg), "rejected the stream (%s): %s", what, r->err);
	else if (e == -ENODATA || e == -EPIPE || e == -ECONNRESET)
		snprintf(msg, sizeof(msg), "the source went away (%s): %s", what,
			 e == -EPIPE ? "stream truncated inside a record" : strerror(-e));
	else
		snprintf(msg, sizeof(msg), "%s: %s", what, strerror(-e));
	return fail(d, "%s", msg);
}

static bool test_bit8(_Atomic uint8_t *map, uint64_t i)
{
	return atomic_load_explicit(&map[i], memory_order_acquire);
}

/* ---- pages ---------------------------------------------------------------------- */

/* Place page @idx (NULL data: a zero page). Before the switchover the
 * guest is stopped and pages are written over; after it, a page is placed
 * once (the received-map keeps the background stream off pages a request
 * brought). */
static int place(struct rcv *d, uint64_t idx, const uint8_t *data)
{
	const uint64_t hva = d->vm.hva + idx * d->vm.psz;
	int r;

	if (idx >= d->vm.npages)
		return -ERANGE;
	if (!d->postcopy) {
		if (data)
			r = gpamm_sim_write(d->vm.host, hva, data, d->vm.psz);
		else if (test_bit8(d->received, idx) || gpamm_sim_page_present(d->vm.host, hva) > 0)
			r = gpamm_sim_write(d->vm.host, hva, d->zero, d->vm.psz); /* was sent non-zero */
		else
			r = 0; /* untouched memory reads as zeros */
		if (r)
			return r;
		if (!test_bit8(d->received, idx))
			d->nreceived++;
		atomic_store_explicit(&d->received[idx], 1, memory_order_release);
		return 0;
	}
	if (test_bit8(d->received, idx))
		return 0;
	r = gpamm_sim_place_page(d->vm.host, hva, data ? data : d->zero);
	if (r && r != -EEXIST)
		return r;
	pthread_mutex_lock(&d->lock);
	if (!test_bit8(d->received, idx))
		d->nreceived++;
	atomic_store_explicit(&d->received[idx], 1, memory_order_release);
	pthread_cond_broadcast(&d->placed);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static int on_page(void *arg, uint32_t slot, uint64_t index, const uint8_t *data)
{
	struct rcv *d = arg;

	if (slot != 0)
		return -ERANGE;
	if (!data)
		d->zero_pages++;
	return place(d, index, data);
}

/*
 * The sim host's missing-page handler, on a faulting vCPU's thread, no host
 * lock held: ask the source once, wait until the page is placed.
 */
static int missing(void *arg, uint64_t hva, bool write)
{
	struct rcv *d = arg;
	uint64_t idx = (hva - d->vm.hva) / d->vm.psz, t0 = mig_now_ns();
	int r = 0;

	(void)write;
	if (idx >= d->vm.npages)
		return -EFAULT;
	if (test_bit8(d->received, idx)) {
		/* a zero page, known but never made present */
		r = gpamm_sim_place_page(d->vm.host, hva, d->zero);
		return r == -EEXIST ? 0 : r;
	}
	pthread_mutex_lock(&d->lock);
	if (!test_bit8(d->requested, idx)) {
		struct mig_req q = { .slot = 0, .index = idx };

		atomic_store(&d->requested[idx], 1);
		d->nreq++;
		/* with the channel down the request waits for the reconnect, which asks again */
		if (!atomic_load(&d->pc_dead) && mig_write_req(&d->reqw, &q))
			atomic_store(&d->pc_dead, 1);
	}
	/* a lost channel pauses the faulting vCPU here (post-copy cannot go back) */
	while (!test_bit8(d->received, idx))
		pthread_cond_wait(&d->placed, &d->lock);
	if (d->nlat < d->caplat)
		d->lat[d->nlat++] = mig_now_ns() - t0;
	pthread_mutex_unlock(&d->lock);
	return 0;
}

/* The post-copy channel: pages asked for, placed ahead of the background stream. */
static void *pc_thread(void *arg)
{
	struct rcv *d = arg;

	for (;;) {
		uint32_t slot;
		uint64_t idx;
		const uint8_t *data;
		int r = mig_read_record(&d->pcrd);

		if (r)
			break;
		if (d->pcrd.type != MIG_PAGE || mig_decode_page(&d->pcrd, &slot, &idx, &data) ||
		    slot != 0 || place(d, idx, data)) {
			snprintf(d->pc_err, sizeof(d->pc_err), "bad record on the post-copy channel: %s",
				 d->pcrd.err[0] ? d->pcrd.err : "unexpected type or page");
			atomic_store(&d->pc_bad, 1);
			break;
		}
	}
	atomic_store(&d->pc_dead, 1);
	return NULL;
}

/* ---- the switchover ------------------------------------------------------------ */

static int build_vm(struct rcv *d)
{
	struct mig_vm_cfg vc = {
		.page_shift = d->cfg.page_shift, .levels = d->cfg.levels, .vcpus = d->cfg.vcpus,
		.checking = d->c.checking,
	};
	int r;

	if (d->cfg.nslots != 1 || d->cfg.slots[0].slot != 0 || !d->cfg.vcpus ||
	    d->cfg.vcpus > 64 || d->cfg.slots[0].size >> d->cfg.page_shift == 0)
		return fail(d, "%s", "unsupported configuration (one slot 0 and 1..64 vCPUs)");
	vc.mem = d->cfg.slots[0].size;
	vc.gpa = d->cfg.slots[0].gpa;
	if (d->prehost && d->c.page_shift == d->cfg.page_shift && d->c.prealloc >= vc.mem) {
		vc.host = d->prehost; /* the VM takes it */
		d->prehost = NULL;
	}
	r = mig_vm_create(&d->vm, &vc);
	if (r)
		return fail(d, "cannot build the VM: %s", strerror(-r));
	d->vm_up = true;
	d->received = calloc(d->vm.npages, 1);
	d->requested = calloc(d->vm.npages, 1);
	d->zero = calloc(1, d->vm.psz);
	d->caplat = d->vm.npages;
	d->lat = calloc(d->caplat, sizeof(*d->lat));
	if (!d->received || !d->requested || !d->zero || !d->lat)
		return fail(d, "%s", "out of memory");
	d->rd.page_size = (uint32_t)d->vm.psz;
	d->pcrd.page_size = (uint32_t)d->vm.psz;
	return 0;
}

static int load_states(struct rcv *d, const struct mig_switchover *s)
{
	if (s->nvcpus != d->cfg.vcpus)
		return fail(d, "%s", "the switchover's vCPU count differs from the configuration");
	for (uint32_t i = 0; i < s->nvcpus; i++) {
		const struct mig_vcpu_state *st = &s->vcpus[i];
		const char *why;

		if (st->id >= d->cfg.vcpus)
			return fail(d, "%s", "a vCPU state for a vCPU that does not exist");
		why = mig_guest_check_regs(&st->regs, st->id, d->cfg.vcpus, d->cfg.page_shift,
					   d->vm.npages, d->vm.c.gpa);
		if (why)
			return fail(d, "a vCPU state is not one the workload can run: %s", why);
		if (gpamm_vcpu_set_regs(d->vm.vcpu[st->id], &st->regs))
			return fail(d, "%s", "a vCPU state does not fit");
	}
	return 0;
}

static int resume(struct rcv *d)
{
	struct mig_ack a = { .what = MIG_ACK_RESUMED };
	int r = mig_vm_start(&d->vm);

	if (r)
		return fail(d, "cannot start the vCPUs: %s", strerror(-r));
	d->resume_ns = mig_now_ns();
	a.resume_ns = d->resume_ns;
	r = mig_write_ack(&d->ackw, &a);
	if (r)
		return fail(d, "cannot acknowledge the switchover: %s", strerror(-r));
	return 0;
}

/* Post-copy: drop what was dirtied since sent, then every page not here is missing. */
static int enter_postcopy(struct rcv *d, const struct mig_switchover *s)
{
	int r;

	for (uint64_t i = 0; i < s->ndiscard; i++) {
		uint64_t idx = s->discard[i];

		if (idx >= d->vm.npages)
			return fail(d, "%s", "a discarded page is outside guest memory");
		if (gpamm_sim_page_present(d->vm.host, d->vm.hva + idx * d->vm.psz) > 0 &&
		    gpamm_sim_madv_dontneed(d->vm.host, d->vm.hva + idx * d->vm.psz, d->vm.psz))
			return fail(d, "%s", "cannot discard a page");
		if (test_bit8(d->received, idx))
			d->nreceived--;
		atomic_store(&d->received[idx], 0);
	}
	d->postcopy = true;
	r = gpamm_sim_register_missing(d->vm.host, d->vm.hva, d->vm.c.mem, missing, d);
	if (r)
		return fail(d, "cannot register missing pages: %s", strerror(-r));
	if (pthread_create(&d->pc_th, NULL, pc_thread, d))
		return fail(d, "%s", "cannot start the post-copy reader");
	d->pc_th_on = true;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Stop the guest, hash memory, send ACK(done). */
static int finish(struct rcv *d, uint64_t *hash)
{
	struct mig_ack a = { .what = MIG_ACK_DONE };
	int r;

	r = mig_vm_pause(&d->vm);
	if (r)
		return fail(d, "%s", "a vCPU failed");
	mig_vm_join(&d->vm);
	a.nvcpus = d->cfg.vcpus;
	a.vcpus = calloc(a.nvcpus, sizeof(*a.vcpus));
	if (!a.vcpus)
		return fail(d, "%s", "out of memory");
	for (uint32_t i = 0; i < a.nvcpus; i++) {
		a.vcpus[i].id = i;
		gpamm_vcpu_get_regs(d->vm.vcpu[i], &a.vcpus[i].regs);
	}
	if (d->postcopy)
		gpamm_sim_unregister_missing(d->vm.host, d->vm.hva, d->vm.c.mem);
	r = mig_vm_hash(&d->vm, hash);
	if (r) {
		free(a.vcpus);
		return fail(d, "cannot read guest memory: %s", strerror(-r));
	}
	a.hash = *hash;
	a.writes = atomic_load(&d->vm.ctl.writes);
	pthread_mutex_lock(&d->lock);
	a.requests = d->nreq;
	if (d->nlat) {
		qsort(d->lat, d->nlat, sizeof(*d->lat), cmp_u64);
		a.req_p50_ns = d->lat[d->nlat / 2];
		a.req_p99_ns = d->lat[(d->nlat * 99) / 100 < d->nlat ? (d->nlat * 99) / 100 : d->nlat - 1];
	}
	pthread_mutex_unlock(&d->lock);
	r = mig_write_ack(&d->ackw, &a);
	free(a.vcpus);
	if (r)
		return fail(d, "cannot send the final acknowledge: %s", strerror(-r));
	if (!d->c.quiet)
		fprintf(stderr, "gpamm receive: done: %" PRIu64 " pages received (%" PRIu64
			" zero), %" PRIu64 " post-copy requests; memory hash %016" PRIx64 "\n",
			d->nreceived, d->zero_pages, a.requests, *hash);
	return 0;
}

/* ---- the stream --------------------------------------------------------------------- */

static int accept_channel(struct rcv *d, struct mig_conn *c, struct mig_reader *rd,
			  unsigned want, bool again, int wait_ms)
{
	struct mig_hello h;
	int r = mig_accept(d->lfd, wait_ms, c);

	if (r)
		return fail(d, "no source connected: %s", strerror(-r));
	c->timeout_ms = d->c.timeout_ms;
	if (mig_reader_init(rd, c))
		return fail(d, "%s", "out of memory");
	r = mig_read_record(rd);
	if (r)
		return read_fail(d, rd, r, "hello");
	if (rd->type != MIG_HELLO) {
		snprintf(rd->err, sizeof(rd->err), "record 1: expected HELLO, got type %u", rd->type);
		return read_fail(d, rd, -EPROTO, "hello");
	}
	r = mig_decode_hello(rd, &h);
	if (r)
		return read_fail(d, rd, r, "hello");
	if (h.channel != want || ((want == MIG_CH_POSTCOPY || again) && h.session != d->session)) {
		snprintf(rd->err, sizeof(rd->err), "HELLO for channel %u session %" PRIx64
			 ", expected channel %u", h.channel, h.session, want);
		return read_fail(d, rd, -EPROTO, "hello");
	}
	d->session = h.session;
	if (d->vm_up)
		rd->page_size = (uint32_t)d->vm.psz; /* no CONFIG on this connection */
	return 0;
}

/*
 * Post-copy recovery, the destination's half: the source went away after
 * the switchover. The vCPUs waiting for pages go on waiting (their requests
 * are kept); the listener takes the source's new connections (the same
 * session), acknowledges the resume again (with its first time), sends
 * what it has (RECVMAP), asks again for every page still waited for, and
 * the stream goes on.
 */
static int postcopy_reconnect(struct rcv *d)
{
	const int wait_ms = d->c.timeout_ms * 4;
	struct mig_ack a = { .what = MIG_ACK_RESUMED };
	uint8_t *bits;
	int r;

	fprintf(stderr, "gpamm receive: post-copy paused: the source went away; the vCPUs that "
		"wait for pages wait; waiting %d s for it to reconnect\n", wait_ms / 1000);
	if (d->pc.fd >= 0)
		shutdown(d->pc.fd, SHUT_RDWR);
	if (d->pc_th_on)
		pthread_join(d->pc_th, NULL);
	d->pc_th_on = false;
	pthread_mutex_lock(&d->lock);
	atomic_store(&d->pc_dead, 1);
	mig_writer_free(&d->reqw);
	pthread_mutex_unlock(&d->lock);
	mig_close(&d->main);
	mig_close(&d->pc);
	mig_reader_free(&d->rd);
	mig_reader_free(&d->pcrd);
	mig_writer_free(&d->ackw);
	if (accept_channel(d, &d->main, &d->rd, MIG_CH_MAIN, true, wait_ms) ||
	    accept_channel(d, &d->pc, &d->pcrd, MIG_CH_POSTCOPY, true, wait_ms))
		return -1;
	if (mig_writer_init(&d->ackw, &d->main, (uint32_t)d->vm.psz))
		return fail(d, "%s", "out of memory");
	a.resume_ns = d->resume_ns;
	bits = calloc((d->vm.npages + 7) / 8, 1);
	if (!bits)
		return fail(d, "%s", "out of memory");
	for (uint64_t i = 0; i < d->vm.npages; i++)
		if (test_bit8(d->received, i))
			bits[i / 8] |= (uint8_t)(1u << (i % 8));
	r = mig_write_ack(&d->ackw, &a);
	if (!r)
		r = mig_write_recvmap(&d->ackw, d->vm.npages, bits);
	free(bits);
	if (r)
		return fail(d, "cannot answer the reconnected source: %s", strerror(-r));
	pthread_mutex_lock(&d->lock);
	r = mig_writer_init(&d->reqw, &d->pc, (uint32_t)d->vm.psz);
	for (uint64_t i = 0; !r && i < d->vm.npages; i++) {
		if (test_bit8(d->requested, i) && !test_bit8(d->received, i)) {
			struct mig_req q = { .slot = 0, .index = i };
			r = mig_write_req(&d->reqw, &q);
		}
	}
	if (!r)
		atomic_store(&d->pc_dead, 0);
	pthread_mutex_unlock(&d->lock);
	if (r)
		return fail(d, "cannot ask for pages again: %s", strerror(-r));
	if (pthread_create(&d->pc_th, NULL, pc_thread, d))
		return fail(d, "%s", "cannot start the post-copy reader");
	d->pc_th_on = true;
	if (!d->c.quiet)
		fprintf(stderr, "gpamm receive: post-copy resumed: the source reconnected\n");
	return 0;
}

static int receive(struct rcv *d)
{
	struct mig_switchover sw = { 0 };
	bool have_sw = false, have_end = false;
	uint64_t hash = 0;
	int r;

	if (accept_channel(d, &d->main, &d->rd, MIG_CH_MAIN, false, d->c.timeout_ms) ||
	    accept_channel(d, &d->pc, &d->pcrd, MIG_CH_POSTCOPY, false, d->c.timeout_ms))
		return -1;
	if (mig_writer_init(&d->ackw, &d->main, 0) || mig_writer_init(&d->reqw, &d->pc, 0))
		return fail(d, "%s", "out of memory");
	r = mig_read_record(&d->rd);
	if (r)
		return read_fail(d, &d->rd, r, "configuration");
	if (d->rd.type != MIG_CONFIG) {
		snprintf(d->rd.err, sizeof(d->rd.err), "record %" PRIu64 ": expected CONFIG, got type %u",
			 d->rd.records, d->rd.type);
		return read_fail(d, &d->rd, -EPROTO, "configuration");
	}
	r = mig_decode_config(&d->rd, &d->cfg);
	if (r)
		return read_fail(d, &d->rd, r, "configuration");
	if (build_vm(d))
		return -1;
	d->ackw.page_size = d->reqw.page_size = (uint32_t)d->vm.psz;
	while (!have_end) {
		r = mig_read_record(&d->rd);
		if (atomic_load(&d->pc_bad))
			return fail(d, "%s", d->pc_err);
		if (r && d->postcopy && r != -EPROTO) {
			/* neither side has the whole guest: wait for the source to come back */
			if (postcopy_reconnect(d))
				return -1;
			continue;
		}
		if (r)
			return read_fail(d, &d->rd, r, have_sw ? "after the switchover" : "pre-copy");
		switch (d->rd.type) {
		case MIG_PAGES:
			r = mig_decode_pages(&d->rd, on_page, d);
			if (r == -EPROTO)
				return read_fail(d, &d->rd, r, "pages");
			if (r)
				return fail(d, "cannot place a page: %s", strerror(r < 0 ? -r : r));
			break;
		case MIG_ROUND:
			break;
		case MIG_SWITCHOVER:
			if (have_sw)
				return fail(d, "%s", "a second switchover");
			r = mig_decode_switchover(&d->rd, &sw);
			if (r)
				return read_fail(d, &d->rd, r, "switchover");
			have_sw = true;
			if (load_states(d, &sw))
				return -1;
			if (sw.postcopy && (enter_postcopy(d, &sw) || resume(d)))
				return -1;
			break;
		case MIG_END: {
			struct mig_end e;

			if (!have_sw)
				return fail(d, "%s", "the stream ended before the switchover");
			r = mig_decode_end(&d->rd, &e);
			if (r)
				return read_fail(d, &d->rd, r, "end");
			have_end = true;
			break;
		}
		default:
			snprintf(d->rd.err, sizeof(d->rd.err), "record %" PRIu64 ": type %u out of place",
				 d->rd.records, d->rd.type);
			return read_fail(d, &d->rd, -EPROTO, "stream");
		}
	}
	if (!sw.postcopy && resume(d))
		goto out;
	if (sw.postcopy) {
		/* END says the source sent everything: every page must come (requests
		 * still in flight may land a moment later), or the stream lied */
		uint64_t t0 = mig_now_ns();

		for (;;) {
			uint64_t have;

			pthread_mutex_lock(&d->lock);
			have = d->nreceived;
			pthread_mutex_unlock(&d->lock);
			if (atomic_load(&d->pc_bad)) {
				r = fail(d, "%s", d->pc_err);
				goto out;
			}
			if (have == d->vm.npages)
				break;
			if (mig_now_ns() - t0 > (uint64_t)d->c.timeout_ms * 1000000ULL) {
				char msg[96];

				snprintf(msg, sizeof(msg), "%" PRIu64 " of %" PRIu64 " pages never came",
					 d->vm.npages - have, d->vm.npages);
				r = fail(d, "the stream ended in post-copy with pages missing: %s", msg);
				goto out;
			}
			usleep(1000);
		}
	}
	/* the guest runs on the destination; in post-copy every page is here by now */
	while (mig_now_ns() - d->resume_ns < (uint64_t)d->c.run_ms * 1000000ULL)
		usleep(1000);
	r = finish(d, &hash);
out:
	free(sw.vcpus);
	free(sw.discard);
	return r ? -1 : 0;
}

static int run(int argc, char **argv)
{
	struct rcv *d = calloc(1, sizeof(*d));
	uint16_t bound = 0;
	int r, ret = CLI_EXIT_FAIL;

	if (!d)
		return CLI_EXIT_FAIL;
	r = parse(&d->c, argc, argv);
	if (r) {
		free(d);
		return r < 0 ? CLI_EXIT_OK : r;
	}
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->placed, NULL);
	d->main.fd = d->pc.fd = -1;
	if (d->c.prealloc) {
		d->prehost = mig_vm_host(d->c.page_shift, d->c.prealloc, d->c.checking, true);
		if (!d->prehost) {
			fprintf(stderr, "gpamm receive: cannot preallocate %" PRIu64 " bytes\n", d->c.prealloc);
			free(d);
			return CLI_EXIT_FAIL;
		}
	}
	d->lfd = mig_listen(d->c.host, d->c.port, &bound);
	if (d->lfd < 0) {
		fprintf(stderr, "gpamm receive: cannot listen on %s:%u: %s\n", d->c.host, d->c.port,
			strerror(-d->lfd));
		free(d);
		return CLI_EXIT_FAIL;
	}
	if (d->c.ready_fd >= 0) {
		char line[16];
		int n = snprintf(line, sizeof(line), "%u\n", bound);

		if (write(d->c.ready_fd, line, (size_t)n) != n)
			fprintf(stderr, "gpamm receive: cannot report the port\n");
		close(d->c.ready_fd);
	} else if (!d->c.quiet) {
		fprintf(stderr, "gpamm receive: listening on %s:%u\n", d->c.host, bound);
	}
	if (!receive(d))
		ret = CLI_EXIT_OK;
	else if (d->postcopy) {
		/* neither side has the whole guest: the vCPUs waiting for pages stay
		 * where they are; this process ends without them */
		fprintf(stderr, "gpamm receive: post-copy interrupted: the guest's vCPUs were paused\n");
		fflush(NULL);
		/* the threads that may wait for pages for good end with the process */
		if (d->pc_th_on)
			pthread_detach(d->pc_th);
		for (unsigned i = 0; d->vm.started && i < d->vm.c.vcpus; i++)
			pthread_detach(d->vm.th[i]);
		_exit(CLI_EXIT_FAIL);
	}
	close(d->lfd);
	if (d->pc.fd >= 0)
		shutdown(d->pc.fd, SHUT_RDWR); /* the post-copy reader returns */
	if (d->pc_th_on)
		pthread_join(d->pc_th, NULL); /* before its descriptor goes */
	mig_close(&d->main);
	mig_close(&d->pc);
	if (d->vm_up)
		mig_vm_destroy(&d->vm);
	if (d->prehost)
		gpamm_host_destroy(d->prehost);
	mig_reader_free(&d->rd);
	mig_reader_free(&d->pcrd);
	mig_writer_free(&d->ackw);
	mig_writer_free(&d->reqw);
	free(d->cfg.slots);
	free((void *)d->received);
	free((void *)d->requested);
	free(d->zero);
	free(d->lat);
	free(d);
	return ret;
}

const struct cli_cmd cli_cmd_receive = {
	"receive", "the destination of a live migration: listen, receive, resume the guest",
	run, usage,
};
