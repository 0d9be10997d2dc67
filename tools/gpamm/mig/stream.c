// SPDX-License-Identifier: MIT
/*
 * The migration stream, version 1 (docs/migration.md, mig/stream.h).
 *
 * Wire details this file decides:
 *  - checksum = XXH3_64bits(type flags reserved length payload), seed 0:
 *    the 8 header bytes before the checksum, then the payload. Both sides
 *    hash one contiguous run: the 8 header bytes are put just before the
 *    payload (where the checksum goes), hashed, then moved into place.
 *  - stream hash: chain_0 = 0, chain_k = XXH3_64bits_withSeed(c_k, 8,
 *    chain_{k-1}) where c_k is record k's checksum as its 8 little-endian
 *    wire bytes. END carries records = the number of records before it and
 *    stream_hash = the chain over them (END not included).
 *  - flags must be 0 (version 1 defines none); reserved must be 0.
 *  - SWITCHOVER carries the discard count only when postcopy is 1.
 *  - ACK(RESUMED) ends after hash (20 bytes); ACK(DONE) goes on with
 *    nvcpus and the states.
 *  - order: HELLO only as record 1; one CONFIG; PAGES and PAGE only with a
 *    page size (CONFIG, or r->page_size set by the caller); SWITCHOVER
 *    after CONFIG and once; one END.
 *  - limits: PAGES 8 + 256 * (8 + page_size); CONFIG 48 + 24 * 32767;
 *    SWITCHOVER 8 + 256 * 268 + 8 + 8 * (guest pages); ACK 24 + 256 * 268 + 32;
 *    the other types their exact size. The reader allocates a payload as
 *    its bytes arrive (doubling), never just because a length says so.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "mig/stream.h"

#define CONFIG_FIXED 48                       /* the fields around the slots */
#define SLOT_LEN 24
#define RECV_STEP (1u << 20)                  /* first payload allocation beyond which we grow */

/* ---- little-endian fields -------------------------------------------------- */

static inline void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint64_t chain_step(uint64_t chain, uint64_t checksum)
{
	uint8_t le[8];

	put64(le, checksum);
	return XXH3_64bits_withSeed(le, 8, chain);
}

uint64_t mig_hash(const void *buf, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(buf, len, seed);
}

static bool all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t i = 0;

	for (; i + 64 <= n; i += 64) {
		uint64_t w[8];

		memcpy(w, b + i, sizeof(w));
		if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
			return false;
	}
	for (; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static void put_state(uint8_t *p, const struct mig_vcpu_state *s)
{
	put32(p, s->id);
	for (int i = 0; i < 32; i++)
		put64(p + 4 + 8 * i, s->regs.gpr[i]);
	put64(p + 4 + 8 * 32, s->regs.pc);
}

static void get_state(const uint8_t *p, struct mig_vcpu_state *s)
{
	s->id = get32(p);
	for (int i = 0; i < 32; i++)
		s->regs.gpr[i] = get64(p + 4 + 8 * i);
	s->regs.pc = get64(p + 4 + 8 * 32);
}

static const char *type_name(unsigned t)
{
	static const char *const names[] = {
		[MIG_HELLO] = "HELLO", [MIG_CONFIG] = "CONFIG", [MIG_PAGES] = "PAGES",
		[MIG_ROUND] = "ROUND", [MIG_SWITCHOVER] = "SWITCHOVER", [MIG_END] = "END",
		[MIG_ACK] = "ACK", [MIG_REQ] = "REQ", [MIG_PAGE] = "PAGE",
		[MIG_RECVMAP] = "RECVMAP",
	};

	return t >= 1 && t <= MIG_TYPE_MAX ? names[t] : "unknown type";
}

/* ---- writing ----------------------------------------------------------------- */

static int reserve(struct mig_writer *w, size_t payload)
{
	size_t need = MIG_HDR_LEN + payload;
	uint8_t *nb;

	if (need <= w->cap)
		return 0;
	nb = realloc(w->buf, need);
	if (!nb)
		return -ENOMEM;
	w->buf = nb;
	w->cap = need;
	return 0;
}

int mig_writer_init(struct mig_writer *w, struct mig_conn *c, uint32_t page_size)
{
	if (!w || !c || page_size > (1u << 16) || (page_size & (page_size - 1)))
		return -EINVAL;
	memset(w, 0, sizeof(*w));
	w->conn = c;
	w->page_size = page_size;
	w->cap = MIG_HDR_LEN + 8 + (size_t)MIG_PAGES_MAX * (8 + page_size);
	w->buf = malloc(w->cap);
	if (!w->buf) {
		w->cap = 0;
		return -ENOMEM;
	}
	return 0;
}

void mig_writer_free(struct mig_writer *w)
{
	if (!w)
		return;
	free(w->buf);
	w->buf = NULL;
	w->cap = w->len = 0;
	w->batch_n = 0;
}

/*
 * Send the record whose payload (@len bytes) is at w->buf + MIG_HDR_LEN:
 * header and checksum in front, one mig_send, the counters and chain.
 */
static int finish(struct mig_writer *w, unsigned type, uint32_t len)
{
	uint8_t *b = w->buf, hdr[8];
	uint64_t cs;
	int err;

	hdr[0] = (uint8_t)type;
	hdr[1] = 0;
	hdr[2] = hdr[3] = 0;
	put32(hdr + 4, len);
	memcpy(b + 8, hdr, 8);
	cs = XXH3_64bits(b + 8, 8 + (size_t)len);
	memcpy(b, hdr, 8);
	put64(b + 8, cs);
	err = mig_send(w->conn, b, MIG_HDR_LEN + (size_t)len);
	if (err)
		return err;
	w->records++;
	w->bytes += MIG_HDR_LEN + (uint64_t)len;
	w->chain = chain_step(w->chain, cs);
	return 0;
}

int mig_pages_flush(struct mig_writer *w)
{
	uint8_t *p;
	uint32_t n, zero = 0;
	size_t off = 8;
	int err;

	if (!w)
		return -EINVAL;
	n = w->batch_n;
	if (!n)
		return 0;
	p = w->buf + MIG_HDR_LEN;
	put32(p, w->batch_slot);
	put32(p + 4, n);
	for (uint32_t i = 0; i < n; i++) {
		bool z = get64(p + off) & MIG_ZERO_PAGE;

		zero += z;
		off += 8 + (z ? 0 : w->page_size);
	}
	err = finish(w, MIG_PAGES, (uint32_t)w->len);
	w->batch_n = 0;
	w->len = 0;
	if (err)
		return err;
	w->pages += n;
	w->zero_pages += zero;
	return 0;
}

/* The payload area for a @len-byte record, a pending batch sent first. */
static int begin(struct mig_writer *w, size_t len, uint8_t **payload)
{
	int err;

	if (!w || !w->conn)
		return -EINVAL;
	if (len > UINT32_MAX - MIG_HDR_LEN)
		return -E2BIG;
	err = mig_pages_flush(w);
	if (err)
		return err;
	err = reserve(w, len);
	if (err)
		return err;
	*payload = w->buf + MIG_HDR_LEN;
	return 0;
}

int mig_write_record(struct mig_writer *w, unsigned type, const void *payload, uint32_t len)
{
	uint8_t *p;
	int err;

	if (type > 255 || (!payload && len))
		return -EINVAL;
	err = begin(w, len, &p);
	if (err)
		return err;
	if (len)
		memmove(p, payload, len);
	return finish(w, type, len);
}

int mig_write_hello(struct mig_writer *w, const struct mig_hello *h)
{
	uint8_t *p;
	int err;

	if (!h)
		return -EINVAL;
	err = begin(w, 24, &p);
	if (err)
		return err;
	memcpy(p, MIG_MAGIC, 8); /* with its NUL */
	put32(p + 8, h->version ? h->version : MIG_VERSION);
	put32(p + 12, h->channel);
	put64(p + 16, h->session);
	return finish(w, MIG_HELLO, 24);
}

int mig_write_config(struct mig_writer *w, const struct mig_config *c)
{
	size_t len;
	uint8_t *p, *q;
	int err;

	if (!c || c->nslots > MIG_SLOTS_MAX || (c->nslots && !c->slots))
		return -EINVAL;
	len = CONFIG_FIXED + (size_t)SLOT_LEN * c->nslots;
	err = begin(w, len, &p);
	if (err)
		return err;
	put32(p, c->page_shift);
	put32(p + 4, c->levels);
	put32(p + 8, c->vcpus);
	put32(p + 12, c->log_mode);
	put32(p + 16, c->ring_size);
	put32(p + 20, c->nslots);
	q = p + 24;
	for (uint32_t i = 0; i < c->nslots; i++, q += SLOT_LEN) {
		put32(q, c->slots[i].slot);
		put32(q + 4, c->slots[i].flags);
		put64(q + 8, c->slots[i].gpa);
		put64(q + 16, c->slots[i].size);
	}
	put64(q, c->seed);
	put32(q + 8, c->hot_pct);
	put32(q + 12, c->hot_writes);
	put64(q + 16, c->rate);
	return finish(w, MIG_CONFIG, (uint32_t)len);
}

int mig_write_round(struct mig_writer *w, const struct mig_round *r)
{
	uint8_t *p;
	int err;

	if (!r)
		return -EINVAL;
	err = begin(w, 32, &p);
	if (err)
		return err;
	put32(p, r->round);
	put64(p + 4, r->pages);
	put64(p + 12, r->zero_pages);
	put64(p + 20, r->dirty_rate);
	put32(p + 28, r->throttle_pct);
	return finish(w, MIG_ROUND, 32);
}

int mig_write_switchover(struct mig_writer *w, const struct mig_switchover *s)
{
	size_t len;
	uint8_t *p, *q;
	int err;

	if (!s || s->nvcpus > MIG_VCPUS_MAX || (s->nvcpus && !s->vcpus) || s->postcopy > 1 ||
	    (s->postcopy && s->ndiscard && !s->discard))
		return -EINVAL;
	len = 8 + (size_t)MIG_REGS_LEN * s->nvcpus;
	if (s->postcopy) {
		if (s->ndiscard > (UINT32_MAX - MIG_HDR_LEN - len - 8) / 8)
			return -E2BIG;
		len += 8 + 8 * (size_t)s->ndiscard;
	}
	err = begin(w, len, &p);
	if (err)
		return err;
	put32(p, s->postcopy);
	put32(p + 4, s->nvcpus);
	q = p + 8;
	for (uint32_t i = 0; i < s->nvcpus; i++, q += MIG_REGS_LEN)
		put_state(q, &s->vcpus[i]);
	if (s->postcopy) {
		put64(q, s->ndiscard);
		q += 8;
		for (uint64_t i = 0; i < s->ndiscard; i++, q += 8)
			put64(q, s->discard[i]);
	}
	return finish(w, MIG_SWITCHOVER, (uint32_t)len);
}

int mig_write_end(struct mig_writer *w, struct mig_end *e)
{
	uint8_t *p;
	int err;

	if (!e)
		return -EINVAL;
	err = begin(w, 40, &p); /* sends a pending batch: it is counted */
	if (err)
		return err;
	e->records = w->records;
	e->stream_hash = w->chain;
	if (!e->pages)
		e->pages = w->pages;
	if (!e->bytes)
		e->bytes = w->bytes;
	put64(p, e->pages);
	put64(p + 8, e->bytes);
	put64(p + 16, e->records);
	put64(p + 24, e->stream_hash);
	put64(p + 32, e->memory_hash);
	return finish(w, MIG_END, 40);
}

int mig_write_ack(struct mig_writer *w, const struct mig_ack *a)
{
	size_t len = 20;
	uint8_t *p, *q;
	int err;

	if (!a || (a->what != MIG_ACK_RESUMED && a->what != MIG_ACK_DONE))
		return -EINVAL;
	if (a->what == MIG_ACK_DONE) {
		if (a->nvcpus > MIG_VCPUS_MAX || (a->nvcpus && !a->vcpus))
			return -EINVAL;
		len += 4 + (size_t)MIG_REGS_LEN * a->nvcpus + MIG_ACK_DONE_TAIL;
	}
	err = begin(w, len, &p);
	if (err)
		return err;
	put32(p, a->what);
	put64(p + 4, a->resume_ns);
	put64(p + 12, a->hash);
	if (a->what == MIG_ACK_DONE) {
		put32(p + 20, a->nvcpus);
		q = p + 24;
		for (uint32_t i = 0; i < a->nvcpus; i++, q += MIG_REGS_LEN)
			put_state(q, &a->vcpus[i]);
		put64(q, a->writes);
		put64(q + 8, a->requests);
		put64(q + 16, a->req_p50_ns);
		put64(q + 24, a->req_p99_ns);
	}
	return finish(w, MIG_ACK, (uint32_t)len);
}

int mig_write_req(struct mig_writer *w, const struct mig_req *r)
{
	uint8_t *p;
	int err;

	if (!r)
		return -EINVAL;
	err = begin(w, 12, &p);
	if (err)
		return err;
	put32(p, r->slot);
	put64(p + 4, r->index);
	return finish(w, MIG_REQ, 12);
}

int mig_write_recvmap(struct mig_writer *w, uint64_t npages, const uint8_t *bits)
{
	uint64_t nb = (npages + 7) / 8;
	uint8_t *p;
	int err;

	if (!w || (npages && !bits) || npages > MIG_RECVMAP_MAX_PAGES)
		return -EINVAL;
	err = begin(w, 8 + nb, &p);
	if (err)
		return err;
	put64(p, npages);
	memcpy(p + 8, bits, nb);
	return finish(w, MIG_RECVMAP, (uint32_t)(8 + nb));
}

int mig_write_page(struct mig_writer *w, uint32_t slot, uint64_t index, const void *data)
{
	uint8_t *p;
	int err;

	if (!w || !w->page_size || (index & MIG_ZERO_PAGE))
		return -EINVAL;
	err = begin(w, 12 + (size_t)w->page_size, &p);
	if (err)
		return err;
	put32(p, slot);
	put64(p + 4, index);
	if (data)
		memcpy(p + 12, data, w->page_size);
	else
		memset(p + 12, 0, w->page_size);
	err = finish(w, MIG_PAGE, 12 + w->page_size);
	if (!err)
		w->pages++;
	return err;
}

int mig_pages_add(struct mig_writer *w, uint32_t slot, uint64_t index, const void *data)
{
	uint8_t *p;
	bool zero;
	int err;

	if (!w || !w->page_size || (index & MIG_ZERO_PAGE))
		return -EINVAL;
	if (w->batch_n && w->batch_slot != slot) {
		err = mig_pages_flush(w);
		if (err)
			return err;
	}
	if (!w->batch_n) {
		w->batch_slot = slot;
		w->len = 8; /* slot, count: filled at the flush */
	}
	zero = !data || all_zero(data, w->page_size);
	p = w->buf + MIG_HDR_LEN + w->len;
	put64(p, index | (zero ? MIG_ZERO_PAGE : 0));
	if (!zero)
		memcpy(p + 8, data, w->page_size);
	w->len += 8 + (zero ? 0 : w->page_size);
	if (++w->batch_n == MIG_PAGES_MAX)
		return mig_pages_flush(w);
	return 0;
}

uint8_t *mig_pages_reserve(struct mig_writer *w, uint32_t slot, uint64_t index)
{
	uint8_t *p;

	if (!w || !w->page_size || (index & MIG_ZERO_PAGE))
		return NULL;
	if (w->batch_n && w->batch_slot != slot && mig_pages_flush(w))
		return NULL;
	if (!w->batch_n) {
		w->batch_slot = slot;
		w->len = 8;
	}
	p = w->buf + MIG_HDR_LEN + w->len;
	put64(p, index);
	return p + 8;
}

int mig_pages_commit(struct mig_writer *w)
{
	uint8_t *p = w->buf + MIG_HDR_LEN + w->len;

	if (all_zero(p + 8, w->page_size)) {
		put64(p, get64(p) | MIG_ZERO_PAGE); /* the bytes are dropped */
		w->len += 8;
	} else {
		w->len += 8 + w->page_size;
	}
	if (++w->batch_n == MIG_PAGES_MAX)
		return mig_pages_flush(w);
	return 0;
}

/* ---- reading ----------------------------------------------------------------- */

__attribute__((format(printf, 5, 6)))
static int reject(struct mig_reader *r, uint64_t n, unsigned type, int err, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (!type)
		k = snprintf(r->err, sizeof(r->err), "record %" PRIu64 ": ", n);
	else if (type <= MIG_TYPE_MAX)
		k = snprintf(r->err, sizeof(r->err), "record %" PRIu64 " (%s): ", n, type_name(type));
	else
		k = snprintf(r->err, sizeof(r->err), "record %" PRIu64 " (type %u): ", n, type);
	if (k < 0 || (size_t)k >= sizeof(r->err))
		return err;
	va_start(ap, fmt);
	vsnprintf(r->err + k, sizeof(r->err) - (size_t)k, fmt, ap);
	va_end(ap);
	return err;
}

int mig_reader_init(struct mig_reader *r, struct mig_conn *c)
{
	if (!r || !c)
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	r->conn = c;
	return 0;
}

void mig_reader_free(struct mig_reader *r)
{
	if (!r)
		return;
	/* the payload sits 8 bytes into its buffer (the header bytes go in front to hash) */
	free(r->payload ? r->payload - 8 : NULL);
	free(r->slots);
	r->payload = NULL;
	r->slots = NULL;
	r->cap = 0;
	r->nslots = 0;
}

/* The payload buffer for at least @len bytes (8 more in front). */
static int grow(struct mig_reader *r, size_t len)
{
	uint8_t *base;
	size_t cap;

	if (len <= r->cap && r->payload)
		return 0;
	cap = r->cap ? r->cap : 256;
	while (cap < len)
		cap *= 2;
	base = realloc(r->payload ? r->payload - 8 : NULL, 8 + cap);
	if (!base)
		return -ENOMEM;
	r->payload = base + 8;
	r->cap = cap;
	return 0;
}

/* The length range of @type; a message when the record may not come now. */
static const char *limits(const struct mig_reader *r, unsigned type, uint64_t n,
			  uint64_t *min, uint64_t *max)
{
	uint64_t ps = r->page_size;

	if (r->seen & (1u << MIG_END))
		return "a record after END";
	switch (type) {
	case MIG_HELLO:
		*min = *max = 24;
		if (n != 1)
			return "HELLO is not the first record";
		return NULL;
	case MIG_CONFIG:
		*min = CONFIG_FIXED + SLOT_LEN;
		*max = CONFIG_FIXED + (uint64_t)SLOT_LEN * MIG_SLOTS_MAX;
		if (r->seen & (1u << MIG_CONFIG))
			return "a second CONFIG";
		return NULL;
	case MIG_PAGES:
		*min = 8;
		*max = 8 + MIG_PAGES_MAX * (8 + ps);
		if (!ps)
			return "PAGES before CONFIG (the page size is unknown)";
		return NULL;
	case MIG_ROUND:
		*min = *max = 32;
		return NULL;
	case MIG_SWITCHOVER:
		*min = 8;
		*max = 8 + (uint64_t)MIG_VCPUS_MAX * MIG_REGS_LEN + 8 + 8 * r->guest_pages;
		if (!(r->seen & (1u << MIG_CONFIG)))
			return "SWITCHOVER before CONFIG";
		if (r->seen & (1u << MIG_SWITCHOVER))
			return "a second SWITCHOVER";
		return NULL;
	case MIG_END:
		*min = *max = 40;
		if (r->seen & (1u << MIG_END))
			return "a second END";
		return NULL;
	case MIG_ACK:
		*min = 20;
		*max = 24 + (uint64_t)MIG_VCPUS_MAX * MIG_REGS_LEN + MIG_ACK_DONE_TAIL;
		return NULL;
	case MIG_REQ:
		*min = *max = 12;
		return NULL;
	case MIG_PAGE:
		*min = *max = 12 + ps;
		if (!ps)
			return "PAGE before CONFIG (the page size is unknown)";
		return NULL;
	case MIG_RECVMAP:
		*min = 8;
		*max = 8 + MIG_RECVMAP_MAX_PAGES / 8;
		return NULL;
	}
	return "unknown record type";
}

static int slot_cmp(const void *a, const void *b)
{
	uint32_t x = ((const struct mig_slot *)a)->slot, y = ((const struct mig_slot *)b)->slot;

	return x < y ? -1 : x > y;
}

/* The CONFIG in the payload, checked; c->slots allocated. */
static int parse_config(struct mig_reader *r, struct mig_config *c)
{
	const uint8_t *p = r->payload, *q;
	uint64_t n = r->records, ps, pages = 0;

	memset(c, 0, sizeof(*c));
	if (r->len < CONFIG_FIXED + SLOT_LEN)
		return reject(r, n, MIG_CONFIG, -EPROTO, "%u bytes: too short", r->len);
	c->page_shift = get32(p);
	c->levels = get32(p + 4);
	c->vcpus = get32(p + 8);
	c->log_mode = get32(p + 12);
	c->ring_size = get32(p + 16);
	c->nslots = get32(p + 20);
	if (c->page_shift != 12 && c->page_shift != 14 && c->page_shift != 16)
		return reject(r, n, MIG_CONFIG, -EPROTO, "page_shift %u (not 12, 14 or 16)",
			      c->page_shift);
	if (!c->vcpus || c->vcpus > MIG_VCPUS_MAX)
		return reject(r, n, MIG_CONFIG, -EPROTO, "%u vCPUs (1 to %u)", c->vcpus,
			      MIG_VCPUS_MAX);
	if (c->log_mode > MIG_LOG_RING)
		return reject(r, n, MIG_CONFIG, -EPROTO, "log mode %u", c->log_mode);
	if (!c->nslots || c->nslots > MIG_SLOTS_MAX)
		return reject(r, n, MIG_CONFIG, -EPROTO, "%u slots (1 to %u)", c->nslots,
			      MIG_SLOTS_MAX);
	if (r->len != CONFIG_FIXED + (uint64_t)SLOT_LEN * c->nslots)
		return reject(r, n, MIG_CONFIG, -EPROTO, "%u bytes for %u slots (%" PRIu64 " expected)",
			      r->len, c->nslots, CONFIG_FIXED + (uint64_t)SLOT_LEN * c->nslots);
	ps = 1ull << c->page_shift;
	c->slots = calloc(c->nslots, sizeof(*c->slots));
	if (!c->slots)
		return -ENOMEM;
	q = p + 24;
	for (uint32_t i = 0; i < c->nslots; i++, q += SLOT_LEN) {
		struct mig_slot *s = &c->slots[i];

		s->slot = get32(q);
		s->flags = get32(q + 4);
		s->gpa = get64(q + 8);
		s->size = get64(q + 16);
		if (!s->size || (s->size | s->gpa) & (ps - 1) || s->gpa + s->size < s->gpa ||
		    pages + s->size / ps < pages) {
			struct mig_slot bad = *s;

			free(c->slots);
			c->slots = NULL;
			return reject(r, n, MIG_CONFIG, -EPROTO,
				      "slot %u: gpa 0x%" PRIx64 " size 0x%" PRIx64
				      " (empty, unaligned or wrapping)", bad.slot, bad.gpa, bad.size);
		}
		pages += s->size / ps;
	}
	c->seed = get64(q);
	c->hot_pct = get32(q + 8);
	c->hot_writes = get32(q + 12);
	c->rate = get64(q + 16);
	if (c->hot_pct > 100 || c->hot_writes > 100) {
		free(c->slots);
		c->slots = NULL;
		return reject(r, n, MIG_CONFIG, -EPROTO, "hot_pct %u hot_writes %u (percentages)",
			      c->hot_pct, c->hot_writes);
	}
	return 0;
}

/* CONFIG as it arrives: the page size, the guest's size and its slots for the later checks. */
static int take_config(struct mig_reader *r)
{
	struct mig_config c;
	uint64_t pages = 0;
	int err = parse_config(r, &c);

	if (err)
		return err;
	qsort(c.slots, c.nslots, sizeof(*c.slots), slot_cmp);
	for (uint32_t i = 0; i < c.nslots; i++) {
		if (i && c.slots[i].slot == c.slots[i - 1].slot) {
			uint32_t id = c.slots[i].slot;

			free(c.slots);
			return reject(r, r->records, MIG_CONFIG, -EPROTO, "slot %u twice", id);
		}
		pages += c.slots[i].size >> c.page_shift;
	}
	free(r->slots);
	r->slots = c.slots;
	r->nslots = c.nslots;
	r->page_size = 1u << c.page_shift;
	r->guest_pages = pages;
	return 0;
}

int mig_read_record(struct mig_reader *r)
{
	uint8_t h[MIG_HDR_LEN];
	uint64_t n, min, max, cs, sum;
	uint32_t len, got;
	unsigned type;
	const char *why;
	int err;

	if (!r || !r->conn)
		return -EINVAL;
	n = r->records + 1;
	r->err[0] = 0;
	err = mig_recv(r->conn, h, sizeof(h));
	if (err == -ENODATA) {
		snprintf(r->err, sizeof(r->err), "record %" PRIu64 ": the stream ends (closed cleanly)", n);
		return err;
	}
	if (err == -EPIPE)
		return reject(r, n, 0, err, "truncated in the header");
	if (err)
		return reject(r, n, 0, err, "reading the header: %s", strerror(-err));
	type = h[0];
	len = get32(h + 4);
	cs = get64(h + 8);
	if (type < 1 || type > MIG_TYPE_MAX)
		return reject(r, n, type, -EPROTO, "unknown record type %u", type);
	if (h[1])
		return reject(r, n, type, -EPROTO, "flags 0x%x (none defined)", h[1]);
	if (h[2] || h[3])
		return reject(r, n, type, -EPROTO, "reserved 0x%04x (must be 0)", get32(h) >> 16);
	why = limits(r, type, n, &min, &max);
	if (why)
		return reject(r, n, type, -EPROTO, "%s", why);
	if (len < min || len > max)
		return reject(r, n, type, -EPROTO, "length %u outside %" PRIu64 "..%" PRIu64,
			      len, min, max);

	/* the payload, its buffer growing only as bytes arrive (at most twice what came) */
	err = grow(r, len < RECV_STEP ? len : RECV_STEP);
	for (got = 0; !err && got < len;) {
		size_t want = len - got;

		if (r->cap == got) {
			size_t more = got < RECV_STEP ? RECV_STEP : got;

			err = grow(r, want < more ? len : (size_t)got + more);
			if (err)
				break;
		}
		if (want > r->cap - got)
			want = r->cap - got;
		err = mig_recv(r->conn, r->payload + got, want);
		if (err == -ENODATA || err == -EPIPE)
			return reject(r, n, type, -EPIPE, "truncated in its %u-byte payload", len);
		if (err)
			return reject(r, n, type, err, "reading the payload: %s", strerror(-err));
		got += (uint32_t)want;
	}
	if (err)
		return reject(r, n, type, err, "no memory for %u bytes", len);
	memcpy(r->payload - 8, h, 8);
	sum = XXH3_64bits(r->payload - 8, 8 + (size_t)len);
	if (sum != cs)
		return reject(r, n, type, -EPROTO, "bad checksum (0x%016" PRIx64 ", computed 0x%016"
			      PRIx64 ")", cs, sum);
	r->records = n;
	r->type = type;
	r->len = len;
	r->chain_before = r->chain;
	r->chain = chain_step(r->chain, cs);
	r->seen |= 1u << type;
	if (type == MIG_CONFIG)
		return take_config(r);
	return 0;
}

/* ---- decoders ----------------------------------------------------------------- */

static int want_type(struct mig_reader *r, unsigned type)
{
	if (!r || !r->payload)
		return -EINVAL;
	if (r->type != type)
		return reject(r, r->records, r->type, -EPROTO, "not a %s record", type_name(type));
	return 0;
}

/* The slot and page index (without the zero flag) against CONFIG, when there was one. */
static int check_page(struct mig_reader *r, uint32_t slot, uint64_t index)
{
	struct mig_slot key = { .slot = slot }, *s;

	if (!r->nslots)
		return 0;
	s = bsearch(&key, r->slots, r->nslots, sizeof(*r->slots), slot_cmp);
	if (!s)
		return reject(r, r->records, r->type, -EPROTO, "slot %u is not in CONFIG", slot);
	if (index >= s->size / r->page_size)
		return reject(r, r->records, r->type, -EPROTO,
			      "page %" PRIu64 " beyond slot %u (%" PRIu64 " pages)", index, slot,
			      s->size / r->page_size);
	return 0;
}

/* vCPU states at @p: ids below MIG_VCPUS_MAX, each once. */
static int get_states(struct mig_reader *r, const uint8_t *p, uint32_t nv,
		      struct mig_vcpu_state **out)
{
	uint64_t seen[MIG_VCPUS_MAX / 64] = { 0 };
	struct mig_vcpu_state *v = calloc(nv ? nv : 1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (uint32_t i = 0; i < nv; i++, p += MIG_REGS_LEN) {
		get_state(p, &v[i]);
		if (v[i].id >= MIG_VCPUS_MAX || (seen[v[i].id / 64] >> (v[i].id % 64)) & 1) {
			uint32_t id = v[i].id;

			free(v);
			return reject(r, r->records, r->type, -EPROTO,
				      "vCPU id %u (repeated or not below %u)", id, MIG_VCPUS_MAX);
		}
		seen[v[i].id / 64] |= 1ull << (v[i].id % 64);
	}
	*out = v;
	return 0;
}

int mig_decode_hello(struct mig_reader *r, struct mig_hello *h)
{
	const uint8_t *p;
	int err = want_type(r, MIG_HELLO);

	if (err)
		return err;
	if (!h)
		return -EINVAL;
	p = r->payload;
	if (r->len != 24)
		return reject(r, r->records, MIG_HELLO, -EPROTO, "%u bytes", r->len);
	if (memcmp(p, MIG_MAGIC, 8))
		return reject(r, r->records, MIG_HELLO, -EPROTO, "bad magic (not a gpamm migration stream)");
	h->version = get32(p + 8);
	h->channel = get32(p + 12);
	h->session = get64(p + 16);
	if (h->version != MIG_VERSION)
		return reject(r, r->records, MIG_HELLO, -EPROTO, "version %u (this is version %u)",
			      h->version, MIG_VERSION);
	if (h->channel > MIG_CH_POSTCOPY)
		return reject(r, r->records, MIG_HELLO, -EPROTO, "channel %u", h->channel);
	return 0;
}

int mig_decode_config(struct mig_reader *r, struct mig_config *c)
{
	int err = want_type(r, MIG_CONFIG);

	if (err)
		return err;
	if (!c)
		return -EINVAL;
	return parse_config(r, c);
}

int mig_decode_round(struct mig_reader *r, struct mig_round *o)
{
	const uint8_t *p;
	int err = want_type(r, MIG_ROUND);

	if (err)
		return err;
	if (!o)
		return -EINVAL;
	if (r->len != 32)
		return reject(r, r->records, MIG_ROUND, -EPROTO, "%u bytes", r->len);
	p = r->payload;
	o->round = get32(p);
	o->pages = get64(p + 4);
	o->zero_pages = get64(p + 12);
	o->dirty_rate = get64(p + 20);
	o->throttle_pct = get32(p + 28);
	if (o->zero_pages > o->pages || o->throttle_pct > 100)
		return reject(r, r->records, MIG_ROUND, -EPROTO,
			      "zero_pages %" PRIu64 " of %" PRIu64 ", throttle %u%%", o->zero_pages,
			      o->pages, o->throttle_pct);
	return 0;
}

int mig_decode_switchover(struct mig_reader *r, struct mig_switchover *s)
{
	const uint8_t *p;
	uint64_t off, cnt = 0;
	int err = want_type(r, MIG_SWITCHOVER);

	if (err)
		return err;
	if (!s)
		return -EINVAL;
	memset(s, 0, sizeof(*s));
	p = r->payload;
	if (r->len < 8)
		return reject(r, r->records, MIG_SWITCHOVER, -EPROTO, "%u bytes", r->len);
	s->postcopy = get32(p);
	s->nvcpus = get32(p + 4);
	if (s->postcopy > 1)
		return reject(r, r->records, MIG_SWITCHOVER, -EPROTO, "postcopy %u", s->postcopy);
	if (s->nvcpus > MIG_VCPUS_MAX)
		return reject(r, r->records, MIG_SWITCHOVER, -EPROTO, "%u vCPUs (at most %u)",
			      s->nvcpus, MIG_VCPUS_MAX);
	off = 8 + (uint64_t)MIG_REGS_LEN * s->nvcpus;
	if (s->postcopy) {
		if (r->len < off + 8)
			return reject(r, r->records, MIG_SWITCHOVER, -EPROTO,
				      "%u bytes: no room for the discard count", r->len);
		cnt = get64(p + off);
		if (cnt > (r->len - off - 8) / 8 || cnt > r->guest_pages)
			return reject(r, r->records, MIG_SWITCHOVER, -EPROTO,
				      "discard count %" PRIu64 " (%u bytes, %" PRIu64 " guest pages)",
				      cnt, r->len, r->guest_pages);
		off += 8 + 8 * cnt;
	}
	if (r->len != off)
		return reject(r, r->records, MIG_SWITCHOVER, -EPROTO,
			      "%u bytes, the contents take %" PRIu64, r->len, off);
	err = get_states(r, p + 8, s->nvcpus, &s->vcpus);
	if (err)
		return err;
	if (s->postcopy) {
		const uint8_t *q = p + 8 + (uint64_t)MIG_REGS_LEN * s->nvcpus + 8;

		s->ndiscard = cnt;
		s->discard = malloc(cnt ? cnt * 8 : 1);
		if (!s->discard) {
			free(s->vcpus);
			s->vcpus = NULL;
			return -ENOMEM;
		}
		for (uint64_t i = 0; i < cnt; i++, q += 8) {
			s->discard[i] = get64(q);
			if (s->discard[i] >= r->guest_pages) {
				uint64_t bad = s->discard[i];

				free(s->vcpus);
				free(s->discard);
				s->vcpus = NULL;
				s->discard = NULL;
				return reject(r, r->records, MIG_SWITCHOVER, -EPROTO,
					      "discarded page %" PRIu64 " beyond the guest (%" PRIu64
					      " pages)", bad, r->guest_pages);
			}
		}
	}
	return 0;
}

int mig_decode_end(struct mig_reader *r, struct mig_end *e)
{
	const uint8_t *p;
	int err = want_type(r, MIG_END);

	if (err)
		return err;
	if (!e)
		return -EINVAL;
	if (r->len != 40)
		return reject(r, r->records, MIG_END, -EPROTO, "%u bytes", r->len);
	p = r->payload;
	e->pages = get64(p);
	e->bytes = get64(p + 8);
	e->records = get64(p + 16);
	e->stream_hash = get64(p + 24);
	e->memory_hash = get64(p + 32);
	if (e->records != r->records - 1)
		return reject(r, r->records, MIG_END, -EPROTO,
			      "%" PRIu64 " records sent, %" PRIu64 " received", e->records,
			      r->records - 1);
	if (e->stream_hash != r->chain_before)
		return reject(r, r->records, MIG_END, -EPROTO,
			      "stream hash 0x%016" PRIx64 ", received 0x%016" PRIx64, e->stream_hash,
			      r->chain_before);
	return 0;
}

int mig_decode_ack(struct mig_reader *r, struct mig_ack *a)
{
	const uint8_t *p;
	int err = want_type(r, MIG_ACK);

	if (err)
		return err;
	if (!a)
		return -EINVAL;
	memset(a, 0, sizeof(*a));
	p = r->payload;
	if (r->len < 20)
		return reject(r, r->records, MIG_ACK, -EPROTO, "%u bytes", r->len);
	a->what = get32(p);
	a->resume_ns = get64(p + 4);
	a->hash = get64(p + 12);
	if (a->what == MIG_ACK_RESUMED) {
		if (r->len != 20)
			return reject(r, r->records, MIG_ACK, -EPROTO, "resumed: %u bytes (20)", r->len);
		return 0;
	}
	if (a->what != MIG_ACK_DONE)
		return reject(r, r->records, MIG_ACK, -EPROTO, "what %u", a->what);
	if (r->len < 24)
		return reject(r, r->records, MIG_ACK, -EPROTO, "done: %u bytes", r->len);
	a->nvcpus = get32(p + 20);
	if (a->nvcpus > MIG_VCPUS_MAX ||
	    r->len != 24 + (uint64_t)MIG_REGS_LEN * a->nvcpus + MIG_ACK_DONE_TAIL)
		return reject(r, r->records, MIG_ACK, -EPROTO, "done: %u vCPUs in %u bytes",
			      a->nvcpus, r->len);
	p += 24 + (size_t)MIG_REGS_LEN * a->nvcpus;
	a->writes = get64(p);
	a->requests = get64(p + 8);
	a->req_p50_ns = get64(p + 16);
	a->req_p99_ns = get64(p + 24);
	return get_states(r, r->payload + 24, a->nvcpus, &a->vcpus);
}

int mig_decode_req(struct mig_reader *r, struct mig_req *q)
{
	int err = want_type(r, MIG_REQ);

	if (err)
		return err;
	if (!q)
		return -EINVAL;
	if (r->len != 12)
		return reject(r, r->records, MIG_REQ, -EPROTO, "%u bytes", r->len);
	q->slot = get32(r->payload);
	q->index = get64(r->payload + 4);
	return check_page(r, q->slot, q->index);
}

int mig_decode_recvmap(struct mig_reader *r, uint64_t *npages, const uint8_t **bits)
{
	int err = want_type(r, MIG_RECVMAP);

	if (err)
		return err;
	if (!npages || !bits)
		return -EINVAL;
	*npages = get64(r->payload);
	if (*npages > MIG_RECVMAP_MAX_PAGES || r->len != 8 + (*npages + 7) / 8)
		return reject(r, r->records, MIG_RECVMAP, -EPROTO, "%" PRIu64 " pages in %u bytes",
			      *npages, r->len);
	*bits = r->payload + 8;
	return 0;
}

int mig_decode_page(struct mig_reader *r, uint32_t *slot, uint64_t *index, const uint8_t **data)
{
	int err = want_type(r, MIG_PAGE);

	if (err)
		return err;
	if (!slot || !index || !data)
		return -EINVAL;
	if (!r->page_size || r->len != 12 + r->page_size)
		return reject(r, r->records, MIG_PAGE, -EPROTO, "%u bytes for a page of %u", r->len,
			      r->page_size);
	*slot = get32(r->payload);
	*index = get64(r->payload + 4);
	*data = r->payload + 12;
	return check_page(r, *slot, *index);
}

int mig_decode_pages(struct mig_reader *r, mig_page_fn fn, void *arg)
{
	const uint8_t *p;
	uint32_t slot, count;
	uint64_t off = 8, ps;
	int err = want_type(r, MIG_PAGES);

	if (err)
		return err;
	if (!fn)
		return -EINVAL;
	ps = r->page_size;
	p = r->payload;
	if (r->len < 8 || !ps)
		return reject(r, r->records, MIG_PAGES, -EPROTO, "%u bytes, page size %" PRIu64,
			      r->len, ps);
	slot = get32(p);
	count = get32(p + 4);
	if (count > MIG_PAGES_MAX)
		return reject(r, r->records, MIG_PAGES, -EPROTO, "%u pages (at most %u)", count,
			      MIG_PAGES_MAX);
	/* the whole record checked before the first page is handed out */
	for (uint32_t i = 0; i < count; i++) {
		uint64_t idx;

		if (r->len - off < 8)
			return reject(r, r->records, MIG_PAGES, -EPROTO,
				      "page %u of %u: past the end (%u bytes)", i, count, r->len);
		idx = get64(p + off);
		off += 8;
		if (!(idx & MIG_ZERO_PAGE)) {
			if (r->len - off < ps)
				return reject(r, r->records, MIG_PAGES, -EPROTO,
					      "page %u of %u: its bytes past the end (%u bytes)", i,
					      count, r->len);
			off += ps;
		}
		err = check_page(r, slot, idx & ~MIG_ZERO_PAGE);
		if (err)
			return err;
	}
	if (off != r->len)
		return reject(r, r->records, MIG_PAGES, -EPROTO,
			      "%u pages take %" PRIu64 " bytes, the record has %u", count, off, r->len);
	off = 8;
	for (uint32_t i = 0; i < count; i++) {
		uint64_t idx = get64(p + off);

		off += 8;
		if (idx & MIG_ZERO_PAGE) {
			err = fn(arg, slot, idx & ~MIG_ZERO_PAGE, NULL);
		} else {
			err = fn(arg, slot, idx, p + off);
			off += ps;
		}
		if (err)
			return err;
	}
	return 0;
}
