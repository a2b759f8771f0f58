/* What admission control counted for one session, kept by the parent for
 * the session (in its record of the worker, struct child, or for the client
 * waiting for a fork retry) so that its end gives back exactly that: the
 * source it was counted under, or nothing. */
#pragma once

#include <stdbool.h>

#include "cidr.h"

struct admission_hold {
        struct cidr source;
        bool counted;
};
