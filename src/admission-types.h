/* Admission control's vocabulary, for the modules below and beside it that
 * must not depend on all of admission.h: why a connection is refused (the
 * source table counts refusals per reason), and what was counted for one
 * session. */
#pragma once

#include <stdbool.h>

#include "cidr.h"

enum refuse_reason {
        REFUSE_DENIED,          /* deny list, or not in a non-empty allow list */
        REFUSE_RATE,            /* over its connection rate, or blocked for it */
        REFUSE_PER_SOURCE,      /* max_clients_per_source sessions already */
        _REFUSE_MAX,
};

/* What admission control counted for one session, kept by the parent for
 * the session (in its record of the worker, struct child, or for the client
 * waiting for a fork retry) so that its end gives back exactly that: the
 * source it was counted under, or nothing. */
struct admission_hold {
        struct cidr source;
        bool counted;
};
