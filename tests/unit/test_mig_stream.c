// SPDX-License-Identifier: MIT
/*
 * The migration stream (tools/gpamm/mig/stream.c) and its transport
 * (mig/net.c): every record type round-trips (PAGES batches of 1, 255,
 * 256 and 257 pages, zero pages, several slots, a slot change in a batch),
 * over a memfd and over loopback TCP; the reader rejects, with -EPROTO and
 * a message naming the record, each malformation (checksum, payload,
 * unknown type, flags, reserved, lengths over the limit or not matching
 * the contents, order, magic, version, END's count and hash) and tells a
 * clean end (-ENODATA) from a truncation (-EPIPE); a seeded fuzz of
 * single-byte corruptions and truncations over a valid stream must be
 * rejected or decode identically. The net layer: an ephemeral listener,
 * connect retries and timeouts, receive and send timeouts, a closed peer
 * (no SIGPIPE), the rate cap, address parsing; and 256 MiB of PAGES over
 * loopback within a generous bound.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <xxhash.h>

#include "harness/tap.h"
#include "mig/net.h"
#include "mig/stream.h"

#define PS 4096u

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- streams in memory: a memfd behind a mig_conn ------------------------------ */

static void mem_open(struct mig_conn *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = memfd_create("mig", MFD_CLOEXEC);
	c->timeout_ms = 1000;
	ASSERT(c->fd >= 0);
}

/* The bytes written to @c so far (malloc'd), *@len of them; the fd rewound. */
static uint8_t *mem_bytes(struct mig_conn *c, size_t *len)
{
	off_t end = lseek(c->fd, 0, SEEK_END);
	uint8_t *b;

	ASSERT(end >= 0);
	b = malloc(end ? (size_t)end : 1);
	ASSERT(b);
	ASSERT_EQ(pread(c->fd, b, (size_t)end, 0), end);
	ASSERT_EQ(lseek(c->fd, 0, SEEK_SET), 0);
	*len = (size_t)end;
	return b;
}

/* A readable conn over @len bytes of @b. */
static void mem_from(struct mig_conn *c, const void *b, size_t len)
{
	mem_open(c);
	ASSERT_EQ(pwrite(c->fd, b, len, 0), len);
	ASSERT_EQ(lseek(c->fd, 0, SEEK_SET), 0);
}

/* ---- a reference stream ------------------------------------------------------ */

static void page_fill(uint8_t *p, uint32_t slot, uint64_t index)
{
	uint64_t s = (index + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)slot << 40) ^ 0x5bd1e995;

	for (unsigned i = 0; i < PS; i += 8) {
		uint64_t v = tap_xorshift(&s);

		memcpy(p + i, &v, 8);
	}
}

/* Zero pages in the reference stream: every index that is 3 mod 7. */
static bool page_is_zero(uint64_t index)
{
	return index % 7 == 3;
}

static struct mig_slot ref_slots[3] = {
	{ .slot = 0, .flags = 1, .gpa = 0, .size = 1024ull * PS },
	{ .slot = 5, .flags = 0, .gpa = 1ull << 32, .size = 512ull * PS },
	{ .slot = 9, .flags = 0, .gpa = 1ull << 33, .size = 300ull * PS },
};

static struct mig_config ref_config(void)
{
	return (struct mig_config){
		.page_shift = 12, .levels = 3, .vcpus = 4, .log_mode = MIG_LOG_RING,
		.ring_size = 4096, .nslots = 3, .slots = ref_slots, .seed = 0x1122334455667788ull,
		.hot_pct = 10, .hot_writes = 90, .rate = 123456,
	};
}

static void ref_state(struct mig_vcpu_state *v, uint32_t id)
{
	v->id = id;
	for (int i = 0; i < 32; i++)
		v->regs.gpr[i] = ((uint64_t)id << 56) ^ (uint64_t)i * 0x0101010101010101ull;
	v->regs.pc = 0xdead0000ull + id;
}

/* The page groups the reference stream sends: (slot, first index, count), each flushed. */
struct group { uint32_t slot; uint64_t first; uint32_t n; };
static const struct group groups[] = {
	{ 0, 0, 1 }, { 5, 10, 255 }, { 9, 0, 256 }, { 0, 100, 257 },
};
#define REF_PAGES_RECORDS 7 /* 1 + 1 + 1 + 2, then a slot change inside one batch: 2 */
/* The small reference stream (the rejection and fuzz tests): the same records, fewer pages. */
static const struct group small_groups[] = {
	{ 0, 0, 1 }, { 5, 10, 3 }, { 9, 0, 2 }, { 0, 100, 5 },
};

static uint8_t *ref_page;

/* The reference stream on @c: every record type. Returns the writer's END. */
static struct mig_end write_ref(struct mig_conn *c, struct mig_writer *w, bool small)
{
	const struct group *gs = small ? small_groups : groups;
	struct mig_config cfg = ref_config();
	struct mig_vcpu_state v[4];
	uint64_t discard[5] = { 0, 7, 1023, 1024, 1835 };
	struct mig_end e = { .memory_hash = 0xfeedface };
	uint8_t *pg = malloc(PS);

	ASSERT(pg);
	for (uint32_t i = 0; i < 4; i++)
		ref_state(&v[i], i * 3);
	ASSERT_EQ_INT(mig_writer_init(w, c, PS), 0);
	ASSERT_EQ_INT(mig_write_hello(w, &(struct mig_hello){ .version = MIG_VERSION,
		.channel = MIG_CH_MAIN, .session = 0xabcdef }), 0);
	ASSERT_EQ_INT(mig_write_config(w, &cfg), 0);
	for (size_t g = 0; g < 4; g++) {
		for (uint32_t i = 0; i < gs[g].n; i++) {
			uint64_t idx = gs[g].first + i;

			if (page_is_zero(idx)) {
				/* both ways of saying zero: NULL and zero bytes */
				memset(pg, 0, PS);
				ASSERT_EQ_INT(mig_pages_add(w, gs[g].slot, idx, idx % 2 ? NULL : pg), 0);
			} else {
				page_fill(pg, gs[g].slot, idx);
				ASSERT_EQ_INT(mig_pages_add(w, gs[g].slot, idx, pg), 0);
			}
		}
		ASSERT_EQ_INT(mig_pages_flush(w), 0);
		ASSERT_EQ_INT(mig_pages_flush(w), 0); /* nothing pending: no record */
	}
	ASSERT_EQ_INT(mig_write_round(w, &(struct mig_round){ .round = 1, .throttle_pct = 20,
		.pages = 769, .zero_pages = 110, .dirty_rate = 5000 }), 0);
	/* a slot change inside a batch: two records; the second left pending for SWITCHOVER */
	page_fill(pg, 5, 1);
	ASSERT_EQ_INT(mig_pages_add(w, 5, 1, pg), 0);
	page_fill(pg, 9, 2);
	ASSERT_EQ_INT(mig_pages_add(w, 9, 2, pg), 0);
	ASSERT_EQ_INT(mig_write_switchover(w, &(struct mig_switchover){ .postcopy = 1,
		.nvcpus = 4, .vcpus = v, .ndiscard = 5, .discard = discard }), 0);
	page_fill(pg, 9, 299);
	ASSERT_EQ_INT(mig_write_page(w, 9, 299, pg), 0);
	ASSERT_EQ_INT(mig_write_req(w, &(struct mig_req){ .slot = 5, .index = 511 }), 0);
	ASSERT_EQ_INT(mig_write_ack(w, &(struct mig_ack){ .what = MIG_ACK_RESUMED,
		.resume_ns = 42, .hash = 43 }), 0);
	ASSERT_EQ_INT(mig_write_ack(w, &(struct mig_ack){ .what = MIG_ACK_DONE,
		.resume_ns = 44, .hash = 45, .nvcpus = 2, .vcpus = v + 1 }), 0);
	ASSERT_EQ_INT(mig_write_end(w, &e), 0);
	free(pg);
	return e;
}

/* ---- reading a whole stream into a transcript ---------------------------------- */

struct transcript {
	XXH3_state_t *h;
	uint64_t pages, zero_pages, pages_records;
	bool check; /* compare page bytes with page_fill() */
	int bad_page;
};

static void tr_add(struct transcript *t, const void *p, size_t n)
{
	XXH3_64bits_update(t->h, p, n);
}

/* Structs field by field: their padding is not theirs to compare. */
static void tr_states(struct transcript *t, const struct mig_vcpu_state *v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		tr_add(t, &v[i].id, sizeof(v[i].id));
		tr_add(t, &v[i].regs, sizeof(v[i].regs));
	}
}

static int tr_page(void *arg, uint32_t slot, uint64_t index, const uint8_t *data)
{
	struct transcript *t = arg;

	tr_add(t, &slot, sizeof(slot));
	tr_add(t, &index, sizeof(index));
	t->pages++;
	if (!data) {
		t->zero_pages++;
		if (t->check && !page_is_zero(index))
			t->bad_page++;
		return 0;
	}
	tr_add(t, data, PS);
	if (t->check) {
		page_fill(ref_page, slot, index);
		if (page_is_zero(index) || memcmp(ref_page, data, PS))
			t->bad_page++;
	}
	return 0;
}

/*
 * Read and decode records until END (then the stream must end cleanly):
 * 0, or the first error (the reader's message in r->err). *@hash: a
 * digest of everything decoded.
 */
static int read_all(struct mig_conn *c, struct mig_reader *r, struct transcript *t, uint64_t *hash)
{
	int err;

	ASSERT_EQ_INT(mig_reader_init(r, c), 0);
	for (;;) {
		union {
			struct mig_hello h;
			struct mig_config c;
			struct mig_round o;
			struct mig_switchover s;
			struct mig_end e;
			struct mig_ack a;
			struct mig_req q;
		} u;
		uint32_t slot;
		uint64_t index;
		const uint8_t *data;

		err = mig_read_record(r);
		if (err)
			return err;
		tr_add(t, &r->type, sizeof(r->type));
		switch (r->type) {
		case MIG_HELLO:
			err = mig_decode_hello(r, &u.h);
			if (!err)
				tr_add(t, &u.h, sizeof(u.h));
			break;
		case MIG_CONFIG:
			err = mig_decode_config(r, &u.c);
			if (!err) {
				struct mig_slot *sl = u.c.slots;

				tr_add(t, sl, u.c.nslots * sizeof(*sl)); /* no padding in either */
				u.c.slots = NULL;
				tr_add(t, &u.c, sizeof(u.c));
				free(sl);
			}
			break;
		case MIG_PAGES:
			t->pages_records++;
			err = mig_decode_pages(r, tr_page, t);
			break;
		case MIG_ROUND:
			err = mig_decode_round(r, &u.o);
			if (!err)
				tr_add(t, &u.o, sizeof(u.o));
			break;
		case MIG_SWITCHOVER:
			err = mig_decode_switchover(r, &u.s);
			if (!err) {
				tr_states(t, u.s.vcpus, u.s.nvcpus);
				tr_add(t, u.s.discard, u.s.ndiscard * 8);
				tr_add(t, &u.s.postcopy, 4);
				free(u.s.vcpus);
				free(u.s.discard);
			}
			break;
		case MIG_END:
			err = mig_decode_end(r, &u.e);
			if (!err) {
				tr_add(t, &u.e, sizeof(u.e));
				*hash = XXH3_64bits_digest(t->h);
				err = mig_read_record(r);
				return err == -ENODATA ? 0 : err ? err : -EPROTO;
			}
			break;
		case MIG_ACK:
			err = mig_decode_ack(r, &u.a);
			if (!err) {
				tr_states(t, u.a.vcpus, u.a.nvcpus);
				tr_add(t, &u.a.what, 4);
				tr_add(t, &u.a.resume_ns, 8);
				tr_add(t, &u.a.hash, 8);
				free(u.a.vcpus);
			}
			break;
		case MIG_REQ:
			err = mig_decode_req(r, &u.q);
			if (!err) {
				tr_add(t, &u.q.slot, 4);
				tr_add(t, &u.q.index, 8);
			}
			break;
		case MIG_PAGE:
			err = mig_decode_page(r, &slot, &index, &data);
			if (!err) {
				tr_add(t, &slot, 4);
				tr_add(t, &index, 8);
				tr_add(t, data, PS);
			}
			break;
		default:
			err = -EPROTO;
		}
		if (err)
			return err;
	}
}

/* read_all() over @len bytes of @b: the error, *@hash when 0; r->err copied to @why. */
static int read_bytes(const void *b, size_t len, uint64_t *hash, char *why, size_t whylen)
{
	struct mig_conn c;
	struct mig_reader r;
	struct transcript t = { .h = XXH3_createState() };
	int err;

	ASSERT(t.h);
	XXH3_64bits_reset(t.h);
	mem_from(&c, b, len);
	err = read_all(&c, &r, &t, hash);
	if (why)
		snprintf(why, whylen, "%s", r.err);
	mig_reader_free(&r);
	mig_close(&c);
	XXH3_freeState(t.h);
	return err;
}

/* The (small) reference stream's bytes. */
static uint8_t *ref_bytes(size_t *len)
{
	struct mig_conn c;
	struct mig_writer w;
	uint8_t *b;

	mem_open(&c);
	write_ref(&c, &w, true);
	b = mem_bytes(&c, len);
	ASSERT_EQ(w.bytes, *len);
	mig_writer_free(&w);
	mig_close(&c);
	return b;
}

/* Offsets of each record's header in a stream. */
static unsigned record_offsets(const uint8_t *b, size_t len, size_t *off, unsigned max)
{
	unsigned n = 0;

	for (size_t o = 0; o + MIG_HDR_LEN <= len && n < max; n++) {
		uint32_t l = (uint32_t)b[o + 4] | (uint32_t)b[o + 5] << 8 | (uint32_t)b[o + 6] << 16 |
			     (uint32_t)b[o + 7] << 24;

		off[n] = o;
		o += MIG_HDR_LEN + l;
	}
	return n;
}

/* ---- round trips ------------------------------------------------------------- */

static void test_roundtrip_memfd(void)
{
	struct mig_conn c;
	struct mig_writer w;
	struct mig_reader r;
	struct mig_end e;
	struct transcript t = { .h = XXH3_createState(), .check = true };
	uint64_t hash, want_pages = 0, want_zero = 0;
	size_t len;
	uint8_t *b;

	ASSERT(t.h);
	XXH3_64bits_reset(t.h);
	mem_open(&c);
	e = write_ref(&c, &w, false);
	for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++)
		for (uint32_t i = 0; i < groups[g].n; i++) {
			want_pages++;
			want_zero += page_is_zero(groups[g].first + i);
		}
	want_pages += 2 + 1; /* the two of the slot change, the PAGE */
	ASSERT_EQ(w.pages, want_pages);
	ASSERT_EQ(w.zero_pages, want_zero);
	/* HELLO CONFIG 6xPAGES ROUND SWITCHOVER PAGE REQ 2xACK, then END */
	ASSERT_EQ(e.records, 2 + REF_PAGES_RECORDS + 1 + 1 + 1 + 1 + 2);
	ASSERT_EQ(w.records, e.records + 1);
	ASSERT_EQ(e.pages, want_pages);
	b = mem_bytes(&c, &len);
	ASSERT_EQ(w.bytes, len);
	ASSERT_EQ(c.sent, len);
	/* zero pages took no bytes: the PAGES payloads add up */
	ASSERT(len < (want_pages - want_zero) * (PS + 8) + 20000);

	ASSERT_EQ_INT(read_all(&c, &r, &t, &hash), 0);
	ASSERT_EQ(t.pages, want_pages - 1);
	ASSERT_EQ(t.zero_pages, want_zero);
	ASSERT_EQ(t.pages_records, REF_PAGES_RECORDS);
	ASSERT_EQ(t.bad_page, 0);
	ASSERT_EQ(r.records, w.records);
	ASSERT_EQ(r.chain, w.chain);
	ASSERT_EQ(r.page_size, PS);
	ASSERT_EQ(r.guest_pages, 1024 + 512 + 300);
	mig_reader_free(&r);
	mig_close(&c);
	mig_writer_free(&w);
	XXH3_freeState(t.h);
	free(b);
}

/* Every record, field by field. */
static void test_roundtrip_fields(void)
{
	struct mig_conn c;
	struct mig_writer w;
	struct mig_reader r;
	struct mig_config cfg;
	struct mig_switchover s;
	struct mig_ack a;
	struct mig_hello h;
	struct mig_round o;
	struct mig_req q;
	struct mig_end e;
	struct mig_vcpu_state v;
	uint32_t slot;
	uint64_t index;
	const uint8_t *data;

	mem_open(&c);
	write_ref(&c, &w, false);
	mig_writer_free(&w);
	ASSERT_EQ(lseek(c.fd, 0, SEEK_SET), 0);
	ASSERT_EQ_INT(mig_reader_init(&r, &c), 0);

	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ(r.type, MIG_HELLO);
	ASSERT_EQ_INT(mig_decode_hello(&r, &h), 0);
	ASSERT_EQ(h.version, MIG_VERSION);
	ASSERT_EQ(h.channel, MIG_CH_MAIN);
	ASSERT_EQ(h.session, 0xabcdef);
	ASSERT_EQ_INT(mig_decode_end(&r, &e), -EPROTO); /* the wrong decoder */
	ASSERT(strstr(r.err, "record 1"));

	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_decode_config(&r, &cfg), 0);
	ASSERT_EQ(cfg.page_shift, 12);
	ASSERT_EQ(cfg.levels, 3);
	ASSERT_EQ(cfg.vcpus, 4);
	ASSERT_EQ(cfg.log_mode, MIG_LOG_RING);
	ASSERT_EQ(cfg.ring_size, 4096);
	ASSERT_EQ(cfg.nslots, 3);
	ASSERT_EQ(cfg.seed, 0x1122334455667788ull);
	ASSERT_EQ(cfg.hot_pct, 10);
	ASSERT_EQ(cfg.hot_writes, 90);
	ASSERT_EQ(cfg.rate, 123456);
	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(cfg.slots[i].slot, ref_slots[i].slot);
		ASSERT_EQ(cfg.slots[i].flags, ref_slots[i].flags);
		ASSERT_EQ(cfg.slots[i].gpa, ref_slots[i].gpa);
		ASSERT_EQ(cfg.slots[i].size, ref_slots[i].size);
	}
	free(cfg.slots);

	for (int i = 0; i < 5; i++) {
		ASSERT_EQ_INT(mig_read_record(&r), 0);
		ASSERT_EQ(r.type, MIG_PAGES);
	}
	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_decode_round(&r, &o), 0);
	ASSERT_EQ(o.round, 1);
	ASSERT_EQ(o.throttle_pct, 20);
	ASSERT_EQ(o.pages, 769);
	ASSERT_EQ(o.zero_pages, 110);
	ASSERT_EQ(o.dirty_rate, 5000);
	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ(r.type, MIG_PAGES);

	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_decode_switchover(&r, &s), 0);
	ASSERT_EQ(s.postcopy, 1);
	ASSERT_EQ(s.nvcpus, 4);
	for (uint32_t i = 0; i < 4; i++) {
		ref_state(&v, i * 3);
		ASSERT_EQ(s.vcpus[i].id, v.id);
		ASSERT(!memcmp(&v.regs, &s.vcpus[i].regs, sizeof(v.regs)));
	}
	ASSERT_EQ(s.ndiscard, 5);
	ASSERT_EQ(s.discard[0], 0);
	ASSERT_EQ(s.discard[4], 1835);
	free(s.vcpus);
	free(s.discard);

	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_decode_page(&r, &slot, &index, &data), 0);
	ASSERT_EQ(slot, 9);
	ASSERT_EQ(index, 299);
	page_fill(ref_page, 9, 299);
	ASSERT(!memcmp(data, ref_page, PS));

	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_decode_req(&r, &q), 0);
	ASSERT_EQ(q.slot, 5);
	ASSERT_EQ(q.index, 511);

	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_decode_ack(&r, &a), 0);
	ASSERT_EQ(a.what, MIG_ACK_RESUMED);
	ASSERT_EQ(a.resume_ns, 42);
	ASSERT_EQ(a.hash, 43);
	ASSERT_EQ(a.nvcpus, 0);
	free(a.vcpus);
	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_decode_ack(&r, &a), 0);
	ASSERT_EQ(a.what, MIG_ACK_DONE);
	ASSERT_EQ(a.nvcpus, 2);
	ref_state(&v, 6);
	ASSERT_EQ(a.vcpus[1].id, 6);
	ASSERT(!memcmp(&v.regs, &a.vcpus[1].regs, sizeof(v.regs)));
	free(a.vcpus);

	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_decode_end(&r, &e), 0);
	ASSERT_EQ(e.memory_hash, 0xfeedface);
	ASSERT_EQ(e.records, r.records - 1);
	ASSERT_EQ_INT(mig_read_record(&r), -ENODATA);
	mig_reader_free(&r);
	mig_close(&c);
}

struct writer_job {
	struct mig_conn *c;
	int err;
	uint64_t npages;      /* 0: the reference stream */
	struct mig_writer w;
};

static void *writer_thread(void *arg)
{
	struct writer_job *j = arg;

	if (!j->npages) {
		/* its ASSERTs (not for helper threads) do not fire on a good run */
		write_ref(j->c, &j->w, false);
		mig_writer_free(&j->w);
	} else {
		uint8_t *pg = malloc(PS);
		struct mig_config cfg = { .page_shift = 12, .levels = 3, .vcpus = 1, .nslots = 1,
			.slots = &(struct mig_slot){ .slot = 0, .size = j->npages * PS } };
		struct mig_end e = { 0 };
		int err = !pg ? -ENOMEM : mig_writer_init(&j->w, j->c, PS);

		if (!err)
			err = mig_write_hello(&j->w, &(struct mig_hello){ .version = MIG_VERSION });
		if (!err)
			err = mig_write_config(&j->w, &cfg);
		for (uint64_t i = 0; !err && i < j->npages; i++) {
			memset(pg, (int)(i & 0xff) | 1, PS);
			memcpy(pg, &i, 8);
			err = mig_pages_add(&j->w, 0, i, pg);
		}
		if (!err)
			err = mig_write_end(&j->w, &e);
		j->err = err;
		mig_writer_free(&j->w);
		free(pg);
	}
	mig_close(j->c);
	return NULL;
}

static void tcp_pair(struct mig_conn *a, struct mig_conn *b)
{
	uint16_t port;
	int lfd = mig_listen("127.0.0.1", 0, &port);

	ASSERT(lfd >= 0);
	ASSERT(port != 0);
	ASSERT_EQ_INT(mig_connect("127.0.0.1", port, 2000, a), 0);
	ASSERT_EQ_INT(mig_accept(lfd, 2000, b), 0);
	close(lfd);
	a->timeout_ms = b->timeout_ms = 10000;
}

static void test_roundtrip_tcp(void)
{
	struct mig_conn a, b;
	struct mig_reader r;
	struct transcript t = { .h = XXH3_createState(), .check = true };
	struct writer_job j = { .c = &a };
	uint64_t hash, want;
	size_t len;
	uint8_t *ref;
	pthread_t th;
	struct mig_conn mc;
	struct mig_writer mw;

	mem_open(&mc);
	write_ref(&mc, &mw, false);
	mig_writer_free(&mw);
	ref = mem_bytes(&mc, &len);
	mig_close(&mc);

	ASSERT(t.h);
	XXH3_64bits_reset(t.h);
	ASSERT_EQ_INT(read_bytes(ref, len, &want, NULL, 0), 0);
	tcp_pair(&a, &b);
	ASSERT_EQ_INT(pthread_create(&th, NULL, writer_thread, &j), 0);
	ASSERT_EQ_INT(read_all(&b, &r, &t, &hash), 0);
	pthread_join(th, NULL);
	ASSERT_EQ(hash, want);
	ASSERT_EQ(t.bad_page, 0);
	ASSERT_EQ(b.received, len);
	mig_reader_free(&r);
	mig_close(&b);
	XXH3_freeState(t.h);
	free(ref);
}

/* A clean close between records: -ENODATA (a socketpair: not TCP, still a socket). */
static void test_clean_close(void)
{
	int sv[2];
	struct mig_conn a = { .timeout_ms = 1000 }, b = { .timeout_ms = 1000 };
	struct mig_writer w;
	struct mig_reader r;
	struct mig_hello h;

	ASSERT_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	a.fd = sv[0];
	b.fd = sv[1];
	ASSERT_EQ_INT(mig_writer_init(&w, &a, 0), 0);
	ASSERT_EQ_INT(mig_write_hello(&w, &(struct mig_hello){ .channel = MIG_CH_POSTCOPY,
		.session = 7 }), 0);
	ASSERT_EQ_INT(mig_pages_add(&w, 0, 0, NULL), -EINVAL); /* no page size */
	mig_writer_free(&w);
	mig_close(&a);
	ASSERT_EQ_INT(mig_reader_init(&r, &b), 0);
	ASSERT_EQ_INT(mig_read_record(&r), 0);
	ASSERT_EQ_INT(mig_decode_hello(&r, &h), 0);
	ASSERT_EQ(h.channel, MIG_CH_POSTCOPY);
	ASSERT_EQ(h.session, 7);
	ASSERT_EQ_INT(mig_read_record(&r), -ENODATA);
	mig_reader_free(&r);
	mig_close(&b);
}

/* ---- rejections -------------------------------------------------------------- */

/* The bytes of one record as a writer makes them, with a given header patched and re-summed. */
static size_t raw_record(uint8_t *out, unsigned type, unsigned flags, unsigned reserved,
			 uint32_t len_field, const void *payload, uint32_t len)
{
	out[0] = (uint8_t)type;
	out[1] = (uint8_t)flags;
	out[2] = (uint8_t)reserved;
	out[3] = (uint8_t)(reserved >> 8);
	for (int i = 0; i < 4; i++)
		out[4 + i] = (uint8_t)(len_field >> (8 * i));
	{
		uint8_t *tmp = malloc(8 + (size_t)len);
		uint64_t cs;

		ASSERT(tmp);
		memcpy(tmp, out, 8);
		if (len)
			memcpy(tmp + 8, payload, len);
		cs = XXH3_64bits(tmp, 8 + (size_t)len);
		free(tmp);
		for (int i = 0; i < 8; i++)
			out[8 + i] = (uint8_t)(cs >> (8 * i));
	}
	if (len)
		memcpy(out + 16, payload, len);
	return 16 + (size_t)len;
}

/* A stream of HELLO and CONFIG (ref), then @extra; read to the end: the first error. */
struct built {
	uint8_t *b;
	size_t len;
};

static struct built prefix(bool config)
{
	struct mig_conn c;
	struct mig_writer w;
	struct mig_config cfg = ref_config();
	struct built s;

	mem_open(&c);
	ASSERT_EQ_INT(mig_writer_init(&w, &c, PS), 0);
	ASSERT_EQ_INT(mig_write_hello(&w, &(struct mig_hello){ .version = MIG_VERSION }), 0);
	if (config)
		ASSERT_EQ_INT(mig_write_config(&w, &cfg), 0);
	mig_writer_free(&w);
	s.b = mem_bytes(&c, &s.len);
	mig_close(&c);
	return s;
}

/* @pre's records then one raw record: what reading all gives, and the message. */
static int with_record(bool config, unsigned type, unsigned flags, unsigned reserved,
		       uint32_t len_field, const void *payload, uint32_t len, char *why)
{
	struct built s = prefix(config);
	uint8_t *b = malloc(s.len + 16 + len);
	uint64_t hash;
	int err;

	ASSERT(b);
	memcpy(b, s.b, s.len);
	raw_record(b + s.len, type, flags, reserved, len_field, payload, len);
	err = read_bytes(b, s.len + 16 + len, &hash, why, why ? 200 : 0);
	free(b);
	free(s.b);
	return err;
}

#define EXPECT_REJECT(call, num, words)                                              \
	do {                                                                          \
		char why__[200] = "";                                                 \
		int e__ = (call);                                                     \
		ASSERT_EQ_INT(e__, -EPROTO);                                          \
		ASSERT_MSG(strstr(why__, "record " #num), "message: %s", why__);      \
		ASSERT_MSG(strstr(why__, words), "message: %s", why__);               \
		tap_diag("rejected: %s", why__);                                      \
	} while (0)

static void put32le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64le(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void test_reject_header(void)
{
	uint8_t p[64] = { 0 };

	EXPECT_REJECT(with_record(true, 12, 0, 0, 4, p, 4, why__), 3, "unknown");
	EXPECT_REJECT(with_record(true, 0, 0, 0, 4, p, 4, why__), 3, "unknown");
	EXPECT_REJECT(with_record(true, 255, 0, 0, 4, p, 4, why__), 3, "unknown");
	EXPECT_REJECT(with_record(true, MIG_REQ, 0, 1, 12, p, 12, why__), 3, "reserved");
	EXPECT_REJECT(with_record(true, MIG_REQ, 0, 0x8000, 12, p, 12, why__), 3, "reserved");
	EXPECT_REJECT(with_record(true, MIG_REQ, 4, 0, 12, p, 12, why__), 3, "flags");
	/* lengths over the type's limit, refused before any payload is read or allocated */
	EXPECT_REJECT(with_record(true, MIG_REQ, 0, 0, 13, p, 13, why__), 3, "length");
	EXPECT_REJECT(with_record(true, MIG_ROUND, 0, 0, 31, p, 31, why__), 3, "length");
	EXPECT_REJECT(with_record(true, MIG_END, 0, 0, 0xffffffffu, p, 0, why__), 3, "length");
	EXPECT_REJECT(with_record(true, MIG_PAGES, 0, 0, 0xffffffffu, p, 0, why__), 3, "length");
	EXPECT_REJECT(with_record(true, MIG_PAGES, 0, 0, 8 + 256 * (8 + PS) + 1, p, 0, why__), 3,
		      "length");
	EXPECT_REJECT(with_record(true, MIG_PAGES, 0, 0, 7, p, 7, why__), 3, "length");
	EXPECT_REJECT(with_record(true, MIG_PAGE, 0, 0, 12 + PS + 1, p, 0, why__), 3, "length");
	EXPECT_REJECT(with_record(true, MIG_ACK, 0, 0, 24 + 256 * 268 + MIG_ACK_DONE_TAIL + 1, p, 0, why__),
		      3, "length");
	EXPECT_REJECT(with_record(false, MIG_CONFIG, 0, 0, 48 + 24 * 32768, p, 0, why__), 2,
		      "length");
	EXPECT_REJECT(with_record(true, MIG_SWITCHOVER, 0, 0, 0xfffffff0u, p, 0, why__), 3,
		      "length");
	/* the length in the header and the bytes that follow disagree */
	ASSERT_EQ_INT(with_record(true, MIG_REQ, 0, 0, 12, p, 0, NULL), -EPIPE);
	EXPECT_REJECT(with_record(true, MIG_REQ, 0, 0, 12, p, 13, why__), 3, "checksum");
}

static void test_reject_order(void)
{
	uint8_t p[8 + 8 + PS] = { 0 };
	struct built s = prefix(false);
	uint8_t hello[24];

	/* PAGES and PAGE before CONFIG: the page size is unknown */
	put32le(p + 4, 1);
	EXPECT_REJECT(with_record(false, MIG_PAGES, 0, 0, 16 + PS, p, 16 + PS, why__), 2,
		      "before CONFIG");
	EXPECT_REJECT(with_record(false, MIG_PAGE, 0, 0, 12 + PS, p, 12 + PS, why__), 2,
		      "before CONFIG");
	EXPECT_REJECT(with_record(false, MIG_SWITCHOVER, 0, 0, 8, p, 8, why__), 2,
		      "before CONFIG");
	/* a second HELLO, a second CONFIG */
	memcpy(hello, s.b + 16, 24);
	EXPECT_REJECT(with_record(true, MIG_HELLO, 0, 0, 24, hello, 24, why__), 3, "first");
	{
		struct built c = prefix(true);

		EXPECT_REJECT(with_record(true, MIG_CONFIG, 0, 0, (uint32_t)(c.len - s.len - 16),
					  c.b + s.len + 16, (uint32_t)(c.len - s.len - 16), why__),
			      3, "second CONFIG");
		free(c.b);
	}
	/* a stream must start with HELLO only if it has one: a bare ROUND is fine */
	{
		uint8_t b[64];
		size_t n = raw_record(b, MIG_ROUND, 0, 0, 32, p, 32);
		struct mig_conn c;
		struct mig_reader r;

		mem_from(&c, b, n);
		ASSERT_EQ_INT(mig_reader_init(&r, &c), 0);
		ASSERT_EQ_INT(mig_read_record(&r), 0);
		ASSERT_EQ_INT(mig_read_record(&r), -ENODATA);
		mig_reader_free(&r);
		mig_close(&c);
	}
	free(s.b);
}

static void test_reject_hello(void)
{
	uint8_t p[24];

	memcpy(p, MIG_MAGIC, 8);
	put32le(p + 8, 2);
	put32le(p + 12, 0);
	put64le(p + 16, 1);
	{
		uint8_t b[64];
		size_t n;
		uint64_t hash;
		char why__[200];

		n = raw_record(b, MIG_HELLO, 0, 0, 24, p, 24);
		ASSERT_EQ_INT(read_bytes(b, n, &hash, why__, 200), -EPROTO);
		ASSERT_MSG(strstr(why__, "record 1") && strstr(why__, "version 2"), "%s", why__);
		tap_diag("rejected: %s", why__);
		put32le(p + 8, 0);
		n = raw_record(b, MIG_HELLO, 0, 0, 24, p, 24);
		ASSERT_EQ_INT(read_bytes(b, n, &hash, why__, 200), -EPROTO);
		ASSERT_MSG(strstr(why__, "version 0"), "%s", why__);
		put32le(p + 8, 1);
		p[3] = 'X';
		n = raw_record(b, MIG_HELLO, 0, 0, 24, p, 24);
		ASSERT_EQ_INT(read_bytes(b, n, &hash, why__, 200), -EPROTO);
		ASSERT_MSG(strstr(why__, "record 1") && strstr(why__, "magic"), "%s", why__);
		tap_diag("rejected: %s", why__);
		memcpy(p, MIG_MAGIC, 8);
		p[7] = '!'; /* the NUL is part of the magic */
		n = raw_record(b, MIG_HELLO, 0, 0, 24, p, 24);
		ASSERT_EQ_INT(read_bytes(b, n, &hash, why__, 200), -EPROTO);
		memcpy(p, MIG_MAGIC, 8);
		put32le(p + 12, 2);
		n = raw_record(b, MIG_HELLO, 0, 0, 24, p, 24);
		ASSERT_EQ_INT(read_bytes(b, n, &hash, why__, 200), -EPROTO);
		ASSERT_MSG(strstr(why__, "channel"), "%s", why__);
	}
}

/* Contents that do not add up, each behind a valid HELLO and CONFIG (record 3). */
static void test_reject_contents(void)
{
	static uint8_t p[8 + 258 * (8 + PS) + 64];
	uint8_t st[8 + 2 * 268 + 8 + 8 * 4];

	/* PAGES: count says 2, one page of bytes */
	memset(p, 0, sizeof(p));
	put32le(p, 0);
	put32le(p + 4, 2);
	put64le(p + 8, 1);
	p[16] = 1;
	EXPECT_REJECT(with_record(true, MIG_PAGES, 0, 0, 16 + PS, p, 16 + PS, why__), 3,
		      "past the end");
	/* count 1 and bytes left over */
	put32le(p + 4, 1);
	EXPECT_REJECT(with_record(true, MIG_PAGES, 0, 0, 16 + PS + 8, p, 16 + PS + 8, why__), 3,
		      "take");
	/* a zero page and then page bytes nobody counted */
	put64le(p + 8, 1 | MIG_ZERO_PAGE);
	EXPECT_REJECT(with_record(true, MIG_PAGES, 0, 0, 16 + PS, p, 16 + PS, why__), 3, "take");
	/* 257 pages in one record (zero pages: short enough for the length limit) */
	put32le(p + 4, 257);
	for (int i = 0; i < 257; i++)
		put64le(p + 8 + 8 * i, (uint64_t)i | MIG_ZERO_PAGE);
	EXPECT_REJECT(with_record(true, MIG_PAGES, 0, 0, 8 + 257 * 8, p, 8 + 257 * 8, why__), 3,
		      "at most");
	/* a slot that CONFIG does not have, an index beyond the slot */
	put32le(p, 4);
	put32le(p + 4, 1);
	put64le(p + 8, 0 | MIG_ZERO_PAGE);
	EXPECT_REJECT(with_record(true, MIG_PAGES, 0, 0, 16, p, 16, why__), 3, "not in CONFIG");
	put32le(p, 9);
	put64le(p + 8, 300 | MIG_ZERO_PAGE);
	EXPECT_REJECT(with_record(true, MIG_PAGES, 0, 0, 16, p, 16, why__), 3, "beyond");
	put32le(p, 5);
	put64le(p + 4, 512);
	EXPECT_REJECT(with_record(true, MIG_REQ, 0, 0, 12, p, 12, why__), 3, "beyond");

	/* SWITCHOVER: 257 vCPUs; a discard count beyond the length; a bad postcopy */
	memset(st, 0, sizeof(st));
	put32le(st, 0);
	put32le(st + 4, 257);
	EXPECT_REJECT(with_record(true, MIG_SWITCHOVER, 0, 0, 8, st, 8, why__), 3, "vCPUs");
	put32le(st, 1);
	put32le(st + 4, 2);
	put32le(st + 8, 0);
	put32le(st + 8 + 268, 1);
	put64le(st + 8 + 2 * 268, 5); /* 5 announced, 4 there */
	EXPECT_REJECT(with_record(true, MIG_SWITCHOVER, 0, 0, sizeof(st), st, sizeof(st), why__),
		      3, "discard count");
	put64le(st + 8 + 2 * 268, 0xffffffffffffffffull);
	EXPECT_REJECT(with_record(true, MIG_SWITCHOVER, 0, 0, sizeof(st), st, sizeof(st), why__),
		      3, "discard count");
	put64le(st + 8 + 2 * 268, 3);
	EXPECT_REJECT(with_record(true, MIG_SWITCHOVER, 0, 0, sizeof(st), st, sizeof(st), why__),
		      3, "contents take");
	put64le(st + 8 + 2 * 268, 4);
	put64le(st + 8 + 2 * 268 + 8, 1836); /* beyond 1024 + 512 + 300 pages */
	EXPECT_REJECT(with_record(true, MIG_SWITCHOVER, 0, 0, sizeof(st), st, sizeof(st), why__),
		      3, "beyond the guest");
	put64le(st + 8 + 2 * 268 + 8, 1835);
	put32le(st + 8 + 268, 0); /* the same vCPU twice */
	EXPECT_REJECT(with_record(true, MIG_SWITCHOVER, 0, 0, sizeof(st), st, sizeof(st), why__),
		      3, "vCPU id");
	put32le(st + 8 + 268, 1);
	put32le(st, 2);
	EXPECT_REJECT(with_record(true, MIG_SWITCHOVER, 0, 0, sizeof(st), st, sizeof(st), why__),
		      3, "postcopy");
	put32le(st, 0); /* no postcopy: no discard part may follow */
	EXPECT_REJECT(with_record(true, MIG_SWITCHOVER, 0, 0, sizeof(st), st, sizeof(st), why__),
		      3, "contents take");

	/* ACK: unknown what; DONE with a count that does not match */
	memset(st, 0, sizeof(st));
	put32le(st, 3);
	EXPECT_REJECT(with_record(true, MIG_ACK, 0, 0, 20, st, 20, why__), 3, "what");
	put32le(st, MIG_ACK_DONE);
	put32le(st + 20, 2);
	EXPECT_REJECT(with_record(true, MIG_ACK, 0, 0, 24 + 268, st, 24 + 268, why__), 3, "done");
	put32le(st, MIG_ACK_RESUMED);
	EXPECT_REJECT(with_record(true, MIG_ACK, 0, 0, 24, st, 24, why__), 3, "resumed");

	/* CONFIG: slot count and length disagree; bad page shift; a slot twice */
	{
		struct built c = prefix(true), h = prefix(false);
		uint32_t n = (uint32_t)(c.len - h.len - 16);
		uint8_t *cp = malloc(n + 24);

		ASSERT(cp);
		memcpy(cp, c.b + h.len + 16, n);
		put32le(cp + 20, 4);
		EXPECT_REJECT(with_record(false, MIG_CONFIG, 0, 0, n, cp, n, why__), 2, "slots");
		put32le(cp + 20, 3);
		put32le(cp, 13);
		EXPECT_REJECT(with_record(false, MIG_CONFIG, 0, 0, n, cp, n, why__), 2, "page_shift");
		put32le(cp, 12);
		put32le(cp + 24 + 24, 0); /* slot 5 renamed 0 */
		EXPECT_REJECT(with_record(false, MIG_CONFIG, 0, 0, n, cp, n, why__), 2, "twice");
		put32le(cp + 24 + 24, 5);
		put64le(cp + 24 + 24 + 16, 100); /* a size that is not whole pages */
		EXPECT_REJECT(with_record(false, MIG_CONFIG, 0, 0, n, cp, n, why__), 2, "unaligned");
		put64le(cp + 24 + 24 + 16, 512 * PS);
		put32le(cp + 8, 0);
		EXPECT_REJECT(with_record(false, MIG_CONFIG, 0, 0, n, cp, n, why__), 2, "vCPUs");
		free(cp);
		free(c.b);
		free(h.b);
	}
}

/* Bytes of the reference stream changed: checksums, truncations, END. */
static void test_reject_corruption(void)
{
	size_t len, off[64];
	uint8_t *b = ref_bytes(&len), *m = malloc(len);
	unsigned n = record_offsets(b, len, off, 64);
	uint64_t hash;
	char why[200];
	int err;

	ASSERT(m);
	ASSERT(n >= 10);
	for (unsigned k = 0; k < n; k++) {
		char want[32], want2[32];

		snprintf(want, sizeof(want), "record %u (", k + 1);
		snprintf(want2, sizeof(want2), "record %u:", k + 1);
		/* one byte of the checksum */
		memcpy(m, b, len);
		m[off[k] + 8 + k % 8] ^= 0x40;
		ASSERT_EQ_INT(read_bytes(m, len, &hash, why, sizeof(why)), -EPROTO);
		ASSERT_MSG(strstr(why, want) && strstr(why, "checksum"), "%s", why);
		/* one byte of the payload (its last) */
		memcpy(m, b, len);
		m[(k + 1 < n ? off[k + 1] : len) - 1] ^= 1;
		ASSERT_EQ_INT(read_bytes(m, len, &hash, why, sizeof(why)), -EPROTO);
		ASSERT_MSG(strstr(why, want) && strstr(why, "checksum"), "%s", why);
		/* truncated: at the record's start (clean), in its header, in its payload */
		ASSERT_EQ_INT(read_bytes(b, off[k], &hash, why, sizeof(why)), -ENODATA);
		ASSERT_EQ_INT(read_bytes(b, off[k] + 1, &hash, why, sizeof(why)), -EPIPE);
		ASSERT_MSG(strstr(why, want2) && strstr(why, "truncated"), "%s", why);
		ASSERT_EQ_INT(read_bytes(b, off[k] + 15, &hash, why, sizeof(why)), -EPIPE);
		ASSERT_EQ_INT(read_bytes(b, off[k] + 17, &hash, why, sizeof(why)), -EPIPE);
		ASSERT_MSG(strstr(why, want) && strstr(why, "truncated"), "%s", why);
		err = read_bytes(b, (k + 1 < n ? off[k + 1] : len) - 1, &hash, why, sizeof(why));
		ASSERT_EQ_INT(err, -EPIPE);
	}
	tap_diag("e.g. %s", why);
	free(m);
	free(b);
}

/* END with a record count or a stream hash that is off. */
static void test_reject_end(void)
{
	size_t len, off[64];
	uint8_t *b = ref_bytes(&len), *m = malloc(len);
	unsigned n = record_offsets(b, len, off, 64);
	uint8_t e[40];
	uint64_t hash;
	char why[200];

	ASSERT(m);
	memcpy(e, b + off[n - 1] + 16, 40);
	for (int which = 0; which < 3; which++) {
		uint8_t ee[40];

		memcpy(ee, e, 40);
		if (which == 0)
			ee[16] ^= 1; /* records */
		else if (which == 1)
			ee[24] ^= 0x80; /* stream hash */
		memcpy(m, b, off[n - 1]);
		raw_record(m + off[n - 1], MIG_END, 0, 0, 40, ee, 40);
		if (which == 2) {
			ASSERT_EQ_INT(read_bytes(m, len, &hash, why, sizeof(why)), 0);
			continue;
		}
		ASSERT_EQ_INT(read_bytes(m, len, &hash, why, sizeof(why)), -EPROTO);
		ASSERT_MSG(strstr(why, "END") && strstr(why, which ? "stream hash" : "records"), "%s", why);
		tap_diag("rejected: %s", why);
	}
	/* a record left out (with checksums intact): END's count and hash catch it */
	{
		size_t cut = off[3], next = off[4], ml = len - (next - cut);

		memcpy(m, b, cut);
		memcpy(m + cut, b + next, len - next);
		ASSERT_EQ_INT(read_bytes(m, ml, &hash, why, sizeof(why)), -EPROTO);
		ASSERT_MSG(strstr(why, "END"), "%s", why);
		/* two records swapped: the count holds, the hash does not */
		memcpy(m, b, len);
		memcpy(m + off[3], b + off[4], off[5] - off[4]);
		memcpy(m + off[3] + (off[5] - off[4]), b + off[3], off[4] - off[3]);
		ASSERT_EQ_INT(read_bytes(m, len, &hash, why, sizeof(why)), -EPROTO);
		ASSERT_MSG(strstr(why, "stream hash"), "%s", why);
	}
	/* a second END: a record after END */
	{
		uint8_t *m2 = malloc(len + 56);

		ASSERT(m2);
		memcpy(m2, b, len);
		memcpy(m2 + len, b + off[n - 1], 56);
		ASSERT_EQ_INT(read_bytes(m2, len + 56, &hash, why, sizeof(why)), -EPROTO);
		ASSERT_MSG(strstr(why, "after END"), "%s", why);
		free(m2);
	}
	free(m);
	free(b);
}

/* Single-byte corruptions and truncations at random: rejected, or the same decode. */
static void test_fuzz(void)
{
	struct tap_rng rng;
	uint64_t seed = tap_seed(), want, hash;
	size_t len;
	uint8_t *b = ref_bytes(&len), *m = malloc(len);
	unsigned iters = (unsigned)(3000 * tap_scale()), rejected = 0, same = 0, trunc = 0;
	int err;

	ASSERT(m);
	tap_rng_seed(&rng, seed ^ 0x5eed);
	tap_diag("fuzz seed %" PRIu64 ", %u corruptions of a %zu-byte stream", seed, iters, len);
	ASSERT_EQ_INT(read_bytes(b, len, &want, NULL, 0), 0);
	memcpy(m, b, len);
	for (unsigned i = 0; i < iters; i++) {
		/* half the time in a header (where the interesting fields are) */
		size_t off[64], pos;
		unsigned n = record_offsets(b, len, off, 64);
		uint8_t x = (uint8_t)(1 + tap_below(&rng, 255));

		if (tap_below(&rng, 2))
			pos = off[tap_below(&rng, n)] + tap_below(&rng, MIG_HDR_LEN);
		else
			pos = tap_below(&rng, len);
		m[pos] ^= x;
		err = read_bytes(m, len, &hash, NULL, 0);
		m[pos] ^= x;
		ASSERT_MSG(err || hash == want, "byte %zu ^ 0x%02x: decoded differently (seed %" PRIu64 ")",
			   pos, x, seed);
		if (err) {
			ASSERT_MSG(err == -EPROTO || err == -EPIPE, "byte %zu ^ 0x%02x: error %d", pos, x, err);
			rejected++;
		} else {
			same++;
		}
		if (i % 8 == 0) {
			size_t cut = tap_below(&rng, len);

			err = read_bytes(b, cut, &hash, NULL, 0);
			ASSERT_MSG(err == -EPIPE || err == -ENODATA, "cut at %zu: %d", cut, err);
			trunc++;
		}
	}
	tap_diag("%u rejected, %u decoded the same, %u truncations rejected", rejected, same, trunc);
	free(m);
	free(b);
}

/* ---- the net layer ------------------------------------------------------------ */

static void test_parse_addr(void)
{
	char h[64];
	uint16_t port;

	ASSERT_EQ_INT(mig_parse_addr("4444", false, h, &port), 0);
	ASSERT(!strcmp(h, "127.0.0.1") && port == 4444);
	ASSERT_EQ_INT(mig_parse_addr("4444", true, h, &port), 0);
	ASSERT(!strcmp(h, "0.0.0.0") && port == 4444);
	ASSERT_EQ_INT(mig_parse_addr("10.1.2.3:80", true, h, &port), 0);
	ASSERT(!strcmp(h, "10.1.2.3") && port == 80);
	ASSERT_EQ_INT(mig_parse_addr("localhost:65535", true, h, &port), 0);
	ASSERT(!strcmp(h, "127.0.0.1") && port == 65535);
	ASSERT_EQ_INT(mig_parse_addr("0", false, h, &port), 0);
	ASSERT_EQ(port, 0);
	ASSERT_EQ_INT(mig_parse_addr(":9", false, h, &port), 0);
	ASSERT(!strcmp(h, "127.0.0.1") && port == 9);
	static const char *const bad[] = {
		"", ":", "65536", "99999", "123456", "-1", "+5", " 5", "5 ", "12a", "abc",
		"1.2.3:5", "1.2.3.4:", "1.2.3.4:x", "256.1.1.1:5", "host.example:5",
		"::1:5", "1.2.3.4:5:6", "[127.0.0.1]:5",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:5",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ASSERT_MSG(mig_parse_addr(bad[i], false, h, &port) == -EINVAL, "accepted '%s'", bad[i]);
	ASSERT_EQ_INT(mig_parse_addr(NULL, false, h, &port), -EINVAL);
}

static void test_listen_connect_exchange(void)
{
	struct mig_conn a, b;
	char buf[64];

	tcp_pair(&a, &b);
	ASSERT_EQ_INT(mig_poll_readable(&b, 0), 0);
	ASSERT_EQ_INT(mig_send(&a, "hello, destination", 18), 0);
	ASSERT_EQ_INT(mig_poll_readable(&b, 1000), 1);
	ASSERT_EQ_INT(mig_recv(&b, buf, 18), 0);
	ASSERT(!memcmp(buf, "hello, destination", 18));
	ASSERT_EQ_INT(mig_send(&b, "ack", 3), 0);
	ASSERT_EQ_INT(mig_recv(&a, buf, 3), 0);
	ASSERT(!memcmp(buf, "ack", 3));
	ASSERT_EQ(a.sent, 18);
	ASSERT_EQ(a.received, 3);
	ASSERT_EQ(b.sent, 3);
	ASSERT_EQ(b.received, 18);
	/* the peer closes after 2 of 4 bytes: truncated; then a clean end */
	ASSERT_EQ_INT(mig_send(&a, "xy", 2), 0);
	mig_close(&a);
	ASSERT_EQ_INT(mig_recv(&b, buf, 4), -EPIPE);
	ASSERT_EQ_INT(mig_recv(&b, buf, 1), -ENODATA);
	mig_close(&b);
	mig_close(&b); /* twice is harmless */
}

static void test_connect_timeout(void)
{
	struct mig_conn c;
	uint16_t port;
	int lfd = mig_listen("127.0.0.1", 0, &port);
	double t0;
	int err;

	ASSERT(lfd >= 0);
	close(lfd); /* a port nobody listens on now */
	t0 = now_s();
	err = mig_connect("127.0.0.1", port, 250, &c);
	t0 = now_s() - t0;
	ASSERT_EQ_INT(err, -ETIMEDOUT);
	ASSERT_MSG(t0 >= 0.2 && t0 < 5, "%.3f s", t0);
	ASSERT_EQ_INT(mig_connect("not an address", port, 100, &c), -EINVAL);
	ASSERT(mig_listen("300.0.0.1", 0, &port) == -EINVAL);
}

struct late_listen {
	uint16_t port;
	int lfd;
};

static void *listen_late(void *arg)
{
	struct late_listen *l = arg;
	struct timespec ts = { 0, 150 * 1000000L };

	nanosleep(&ts, NULL);
	l->lfd = mig_listen("127.0.0.1", l->port, NULL);
	return NULL;
}

/* A destination that starts listening after the source began connecting. */
static void test_connect_retry(void)
{
	struct late_listen l;
	struct mig_conn a, b;
	pthread_t th;
	int lfd = mig_listen("127.0.0.1", 0, &l.port);

	ASSERT(lfd >= 0);
	close(lfd);
	ASSERT_EQ_INT(pthread_create(&th, NULL, listen_late, &l), 0);
	ASSERT_EQ_INT(mig_connect("localhost", l.port, 5000, &a), 0);
	pthread_join(th, NULL);
	ASSERT(l.lfd >= 0);
	ASSERT_EQ_INT(mig_accept(l.lfd, 1000, &b), 0);
	ASSERT_EQ_INT(mig_accept(l.lfd, 50, &b), -ETIMEDOUT);
	close(l.lfd);
	mig_close(&a);
	mig_close(&b);
}

static void test_timeouts(void)
{
	struct mig_conn a, b;
	char buf[8];
	double t0;
	uint8_t *big = calloc(1, 64 << 20);
	int err;

	ASSERT(big);
	tcp_pair(&a, &b);
	b.timeout_ms = 100;
	t0 = now_s();
	ASSERT_EQ_INT(mig_recv(&b, buf, 8), -ETIMEDOUT);
	t0 = now_s() - t0;
	ASSERT_MSG(t0 >= 0.09 && t0 < 5, "%.3f s", t0);
	ASSERT_EQ_INT(mig_poll_readable(&b, 50), 0);
	/* nobody reads: the send stops within its deadline */
	a.timeout_ms = 100;
	t0 = now_s();
	ASSERT_EQ_INT(mig_send(&a, big, 64 << 20), -ETIMEDOUT);
	t0 = now_s() - t0;
	ASSERT_MSG(t0 >= 0.09 && t0 < 10, "%.3f s", t0);
	/* the peer gone: an error, not SIGPIPE */
	mig_close(&b);
	err = mig_send(&a, big, 64 << 20);
	ASSERT_MSG(err == -EPIPE || err == -ECONNRESET, "%d", err);
	mig_close(&a);
	free(big);
}

struct drain {
	struct mig_conn *c;
	size_t len;
	int err;
};

static void *drain_thread(void *arg)
{
	struct drain *d = arg;
	uint8_t *buf = malloc(1 << 20);
	size_t left = d->len;

	d->err = buf ? 0 : -ENOMEM;
	while (!d->err && left) {
		size_t n = left < (1 << 20) ? left : (1 << 20);

		d->err = mig_recv(d->c, buf, n);
		left -= n;
	}
	free(buf);
	return NULL;
}

static void test_rate_cap(void)
{
	struct mig_conn a, b;
	struct drain d = { .c = &b, .len = 8 << 20 };
	uint8_t *buf = calloc(1, 1 << 20);
	pthread_t th;
	double t0;

	ASSERT(buf);
	tcp_pair(&a, &b);
	a.cap_bps = 64.0 * (1 << 20);
	ASSERT_EQ_INT(pthread_create(&th, NULL, drain_thread, &d), 0);
	t0 = now_s();
	for (int i = 0; i < 8; i++)
		ASSERT_EQ_INT(mig_send(&a, buf, 1 << 20), 0);
	pthread_join(th, NULL);
	t0 = now_s() - t0;
	ASSERT_EQ_INT(d.err, 0);
	/* 8 MiB at 64 MiB/s: 125 ms, less the 50 ms burst the bucket starts with */
	tap_diag("8 MiB at a 64 MiB/s cap: %.3f s", t0);
	ASSERT_MSG(t0 >= 0.07, "%.3f s: the cap did not hold", t0);
	ASSERT_MSG(t0 < 10, "%.3f s", t0);
	mig_close(&a);
	mig_close(&b);
	free(buf);
}

struct sink {
	struct mig_conn *c;
	uint64_t pages, bad;
};

static int sink_page(void *arg, uint32_t slot, uint64_t index, const uint8_t *data)
{
	struct sink *s = arg;
	uint64_t first;

	if (!data) {
		s->bad++;
	} else {
		memcpy(&first, data, 8);
		s->bad += first != index || data[PS - 1] != ((index & 0xff) | 1);
	}
	s->pages++;
	return 0;
}

/* 256 MiB of PAGES over loopback: a sanity bound, not a performance target. */
static void test_bulk_transfer(void)
{
	struct mig_conn a, b;
	struct mig_reader r;
	struct mig_end e;
	struct writer_job j = { .c = &a, .npages = (256u << 20) / PS };
	struct sink s = { .c = &b };
	pthread_t th;
	double t0 = now_s();
	int err;

	tcp_pair(&a, &b);
	ASSERT_EQ_INT(pthread_create(&th, NULL, writer_thread, &j), 0);
	ASSERT_EQ_INT(mig_reader_init(&r, &b), 0);
	while (!(err = mig_read_record(&r))) {
		if (r.type == MIG_PAGES) {
			err = mig_decode_pages(&r, sink_page, &s);
		} else if (r.type == MIG_END) {
			err = mig_decode_end(&r, &e);
			break;
		}
		if (err)
			break;
	}
	pthread_join(th, NULL);
	t0 = now_s() - t0;
	ASSERT_MSG(!err, "%d: %s", err, r.err);
	ASSERT_EQ_INT(j.err, 0);
	ASSERT_EQ(s.pages, j.npages);
	ASSERT_EQ(s.bad, 0);
	ASSERT_EQ(e.pages, j.npages);
	ASSERT_GE(b.received, 256ull << 20);
	ASSERT_EQ_INT(mig_read_record(&r), -ENODATA);
	tap_diag("256 MiB of PAGES over loopback: %.2f s (%.0f MiB/s)", t0, 256 / t0);
	ASSERT_MSG(t0 < 30, "%.1f s", t0);
	mig_reader_free(&r);
	mig_close(&b);
}

/* Writer arguments out of range. */
static void test_writer_args(void)
{
	struct mig_conn c;
	struct mig_writer w;
	struct mig_vcpu_state v[1] = { 0 };

	mem_open(&c);
	ASSERT_EQ_INT(mig_writer_init(&w, &c, 3000), -EINVAL);
	ASSERT_EQ_INT(mig_writer_init(&w, &c, PS), 0);
	ASSERT_EQ_INT(mig_pages_add(&w, 0, MIG_ZERO_PAGE | 1, NULL), -EINVAL);
	ASSERT_EQ_INT(mig_write_switchover(&w, &(struct mig_switchover){ .nvcpus = 257,
		.vcpus = v }), -EINVAL);
	ASSERT_EQ_INT(mig_write_ack(&w, &(struct mig_ack){ .what = 9 }), -EINVAL);
	ASSERT_EQ_INT(mig_write_config(&w, &(struct mig_config){ .nslots = MIG_SLOTS_MAX + 1 }),
		      -EINVAL);
	ASSERT_EQ(w.records, 0);
	mig_writer_free(&w);
	mig_close(&c);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	ref_page = malloc(PS);
	if (!ref_page)
		return 1;
	TEST(test_roundtrip_memfd);
	TEST(test_roundtrip_fields);
	TEST(test_roundtrip_tcp);
	TEST(test_clean_close);
	TEST(test_writer_args);
	TEST(test_reject_header);
	TEST(test_reject_order);
	TEST(test_reject_hello);
	TEST(test_reject_contents);
	TEST(test_reject_corruption);
	TEST(test_reject_end);
	TEST(test_fuzz);
	TEST(test_parse_addr);
	TEST(test_listen_connect_exchange);
	TEST(test_connect_timeout);
	TEST(test_connect_retry);
	TEST(test_timeouts);
	TEST(test_rate_cap);
	TEST(test_bulk_transfer);
	free(ref_page);
	return tap_done();
}
