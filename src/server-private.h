/* Inside the server only: the state shared by its event loop (server.c),
 * its accepting (server-accept.c), its lifecycle transitions (server-lifecycle.c), its folded records
 * (server-records.c) and the hand-off of sessions across a restart
 * (server-handoff.c). */
#pragma once

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "admission.h"
#include "budget.h"
#include "children.h"
#include "config.h"
#include "handoff.h"
#include "listen.h"
#include "log.h"
#include "report.h"
#include "server.h"
#include "worker.h"

#define KILL_GRACE_USEC (2 * USEC_PER_SEC)
/* The epoll tag of an adopted session's pidfd: this bit and its slot. */
#define SERVER_ADOPTED_TAG (UINT32_C(1) << 30)
/* A worker cut with SIGTERM closes its connection itself before SIGKILL. */
_Static_assert(KILL_GRACE_USEC > WORKER_CUT_LINGER_USEC, "the kill grace must outlast the cut's linger");

/* a + b, at most UINT_MAX: counts held for a record saturate. */
static inline unsigned sat_add(unsigned a, unsigned b) {
        return a > UINT_MAX - b ? UINT_MAX : a + b;
}

/* The parent's state, by concern. The state machine: adopting (at the
 * start, the sessions the previous daemon handed over are counted until
 * their pidfds say they ended) -> listening (unless at_cap, or paused by
 * back-off until resume_at) -> at SIGTERM either
 * - draining (no more accepting, sessions end on their own until
 *   drain_deadline) -> cutting (SIGTERM to the workers, SIGKILL at
 *   kill_deadline) -> exit; or, under socket activation,
 * - handed_off (no more accepting; the live sessions are left to their
 *   workers, which record their own ends, and listed for the next daemon
 *   in systemd's file descriptor store) -> exit at once.
 * Every deadline below is CLOCK_MONOTONIC µs; next_timeout_ms() in
 * server.c waits for the nearest. */
struct server {
        /* What it runs with, and what it owns. */
        struct config cfg;
        const struct server_options *opt;
        struct listen_set *ls;
        struct children children;
        /* The live list of sessions in systemd's store (server_list_*()),
         * under systemd only; fd -1 otherwise. */
        struct handoff_table listed;
        struct admission adm;
        int epfd, sfd;
        sigset_t worker_mask;

        /* Accepting. */
        bool listening, at_cap;

        /* Shutdown: the drain, then the cut; or, under systemd, the hand-off
         * of the sessions to their workers (server-handoff.c). */
        bool draining, cutting, handed_off;
        uint64_t drain_deadline, kill_deadline;
        unsigned drained, cut, handed_over, adopted;
        /* Adopted sessions without a pidfd (no descriptor was left for
         * one): looked at every ADOPTED_SWEEP_USEC (server_sweep_adopted()). */
        unsigned unwatched;
        uint64_t sweep_at;
        /* The previous daemon's list is still in systemd's store: replaced
         * by server_list_store(). */
        bool stale_list;
        struct handoff_policy policy;   /* shared with the other daemons' workers */

        /* Back-off from resource trouble: listeners paused until resume_at;
         * a client whose fork failed waits in pending_fd for the retry. */
        uint64_t resume_at, backoff;
        int pending_fd;
        union sockaddr_any pending_peer;
        struct admission_hold pending_hold;
        unsigned failures;
        struct ratelimit trouble_rl;

        /* Configuration state across reloads. Restart-only keys whose value
         * in the file differs from the one running ("port, listen"); empty
         * when none. on_defaults: the running configuration is the built-in
         * defaults because no file was at the default path (at start, or at
         * the last reload): only then may a reload find no file and keep
         * going. */
        char restart_pending[128];
        bool on_defaults;

        /* Periodic work: the refusal and budget records (report_at), the
         * STATUS= line when it changed (status_at), the watchdog. */
        uint64_t report_at;
        bool status_dirty;
        uint64_t status_at, watchdog_interval, watchdog_at;

        /* Counters the operator sees (report_state). */
        uint64_t served, started_usec;

        /* Records a client can provoke, folded to one a second (see
         * server_log_cap() and server_log_recovered() in server-records.c):
         * what each owed record still has to report. cap_changes: [0] left
         * the cap, [1] reached it. Held while log_level filters the record
         * out; they saturate (sat_add()) rather than wrap. */
        struct ratelimit cap_rl, recover_rl;
        unsigned cap_changes[2], recoveries, recovered_failures;
        struct budget budget;
        struct report_refusals refusals;
        /* Notifications that could not be sent, not yet logged. */
        struct ratelimit notify_rl;
        unsigned notify_failed;
        unsigned notify_kinds;     /* NOTIFY_KIND_* bits of those failed */
        int notify_error;
};

/* A warning when socket_buffer is more than the kernel gives a socket
 * (spawn_socket_buffer_caps()), naming what sessions get instead: once a
 * configuration, at start and at a reload that changes it, never per
 * connection. */
void server_check_socket_buffer(const struct config *c);

/* The limits a session runs with, from a configuration. */
struct worker_limits server_worker_limits(const struct config *c);

/* server-accept.c. Accepts what a ready listener holds, up to a batch and
 * the cap, and starts a worker for each client admission admits. */
void server_accept_ready(struct server *s, struct listener *l);
/* Starts a worker for fd, which it takes over: closed after the fork, or
 * kept as the pending client when fork fails. So is *hold: it goes with the
 * session (its slot, or the pending client), or is given back. 0 or -errno. */
int server_start_worker(struct server *s, int fd, const union sockaddr_any *peer, struct admission_hold *hold);

/* The STATUS= text. */
void server_format_status(const struct server *s, char *buf, size_t size);
/* Arms or disarms the listeners to match the state; logs cap changes and
 * marks STATUS= for the next update (at most one per STATUS_INTERVAL). */
void server_update_listening(struct server *s);

/* server-records.c. A change at the cap (s->at_cap is the new state,
 * counted in cap_changes) and a recovery from resource trouble (counted in
 * recoveries, recovered_failures): logged now, or folded into a record owed
 * at most a second later. */
void server_log_cap(struct server *s, uint64_t now);
void server_log_recovered(struct server *s, uint64_t now);
/* Writes the owed records whose time has come: folded ones and the record
 * budget's summary; when final (at exit), all of them. */
void server_write_owed_records(struct server *s, uint64_t now, bool final);
/* When the next one is owed; UINT64_MAX when none is. */
uint64_t server_records_due(const struct server *s);

/* SIGHUP: re-reads the configuration; a broken file changes nothing. */
void server_reload(struct server *s);
/* The first step of either way to stop (drain or hand-off): draining from
 * now on, our listeners closed, a client still waiting for its fork cut. */
void server_stop_accepting(struct server *s, uint64_t now);
/* SIGTERM/SIGINT: stops accepting and starts the drain; a second one ends it. */
void server_begin_shutdown(struct server *s, int sig);
/* server-handoff.c. At the start: counts the sessions the previous daemon
 * handed over (s->ls->handoff_fd) that still run, under max_clients and
 * their sources' limits, each until its pidfd says it ended
 * (server_adopted_ended(), with its slot from the epoll tag). */
void server_adopt(struct server *s);
/* The live list (struct handoff_table): made before the adoption, which
 * lists the adopted sessions in it, then put in systemd's store in place of
 * the list read (server_list_store(): the old one is removed just before,
 * two messages apart, as the store holds one; a crash between them, or a
 * failed store, leaves the store without a list); each session is listed when it
 * starts or is adopted and unlisted when it ends, so a daemon that dies
 * without a hand-off leaves the next one the sessions still running. */
void server_list_open(struct server *s);
/* At the start under systemd with no list from the previous daemon (after a
 * stop, systemd has emptied its store; KillMode=process left the workers in
 * the service's cgroup): counts each process of this user in the service's
 * own cgroup (cgroup.procs; ProtectControlGroups= leaves it readable) under
 * max_clients until its pidfd says it ended. Their clients are unknown, so
 * the per-source limits do not count them. Not as root, where signal 0 says
 * nothing about whose a process is. */
void server_adopt_leftovers(struct server *s);
void server_list_store(struct server *s);
/* The record policy of the workers' own records (struct record_policy):
 * server_policy_open() takes the one the daemons share (handoff.h) from the
 * previous daemon, or makes and stores it, where a hand-off can happen;
 * server_policy_set() writes the configuration's into it and into every
 * live report, at the start and at each reload. */
void server_policy_open(struct server *s);
void server_policy_set(struct server *s);
void server_list_session(struct server *s, const struct child *ch, uint64_t start_time);
void server_unlist_session(struct server *s, const struct child *ch);
void server_adopted_ended(struct server *s, uint32_t slot);
/* An adopted session that could not get a pidfd still counts; this looks
 * whether each such one still runs (and gives it a pidfd when a descriptor
 * is free again). Due at s->sweep_at while s->unwatched > 0. */
#define ADOPTED_SWEEP_USEC (1 * USEC_PER_SEC)
void server_sweep_adopted(struct server *s, uint64_t now);
/* SIGTERM under socket activation: stops accepting and leaves at once; the
 * workers finish on their own (worker_watch_parent()), each writing its
 * record, and the next daemon accepts from the socket unit's listener and
 * adopts them from systemd's file descriptor store. */
void server_hand_off(struct server *s);
/* What a worker whose daemon left writes as its record (struct
 * spawn_orphan). */
void server_record_own_end(const struct slot_report *report, const union sockaddr_any *peer, uint64_t start_usec);
/* Reaps every ended worker (WNOHANG), recording each. */
void server_reap(struct server *s);
/* Records one reaped worker and gives back its slot and admission hold. */
void server_record_reaped(struct server *s, struct child *ch, int status);
/* During the drain: SIGTERM to what is left at drain_timeout, SIGKILL later. */
void server_drain_deadlines(struct server *s, uint64_t now);
