/* The supervising parent: one epoll loop that accepts, forks one worker per
 * client, reaps, reloads, and at the end drains or (under socket
 * activation) hands its sessions over to the next daemon. */
#pragma once

#include <signal.h>
#include <stdbool.h>

#include "config.h"
#include "listen.h"

struct server_options {
        const char *config_path;
        bool config_path_given;         /* a missing file is then an error */
        bool no_config_file;            /* started on the defaults: no file at the default path */
        int port_override;              /* -p; 0: use the configuration's */
        int log_level_override;         /* -1: use the configuration's */
        sigset_t worker_mask;           /* the mask the daemon started with */
};

/* The first thing the daemon does (before the configuration, the sockets
 * and the credential are read, which may be slow): the daemon's signals
 * get their default dispositions and are blocked, so none that arrives
 * during the start-up kills it; the signalfd reads them once the loop runs
 * (a SIGHUP then reloads right after start, a SIGTERM drains). Also ignores
 * SIGPIPE. Stores the mask it replaced, for the workers. Returns 0 or
 * -errno. */
int server_block_signals(sigset_t *worker_mask);

/* Applies the command line's overrides to a configuration: at start and to
 * every reloaded one alike, so a reload compares like with like. */
void server_options_apply(const struct server_options *opt, struct config *c);

/* A notice when c hashes addresses with a random key (none configured):
 * at start, and at a reload that turns hashing on. */
void server_note_random_hash_key(const struct config *c);

/* Serves on every listener in ls until SIGTERM/SIGINT, then drains.
 * Takes ownership of ls. Returns 0 after a clean shutdown, -errno when the
 * loop itself cannot run. */
int server_run(const struct config *cfg, const struct server_options *opt, struct listen_set *ls);

/* inetd style (Accept=yes, server-connected.c): judges the one connected
 * socket by the client policies, then serves it in this process with
 * worker_mask restored and logs its record. Returns 0 with what became of
 * the client in *ret_outcome, or -errno (logged; the connection is closed).
 * SERVER_CONNECTED_UNENFORCEABLE: the configuration asks for a policy this
 * mode cannot enforce, so the client was refused. */
enum server_connected_outcome {
        SERVER_CONNECTED_SERVED,
        SERVER_CONNECTED_REFUSED,       /* by deny/allow */
        SERVER_CONNECTED_UNENFORCEABLE,
};
int server_run_connected(const struct config *cfg, const sigset_t *worker_mask, int fd,
                         enum server_connected_outcome *ret_outcome);

/* The policy that Accept=yes cannot enforce for a client of `family`
 * (AF_INET, AF_INET6, or AF_UNSPEC when not an IP peer) that is held to
 * the per-source limits (`limited`: not in source_limits_exempt), with the
 * key to change, or NULL when every one can be. buf holds the text when
 * needed (320 bytes are enough). The one rule, for an instance and for
 * echo-mpserv --check-config --accept-yes. */
const char *server_accept_yes_unenforceable(const struct config *c, bool limited, int family, char *buf,
                                            size_t size);
