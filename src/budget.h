/* The record budget: whether a closed connection gets a record of its own
 * or goes into a summary.
 *
 * journald drops what a service sends past its rate limit and the sender
 * never learns of it, so the daemon stays below that limit by itself.
 * Connection records are paid from a token bucket (log_connection_rate a
 * second, log_connection_burst at once). A connection that finds it empty
 * is folded into the pending summary: counted, with its close reason, bytes,
 * session time and source. budget_flush() writes that summary as one record,
 * every BUDGET_INTERVAL_USEC (budget_due()), on SIGUSR1 and at shutdown.
 * The first folded connection brings a record saying that folding started; a
 * flush with nothing folded since the last one (or the final flush) writes
 * that it stopped.
 *
 * Invariant, at every log level: every connection passed to
 * budget_connection() (which counts only while info is logged) is in
 * exactly one record, its own or a summary's CONNECTIONS, or pending for
 * the next flush; RECORDED + SUMMARIZED in each summary count them since
 * start, and a summary is counted as SUMMARIZED only when it is written.
 * While info is not logged (a reload lowered log_level) the pending
 * summary is held, not written where it would be filtered out: no flush is
 * due, and the first flush after info is logged again writes it; at
 * shutdown a held summary is written at notice. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "children.h"
#include "cidr.h"
#include "config.h"
#include "util.h"
#include "worker.h"

#define BUDGET_INTERVAL_USEC (10 * USEC_PER_SEC)
/* Sources of folded connections are counted in a table this big. Past it, a
 * new source takes the place of the least counted one and inherits its count
 * (the "space-saving" algorithm: the busiest sources stay, their counts
 * become upper bounds). A summary names the BUDGET_TOP_SOURCES busiest. */
#define BUDGET_SOURCES 32
#define BUDGET_TOP_SOURCES 5

struct budget_source {
        struct cidr key;
        uint64_t count;
};

struct budget {
        double tokens;
        uint64_t refilled_usec;
        uint64_t recorded, summarized;  /* connections since start */

        /* Folding: since folding_usec, in `summaries` records so far. */
        bool folding;
        uint64_t folding_usec, folded;
        unsigned summaries;

        /* The pending summary: connections closed since since_usec. */
        uint64_t since_usec, connections, bytes_in, bytes_out, session_usec;
        uint64_t reasons[_CLOSE_REASON_MAX];
        uint32_t n_sources;
        bool sources_overflow;
        struct budget_source sources[BUDGET_SOURCES];
};

/* A full bucket. */
void budget_init(struct budget *b, const struct config *cfg, uint64_t now);

/* A reaped worker (session_log_record()'s arguments): its record if the
 * budget pays for it, else folded. Nothing when info is not logged. */
void budget_connection(struct budget *b, const struct config *cfg, const struct session_end *e, int wait_status,
                       uint64_t now);

/* When the next flush is owed; UINT64_MAX while not folding. */
uint64_t budget_due(const struct budget *b);

/* Writes the pending summary, if any (unless it is held, see above);
 * otherwise (or when final) ends the folding. served: the daemon's count of connections, for the record. */
void budget_flush(struct budget *b, uint64_t now, uint64_t served, bool final);
