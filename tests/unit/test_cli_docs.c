// SPDX-License-Identifier: MIT
/*
 * The manual page cannot drift from the command. docs/gpamm.1 documents
 * each command in a ".SS NAME" subsection of COMMANDS with one ".TP"
 * paragraph per option; this test runs "gpamm NAME --help" for every
 * command that "gpamm --help" lists and checks, both ways, that the
 * options the help defines (its usage line and the lines that start with
 * an option) are the options the page defines (the .TP tags of the
 * subsection). The same for the commands themselves, for the bench suites
 * ("gpamm bench --list" against the tags of BENCH SUITES), and for every
 * environment variable the tool or the library reads (getenv in tools/
 * and src/ against ENVIRONMENT). docs/cli.md must name every command and
 * suite too. A mismatch is reported per item, naming the command and the
 * option, and the test fails once all of them are listed. If groff is
 * installed the page must also render without a warning.
 *
 * The binary is $GPAMM_BIN, or BUILD/gpamm next to this test's BUILD/tests/;
 * the page is SRC/docs/gpamm.1 with SRC the parent of BUILD, or
 * docs/gpamm.1 under the current directory.
 */
#include <ctype.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/clitest.h"
#include "harness/tap.h"

static char srcdir[PATH_MAX];
static char man_path[PATH_MAX + 32];
static char *man_text; /* the page, read once */

/* ---- a set of short strings ----------------------------------------------------- */

#define SET_MAX 128

struct set {
	unsigned n;
	char item[SET_MAX][64];
};

static void set_add(struct set *s, const char *str, size_t len)
{
	if (len >= sizeof(s->item[0]))
		len = sizeof(s->item[0]) - 1;
	for (unsigned i = 0; i < s->n; i++)
		if (strlen(s->item[i]) == len && !strncmp(s->item[i], str, len))
			return;
	ASSERT(s->n < SET_MAX);
	memcpy(s->item[s->n], str, len);
	s->item[s->n++][len] = '\0';
}

static bool set_has(const struct set *s, const char *str)
{
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->item[i], str))
			return true;
	return false;
}

/*
 * Every item of @a missing from @b is reported as "@what: ITEM is in
 * @from but not in @to"; returns how many.
 */
static unsigned report_missing(const struct set *a, const struct set *b, const char *what,
			       const char *from, const char *to)
{
	unsigned bad = 0;

	for (unsigned i = 0; i < a->n; i++) {
		if (set_has(b, a->item[i]))
			continue;
		printf("# %s: %s is in %s but not in %s\n", what, a->item[i], from, to);
		bad++;
	}
	return bad;
}

/* ---- options in a line ------------------------------------------------------------ */

static bool word_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_';
}

/*
 * The options a line names: "--long-name" and "-x", each starting after
 * a character that cannot be part of a word (so "level-1" and "/dev/kvm"
 * are not options). -h and --help are left out: every command has them.
 */
static void scan_options(const char *s, struct set *out)
{
	for (size_t i = 0; s[i]; i++) {
		size_t j;

		if (s[i] != '-' || (i && (word_char(s[i - 1]) || s[i - 1] == '/')))
			continue;
		if (s[i + 1] == '-' && islower((unsigned char)s[i + 2])) {
			for (j = i + 2; isalnum((unsigned char)s[j]) || s[j] == '-'; j++)
				;
			while (s[j - 1] == '-')
				j--;
			if (!(j - i == 6 && !strncmp(s + i, "--help", 6)))
				set_add(out, s + i, j - i);
			i = j - 1;
		} else if (isalpha((unsigned char)s[i + 1]) && !word_char(s[i + 2])) {
			if (s[i + 1] != 'h')
				set_add(out, s + i, 2);
			i++;
		}
	}
}

/* A roff line with the escapes that matter here undone: \- \fX \f(XX \& \e \(xx. */
static void deroff(const char *in, char *out, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; in[i] && o + 2 < len; i++) {
		if (in[i] != '\\') {
			out[o++] = in[i];
			continue;
		}
		switch (in[++i]) {
		case '-':
			out[o++] = '-';
			break;
		case 'e':
			out[o++] = '\\';
			break;
		case 'f':
			if (in[i + 1] == '(' && in[i + 2] && in[i + 3])
				i += 3;
			else if (in[i + 1])
				i++;
			break;
		case '(':
			if (in[i + 1] && in[i + 2])
				i += 2;
			out[o++] = ' ';
			break;
		case '&':
			break;
		case '\0':
			i--;
			break;
		default:
			out[o++] = in[i];
			break;
		}
	}
	out[o] = '\0';
}

/* ---- the page ------------------------------------------------------------------ */

/* The name of a .SH/.SS line: its argument without quotes. */
static void heading(const char *line, char *out, size_t len)
{
	const char *p = line + 3;
	size_t n;

	while (*p == ' ')
		p++;
	snprintf(out, len, "%s", *p == '"' ? p + 1 : p);
	n = strlen(out);
	while (n && (out[n - 1] == '"' || out[n - 1] == ' '))
		out[--n] = '\0';
}

/*
 * Walk the page: @fn gets each .TP tag line (de-roffed) with the .SH and
 * .SS it is under.
 */
static void walk_tags(void (*fn)(const char *sh, const char *ss, const char *tag, void *arg),
		      void *arg, struct set *sections, struct set *subsections_of_commands)
{
	char *text = strdup(man_text), *save = NULL, *line;
	char sh[64] = "", ss[64] = "", plain[1024];
	bool tag_next = false;

	ASSERT(text);
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, ".SH ", 4)) {
			heading(line, sh, sizeof(sh));
			ss[0] = '\0';
			if (sections)
				set_add(sections, sh, strlen(sh));
			continue;
		}
		if (!strncmp(line, ".SS ", 4)) {
			heading(line, ss, sizeof(ss));
			if (subsections_of_commands && !strcmp(sh, "COMMANDS"))
				set_add(subsections_of_commands, ss, strlen(ss));
			continue;
		}
		if (!strcmp(line, ".TP")) {
			tag_next = true;
			continue;
		}
		if (tag_next && strncmp(line, ".\\\"", 3)) {
			tag_next = false;
			deroff(line, plain, sizeof(plain));
			if (fn)
				fn(sh, ss, plain, arg);
		}
	}
	free(text);
}

struct cmd_opts {
	const char *cmd;
	struct set opts;
};

static void collect_cmd_opts(const char *sh, const char *ss, const char *tag, void *arg)
{
	struct cmd_opts *c = arg;

	if (!strcmp(sh, "COMMANDS") && !strcmp(ss, c->cmd))
		scan_options(tag, &c->opts);
}

/* The first word of each tag under .SH @arg->cmd (used for BENCH SUITES and ENVIRONMENT). */
static void collect_tag_words(const char *sh, const char *ss, const char *tag, void *arg)
{
	struct cmd_opts *c = arg;
	const char *p = tag;
	size_t n;

	if (strcmp(sh, c->cmd))
		return;
	if (*p == '.') /* ".B word", ".BR word ..." */
		while (*p && *p != ' ')
			p++;
	while (*p == ' ')
		p++;
	for (n = 0; p[n] && p[n] != ' ' && p[n] != '"'; n++)
		;
	if (n)
		set_add(&c->opts, p, n);
}

/* ---- the command's side ------------------------------------------------------------- */

/* The commands "gpamm --help" lists (the lines after "commands:", up to a blank one). */
static void help_commands(struct set *out)
{
	struct result r = run_gpamm(NULL, ARGS("--help"));
	char *save = NULL, *line, *text;
	bool in = false;

	ASSERT_EQ_INT(r.status, 0);
	text = r.out;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strcmp(line, "commands:")) {
			in = true;
			continue;
		}
		if (in && strncmp(line, "  ", 2))
			break;
		if (in) {
			const char *p = line + 2;
			size_t n = strcspn(p, " ");

			set_add(out, p, n);
		}
	}
	result_free(&r);
	ASSERT(out->n >= 6);
}

/*
 * The options "gpamm @cmd --help" defines: those on its usage line and on
 * the lines whose first non-blank character is '-' (an option's own line;
 * descriptions and continuation lines start otherwise).
 */
static void help_options(const char *cmd, struct set *out)
{
	struct result r = run_gpamm(NULL, ARGS(cmd, "--help"));
	struct result h = run_gpamm(NULL, ARGS("help", cmd));
	char *save = NULL, *line, usage[64];
	bool first = true;

	if (r.status)
		tap_diag("gpamm %s --help: exit %d: %s", cmd, r.status, r.err);
	ASSERT_EQ_INT(r.status, 0);
	snprintf(usage, sizeof(usage), "usage: gpamm %s", cmd);
	ASSERT(!strncmp(r.out, usage, strlen(usage)));
	/* "gpamm help CMD" is the same text */
	ASSERT_EQ_INT(h.status, 0);
	ASSERT(!strcmp(h.out, r.out));
	result_free(&h);
	for (line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		const char *p = line + strspn(line, " ");

		if (first || *p == '-')
			scan_options(p, out);
		first = false;
	}
	result_free(&r);
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_sections(void)
{
	static const char *const want[] = {
		"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "BENCH SUITES", "TRACE FORMATS",
		"FOLDING", "JSON OUTPUT", "ENVIRONMENT", "EXIT STATUS", "EXAMPLES", "FILES",
		"SEE ALSO",
	};
	struct set sections = { 0 };
	unsigned bad = 0;

	/* the first line asks for tbl (the layout table), as man-db and mandoc read it */
	ASSERT(!strncmp(man_text, "'\\\" t\n", 5));
	ASSERT(strstr(man_text, "\n.TH GPAMM 1 "));
	walk_tags(NULL, NULL, &sections, NULL);
	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (set_has(&sections, want[i]))
			continue;
		printf("# docs/gpamm.1 has no section %s\n", want[i]);
		bad++;
	}
	ASSERT_EQ(bad, 0);
}

static void test_commands(void)
{
	struct set cmds = { 0 }, documented = { 0 };
	unsigned bad;

	help_commands(&cmds);
	walk_tags(NULL, NULL, NULL, &documented);
	bad = report_missing(&cmds, &documented, "commands", "'gpamm --help'",
			     "docs/gpamm.1 (a .SS under COMMANDS)");
	bad += report_missing(&documented, &cmds, "commands", "docs/gpamm.1 (COMMANDS)",
			      "'gpamm --help'");
	ASSERT_EQ(bad, 0);
}

/* Every command's options, both ways; all mismatches are listed before the test fails. */
static void test_options(void)
{
	struct set cmds = { 0 };
	unsigned bad = 0;

	help_commands(&cmds);
	for (unsigned i = 0; i < cmds.n; i++) {
		struct cmd_opts man = { .cmd = cmds.item[i] };
		struct set help = { 0 };
		char from[96], to[96];

		if (!strcmp(cmds.item[i], "help"))
			continue; /* "gpamm help" has no --help of its own */
		help_options(cmds.item[i], &help);
		walk_tags(collect_cmd_opts, &man, NULL, NULL);
		tap_diag("%s: %u options in --help, %u in docs/gpamm.1", cmds.item[i], help.n,
			 man.opts.n);
		snprintf(from, sizeof(from), "'gpamm %s --help'", cmds.item[i]);
		snprintf(to, sizeof(to), "docs/gpamm.1 (.SS %s)", cmds.item[i]);
		bad += report_missing(&help, &man.opts, cmds.item[i], from, to);
		bad += report_missing(&man.opts, &help, cmds.item[i], to, from);
	}
	if (bad)
		tap_diag("%u option(s) differ between the commands' --help and docs/gpamm.1", bad);
	ASSERT_EQ(bad, 0);
}

static void list_suites(struct set *out)
{
	struct result r = run_gpamm(NULL, ARGS("bench", "--list"));
	char *save = NULL, *line;

	ASSERT_EQ_INT(r.status, 0);
	for (line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		set_add(out, line, strcspn(line, " "));
	result_free(&r);
	ASSERT(out->n >= 1);
}

static void test_bench_suites(void)
{
	struct cmd_opts man = { .cmd = "BENCH SUITES" };
	struct set suites = { 0 };
	unsigned bad;

	list_suites(&suites);
	walk_tags(collect_tag_words, &man, NULL, NULL);
	bad = report_missing(&suites, &man.opts, "bench suites", "'gpamm bench --list'",
			     "docs/gpamm.1 (BENCH SUITES)");
	bad += report_missing(&man.opts, &suites, "bench suites", "docs/gpamm.1 (BENCH SUITES)",
			      "'gpamm bench --list'");
	ASSERT_EQ(bad, 0);
}

/* ---- environment variables read by the code ------------------------------------------- */

static struct set code_env;

static int scan_source(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	size_t n = strlen(path);
	FILE *f;
	char line[1024];

	if (type != FTW_F || n < 3 || (strcmp(path + n - 2, ".c") && strcmp(path + n - 2, ".h")))
		return 0;
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		const char *p = line;

		while ((p = strstr(p, "getenv(\""))) {
			p += 8;
			set_add(&code_env, p, strcspn(p, "\""));
		}
	}
	fclose(f);
	return 0;
}

static void test_environment(void)
{
	struct cmd_opts man = { .cmd = "ENVIRONMENT" };
	char dir[PATH_MAX + 32];
	unsigned bad;

	memset(&code_env, 0, sizeof(code_env));
	snprintf(dir, sizeof(dir), "%s/tools", srcdir);
	if (access(dir, R_OK))
		tap_skip("no source tree next to the build directory");
	ASSERT_EQ_INT(nftw(dir, scan_source, 16, FTW_PHYS), 0);
	snprintf(dir, sizeof(dir), "%s/src", srcdir);
	ASSERT_EQ_INT(nftw(dir, scan_source, 16, FTW_PHYS), 0);
	snprintf(dir, sizeof(dir), "%s/bench", srcdir);
	ASSERT_EQ_INT(nftw(dir, scan_source, 16, FTW_PHYS), 0);
	walk_tags(collect_tag_words, &man, NULL, NULL);
	ASSERT(code_env.n >= 1); /* GPAMM_KVM_DEVICE at least */
	bad = report_missing(&code_env, &man.opts, "environment", "a getenv() in tools/, bench/ or src/",
			     "docs/gpamm.1 (ENVIRONMENT)");
	ASSERT_EQ(bad, 0);
}

/* The guide names every command and every suite. */
static void test_guide(void)
{
	struct set cmds = { 0 }, suites = { 0 };
	char path[PATH_MAX + 32], want[96];
	unsigned bad = 0;
	char *text;

	snprintf(path, sizeof(path), "%s/docs/cli.md", srcdir);
	text = read_file(path, NULL);
	ASSERT(text);
	help_commands(&cmds);
	list_suites(&suites);
	for (unsigned i = 0; i < cmds.n; i++) {
		snprintf(want, sizeof(want), "gpamm %s", cmds.item[i]);
		if (!strstr(text, want)) {
			printf("# docs/cli.md never shows '%s'\n", want);
			bad++;
		}
	}
	for (unsigned i = 0; i < suites.n; i++) {
		if (!strstr(text, suites.item[i])) {
			printf("# docs/cli.md never names the bench suite %s\n", suites.item[i]);
			bad++;
		}
	}
	free(text);
	ASSERT_EQ(bad, 0);
}

/* groff renders the page without a warning (when groff is there). */
static void test_renders(void)
{
	char cmd[PATH_MAX + 128], buf[512];
	size_t n = 0;
	FILE *p;
	int st;

	if (system("command -v groff >/dev/null 2>&1"))
		tap_skip("groff is not installed");
	snprintf(cmd, sizeof(cmd), "groff -man -t -Tutf8 -ww '%s' 2>&1 >/dev/null", man_path);
	p = popen(cmd, "r");
	ASSERT(p);
	while (n + 1 < sizeof(buf) && fgets(buf + n, (int)(sizeof(buf) - n), p))
		n = strlen(buf);
	buf[n] = '\0';
	st = pclose(p);
	if (n)
		tap_diag("groff says: %s", buf);
	ASSERT_EQ(n, 0);
	ASSERT_EQ_INT(st, 0);
}

/* ---- setup --------------------------------------------------------------------------- */

static bool read_page(void)
{
	if (!clitest_srcdir(srcdir, sizeof(srcdir), "docs/gpamm.1"))
		return false;
	snprintf(man_path, sizeof(man_path), "%s/docs/gpamm.1", srcdir);
	man_text = read_file(man_path, NULL);
	if (!man_text)
		return false;
	printf("# page: %s\n", man_path);
	return true;
}

int main(int argc, char **argv)
{
	int ret;

	if (!clitest_init(argc, argv))
		return 1;
	if (!read_page())
		return clitest_setup_failed("manual page present");
	TEST(test_sections);
	TEST(test_commands);
	TEST(test_options);
	TEST(test_bench_suites);
	TEST(test_environment);
	TEST(test_guide);
	TEST(test_renders);
	ret = tap_done();
	free(man_text);
	return ret;
}
