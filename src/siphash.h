/* SipHash-2-4 (Aumasson and Bernstein): a keyed 64-bit hash. Used where an
 * attacker chooses the input: the per-source table (so crafted addresses
 * cannot pile into one bucket) and hashed client addresses in logs. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SIPHASH_KEY_SIZE 16

uint64_t siphash24(const void *data, size_t len, const uint8_t key[static SIPHASH_KEY_SIZE]);
