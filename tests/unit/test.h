/* A minimal test harness: each test file is one executable; an assertion
 * failure prints where and why, and aborts (meson counts it as a failure). */
#pragma once

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(cond)                                                                         \
        do {                                                                                 \
                if (!(cond)) {                                                               \
                        fprintf(stderr, "%s:%d: %s: assertion failed: %s\n", __FILE__,       \
                                __LINE__, __func__, #cond);                                  \
                        abort();                                                             \
                }                                                                            \
        } while (0)

#define ASSERT_INT(a, op, b)                                                                 \
        do {                                                                                 \
                long long _a = (long long) (a), _b = (long long) (b);                        \
                if (!(_a op _b)) {                                                           \
                        fprintf(stderr, "%s:%d: %s: %s %s %s failed (%lld vs %lld)\n",       \
                                __FILE__, __LINE__, __func__, #a, #op, #b, _a, _b);          \
                        abort();                                                             \
                }                                                                            \
        } while (0)

#define ASSERT_STR_CONTAINS(hay, needle)                                                     \
        do {                                                                                 \
                const char *_h = (hay), *_n = (needle);                                      \
                if (!_h || !strstr(_h, _n)) {                                                \
                        fprintf(stderr, "%s:%d: %s: \"%s\" not found in \"%s\"\n", __FILE__, \
                                __LINE__, __func__, _n, _h ? _h : "(null)");                 \
                        abort();                                                             \
                }                                                                            \
        } while (0)

#define RUN(test)                                                                            \
        do {                                                                                 \
                fprintf(stderr, "-- %s\n", #test);                                           \
                test();                                                                      \
        } while (0)
