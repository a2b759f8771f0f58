/* What the daemon tells its operator about itself: the STATUS= line, the
 * summary record written on SIGUSR1, and the aggregated refusal records.
 * Pure formatting and logging over a snapshot the server fills in. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admission.h"

#define REPORT_INTERVAL_USEC (10 * USEC_PER_SEC)
#define REPORT_MAX_LINES 10

struct report_state {
        unsigned active, max_clients;
        uint64_t served;
        const uint64_t *refused;        /* [_REFUSE_MAX], since start */
        uint32_t sources, source_table_size;
        uint64_t forgotten;             /* sources forgotten to make room, since start */
        bool at_cap, fork_failing, accept_paused, draining;
        const char *restart_pending;    /* keys waiting for a restart; "" when none */
        uint64_t uptime_usec;
};

void report_status(const struct report_state *st, char *buf, size_t size);

/* The SIGUSR1 record. */
void report_summary(const struct report_state *st);

/* What report_refusals() carries from one call to the next; zero at start. */
struct report_refusals {
        uint64_t forgotten_reported;    /* admission_forgotten() at the last record */
        uint64_t held_since_usec;       /* records held (log_level) since then; 0: none */
};

/* One record per source refused since the last call (at most
 * REPORT_MAX_LINES, the rest summed into one), and one when sources were
 * forgotten to make room in the source table. */
void report_refusals(struct report_refusals *r, struct admission *a, uint64_t now);
