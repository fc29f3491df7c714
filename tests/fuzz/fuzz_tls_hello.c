/* libFuzzer target over the ClientHello parser (src/core/tls_hello.c) and the
 * SNI choice that follows it in a tls-passthrough session.
 *
 * The input is what a client sends first. The gateway parses everything
 * read so far after each read, so the parser is run on the whole input and
 * on prefixes of it, and abort() is called when a check fails:
 * - a decision is final: once a prefix is decided (SNI, NO_SNI, NOT_TLS),
 *   every longer input gets the same decision and the same name;
 * - the whole input is decided once it reaches ZG_TLS_HELLO_MAX bytes;
 * - NOT_TLS comes with a reason, and a name comes only with SNI;
 * - a name is 1..253 bytes of [a-z0-9._-] without an empty label;
 * - the pattern zg_tls_sni_pick chooses for it matches it. */
#include "core/tls_hello.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "fuzz_tls_hello.c:%d: check failed: %s\n", __LINE__,     \
              #c);                                                             \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static void check_name(const zg_tls_hello_t *h) {
  size_t label = 0;
  CHECK(h->name_len >= 1 && h->name_len <= ZG_TLS_NAME_MAX);
  CHECK(strlen(h->name) == h->name_len);
  for (size_t i = 0; i < h->name_len; i++) {
    char c = h->name[i];
    if (c == '.') {
      CHECK(label > 0);
      label = 0;
      continue;
    }
    CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_');
    label++;
  }
  CHECK(label > 0);
}

static void check_pick(const char *name) {
  static const char *const pats[] = {"*.example.com", "a.example.com", NULL,
                                     "*.b.example.com"};
  size_t n = strlen(name);
  size_t i = zg_tls_sni_pick(pats, 4, name);
  CHECK(i < 4);
  if (pats[i] && pats[i][0] == '*') {
    size_t sl = strlen(pats[i] + 1);
    CHECK(n > sl && !memcmp(name + n - sl, pats[i] + 1, sl));
  } else if (pats[i]) {
    CHECK(!strcmp(pats[i], name));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  zg_tls_hello_t whole, part;
  zg_tls_hello_result_t rc, prc;
  /* A copy of exactly `size` bytes: ASan sees any read past the end. */
  uint8_t *buf = malloc(size ? size : 1);
  size_t cuts[4];
  if (!buf)
    return 0;
  memcpy(buf, data, size);
  rc = zg_tls_hello_parse(buf, size, &whole);
  CHECK(rc == ZG_TLS_HELLO_NEED_MORE || rc == ZG_TLS_HELLO_SNI ||
        rc == ZG_TLS_HELLO_NO_SNI || rc == ZG_TLS_HELLO_NOT_TLS);
  if (size >= ZG_TLS_HELLO_MAX)
    CHECK(rc != ZG_TLS_HELLO_NEED_MORE);
  if (rc == ZG_TLS_HELLO_NOT_TLS)
    CHECK(whole.why != NULL);
  if (rc == ZG_TLS_HELLO_SNI) {
    check_name(&whole);
    check_pick(whole.name);
  } else {
    CHECK(whole.name_len == 0 && whole.name[0] == '\0');
  }
  cuts[0] = size / 2;
  cuts[1] = size ? size - 1 : 0;
  cuts[2] = size > 5 ? 5 : size;
  cuts[3] = size > 0 ? (data[0] * 131u) % size : 0;
  for (size_t k = 0; k < 4; k++) {
    prc = zg_tls_hello_parse(buf, cuts[k], &part);
    if (prc == ZG_TLS_HELLO_NEED_MORE)
      continue;
    CHECK(prc == rc);
    CHECK(part.name_len == whole.name_len);
    CHECK(!strcmp(part.name, whole.name));
  }
  free(buf);
  return 0;
}
