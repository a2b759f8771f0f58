/* See session-log.h. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "log.h"
#include "logaddr.h"
#include "session-log.h"
#include "util.h"

/* The reason, and what the record adds to it (detail may be NULL). */
static enum close_reason classify(const struct session_end *e, int status, char *detail, size_t size) {
        enum close_reason reason = e->report.stats.reason;

        if (WIFSIGNALED(status)) {
                if (detail) {
                        const char *sig = sigabbrev_np(WTERMSIG(status));

                        snprintf(detail, size, " (worker killed by SIG%s)", sig ? sig : "?");
                }
                return e->child.cut ? CLOSE_SHUTDOWN : CLOSE_ERROR;
        }
        if (reason == CLOSE_NONE || (WIFEXITED(status) && WEXITSTATUS(status) != 0)) {
                if (detail)
                        snprintf(detail, size, " (worker exited with status %d)", WEXITSTATUS(status));
                return CLOSE_ERROR;
        }
        if (reason == CLOSE_ERROR && e->report.stats.error && detail)
                snprintf(detail, size, " (%s)", strerror(e->report.stats.error));
        return reason;
}

enum close_reason session_log_reason(const struct session_end *e, int status) {
        return classify(e, status, NULL, 0);
}

uint64_t session_log_duration(const struct session_end *e, uint64_t now) {
        uint64_t end = e->report.stats.end_usec ? e->report.stats.end_usec : now;

        return end > e->child.start_usec ? end - e->child.start_usec : 0;
}

void session_log_record(const struct session_end *e, int status, uint64_t now) {
        char client[LOGADDR_MAX], local[ADDR_HOST_MAX], detail[96] = "";
        char client_str[LOGADDR_MAX + 16], local_str[ADDR_STR_MAX];
        char f[11][96];
        const char *fields[ELEMENTSOF(f)];
        char message[512];
        uint16_t client_port, local_port;
        uint64_t duration = session_log_duration(e, now);
        enum close_reason reason;
        size_t n = 0;

        if (!log_enabled(LOG_INFO))
                return;
        reason = classify(e, status, detail, sizeof(detail));

        addr_host_port(&e->child.peer, client, &client_port); /* for the port */
        logaddr_client(&e->child.peer, client);
        if (logaddr_full())
                addr_to_string(&e->child.peer, client_str);
        else
                snprintf(client_str, sizeof(client_str), "%s port %u", client, client_port);
        addr_host_port(&e->report.local, local, &local_port);
        snprintf(message, sizeof(message),
                 "connection %s -> %s closed: %s%s after %" PRIu64 ".%03" PRIu64
                 " s, %" PRIu64 " bytes in, %" PRIu64 " bytes out, worker %d",
                 client_str, addr_to_string(&e->report.local, local_str),
                 close_reason_name(reason), detail, duration / USEC_PER_SEC,
                 (duration % USEC_PER_SEC) / USEC_PER_MSEC, e->report.stats.bytes_in, e->report.stats.bytes_out,
                 (int) e->child.pid);

        snprintf(f[n++], sizeof(f[0]), "CLIENT_ADDRESS=%s", client);
        snprintf(f[n++], sizeof(f[0]), "CLIENT_PORT=%u", client_port);
        snprintf(f[n++], sizeof(f[0]), "LOCAL_ADDRESS=%s", local);
        snprintf(f[n++], sizeof(f[0]), "LOCAL_PORT=%u", local_port);
        snprintf(f[n++], sizeof(f[0]), "WORKER_PID=%d", (int) e->child.pid);
        snprintf(f[n++], sizeof(f[0]), "DURATION_USEC=%" PRIu64, duration);
        snprintf(f[n++], sizeof(f[0]), "BYTES_RECEIVED=%" PRIu64, e->report.stats.bytes_in);
        snprintf(f[n++], sizeof(f[0]), "BYTES_SENT=%" PRIu64, e->report.stats.bytes_out);
        snprintf(f[n++], sizeof(f[0]), "CLOSE_REASON=%s", close_reason_name(reason));
        if (e->report.stats.error)
                snprintf(f[n++], sizeof(f[0]), "ERRNO=%d", e->report.stats.error);
        if (WIFSIGNALED(status))
                snprintf(f[n++], sizeof(f[0]), "SIGNAL=%d", WTERMSIG(status));
        for (size_t i = 0; i < n; i++)
                fields[i] = f[i];
        log_struct(LOG_INFO, MSGID_CONNECTION, message, fields, n);
}
