/* Inside the config module only: from libconfig's settings to struct config
 * (config-values.c). */
#pragma once

#include <libconfig.h>

#include "config-keys.h"

/* Sets c's field for every setting under root, as the key table describes
 * it; an unknown key or a bad value adds a problem to *diag and leaves the
 * field as it was. */
void config_set_all(const char *name, config_setting_t *root, struct config *c, struct config_diag *diag);
