/* echo-mpserv: parse the command line, load the configuration, take or bind
 * the sockets, run the server, and map the outcome to one exit status.
 * The exit statuses are documented in echo-mpserv(8); keep them stable. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "listen.h"
#include "log.h"
#include "server.h"
#include "util.h"

enum {
        EXIT_OK = 0,
        EXIT_RUNTIME = 1,
        EXIT_USAGE = 2,
        EXIT_CONFIG = 3,
        EXIT_SOCKET = 4,
};

static int load_config(const struct cli *cli, const struct server_options *opt, struct config *cfg) {
        struct config_diag diag = { 0 };
        int r = config_load(cli->config_path, cfg, &diag);

        if (r == -ENOENT && !cli->config_path_given) {
                config_defaults(cfg);
                if (cli->action == CLI_RUN)
                        log_msg(LOG_NOTICE, MSGID_CONFIG, "no configuration file at %s; using the defaults",
                                cli->config_path);
                r = 0;
        }
        if (r < 0) {
                if (cli->action == CLI_RUN)
                        log_lines(LOG_ERR, MSGID_CONFIG, "", diag.text);
                else
                        fputs(diag.text, stderr);
                return r;
        }
        server_options_apply(opt, cfg);
        return 0;
}

static void check_inherited_ports(const struct cli *cli, const struct config *cfg, const struct listen_set *ls) {
        if (cli->port > 0)
                log_msg(LOG_WARNING, MSGID_CONFIG, "--port %d is ignored: systemd passed the listening sockets",
                        cli->port);
        for (unsigned i = 0; i < ls->n; i++)
                if (ls->l[i].port != cfg->port)
                        log_msg(LOG_WARNING, MSGID_CONFIG,
                                "socket %s (%s) is on port %u but the configuration says port %u; "
                                "the socket unit decides (after editing the port run "
                                "'systemctl daemon-reload' and restart echo-mpserv.socket)",
                                ls->l[i].address, ls->l[i].name, ls->l[i].port, cfg->port);
}

static int run(const struct cli *cli, const struct server_options *opt, const struct config *cfg) {
        struct listen_set ls;
        char err[512];
        int r;

        listen_set_init(&ls);
        r = listen_inherit(&ls, err, sizeof(err));
        if (r < 0) {
                log_msg(LOG_ERR, MSGID_LISTENING, "%s", err);
                return EXIT_SOCKET;
        }
        if (ls.connected_fd >= 0) {
                r = server_run_connected(cfg, ls.connected_fd);
                ls.connected_fd = -1; /* closed by the session */
                return r < 0 ? EXIT_RUNTIME : EXIT_OK;
        }
        if (r > 0) {
                check_inherited_ports(cli, cfg, &ls);
        } else {
                r = listen_bind(&ls, cfg, cfg->port, err, sizeof(err));
                if (r < 0) {
                        log_msg(LOG_ERR, MSGID_LISTENING, "%s", err);
                        return EXIT_SOCKET;
                }
        }
        for (unsigned i = 0; i < ls.n; i++)
                log_msg(LOG_INFO, MSGID_LISTENING, "listening on %s (fd %d, %s)", ls.l[i].address, ls.l[i].fd,
                        ls.l[i].inherited ? ls.l[i].name : "bound from the configuration");

        r = server_run(cfg, opt, &ls);
        return r < 0 ? EXIT_RUNTIME : EXIT_OK;
}

int main(int argc, char *argv[]) {
        struct server_options opt;
        struct config cfg;
        struct cli cli;
        char err[256];

        if (cli_parse(argc, argv, &cli, err, sizeof(err)) < 0) {
                fprintf(stderr, "echo-mpserv: %s\n", err);
                cli_usage(stderr);
                return EXIT_USAGE;
        }
        switch (cli.action) {
        case CLI_HELP:
                cli_usage(stdout);
                return EXIT_OK;
        case CLI_VERSION:
                puts("echo-mpserv " ECHO_MPSERV_VERSION);
                return EXIT_OK;
        default:
                break;
        }

        opt = (struct server_options) {
                .config_path = cli.config_path,
                .config_path_given = cli.config_path_given,
                .port_override = cli.port > 0 ? cli.port : 0,
                .log_level_override = cli.log_level,
        };
        log_setup();
        if (cli.log_level >= 0)
                log_set_max_level(cli.log_level);
        if (load_config(&cli, &opt, &cfg) < 0)
                return EXIT_CONFIG;
        log_set_max_level(cfg.log_level);

        if (cli.action == CLI_CHECK_CONFIG) {
                puts("configuration OK");
                return EXIT_OK;
        }
        if (cli.action == CLI_DUMP_CONFIG)
                return config_dump(&cfg, stdout) < 0 ? EXIT_RUNTIME : EXIT_OK;
        return run(&cli, &opt, &cfg);
}
