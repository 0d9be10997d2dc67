// SPDX-License-Identifier: MIT
/*
 * gpamm - the command-line front end of the library. This file only
 * dispatches: it finds the subcommand named by argv[1] in one table and
 * hands it the rest of the command line. Every subcommand (info, decode,
 * demo today; migrate, bench, replay later) lives in its own cmd_*.c with
 * its own options and help text, so adding one is a new file plus one
 * line in cmds[] below.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct cli_cmd *const cmds[] = {
	&cli_cmd_info,
	&cli_cmd_decode,
	&cli_cmd_demo,
	&cli_cmd_migrate,
	&cli_cmd_bench,
	&cli_cmd_replay,
	&cli_cmd_receive,
};
#define NR_CMDS (sizeof(cmds) / sizeof(cmds[0]))

static void usage(FILE *f)
{
	size_t i;

	fprintf(f,
		"usage: gpamm [--help] COMMAND [ARGS...]\n"
		"\n"
		"The LoongArch KVM GPA (second-level) page table, in userspace.\n"
		"\n"
		"commands:\n");
	for (i = 0; i < NR_CMDS; i++)
		fprintf(f, "  %-8s %s\n", cmds[i]->name, cmds[i]->summary);
	fprintf(f,
		"  help     'gpamm help COMMAND' = 'gpamm COMMAND --help'\n"
		"\n"
		"Run 'gpamm COMMAND --help' for the options of a command.\n"
		"Exit status: 0 success, 1 failure, 2 bad usage.\n");
}

static const struct cli_cmd *find_cmd(const char *name)
{
	size_t i;

	for (i = 0; i < NR_CMDS; i++)
		if (!strcmp(cmds[i]->name, name))
			return cmds[i];
	return NULL;
}

int main(int argc, char **argv)
{
	const struct cli_cmd *c;
	const char *name;

	if (argc < 2) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	name = argv[1];
	if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
		usage(stdout);
		return CLI_EXIT_OK;
	}
	if (!strcmp(name, "help")) {
		if (argc == 2) {
			usage(stdout);
			return CLI_EXIT_OK;
		}
		c = find_cmd(argv[2]);
		if (!c)
			return cli_usage_error(NULL, "no command '%s'", argv[2]);
		if (argc > 3)
			return cli_usage_error(NULL, "help takes one command name");
		c->usage(stdout);
		return CLI_EXIT_OK;
	}
	if (name[0] == '-')
		return cli_usage_error(NULL, "unknown option '%s' (options go after the command)",
				       name);

	c = find_cmd(name);
	if (!c)
		return cli_usage_error(NULL, "unknown command '%s'", name);
	return c->run(argc - 1, argv + 1);
}
