/* What admission control counted for one session, kept with the session
 * (its child slot, or the client waiting for a fork retry) so that the end
 * of the session gives back exactly that: the source it was counted under,
 * or nothing. */
#pragma once

#include <stdbool.h>

#include "cidr.h"

struct admission_hold {
        struct cidr source;
        bool counted;
};
