/* The daemon's transitions: reloading its configuration and shutting down
 * (stop accepting, drain, cut what is left). See server-private.h. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>

#include "log.h"
#include "logaddr.h"
#include "notify.h"
#include "server-private.h"
#include "spawn.h"
#include "util.h"

static void recount_one(struct child *ch, void *userdata) {
        struct server *s = userdata;

        admission_hold_session(&s->adm, &ch->peer, now_usec(CLOCK_MONOTONIC), &ch->hold);
}

/* Sources are counted by prefix: new prefix lengths mean new sources. The
 * table is new, so every hold is replaced, none given back. */
static void recount_sources(struct admission *a, void *userdata) {
        struct server *s = userdata;

        children_foreach(&s->children, recount_one, s);
        if (s->pending_fd >= 0)
                admission_hold_session(a, &s->pending_peer, now_usec(CLOCK_MONOTONIC), &s->pending_hold);
}

void server_options_apply(const struct server_options *opt, struct config *c) {
        if (opt->port_override > 0)
                c->port = (uint16_t) opt->port_override;
        if (opt->log_level_override >= 0)
                c->log_level = opt->log_level_override;
}

void server_note_random_hash_key(const struct config *c) {
        if (c->log_addresses == LOG_ADDRESSES_HASH && !c->log_hash_key_credential[0] && !c->log_hash_key[0])
                log_msg(LOG_NOTICE, MSGID_CONFIG, "log_addresses = \"hash\" with no key set "
                        "(log_hash_key_credential): a random key for this run, so hashes match within it "
                        "only and no later run reproduces them");
}

void server_check_socket_buffer(const struct config *c) {
        uint32_t rmem, wmem;

        if (!c->socket_buffer || spawn_socket_buffer_caps(&rmem, &wmem) < 0 ||
            (c->socket_buffer <= rmem && c->socket_buffer <= wmem))
                return;
        log_msg(LOG_WARNING, MSGID_CONFIG, "socket_buffer = %" PRIu32 " is more than the kernel allows "
                "(net.core.rmem_max = %" PRIu32 ", net.core.wmem_max = %" PRIu32 "): sessions get %" PRIu32
                " bytes for receiving and %" PRIu32 " for sending; raise the sysctls or lower socket_buffer",
                c->socket_buffer, rmem, wmem, c->socket_buffer < rmem ? c->socket_buffer : rmem,
                c->socket_buffer < wmem ? c->socket_buffer : wmem);
}

/* Said after every reload, failed or not, for as long as it holds. Under
 * socket activation the listening sockets are echo-mpserv.socket's: a
 * restart of the daemon would not move them, a restart of the socket does. */
static void report_restart_pending(const struct server *s, bool was_pending) {
        bool activated = s->ls->n > 0 && s->ls->l[0].inherited;

        if (s->restart_pending[0] && activated)
                log_msg(LOG_WARNING, MSGID_CONFIG, "restart pending: the file changes %s; port and listen take "
                        "effect after 'systemctl daemon-reload && systemctl restart echo-mpserv.socket' (backlog "
                        "is the socket's Backlog=), the other keys after 'systemctl restart echo-mpserv'; the "
                        "running values stay until then", s->restart_pending);
        else if (s->restart_pending[0])
                log_msg(LOG_WARNING, MSGID_CONFIG, "restart pending: the file changes %s, which take effect "
                        "only after a restart; the running values stay until then", s->restart_pending);
        else if (was_pending)
                log_msg(LOG_NOTICE, MSGID_CONFIG, "restart no longer pending: the file is back at the "
                        "running values of the keys that need one");
}

/* A new configuration takes effect: for new connections, and for the keys
 * that need a restart only then (config_keep_restart_keys()). s->cfg
 * therefore keeps the values the daemon started with for those keys, and
 * each reload compares the file with them afresh. */
static void apply(struct server *s, struct config *next) {
        char changes[1024];
        bool restart;
        int r;

        unsigned n = config_describe_changes(&s->cfg, next, changes, sizeof(changes), &restart);
        (void) config_keep_restart_keys(next, &s->cfg, s->restart_pending, sizeof(s->restart_pending));

        struct config old = s->cfg;
        s->cfg = *next;
        (void) logaddr_configure(&s->cfg);
        /* A worker that outlives this daemon records itself as it says now. */
        server_policy_set(s);
        /* Said once the record policy is in place, and before a quieter
         * log_level could hide it. */
        log_msg(LOG_NOTICE, MSGID_RELOAD, "configuration reloaded: %s", n ? changes : "no changes");
        log_set_max_level(s->cfg.log_level); /* --log-level, if given, is in it */
        if (old.log_addresses != LOG_ADDRESSES_HASH)
                server_note_random_hash_key(&s->cfg);
        if (old.socket_buffer != s->cfg.socket_buffer)
                server_check_socket_buffer(&s->cfg);
        r = admission_reconfigure(&s->adm, &old, recount_sources, s);
        if (r < 0)
                log_errno(LOG_ERR, r, MSGID_RELOAD_FAILED, "cannot recount sources after the reload");
}

void server_reload(struct server *s) {
        struct config_diag diag = { 0 };
        struct config next;
        bool was_pending = s->restart_pending[0], no_file = false;
        int r;

        notify_reloading();
        /* A file that vanished (renamed away to be edited, say) never turns
         * a configuration into the defaults: that is a failed reload. Only
         * a daemon already on the defaults for want of a file finds none
         * again and stays on them. */
        if (s->on_defaults)
                r = config_load_file(s->opt->config_path, s->opt->config_path_given, &next, &no_file, &diag);
        else
                r = config_load(s->opt->config_path, &next, &diag);
        if (r >= 0) {
                s->on_defaults = no_file;
                if (no_file)
                        log_msg(LOG_NOTICE, MSGID_CONFIG, "no configuration file at %s; the defaults stay",
                                s->opt->config_path);
        }
        if (r < 0)
                log_lines(LOG_ERR, MSGID_RELOAD_FAILED, "reload failed, keeping the running configuration: ",
                          diag.text);
        else {
                server_options_apply(s->opt, &next);
                apply(s, &next);
        }
        report_restart_pending(s, was_pending);
        server_update_listening(s);
        char status[256];
        server_format_status(s, status, sizeof(status));
        notify_ready(status);
}

static void cut_one(struct child *ch, void *userdata) {
        int sig = *(int *) userdata;

        ch->cut = true;
        if (ch->adopted && ch->pidfd >= 0)
                (void) pidfd_send_signal(ch->pidfd, sig, NULL, 0);
        else if (ch->adopted)
                (void) kill(ch->pid, sig); /* unwatched: checked at each sweep, see server_sweep_adopted() */
        else
                (void) kill(ch->pid, sig);
}

void server_stop_accepting(struct server *s, uint64_t now) {
        s->draining = true;
        server_update_listening(s);
        /* Our copies only: under socket activation systemd keeps the
         * listening socket, and clients keep queueing for the next start. */
        listen_close_all(s->ls);
        if (s->pending_fd >= 0) {
                /* Admitted but never started: it counts as cut. */
                s->pending_fd = safe_close(s->pending_fd);
                admission_release(&s->adm, &s->pending_hold, now);
                s->cut++;
        }
}

void server_begin_shutdown(struct server *s, int sig) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        char status[256];

        if (s->draining) {
                log_msg(LOG_NOTICE, MSGID_SHUTDOWN, "%s again: ending the remaining sessions now",
                        strsignal(sig));
                s->drain_deadline = now;
                return;
        }
        server_stop_accepting(s, now);
        s->drain_deadline = now + usec_from_ms(s->cfg.drain_timeout_ms);
        log_msg(LOG_NOTICE, MSGID_SHUTDOWN, "%s: stopped accepting; draining %u session(s) for up to %" PRIu32 " ms",
                strsignal(sig), s->children.active, s->cfg.drain_timeout_ms);
        server_format_status(s, status, sizeof(status));
        notify_stopping(status, usec_from_ms(s->cfg.drain_timeout_ms) + KILL_GRACE_USEC +
                                5 * USEC_PER_SEC);
}

void server_drain_deadlines(struct server *s, uint64_t now) {
        if (s->handed_off)
                return; /* the workers' own deadlines from now on */
        if (!s->cutting && now >= s->drain_deadline && s->children.active > 0) {
                int sig = SIGTERM;
                s->cutting = true;
                s->kill_deadline = now + KILL_GRACE_USEC;
                children_foreach(&s->children, cut_one, &sig);
        } else if (s->cutting && now >= s->kill_deadline && s->children.active > 0) {
                int sig = SIGKILL;
                s->kill_deadline = UINT64_MAX;
                children_foreach(&s->children, cut_one, &sig);
        }
}
