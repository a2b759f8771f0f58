#include <arpa/inet.h>

#include "addr.h"
#include "test.h"

static void test_formats(void) {
        union sockaddr_any a = { 0 };
        char buf[ADDR_STR_MAX], host[ADDR_HOST_MAX];
        uint16_t port;

        a.in.sin_family = AF_INET;
        a.in.sin_port = htons(7);
        inet_pton(AF_INET, "192.0.2.1", &a.in.sin_addr);
        ASSERT(strcmp(addr_to_string(&a, buf), "192.0.2.1:7") == 0);

        memset(&a, 0, sizeof(a));
        a.in6.sin6_family = AF_INET6;
        a.in6.sin6_port = htons(65535);
        inet_pton(AF_INET6, "2001:db8::1", &a.in6.sin6_addr);
        ASSERT(strcmp(addr_to_string(&a, buf), "[2001:db8::1]:65535") == 0);

        /* A dual-stack listener reports IPv4 clients as mapped addresses. */
        inet_pton(AF_INET6, "::ffff:198.51.100.7", &a.in6.sin6_addr);
        ASSERT(strcmp(addr_to_string(&a, buf), "198.51.100.7:65535") == 0);
        ASSERT_INT(addr_host_port(&a, host, &port), ==, 0);
        ASSERT(strcmp(host, "198.51.100.7") == 0 && port == 65535);

        a.sa.sa_family = AF_UNIX;
        ASSERT_INT(addr_host_port(&a, host, &port), <, 0);
        ASSERT(strcmp(addr_to_string(&a, buf), "?:0") == 0);
}

int main(void) {
        RUN(test_formats);
        return 0;
}
