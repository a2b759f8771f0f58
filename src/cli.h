/* Command-line parsing. Pure: no output, no exit; main() decides. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum cli_action {
        CLI_RUN,
        CLI_CHECK_CONFIG,
        CLI_DUMP_CONFIG,
        CLI_HELP,
        CLI_VERSION,
};

struct cli {
        enum cli_action action;
        const char *config_path;
        bool config_path_given;
        int port;               /* -1: not given */
        int log_level;          /* -1: not given */
        bool accept_yes;        /* --accept-yes (with --check-config only) */
};

/* Returns 0, or -EINVAL with a one-line explanation in err. */
int cli_parse(int argc, char *const *argv, struct cli *out, char *err, size_t errlen);

void cli_usage(FILE *f);
