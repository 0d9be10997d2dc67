/* SPDX-License-Identifier: MIT */
/*
 * "gpamm replay" below the command line: folding a trace's process
 * addresses into guest-physical addresses, and running the folded accesses
 * through vCPUs of a VM on the direct host.
 *
 * The folding rule: the trace's address space is cut into pages of the VM's
 * page size; each distinct process page gets the next guest page frame in
 * first-touch order (the first page the trace touches is GFN 0, the next new
 * one GFN 1, ...), so GPA = rank(ADDR >> page_shift) << page_shift |
 * (ADDR & (page_size - 1)). An access that crosses a process page boundary is
 * split there, and each part goes to its own page's frame. Only replayed
 * accesses take part (instruction fetches only with --ifetch). All frames
 * lie in one memslot at GPA 0 of the pages touched rounded up to a multiple
 * of 64 pages.
 */
#ifndef GPAMM_REPLAY_RUN_H
#define GPAMM_REPLAY_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpamm/gpamm.h"
#include "replay_trace.h"

/* One replayed access: parts in frames page0 (and page1 when it crosses). */
struct replay_op {
	uint32_t page0, page1;
	uint16_t off;  /* in page0 */
	uint16_t size; /* 1..REPLAY_MAX_SIZE */
	uint8_t type;  /* enum replay_type */
};

struct replay_fold {
	unsigned page_shift;
	bool ifetch;
	uint64_t records, count[4]; /* every record, and per type */
	/* process page -> frame (open addressing; key = page + 1, 0 = empty) */
	uint64_t *keys;
	uint32_t *vals;
	uint64_t cap;
	uint64_t npages;   /* distinct pages touched = frames used */
	uint64_t *written; /* bit per frame: stored to by an S or M */
	uint64_t written_words, nwritten;
	struct replay_op *ops;
	uint64_t nops, ops_cap;
};

void replay_fold_init(struct replay_fold *f, unsigned page_shift, bool ifetch);
/** replay_fold_add() - count @rec and, if it is replayed, fold it. Return: 0, -ENOMEM, -E2BIG (over 2^32 - 1 pages). */
int replay_fold_add(struct replay_fold *f, const struct replay_rec *rec);
void replay_fold_free(struct replay_fold *f);

struct replay_cfg {
	unsigned page_shift, levels, vcpus;
	uint64_t chunk;        /* round-robin chunk, in accesses */
	uint64_t age_interval; /* accesses between samples; 0 = one sample at the end */
};

/* One working-set sample: what happened in one interval. */
struct replay_sample {
	uint64_t end;         /* accesses replayed when it was taken */
	uint64_t young;       /* pages accessed in the interval (test_young) */
	uint64_t slow_faults; /* of which first touches (pages mapped) */
	uint64_t fast_faults; /* and re-touches of pages made idle before */
};

struct replay_result {
	uint64_t slot_pages;
	uint64_t guest_loads, guest_stores; /* a modify is one of each */
	uint64_t translations;              /* one per page each load or store touches */
	uint64_t pages_written;             /* frames whose bytes changed (read back from guest RAM) */
	struct gpamm_vm_stats st;
	struct replay_sample *series;
	uint64_t nseries;
	double seconds;
};

/**
 * replay_run() - create the host, VM, slot and vCPUs, replay @f's accesses,
 * sample the working set every cfg->age_interval accesses, tear everything
 * down and check that the guest's stores landed on exactly the frames the
 * trace stored to and that nothing leaked.
 * Return: 0, or -1 with a message in @err (then @res may be partly filled).
 * Free res->series with free().
 */
int replay_run(const struct replay_cfg *cfg, const struct replay_fold *f,
	       struct replay_result *res, char *err, size_t errlen);

#endif
