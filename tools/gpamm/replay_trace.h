/* SPDX-License-Identifier: MIT */
/*
 * Memory-access traces for "gpamm replay": a streaming reader of valgrind's
 * lackey output and of gpamm's compact binary form (the format is detected
 * from the first bytes), and a writer of the binary form.
 *
 * Lackey (valgrind --tool=lackey --trace-mem=yes) writes one access a line:
 *
 *   "I  ADDR,SIZE"   instruction fetch
 *   " L ADDR,SIZE"   load
 *   " S ADDR,SIZE"   store
 *   " M ADDR,SIZE"   modify (a load and a store of the same bytes)
 *
 * ADDR in hex (an optional 0x is accepted), SIZE in decimal. Lines of
 * valgrind's own ("==PID== ...", "--PID-- ...") and blank lines are skipped;
 * leading blanks and a trailing CR are tolerated; anything else is an error
 * naming the line number and its content.
 *
 * Binary form, version 1 (all integers unsigned LEB128 varints unless said):
 *
 *   header  8 bytes magic "\x89GPAMMTR", 1 byte version (1)
 *   record  1 byte tag: bits 0-2 kind (0 I, 1 L, 2 S, 3 M),
 *                       bits 3-7 SIZE if 1..31, or 0: SIZE follows as a varint;
 *           [varint SIZE]
 *           varint zigzag(ADDR - previous record's ADDR), the first record's
 *           delta taken from 0, the subtraction modulo 2^64
 *   end     1 byte tag 0x07, varint number of records; nothing may follow
 *
 * A lackey record is typically 2-3 bytes in this form instead of ~15.
 * SIZE is 1..REPLAY_MAX_SIZE in both forms (so an access spans at most two
 * pages of any supported page size).
 */
#ifndef GPAMM_REPLAY_TRACE_H
#define GPAMM_REPLAY_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REPLAY_MAX_SIZE 4096u

#define REPLAY_MAGIC     "\x89GPAMMTR"
#define REPLAY_MAGIC_LEN 8
#define REPLAY_VERSION   1

enum replay_type { REPLAY_I = 0, REPLAY_L = 1, REPLAY_S = 2, REPLAY_M = 3 };

struct replay_rec {
	uint64_t addr;
	uint32_t size;
	uint8_t type; /* enum replay_type */
};

enum replay_format { REPLAY_FMT_LACKEY, REPLAY_FMT_BINARY };

struct replay_reader;

/**
 * replay_reader_open() - open @path ("-" is stdin) and detect its format.
 * Return: 0 and *@out, or -1 with a message (naming the file) in @err.
 */
int replay_reader_open(const char *path, struct replay_reader **out, char *err, size_t errlen);
enum replay_format replay_reader_format(const struct replay_reader *r);
/** The name used in messages: the path, or "<stdin>". */
const char *replay_reader_name(const struct replay_reader *r);
/**
 * replay_reader_next() - the next record.
 * Return: 1 and *@rec, 0 at the end of the trace, -1 on a read or format
 * error (the message, with file name and line number or byte offset, is
 * in replay_reader_error()).
 */
int replay_reader_next(struct replay_reader *r, struct replay_rec *rec);
const char *replay_reader_error(const struct replay_reader *r);
void replay_reader_close(struct replay_reader *r);

struct replay_writer;

/** replay_writer_open() - create @path ("-" is stdout) and write the header. */
int replay_writer_open(const char *path, struct replay_writer **out, char *err, size_t errlen);
/** replay_writer_put() - append one record. Return: 0, or -1 (message in @err). */
int replay_writer_put(struct replay_writer *w, const struct replay_rec *rec, char *err,
		      size_t errlen);
/**
 * replay_writer_close() - with @commit, write the end record and close
 * (Return: 0, or -1 and a message); without, close and remove the file.
 */
int replay_writer_close(struct replay_writer *w, bool commit, char *err, size_t errlen);

#endif
