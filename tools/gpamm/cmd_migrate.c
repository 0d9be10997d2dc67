// SPDX-License-Identifier: MIT
/*
 * gpamm migrate - the main job: a guest is live-migrated through the MMU's
 * dirty log while it runs and while the host changes pages under it.
 *
 * vCPU threads run a write workload (a hot set that takes most writes, the
 * rest spread over all memory, at a configurable rate) on the sim host in
 * checking mode; a host thread reclaims pages to swap and migrates pages
 * between frames. The VMM copies all memory to a destination buffer, then
 * runs pre-copy rounds (dirty log: manual GET + CLEAR by default, classic
 * GET or dirty rings on request), copying the pages each round reports,
 * until the dirty set is small enough to send within the downtime budget
 * or the round limit is reached. Then the vCPUs stop, a last round copies
 * what is left, and the destination is compared with guest memory byte by
 * byte. The report: rounds, pages per round, bytes, final dirty set and the
 * downtime it implies at the link speed, the verdict, stale accesses seen
 * by the host's checking mode, and what is left after destroy.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#include "cli.h"
#include "gpamm/gpamm.h"

enum log_mode { MODE_MANUAL, MODE_CLASSIC, MODE_RING };

struct mig_cfg {
	unsigned vcpus, page_shift, levels, max_rounds;
	uint64_t mem;           /* bytes */
	uint64_t rate;          /* writes per second per vCPU, 0 = unthrottled */
	unsigned hot_pct;       /* percent of pages in the hot set */
	unsigned hot_writes;    /* percent of writes that go to the hot set */
	double link_gbps;       /* for the downtime estimate */
	double max_downtime_ms; /* stop-and-copy when the dirty set fits in it */
	enum log_mode mode;
	bool checking, host_events, json;
	const char *plot;
	uint64_t seed;
};

struct round_stat {
	uint64_t dirty;     /* pages reported dirty */
	double seconds;     /* collect + copy */
};

#define MAX_ROUNDS 1000

struct mig {
	struct mig_cfg c;
	struct gpamm_host *host;
	struct gpamm_vm *vm;
	struct gpamm_vcpu **vcpu;
	pthread_t *th, host_th;
	uint64_t hva, gpa, npages, psz;
	uint8_t *dest;
	uint64_t *bitmap;
	uint32_t *ring_fetch;
	atomic_int stop, pause, host_stop;
	atomic_uint parked;
	atomic_uint_fast64_t writes;
	atomic_int vcpu_error;
	uint64_t host_reclaimed, host_migrated;
	struct round_stat rounds[MAX_ROUNDS + 2];
	unsigned nrounds;
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
	{ "link-gbps", true, 11, 0 },
	{ "max-downtime-ms", true, 12, 0 },
	{ "no-checking", false, 13, 0 },
	{ "no-host-events", false, 14, 0 },
	{ "json", false, 15, 0 },
	{ "plot", true, 16, 0 },
	{ "seed", true, 17, 's' },
	{ NULL, false, 0, 0 },
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: gpamm migrate [options]\n"
		"\n"
		"Live-migrate a running guest through the dirty log and check the copy.\n"
		"\n"
		"  -v, --vcpus N          vCPU threads writing (default 2)\n"
		"  -m, --mem SIZE         guest memory, K/M/G suffixes (default 1G)\n"
		"      --page-shift N     12, 14 or 16 (default 14)\n"
		"      --levels N         table levels (default 3)\n"
		"      --rate N           writes per second per vCPU, 0 = as fast as it goes\n"
		"                         (default 20000)\n"
		"      --hot PCT          percent of pages in the hot set (default 1)\n"
		"      --hot-writes PCT   percent of writes to the hot set (default 90)\n"
		"      --mode MODE        manual (GET + CLEAR, default), classic (GET clears)\n"
		"                         or ring (per-vCPU dirty rings)\n"
		"      --max-rounds N     pre-copy rounds at most (default 30)\n"
		"      --link-gbps X      link speed for the downtime estimate (default 10)\n"
		"      --max-downtime-ms X  stop-and-copy once the dirty set fits (default 20)\n"
		"      --no-checking      sim host without per-access checks (faster)\n"
		"      --no-host-events   no reclaim or page migration during the run\n"
		"      --json             the report as JSON on stdout\n"
		"      --plot FILE.svg    chart of dirty pages per round (needs gnuplot)\n"
		"  -s, --seed N           workload seed (default: from the clock, printed)\n"
		"\n"
		"Progress goes to stderr, one line per round; the report to stdout.\n"
		"Exit status: 0 when the copy is exact, 1 when not, 2 on bad usage.\n");
}

static bool parse_double(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return !errno && end != s && !*end && *out > 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* ---- the guest --------------------------------------------------------------- */

struct vcpu_arg {
	struct mig *m;
	unsigned id;
};

/*
 * Writes (vcpu, counter) words: most to the hot set, the rest anywhere.
 * Throttling and pausing happen outside guest mode (a guest exit), never
 * by sleeping in guest code, so remote TLB flushes never wait on it.
 */
static int guest(struct gpamm_vcpu *v, void *arg)
{
	struct vcpu_arg *a = arg;
	struct mig *m = a->m;
	uint64_t s = m->c.seed * 0x9e3779b97f4a7c15ULL + a->id + 1, n = 0;
	uint64_t hot = m->npages * m->c.hot_pct / 100;
	double t0 = now_s();

	if (!hot)
		hot = 1;
	while (!atomic_load_explicit(&m->stop, memory_order_relaxed)) {
		uint64_t r = rnd(&s);
		uint64_t page = (r % 100) < m->c.hot_writes ? (r >> 8) % hot : (r >> 8) % m->npages;
		uint64_t off = ((r >> 40) % (m->psz / 8)) * 8;

		gpamm_guest_write(v, m->gpa + page * m->psz + off, 8, ((uint64_t)a->id << 56) | ++n);
		if (!(n & 255)) {
			atomic_fetch_add_explicit(&m->writes, 256, memory_order_relaxed);
			if (atomic_load_explicit(&m->pause, memory_order_relaxed))
				gpamm_guest_exit(v);
			else if (m->c.rate && n > (uint64_t)((now_s() - t0) * (double)m->c.rate))
				gpamm_guest_exit(v); /* ahead of the rate: the thread sleeps */
		}
	}
	return 0;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_arg *a = arg;
	struct mig *m = a->m;
	struct gpamm_vcpu *v = m->vcpu[a->id];
	struct gpamm_run *run = gpamm_vcpu_run_state(v);

	for (;;) {
		if (gpamm_vcpu_run(v)) {
			atomic_store(&m->vcpu_error, 1);
			break;
		}
		switch (run->exit_reason) {
		case GPAMM_EXIT_DONE:
			free(a);
			return NULL;
		case GPAMM_EXIT_REQUEST:
		case GPAMM_EXIT_DIRTY_RING_FULL:
			if (atomic_load(&m->pause)) {
				atomic_fetch_add(&m->parked, 1);
				while (atomic_load(&m->pause) && !atomic_load(&m->stop))
					usleep(200);
				atomic_fetch_sub(&m->parked, 1);
			} else {
				usleep(run->exit_reason == GPAMM_EXIT_REQUEST ? 1000 : 200);
			}
			break;
		case GPAMM_EXIT_MEMORY_FAULT:
			usleep(100); /* a host event in flight; retry */
			break;
		default:
			atomic_store(&m->vcpu_error, 1);
			free(a);
			return NULL;
		}
	}
	free(a);
	return NULL;
}

/* ---- the host's own activity ------------------------------------------------- */

static void *host_thread(void *arg)
{
	struct mig *m = arg;
	uint64_t s = m->c.seed ^ 0x5bd1e995;
	const uint64_t chunk = 64;

	while (!atomic_load(&m->host_stop)) {
		uint64_t first = rnd(&s) % (m->npages - (m->npages > chunk ? chunk : 0) + 1);
		uint64_t len = (m->npages < chunk ? m->npages : chunk) * m->psz;
		int64_t r;

		if (rnd(&s) & 1) {
			r = gpamm_sim_reclaim(m->host, m->hva + first * m->psz, len, chunk);
			if (r > 0)
				m->host_reclaimed += (uint64_t)r;
		} else {
			r = gpamm_sim_migrate(m->host, m->hva + first * m->psz, len);
			if (r > 0)
				m->host_migrated += (uint64_t)r;
		}
		usleep(2000);
	}
	return NULL;
}

/* ---- the VMM side -------------------------------------------------------------- */

static void progress(const struct mig *m, const char *what, unsigned round, uint64_t pages,
		     double secs)
{
	static int tty = -1;

	if (m->c.json)
		return;
	if (tty < 0)
		tty = isatty(2);
	fprintf(stderr, "%s%-14s round %3u: %8" PRIu64 " pages dirty, copied in %.3f s%s",
		tty ? "\r\033[K" : "", what, round, pages, secs, tty ? "" : "\n");
	fflush(stderr);
}

/* Collect one round's dirty set into m->bitmap; return the page count. */
static int64_t collect(struct mig *m)
{
	const uint64_t words = (m->npages + 63) / 64;
	uint64_t n = 0;
	int r;

	if (m->c.mode == MODE_RING) {
		memset(m->bitmap, 0, words * 8);
		for (unsigned i = 0; i < m->c.vcpus; i++) {
			uint32_t size;
			struct gpamm_dirty_gfn *g = gpamm_vcpu_dirty_ring(m->vcpu[i], &size);
			uint32_t f = m->ring_fetch[i];

			while (__atomic_load_n(&g[f & (size - 1)].flags, __ATOMIC_ACQUIRE) &
			       GPAMM_DIRTY_GFN_F_DIRTY) {
				struct gpamm_dirty_gfn *e = &g[f & (size - 1)];
				if (e->offset < m->npages)
					m->bitmap[e->offset / 64] |= 1ULL << (e->offset % 64);
				__atomic_store_n(&e->flags, GPAMM_DIRTY_GFN_F_DIRTY | GPAMM_DIRTY_GFN_F_RESET,
						 __ATOMIC_RELEASE);
				f++;
			}
			m->ring_fetch[i] = f;
		}
		if (gpamm_vm_reset_dirty_rings(m->vm) < 0)
			return -EIO;
	} else {
		r = gpamm_vm_get_dirty_log(m->vm, 0, m->bitmap);
		if (r)
			return r;
		if (m->c.mode == MODE_MANUAL) {
			r = gpamm_vm_clear_dirty_log(m->vm, 0, 0, m->npages, m->bitmap);
			if (r)
				return r;
		}
	}
	for (uint64_t i = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountll(m->bitmap[i]);
	return (int64_t)n;
}

static int copy_dirty(struct mig *m)
{
	for (uint64_t w = 0; w < (m->npages + 63) / 64; w++) {
		for (uint64_t bits = m->bitmap[w]; bits; bits &= bits - 1) {
			uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);
			int r = gpamm_sim_read(m->host, m->hva + p * m->psz, m->dest + p * m->psz, m->psz);
			if (r)
				return r;
		}
	}
	return 0;
}

static void pause_vcpus(struct mig *m)
{
	atomic_store(&m->pause, 1);
	for (unsigned i = 0; i < m->c.vcpus; i++)
		gpamm_vcpu_kick(m->vcpu[i]);
	while (atomic_load(&m->parked) < m->c.vcpus && !atomic_load(&m->vcpu_error))
		usleep(200);
}

static uint64_t verify(struct mig *m)
{
	uint8_t *buf = malloc(m->psz);
	uint64_t bad = 0;

	for (uint64_t p = 0; buf && p < m->npages; p++) {
		if (gpamm_sim_read(m->host, m->hva + p * m->psz, buf, m->psz) ||
		    memcmp(buf, m->dest + p * m->psz, m->psz))
			bad++;
	}
	free(buf);
	return buf ? bad : m->npages;
}

static void plot(const struct mig *m)
{
	char data[] = "/tmp/gpamm-plot-XXXXXX";
	int fd = mkstemp(data);
	FILE *f, *gp;

	if (fd < 0)
		return;
	f = fdopen(fd, "w");
	for (unsigned i = 0; i < m->nrounds; i++)
		fprintf(f, "%u %" PRIu64 "\n", i, m->rounds[i].dirty);
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
			    "set title 'gpamm migrate: pages copied per round'\n"
			    "set xlabel 'round (0 = full copy, last = stop-and-copy)'\n"
			    "set ylabel 'pages'\nset logscale y\nset grid\n"
			    "plot '%s' using 1:($2 > 0 ? $2 : 1) with linespoints title 'dirty pages'\n",
			m->c.plot, data);
		pclose(gp);
	}
	unlink(data);
}

static int parse(struct mig_cfg *c, int argc, char **argv)
{
	struct cli_parser p;
	const char *val;
	uint64_t v;
	int opt;

	*c = (struct mig_cfg){
		.vcpus = 2, .page_shift = 14, .levels = 3, .max_rounds = 30,
		.mem = 1ULL << 30, .rate = 20000, .hot_pct = 1, .hot_writes = 90,
		.link_gbps = 10, .max_downtime_ms = 20, .mode = MODE_MANUAL,
		.checking = true, .host_events = true,
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
				c->mode = MODE_MANUAL;
			else if (!strcmp(val, "classic"))
				c->mode = MODE_CLASSIC;
			else if (!strcmp(val, "ring"))
				c->mode = MODE_RING;
			else
				return cli_usage_error("migrate", "--mode wants manual, classic or ring, not '%s'", val);
			break;
		case 10:
			if (!cli_parse_u64(val, &v) || !v || v > MAX_ROUNDS)
				return cli_usage_error("migrate", "--max-rounds wants 1..%d, not '%s'", MAX_ROUNDS, val);
			c->max_rounds = (unsigned)v;
			break;
		case 11:
			if (!parse_double(val, &c->link_gbps))
				return cli_usage_error("migrate", "--link-gbps wants a positive number, not '%s'", val);
			break;
		case 12:
			if (!parse_double(val, &c->max_downtime_ms))
				return cli_usage_error("migrate", "--max-downtime-ms wants a positive number, not '%s'", val);
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
		}
	}
	if (c->mem & ((1ULL << c->page_shift) - 1))
		return cli_usage_error("migrate", "--mem must be a multiple of the page size");
	if ((c->page_shift == 12) != (c->levels >= 3) && c->levels != 3)
		return cli_usage_error("migrate", "no %u-level layout with %u-byte pages",
				       c->levels, 1u << c->page_shift);
	if (!c->seed)
		c->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
	return 0;
}

static const char *mode_name(enum log_mode m)
{
	return m == MODE_MANUAL ? "manual" : m == MODE_CLASSIC ? "classic" : "ring";
}

static int setup(struct mig *m)
{
	struct mig_cfg *c = &m->c;
	struct gpamm_sim_config sc = {
		.page_shift = c->page_shift, .checking = c->checking,
	};
	struct gpamm_vm_config vc = {
		.page_shift = c->page_shift, .levels = c->levels, .max_vcpus = c->vcpus,
	};
	int r;

	m->psz = 1ULL << c->page_shift;
	m->npages = c->mem >> c->page_shift;
	m->gpa = 1ULL << 32;
	/* room for migration targets and copy-on-write, and a swap area */
	sc.frames = m->npages + m->npages / 4 + 64;
	sc.swap_pages = m->npages / 4 + 64;
	m->host = gpamm_host_sim_create(&sc);
	if (!m->host)
		return -ENOMEM;
	vc.host = m->host;
	r = gpamm_vm_create(&vc, &m->vm);
	if (r)
		return r;
	if (c->mode == MODE_RING)
		r = gpamm_vm_enable_dirty_ring(m->vm, 4096);
	else if (c->mode == MODE_MANUAL)
		r = gpamm_vm_enable_manual_dirty_log_protect(m->vm, GPAMM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
	if (r)
		return r;
	r = gpamm_sim_mmap(m->host, c->mem, 0, &m->hva);
	if (r)
		return r;
	struct gpamm_userspace_memory_region reg = {
		.slot = 0, .guest_phys_addr = m->gpa, .memory_size = c->mem,
		.userspace_addr = m->hva,
	};
	r = gpamm_vm_set_memory_region(m->vm, &reg);
	if (r)
		return r;
	m->vcpu = calloc(c->vcpus, sizeof(*m->vcpu));
	m->th = calloc(c->vcpus, sizeof(*m->th));
	m->ring_fetch = calloc(c->vcpus, sizeof(*m->ring_fetch));
	m->bitmap = calloc((m->npages + 63) / 64, sizeof(uint64_t));
	m->dest = mmap(NULL, c->mem, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m->dest == MAP_FAILED)
		m->dest = NULL;
	else
		madvise(m->dest, c->mem, MADV_HUGEPAGE);
	if (!m->vcpu || !m->th || !m->ring_fetch || !m->bitmap || !m->dest)
		return -ENOMEM;
	for (unsigned i = 0; i < c->vcpus; i++) {
		r = gpamm_vcpu_create(m->vm, i, &m->vcpu[i]);
		if (r)
			return r;
	}
	/* guest RAM starts with contents: a pattern written by the host */
	for (uint64_t p = 0; p < m->npages; p++) {
		uint64_t word[2] = { p, m->c.seed };
		r = gpamm_sim_write(m->host, m->hva + p * m->psz, word, sizeof(word));
		if (r)
			return r;
	}
	return 0;
}

static void report(const struct mig *m, uint64_t bad, double total_s,
		   const struct gpamm_vm_stats *st, const struct gpamm_host_stats *hs_after,
		   const struct gpamm_live *live)
{
	const struct mig_cfg *c = &m->c;
	uint64_t copied = 0, final = m->rounds[m->nrounds - 1].dirty;
	double downtime_ms = (double)final * (double)m->psz * 8.0 / (c->link_gbps * 1e9) * 1e3;
	char layout[32], mem[32];

	for (unsigned i = 0; i < m->nrounds; i++)
		copied += m->rounds[i].dirty;
	cli_layout_name(c->page_shift, c->levels, layout, sizeof(layout));
	cli_size(c->mem, mem, sizeof(mem));
	if (c->json) {
		printf("{\"layout\":\"%s\",\"mem_bytes\":%" PRIu64 ",\"vcpus\":%u,\"mode\":\"%s\","
		       "\"seed\":%" PRIu64 ",\"rate\":%" PRIu64 ",\"checking\":%s,\"rounds\":[",
		       layout, c->mem, c->vcpus, mode_name(c->mode), c->seed, c->rate,
		       c->checking ? "true" : "false");
		for (unsigned i = 0; i < m->nrounds; i++)
			printf("%s{\"pages\":%" PRIu64 ",\"seconds\":%.6f}", i ? "," : "",
			       m->rounds[i].dirty, m->rounds[i].seconds);
		printf("],\"precopy_rounds\":%u,\"pages_copied\":%" PRIu64 ",\"bytes_copied\":%" PRIu64
		       ",\"final_dirty_pages\":%" PRIu64 ",\"downtime_ms\":%.3f,\"link_gbps\":%.3f,"
		       "\"guest_writes\":%" PRIu64 ",\"faults\":%" PRIu64 ",\"host_reclaimed\":%" PRIu64
		       ",\"host_migrated\":%" PRIu64 ",\"mismatched_pages\":%" PRIu64
		       ",\"verdict\":\"%s\",\"stale_accesses\":%" PRIu64 ",\"seconds\":%.3f,"
		       "\"after_destroy\":{\"frames_live\":%" PRIu64 ",\"pinned\":%" PRIu64
		       ",\"vms\":%" PRIu64 ",\"vcpus\":%" PRIu64 ",\"table_pools\":%" PRIu64
		       ",\"threads\":%" PRIu64 "}}\n",
		       m->nrounds - 2, copied, copied * m->psz, final, downtime_ms, c->link_gbps,
		       (uint64_t)atomic_load(&m->writes), st->faults, m->host_reclaimed,
		       m->host_migrated, bad, bad ? "MISMATCH" : "exact", st->stale_accesses, total_s,
		       hs_after->frames_live, hs_after->pinned, live->vms, live->vcpus, live->tpools,
		       live->threads);
		return;
	}
	printf("\ngpamm migrate: %s of guest memory, %s, %u vCPUs, %s dirty log, sim host%s\n",
	       mem, layout, c->vcpus, mode_name(c->mode), c->checking ? " (checking every access)" : "");
	printf("  workload: %" PRIu64 " writes/s per vCPU%s, %u%% of writes to %u%% of pages; seed %" PRIu64 "\n",
	       c->rate, c->rate ? "" : " (unthrottled)", c->hot_writes, c->hot_pct, c->seed);
	printf("  rounds:   full copy, %u pre-copy, stop-and-copy\n", m->nrounds - 2);
	printf("    round   pages copied   seconds\n");
	for (unsigned i = 0; i < m->nrounds; i++)
		printf("    %5u   %12" PRIu64 "   %7.3f%s\n", i, m->rounds[i].dirty, m->rounds[i].seconds,
		       i == 0 ? "  (full copy)" : i == m->nrounds - 1 ? "  (stop-and-copy)" : "");
	printf("  copied:   %" PRIu64 " pages, %.1f MiB\n", copied, (double)(copied * m->psz) / (1 << 20));
	printf("  final dirty set: %" PRIu64 " pages -> %.3f ms downtime at %.1f Gbit/s\n",
	       final, downtime_ms, c->link_gbps);
	printf("  guest writes: %" PRIu64 ", faults %" PRIu64 "; host: %" PRIu64 " pages reclaimed, %"
	       PRIu64 " migrated\n", (uint64_t)atomic_load(&m->writes), st->faults,
	       m->host_reclaimed, m->host_migrated);
	printf("  verification: %s (%" PRIu64 " of %" PRIu64 " pages differ)\n",
	       bad ? "MISMATCH" : "exact copy", bad, m->npages);
	printf("  stale accesses seen by the host: %" PRIu64 "%s\n", st->stale_accesses,
	       c->checking ? "" : " (checking off)");
	printf("  after destroy: %" PRIu64 " frames live, %" PRIu64 " pins, %" PRIu64 " VMs, %"
	       PRIu64 " vCPUs, %" PRIu64 " table pools, %" PRIu64 " library threads\n",
	       hs_after->frames_live, hs_after->pinned, live->vms, live->vcpus, live->tpools,
	       live->threads);
	printf("  time: %.2f s\n", total_s);
}

static int run(int argc, char **argv)
{
	struct mig *m = calloc(1, sizeof(*m));
	struct gpamm_vm_stats st;
	struct gpamm_host_stats hs;
	struct gpamm_live live;
	uint64_t bad = 0;
	double t0 = now_s(), t;
	int64_t n;
	int r, ret = CLI_EXIT_FAIL;

	if (!m)
		return CLI_EXIT_FAIL;
	r = parse(&m->c, argc, argv);
	if (r) {
		free(m);
		return r < 0 ? CLI_EXIT_OK : r;
	}
	r = setup(m);
	if (r) {
		fprintf(stderr, "gpamm migrate: setup failed: %s\n", strerror(-r));
		goto out;
	}
	/* the guest runs; the host does its own things */
	for (unsigned i = 0; i < m->c.vcpus; i++) {
		struct vcpu_arg *a = malloc(sizeof(*a));
		*a = (struct vcpu_arg){ m, i };
		gpamm_vcpu_set_guest(m->vcpu[i], guest, a, 0);
		pthread_create(&m->th[i], NULL, vcpu_thread, a);
	}
	if (m->c.host_events)
		pthread_create(&m->host_th, NULL, host_thread, m);
	usleep(20000);

	/* logging on (write-protects the slot), then the full copy */
	struct gpamm_userspace_memory_region reg = {
		.slot = 0, .flags = GPAMM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = m->gpa,
		.memory_size = m->c.mem, .userspace_addr = m->hva,
	};
	r = gpamm_vm_set_memory_region(m->vm, &reg);
	if (r)
		goto fail;
	t = now_s();
	/* in chunks: the host's lock is not held across the whole copy */
	for (uint64_t p = 0; p < m->npages; p += 256) {
		uint64_t np = m->npages - p < 256 ? m->npages - p : 256;
		r = gpamm_sim_read(m->host, m->hva + p * m->psz, m->dest + p * m->psz, np * m->psz);
		if (r)
			goto fail;
		/* a mutex is not fair: let a vCPU waiting for the host's lock in */
		sched_yield();
	}
	m->rounds[m->nrounds++] = (struct round_stat){ m->npages, now_s() - t };
	progress(m, "full copy", 0, m->npages, now_s() - t);

	/* pre-copy until the dirty set fits in the downtime budget */
	uint64_t budget = (uint64_t)(m->c.link_gbps * 1e9 / 8 * m->c.max_downtime_ms / 1e3) / m->psz;
	for (unsigned round = 1; round <= m->c.max_rounds; round++) {
		t = now_s();
		n = collect(m);
		if (n < 0 || copy_dirty(m)) {
			r = n < 0 ? (int)n : -EIO;
			goto fail;
		}
		m->rounds[m->nrounds++] = (struct round_stat){ (uint64_t)n, now_s() - t };
		progress(m, "pre-copy", round, (uint64_t)n, now_s() - t);
		if ((uint64_t)n <= budget)
			break;
	}

	/* stop-and-copy: vCPUs parked outside guest mode, then the last round */
	pause_vcpus(m);
	atomic_store(&m->host_stop, 1);
	if (m->c.host_events)
		pthread_join(m->host_th, NULL);
	t = now_s();
	n = collect(m);
	if (n < 0 || copy_dirty(m)) {
		r = n < 0 ? (int)n : -EIO;
		goto fail_stopped;
	}
	m->rounds[m->nrounds++] = (struct round_stat){ (uint64_t)n, now_s() - t };
	progress(m, "stop-and-copy", m->nrounds - 1, (uint64_t)n, now_s() - t);
	if (!m->c.json)
		fputc('\n', stderr);
	bad = verify(m);
	ret = bad || atomic_load(&m->vcpu_error) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	goto finish;

fail:
	atomic_store(&m->host_stop, 1);
	if (m->c.host_events)
		pthread_join(m->host_th, NULL);
fail_stopped:
	fprintf(stderr, "\ngpamm migrate: %s\n", strerror(-r));
	ret = CLI_EXIT_FAIL;
finish:
	atomic_store(&m->stop, 1);
	atomic_store(&m->pause, 0);
	for (unsigned i = 0; i < m->c.vcpus; i++)
		pthread_join(m->th[i], NULL);
	gpamm_vm_stats(m->vm, &st);
	gpamm_vm_destroy(m->vm);
	m->vm = NULL;
	gpamm_sim_munmap(m->host, m->hva, m->c.mem);
	gpamm_host_stats(m->host, &hs);
	gpamm_live_objects(&live);
	if (m->nrounds >= 2)
		report(m, bad, now_s() - t0, &st, &hs, &live);
	if (m->c.plot && m->nrounds >= 2)
		plot(m);
	if (hs.frames_live || hs.pinned || live.vms || live.vcpus || live.tpools || live.threads)
		ret = CLI_EXIT_FAIL;
out:
	if (m->vm)
		gpamm_vm_destroy(m->vm);
	gpamm_host_destroy(m->host);
	free(m->vcpu);
	free(m->th);
	free(m->ring_fetch);
	free(m->bitmap);
	if (m->dest)
		munmap(m->dest, m->c.mem);
	free(m);
	return ret;
}

const struct cli_cmd cli_cmd_migrate = {
	"migrate", "live-migrate a running guest through the dirty log and verify the copy",
	run, usage,
};
