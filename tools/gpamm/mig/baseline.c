// SPDX-License-Identifier: MIT
/* Same-run baselines for a migration (baseline.h). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "mig/baseline.h"
#include "mig/net.h"
#include "mig/vmside.h"

#define CHUNK (1u << 20)

struct sink {
	int lfd;
	uint64_t bytes;
	int err;
};

static void *sink_thread(void *arg)
{
	struct sink *k = arg;
	struct mig_conn c = { .fd = -1 };
	uint8_t *buf = malloc(CHUNK);
	uint64_t left = k->bytes;

	k->err = buf ? mig_accept(k->lfd, 10000, &c) : -ENOMEM;
	c.timeout_ms = 30000;
	while (!k->err && left) {
		size_t n = left < CHUNK ? (size_t)left : CHUNK;
		k->err = mig_recv(&c, buf, n);
		left -= n;
	}
	mig_close(&c);
	free(buf);
	return NULL;
}

int mig_baseline_measure(uint64_t bytes, struct mig_baseline *b)
{
	uint8_t *src, *dst;
	struct sink k = { .bytes = bytes };
	struct mig_conn c = { .fd = -1 };
	pthread_t th;
	uint16_t port = 0;
	uint64_t t0;
	int r = 0;

	b->bytes = bytes;
	b->memcpy_s = b->tcp_s = -1;
	src = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dst = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED || dst == MAP_FAILED) {
		r = -ENOMEM;
		goto out;
	}
	memset(src, 0x5a, bytes); /* warm: no first touch in what is timed */
	memset(dst, 0xa5, bytes);
	t0 = mig_now_ns();
	memcpy(dst, src, bytes);
	b->memcpy_s = (double)(mig_now_ns() - t0) * 1e-9;
	if (dst[bytes - 1] != 0x5a) /* keep the copy */
		r = -EIO;

	k.lfd = mig_listen("127.0.0.1", 0, &port);
	if (k.lfd < 0) {
		r = k.lfd;
		goto out;
	}
	if (pthread_create(&th, NULL, sink_thread, &k)) {
		r = -EAGAIN;
		goto out_listen;
	}
	r = mig_connect("127.0.0.1", port, 10000, &c);
	if (!r) {
		c.timeout_ms = 30000;
		t0 = mig_now_ns();
		for (uint64_t off = 0; off < bytes && !r; off += CHUNK)
			r = mig_send(&c, src + off, bytes - off < CHUNK ? (size_t)(bytes - off) : CHUNK);
	}
	mig_close(&c);
	pthread_join(th, NULL);
	if (!r && !k.err)
		b->tcp_s = (double)(mig_now_ns() - t0) * 1e-9;
	else if (!r)
		r = k.err;
out_listen:
	close(k.lfd);
out:
	if (src != MAP_FAILED)
		munmap(src, bytes);
	if (dst != MAP_FAILED)
		munmap(dst, bytes);
	return r;
}
