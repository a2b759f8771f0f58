/* The accepting half of the server (server-private.h): a listener's
 * ready connections are judged by admission and each admitted one gets a
 * worker; trouble with accept() or fork() pauses the listeners with an
 * exponential back-off, and the first success after it is a recovery. */
#include <errno.h>
#include <inttypes.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admission.h"
#include "children.h"
#include "log.h"
#include "server-private.h"
#include "spawn.h"
#include "util.h"

#define ACCEPT_BATCH 64
#define BACKOFF_MIN_USEC (10 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (500 * USEC_PER_MSEC)

/* Records trouble with resources (accept or fork) and schedules a retry
 * with exponential back-off, logging at most about once a second. */
static void back_off(struct server *s, const char *msgid, const char *what, int err) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        unsigned suppressed;

        s->failures++;
        s->backoff = s->backoff ? s->backoff * 2 : BACKOFF_MIN_USEC;
        if (s->backoff > BACKOFF_MAX_USEC)
                s->backoff = BACKOFF_MAX_USEC;
        s->resume_at = now + s->backoff;
        if (ratelimit_allow(&s->trouble_rl, now, &suppressed))
                log_errno(LOG_WARNING, err, msgid, "%s failed (%u failure(s) so far, %u not logged); "
                          "pausing accept for %" PRIu64 " ms", what, s->failures, suppressed,
                          s->backoff / USEC_PER_MSEC);
        s->status_dirty = true;
}

static void recovered(struct server *s) {
        s->recoveries = sat_add(s->recoveries, 1);
        s->recovered_failures = sat_add(s->recovered_failures, s->failures);
        server_log_recovered(s, now_usec(CLOCK_MONOTONIC));
        s->failures = 0;
        s->backoff = 0;
        s->resume_at = 0;
        s->status_dirty = true;
}

struct worker_limits server_worker_limits(const struct config *c) {
        return (struct worker_limits) {
                .buffer_size = c->buffer_size,
                .socket_buffer = c->socket_buffer,
                .idle_timeout_usec = usec_from_ms(c->idle_timeout_ms),
                .write_timeout_usec = usec_from_ms(c->write_timeout_ms),
                .max_session_time_usec = usec_from_ms(c->max_session_time_ms),
                .max_session_bytes = c->max_session_bytes,
        };
}

int server_start_worker(struct server *s, int fd, const union sockaddr_any *peer, struct admission_hold *hold) {
        struct worker_limits limits = server_worker_limits(&s->cfg);
        struct child *ch = children_claim(&s->children);
        pid_t pid;

        if (!ch) { /* cannot happen below the cap (slots cover the largest one); be safe anyway */
                reset_close(fd);
                admission_release(&s->adm, hold, now_usec(CLOCK_MONOTONIC));
                return -ENOSPC;
        }
        struct spawn_orphan orphan = { .parent = getpid(), .drain_usec = usec_from_ms(s->cfg.drain_timeout_ms),
                                       .peer = *peer, .record = server_record_own_end };

        ch->peer = *peer;
        ch->hold = *hold;
        ch->start_usec = now_usec(CLOCK_MONOTONIC);
        pid = spawn_worker(fd, children_report(&s->children, ch), ch->start_usec, &limits, &s->worker_mask,
                           &orphan);
        if (pid < 0) {
                children_release(&s->children, ch);
                s->pending_fd = fd;
                s->pending_peer = *peer;
                s->pending_hold = *hold;
                back_off(s, MSGID_FORK_FAILED, "fork()", (int) pid);
                return (int) pid;
        }
        safe_close(fd);
        struct child *stale = children_find(&s->children, pid);
        if (stale && stale->adopted) /* its pid is reused: it ended */
                server_adopted_ended(s, (uint32_t) (stale - s->children.child));
        children_commit(&s->children, ch, pid);
        server_list_session(s, ch, 0);
        s->served++;
        s->status_dirty = true;
        if (s->failures)
                recovered(s);
        return 0;
}

static bool accept_error_is_per_connection(int err) {
        /* Linux reports a pending network error of the new connection
         * through accept(); the listener itself is fine. */
        return err == ECONNABORTED || err == EPROTO || err == ENETDOWN || err == ENOPROTOOPT ||
               err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH || err == EOPNOTSUPP ||
               err == ENETUNREACH || err == EPERM || err == EINTR;
}

void server_accept_ready(struct server *s, struct listener *l) {
        for (int i = 0; i < ACCEPT_BATCH && s->listening; i++) {
                union sockaddr_any peer;
                struct admission_hold hold;
                enum refuse_reason reason; /* counted for the report by admission */
                socklen_t len = sizeof(peer);
                int fd;

                if (s->children.active >= s->cfg.max_clients)
                        break;
                /* Blocking, as the worker wants it (its timeouts are the kernel's). */
                fd = accept4(l->fd, &peer.sa, &len, 0);
                if (fd < 0) {
                        if (errno == EAGAIN)
                                break;
                        if (accept_error_is_per_connection(errno))
                                continue;
                        back_off(s, MSGID_ACCEPT_FAILED, "accept()", negative_errno());
                        break;
                }
                if (!admission_check(&s->adm, &peer, now_usec(CLOCK_MONOTONIC), &hold, &reason)) {
                        reset_close(fd); /* the client learns at once; no TIME_WAIT here */
                        s->status_dirty = true;
                        continue;
                }
                if (server_start_worker(s, fd, &peer, &hold) < 0)
                        break;
        }
        server_update_listening(s);
}
