/* A connected TCP pair over 127.0.0.1 for unit tests that need real TCP
 * behaviour (resets, half-close, buffer limits) rather than a socketpair. */
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test.h"

static inline void tcp_pair(int *client, int *server) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int l = socket(AF_INET, SOCK_STREAM, 0);

        ASSERT(l >= 0);
        ASSERT(bind(l, (struct sockaddr *) &a, sizeof(a)) == 0);
        ASSERT(listen(l, 1) == 0);
        ASSERT(getsockname(l, (struct sockaddr *) &a, &len) == 0);
        *client = socket(AF_INET, SOCK_STREAM, 0);
        ASSERT(*client >= 0);
        ASSERT(connect(*client, (struct sockaddr *) &a, sizeof(a)) == 0);
        *server = accept4(l, NULL, NULL, SOCK_NONBLOCK);
        ASSERT(*server >= 0);
        close(l);
}
