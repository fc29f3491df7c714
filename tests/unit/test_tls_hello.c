/* Unit tests for the ClientHello parser and SNI choice
 * (src/core/tls_hello.h): real ClientHellos from openssl s_client,
 * the same cut at every byte and spread over records of every size,
 * ClientHellos built here with each field wrong in turn, not-TLS input,
 * and the ranking of sni patterns. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tls_hello.h"

#include "tls_hello_fixtures.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static zg_tls_hello_result_t parse(const uint8_t *p, size_t n,
                                   zg_tls_hello_t *h) {
  return zg_tls_hello_parse(p, n, h);
}

/* ---- building ClientHellos -------------------------------------------- */

typedef struct {
  uint8_t b[ZG_TLS_HELLO_MAX * 8];
  size_t n;
} bytes_t;

static void put(bytes_t *o, const void *p, size_t n) {
  assert_true(o->n + n <= sizeof(o->b));
  if (n > 0) /* memcpy(x, NULL, 0) is undefined */
    memcpy(o->b + o->n, p, n);
  o->n += n;
}

static void put8(bytes_t *o, unsigned v) {
  uint8_t c = (uint8_t)v;
  put(o, &c, 1);
}

static void put16(bytes_t *o, unsigned v) {
  put8(o, v >> 8);
  put8(o, v);
}

static void put24(bytes_t *o, size_t v) {
  put8(o, (unsigned)(v >> 16));
  put16(o, (unsigned)v & 0xffff);
}

/* One extension. */
static void ext(bytes_t *o, unsigned type, const void *data, size_t n) {
  put16(o, type);
  put16(o, (unsigned)n);
  put(o, data, n);
}

/* A server_name extension with the given (type, name) entries. */
static void sni_ext(bytes_t *o, const unsigned *types, const char *const *names,
                    size_t n) {
  bytes_t list = {.n = 0};
  bytes_t data = {.n = 0};
  for (size_t i = 0; i < n; i++) {
    put8(&list, types[i]);
    put16(&list, (unsigned)strlen(names[i]));
    put(&list, names[i], strlen(names[i]));
  }
  put16(&data, (unsigned)list.n);
  put(&data, list.b, list.n);
  ext(o, 0, data.b, data.n);
}

/* The ClientHello handshake message (header included) around `exts`
 * (NULL: no extensions block at all). */
static void hello_msg(bytes_t *o, const bytes_t *exts) {
  static const uint8_t random[32] = {1, 2, 3};
  size_t body = 2 + 32 + 1 + 2 + 2 + 2 + (exts ? 2 + exts->n : 0);
  put8(o, 1);
  put24(o, body);
  put16(o, 0x0303);
  put(o, random, sizeof(random));
  put8(o, 0);  /* session id */
  put16(o, 2); /* cipher suites */
  put16(o, 0x1301);
  put8(o, 1); /* compression methods */
  put8(o, 0);
  if (exts) {
    put16(o, (unsigned)exts->n);
    put(o, exts->b, exts->n);
  }
}

/* `msg` in handshake records of at most `frag` bytes each. */
static void records(bytes_t *o, const uint8_t *msg, size_t n, size_t frag) {
  for (size_t at = 0; at < n; at += frag) {
    size_t k = n - at < frag ? n - at : frag;
    put8(o, 22);
    put16(o, 0x0301);
    put16(o, (unsigned)k);
    put(o, msg + at, k);
  }
}

/* A one-record ClientHello with a host_name `name` and a few other
 * extensions around it. */
static void hello_with_name(bytes_t *o, const char *name) {
  static const uint8_t alpn[] = {0, 3, 2, 'h', '2'};
  unsigned t = 0;
  bytes_t exts = {.n = 0}, msg = {.n = 0};
  ext(&exts, 16, alpn, sizeof(alpn));
  sni_ext(&exts, &t, &name, 1);
  ext(&exts, 23, NULL, 0);
  hello_msg(&msg, &exts);
  records(o, msg.b, msg.n, 16384);
}

/* ---- real ClientHellos ------------------------------------------------- */

static void test_real_hello(void **state) {
  zg_tls_hello_t h;
  (void)state;
  assert_int_equal(parse(real_hello_sni, sizeof(real_hello_sni), &h),
                   ZG_TLS_HELLO_SNI);
  assert_string_equal(h.name, "a.example.com");
  assert_int_equal(h.name_len, 13);
  assert_int_equal(parse(real_hello_no_sni, sizeof(real_hello_no_sni), &h),
                   ZG_TLS_HELLO_NO_SNI);
}

static void test_real_hello_cut_at_every_byte(void **state) {
  zg_tls_hello_t h;
  (void)state;
  for (size_t n = 0; n < sizeof(real_hello_sni); n++) {
    uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees overreads */
    memcpy(copy, real_hello_sni, n);
    if (parse(copy, n, &h) != ZG_TLS_HELLO_NEED_MORE)
      fail_msg("cut at %zu bytes: not NEED_MORE", n);
    free(copy);
  }
}

/* The real message re-framed in records of every size from 1 byte, and each
 * of those cut at every byte. */
static void test_real_hello_over_records(void **state) {
  const uint8_t *msg = real_hello_sni + 5;
  size_t msg_len = sizeof(real_hello_sni) - 5;
  zg_tls_hello_t h;
  (void)state;
  for (size_t frag = 1; frag <= msg_len; frag++) {
    bytes_t *o = calloc(1, sizeof(*o));
    records(o, msg, msg_len, frag);
    for (size_t n = 0; n < o->n; n++) {
      uint8_t *copy = malloc(n ? n : 1);
      zg_tls_hello_result_t rc;
      memcpy(copy, o->b, n);
      rc = parse(copy, n, &h);
      free(copy);
      /* Records of 1 byte take 6 bytes per message byte: beyond the cap. */
      if (n >= ZG_TLS_HELLO_MAX)
        assert_int_equal(rc, ZG_TLS_HELLO_NOT_TLS);
      else if (rc != ZG_TLS_HELLO_NEED_MORE)
        fail_msg("records of %zu, cut at %zu: %d", frag, n, rc);
    }
    assert_int_equal(parse(o->b, o->n, &h), ZG_TLS_HELLO_SNI);
    assert_string_equal(h.name, "a.example.com");
    free(o);
  }
}

/* What follows the ClientHello (a ChangeCipherSpec record, early data) is
 * the next protocol step, not the parser's business. */
static void test_bytes_after_hello(void **state) {
  static const uint8_t ccs[] = {20, 3, 3, 0, 1, 1};
  bytes_t o = {.n = 0};
  zg_tls_hello_t h;
  (void)state;
  put(&o, real_hello_sni, sizeof(real_hello_sni));
  put(&o, ccs, sizeof(ccs));
  put(&o, "GET / HTTP/1.1\r\n", 16);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_SNI);
  assert_string_equal(h.name, "a.example.com");
}

/* Every byte flipped in turn: never a crash, never a name other than the
 * real one or nothing. */
static void test_real_hello_every_byte_flipped(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(real_hello_sni); i++) {
    for (unsigned x = 1; x < 256; x <<= 1) {
      uint8_t *copy = malloc(sizeof(real_hello_sni));
      zg_tls_hello_t h;
      memcpy(copy, real_hello_sni, sizeof(real_hello_sni));
      copy[i] ^= (uint8_t)x;
      if (parse(copy, sizeof(real_hello_sni), &h) == ZG_TLS_HELLO_SNI)
        assert_true(h.name_len == strlen(h.name) && h.name_len > 0);
      else
        assert_int_equal(h.name_len, 0);
      free(copy);
    }
  }
}

/* ---- not TLS ------------------------------------------------------------- */

static void test_not_tls_decided_early(void **state) {
  static const char *const inputs[] = {
      "GET / HTTP/1.1\r\n", "G",        "\x80",
      "SSH-2.0-OpenSSH",    "\x16\x02", "\x16\x03\x05"};
  zg_tls_hello_t h;
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(inputs); i++) {
    assert_int_equal(parse((const uint8_t *)inputs[i], strlen(inputs[i]), &h),
                     ZG_TLS_HELLO_NOT_TLS);
    assert_non_null(h.why);
  }
  assert_int_equal(parse((const uint8_t *)"", 0, &h), ZG_TLS_HELLO_NEED_MORE);
}

/* SSLv2-compatible CLIENT-HELLO (RFC 5246 appendix E.2): not supported. */
static void test_sslv2_hello(void **state) {
  static const uint8_t v2[] = {0x80, 0x2e, 0x01, 0x03, 0x01, 0x00,
                               0x15, 0x00, 0x00, 0x00, 0x10};
  zg_tls_hello_t h;
  (void)state;
  assert_int_equal(parse(v2, sizeof(v2), &h), ZG_TLS_HELLO_NOT_TLS);
  assert_string_equal(h.why, "SSLv2-compatible ClientHello");
}

static void test_bad_records(void **state) {
  zg_tls_hello_t h;
  bytes_t o;
  (void)state;
  /* length 0 */
  o.n = 0;
  put(&o, "\x16\x03\x01\x00\x00", 5);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_NOT_TLS);
  /* longer than 2^14 */
  o.n = 0;
  put(&o, "\x16\x03\x01\x40\x01", 5);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_NOT_TLS);
  /* a ServerHello, not a ClientHello */
  o.n = 0;
  put(&o, "\x16\x03\x01\x00\x04\x02", 6);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_NOT_TLS);
  /* a message that could never fit: refused at its header */
  o.n = 0;
  put(&o, "\x16\x03\x01\x40\x00\x01\x00\x40\x00", 9);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_NOT_TLS);
  assert_string_equal(h.why, "ClientHello too large");
  /* the largest that fits is still waited for */
  o.n = 0;
  put(&o, "\x16\x03\x01\x40\x00\x01\x00\x3f\xfc", 9);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_NEED_MORE);
  /* an alert record between two fragments of the ClientHello */
  o.n = 0;
  records(&o, real_hello_sni + 5, 10, 10);
  put(&o, "\x15\x03\x03\x00\x02\x02\x28", 7);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_NOT_TLS);
}

/* ---- built ClientHellos ------------------------------------------------ */

static zg_tls_hello_result_t parse_exts(const bytes_t *exts,
                                        zg_tls_hello_t *h) {
  static bytes_t msg, o;
  msg.n = o.n = 0;
  hello_msg(&msg, exts);
  records(&o, msg.b, msg.n, 16384);
  return parse(o.b, o.n, h);
}

static void test_names(void **state) {
  static const struct {
    const char *name;
    const char *want; /* NULL: refused */
  } cases[] = {
      {"b.example.com", "b.example.com"},
      {"WWW.Example.COM", "www.example.com"},
      {"x.example.com.", "x.example.com"},
      {"a_b-c.example", "a_b-c.example"},
      {"localhost", "localhost"},
      {"10.0.0.1", "10.0.0.1"},
      {"", NULL},
      {".", NULL},
      {".example.com", NULL},
      {"a..example.com", NULL},
      {"a.example.com..", NULL},
      {"a b.example.com", NULL},
      {"a.example.com\x01", NULL},
      {"caf\xc3\xa9.example", NULL},
      {"a/b", NULL},
      {"*.example.com", NULL},
  };
  zg_tls_hello_t h;
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    bytes_t o = {.n = 0};
    hello_with_name(&o, cases[i].name);
    if (cases[i].want) {
      assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_SNI);
      assert_string_equal(h.name, cases[i].want);
    } else if (parse(o.b, o.n, &h) != ZG_TLS_HELLO_NOT_TLS) {
      fail_msg("name '%s' accepted", cases[i].name);
    }
  }
}

static void test_name_lengths(void **state) {
  char name[300];
  zg_tls_hello_t h;
  bytes_t o;
  (void)state;
  /* 63-byte labels are fine, 64 are not */
  memset(name, 'a', 63);
  strcpy(name + 63, ".example");
  o.n = 0;
  hello_with_name(&o, name);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_SNI);
  memset(name, 'a', 64);
  strcpy(name + 64, ".example");
  o.n = 0;
  hello_with_name(&o, name);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_NOT_TLS);
  /* 253 characters in all, and 254 */
  for (size_t i = 0; i < 253; i++)
    name[i] = i % 2 ? '.' : 'a';
  name[252] = 'a';
  name[253] = '\0';
  o.n = 0;
  hello_with_name(&o, name);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_SNI);
  assert_int_equal(h.name_len, 253);
  name[253] = '.'; /* a trailing dot is forgiven */
  name[254] = '\0';
  o.n = 0;
  hello_with_name(&o, name);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_SNI);
  name[254] = 'a';
  name[255] = '\0';
  o.n = 0;
  hello_with_name(&o, name);
  assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_NOT_TLS);
}

static void test_server_name_lists(void **state) {
  zg_tls_hello_t h;
  bytes_t e;
  (void)state;
  {
    /* two host_names: RFC 6066 forbids it */
    unsigned t[] = {0, 0};
    const char *n[] = {"a.example.com", "b.example.com"};
    e.n = 0;
    sni_ext(&e, t, n, 2);
    assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NOT_TLS);
  }
  {
    /* another name type beside the host_name: skipped */
    unsigned t[] = {7, 0, 9};
    const char *n[] = {"other", "a.example.com", "x"};
    e.n = 0;
    sni_ext(&e, t, n, 3);
    assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_SNI);
    assert_string_equal(h.name, "a.example.com");
  }
  {
    /* only other name types: no SNI */
    unsigned t[] = {5};
    const char *n[] = {"a.example.com"};
    e.n = 0;
    sni_ext(&e, t, n, 1);
    assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NO_SNI);
  }
  {
    /* two server_name extensions */
    unsigned t[] = {0};
    const char *n[] = {"a.example.com"};
    e.n = 0;
    sni_ext(&e, t, n, 1);
    sni_ext(&e, t, n, 1);
    assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NOT_TLS);
  }
  /* an empty extension, an empty list */
  e.n = 0;
  ext(&e, 0, NULL, 0);
  assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NOT_TLS);
  e.n = 0;
  ext(&e, 0, "\x00\x00", 2);
  assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NOT_TLS);
  /* list length one more, one less than the extension holds */
  e.n = 0;
  ext(&e, 0, "\x00\x05\x00\x00\x01\x61", 6);
  assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NOT_TLS);
  e.n = 0;
  ext(&e, 0, "\x00\x03\x00\x00\x01\x61", 6);
  assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NOT_TLS);
  e.n = 0;
  ext(&e, 0, "\x00\x04\x00\x00\x01\x61", 6);
  assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_SNI);
  assert_string_equal(h.name, "a");
  /* a name longer than its list */
  e.n = 0;
  ext(&e, 0, "\x00\x04\x00\x00\x02\x61", 6);
  assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NOT_TLS);
  /* no extensions block at all (TLS 1.2), an empty one, no server_name */
  assert_int_equal(parse_exts(NULL, &h), ZG_TLS_HELLO_NO_SNI);
  e.n = 0;
  assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NO_SNI);
  ext(&e, 23, NULL, 0);
  assert_int_equal(parse_exts(&e, &h), ZG_TLS_HELLO_NO_SNI);
}

/* Each length field of a built ClientHello one more and one less than
 * right: refused or waited for (a longer message), never read past. */
static void test_lengths_off_by_one(void **state) {
  bytes_t exts = {.n = 0}, msg = {.n = 0}, o = {.n = 0};
  const char *name = "a.example.com";
  unsigned t = 0;
  /* offsets in the record: 6 message length (3),
   * 43 session id (1), 44 suites (2), 48 compression (1), 50 extensions
   * (2), 52+4 server_name extension (2) ... */
  struct {
    size_t at, width;
  } fields[] = {{6, 3},  {43, 1}, {44, 2}, {48, 1},
                {50, 2}, {54, 2}, {56, 2}, {59, 2}};
  (void)state;
  sni_ext(&exts, &t, &name, 1);
  hello_msg(&msg, &exts);
  records(&o, msg.b, msg.n, 16384);
  for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
    for (int d = -1; d <= 1; d += 2) {
      uint8_t copy[512];
      size_t at = fields[i].at + fields[i].width - 1;
      zg_tls_hello_t h;
      zg_tls_hello_result_t rc;
      memcpy(copy, o.b, o.n);
      copy[at] = (uint8_t)(copy[at] + d);
      rc = parse(copy, o.n, &h);
      if (rc == ZG_TLS_HELLO_SNI)
        fail_msg("field at %zu %+d: still read as SNI '%s'", fields[i].at, d,
                 h.name);
    }
  }
  {
    zg_tls_hello_t h;
    assert_int_equal(parse(o.b, o.n, &h), ZG_TLS_HELLO_SNI);
  }
}

static void test_hello_at_the_cap(void **state) {
  bytes_t *o = calloc(1, sizeof(*o)), *exts = calloc(1, sizeof(*exts));
  bytes_t *msg = calloc(1, sizeof(*msg));
  static uint8_t pad[16384];
  const char *name = "big.example.com";
  unsigned t = 0;
  zg_tls_hello_t h;
  (void)state;
  sni_ext(exts, &t, &name, 1);
  /* padding (RFC 7685) up to a message of exactly 16384 bytes */
  ext(exts, 21, pad, 16384 - 47 - exts->n - 4);
  hello_msg(msg, exts);
  assert_int_equal(msg->n, 16384);
  records(o, msg->b, msg->n, 16384);
  assert_int_equal(o->n, ZG_TLS_HELLO_MAX);
  assert_int_equal(parse(o->b, o->n, &h), ZG_TLS_HELLO_SNI);
  assert_string_equal(h.name, "big.example.com");
  /* the same in two records needs 5 bytes more than the cap */
  o->n = 0;
  records(o, msg->b, msg->n, 8192);
  assert_int_equal(parse(o->b, ZG_TLS_HELLO_MAX - 1, &h),
                   ZG_TLS_HELLO_NEED_MORE);
  assert_int_equal(parse(o->b, ZG_TLS_HELLO_MAX, &h), ZG_TLS_HELLO_NOT_TLS);
  free(o);
  free(exts);
  free(msg);
}

/* ---- choosing by SNI --------------------------------------------------- */

static void test_pick(void **state) {
  const char *const pats[] = {"*.example.com",   "a.example.com",
                              "*.b.example.com", NULL,
                              "x.b.example.com", "*.c.b.example.com"};
  const char *const no_default[] = {"a.example.com", "*.example.com"};
  (void)state;
  assert_int_equal(zg_tls_sni_pick(pats, 6, "a.example.com"), 1);
  assert_int_equal(zg_tls_sni_pick(pats, 6, "x.b.example.com"), 4);
  assert_int_equal(zg_tls_sni_pick(pats, 6, "y.b.example.com"), 2);
  assert_int_equal(zg_tls_sni_pick(pats, 6, "z.y.b.example.com"), 2);
  assert_int_equal(zg_tls_sni_pick(pats, 6, "q.c.b.example.com"), 5);
  assert_int_equal(zg_tls_sni_pick(pats, 6, "c.b.example.com"), 2);
  assert_int_equal(zg_tls_sni_pick(pats, 6, "zz.example.com"), 0);
  /* the apex is not under its wildcard */
  assert_int_equal(zg_tls_sni_pick(pats, 6, "example.com"), 3);
  assert_int_equal(zg_tls_sni_pick(pats, 6, "other.org"), 3);
  assert_int_equal(zg_tls_sni_pick(pats, 6, NULL), 3);
  assert_int_equal(zg_tls_sni_pick(no_default, 2, "other.org"), ZG_SNI_NONE);
  assert_int_equal(zg_tls_sni_pick(no_default, 2, NULL), ZG_SNI_NONE);
  assert_int_equal(zg_tls_sni_pick(no_default, 2, "b.example.com"), 1);
  assert_int_equal(zg_tls_sni_pick(no_default, 0, "a.example.com"),
                   ZG_SNI_NONE);
  /* "xexample.com" does not end in ".example.com" */
  assert_int_equal(zg_tls_sni_pick(no_default, 2, "xexample.com"), ZG_SNI_NONE);
}

/* The server_name extension's data alone, as OpenSSL's ClientHello
 * callback hands it over. */
static void test_sni_extension_alone(void **state) {
  static const uint8_t ok[] = {0x00, 0x0e, 0x00, 0x00, 0x0b, 'A', '.', 'e',
                               'x',  'a',  'm',  'p',  'l',  'e', '.', '.'};
  static const uint8_t other_type[] = {0x00, 0x04, 0x01, 0x00, 0x01, 'x'};
  static const uint8_t short_list[] = {0x00, 0x0f, 0x00, 0x00, 0x0b, 'a'};
  zg_tls_hello_t out;
  (void)state;
  /* "A.example..": two trailing dots are no host name */
  assert_int_equal(zg_tls_sni_ext_parse(ok, 16, &out), ZG_TLS_HELLO_NOT_TLS);
  /* "A.example.": lowercase, without the trailing dot */
  {
    uint8_t one_dot[15];
    memcpy(one_dot, ok, 15);
    one_dot[1] = 0x0d;
    one_dot[4] = 0x0a;
    assert_int_equal(zg_tls_sni_ext_parse(one_dot, 15, &out), ZG_TLS_HELLO_SNI);
    assert_string_equal(out.name, "a.example");
  }
  assert_int_equal(zg_tls_sni_ext_parse(other_type, sizeof(other_type), &out),
                   ZG_TLS_HELLO_NO_SNI);
  assert_int_equal(zg_tls_sni_ext_parse(short_list, sizeof(short_list), &out),
                   ZG_TLS_HELLO_NOT_TLS);
  assert_int_equal(zg_tls_sni_ext_parse(ok, 0, &out), ZG_TLS_HELLO_NOT_TLS);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_real_hello),
      cmocka_unit_test(test_sni_extension_alone),
      cmocka_unit_test(test_real_hello_cut_at_every_byte),
      cmocka_unit_test(test_real_hello_over_records),
      cmocka_unit_test(test_bytes_after_hello),
      cmocka_unit_test(test_real_hello_every_byte_flipped),
      cmocka_unit_test(test_not_tls_decided_early),
      cmocka_unit_test(test_sslv2_hello),
      cmocka_unit_test(test_bad_records),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_name_lengths),
      cmocka_unit_test(test_server_name_lists),
      cmocka_unit_test(test_lengths_off_by_one),
      cmocka_unit_test(test_hello_at_the_cap),
      cmocka_unit_test(test_pick),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
