/* The configuration keys: their table, defaults and names. See
 * config-keys.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "config-keys.h"
#include "util.h"

#define FIELD(f) offsetof(struct config, f)
#define DAY_MS UINT64_C(86400000)

const struct key config_keys[] = {
        { "port",              KIND_U16,       FIELD(port), 0,                1, 65535,                  false },
        { "listen",            KIND_ADDRESSES, FIELD(listen), FIELD(n_listen), 1, CONFIG_MAX_LISTEN,    false },
        { "backlog",           KIND_U32,       FIELD(backlog), 0,             1, 65535,                  false },
        { "max_clients",       KIND_U32,       FIELD(max_clients), 0,         1, CONFIG_MAX_CLIENTS_LIMIT, true },
        { "idle_timeout",      KIND_DURATION,  FIELD(idle_timeout_ms), 0,     1, 7 * DAY_MS,             true },
        { "write_timeout",     KIND_DURATION,  FIELD(write_timeout_ms), 0,    1, 7 * DAY_MS,             true },
        { "max_session_time",  KIND_DURATION,  FIELD(max_session_time_ms), 0, 1, 30 * DAY_MS,           true },
        { "max_session_bytes", KIND_U64,       FIELD(max_session_bytes), 0,   0, UINT64_C(1) << 60,      true },
        { "buffer_size",       KIND_U32,       FIELD(buffer_size), 0,         1024, 1024 * 1024,         true },
        { "socket_buffer",     KIND_U32,       FIELD(socket_buffer), 0,    0, 16 * 1024 * 1024,       true },
        { "drain_timeout",     KIND_DURATION,  FIELD(drain_timeout_ms), 0,    1, 300 * 1000,             true },
        { "log_level",         KIND_LOG_LEVEL, FIELD(log_level), 0,           0, 0,                      true },
        { "log_connection_rate", KIND_RATE,    FIELD(log_connection_rate_milli), 0, 1, UINT64_C(1000000000), true },
        { "log_connection_burst", KIND_U32,    FIELD(log_connection_burst), 0, 1, 1000000,                true },
        { "max_clients_per_source", KIND_U32,  FIELD(max_clients_per_source), 0, 0, CONFIG_MAX_CLIENTS_LIMIT, true },
        { "source_prefix_ipv4", KIND_U32,      FIELD(source_prefix_v4), 0,    0, 32,                     true },
        { "source_prefix_ipv6", KIND_U32,      FIELD(source_prefix_v6), 0,    0, 128,                    true },
        { "source_rate",       KIND_RATE,      FIELD(source_rate_milli), 0,   1, UINT64_C(1000000000),   true },
        { "source_burst",      KIND_U32,       FIELD(source_burst), 0,        1, 1000000,                true },
        { "source_block_time", KIND_DURATION,  FIELD(source_block_ms), 0,     1, DAY_MS,                 true },
        { "source_table_size", KIND_U32,       FIELD(source_table_size), 0,   CONFIG_SOURCE_TABLE_MIN, CONFIG_SOURCE_TABLE_MAX, true },
        { "allow",             KIND_CIDRS,     FIELD(allow), FIELD(n_allow), 0, CONFIG_MAX_CIDRS,     true },
        { "deny",              KIND_CIDRS,     FIELD(deny), FIELD(n_deny), 0, CONFIG_MAX_CIDRS,       true },
        { "source_limits_exempt", KIND_CIDRS,  FIELD(exempt), FIELD(n_exempt), 0, CONFIG_MAX_CIDRS,   true },
        { "log_addresses",     KIND_ADDR_MODE, FIELD(log_addresses), 0,       0, 0,                      true },
        { "log_hash_key_credential", KIND_CREDENTIAL, FIELD(log_hash_key_credential), 0, 1, CREDENTIAL_NAME_MAX, false },
        { "log_hash_key",      KIND_SECRET,    FIELD(log_hash_key), 0,        CONFIG_HASH_KEY_MIN, CONFIG_HASH_KEY_MAX, false },
};

const size_t config_n_keys = ELEMENTSOF(config_keys);

static const char *const address_modes[] = {
        [LOG_ADDRESSES_FULL] = "full", [LOG_ADDRESSES_PREFIX] = "prefix", [LOG_ADDRESSES_HASH] = "hash",
};

static const char *const level_names[] = {
        [LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void config_defaults(struct config *c) {
        /* memset first: padding and unused string bytes are zero, so two
         * equal configurations are equal byte for byte. */
        memset(c, 0, sizeof(*c));
        c->port = 7;
        c->n_listen = 1;
        snprintf(c->listen[0], CONFIG_ADDR_MAX, "::");
        c->backlog = 1024;
        c->max_clients = 256;
        c->idle_timeout_ms = 300 * 1000;
        c->write_timeout_ms = 30 * 1000;
        c->max_session_time_ms = 3600 * 1000;
        c->max_session_bytes = UINT64_C(1) << 30;
        c->buffer_size = 64 * 1024;
        c->drain_timeout_ms = 10 * 1000;
        c->log_level = LOG_INFO;
        /* At most 1000 + 100 * 30 = 4000 records in any 30 s: well below
         * what journald takes (10000 per 30 s by default, 20000 from the
         * service unit; tests/integration/test_units.py checks the margin). */
        c->log_connection_rate_milli = 100 * 1000;
        c->log_connection_burst = 1000;
        c->max_clients_per_source = 32;
        c->source_prefix_v4 = 32;
        c->source_prefix_v6 = 64;
        c->source_rate_milli = 20 * 1000;
        c->source_burst = 40;
        c->source_block_ms = 10 * 1000;
        c->source_table_size = 32768;
        /* Loopback: see source_limits_exempt in echo-mpserv.conf(5). */
        (void) cidr_parse("127.0.0.0/8", &c->exempt[c->n_exempt++]);
        (void) cidr_parse("::1", &c->exempt[c->n_exempt++]);
        c->log_addresses = LOG_ADDRESSES_FULL;
}

const char *config_log_level_name(int level) {
        if (level < 0 || (size_t) level >= ELEMENTSOF(level_names) || !level_names[level])
                return "unknown";
        return level_names[level];
}

int config_log_level_from_name(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (level_names[i] && strcmp(level_names[i], name) == 0)
                        return (int) i;
        return -EINVAL;
}

const char *config_log_addresses_name(int mode) {
        if (mode < 0 || (size_t) mode >= ELEMENTSOF(address_modes))
                return "unknown";
        return address_modes[mode];
}

int config_log_addresses_from_name(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(address_modes); i++)
                if (strcmp(address_modes[i], name) == 0)
                        return (int) i;
        return -EINVAL;
}

