#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "logaddr.h"
#include "siphash.h"

static int mode = LOG_ADDRESSES_FULL;
static unsigned prefix_v4 = 32, prefix_v6 = 64;
static uint8_t key[SIPHASH_KEY_SIZE];
static bool random_key_made;

int logaddr_configure(const struct config *c) {
        mode = c->log_addresses;
        prefix_v4 = c->source_prefix_v4;
        prefix_v6 = c->source_prefix_v6;
        if (c->log_hash_key[0]) {
                /* 128 bits from the configured text, however long it is. */
                static const uint8_t k0[SIPHASH_KEY_SIZE] = { 0 }, k1[SIPHASH_KEY_SIZE] = { 1 };
                size_t len = strlen(c->log_hash_key);
                uint64_t h0 = siphash24(c->log_hash_key, len, k0), h1 = siphash24(c->log_hash_key, len, k1);
                memcpy(key, &h0, 8);
                memcpy(key + 8, &h1, 8);
                random_key_made = false;
        } else if (!random_key_made) {
                if (getrandom(key, sizeof(key), 0) != (ssize_t) sizeof(key))
                        return -EIO;
                random_key_made = true;
        }
        return 0;
}

bool logaddr_full(void) {
        return mode == LOG_ADDRESSES_FULL;
}

static const char *hashed(const struct cidr *p, char buf[static LOGADDR_MAX]) {
        snprintf(buf, LOGADDR_MAX, "hash:%016" PRIx64, cidr_hash(p, key));
        return buf;
}

const char *logaddr_source(const struct cidr *source, char buf[static LOGADDR_MAX]) {
        return mode == LOG_ADDRESSES_HASH ? hashed(source, buf) : cidr_format(source, buf);
}

const char *logaddr_client(const union sockaddr_any *peer, char buf[static LOGADDR_MAX]) {
        struct in6_addr a;
        struct cidr p;

        if (!cidr_address_of(peer, &a)) {
                snprintf(buf, LOGADDR_MAX, "?");
                return buf;
        }
        p = cidr_source(&a, mode == LOG_ADDRESSES_PREFIX ? prefix_v4 : 32, mode == LOG_ADDRESSES_PREFIX ? prefix_v6 : 128);
        return mode == LOG_ADDRESSES_HASH ? hashed(&p, buf) : cidr_format(&p, buf);
}
