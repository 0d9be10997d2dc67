// SPDX-License-Identifier: MIT
/* Fork isolation for tests: see isolate.h. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "isolate.h"
#include "tap.h"

#define STEP_LEN 200

static char *iso_step;        /* MAP_SHARED: the parent reads what the child did last */
static const char *iso_name;  /* the test running */
static int iso_soft_failed;   /* child: an EXPECT failed */

void step(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(iso_step, STEP_LEN, fmt, ap);
	va_end(ap);
}

bool iso_failed(void)
{
	return iso_soft_failed;
}

void ck_failed(bool fatal, const char *file, int line, const char *expr, const char *detail)
{
	printf("# %s: %s:%d: check failed: %s%s%s\n", iso_name, file, line, expr,
	       detail ? ": " : "", detail ? detail : "");
	fflush(stdout);
	if (fatal)
		_exit(1);
	iso_soft_failed = 1;
}

void isolate(const char *name, void (*body)(void))
{
	struct timespec t0, now, tick = { .tv_sec = 0, .tv_nsec = 1000000 };
	char detail[STEP_LEN + 160];
	bool reaped = false;
	int status = 0;
	pid_t pid;

	if (!iso_step) {
		void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			       -1, 0);
		ASSERT(m != MAP_FAILED);
		iso_step = m;
	}
	iso_name = name;
	snprintf(iso_step, STEP_LEN, "body start");
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		iso_soft_failed = 0;
		body();
		fflush(stdout);
		_exit(iso_soft_failed ? 1 : 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid) {
			reaped = true;
			break;
		}
		ASSERT(w == 0 || errno == EINTR);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec > ISO_GUARD_SEC ||
		    (now.tv_sec - t0.tv_sec == ISO_GUARD_SEC && now.tv_nsec >= t0.tv_nsec))
			break;
		nanosleep(&tick, NULL);
	}
	if (!reaped) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		snprintf(detail, sizeof(detail),
			 "timed out after %d s (child killed); last step: %s", ISO_GUARD_SEC, iso_step);
		tap_fail(__FILE__, __LINE__, "child finished", detail);
	}
	if (WIFSIGNALED(status)) {
		snprintf(detail, sizeof(detail), "child killed by signal %d (%s); last step: %s",
			 WTERMSIG(status), strsignal(WTERMSIG(status)), iso_step);
		tap_fail(__FILE__, __LINE__, "child finished", detail);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(detail, sizeof(detail),
			 "child exited with status %d (a check failed, see above); last step: %s",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1, iso_step);
		tap_fail(__FILE__, __LINE__, "child passed", detail);
	}
}
