// SPDX-License-Identifier: MIT
/*
 * gpamm migrate - the main job: a running guest live-migrated to another
 * process over TCP (docs/migration.md).
 *
 * The source VM runs the migration workload (mig/guest.h) on the sim host,
 * which checks every access and meanwhile reclaims and migrates pages.
 * Logging goes on, the first pass sends every page, then pre-copy rounds
 * send what the dirty log reports (manual GET + CLEAR in chunks, classic
 * GET, or rings), until the dirty bytes left fit the downtime limit at the
 * measured bandwidth (auto-converge throttles the vCPUs when they dirty
 * faster than the link drains). Then the switchover: vCPUs out of guest
 * mode, the last pages, the vCPU states; the destination resumes and
 * acknowledges, and the downtime is its resume time minus the first stop.
 * With --postcopy the switchover comes early and the destination pulls
 * the pages it faults on. At the end the destination's memory hash is
 * compared with the source's image plus the writes its vCPUs made there.
 *
 * Without --to, a destination process (gpamm receive) is started on the
 * loopback, on an ephemeral port.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "cli.h"
#include "gpamm/gpamm.h"
#include "mig/baseline.h"
#include "mig/guest.h"
#include "mig/net.h"
#include "mig/stream.h"
#include "mig/vmside.h"

#define MAX_ROUNDS 1000
#define CLEAR_CHUNK_BYTES (256u << 10) /* QEMU's clear-bitmap-shift default: 256 KiB */

struct src_cfg {
	unsigned vcpus, page_shift, levels, max_rounds, hot_pct, hot_writes, run_ms;
	uint64_t mem, rate, seed, max_bw;
	double downtime_ms;
	enum mig_log_mode mode;
	bool checking, host_events, json, auto_converge, postcopy, have_to, inject_drop, baseline;
	unsigned postcopy_pct;  /* of the first pass sent before a post-copy switchover */
	int postcopy_after;     /* pre-copy rounds before it (-1: during the first pass) */
	const char *plot, *control, *resume;
	uint64_t inject_pc_drop; /* tests: drop both connections after this many background pages */
	char to_host[64];
	uint16_t to_port;
	int timeout_ms;
};

struct round_stat {
	uint64_t pages, zero_pages, bytes;
	double seconds, dirty_rate; /* pages dirtied per second, measured at this round's sync */
	int throttle;
	bool postcopy;              /* the background stream after a post-copy switchover */
};

struct src {
	struct src_cfg c;
	struct mig_vm vm;
	pthread_t host_th;
	bool host_th_on;
	atomic_int host_stop;
	uint64_t host_reclaimed, host_migrated;
	pid_t child;
	struct mig_conn main, pc;
	struct mig_writer w, pw;
	struct mig_reader ackr, reqr;
	uint64_t session, *bitmap, *tmp;
	uint32_t *ring_fetch; /* per vCPU: the next ring entry to harvest */
	uint8_t *sent, *buf;
	struct round_stat rounds[MAX_ROUNDS + 3];
	unsigned nrounds;
	struct mig_vcpu_state *states;
	/* auto-converge */
	int throttle, high_cnt;
	/* the switchover */
	uint64_t stop_ns, resume_ns, memory_hash;
	double downtime_ms, total_s, copy_write_rate;
	double mig_s; /* logging on to the destination's acknowledge of the resume */
	bool switched, acked, dropped_one;
	/* post-copy page server */
	pthread_t ps_th;
	bool ps_on;
	atomic_uint_fast64_t served;
	struct mig_ack done;
	uint64_t expect_hash;
	int64_t replayed;
	const char *failure;
	char why[240];
	struct mig_baseline base;
	/* post-copy recovery */
	uint8_t *need;      /* pages the destination still needs (background stream) */
	uint64_t bg_sent;   /* background pages sent on this connection */
	unsigned recoveries;
	int ctl_fd;         /* the --resume client, told the outcome at the end */
	char ctl_path[108];
	uint64_t unsent_at_resume; /* pages not sent when the destination resumed (post-copy) */
};

static const struct cli_opt opts[] = {
	{ "help", false, 1, 'h' },
	{ "vcpus", true, 2, 'v' },
	{ "mem", true, 3, 'm' },
	{ "page-shift", true, 4, 0 },
	{ "levels", true, 5, 0 },
	{ "rate", true, 6, 0 },
	{ "hot", true, 7, 0 },
	{ "hot-writes", true, 8, 0 },
	{ "mode", true, 9, 0 },
	{ "max-rounds", true, 10, 0 },
	{ "downtime-limit", true, 11, 0 },
	{ "max-bandwidth", true, 12, 0 },
	{ "no-checking", false, 13, 0 },
	{ "no-host-events", false, 14, 0 },
	{ "json", false, 15, 0 },
	{ "plot", true, 16, 0 },
	{ "seed", true, 17, 's' },
	{ "to", true, 18, 0 },
	{ "postcopy", false, 19, 0 },
	{ "postcopy-at", true, 20, 0 },
	{ "postcopy-after", true, 21, 0 },
	{ "no-auto-converge", false, 22, 0 },
	{ "run-ms", true, 23, 0 },
	{ "timeout", true, 24, 0 },
	{ "inject-drop-page", false, 25, 0 },
	{ "baseline", false, 26, 0 },
	{ "control", true, 27, 0 },
	{ "resume", true, 28, 0 },
	{ "inject-postcopy-drop", true, 29, 0 },
	{ NULL, false, 0, 0 },
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm migrate [options]\n"
		"\n"
		"Live-migrate a running guest to another process over TCP and check the\n"
		"result (docs/migration.md). Without --to, a destination is started on the\n"
		"loopback (gpamm receive, an ephemeral port).\n"
		"\n"
		"  -v, --vcpus N             vCPU threads writing (default 2)\n"
		"  -m, --mem SIZE            guest memory, K/M/G suffixes (default 1G)\n"
		"      --page-shift N        12, 14 or 16 (default 14)\n"
		"      --levels N            table levels (default 3)\n"
		"      --rate N              writes per second per vCPU, 0 = as fast as it goes\n"
		"                            (default 20000)\n"
		"      --hot PCT             percent of pages in the hot set (default 1)\n"
		"      --hot-writes PCT      percent of writes to the hot set (default 90)\n"
		"      --mode MODE           manual (GET + CLEAR in chunks, default), classic\n"
		"                            (GET clears) or ring (per-vCPU dirty rings)\n"
		"      --max-rounds N        pre-copy rounds at most, then the switchover (default 30)\n"
		"      --downtime-limit MS   switch over when the dirty bytes left / bandwidth fit\n"
		"                            (default 300, QEMU's)\n"
		"      --max-bandwidth SIZE  cap the sending rate, bytes/s with K/M/G (default none)\n"
		"      --no-auto-converge    never throttle the vCPUs\n"
		"      --postcopy            switch over early; the destination pulls missing pages\n"
		"      --postcopy-at PCT     ... once PCT%% of the first pass is sent (default 0)\n"
		"      --postcopy-after N    ... after N pre-copy rounds instead\n"
		"      --to ADDR:PORT        the destination (a running 'gpamm receive')\n"
		"      --run-ms N            how long the destination runs the guest (default 200)\n"
		"      --timeout S           network timeout in seconds (default 30)\n"
		"      --no-checking         sim hosts without per-access checks (faster)\n"
		"      --no-host-events      no reclaim or page migration during the run\n"
		"      --json                the report as JSON on stdout\n"
		"      --plot FILE.svg       pages and dirty rate per round (needs gnuplot)\n"
		"  -s, --seed N              workload seed (default: from the clock, printed)\n"
		"      --baseline            first measure a plain memcpy and a plain TCP send of the\n"
		"                            guest's size, and judge the run's targets against them\n"
		"      --control PATH        where a paused post-copy waits for --resume (default\n"
		"                            /tmp/gpamm-migrate-PID.sock)\n"
		"      --resume PATH         tell the paused source at PATH to reconnect (to --to if\n"
		"                            given) and finish; exits with its verdict\n"
		"      --inject-drop-page    (tests) leave one dirty page out: the verdict must fail\n"
		"      --inject-postcopy-drop N  (tests) drop the connections after N post-copy pages\n"
		"\n"
		"Progress goes to stderr, one line per round; the report to stdout.\n"
		"Exit status: 0 when the destination's memory is exact, 1 when not or when\n"
		"the migration failed (the guest then goes on at the source), 2 on bad usage.\n");
}

static bool parse_double(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return !errno && end != s && !*end && *out > 0 && isfinite(*out);
}

static int parse(struct src_cfg *c, int argc, char **argv)
{
	struct cli_parser p;
	const char *val;
	uint64_t v;
	int opt;

	*c = (struct src_cfg){
		.vcpus = 2, .page_shift = 14, .levels = 3, .max_rounds = 30, .mem = 1ULL << 30,
		.rate = 20000, .hot_pct = 1, .hot_writes = 90, .downtime_ms = 300,
		.mode = MIG_LOG_MANUAL, .checking = true, .host_events = true,
		.auto_converge = true, .postcopy_after = -1, .run_ms = 200, .timeout_ms = 30000,
	};
	cli_parser_init(&p, "migrate", argc, argv);
	while ((opt = cli_next(&p, opts, &val)) != CLI_OPT_END) {
		switch (opt) {
		case CLI_OPT_ERR:
			return CLI_EXIT_USAGE;
		case CLI_OPT_POS:
			return cli_usage_error("migrate", "unexpected argument '%s'", val);
		case 1:
			usage(stdout);
			return -1;
		case 2:
			if (!cli_parse_u64(val, &v) || !v || v > 64)
				return cli_usage_error("migrate", "--vcpus wants 1..64, not '%s'", val);
			c->vcpus = (unsigned)v;
			break;
		case 3:
			if (!cli_parse_size(val, &c->mem) || !c->mem || c->mem > (64ULL << 30))
				return cli_usage_error("migrate", "--mem wants a size up to 64G, like 256M or 1G, not '%s'", val);
			break;
		case 4:
			if (!cli_parse_u64(val, &v) || (v != 12 && v != 14 && v != 16))
				return cli_usage_error("migrate", "--page-shift wants 12, 14 or 16, not '%s'", val);
			c->page_shift = (unsigned)v;
			break;
		case 5:
			if (!cli_parse_u64(val, &v) || v < 2 || v > 4)
				return cli_usage_error("migrate", "--levels wants 2, 3 or 4, not '%s'", val);
			c->levels = (unsigned)v;
			break;
		case 6:
			if (!cli_parse_u64(val, &c->rate))
				return cli_usage_error("migrate", "--rate wants a number, not '%s'", val);
			break;
		case 7:
		case 8:
			if (!cli_parse_u64(val, &v) || v > 100)
				return cli_usage_error("migrate", "--%s wants a percentage, not '%s'",
						       opt == 7 ? "hot" : "hot-writes", val);
			if (opt == 7)
				c->hot_pct = (unsigned)v;
			else
				c->hot_writes = (unsigned)v;
			break;
		case 9:
			if (!strcmp(val, "manual"))
				c->mode = MIG_LOG_MANUAL;
			else if (!strcmp(val, "classic"))
				c->mode = MIG_LOG_CLASSIC;
			else if (!strcmp(val, "ring"))
				c->mode = MIG_LOG_RING;
			else
				return cli_usage_error("migrate", "--mode wants manual, classic or ring, not '%s'", val);
			break;
		case 10:
			if (!cli_parse_u64(val, &v) || !v || v > MAX_ROUNDS)
				return cli_usage_error("migrate", "--max-rounds wants 1..%d, not '%s'", MAX_ROUNDS, val);
			c->max_rounds = (unsigned)v;
			break;
		case 11:
			if (!parse_double(val, &c->downtime_ms))
				return cli_usage_error("migrate", "--downtime-limit wants milliseconds, not '%s'", val);
			break;
		case 12:
			if (!cli_parse_size(val, &c->max_bw) || !c->max_bw)
				return cli_usage_error("migrate", "--max-bandwidth wants bytes per second, like 100M, not '%s'", val);
			break;
		case 13:
			c->checking = false;
			break;
		case 14:
			c->host_events = false;
			break;
		case 15:
			c->json = true;
			break;
		case 16:
			c->plot = val;
			break;
		case 17:
			if (!cli_parse_u64(val, &c->seed))
				return cli_usage_error("migrate", "--seed wants a number, not '%s'", val);
			break;
		case 18:
			if (mig_parse_addr(val, false, c->to_host, &c->to_port) || !c->to_port)
				return cli_usage_error("migrate", "--to wants ADDR:PORT, not '%s'", val);
			c->have_to = true;
			break;
		case 19:
			c->postcopy = true;
			break;
		case 20:
			if (!cli_parse_u64(val, &v) || v > 100)
				return cli_usage_error("migrate", "--postcopy-at wants a percentage, not '%s'", val);
			c->postcopy_pct = (unsigned)v;
			c->postcopy = true;
			break;
		case 21:
			if (!cli_parse_u64(val, &v) || v > MAX_ROUNDS)
				return cli_usage_error("migrate", "--postcopy-after wants 0..%d rounds, not '%s'", MAX_ROUNDS, val);
			c->postcopy_after = (int)v;
			c->postcopy = true;
			break;
		case 22:
			c->auto_converge = false;
			break;
		case 23:
			if (!cli_parse_u64(val, &v) || v > 600000)
				return cli_usage_error("migrate", "--run-ms wants 0..600000, not '%s'", val);
			c->run_ms = (unsigned)v;
			break;
		case 24:
			if (!cli_parse_u64(val, &v) || !v || v > 3600)
				return cli_usage_error("migrate", "--timeout wants 1..3600 seconds, not '%s'", val);
			c->timeout_ms = (int)v * 1000;
			break;
		case 25:
			c->inject_drop = true;
			break;
		case 26:
			c->baseline = true;
			break;
		case 27:
			if (strlen(val) >= sizeof(((struct sockaddr_un *)0)->sun_path))
				return cli_usage_error("migrate", "--control wants a socket path shorter than %zu bytes",
						       sizeof(((struct sockaddr_un *)0)->sun_path));
			c->control = val;
			break;
		case 28:
			c->resume = val;
			break;
		case 29:
			if (!cli_parse_u64(val, &c->inject_pc_drop) || !c->inject_pc_drop)
				return cli_usage_error("migrate", "--inject-postcopy-drop wants a page count, not '%s'", val);
			c->postcopy = true;
			break;
		}
	}
	if (c->mem & ((1ULL << c->page_shift) - 1))
		return cli_usage_error("migrate", "--mem must be a multiple of the page size");
	if ((c->page_shift == 12) != (c->levels >= 3) && c->levels != 3)
		return cli_usage_error("migrate", "no %u-level layout with %u-byte pages",
				       c->levels, 1u << c->page_shift);
	if ((1ULL << c->page_shift) / 8 < c->vcpus)
		return cli_usage_error("migrate", "too many vCPUs for the words of a page");
	if (!c->seed)
		c->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
	return 0;
}

static const char *mode_name(enum mig_log_mode m)
{
	return m == MIG_LOG_MANUAL ? "manual" : m == MIG_LOG_CLASSIC ? "classic" : "ring";
}

static double now_s(void)
{
	return (double)mig_now_ns() * 1e-9;
}

static void progress(const struct src *s, const char *what, const struct round_stat *r,
		     unsigned round)
{
	static int tty = -1;

	if (s->c.json)
		return;
	if (tty < 0)
		tty = isatty(2);
	fprintf(stderr, "%s%-14s round %3u: %8" PRIu64 " pages, %7.1f MiB, %.3f s, throttle %d%%%s",
		tty ? "\r\033[K" : "", what, round, r->pages, (double)r->bytes / (1 << 20),
		r->seconds, r->throttle, tty ? "" : "\n");
	fflush(stderr);
}

/* ---- the host's own activity ---------------------------------------------------- */

static void *host_thread(void *arg)
{
	struct src *s = arg;
	struct mig_vm *m = &s->vm;
	uint64_t st = s->c.seed ^ 0x5bd1e995;
	const uint64_t chunk = 64;

	while (!atomic_load(&s->host_stop)) {
		uint64_t first = mig_xorshift(&st) % (m->npages - (m->npages > chunk ? chunk : 0) + 1);
		uint64_t len = (m->npages < chunk ? m->npages : chunk) * m->psz;
		int64_t r;

		if (mig_xorshift(&st) & 1) {
			r = gpamm_sim_reclaim(m->host, m->hva + first * m->psz, len, chunk);
			if (r > 0)
				s->host_reclaimed += (uint64_t)r;
		} else {
			r = gpamm_sim_migrate(m->host, m->hva + first * m->psz, len);
			if (r > 0)
				s->host_migrated += (uint64_t)r;
		}
		usleep(2000);
	}
	return NULL;
}

static void host_events_stop(struct src *s)
{
	atomic_store(&s->host_stop, 1);
	if (s->host_th_on)
		pthread_join(s->host_th, NULL);
	s->host_th_on = false;
}

/* ---- the destination process ---------------------------------------------------- */

static int spawn_destination(struct src *s)
{
	int pfd[2];
	char fdarg[16], runarg[16], tmo[16], mem[32], shift[8], line[32] = { 0 };
	size_t got = 0;

	if (pipe(pfd))
		return -errno;
	s->child = fork();
	if (s->child < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -errno;
	}
	if (!s->child) {
		close(pfd[0]);
		snprintf(fdarg, sizeof(fdarg), "%d", pfd[1]);
		snprintf(runarg, sizeof(runarg), "%u", s->c.run_ms);
		snprintf(tmo, sizeof(tmo), "%d", s->c.timeout_ms / 1000);
		snprintf(mem, sizeof(mem), "%" PRIu64, s->c.mem);
		snprintf(shift, sizeof(shift), "%u", s->c.page_shift);
		/* as QEMU's destination gets the same -m: its RAM exists before the stream */
		execl("/proc/self/exe", "gpamm", "receive", "--listen", "127.0.0.1:0",
		      "--ready-fd", fdarg, "--run-ms", runarg, "--timeout", tmo, "--quiet",
		      "--prealloc", mem, "--page-shift", shift,
		      s->c.checking ? NULL : "--no-checking", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	while (got < sizeof(line) - 1) {
		ssize_t n = read(pfd[0], line + got, sizeof(line) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(line, '\n', got))
			break;
	}
	close(pfd[0]);
	if (!memchr(line, '\n', got))
		return -ECHILD;
	snprintf(s->c.to_host, sizeof(s->c.to_host), "127.0.0.1");
	s->c.to_port = (uint16_t)strtoul(line, NULL, 10);
	return s->c.to_port ? 0 : -ECHILD;
}

/* ---- sending pages -------------------------------------------------------------- */

/* Read page @p straight into the PAGES batch (one copy) and commit it. */
static int send_page(struct src *s, uint64_t p)
{
	struct mig_vm *m = &s->vm;
	uint8_t *dst = mig_pages_reserve(&s->w, 0, p);
	int r;

	if (!dst)
		return -EIO;
	r = gpamm_sim_read(m->host, m->hva + p * m->psz, dst, m->psz);
	if (r)
		return r;
	s->sent[p] = 1;
	return mig_pages_commit(&s->w);
}

static int64_t set_bits(const uint64_t *b, uint64_t words)
{
	int64_t n = 0;

	for (uint64_t i = 0; i < words; i++)
		n += __builtin_popcountll(b[i]);
	return n;
}

/*
 * Sync the dirty log into s->bitmap (or-ed in: pages found before and not
 * sent yet stay set). Manual: GET only (the chunks are cleared when sent);
 * classic: GET write-protects as it collects; ring: harvest and reset.
 * Return: pages found dirty that were not set already, or -errno.
 */
static int64_t sync_dirty(struct src *s)
{
	struct mig_vm *m = &s->vm;
	const uint64_t words = (m->npages + 63) / 64;
	int r;

	if (s->c.mode == MIG_LOG_RING) {
		memset(s->tmp, 0, words * 8);
		for (unsigned i = 0; i < m->c.vcpus; i++) {
			uint32_t size;
			struct gpamm_dirty_gfn *g = gpamm_vcpu_dirty_ring(m->vcpu[i], &size);
			uint32_t f = s->ring_fetch[i];

			/*
			 * In push order from where the last harvest stopped, up to the
			 * first entry not pushed yet (as QEMU does): the reset frees
			 * entries in that order and stops at the first one not
			 * harvested, so a harvest must never mark one past a gap.
			 */
			for (uint32_t k = 0; k < size; k++, f++) {
				struct gpamm_dirty_gfn *e = &g[f & (size - 1)];
				uint32_t fl = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);

				if (!(fl & GPAMM_DIRTY_GFN_F_DIRTY) || (fl & GPAMM_DIRTY_GFN_F_RESET))
					break;
				if (e->offset < m->npages)
					s->tmp[e->offset / 64] |= 1ULL << (e->offset % 64);
				__atomic_store_n(&e->flags, fl | GPAMM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
			}
			s->ring_fetch[i] = f;
		}
		if (gpamm_vm_reset_dirty_rings(m->vm) < 0)
			return -EIO;
	} else {
		r = gpamm_vm_get_dirty_log(m->vm, 0, s->tmp);
		if (r)
			return r;
	}
	int64_t fresh = 0;

	for (uint64_t i = 0; i < words; i++) {
		fresh += __builtin_popcountll(s->tmp[i] & ~s->bitmap[i]);
		s->bitmap[i] |= s->tmp[i];
	}
	return fresh;
}

/* Send every page set in s->bitmap; in manual mode each chunk is cleared
 * (write-protected) before its pages are read. */
static int send_dirty(struct src *s, struct round_stat *rs)
{
	struct mig_vm *m = &s->vm;
	uint64_t chunk = CLEAR_CHUNK_BYTES / m->psz;

	chunk = (chunk + 63) & ~63ULL; /* CLEAR wants multiples of 64 pages */
	for (uint64_t first = 0; first < m->npages; first += chunk) {
		uint64_t n = m->npages - first < chunk ? m->npages - first : chunk, w0 = first / 64;
		uint64_t nw = (n + 63) / 64;
		bool any = false;
		int r;

		for (uint64_t k = 0; k < nw; k++)
			any |= s->bitmap[w0 + k] != 0;
		if (!any)
			continue;
		if (s->c.mode == MIG_LOG_MANUAL) {
			r = gpamm_vm_clear_dirty_log(m->vm, 0, first, n, &s->bitmap[w0]);
			if (r)
				return r;
		}
		for (uint64_t k = 0; k < nw; k++) {
			for (uint64_t bits = s->bitmap[w0 + k]; bits; bits &= bits - 1) {
				uint64_t p = (w0 + k) * 64 + (uint64_t)__builtin_ctzll(bits);

				if (s->c.inject_drop && !s->dropped_one) {
					s->dropped_one = true; /* the test's lost page */
					continue;
				}
				r = send_page(s, p);
				if (r)
					return r;
				rs->pages++;
			}
			s->bitmap[w0 + k] = 0;
		}
	}
	return mig_pages_flush(&s->w);
}

static void round_begin(struct src *s, uint64_t *bytes0, uint64_t *zero0, double *t0)
{
	*bytes0 = s->w.bytes;
	*zero0 = s->w.zero_pages;
	*t0 = now_s();
}

static int round_end(struct src *s, struct round_stat *rs, uint64_t bytes0, uint64_t zero0,
		     double t0, unsigned round)
{
	struct mig_round rec = { .round = round, .pages = rs->pages,
				 .dirty_rate = (uint64_t)rs->dirty_rate,
				 .throttle_pct = (uint32_t)s->throttle };

	rs->bytes = s->w.bytes - bytes0;
	rs->zero_pages = s->w.zero_pages - zero0;
	rs->seconds = now_s() - t0;
	rs->throttle = s->throttle;
	rec.zero_pages = rs->zero_pages;
	s->rounds[s->nrounds++] = *rs;
	progress(s, rs->postcopy ? "post-copy" : round ? "pre-copy" : "full copy", rs, round);
	return mig_write_round(&s->w, &rec);
}

/* Auto-converge (QEMU's): dirtied more than half of what was sent, twice in a row. */
static void maybe_throttle(struct src *s, uint64_t dirtied_bytes, uint64_t sent_bytes)
{
	if (!s->c.auto_converge || !(dirtied_bytes > sent_bytes / 2))
		return;
	if (++s->high_cnt < 2)
		return;
	s->high_cnt = 0;
	s->throttle = s->throttle ? (s->throttle + 10 > 99 ? 99 : s->throttle + 10) : 20;
	mig_vm_set_throttle(&s->vm, s->throttle);
}

/* ---- setup ---------------------------------------------------------------------- */

static int setup(struct src *s)
{
	struct mig_vm_cfg vc = {
		.page_shift = s->c.page_shift, .levels = s->c.levels, .vcpus = s->c.vcpus,
		.mem = s->c.mem, .gpa = 1ULL << 32, .checking = s->c.checking,
		.ring_size = s->c.mode == MIG_LOG_RING ? 4096 : 0,
		.manual_protect = s->c.mode == MIG_LOG_MANUAL,
		/* the host's RAM exists before the VM: no first touch of a frame
		 * (a page migration's target, say) inside the measured copy */
		.prefault = true,
	};
	struct mig_vm *m = &s->vm;
	int r = mig_vm_create(m, &vc);

	if (r)
		return r;
	s->bitmap = calloc((m->npages + 63) / 64, 8);
	s->tmp = calloc((m->npages + 63) / 64, 8);
	s->sent = calloc(m->npages, 1);
	s->buf = malloc(m->psz);
	s->states = calloc(s->c.vcpus, sizeof(*s->states));
	s->ring_fetch = calloc(s->c.vcpus, sizeof(*s->ring_fetch));
	if (!s->bitmap || !s->tmp || !s->sent || !s->buf || !s->states || !s->ring_fetch)
		return -ENOMEM;
	/* guest RAM starts full: every word non-zero, different per page */
	for (uint64_t p = 0; p < m->npages; p++) {
		uint64_t *w = (uint64_t *)s->buf;

		for (uint64_t i = 0; i < m->psz / 8; i++)
			w[i] = (p << 20 | i) * 0x9e3779b97f4a7c15ULL | 1;
		r = gpamm_sim_write(m->host, m->hva + p * m->psz, s->buf, m->psz);
		if (r)
			return r;
	}
	for (unsigned i = 0; i < s->c.vcpus; i++) {
		struct mig_guest_cfg gc = {
			.id = i, .nvcpus = s->c.vcpus, .page_shift = s->c.page_shift,
			.hot_pct = s->c.hot_pct, .hot_writes = s->c.hot_writes,
			.npages = m->npages, .gpa = vc.gpa, .rate = s->c.rate, .seed = s->c.seed,
		};
		struct gpamm_regs regs;

		mig_guest_init_regs(&regs, &gc);
		r = gpamm_vcpu_set_regs(m->vcpu[i], &regs);
		if (r)
			return r;
	}
	return 0;
}

static int connect_channels(struct src *s)
{
	struct mig_hello h = { .version = MIG_VERSION, .channel = MIG_CH_MAIN };
	struct mig_slot slot = { .slot = 0, .flags = 0, .gpa = s->vm.c.gpa, .size = s->c.mem };
	struct mig_config cfg = {
		.page_shift = s->c.page_shift, .levels = s->c.levels, .vcpus = s->c.vcpus,
		.log_mode = s->c.mode, .ring_size = s->vm.c.ring_size, .nslots = 1, .slots = &slot,
		.seed = s->c.seed, .hot_pct = s->c.hot_pct, .hot_writes = s->c.hot_writes,
		.rate = s->c.rate,
	};
	int r;

	s->session = s->c.seed * 0x9e3779b97f4a7c15ULL ^ mig_now_ns();
	h.session = s->session;
	r = mig_connect(s->c.to_host, s->c.to_port, s->c.timeout_ms, &s->main);
	if (r)
		return r;
	s->main.timeout_ms = s->c.timeout_ms;
	s->main.cap_bps = (double)s->c.max_bw;
	r = mig_writer_init(&s->w, &s->main, (uint32_t)s->vm.psz);
	if (!r)
		r = mig_reader_init(&s->ackr, &s->main);
	if (!r)
		r = mig_write_hello(&s->w, &h);
	if (r)
		return r;
	r = mig_connect(s->c.to_host, s->c.to_port, s->c.timeout_ms, &s->pc);
	if (r)
		return r;
	s->pc.timeout_ms = -1; /* the page server waits as long as the destination runs */
	h.channel = MIG_CH_POSTCOPY;
	r = mig_writer_init(&s->pw, &s->pc, (uint32_t)s->vm.psz);
	if (!r)
		r = mig_reader_init(&s->reqr, &s->pc);
	if (!r)
		r = mig_write_hello(&s->pw, &h);
	if (!r)
		r = mig_write_config(&s->w, &cfg);
	s->ackr.page_size = s->reqr.page_size = (uint32_t)s->vm.psz;
	return r;
}

static int set_logging(struct src *s, bool on)
{
	struct gpamm_userspace_memory_region reg = {
		.slot = 0, .flags = on ? GPAMM_MEM_LOG_DIRTY_PAGES : 0,
		.guest_phys_addr = s->vm.c.gpa, .memory_size = s->c.mem,
		.userspace_addr = s->vm.hva,
	};

	return gpamm_vm_set_memory_region(s->vm.vm, &reg);
}

/* ---- the post-copy page server -------------------------------------------------- */

static void *page_server(void *arg)
{
	struct src *s = arg;
	uint8_t *buf = malloc(s->vm.psz);

	while (buf) {
		struct mig_req q;
		int r = mig_read_record(&s->reqr);

		if (r || s->reqr.type != MIG_REQ || mig_decode_req(&s->reqr, &q) || q.slot ||
		    q.index >= s->vm.npages)
			break;
		/* the source's memory no longer changes: its vCPUs are stopped */
		if (gpamm_sim_read(s->vm.host, s->vm.hva + q.index * s->vm.psz, buf, s->vm.psz) ||
		    mig_write_page(&s->pw, 0, q.index, buf))
			break;
		atomic_fetch_add(&s->served, 1);
	}
	free(buf);
	return NULL;
}

/* ---- post-copy recovery ------------------------------------------------------------ */

static int wait_ack(struct src *s, unsigned what, struct mig_ack *a);

static void drop_connections(struct src *s)
{
	if (s->main.fd >= 0)
		shutdown(s->main.fd, SHUT_RDWR);
	if (s->pc.fd >= 0)
		shutdown(s->pc.fd, SHUT_RDWR);
	if (s->ps_on)
		pthread_join(s->ps_th, NULL);
	s->ps_on = false;
	mig_close(&s->main);
	mig_close(&s->pc);
	mig_writer_free(&s->w);
	mig_writer_free(&s->pw);
	mig_reader_free(&s->ackr);
	mig_reader_free(&s->reqr);
}

/*
 * The background stream after a post-copy switchover: every page the
 * destination still needs, then END. The page server answers requests on
 * the other channel meanwhile.
 */
static int postcopy_background(struct src *s, struct round_stat *rs)
{
	struct mig_end end = { 0 };
	int r;

	s->bg_sent = 0;
	for (uint64_t p = 0; p < s->vm.npages; p++) {
		if (!s->need[p])
			continue;
		if (s->c.inject_pc_drop && !s->recoveries && s->bg_sent == s->c.inject_pc_drop) {
			/* the test's cut cable: both connections go at once */
			shutdown(s->main.fd, SHUT_RDWR);
			shutdown(s->pc.fd, SHUT_RDWR);
		}
		r = send_page(s, p);
		if (r)
			return r;
		s->need[p] = 0;
		s->bg_sent++;
		rs->pages++;
	}
	r = mig_pages_flush(&s->w);
	if (!r)
		r = mig_write_end(&s->w, &end);
	return r;
}

/* Wait on the control socket for "resume [ADDR:PORT]"; 0 when told to go on. */
static int wait_for_resume(struct src *s)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	const int wait_ms = s->c.timeout_ms * 4;
	int lfd, fd = -1, r = -ETIMEDOUT;
	char line[128] = { 0 };
	struct pollfd p;

	if (s->c.control)
		snprintf(s->ctl_path, sizeof(s->ctl_path), "%s", s->c.control);
	else
		snprintf(s->ctl_path, sizeof(s->ctl_path), "/tmp/gpamm-migrate-%d.sock", (int)getpid());
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", s->ctl_path);
	unlink(s->ctl_path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1)) {
		r = -errno;
		close(lfd);
		return r;
	}
	fprintf(stderr, "\ngpamm migrate: post-copy paused (%s): this process keeps the guest's "
		"memory; resume with: gpamm migrate --resume %s\n", s->why, s->ctl_path);
	p = (struct pollfd){ .fd = lfd, .events = POLLIN };
	if (poll(&p, 1, wait_ms) == 1 && (fd = accept(lfd, NULL, NULL)) >= 0) {
		ssize_t n = read(fd, line, sizeof(line) - 1);

		if (n > 0 && !strncmp(line, "resume", 6)) {
			char *addr = line + 6, *nl = strchr(line, '\n');

			if (nl)
				*nl = 0;
			while (*addr == ' ')
				addr++;
			r = 0;
			if (*addr && mig_parse_addr(addr, false, s->c.to_host, &s->c.to_port))
				r = -EINVAL;
			if (!r && write(fd, "resuming\n", 9) != 9)
				r = -EIO;
		} else {
			r = -EINVAL;
		}
	}
	close(lfd);
	unlink(s->ctl_path);
	if (r) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	s->ctl_fd = fd;
	return 0;
}

/*
 * Post-copy recovery, the source's half (QEMU's postcopy-paused, then
 * migrate with resume=true): the connections are gone after the
 * switchover; neither side has the whole guest, and this process keeps
 * its memory until told to go on. Then it reconnects with the same
 * session, reads the destination's resume acknowledge and RECVMAP, and
 * the background stream goes on with what is missing there.
 */
static int postcopy_recover(struct src *s)
{
	struct mig_hello h = { .version = MIG_VERSION, .channel = MIG_CH_MAIN,
			       .session = s->session };
	struct mig_ack a;
	uint64_t n;
	const uint8_t *bits;
	int r;

	drop_connections(s);
	r = wait_for_resume(s);
	if (r) {
		snprintf(s->why, sizeof(s->why), "post-copy paused and not resumed: %s", strerror(-r));
		return r;
	}
	s->recoveries++;
	r = mig_connect(s->c.to_host, s->c.to_port, s->c.timeout_ms, &s->main);
	if (!r) {
		s->main.timeout_ms = s->c.timeout_ms;
		s->main.cap_bps = (double)s->c.max_bw;
		r = mig_writer_init(&s->w, &s->main, (uint32_t)s->vm.psz);
	}
	if (!r)
		r = mig_reader_init(&s->ackr, &s->main);
	if (!r)
		r = mig_write_hello(&s->w, &h);
	if (!r)
		r = mig_connect(s->c.to_host, s->c.to_port, s->c.timeout_ms, &s->pc);
	if (!r) {
		s->pc.timeout_ms = -1;
		h.channel = MIG_CH_POSTCOPY;
		r = mig_writer_init(&s->pw, &s->pc, (uint32_t)s->vm.psz);
	}
	if (!r)
		r = mig_reader_init(&s->reqr, &s->pc);
	if (!r)
		r = mig_write_hello(&s->pw, &h);
	if (r) {
		snprintf(s->why, sizeof(s->why), "cannot reconnect to %s:%u: %s", s->c.to_host,
			 s->c.to_port, strerror(-r));
		return r;
	}
	s->ackr.page_size = s->reqr.page_size = (uint32_t)s->vm.psz;
	r = wait_ack(s, MIG_ACK_RESUMED, &a);
	if (r)
		return r;
	if (!s->acked) {
		s->acked = true;
		s->resume_ns = a.resume_ns;
		s->downtime_ms = ((double)s->resume_ns - (double)s->stop_ns) * 1e-6;
	}
	r = mig_read_record(&s->ackr);
	if (!r && s->ackr.type != MIG_RECVMAP)
		r = -EPROTO;
	if (!r)
		r = mig_decode_recvmap(&s->ackr, &n, &bits);
	if (!r && n != s->vm.npages)
		r = -EPROTO;
	if (r) {
		snprintf(s->why, sizeof(s->why), "the reconnected destination did not say what it has");
		return r;
	}
	uint64_t have = 0;

	for (uint64_t p = 0; p < n; p++) {
		s->need[p] = !(bits[p / 8] >> (p % 8) & 1);
		have += !s->need[p];
	}
	if (pthread_create(&s->ps_th, NULL, page_server, s))
		return -EAGAIN;
	s->ps_on = true;
	fprintf(stderr, "gpamm migrate: post-copy resumed: the destination has %" PRIu64
		" of %" PRIu64 " pages\n", have, n);
	return 0;
}

/* ---- the switchover -------------------------------------------------------------- */

static int send_switchover(struct src *s, bool postcopy)
{
	struct mig_switchover sw = { .postcopy = postcopy, .nvcpus = s->c.vcpus,
				     .vcpus = s->states };
	uint64_t *discard = NULL, nd = 0;
	int r;

	for (unsigned i = 0; i < s->c.vcpus; i++) {
		s->states[i].id = i;
		r = gpamm_vcpu_get_regs(s->vm.vcpu[i], &s->states[i].regs);
		if (r)
			return r;
	}
	if (postcopy) {
		/* the pages sent once and dirtied since: the destination drops them */
		discard = malloc(s->vm.npages * sizeof(*discard));
		if (!discard)
			return -ENOMEM;
		for (uint64_t p = 0; p < s->vm.npages; p++)
			if (s->sent[p] && (s->bitmap[p / 64] >> (p % 64) & 1))
				discard[nd++] = p;
		sw.ndiscard = nd;
		sw.discard = discard;
	}
	r = mig_write_switchover(&s->w, &sw);
	free(discard);
	return r;
}

static int wait_ack(struct src *s, unsigned what, struct mig_ack *a)
{
	int r = mig_read_record(&s->ackr);

	if (r) {
		snprintf(s->why, sizeof(s->why), "waiting for the destination: %s",
			 r == -EPROTO ? s->ackr.err : strerror(-r));
		return r;
	}
	if (s->ackr.type != MIG_ACK || mig_decode_ack(&s->ackr, a) || a->what != what) {
		snprintf(s->why, sizeof(s->why), "the destination sent something else than the "
			 "acknowledge expected");
		return -EPROTO;
	}
	return 0;
}

static int put_word(void *arg, uint64_t gpa, uint64_t val)
{
	struct src *s = arg;

	return gpamm_sim_write(s->vm.host, s->vm.hva + (gpa - s->vm.c.gpa), &val, 8);
}

/* After ACK(done): the source's image plus the destination's writes must be its memory. */
static int verify(struct src *s)
{
	struct mig_ack *a = &s->done;

	uint64_t steps = 0;

	s->replayed = 0;
	if (a->nvcpus != s->c.vcpus)
		return -EPROTO;
	/*
	 * The replay's work is what the destination says its vCPUs did: the
	 * states must agree with the writes it counted (in steps of 256 per
	 * vCPU), so a wrong state cannot send this loop on for hours.
	 */
	for (uint32_t i = 0; i < a->nvcpus; i++) {
		uint32_t id = a->vcpus[i].id;

		if (id >= s->c.vcpus ||
		    a->vcpus[i].regs.gpr[MG_R_STEP] < s->states[id].regs.gpr[MG_R_STEP])
			return -EPROTO;
		steps += a->vcpus[i].regs.gpr[MG_R_STEP] - s->states[id].regs.gpr[MG_R_STEP];
	}
	if (steps > a->writes + 256ULL * a->nvcpus || steps + 256ULL * a->nvcpus < a->writes) {
		snprintf(s->why, sizeof(s->why), "the destination's vCPU states (%" PRIu64
			 " steps) do not match the writes it counted (%" PRIu64 ")", steps, a->writes);
		return -EPROTO;
	}
	for (uint32_t i = 0; i < a->nvcpus; i++) {
		uint32_t id = a->vcpus[i].id;
		int64_t n;

		n = mig_guest_replay(&s->states[id].regs, &a->vcpus[i].regs, put_word, s);
		if (n < 0)
			return -EPROTO;
		s->replayed += n;
	}
	return mig_vm_hash(&s->vm, &s->expect_hash);
}

/* ---- the migration ---------------------------------------------------------------- */

static int full_pass(struct src *s, bool *switch_now)
{
	struct mig_vm *m = &s->vm;
	struct round_stat rs = { 0 };
	uint64_t b0, z0, w0 = atomic_load(&m->ctl.writes);
	uint64_t stop_at = s->c.postcopy && s->c.postcopy_after < 0
				   ? m->npages * s->c.postcopy_pct / 100 : m->npages;
	double t0;
	int r;

	round_begin(s, &b0, &z0, &t0);
	for (uint64_t p = 0; p < m->npages; p++) {
		if (p >= stop_at) {
			*switch_now = true;
			break;
		}
		r = send_page(s, p);
		if (r)
			return r;
		rs.pages++;
	}
	r = mig_pages_flush(&s->w);
	if (r)
		return r;
	s->copy_write_rate = (double)(atomic_load(&m->ctl.writes) - w0) /
			     (now_s() - t0) / s->c.vcpus;
	return round_end(s, &rs, b0, z0, t0, 0);
}

static int migrate(struct src *s)
{
	struct mig_vm *m = &s->vm;
	bool switch_now = false, postcopy = false;
	double t_sync = now_s(), pending_since = t_sync;
	uint64_t pending_dirty = 0;
	struct mig_end end = { 0 };
	struct mig_ack resumed;
	const double t_begin = now_s();
	int r;

	r = set_logging(s, true);
	if (r)
		return r;
	r = full_pass(s, &switch_now);
	if (r)
		return r;
	postcopy = switch_now;
	for (unsigned round = 1; !switch_now; round++) {
		struct round_stat rs = { 0 };
		const struct round_stat *prev = &s->rounds[s->nrounds - 1];
		double bw = prev->seconds > 0 ? (double)prev->bytes / prev->seconds : 0, t;
		uint64_t b0, z0;
		int64_t n;

		round_begin(s, &b0, &z0, &t);
		n = sync_dirty(s);
		if (n < 0)
			return (int)n;
		rs.dirty_rate = (double)n / (t - t_sync);
		/* a sync that ends the rounds counts toward the switchover's rate */
		pending_dirty = (uint64_t)n;
		pending_since = t_sync;
		t_sync = t;
		maybe_throttle(s, (uint64_t)n * m->psz, prev->bytes);
		/* QEMU's test: what is left fits the downtime limit at this bandwidth */
		uint64_t left = (uint64_t)set_bits(s->bitmap, (m->npages + 63) / 64) * m->psz;
		if ((bw > 0 && (double)left / bw * 1e3 <= s->c.downtime_ms) ||
		    round > s->c.max_rounds) {
			switch_now = true;
			break;
		}
		if (s->c.postcopy && s->c.postcopy_after >= 0 &&
		    (int)round > s->c.postcopy_after) {
			switch_now = postcopy = true;
			break;
		}
		r = send_dirty(s, &rs);
		if (r)
			return r;
		r = round_end(s, &rs, b0, z0, t, round);
		if (r)
			return r;
	}

	/* the switchover: every vCPU out of guest mode first */
	r = mig_vm_pause(m);
	if (r)
		return r;
	s->stop_ns = atomic_load(&m->first_stop_ns);
	host_events_stop(s);
	mig_vm_set_throttle(m, 0);
	{
		struct round_stat rs = { .postcopy = postcopy };
		uint64_t b0, z0;
		double t;

		int64_t n;

		round_begin(s, &b0, &z0, &t);
		n = sync_dirty(s); /* every ring harvested, the last GET */
		if (n < 0)
			return (int)n;
		/* what the last syncs found, over the time since the one before them */
		rs.dirty_rate = (double)((uint64_t)n + pending_dirty) / (t - pending_since);
		if (!postcopy) {
			r = send_dirty(s, &rs); /* CLEARs the chunks too */
			if (!r)
				r = send_switchover(s, false);
			if (!r)
				r = mig_write_end(&s->w, &end);
			if (!r)
				r = round_end(s, &rs, b0, z0, t, s->nrounds);
			if (r)
				return r;
		} else {
			for (uint64_t p = 0; p < m->npages; p++)
				s->unsent_at_resume += !s->sent[p];
			r = send_switchover(s, true);
			if (r)
				return r;
			if (pthread_create(&s->ps_th, NULL, page_server, s))
				return -EAGAIN;
			s->ps_on = true;
			s->switched = true;
			/* the background stream: every page not sent, or sent and dirtied since */
			s->need = malloc(m->npages);
			if (!s->need)
				return -ENOMEM;
			for (uint64_t p = 0; p < m->npages; p++)
				s->need[p] = !s->sent[p] || (s->bitmap[p / 64] >> (p % 64) & 1);
			memset(s->bitmap, 0, (m->npages + 63) / 64 * 8);
			r = postcopy_background(s, &rs);
			if (!r && !s->acked)
				r = wait_ack(s, MIG_ACK_RESUMED, &resumed);
			while (r && r != -EPROTO) {
				/* the connection went after the switchover: pause, then go on */
				if (!s->why[0] || !s->recoveries)
					snprintf(s->why, sizeof(s->why), "%s", strerror(-r));
				r = postcopy_recover(s);
				if (r)
					return r;
				r = postcopy_background(s, &rs);
			}
			if (!r)
				r = round_end(s, &rs, b0, z0, t, s->nrounds);
			if (r)
				return r;
			if (!s->acked) {
				s->acked = true;
				s->resume_ns = resumed.resume_ns;
				s->downtime_ms = ((double)s->resume_ns - (double)s->stop_ns) * 1e-6;
			}
		}
	}
	s->switched = true;
	if (!postcopy) {
		r = wait_ack(s, MIG_ACK_RESUMED, &resumed);
		if (r)
			return r;
		s->acked = true;
		s->resume_ns = resumed.resume_ns;
		s->downtime_ms = ((double)s->resume_ns - (double)s->stop_ns) * 1e-6;
	}
	s->mig_s = now_s() - t_begin;
	/* logging is torn down after the acknowledge, outside the downtime, and
	 * the image at the switchover (the vCPUs stay stopped) is hashed now */
	set_logging(s, false);
	r = mig_vm_hash(m, &s->memory_hash);
	if (r)
		return r;
	r = wait_ack(s, MIG_ACK_DONE, &s->done);
	while (postcopy && r && r != -EPROTO) {
		/* gone before its last word: the destination may still need pages */
		struct round_stat rs = { .postcopy = true };

		r = postcopy_recover(s);
		if (!r)
			r = postcopy_background(s, &rs);
		if (!r)
			r = wait_ack(s, MIG_ACK_DONE, &s->done);
	}
	if (r)
		return r;
	return verify(s);
}

/* ---- the report ----------------------------------------------------------------- */

static void target(const char *what, const char *val, const char *want, bool ok)
{
	printf("    %-62s %10s  %-10s %s\n", what, val, want, ok ? "PASS" : "MISS");
}

/* The targets, judged against this run's own baselines. */
static void report_targets(const struct src *s)
{
	const struct round_stat *r0 = &s->rounds[0];
	const double gb = 1e9;
	char val[32], what[96];

	if (s->base.memcpy_s > 0 && s->base.tcp_s > 0)
		printf("  baseline (same run, warm memory): memcpy of %.0f MiB %.3f s (%.2f GB/s), "
		       "TCP send over the loopback %.3f s (%.2f GB/s)\n",
		       (double)s->base.bytes / (1 << 20), s->base.memcpy_s,
		       (double)s->base.bytes / s->base.memcpy_s / gb, s->base.tcp_s,
		       (double)s->base.bytes / s->base.tcp_s / gb);
	printf("  targets:\n");
	if (s->base.tcp_s > 0 && r0->seconds > 0 && r0->pages == s->vm.npages) {
		double tput = (double)r0->bytes / r0->seconds, tcp = (double)s->base.bytes / s->base.tcp_s;

		snprintf(what, sizeof(what), "full-copy throughput / plain TCP send (%.2f / %.2f GB/s%s)",
			 tput / gb, tcp / gb, s->c.checking ? ", checking on" : "");
		snprintf(val, sizeof(val), "%.2fx", tput / tcp);
		target(what, val, ">= 0.70x", tput / tcp >= 0.7);
	}
	if (s->c.rate && r0->pages) {
		double f = s->copy_write_rate / (double)s->c.rate;

		snprintf(val, sizeof(val), "%.0f%%", f * 100);
		target("guest writes during the full copy / the rate asked", val, ">= 90%", f >= 0.9);
	}
	{
		uint64_t bytes = 0;

		for (unsigned i = 0; i < s->nrounds; i++)
			bytes += s->rounds[i].bytes;
		snprintf(val, sizeof(val), "%.2fx", (double)bytes / (double)s->c.mem);
		target("bytes on the wire / guest size", val, ">= 0.95x",
		       (double)bytes >= 0.95 * (double)s->c.mem);
	}
	if (!s->c.postcopy && s->acked) {
		snprintf(val, sizeof(val), "%.1f ms", s->downtime_ms);
		target("measured downtime", val, "<= 50 ms", s->downtime_ms <= 50);
		snprintf(val, sizeof(val), "%.2f s", s->mig_s);
		target("migration time (logging on to the resume acknowledged)", val, "<= 10 s",
		       s->mig_s <= 10);
	}
	if (s->c.postcopy && s->acked) {
		double f = (double)s->unsent_at_resume / (double)s->vm.npages;

		snprintf(val, sizeof(val), "%.0f%%", f * 100);
		target("pages not yet sent when the destination resumed", val, ">= 50%", f >= 0.5);
		snprintf(val, sizeof(val), "%" PRIu64, s->done.requests);
		target("on-demand requests", val, "> 0", s->done.requests > 0);
	}
	snprintf(val, sizeof(val), "%s", s->expect_hash == s->done.hash && s->acked ? "exact" : "no");
	target("verdict", val, "exact", s->expect_hash == s->done.hash && s->acked);
}

static void report(const struct src *s, const struct gpamm_vm_stats *st, int dest_status,
		   const struct gpamm_host_stats *hs, const struct gpamm_live *live)
{
	const struct src_cfg *c = &s->c;
	const char *verdict = s->failure ? "FAILED" : s->expect_hash == s->done.hash ? "exact" : "MISMATCH";
	uint64_t pages = 0, bytes = 0, zero = 0;
	char layout[32], mem[32];

	for (unsigned i = 0; i < s->nrounds; i++) {
		pages += s->rounds[i].pages;
		bytes += s->rounds[i].bytes;
		zero += s->rounds[i].zero_pages;
	}
	cli_layout_name(c->page_shift, c->levels, layout, sizeof(layout));
	cli_size(c->mem, mem, sizeof(mem));
	if (c->json) {
		printf("{\"layout\":\"%s\",\"mem_bytes\":%" PRIu64 ",\"vcpus\":%u,\"mode\":\"%s\","
		       "\"seed\":%" PRIu64 ",\"rate\":%" PRIu64 ",\"checking\":%s,\"postcopy\":%s,"
		       "\"rounds\":[",
		       layout, c->mem, c->vcpus, mode_name(c->mode), c->seed, c->rate,
		       c->checking ? "true" : "false", c->postcopy ? "true" : "false");
		for (unsigned i = 0; i < s->nrounds; i++) {
			const struct round_stat *r = &s->rounds[i];
			printf("%s{\"pages\":%" PRIu64 ",\"zero_pages\":%" PRIu64 ",\"bytes\":%" PRIu64
			       ",\"dirty_rate\":%.0f,\"throttle\":%d,\"seconds\":%.6f,\"postcopy\":%s}",
			       i ? "," : "", r->pages, r->zero_pages, r->bytes, r->dirty_rate, r->throttle,
			       r->seconds, r->postcopy ? "true" : "false");
		}
		printf("],\"pages_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ",\"zero_pages\":%" PRIu64
		       ",\"downtime_ms\":%.3f,\"migration_s\":%.3f,\"total_s\":%.3f,\"copy_write_rate\":%.0f,"
		       "\"source_hash\":\"%016" PRIx64 "\",\"expected_hash\":\"%016" PRIx64
		       "\",\"destination_hash\":\"%016" PRIx64 "\",\"replayed_writes\":%" PRId64
		       ",\"dest_writes\":%" PRIu64 ",\"postcopy_requests\":%" PRIu64
		       ",\"postcopy_served\":%" PRIu64 ",\"request_p50_us\":%.1f,\"request_p99_us\":%.1f"
		       ",\"guest_writes\":%" PRIu64 ",\"faults\":%" PRIu64 ",\"host_reclaimed\":%" PRIu64
		       ",\"host_migrated\":%" PRIu64 ",\"stale_accesses\":%" PRIu64
		       ",\"unsent_at_resume\":%" PRIu64 ",\"baseline_memcpy_s\":%.6f,\"baseline_tcp_s\":%.6f"
		       ",\"destination_status\":%d,\"after_destroy\":{\"frames_live\":%" PRIu64
		       ",\"pinned\":%" PRIu64 ",\"vms\":%" PRIu64 ",\"vcpus\":%" PRIu64
		       ",\"table_pools\":%" PRIu64 ",\"threads\":%" PRIu64 "}"
		       ",\"verdict\":\"%s\"%s%s%s}\n",
		       pages, bytes, zero, s->downtime_ms, s->mig_s, s->total_s, s->copy_write_rate,
		       s->memory_hash, s->expect_hash, s->done.hash, s->replayed, s->done.writes,
		       s->done.requests, (uint64_t)atomic_load(&s->served),
		       (double)s->done.req_p50_ns / 1e3, (double)s->done.req_p99_ns / 1e3,
		       (uint64_t)atomic_load(&s->vm.ctl.writes), st->faults, s->host_reclaimed,
		       s->host_migrated, st->stale_accesses, s->unsent_at_resume, s->base.memcpy_s,
		       s->base.tcp_s, dest_status, hs->frames_live, hs->pinned,
		       live->vms, live->vcpus, live->tpools, live->threads, verdict,
		       s->failure ? ",\"failure\":\"" : "", s->failure ? s->why : "",
		       s->failure ? "\"" : "");
		return;
	}
	printf("\ngpamm migrate: %s of guest memory, %s, %u vCPUs, %s dirty log, sim host%s, to %s:%u%s\n",
	       mem, layout, c->vcpus, mode_name(c->mode), c->checking ? " (checking every access)" : "",
	       c->to_host, c->to_port, c->have_to ? "" : " (a destination process started here)");
	printf("  workload: %" PRIu64 " writes/s per vCPU%s, %u%% of writes to %u%% of pages; seed %" PRIu64 "\n",
	       c->rate, c->rate ? "" : " (unthrottled)", c->hot_writes, c->hot_pct, c->seed);
	printf("    round      pages       zero   MiB sent  dirty pages/s  throttle   seconds\n");
	for (unsigned i = 0; i < s->nrounds; i++) {
		const struct round_stat *r = &s->rounds[i];
		printf("    %5u %10" PRIu64 " %10" PRIu64 " %10.1f %14.0f %8d%% %9.3f%s\n", i, r->pages,
		       r->zero_pages, (double)r->bytes / (1 << 20), r->dirty_rate, r->throttle, r->seconds,
		       i == 0 ? "  (full copy)" : r->postcopy ? "  (post-copy background)"
		       : i == s->nrounds - 1 && s->switched ? "  (switchover)" : "");
	}
	printf("  sent: %" PRIu64 " pages (%" PRIu64 " as zero pages), %.1f MiB on the wire\n", pages,
	       zero, (double)bytes / (1 << 20));
	printf("  guest writes during the full copy: %.0f/s per vCPU (asked %" PRIu64 ")\n",
	       s->copy_write_rate, c->rate);
	if (s->acked)
		printf("  downtime: %.3f ms (destination resumed - first vCPU stop, CLOCK_MONOTONIC); "
		       "migration %.3f s (logging on to the resume acknowledged)\n",
		       s->downtime_ms, s->mig_s);
	if (c->postcopy && s->acked)
		printf("  post-copy: %" PRIu64 " pages requested by the destination (%" PRIu64
		       " served), latency median %.1f us, p99 %.1f us\n", s->done.requests,
		       (uint64_t)atomic_load(&s->served), (double)s->done.req_p50_ns / 1e3,
		       (double)s->done.req_p99_ns / 1e3);
	printf("  memory hash: source at switchover %016" PRIx64 ", with the destination's %" PRId64
	       " writes replayed %016" PRIx64 ", destination %016" PRIx64 "\n",
	       s->memory_hash, s->replayed, s->expect_hash, s->done.hash);
	printf("  verdict: %s%s%s\n", verdict, s->failure ? ": " : "", s->failure ? s->why : "");
	printf("  guest writes %" PRIu64 ", faults %" PRIu64 "; host: %" PRIu64 " pages reclaimed, %"
	       PRIu64 " migrated; stale accesses %" PRIu64 "%s\n",
	       (uint64_t)atomic_load(&s->vm.ctl.writes), st->faults, s->host_reclaimed,
	       s->host_migrated, st->stale_accesses, c->checking ? "" : " (checking off)");
	printf("  time: %.2f s; destination exit status %d\n", s->total_s, dest_status);
	if (c->baseline)
		report_targets(s);
	printf("  after destroy: %" PRIu64 " frames live, %" PRIu64 " pins, %" PRIu64 " VMs, %"
	       PRIu64 " vCPUs, %" PRIu64 " table pools, %" PRIu64 " library threads\n",
	       hs->frames_live, hs->pinned, live->vms, live->vcpus, live->tpools, live->threads);
}

static void plot(const struct src *s)
{
	char data[] = "/tmp/gpamm-plot-XXXXXX";
	int fd = mkstemp(data);
	FILE *f, *gp;

	if (fd < 0)
		return;
	f = fdopen(fd, "w");
	for (unsigned i = 0; i < s->nrounds; i++)
		fprintf(f, "%u %" PRIu64 " %.0f\n", i, s->rounds[i].pages, s->rounds[i].dirty_rate);
	fclose(f);
	if (system("command -v gnuplot >/dev/null 2>&1")) {
		fprintf(stderr, "gpamm migrate: --plot needs gnuplot: run 'scripts/deps.sh plot' "
				"(as root it installs gnuplot-nox) or apt-get install -y gnuplot-nox\n");
		unlink(data);
		return;
	}
	gp = popen("gnuplot", "w");
	if (gp) {
		fprintf(gp, "set terminal svg size 800,450\nset output '%s'\n"
			    "set title 'gpamm migrate: pages sent and dirty rate per round'\n"
			    "set xlabel 'round (0 = full copy, last = switchover)'\n"
			    "set xtics 1\nset mxtics 1\nset format x '%%.0f'\n"
			    "set ylabel 'pages'\nset y2label 'pages dirtied per second'\n"
			    "set ytics nomirror\nset y2tics\nset grid\n"
			    "plot '%s' using 1:2 with linespoints title 'pages sent', "
			    "'' using 1:3 axes x1y2 with linespoints title 'dirty rate'\n",
			s->c.plot, data);
		pclose(gp);
	}
	unlink(data);
}

/*
 * gpamm migrate --resume PATH: the client of a paused post-copy source.
 * Tells it to reconnect (to --to, if given), prints what it answers, and
 * exits with its verdict.
 */
static int run_resume(const struct src_cfg *c)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char cmd[96], buf[256];
	size_t got = 0;
	int fd, n;

	if (strlen(c->resume) >= sizeof(a.sun_path))
		return cli_usage_error("migrate", "--resume wants a socket path shorter than %zu bytes",
				       sizeof(a.sun_path));
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", c->resume);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		fprintf(stderr, "gpamm migrate: --resume: no paused migration at %s: %s\n", c->resume,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return CLI_EXIT_FAIL;
	}
	n = c->have_to ? snprintf(cmd, sizeof(cmd), "resume %s:%u\n", c->to_host, c->to_port)
		       : snprintf(cmd, sizeof(cmd), "resume\n");
	if (write(fd, cmd, (size_t)n) != n) {
		close(fd);
		return CLI_EXIT_FAIL;
	}
	for (;;) {
		ssize_t k = read(fd, buf + got, sizeof(buf) - 1 - got);

		if (k <= 0 || (got += (size_t)k) >= sizeof(buf) - 1)
			break;
	}
	close(fd);
	buf[got] = 0;
	fputs(buf, stdout);
	return strstr(buf, "finished exact") ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

static int run(int argc, char **argv)
{
	struct src *s = calloc(1, sizeof(*s));
	struct gpamm_vm_stats st = { 0 };
	struct gpamm_host_stats hs = { 0 };
	struct gpamm_live live = { 0 };
	double t0 = now_s();
	int r, ret = CLI_EXIT_FAIL, dest_status = -1;

	if (!s)
		return CLI_EXIT_FAIL;
	r = parse(&s->c, argc, argv);
	if (r) {
		free(s);
		return r < 0 ? CLI_EXIT_OK : r;
	}
	signal(SIGPIPE, SIG_IGN);
	if (s->c.resume) {
		r = run_resume(&s->c);
		free(s);
		return r;
	}
	s->main.fd = s->pc.fd = -1;
	s->ctl_fd = -1;
	if (s->c.baseline) {
		/* first, on a quiet machine: what memcpy and the loopback give */
		r = mig_baseline_measure(s->c.mem, &s->base);
		if (r)
			fprintf(stderr, "gpamm migrate: baseline: %s\n", strerror(-r));
	}
	r = setup(s);
	if (r) {
		fprintf(stderr, "gpamm migrate: setup failed: %s\n", strerror(-r));
		goto out;
	}
	if (!s->c.have_to) {
		r = spawn_destination(s);
		if (r) {
			fprintf(stderr, "gpamm migrate: cannot start the destination: %s\n", strerror(-r));
			goto out;
		}
	}
	r = mig_vm_start(&s->vm);
	if (!r && s->c.host_events) {
		if (!pthread_create(&s->host_th, NULL, host_thread, s))
			s->host_th_on = true;
	}
	if (!r) {
		usleep(20000); /* the guest runs before the migration starts */
		r = connect_channels(s);
		if (r)
			snprintf(s->why, sizeof(s->why), "cannot reach %s:%u: %s", s->c.to_host,
				 s->c.to_port, strerror(-r));
	}
	if (!r) {
		r = migrate(s);
		if (r && !s->why[0])
			snprintf(s->why, sizeof(s->why), "%s", strerror(r < 0 ? -r : r));
	}
	if (!s->c.json)
		fputc('\n', stderr);
	if (r && !s->acked && !s->need) {
		/* fail safe: the destination never took over; the guest goes on here */
		uint64_t w0 = atomic_load(&s->vm.ctl.writes);

		s->failure = "before the switchover was acknowledged";
		mig_vm_set_throttle(&s->vm, 0);
		mig_vm_resume(&s->vm);
		set_logging(s, false);
		usleep(100000);
		fprintf(stderr, "gpamm migrate: migration failed (%s); the guest resumed on the "
			"source and goes on running (%" PRIu64 " writes in 0.1 s)\n", s->why,
			(uint64_t)atomic_load(&s->vm.ctl.writes) - w0);
	} else if (r) {
		/* after a post-copy switchover the guest must not run here again */
		s->failure = "after the switchover";
		fprintf(stderr, "gpamm migrate: failed after the switchover (%s)%s\n", s->why,
			s->need ? "; the guest stays stopped here: the destination runs it" : "");
	}
	host_events_stop(s);
	mig_vm_join(&s->vm);
	if (s->pc.fd >= 0)
		shutdown(s->pc.fd, SHUT_RDWR);
	if (s->ps_on)
		pthread_join(s->ps_th, NULL);
	mig_close(&s->main);
	mig_close(&s->pc);
	if (s->child > 0) {
		int wst;

		if (r && !s->acked)
			kill(s->child, SIGTERM);
		if (waitpid(s->child, &wst, 0) == s->child)
			dest_status = WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
	}
	s->total_s = now_s() - t0;
	gpamm_vm_stats(s->vm.vm, &st);
	/* what destroy leaves: nothing */
	gpamm_vm_destroy(s->vm.vm);
	s->vm.vm = NULL;
	gpamm_sim_munmap(s->vm.host, s->vm.hva, s->c.mem);
	s->vm.hva = 0;
	gpamm_host_stats(s->vm.host, &hs);
	gpamm_live_objects(&live);
	if (s->nrounds || s->failure)
		report(s, &st, dest_status, &hs, &live);
	if (s->c.plot && s->nrounds)
		plot(s);
	ret = !r && s->expect_hash == s->done.hash && !atomic_load(&s->vm.vcpu_error) &&
			      !st.stale_accesses ? CLI_EXIT_OK : CLI_EXIT_FAIL;
	if (hs.frames_live || hs.pinned || live.vms || live.vcpus || live.tpools || live.threads)
		ret = CLI_EXIT_FAIL;
	if (s->ctl_fd >= 0) {
		/* the --resume client hears how it ended */
		dprintf(s->ctl_fd, "finished %s\n", ret == CLI_EXIT_OK ? "exact" : "failed");
		close(s->ctl_fd);
	}
out:
	if (s->child > 0 && dest_status < 0) {
		kill(s->child, SIGTERM);
		waitpid(s->child, NULL, 0);
	}
	mig_vm_destroy(&s->vm);
	mig_writer_free(&s->w);
	mig_writer_free(&s->pw);
	mig_reader_free(&s->ackr);
	mig_reader_free(&s->reqr);
	free(s->done.vcpus);
	free(s->need);
	free(s->ring_fetch);
	free(s->bitmap);
	free(s->tmp);
	free(s->sent);
	free(s->buf);
	free(s->states);
	free(s);
	return ret;
}

const struct cli_cmd cli_cmd_migrate = {
	"migrate", "live-migrate a running guest to another process over TCP and verify it",
	run, usage,
};
