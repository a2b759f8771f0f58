/* The rule for the listen list, stated once for the daemon binding its own
 * sockets (listen.c) and for the generator writing the socket unit's
 * drop-in (dropin.c), so that both serve the same clients. Addresses are
 * compared parsed, never as text: "::", "0::0" and "0:0:0:0:0:0:0:0" are
 * one address. */
#include <arpa/inet.h>
#include <string.h>

#include "config.h"

bool config_listen_is_ipv4(const char *address) {
        struct in_addr a;

        return inet_pton(AF_INET, address, &a) == 1;
}

bool config_listen_any_ipv4(const struct config *c) {
        for (uint32_t i = 0; i < c->n_listen; i++)
                if (config_listen_is_ipv4(c->listen[i]))
                        return true;
        return false;
}

bool config_listen_dual_stack(const struct config *c, uint32_t i) {
        struct in6_addr a;

        return inet_pton(AF_INET6, c->listen[i], &a) == 1 && IN6_IS_ADDR_UNSPECIFIED(&a) &&
               !config_listen_any_ipv4(c);
}

bool config_listen_same(const char *a, const char *b) {
        unsigned char x[sizeof(struct in6_addr)], y[sizeof(struct in6_addr)];

        if (inet_pton(AF_INET, a, x) == 1)
                return inet_pton(AF_INET, b, y) == 1 && memcmp(x, y, sizeof(struct in_addr)) == 0;
        return inet_pton(AF_INET6, a, x) == 1 && inet_pton(AF_INET6, b, y) == 1 && memcmp(x, y, sizeof(x)) == 0;
}
