// SPDX-License-Identifier: MIT
/*
 * Trace reading and writing for "gpamm replay" (formats in replay_trace.h).
 * The reader does its own buffering over a file descriptor rather than
 * stdio so that it can look at the first bytes of stdin to pick the format,
 * hand out lines without copying them, and count bytes for the messages
 * about a bad binary trace. Lines are parsed by hand: lackey traces run to
 * hundreds of millions of lines, and sscanf would accept things (blanks
 * inside numbers, signs, overflow) that are not what lackey writes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replay_trace.h"

#define READ_BUF (1u << 20) /* also the longest line accepted */

struct replay_reader {
	int fd;
	bool own_fd;
	bool eof;      /* read() returned 0 */
	bool ended;    /* binary: end record seen */
	enum replay_format fmt;
	char *name;
	unsigned char *buf;
	size_t pos, len;
	uint64_t consumed; /* bytes before buf[0] */
	uint64_t line;     /* lackey: number of the line last read */
	uint64_t prev;     /* binary: previous address */
	uint64_t nrec;     /* binary: records read */
	char err[512];
};

__attribute__((format(printf, 2, 3)))
static int rd_fail(struct replay_reader *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	return -1;
}

/* Read more: 1 when bytes came, 0 at end of file, -1 on error. */
static int rd_fill(struct replay_reader *r)
{
	ssize_t n;

	if (r->eof)
		return 0;
	if (r->pos) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->consumed += r->pos;
		r->len -= r->pos;
		r->pos = 0;
	}
	if (r->len == READ_BUF)
		return 1; /* full: the caller decides (line too long) */
	do
		n = read(r->fd, r->buf + r->len, READ_BUF - r->len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return rd_fail(r, "cannot read %s: %s", r->name, strerror(errno));
	if (n == 0) {
		r->eof = true;
		return 0;
	}
	r->len += (size_t)n;
	return 1;
}

int replay_reader_open(const char *path, struct replay_reader **out, char *err, size_t errlen)
{
	struct replay_reader *r = calloc(1, sizeof(*r));
	bool is_stdin = !strcmp(path, "-");

	if (!r || !(r->buf = malloc(READ_BUF)) ||
	    !(r->name = strdup(is_stdin ? "<stdin>" : path))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (is_stdin) {
		r->fd = 0;
	} else {
		r->fd = open(path, O_RDONLY | O_CLOEXEC);
		if (r->fd < 0) {
			snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
			goto fail;
		}
		r->own_fd = true;
	}
	/* Enough bytes to tell the formats apart (a short read is not the end). */
	while (r->len < REPLAY_MAGIC_LEN + 1 && !r->eof) {
		if (rd_fill(r) < 0) {
			snprintf(err, errlen, "%s", r->err);
			goto fail;
		}
	}
	r->fmt = REPLAY_FMT_LACKEY;
	if (r->len >= REPLAY_MAGIC_LEN && !memcmp(r->buf, REPLAY_MAGIC, REPLAY_MAGIC_LEN)) {
		r->fmt = REPLAY_FMT_BINARY;
		if (r->len < REPLAY_MAGIC_LEN + 1) {
			snprintf(err, errlen, "%s: binary trace truncated in its header", r->name);
			goto fail;
		}
		if (r->buf[REPLAY_MAGIC_LEN] != REPLAY_VERSION) {
			snprintf(err, errlen, "%s: binary trace version %u; this gpamm reads version %u",
				 r->name, r->buf[REPLAY_MAGIC_LEN], REPLAY_VERSION);
			goto fail;
		}
		r->pos = REPLAY_MAGIC_LEN + 1;
	}
	*out = r;
	return 0;
fail:
	if (r)
		replay_reader_close(r);
	return -1;
}

enum replay_format replay_reader_format(const struct replay_reader *r)
{
	return r->fmt;
}

const char *replay_reader_name(const struct replay_reader *r)
{
	return r->name;
}

const char *replay_reader_error(const struct replay_reader *r)
{
	return r->err;
}

void replay_reader_close(struct replay_reader *r)
{
	if (!r)
		return;
	if (r->own_fd)
		close(r->fd);
	free(r->buf);
	free(r->name);
	free(r);
}

/* ---- lackey text ---------------------------------------------------------- */

/* The line as it can be shown in a message: escaped, at most ~80 characters. */
static void show_line(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 8 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i == 80) {
			o += (size_t)snprintf(out + o, outlen - o, "...");
			break;
		}
		if (c == '"' || c == '\\')
			o += (size_t)snprintf(out + o, outlen - o, "\\%c", c);
		else if (c >= 0x20 && c < 0x7f)
			out[o++] = (char)c;
		else if (c == '\t')
			o += (size_t)snprintf(out + o, outlen - o, "\\t");
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	out[o] = '\0';
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* "==1234==..." or "--1234--...": valgrind's own output. */
static bool is_valgrind_noise(const char *s, size_t n)
{
	char m;
	size_t i;

	if (n < 2 || (s[0] != '=' && s[0] != '-') || s[1] != s[0])
		return false;
	m = s[0];
	for (i = 2; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		;
	return i > 2 && i + 2 <= n && s[i] == m && s[i + 1] == m;
}

/*
 * One lackey line (without its newline). Return: 1 and *@rec, 0 for a line
 * to skip, -1 with *@why set.
 */
static int parse_lackey(const char *s, size_t n, struct replay_rec *rec, const char **why)
{
	size_t i = 0, digits;
	uint64_t addr = 0, size = 0;
	uint8_t type;

	while (n && (s[n - 1] == '\r' || is_blank(s[n - 1])))
		n--;
	if (n == 0 || is_valgrind_noise(s, n))
		return 0;
	while (i < n && is_blank(s[i]))
		i++;
	switch (s[i]) {
	case 'I': type = REPLAY_I; break;
	case 'L': type = REPLAY_L; break;
	case 'S': type = REPLAY_S; break;
	case 'M': type = REPLAY_M; break;
	default:
		*why = "expected 'I  ADDR,SIZE' or ' L|S|M ADDR,SIZE'";
		return -1;
	}
	i++;
	if (i >= n || !is_blank(s[i])) {
		*why = "expected a blank after the access type";
		return -1;
	}
	while (i < n && is_blank(s[i]))
		i++;
	if (i + 1 < n && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X'))
		i += 2;
	for (digits = 0; i < n && s[i] != ','; i++, digits++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else {
			*why = "the address is not a hex number";
			return -1;
		}
		if (addr >> 60) {
			*why = "the address is wider than 64 bits";
			return -1;
		}
		addr = addr << 4 | d;
	}
	if (!digits) {
		*why = "no address";
		return -1;
	}
	if (i >= n) {
		*why = "expected ',SIZE' after the address";
		return -1;
	}
	i++;
	for (digits = 0; i < n; i++, digits++) {
		if (s[i] < '0' || s[i] > '9') {
			*why = "the size is not a decimal number";
			return -1;
		}
		if (size <= REPLAY_MAX_SIZE)
			size = size * 10 + (uint64_t)(s[i] - '0');
	}
	if (!digits) {
		*why = "no size";
		return -1;
	}
	if (size == 0 || size > REPLAY_MAX_SIZE) {
		*why = "the size is out of range (1..4096)";
		return -1;
	}
	if (addr + size - 1 < addr) {
		*why = "the access wraps around the end of the address space";
		return -1;
	}
	rec->addr = addr;
	rec->size = (uint32_t)size;
	rec->type = type;
	return 1;
}

static int next_lackey(struct replay_reader *r, struct replay_rec *rec)
{
	for (;;) {
		const char *s = (const char *)r->buf + r->pos;
		size_t avail = r->len - r->pos, n;
		const char *nl = memchr(s, '\n', avail);
		const char *why = NULL;
		char shown[400];
		int ret;

		if (!nl && !r->eof) {
			if (avail == READ_BUF) {
				show_line(s, 80, shown, sizeof(shown));
				return rd_fail(r, "%s:%llu: line too long (over %u bytes): \"%s\"",
					       r->name, (unsigned long long)r->line + 1, READ_BUF,
					       shown);
			}
			if (rd_fill(r) < 0)
				return -1;
			continue;
		}
		if (!nl && avail == 0)
			return 0;
		n = nl ? (size_t)(nl - s) : avail;
		r->pos += nl ? n + 1 : n;
		r->line++;
		ret = parse_lackey(s, n, rec, &why);
		if (ret > 0)
			return 1;
		if (ret < 0) {
			show_line(s, n, shown, sizeof(shown));
			return rd_fail(r, "%s:%llu: malformed line \"%s\": %s", r->name,
				       (unsigned long long)r->line, shown, why);
		}
	}
}

/* ---- binary ----------------------------------------------------------------- */

/* The next byte, or -1 at end of file / on error (r->err set on error only). */
static int get_byte(struct replay_reader *r)
{
	if (r->pos == r->len) {
		r->err[0] = '\0';
		if (rd_fill(r) <= 0)
			return -1;
	}
	return r->buf[r->pos++];
}

static uint64_t offset(const struct replay_reader *r)
{
	return r->consumed + r->pos;
}

/* Return: 0 and *@v, or -1 with the message set. */
static int get_varint(struct replay_reader *r, uint64_t *v, const char *what)
{
	uint64_t x = 0;
	unsigned shift = 0;

	for (;;) {
		int c = get_byte(r);

		if (c < 0)
			return r->err[0] ? -1 : rd_fail(r, "%s: binary trace truncated at byte %llu (in %s)",
						       r->name, (unsigned long long)offset(r), what);
		if (shift == 63 && (c & 0x7e))
			return rd_fail(r, "%s: bad binary trace at byte %llu: %s overflows 64 bits",
				       r->name, (unsigned long long)offset(r) - 1, what);
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			break;
		shift += 7;
		if (shift > 63)
			return rd_fail(r, "%s: bad binary trace at byte %llu: %s overflows 64 bits",
				       r->name, (unsigned long long)offset(r) - 1, what);
	}
	*v = x;
	return 0;
}

static int next_binary(struct replay_reader *r, struct replay_rec *rec)
{
	uint64_t at, size, delta, count;
	int tag, kind;

	if (r->ended)
		return 0;
	at = offset(r);
	tag = get_byte(r);
	if (tag < 0)
		return r->err[0] ? -1 : rd_fail(r, "%s: binary trace truncated at byte %llu "
						"(no end record after %llu records)", r->name,
						(unsigned long long)at, (unsigned long long)r->nrec);
	kind = tag & 7;
	if (kind == 7) {
		if (tag != 7)
			return rd_fail(r, "%s: bad binary trace at byte %llu: bad end tag 0x%02x",
				       r->name, (unsigned long long)at, tag);
		if (get_varint(r, &count, "the record count"))
			return -1;
		if (count != r->nrec)
			return rd_fail(r, "%s: bad binary trace: the end record says %llu records, "
				       "%llu were read", r->name, (unsigned long long)count,
				       (unsigned long long)r->nrec);
		if (get_byte(r) >= 0)
			return rd_fail(r, "%s: bad binary trace: data after the end record at byte %llu",
				       r->name, (unsigned long long)offset(r) - 1);
		if (r->err[0])
			return -1;
		r->ended = true;
		return 0;
	}
	if (kind > REPLAY_M)
		return rd_fail(r, "%s: bad binary trace at byte %llu: unknown record kind %d",
			       r->name, (unsigned long long)at, kind);
	size = (unsigned)tag >> 3;
	if (!size && get_varint(r, &size, "a size"))
		return -1;
	if (size == 0 || size > REPLAY_MAX_SIZE)
		return rd_fail(r, "%s: bad binary trace at byte %llu: size %llu out of range (1..%u)",
			       r->name, (unsigned long long)at, (unsigned long long)size,
			       REPLAY_MAX_SIZE);
	if (get_varint(r, &delta, "an address"))
		return -1;
	rec->addr = r->prev + ((delta >> 1) ^ (0 - (delta & 1)));
	if (rec->addr + size - 1 < rec->addr)
		return rd_fail(r, "%s: bad binary trace at byte %llu: the access wraps around the "
			       "end of the address space", r->name, (unsigned long long)at);
	rec->size = (uint32_t)size;
	rec->type = (uint8_t)kind;
	r->prev = rec->addr;
	r->nrec++;
	return 1;
}

int replay_reader_next(struct replay_reader *r, struct replay_rec *rec)
{
	return r->fmt == REPLAY_FMT_BINARY ? next_binary(r, rec) : next_lackey(r, rec);
}

/* ---- writer ------------------------------------------------------------------ */

struct replay_writer {
	FILE *f;
	char *path; /* NULL for stdout */
	uint64_t prev, count;
};

static void put_varint(FILE *f, uint64_t v)
{
	while (v >= 0x80) {
		putc((int)(v & 0x7f) | 0x80, f);
		v >>= 7;
	}
	putc((int)v, f);
}

int replay_writer_open(const char *path, struct replay_writer **out, char *err, size_t errlen)
{
	struct replay_writer *w = calloc(1, sizeof(*w));

	if (!w) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (!strcmp(path, "-")) {
		w->f = stdout;
	} else {
		w->path = strdup(path);
		w->f = w->path ? fopen(path, "wbe") : NULL;
		if (!w->f) {
			snprintf(err, errlen, "cannot create %s: %s", path,
				 w->path ? strerror(errno) : "out of memory");
			free(w->path);
			free(w);
			return -1;
		}
	}
	fwrite(REPLAY_MAGIC, 1, REPLAY_MAGIC_LEN, w->f);
	putc(REPLAY_VERSION, w->f);
	*out = w;
	return 0;
}

int replay_writer_put(struct replay_writer *w, const struct replay_rec *rec, char *err,
		      size_t errlen)
{
	int64_t d = (int64_t)(rec->addr - w->prev);

	if (rec->size < 32) {
		putc((int)(rec->size << 3 | rec->type), w->f);
	} else {
		putc(rec->type, w->f);
		put_varint(w->f, rec->size);
	}
	put_varint(w->f, ((uint64_t)d << 1) ^ (uint64_t)(d >> 63));
	w->prev = rec->addr;
	w->count++;
	if (ferror(w->f)) {
		snprintf(err, errlen, "cannot write %s: %s", w->path ? w->path : "<stdout>",
			 strerror(errno));
		return -1;
	}
	return 0;
}

int replay_writer_close(struct replay_writer *w, bool commit, char *err, size_t errlen)
{
	int ret = 0, e = 0;

	if (commit) {
		putc(7, w->f);
		put_varint(w->f, w->count);
		if (fflush(w->f) || ferror(w->f)) {
			e = errno;
			ret = -1;
		}
	}
	if (w->path) {
		if (fclose(w->f) && !ret) {
			e = errno;
			ret = -1;
		}
		if (ret || !commit)
			unlink(w->path);
	}
	if (ret)
		snprintf(err, errlen, "cannot write %s: %s", w->path ? w->path : "<stdout>",
			 strerror(e ? e : EIO));
	free(w->path);
	free(w);
	return ret;
}
