/* inetd style (Accept=yes): systemd accepts, starts one instance of
 * echo-mpserv@.service per connection and passes it the connected socket;
 * this process serves that one client and exits.
 *
 * Every client policy of the other modes applies here too, each where it
 * can be enforced soundly (echo-mpserv(8), ACCEPT=YES):
 * - deny and allow need nothing but the peer: judged here, refused the
 *   same way (reset, the same "denied" record).
 * - log_addresses: the daemon's records go through logaddr, as always, but
 *   systemd names each instance after the client (echo-mpserv@N-LOCAL-
 *   REMOTE.service) in its own records and in every record's unit field,
 *   so only "full" can be enforced.
 * - max_clients and max_clients_per_source span connections, which no
 *   instance sees: echo-mpserv-generator writes them into the socket unit
 *   as MaxConnections= and MaxConnectionsPerSource=, which systemd applies
 *   to Accept=yes sockets. systemd counts single addresses, so that is the
 *   daemon's per-source count only where the source prefix is the whole
 *   address (/32, /128); a shorter prefix cannot be enforced.
 * - source_rate needs one process that sees every connection of a source;
 *   systemd has no per-source rate.
 * - source_limits_exempt: an exempt client is held to neither per-source
 *   limit, so neither is unenforceable for it; systemd's
 *   MaxConnectionsPerSource= knows no exemption and caps it all the same
 *   (stricter, never looser).
 * A policy that cannot be enforced is never dropped silently: the
 * connection is refused (reset) with an error record saying which key to
 * change, and the instance exits with status 78 (CONFIG). */
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>

#include "admission.h"
#include "logaddr.h"
#include "report.h"
#include "server-private.h"
#include "session-log.h"
#include "spawn.h"
#include "util.h"

const char *server_accept_yes_unenforceable(const struct config *c, bool limited, int family, char *buf,
                                            size_t size) {
        bool v4 = family == AF_INET;

        if (c->log_addresses != LOG_ADDRESSES_FULL)
                return "log_addresses: systemd names each Accept=yes instance after the client's address "
                       "in the journal; set log_addresses = \"full\" to serve with Accept=yes";
        if (!limited) /* exempt: held to neither per-source limit, in any mode */
                return NULL;
        if (c->source_rate_milli > 0)
                return "source_rate: a per-source rate needs one process that sees every connection, and "
                       "systemd has none; set source_rate = 0 to serve with Accept=yes";
        if (!c->max_clients_per_source || family == AF_UNSPEC)
                return NULL;
        if (v4 ? c->source_prefix_v4 == 32 : c->source_prefix_v6 == 128)
                return NULL;
        snprintf(buf, size, "max_clients_per_source: systemd's MaxConnectionsPerSource= counts single "
                 "addresses, not /%u sources; set %s = %u (or max_clients_per_source = 0) to serve with "
                 "Accept=yes", v4 ? c->source_prefix_v4 : c->source_prefix_v6,
                 v4 ? "source_prefix_ipv4" : "source_prefix_ipv6", v4 ? 32 : 128);
        return buf;
}

static int family_of(const union sockaddr_any *peer) {
        struct in6_addr addr;

        if (!cidr_address_of(peer, &addr))
                return AF_UNSPEC;
        return IN6_IS_ADDR_V4MAPPED(&addr) ? AF_INET : AF_INET6;
}

/* The lists, judged as the parent judges them (a fresh admission state
 * holds no count, so only deny and allow can refuse), and reported in the
 * parent's record. Returns 0 with whether the client was refused in
 * *ret_refused, or -errno. */
static int judge_lists(const struct config *cfg, const union sockaddr_any *peer, uint64_t now, bool *ret_refused) {
        struct admission adm;
        struct admission_hold hold;
        struct report_refusals refusals = { 0 };
        enum refuse_reason reason;
        int r = admission_init(&adm, cfg);

        if (r < 0)
                return r;
        *ret_refused = !admission_check(&adm, peer, now, &hold, &reason);
        if (*ret_refused)
                report_refusals(&refusals, &adm, now);
        admission_done(&adm);
        return 0;
}

int server_run_connected(const struct config *cfg, const sigset_t *worker_mask, int fd,
                         enum server_connected_outcome *ret_outcome) {
        struct worker_limits limits = server_worker_limits(cfg);
        struct session_end e = { .child = { .pid = getpid(), .start_usec = now_usec(CLOCK_MONOTONIC) } };
        socklen_t len = sizeof(e.child.peer);
        char buf[320], client[LOGADDR_MAX];
        const char *why;
        bool refused;
        int r;

        /* Records show the address as log_addresses says, here too. */
        r = logaddr_configure(cfg);
        if (r < 0) {
                safe_close(fd);
                return log_errno(LOG_ERR, r, NULL, "cannot set up address hashing; closing the connection");
        }
        (void) getpeername(fd, &e.child.peer.sa, &len);
        r = judge_lists(cfg, &e.child.peer, e.child.start_usec, &refused);
        if (r < 0) {
                reset_close(fd);
                return log_errno(LOG_ERR, r, NULL, "cannot set up admission control; connection reset");
        }
        if (refused) {
                reset_close(fd);
                *ret_outcome = SERVER_CONNECTED_REFUSED;
                return 0;
        }
        why = server_accept_yes_unenforceable(cfg, !admission_exempt(cfg, &e.child.peer), family_of(&e.child.peer),
                                              buf, sizeof(buf));
        if (why) {
                reset_close(fd);
                log_msg(LOG_ERR, MSGID_CONFIG, "Accept=yes cannot enforce %s; connection from %s reset",
                        why, logaddr_client(&e.child.peer, client));
                *ret_outcome = SERVER_CONNECTED_UNENFORCEABLE;
                return 0;
        }
        server_check_socket_buffer(cfg);
        worker_set_signals(); /* one session: SIGTERM cuts it, SIGHUP and the like do not */
        (void) sigprocmask(SIG_SETMASK, worker_mask, NULL);
        spawn_serve_here(fd, &e.report, e.child.start_usec, &limits);
        session_log_record(&e, 0, now_usec(CLOCK_MONOTONIC));
        *ret_outcome = SERVER_CONNECTED_SERVED;
        return 0;
}
