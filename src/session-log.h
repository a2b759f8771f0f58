/* The per-connection record: one log entry per session, written by the
 * parent when it reaps the worker (journald attributes messages from
 * short-lived processes unreliably, systemd issue #2913). Whether a session
 * gets its record or goes into a summary is the record budget's call
 * (budget.h). */
#pragma once

#include <stdint.h>

#include "children.h"
#include "worker.h"

/* e: the parent's record and a checked copy of the worker's report
 * (children_ended()). wait_status: from waitpid(); a worker killed by a signal is recorded as
 * "shutdown" when the parent cut it, otherwise as "error". */
void session_log_record(const struct session_end *e, int wait_status, uint64_t now_usec);

/* The close reason the record gives, and the session's duration. */
enum close_reason session_log_reason(const struct session_end *e, int wait_status);
uint64_t session_log_duration(const struct session_end *e, uint64_t now_usec);
