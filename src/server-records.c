/* The records a client can provoke by the way it connects, each bounded:
 * changes at the cap and recoveries from resource trouble (one record a
 * second at most, with a count of what it stands for), and the connection
 * records (the record budget, budget.h). See server-private.h. */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "server-private.h"
#include "util.h"

/* The cap's state, and how many changes the record stands for. A client
 * can make the daemon reach and leave the cap with every connection, so the
 * first change is logged at once and the ones in the next second are folded
 * into one record at its end (server_write_owed_records()): one record
 * a second at most, and the state last logged is the state now. */
void server_log_cap(struct server *s, uint64_t now) {
        char message[256], more[96] = "", f[3][48];
        const char *fields[] = { f[0], f[1], f[2] };
        unsigned folded;

        if (!ratelimit_allow(&s->cap_rl, now, &folded))
                return;
        /* Filtered out (log_level): the counts are held for the next record
         * that is written, never reset as if this one had been. */
        if (!log_enabled(s->at_cap ? LOG_WARNING : LOG_NOTICE))
                return;
        if (s->cap_changes[0] + s->cap_changes[1] > 1)
                snprintf(more, sizeof(more), " (reached %u time(s) and left %u time(s) since the last record)",
                         s->cap_changes[1], s->cap_changes[0]);
        if (s->at_cap)
                snprintf(message, sizeof(message), "max_clients (%u) reached; new connections wait in the "
                         "kernel backlog%s", s->cfg.max_clients, more);
        else
                snprintf(message, sizeof(message), "below max_clients (%u) again; accepting%s", s->cfg.max_clients,
                         more);
        snprintf(f[0], sizeof(f[0]), "MAX_CLIENTS=%u", s->cfg.max_clients);
        snprintf(f[1], sizeof(f[1]), "CAP_REACHED=%u", s->cap_changes[1]);
        snprintf(f[2], sizeof(f[2]), "CAP_LEFT=%u", s->cap_changes[0]);
        log_struct(s->at_cap ? LOG_WARNING : LOG_NOTICE, s->at_cap ? MSGID_CAP_REACHED : MSGID_CAP_CLEARED,
                   message, fields, ELEMENTSOF(fields));
        s->cap_changes[0] = s->cap_changes[1] = 0;
}

/* Like server_log_cap(): a client that brings the daemon to the edge of its
 * resources could make it fail and recover with every connection. */
void server_log_recovered(struct server *s, uint64_t now) {
        char message[160], f[2][32];
        const char *fields[] = { f[0], f[1] };
        unsigned folded;

        if (!ratelimit_allow(&s->recover_rl, now, &folded))
                return;
        if (!log_enabled(LOG_NOTICE))
                return; /* held, as in server_log_cap() */
        snprintf(message, sizeof(message), "accepting again after %u resource failure(s)", s->recovered_failures);
        if (s->recoveries > 1)
                snprintf(message + strlen(message), sizeof(message) - strlen(message),
                         " (recovered %u time(s) since the last record)", s->recoveries);
        snprintf(f[0], sizeof(f[0]), "FAILURES=%u", s->recovered_failures);
        snprintf(f[1], sizeof(f[1]), "RECOVERIES=%u", s->recoveries);
        log_struct(LOG_NOTICE, MSGID_RECOVERED, message, fields, ELEMENTSOF(fields));
        s->recoveries = s->recovered_failures = 0;
}

void server_write_owed_records(struct server *s, uint64_t now, bool final) {
        uint64_t cap = ratelimit_owed_at(&s->cap_rl), rec = ratelimit_owed_at(&s->recover_rl);

        if (cap && (final || now >= cap))
                server_log_cap(s, now > cap ? now : cap);
        if (rec && (final || now >= rec))
                server_log_recovered(s, now > rec ? now : rec);
        if (final || now >= budget_due(&s->budget))
                budget_flush(&s->budget, now, s->served, final);
}

uint64_t server_records_due(const struct server *s) {
        uint64_t cap = ratelimit_owed_at(&s->cap_rl), rec = ratelimit_owed_at(&s->recover_rl);
        uint64_t next = budget_due(&s->budget);

        if (cap && cap < next)
                next = cap;
        if (rec && rec < next)
                next = rec;
        return next;
}
