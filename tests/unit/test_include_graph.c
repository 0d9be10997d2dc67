// SPDX-License-Identifier: MIT
/*
 * The arrows between the rooms of src/ are the ones docs/architecture.md
 * lists: its "include-rules" block names, for each file (or each .c of a
 * folder: the folder, a slash, a star and ".c"), the headers of src/ it may include. This test reads
 * every file under src/, resolves each quoted #include against src/ (the
 * build's -Isrc; gpamm/ headers are the public API and always allowed),
 * and fails on an include the rules do not allow, on a file no rule
 * covers, on a rule naming a file that does not exist, and on a cycle in
 * the rules themselves.
 */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness/clitest.h"
#include "harness/tap.h"

#define MAX_RULES 64
#define MAX_DEPS 12
#define MAX_FILES 128

struct rule {
	char who[96];             /* "src/x.h", or a folder's wildcard for its .c files */
	char deps[MAX_DEPS][64];  /* paths under src/ */
	unsigned ndeps;
};

static char srcdir[PATH_MAX];
static struct rule rules[MAX_RULES];
static unsigned nrules;
static char files[MAX_FILES][PATH_MAX]; /* "src/..." */
static unsigned nfiles;

static void load_rules(void)
{
	char path[PATH_MAX + 32];
	char *doc, *p, *end;

	snprintf(path, sizeof(path), "%s/docs/architecture.md", srcdir);
	doc = read_file(path, NULL);
	ASSERT(doc);
	p = strstr(doc, "```include-rules\n");
	ASSERT(p);
	p += strlen("```include-rules\n");
	end = strstr(p, "```");
	ASSERT(end);
	*end = 0;
	for (char *line = strtok(p, "\n"); line; line = strtok(NULL, "\n")) {
		char *colon = strchr(line, ':');
		struct rule *r;

		ASSERT(colon && nrules < MAX_RULES);
		r = &rules[nrules++];
		*colon = 0;
		snprintf(r->who, sizeof(r->who), "%s", line);
		for (char *d = strtok_r(colon + 1, " ", &colon); d; d = strtok_r(NULL, " ", &colon)) {
			ASSERT(r->ndeps < MAX_DEPS);
			snprintf(r->deps[r->ndeps++], sizeof(r->deps[0]), "%s", d);
		}
	}
	free(doc);
}

static void scan(const char *rel)
{
	char path[2 * PATH_MAX + 2];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/%s", srcdir, rel);
	d = opendir(path);
	ASSERT(d);
	while ((de = readdir(d))) {
		char sub[PATH_MAX];
		struct stat st;
		size_t n = strlen(de->d_name);

		if (de->d_name[0] == '.')
			continue;
		if (strlen(rel) + n + 2 > sizeof(sub))
			continue;
		snprintf(sub, sizeof(sub), "%.*s/%s", (int)(sizeof(sub) - 258), rel, de->d_name);
		snprintf(path, sizeof(path), "%s/%s", srcdir, sub);
		ASSERT(!stat(path, &st));
		if (S_ISDIR(st.st_mode))
			scan(sub);
		else if (n > 2 && (!strcmp(de->d_name + n - 2, ".c") || !strcmp(de->d_name + n - 2, ".h"))) {
			ASSERT(nfiles < MAX_FILES);
			snprintf(files[nfiles++], sizeof(files[0]), "%s", sub);
		}
	}
	closedir(d);
}

/* The rule for @file ("src/..."): its own, else its folder's "*.c". */
static const struct rule *rule_for(const char *file)
{
	const struct rule *wild = NULL;
	const char *slash = strrchr(file, '/');
	size_t n = strlen(file);

	for (unsigned i = 0; i < nrules; i++) {
		const char *w = rules[i].who;

		if (!strcmp(w, file))
			return &rules[i];
		if (n > 2 && !strcmp(file + n - 2, ".c") && strlen(w) == (size_t)(slash - file) + 4 &&
		    !strncmp(w, file, (size_t)(slash - file) + 1) && !strcmp(w + (slash - file) + 1, "*.c"))
			wild = &rules[i];
	}
	return wild;
}

static bool allowed(const struct rule *r, const char *dep)
{
	for (unsigned i = 0; i < r->ndeps; i++)
		if (!strcmp(r->deps[i], dep))
			return true;
	return false;
}

static void setup(void)
{
	if (nfiles)
		return;
	if (!clitest_srcdir(srcdir, sizeof(srcdir), "docs/architecture.md"))
		tap_fail(__FILE__, __LINE__, "source tree", "docs/architecture.md not found");
	load_rules();
	scan("src");
	tap_diag("%u rules, %u files under src/", nrules, nfiles);
}

/* Every file's quoted includes are what its rule allows. */
static void test_includes_follow_the_rules(void)
{
	unsigned bad = 0, edges = 0;

	setup();
	for (unsigned f = 0; f < nfiles; f++) {
		char path[2 * PATH_MAX + 2], *text, *p;
		const struct rule *r = rule_for(files[f]);

		if (!r) {
			printf("# %s: no rule in docs/architecture.md\n", files[f]);
			bad++;
			continue;
		}
		snprintf(path, sizeof(path), "%.4000s/%.4000s", srcdir, files[f]);
		text = read_file(path, NULL);
		ASSERT(text);
		for (p = text; (p = strstr(p, "#include \"")); p++) {
			char dep[128];
			const char *q = p + strlen("#include \"");
			size_t n = strcspn(q, "\"");

			if (p != text && p[-1] != '\n')
				continue;
			snprintf(dep, sizeof(dep), "%.*s", (int)n, q);
			if (!strncmp(dep, "gpamm/", 6))
				continue; /* the public API: every room may use it */
			edges++;
			if (!allowed(r, dep)) {
				printf("# %s includes \"%s\": not in its rule (%s)\n", files[f], dep, r->who);
				bad++;
			}
		}
		free(text);
	}
	tap_diag("%u includes of src/ headers checked", edges);
	ASSERT_EQ(bad, 0);
}

/* Each rule names real files, and the allowed arrows have no cycle. */
static unsigned state[MAX_RULES]; /* 0 new, 1 on the path, 2 done */

static bool cyclic(unsigned i)
{
	if (state[i] == 1)
		return true;
	if (state[i] == 2)
		return false;
	state[i] = 1;
	for (unsigned d = 0; d < rules[i].ndeps; d++) {
		char who[96];

		snprintf(who, sizeof(who), "src/%s", rules[i].deps[d]);
		for (unsigned j = 0; j < nrules; j++)
			if (!strcmp(rules[j].who, who) && cyclic(j)) {
				printf("# cycle through %s -> %s\n", rules[i].who, who);
				return true;
			}
	}
	state[i] = 2;
	return false;
}

static void test_rules_are_real_and_acyclic(void)
{
	unsigned bad = 0;

	setup();
	for (unsigned i = 0; i < nrules; i++) {
		bool found = !!strstr(rules[i].who, "*.c");

		for (unsigned f = 0; f < nfiles && !found; f++)
			found = !strcmp(files[f], rules[i].who);
		if (!found) {
			printf("# rule for %s: no such file\n", rules[i].who);
			bad++;
		}
		for (unsigned d = 0; d < rules[i].ndeps; d++) {
			char who[96];
			bool exists = false;

			snprintf(who, sizeof(who), "src/%s", rules[i].deps[d]);
			for (unsigned f = 0; f < nfiles && !exists; f++)
				exists = !strcmp(files[f], who);
			if (!exists) {
				printf("# rule for %s allows %s: no such file\n", rules[i].who, who);
				bad++;
			}
		}
	}
	for (unsigned i = 0; i < nrules; i++)
		if (cyclic(i))
			bad++;
	ASSERT_EQ(bad, 0);
}

int main(int argc, char **argv)
{
	tap_init(argc, argv);
	TEST(test_includes_follow_the_rules);
	TEST(test_rules_are_real_and_acyclic);
	return tap_done();
}
