#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"

enum {
        OPT_CHECK_CONFIG = 0x100,
        OPT_DUMP_CONFIG,
        OPT_LOG_LEVEL,
        OPT_ACCEPT_YES,
};

static const struct option options[] = {
        { "config",       required_argument, NULL, 'c' },
        { "port",         required_argument, NULL, 'p' },
        { "check-config", no_argument,       NULL, OPT_CHECK_CONFIG },
        { "dump-config",  no_argument,       NULL, OPT_DUMP_CONFIG },
        { "accept-yes",   no_argument,       NULL, OPT_ACCEPT_YES },
        { "log-level",    required_argument, NULL, OPT_LOG_LEVEL },
        { "help",         no_argument,       NULL, 'h' },
        { "version",      no_argument,       NULL, 'V' },
        { NULL,           0,                 NULL, 0 }
};

void cli_usage(FILE *f) {
        fputs("Usage: echo-mpserv [OPTION]...\n"
              "Fork-per-client TCP echo server (RFC 862), socket-activated by systemd or standalone.\n"
              "\n"
              "  -c, --config=PATH     configuration file (default " CONFIG_DEFAULT_PATH ")\n"
              "      --check-config    validate the configuration, print \"configuration OK\", exit\n"
              "      --accept-yes      with --check-config: also refuse a policy Accept=yes cannot enforce\n"
              "      --dump-config     print the effective configuration, defaults included, exit\n"
              "  -p, --port=PORT       standalone mode: listen on PORT instead of the configured port\n"
              "      --log-level=LEVEL error, warning, notice, info or debug (overrides log_level)\n"
              "  -h, --help            show this help and exit\n"
              "  -V, --version         show the version and exit\n"
              "\n"
              "Exit status: 0 success, 1 runtime failure, 64 usage error, 69 socket error,\n"
              "78 configuration error. See echo-mpserv(8) and echo-mpserv.conf(5).\n", f);
}

static int parse_port(const char *s) {
        char *end;
        long v;

        if (!*s || *s == '-' || *s == '+' || *s == ' ')
                return -EINVAL;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno || *end || v < 1 || v > 65535)
                return -EINVAL;
        return (int) v;
}

static int set_action(struct cli *out, enum cli_action a, char *err, size_t errlen) {
        if (out->action != CLI_RUN && out->action != a) {
                snprintf(err, errlen, "--check-config, --dump-config, --help and --version exclude each other");
                return -EINVAL;
        }
        out->action = a;
        return 0;
}

int cli_parse(int argc, char *const *argv, struct cli *out, char *err, size_t errlen) {
        int c, r = 0;

        *out = (struct cli) { .action = CLI_RUN, .config_path = CONFIG_DEFAULT_PATH, .port = -1, .log_level = -1 };
        optind = 0; /* full re-initialisation, so the parser can run more than once */
        opterr = 0;
        while (r == 0 && (c = getopt_long(argc, argv, ":c:p:hV", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        if (!*optarg) {
                                snprintf(err, errlen, "--config needs a file name");
                                return -EINVAL;
                        }
                        out->config_path = optarg;
                        out->config_path_given = true;
                        break;
                case 'p':
                        out->port = parse_port(optarg);
                        if (out->port < 0) {
                                snprintf(err, errlen, "invalid port '%s': expected a number from 1 to 65535", optarg);
                                return -EINVAL;
                        }
                        break;
                case OPT_LOG_LEVEL:
                        out->log_level = config_log_level_from_name(optarg);
                        if (out->log_level < 0) {
                                snprintf(err, errlen, "invalid log level '%s': expected error, warning, notice, info or debug", optarg);
                                return -EINVAL;
                        }
                        break;
                case OPT_CHECK_CONFIG:
                        r = set_action(out, CLI_CHECK_CONFIG, err, errlen);
                        break;
                case OPT_ACCEPT_YES:
                        out->accept_yes = true;
                        break;
                case OPT_DUMP_CONFIG:
                        r = set_action(out, CLI_DUMP_CONFIG, err, errlen);
                        break;
                case 'h':
                        r = set_action(out, CLI_HELP, err, errlen);
                        break;
                case 'V':
                        r = set_action(out, CLI_VERSION, err, errlen);
                        break;
                case ':':
                        snprintf(err, errlen, "option '%s' needs an argument", argv[optind - 1]);
                        return -EINVAL;
                default:
                        if (optopt)
                                snprintf(err, errlen, "unknown option '-%c'", optopt);
                        else
                                snprintf(err, errlen, "unknown option '%s'", argv[optind - 1]);
                        return -EINVAL;
                }
        }
        if (r == 0 && optind < argc) {
                snprintf(err, errlen, "unexpected argument '%s'", argv[optind]);
                return -EINVAL;
        }
        if (r == 0 && out->accept_yes && out->action != CLI_CHECK_CONFIG) {
                snprintf(err, errlen, "--accept-yes goes with --check-config");
                return -EINVAL;
        }
        return r;
}
