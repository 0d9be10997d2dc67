/* SPDX-License-Identifier: MIT */
/*
 * Shared plumbing of the gpamm command-line tool: the subcommand table
 * entry, a small long-option parser, strict number parsing and the one
 * way every subcommand reports a usage error (message on stderr, exit 2).
 * Each subcommand lives in its own cmd_*.c file and is listed once in
 * main.c; nothing here knows about any particular subcommand.
 */
#ifndef GPAMM_CLI_H
#define GPAMM_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes: 0 success, 1 the operation failed, 2 bad usage. */
#define CLI_EXIT_OK    0
#define CLI_EXIT_FAIL  1
#define CLI_EXIT_USAGE 2

/**
 * struct cli_cmd - one subcommand.
 * @name:    what the user types after "gpamm"
 * @summary: one line for "gpamm --help"
 * @run:     argv[0] is @name; returns the process exit code
 * @usage:   full help text for "gpamm @name --help"
 */
struct cli_cmd {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
	void (*usage)(FILE *f);
};

/* The subcommands (one cmd_*.c file each). */
extern const struct cli_cmd cli_cmd_info;
extern const struct cli_cmd cli_cmd_decode;
extern const struct cli_cmd cli_cmd_demo;
extern const struct cli_cmd cli_cmd_migrate;
extern const struct cli_cmd cli_cmd_bench;
extern const struct cli_cmd cli_cmd_replay;
extern const struct cli_cmd cli_cmd_receive;

/**
 * struct cli_opt - a long option. @has_arg: takes a value ("--x N" or
 * "--x=N"). @id: returned by cli_next(); must be > 0. @shortc: optional
 * one-letter alias ("-h"), 0 for none.
 */
struct cli_opt {
	const char *name;
	bool has_arg;
	int id;
	char shortc;
};

/** struct cli_parser - walks argv[1..] of one subcommand. */
struct cli_parser {
	const char *cmd;      /* for messages: "gpamm @cmd: ..." */
	int argc;
	char **argv;
	int i;
	bool only_positional; /* after "--" */
};

#define CLI_OPT_END   0  /* no more arguments */
#define CLI_OPT_POS  -1  /* a positional argument, in *val */
#define CLI_OPT_ERR  -2  /* bad option; message already printed */

void cli_parser_init(struct cli_parser *p, const char *cmd, int argc, char **argv);
/**
 * cli_next() - the next option or positional argument.
 * @val: the option's value, or the positional argument
 * Return: an option id, CLI_OPT_POS, CLI_OPT_END or CLI_OPT_ERR.
 */
int cli_next(struct cli_parser *p, const struct cli_opt *opts, const char **val);

/** cli_parse_u64() - whole string as a number (0x.. hex, 0.. octal, decimal). */
bool cli_parse_u64(const char *s, uint64_t *out);
/** cli_parse_size() - a byte count with an optional K/M/G/T suffix (binary; "KiB", "KB" too). */
bool cli_parse_size(const char *s, uint64_t *out);

/**
 * cli_usage_error() - "gpamm CMD: <message>" and a pointer to --help on
 * stderr. Return: CLI_EXIT_USAGE, so callers can "return cli_usage_error()".
 */
__attribute__((format(printf, 2, 3)))
int cli_usage_error(const char *cmd, const char *fmt, ...);

/** cli_layout_name() - "16K/3-level" for a page shift and level count. */
const char *cli_layout_name(unsigned page_shift, unsigned levels, char *buf, size_t len);

/** cli_size() - "2 MiB", "512 MiB", "16 KiB" for a power-of-two size. */
const char *cli_size(uint64_t bytes, char *buf, size_t len);

#endif
