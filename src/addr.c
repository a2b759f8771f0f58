#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

int addr_host_port(const union sockaddr_any *a, char host[static ADDR_HOST_MAX], uint16_t *port) {
        if (a->sa.sa_family == AF_INET) {
                inet_ntop(AF_INET, &a->in.sin_addr, host, ADDR_HOST_MAX);
                *port = ntohs(a->in.sin_port);
                return 0;
        }
        if (a->sa.sa_family == AF_INET6) {
                if (IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr))
                        inet_ntop(AF_INET, &a->in6.sin6_addr.s6_addr[12], host, ADDR_HOST_MAX);
                else
                        inet_ntop(AF_INET6, &a->in6.sin6_addr, host, ADDR_HOST_MAX);
                *port = ntohs(a->in6.sin6_port);
                return 0;
        }
        snprintf(host, ADDR_HOST_MAX, "?");
        *port = 0;
        return -EAFNOSUPPORT;
}

const char *addr_to_string(const union sockaddr_any *a, char buf[static ADDR_STR_MAX]) {
        char host[ADDR_HOST_MAX];
        uint16_t port;

        addr_host_port(a, host, &port);
        snprintf(buf, ADDR_STR_MAX, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
        return buf;
}
