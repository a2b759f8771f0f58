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
static bool key_set;

int logaddr_set_key(const void *material, size_t len) {
        if (len > 0) {
                /* 128 bits from the material, however long it is. The same
                 * bytes give the same key whether they came from the file
                 * or from a credential. */
                static const uint8_t k0[SIPHASH_KEY_SIZE] = { 0 }, k1[SIPHASH_KEY_SIZE] = { 1 };
                uint64_t h0 = siphash24(material, len, k0), h1 = siphash24(material, len, k1);
                memcpy(key, &h0, 8);
                memcpy(key + 8, &h1, 8);
        } else if (getrandom(key, sizeof(key), 0) != (ssize_t) sizeof(key)) {
                return -EIO;
        }
        key_set = true;
        return 0;
}

int logaddr_configure(const struct config *c) {
        mode = c->log_addresses;
        prefix_v4 = c->source_prefix_v4;
        prefix_v6 = c->source_prefix_v6;
        /* Never hash with the all-zero key anyone could recompute. */
        return key_set ? 0 : logaddr_set_key(NULL, 0);
}

void logaddr_tighten(int log_addresses, unsigned v4, unsigned v6) {
        if (log_addresses > mode && log_addresses <= LOG_ADDRESSES_HASH)
                mode = log_addresses;
        if (v4 < prefix_v4)
                prefix_v4 = v4;
        if (v6 < prefix_v6)
                prefix_v6 = v6;
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
