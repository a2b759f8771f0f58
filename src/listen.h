/* Listening sockets: taken from systemd, or bound from the configuration.
 *
 * Contract: on success every listener is a non-blocking, close-on-exec,
 * listening TCP socket (IPv4 or IPv6) with urgent data inline
 * (SO_OOBINLINE, inherited by the sockets the kernel completes from then
 * on; the worker sets it again, see spawn.c) and its local address
 * recorded. On
 * failure nothing is left open and `err` names the socket and the cause. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "config.h"

#define LISTEN_MAX 32

struct listener {
        int fd;
        uint16_t port;
        bool inherited;
        char address[ADDR_STR_MAX];
        char name[64];          /* systemd's FileDescriptorName=, or "config" */
};

struct listen_set {
        unsigned n;
        struct listener l[LISTEN_MAX];
        int connected_fd;       /* Accept=yes: the one connected socket, else -1 */
        int handoff_fd;         /* the sessions of the previous daemon (handoff.h), else -1 */
        int policy_fd;          /* the record policy the daemons share (handoff.h), else -1 */
};

void listen_set_init(struct listen_set *ls);

/* Takes what systemd passed (LISTEN_FDS). Returns the number of sockets
 * taken: 0 when none was passed. A single connected stream socket is
 * taken as ls->connected_fd (inetd style, Accept=yes); a file (not a
 * socket) named HANDOFF_FDNAME, from the file descriptor store, as
 * ls->handoff_fd, and one named HANDOFF_POLICY_FDNAME as ls->policy_fd.
 * Anything else that is not a listening TCP socket is an
 * error. Unsets LISTEN_* either way. */
int listen_inherit(struct listen_set *ls, char *err, size_t errlen);

/* True when systemd started this very process as a service: INVOCATION_ID
 * is set and SYSTEMD_EXEC_PID names this process (a shell that merely
 * inherited both from a service, a terminal's, say, has another pid). Such
 * a daemon must get its sockets from the socket unit and never bind: the
 * unit's sandbox forbids it, and binding would bypass the socket unit. */
bool listen_started_by_systemd(void);

/* True when the sockets systemd passes (LISTEN_FDS, left set) include a
 * listener as listen_inherit() takes one (a listening TCP socket); false
 * for none, or for the one connected socket of Accept=yes. */
bool listen_passed_listener(void);

/* True when a connection waits in the accept queue of one of the listening
 * sockets systemd passes (polled, not accepted). */
bool listen_client_waiting(void);

/* Binds every address of c->listen on `port`, dual-stack where
 * config_listen_dual_stack() says; a dual-stack address becomes 0.0.0.0
 * when IPv6 is unavailable. */
int listen_bind(struct listen_set *ls, const struct config *c, uint16_t port, char *err, size_t errlen);

void listen_close_all(struct listen_set *ls);
