/* echo-mpserv: parse the command line, load the configuration, take or bind
 * the sockets, run the server, and map the outcome to one exit status.
 * The exit statuses are documented in echo-mpserv(8); keep them stable.
 * They are sysexits(3) values, which systemd names (64/USAGE, 69/UNAVAILABLE,
 * 78/CONFIG) where it would read 2, 3 and 4 as LSB init script codes. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sysexits.h>

#include "cli.h"
#include "config.h"
#include "config-wait.h"
#include "credential.h"
#include "listen.h"
#include "log.h"
#include "logaddr.h"
#include "server.h"
#include "util.h"

enum {
        EXIT_OK = 0,
        EXIT_RUNTIME = 1,
        EXIT_USAGE = EX_USAGE,          /* 64 */
        EXIT_SOCKET = EX_UNAVAILABLE,   /* 69: no usable socket, nothing to serve on */
        EXIT_CONFIG = EX_CONFIG,        /* 78 */
};

/* The last words of a daemon that exits at start go to stderr, which under
 * systemd is the unit's journal stream: see log_set_target(). */
static void exiting_at_start(void) {
        log_set_target(LOG_TARGET_STDERR);
}

/* The key for log_addresses = "hash", set once at start: from the credential
 * the configuration names, or (deprecated) from the file itself; neither
 * leaves a random key to logaddr. --check-config reads the credential only
 * where one is passed: a root shell has no $CREDENTIALS_DIRECTORY, and a
 * valid setup must still check out. Returns 0, or -errno with the problem
 * in *diag. */
static int load_hash_key(const struct cli *cli, const struct config *cfg, struct config_diag *diag) {
        const char *name = cfg->log_hash_key_credential;
        unsigned char key[CONFIG_HASH_KEY_MAX + 1];
        char err[512];
        int r;

        if (cfg->log_hash_key[0]) {
                log_msg(LOG_WARNING, MSGID_CONFIG, "%s: log_hash_key is deprecated: the service's dynamic user must "
                        "read this file, so every local user can read the key; move it to "
                        "/etc/echo-mpserv/log-hash-key (mode 0600) and set log_hash_key_credential = "
                        "\"log-hash-key\" (see echo-mpserv.conf(5))", cli->config_path);
                return logaddr_set_key(cfg->log_hash_key, strlen(cfg->log_hash_key));
        }
        if (!name[0]) {
                if (cli->action == CLI_RUN)
                        server_note_random_hash_key(cfg);
                return 0;
        }
        if (cli->action == CLI_CHECK_CONFIG && !getenv("CREDENTIALS_DIRECTORY")) {
                log_msg(LOG_NOTICE, MSGID_CONFIG, "credential \"%s\" (log_hash_key_credential) not checked: "
                        "$CREDENTIALS_DIRECTORY is not set here; the daemon reads it at start", name);
                return 0;
        }
        r = credential_read(name, key, CONFIG_HASH_KEY_MIN, CONFIG_HASH_KEY_MAX, err, sizeof(err));
        if (r < 0) {
                /* The unit's SetCredential= placeholder is too short on purpose. */
                config_diag_add(diag, "log_hash_key_credential: %s%s", err, r == -EMSGSIZE ?
                                "; the service unit passes a placeholder when its LoadCredential= file is missing" :
                                "");
                return r;
        }
        r = logaddr_set_key(key, (size_t) r);
        explicit_bzero(key, sizeof(key));
        if (r < 0)
                config_diag_add(diag, "cannot set up address hashing: %s", strerror(-r));
        return r;
}

struct start {
        const struct cli *cli;
        struct server_options *opt;
        struct config *cfg;
};

/* Everything the daemon takes from its configuration before it serves: the
 * file (with the command line's overrides) and what is checked only after
 * it parsed, the hash key (not for --dump-config, which never shows one).
 * One attempt; *cfg changes only when it all loaded (the file's log_level
 * applies from the moment it parsed). See config-wait.h. */
static int load_start(void *userdata, struct config_diag *diag, enum config_wait_cause *cause) {
        struct start *st = userdata;
        struct config next;
        bool no_file = false;
        int r;

        *cause = CONFIG_WAIT_FILE;
        r = config_load_file(st->cli->config_path, st->cli->config_path_given, &next, &no_file, diag);
        if (r < 0)
                return r;
        if (no_file && st->cli->action == CLI_RUN)
                log_msg(LOG_NOTICE, MSGID_CONFIG, "no configuration file at %s; using the defaults",
                        st->cli->config_path);
        server_options_apply(st->opt, &next);
        log_set_max_level(next.log_level);
        *cause = CONFIG_WAIT_CREDENTIAL;
        if (st->cli->action != CLI_DUMP_CONFIG) {
                r = load_hash_key(st->cli, &next, diag);
                if (r < 0)
                        return r;
        }
        *st->cfg = next;
        st->opt->no_config_file = no_file;
        return 0;
}

/* Returns 0 or -errno, reported. */
static int load_config(const struct cli *cli, struct server_options *opt, struct config *cfg) {
        struct start st = { .cli = cli, .opt = opt, .cfg = cfg };
        struct config_diag diag = { 0 };
        enum config_wait_cause cause;
        int r = load_start(&st, &diag, &cause);

        if (r < 0 && cli->action == CLI_RUN && config_wait_applies()) {
                /* Exiting would make systemd start it again for the queued
                 * client, until the socket failed: see config-wait.h. */
                log_lines(LOG_ERR, MSGID_CONFIG, "", diag.text);
                r = config_wait(cli->config_path, load_start, &st, cause, diag.text);
        } else if (r < 0) {
                exiting_at_start();
                if (cli->action == CLI_RUN)
                        log_lines(LOG_ERR, MSGID_CONFIG, "", diag.text);
                else
                        fputs(diag.text, stderr);
        }
        return r;
}

/* --check-config --accept-yes: what an instance would refuse a client for,
 * for an IPv4 and an IPv6 client outside source_limits_exempt (each
 * problem once), on stderr. */
static bool accept_yes_enforceable(const struct config *cfg) {
        const char *last = NULL;
        char buf[2][320];

        for (int i = 0; i < 2; i++) {
                const char *why = server_accept_yes_unenforceable(cfg, true, i ? AF_INET6 : AF_INET, buf[i],
                                                                  sizeof(buf[i]));

                if (why && (!last || strcmp(why, last) != 0))
                        fprintf(stderr, "Accept=yes cannot enforce %s\n", why);
                last = why ? why : last;
        }
        return !last;
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
                exiting_at_start();
                log_msg(LOG_ERR, MSGID_LISTENING, "%s", err);
                return EXIT_SOCKET;
        }
        if (ls.connected_fd >= 0) {
                enum server_connected_outcome outcome;

                r = server_run_connected(cfg, &opt->worker_mask, ls.connected_fd, &outcome);
                ls.connected_fd = -1; /* closed by the session */
                return r < 0 ? EXIT_RUNTIME : outcome == SERVER_CONNECTED_UNENFORCEABLE ? EXIT_CONFIG : EXIT_OK;
        }
        if (r > 0) {
                check_inherited_ports(cli, cfg, &ls);
        } else if (listen_started_by_systemd()) {
                /* E.g. the service restarted after a port change, before its
                 * socket: binding here would fail in the sandbox, and a
                 * restart loop would take the socket unit down with it. */
                exiting_at_start();
                log_msg(LOG_ERR, MSGID_LISTENING,
                        "systemd passed no listening socket; run: systemctl restart echo-mpserv.socket");
                return EXIT_SOCKET;
        } else {
                r = listen_bind(&ls, cfg, cfg->port, err, sizeof(err));
                if (r < 0) {
                        exiting_at_start();
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
        /* Before anything slow; only the daemon: --check-config stays
         * interruptible. */
        if (cli.action == CLI_RUN) {
                int r;
                /* Not dumpable: /proc/PID/mem, /proc/PID/fd and ptrace of
                 * the daemon and of its workers (they inherit it over
                 * fork()) are closed to other processes of the service's
                 * user -- a compromised worker -- so none can rewrite the
                 * live list (handoff.h) or another process's memory. The
                 * cost: no core dumps unless the administrator allows them
                 * for such processes (fs.suid_dumpable). */
                if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
                        exiting_at_start();
                        log_errno(LOG_ERR, negative_errno(), NULL, "cannot make the daemon non-dumpable");
                        return EXIT_RUNTIME;
                }
                r = server_block_signals(&opt.worker_mask);
                if (r < 0) {
                        exiting_at_start();
                        log_errno(LOG_ERR, r, NULL, "cannot block signals");
                        return EXIT_RUNTIME;
                }
        }
        if (cli.log_level >= 0)
                log_set_max_level(cli.log_level);
        if (load_config(&cli, &opt, &cfg) < 0)
                return EXIT_CONFIG;

        if (cli.action == CLI_CHECK_CONFIG && cli.accept_yes && !accept_yes_enforceable(&cfg))
                return EXIT_CONFIG;
        if (cli.action == CLI_CHECK_CONFIG) {
                /* Nothing was read: "OK" alone would pass for a checked file. */
                if (opt.no_config_file)
                        printf("no configuration file at %s; the defaults are OK\n", cli.config_path);
                else
                        puts("configuration OK");
                return EXIT_OK;
        }
        if (cli.action == CLI_DUMP_CONFIG)
                return config_dump(&cfg, stdout) < 0 ? EXIT_RUNTIME : EXIT_OK;
        return run(&cli, &opt, &cfg);
}
