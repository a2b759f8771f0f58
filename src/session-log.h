/* The per-connection record: one log entry per session, written by the
 * parent when it reaps the worker (journald attributes messages from
 * short-lived processes unreliably, systemd issue #2913). */
#pragma once

#include <stdint.h>

#include "children.h"

/* wait_status: from waitpid(); a worker killed by a signal is recorded as
 * "shutdown" when the parent cut it, otherwise as "error". */
void session_log_record(const struct slot *slot, int wait_status, uint64_t now_usec);
