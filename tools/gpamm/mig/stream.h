/* SPDX-License-Identifier: MIT */
/*
 * The migration stream, version 1 (docs/migration.md): records with a
 * header and an XXH3-64 checksum each, chained into a stream hash carried
 * by END. Writers batch PAGES records; readers check every limit and
 * reject anything malformed with a message naming the record.
 */
#ifndef GPAMM_MIG_STREAM_H
#define GPAMM_MIG_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "gpamm/gpamm.h"
#include "mig/net.h"

#define MIG_MAGIC "GPAMMIG"     /* 8 bytes with the NUL */
#define MIG_VERSION 1
#define MIG_PAGES_MAX 256       /* pages in one PAGES record */
#define MIG_SLOTS_MAX 32767
#define MIG_ZERO_PAGE (1ULL << 63) /* in a page index: a zero page, no bytes */
#define MIG_HDR_LEN 16          /* type flags reserved length checksum */
#define MIG_VCPUS_MAX 256       /* vCPU states in SWITCHOVER and ACK */
#define MIG_REGS_LEN (4 + 33 * 8) /* one vCPU state on the wire: id and regs */
#define MIG_ACK_DONE_TAIL 32      /* ACK(done) after the states: writes, requests, p50, p99 */

enum mig_type {
	MIG_HELLO = 1, MIG_CONFIG, MIG_PAGES, MIG_ROUND, MIG_SWITCHOVER, MIG_END, MIG_ACK,
	MIG_REQ, MIG_PAGE, MIG_RECVMAP, MIG_TYPE_MAX = MIG_RECVMAP,
};

enum mig_channel { MIG_CH_MAIN = 0, MIG_CH_POSTCOPY = 1 };
enum mig_log_mode { MIG_LOG_MANUAL = 0, MIG_LOG_CLASSIC = 1, MIG_LOG_RING = 2 };
enum mig_ack_what { MIG_ACK_RESUMED = 1, MIG_ACK_DONE = 2 };

struct mig_hello {
	uint32_t version, channel;
	uint64_t session;
};

struct mig_slot {
	uint32_t slot, flags;
	uint64_t gpa, size;
};

struct mig_config {
	uint32_t page_shift, levels, vcpus, log_mode, ring_size, nslots;
	struct mig_slot *slots; /* nslots; owned by the reader after decode (free()) */
	uint64_t seed;
	uint32_t hot_pct, hot_writes;
	uint64_t rate;
};

struct mig_round {
	uint32_t round, throttle_pct;
	uint64_t pages, zero_pages, dirty_rate;
};

struct mig_vcpu_state {
	uint32_t id;
	struct gpamm_regs regs;
};

struct mig_switchover {
	uint32_t postcopy, nvcpus;
	struct mig_vcpu_state *vcpus; /* nvcpus; owned by the reader (free()) */
	uint64_t ndiscard;
	uint64_t *discard;            /* ndiscard page indices (slot 0 page numbering); owned by the reader */
};

struct mig_end {
	uint64_t pages, bytes, records, stream_hash, memory_hash;
};

struct mig_ack {
	uint32_t what;      /* enum mig_ack_what */
	uint64_t resume_ns; /* CLOCK_MONOTONIC */
	uint64_t hash;
	uint32_t nvcpus;    /* DONE: the vCPUs' registers at their stop */
	struct mig_vcpu_state *vcpus; /* owned by the reader (free()) */
	/* DONE: what the destination saw (post-copy requests: count, latency) */
	uint64_t writes, requests, req_p50_ns, req_p99_ns;
};

struct mig_req {
	uint32_t slot;
	uint64_t index;
};

/* ---- writing ---------------------------------------------------------------- */

struct mig_writer {
	struct mig_conn *conn;
	uint64_t records, bytes, pages, zero_pages; /* what went out */
	uint64_t chain;          /* the stream hash so far */
	uint32_t page_size;
	/* the PAGES record being filled */
	uint8_t *buf;
	size_t len, cap;
	uint32_t batch_slot, batch_n;
};

int mig_writer_init(struct mig_writer *w, struct mig_conn *c, uint32_t page_size);
void mig_writer_free(struct mig_writer *w);
/* One record of @type with @len payload bytes (flushes a pending PAGES batch first). */
int mig_write_record(struct mig_writer *w, unsigned type, const void *payload, uint32_t len);
int mig_write_hello(struct mig_writer *w, const struct mig_hello *h);
int mig_write_config(struct mig_writer *w, const struct mig_config *c);
int mig_write_round(struct mig_writer *w, const struct mig_round *r);
int mig_write_switchover(struct mig_writer *w, const struct mig_switchover *s);
/* END: fills records and stream_hash itself (pages and bytes too when 0). */
int mig_write_end(struct mig_writer *w, struct mig_end *e);
int mig_write_ack(struct mig_writer *w, const struct mig_ack *a);
int mig_write_req(struct mig_writer *w, const struct mig_req *r);
/*
 * RECVMAP (destination to source, post-copy recovery): which of @npages
 * pages the destination has, one bit each (bit i of byte i / 8).
 */
#define MIG_RECVMAP_MAX_PAGES (64ULL << 30 >> 12)
int mig_write_recvmap(struct mig_writer *w, uint64_t npages, const uint8_t *bits);
/* PAGE (postcopy reply): one page, @data page_size bytes. */
int mig_write_page(struct mig_writer *w, uint32_t slot, uint64_t index, const void *data);
/*
 * Add a page to the current PAGES batch (a new batch when @slot differs or
 * it is full). @data NULL or all zero bytes: sent as a zero page (the
 * writer checks). Batches go out when full or on mig_pages_flush().
 */
int mig_pages_add(struct mig_writer *w, uint32_t slot, uint64_t index, const void *data);
int mig_pages_flush(struct mig_writer *w);
/*
 * The same without a copy: mig_pages_reserve() returns where the page's
 * page_size bytes go in the batch (NULL: bad arguments, or the flush of a
 * full batch failed); fill them, then mig_pages_commit() (a page found all
 * zero becomes a zero page). Nothing else may be written in between.
 */
uint8_t *mig_pages_reserve(struct mig_writer *w, uint32_t slot, uint64_t index);
int mig_pages_commit(struct mig_writer *w);

/* ---- reading ---------------------------------------------------------------- */

struct mig_reader {
	struct mig_conn *conn;
	uint32_t page_size;      /* 0 until CONFIG is read (PAGES need it) */
	uint64_t records, chain;
	unsigned type;           /* of the last record read */
	uint8_t *payload;        /* its payload (valid until the next read) */
	uint32_t len;
	size_t cap;
	char err[200];           /* why the last read failed */
	/* added with the implementation (mig/stream.c) */
	uint64_t chain_before;   /* the stream hash before the last record: END checks it */
	uint32_t seen;           /* bit (1 << type): types read so far (order checks) */
	uint64_t guest_pages;    /* from CONFIG: pages over all slots (0: no CONFIG) */
	uint32_t nslots;         /* from CONFIG: its slots, sorted by id, to check PAGES/REQ */
	struct mig_slot *slots;
};

/*
 * A channel that carries no CONFIG (postcopy: PAGE records) needs the page
 * size from elsewhere: set r->page_size after mig_reader_init().
 */
int mig_reader_init(struct mig_reader *r, struct mig_conn *c);
void mig_reader_free(struct mig_reader *r);
/*
 * Read the next record: header, payload, checksum, length limits of its
 * type. Return: 0; -EPROTO (malformed: bad checksum, unknown type, length
 * over the limit; r->err says which record and why); -ENODATA (the peer
 * closed cleanly between records); -EPIPE (closed inside a record:
 * truncated); -ETIMEDOUT; -errno.
 */
int mig_read_record(struct mig_reader *r);
/* Decoders of the last record; -EPROTO with r->err when its contents do not add up. */
int mig_decode_hello(struct mig_reader *r, struct mig_hello *h); /* checks magic and version */
int mig_decode_config(struct mig_reader *r, struct mig_config *c);
int mig_decode_round(struct mig_reader *r, struct mig_round *o);
int mig_decode_switchover(struct mig_reader *r, struct mig_switchover *s);
int mig_decode_end(struct mig_reader *r, struct mig_end *e); /* checks records and stream_hash */
int mig_decode_ack(struct mig_reader *r, struct mig_ack *a);
int mig_decode_req(struct mig_reader *r, struct mig_req *q);
/* RECVMAP: the page count and a pointer to its bits in the payload. */
int mig_decode_recvmap(struct mig_reader *r, uint64_t *npages, const uint8_t **bits);
/* PAGE: slot, index and a pointer into the payload. */
int mig_decode_page(struct mig_reader *r, uint32_t *slot, uint64_t *index, const uint8_t **data);
/*
 * PAGES: call @fn for each page (data NULL for a zero page); stops at the
 * first non-zero return of @fn and returns it.
 */
typedef int (*mig_page_fn)(void *arg, uint32_t slot, uint64_t index, const uint8_t *data);
int mig_decode_pages(struct mig_reader *r, mig_page_fn fn, void *arg);

/* XXH3-64 of guest memory pages, for the verification hashes. */
uint64_t mig_hash(const void *buf, size_t len, uint64_t seed);

#endif
