// SPDX-License-Identifier: MIT
/*
 * The two ends of a migration against a peer that misbehaves, over the
 * loopback, bounded in size and time:
 *  - gpamm receive fed by this test: another version, a corrupt checksum,
 *    a stream truncated inside a record, a stream that ends before the
 *    switchover, a page outside guest memory: each is rejected with a
 *    message that says so, and exit status 1;
 *  - gpamm migrate against a destination played by this test that drops
 *    the connection before it acknowledges the switchover (during the
 *    first pass, and right after SWITCHOVER arrives): the source resumes
 *    its guest, says so, and exits 1 with the verdict FAILED;
 *  - post-copy recovery: the connections cut after the switchover, both
 *    sides pause, `gpamm migrate --resume` finishes it, exact.
 *
 * The binary is $GPAMM_BIN, or BUILD/gpamm next to this test's BUILD/tests/.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "harness/clitest.h"
#include "harness/tap.h"
#include "mig/net.h"
#include "mig/stream.h"


#define PSHIFT 12
#define PSZ (1u << PSHIFT)
#define GMEM (4u << 20)

/* ---- a receive process -------------------------------------------------------------- */

struct child {
	pid_t pid;
	uint16_t port;
	char errpath[64];
};

static void spawn_receive(struct child *c)
{
	int pfd[2], efd;
	char line[32] = { 0 };
	ssize_t n;

	snprintf(c->errpath, sizeof(c->errpath), "/tmp/gpamm-rcv-err-%d", (int)getpid());
	ASSERT(!pipe(pfd));
	c->pid = fork();
	ASSERT(c->pid >= 0);
	if (!c->pid) {
		char fd[16];

		efd = open(c->errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (efd >= 0)
			dup2(efd, 2);
		close(pfd[0]);
		snprintf(fd, sizeof(fd), "%d", pfd[1]);
		execl(gpamm_bin, "gpamm", "receive", "--listen", "127.0.0.1:0", "--ready-fd", fd,
		      "--timeout", "10", "--run-ms", "10", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	n = read(pfd[0], line, sizeof(line) - 1);
	close(pfd[0]);
	ASSERT(n > 1);
	c->port = (uint16_t)strtoul(line, NULL, 10);
	ASSERT(c->port);
}

/* Wait for the child; its status and what it said on stderr (caller frees). */
static int reap(struct child *c, char **err)
{
	int st = 0;

	ASSERT_EQ(waitpid(c->pid, &st, 0), c->pid);
	*err = read_file(c->errpath, NULL);
	unlink(c->errpath);
	if (!*err)
		*err = strdup("");
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct feed {
	struct mig_conn main, pc;
	struct mig_writer w, pw;
};

/* Both channels, their HELLOs (@version for the main one), and CONFIG unless !config. */
static void feed_open(struct feed *f, const struct child *c, uint32_t version, bool config)
{
	struct mig_hello h = { .version = version, .channel = MIG_CH_MAIN, .session = 77 };
	struct mig_slot slot = { .slot = 0, .gpa = 1ULL << 32, .size = GMEM };
	struct mig_config cfg = {
		.page_shift = PSHIFT, .levels = 3, .vcpus = 1, .log_mode = MIG_LOG_MANUAL,
		.nslots = 1, .slots = &slot, .seed = 1, .hot_pct = 1, .hot_writes = 90,
	};

	ASSERT_EQ(mig_connect("127.0.0.1", c->port, 5000, &f->main), 0);
	f->main.timeout_ms = 5000;
	ASSERT_EQ(mig_writer_init(&f->w, &f->main, PSZ), 0);
	ASSERT_EQ(mig_write_hello(&f->w, &h), 0);
	if (version != MIG_VERSION)
		return; /* the destination stops reading here */
	ASSERT_EQ(mig_connect("127.0.0.1", c->port, 5000, &f->pc), 0);
	ASSERT_EQ(mig_writer_init(&f->pw, &f->pc, PSZ), 0);
	h.channel = MIG_CH_POSTCOPY;
	ASSERT_EQ(mig_write_hello(&f->pw, &h), 0);
	if (config)
		ASSERT_EQ(mig_write_config(&f->w, &cfg), 0);
}

static void feed_close(struct feed *f)
{
	mig_close(&f->main);
	mig_close(&f->pc);
	mig_writer_free(&f->w);
	mig_writer_free(&f->pw);
}

static void expect_rejected(struct child *c, const char *what)
{
	char *err;
	int st = reap(c, &err);

	if (st != 1 || !strstr(err, what))
		tap_diag("receive exited %d, stderr: %s", st, err);
	ASSERT_EQ_INT(st, 1);
	ASSERT(strstr(err, what));
	free(err);
}

static void test_rejects_other_version(void)
{
	struct child c;
	struct feed f = { 0 };

	spawn_receive(&c);
	feed_open(&f, &c, MIG_VERSION + 1, false);
	expect_rejected(&c, "version");
	feed_close(&f);
}

static void test_rejects_corrupt_checksum(void)
{
	struct child c;
	struct feed f = { 0 };
	uint8_t page[PSZ];
	uint8_t rec[MIG_HDR_LEN + 12];

	spawn_receive(&c);
	feed_open(&f, &c, MIG_VERSION, true);
	memset(page, 0x11, sizeof(page));
	/* a ROUND record whose checksum is off by one */
	memset(rec, 0, sizeof(rec));
	rec[0] = MIG_ROUND;
	rec[4] = 32; /* length, little-endian */
	ASSERT_EQ(mig_send(&f.main, rec, MIG_HDR_LEN), 0);
	memset(page, 0, 32);
	ASSERT_EQ(mig_send(&f.main, page, 32), 0);
	expect_rejected(&c, "checksum");
	feed_close(&f);
}

static void test_rejects_truncated_stream(void)
{
	struct child c;
	struct feed f = { 0 };
	uint8_t hdr[MIG_HDR_LEN] = { MIG_PAGES };
	uint8_t part[100] = { 0 };

	spawn_receive(&c);
	feed_open(&f, &c, MIG_VERSION, true);
	/* a PAGES header announcing one page, then 100 bytes of it, then EOF */
	hdr[4] = (uint8_t)((8 + 8 + PSZ) & 0xff);
	hdr[5] = (uint8_t)((8 + 8 + PSZ) >> 8);
	ASSERT_EQ(mig_send(&f.main, hdr, sizeof(hdr)), 0);
	ASSERT_EQ(mig_send(&f.main, part, sizeof(part)), 0);
	feed_close(&f);
	expect_rejected(&c, "truncated");
}

static void test_rejects_end_before_switchover(void)
{
	struct child c;
	struct feed f = { 0 };
	uint8_t page[PSZ];

	spawn_receive(&c);
	feed_open(&f, &c, MIG_VERSION, true);
	memset(page, 0x22, sizeof(page));
	ASSERT_EQ(mig_pages_add(&f.w, 0, 3, page), 0);
	ASSERT_EQ(mig_pages_flush(&f.w), 0);
	feed_close(&f); /* a clean close between records, but no switchover */
	expect_rejected(&c, "went away");
}

static void test_rejects_page_outside_memory(void)
{
	struct child c;
	struct feed f = { 0 };
	uint8_t page[PSZ];

	spawn_receive(&c);
	feed_open(&f, &c, MIG_VERSION, true);
	memset(page, 0x33, sizeof(page));
	ASSERT_EQ(mig_pages_add(&f.w, 0, GMEM / PSZ, page), 0); /* one past the end */
	ASSERT_EQ(mig_pages_flush(&f.w), 0);
	expect_rejected(&c, "beyond slot");
	feed_close(&f);
}

/* ---- a destination that drops the connection --------------------------------------- */

struct fake_dest {
	int lfd;
	uint16_t port;
	unsigned drop_after_records; /* close the main channel after this many */
	bool drop_at_switchover;     /* or when SWITCHOVER arrives */
	unsigned got;
	bool saw_switchover;
};

static void *fake_dest_thread(void *arg)
{
	struct fake_dest *d = arg;
	struct mig_conn main = { .fd = -1 }, pc = { .fd = -1 };
	struct mig_reader rd;

	if (mig_accept(d->lfd, 20000, &main) || mig_accept(d->lfd, 20000, &pc))
		goto out;
	main.timeout_ms = 20000;
	if (mig_reader_init(&rd, &main))
		goto out;
	while (!mig_read_record(&rd)) {
		d->got++;
		if (rd.type == MIG_CONFIG) {
			struct mig_config cfg;
			if (!mig_decode_config(&rd, &cfg))
				free(cfg.slots);
		}
		if (rd.type == MIG_SWITCHOVER) {
			d->saw_switchover = true;
			if (d->drop_at_switchover)
				break;
		}
		if (d->drop_after_records && d->got >= d->drop_after_records)
			break;
	}
	mig_reader_free(&rd);
out:
	mig_close(&main); /* gone before any acknowledge */
	mig_close(&pc);
	return NULL;
}

static void check_fail_safe(unsigned drop_after, bool at_switchover)
{
	struct fake_dest d = { .drop_after_records = drop_after, .drop_at_switchover = at_switchover };
	char to[32];
	pthread_t th;
	struct result r;

	d.lfd = mig_listen("127.0.0.1", 0, &d.port);
	ASSERT(d.lfd >= 0);
	ASSERT_EQ(pthread_create(&th, NULL, fake_dest_thread, &d), 0);
	snprintf(to, sizeof(to), "127.0.0.1:%u", d.port);
	r = run_gpamm(NULL, ARGS("migrate", "--mem", "8M", "--page-shift", "12", "--to", to,
				 "--no-host-events", "--timeout", "10", "-s", "4", "--json"));
	pthread_join(th, NULL);
	close(d.lfd);
	if (r.status != 1 || !strstr(r.err, "the guest resumed on the source"))
		tap_diag("migrate exited %d; stderr: %s", r.status, r.err);
	ASSERT_EQ_INT(r.status, 1);
	ASSERT(strstr(r.out, "\"verdict\":\"FAILED\""));
	ASSERT(strstr(r.err, "the guest resumed on the source and goes on running"));
	/* and it did go on: writes were made after the resume */
	ASSERT(!strstr(r.err, "running (0 writes"));
	if (at_switchover)
		ASSERT(d.saw_switchover);
	result_free(&r);
}

static void test_source_survives_drop_in_first_pass(void) { check_fail_safe(20, false); }

/*
 * Post-copy recovery: both connections cut after 300 background pages
 * (--inject-postcopy-drop); the source pauses with the guest's memory, the
 * destination's faulting vCPUs wait; `gpamm migrate --resume` makes the
 * source reconnect, and the migration finishes exact.
 */
static void test_postcopy_recovery(void)
{
	char ctl[64], outp[64], errp[64];
	char *out, *err;
	struct result r;
	pid_t pid;
	int st = 0;

	snprintf(ctl, sizeof(ctl), "/tmp/gpamm-test-ctl-%d.sock", (int)getpid());
	snprintf(outp, sizeof(outp), "/tmp/gpamm-test-src-out-%d", (int)getpid());
	snprintf(errp, sizeof(errp), "/tmp/gpamm-test-src-err-%d", (int)getpid());
	unlink(ctl);
	pid = fork();
	ASSERT(pid >= 0);
	if (!pid) {
		int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(o, 1);
		dup2(e, 2);
		execl(gpamm_bin, "gpamm", "migrate", "--mem", "16M", "--page-shift", "12",
		      "--postcopy", "--rate", "0", "--run-ms", "200", "--no-host-events",
		      "--inject-postcopy-drop", "300", "--control", ctl, "--timeout", "10",
		      "-s", "12", "--json", (char *)NULL);
		_exit(127);
	}
	/* the paused source opens its control socket */
	for (int i = 0; i < 200 && access(ctl, F_OK); i++)
		usleep(50000);
	ASSERT(!access(ctl, F_OK));
	r = run_gpamm(NULL, ARGS("migrate", "--resume", ctl));
	ASSERT_EQ(waitpid(pid, &st, 0), pid);
	out = read_file(outp, NULL);
	err = read_file(errp, NULL);
	unlink(outp);
	unlink(errp);
	if (r.status || !WIFEXITED(st) || WEXITSTATUS(st))
		tap_diag("resume exit %d (%s); source status %d, stderr: %s", r.status, r.out, st,
			 err ? err : "");
	ASSERT_EQ_INT(r.status, 0);
	ASSERT(strstr(r.out, "resuming\nfinished exact"));
	ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ASSERT(err && strstr(err, "post-copy paused"));
	ASSERT(strstr(err, "post-copy resumed"));
	ASSERT(out && strstr(out, "\"verdict\":\"exact\""));
	ASSERT(access(ctl, F_OK)); /* the control socket is gone */
	free(out);
	free(err);
	result_free(&r);

	/* nobody paused there: --resume fails */
	r = run_gpamm(NULL, ARGS("migrate", "--resume", ctl));
	ASSERT_EQ_INT(r.status, 1);
	ASSERT(strstr(r.err, "no paused migration"));
	result_free(&r);
}
static void test_source_survives_drop_at_switchover(void) { check_fail_safe(0, true); }

int main(int argc, char **argv)
{
	if (!clitest_init(argc, argv))
		return 1;
	signal(SIGPIPE, SIG_IGN);
	TEST(test_rejects_other_version);
	TEST(test_rejects_corrupt_checksum);
	TEST(test_rejects_truncated_stream);
	TEST(test_rejects_end_before_switchover);
	TEST(test_rejects_page_outside_memory);
	TEST(test_source_survives_drop_in_first_pass);
	TEST(test_source_survives_drop_at_switchover);
	TEST(test_postcopy_recovery);
	return tap_done();
}
