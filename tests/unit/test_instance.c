/* Unit tests for instance decoding (include/zkgate/instance.h) against the
 * registry formats in REGISTRY-FORMATS.md: every format that must decode,
 * and garbage that must be refused with a reason. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zkgate/error.h"
#include "zkgate/instance.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* A child name that is not host:port, so that a decoder cannot fall back
 * on it. */
#define CHILD "instance0000000009"

/* The Curator fixture from REGISTRY-FORMATS.md, verbatim. */
static const char curator_json[] =
    "{\"name\":\"cloud-provider-payment\","
    "\"id\":\"41d739e4-2452-4137-bfb2-c0cf75d5e802\",\n"
    " \"address\":\"localhost\",\"port\":8004,\"sslPort\":null,\n"
    " \"payload\":{\"@class\":\"org.springframework.cloud.zookeeper.discovery."
    "ZookeeperInstance\",\n"
    "            "
    "\"id\":\"application-1\",\"name\":\"cloud-provider-payment\",\n"
    "            \"metadata\":{\"instance_status\":\"UP\"}},\n"
    " \"registrationTimeUTC\":1662110433938,\"serviceType\":\"DYNAMIC\",\n"
    " \"uriSpec\":{\"parts\":[{\"value\":\"scheme\",\"variable\":true},"
    "{\"value\":\"://\",\"variable\":false},\n"
    "                     {\"value\":\"address\",\"variable\":true},"
    "{\"value\":\":\",\"variable\":false},\n"
    "                     {\"value\":\"port\",\"variable\":true}]}}";

struct want {
  const char *host;
  uint16_t port;
  bool tls;
  bool is_ip;
  zg_instance_format_t format;
  const char *base_path; /* NULL: none */
};

#define WANT(host, port, tls, is_ip, format, base_path)                        \
  ((struct want){host, port, tls, is_ip, format, base_path})

/* Decodes and checks every field; `name` must come back as out.name. */
static void decode_ok_len(const char *name, const char *data, size_t len,
                          const struct want *w) {
  zg_instance_t inst;
  char err[256] = "";
  int rc;

  memset(&inst, 0x5a, sizeof(inst));
  rc = zg_instance_decode(name, data, len, NULL, &inst, err, sizeof(err));
  if (rc != 0) {
    print_error("decode(name=%s, data=%.*s) = %d: %s\n", name, (int)len,
                data ? data : "", rc, err);
    fail();
  }
  print_message("decoded %s:%u as %s\n", inst.host, inst.port,
                zg_instance_format_name(inst.format));
  assert_string_equal(inst.host, w->host);
  assert_int_equal(inst.port, w->port);
  assert_int_equal(inst.tls, w->tls);
  assert_int_equal(inst.is_ip, w->is_ip);
  assert_int_equal(inst.format, w->format);
  if (w->base_path == NULL)
    assert_null(inst.base_path);
  else
    assert_string_equal(inst.base_path, w->base_path);
  assert_non_null(inst.name);
  assert_string_equal(inst.name, name);
  assert_ptr_not_equal(inst.name, name);
  zg_instance_clear(&inst);
}

static void decode_ok(const char *name, const char *data,
                      const struct want *w) {
  decode_ok_len(name, data, data ? strlen(data) : 0, w);
}

static void decode_bad_len(const char *name, const char *data, size_t len) {
  zg_instance_t inst;
  char err[256] = "";
  int rc;

  memset(&inst, 0, sizeof(inst));
  rc = zg_instance_decode(name, data, len, NULL, &inst, err, sizeof(err));
  if (rc != ZG_EDECODE || err[0] == '\0') {
    print_error("decode(name=%s, data=%.*s): rc=%d, want %d; err='%s'\n", name,
                (int)len, data ? data : "", rc, ZG_EDECODE, err);
    if (rc == 0)
      zg_instance_clear(&inst);
    fail();
  }
  /* Not cleared on failure: a decoder that allocates and then fails must
   * free what it took (ASan reports it otherwise). */
}

static void decode_bad(const char *name, const char *data) {
  decode_bad_len(name, data, strlen(data));
}

/* ------------------------------------------------------------------- URL */

static void test_url_puttu(void **state) {
  const struct want w =
      WANT("192.168.1.94", 1001, true, true, ZG_FORMAT_URL, "/warehouse/v1");

  decode_ok("warehouse0000000009", "https://192.168.1.94:1001/warehouse/v1",
            &w);
}

static void test_url_variants(void **state) {
  const struct want http =
      WANT("10.0.0.1", 80, false, true, ZG_FORMAT_URL, NULL);
  const struct want tcp =
      WANT("h.example.com", 9000, false, false, ZG_FORMAT_URL, NULL);
  const struct want v6 =
      WANT("fe80::1", 8443, true, true, ZG_FORMAT_URL, "/api");
  const struct want http_default =
      WANT("10.0.0.2", 80, false, true, ZG_FORMAT_URL, "/x");
  const struct want https_default =
      WANT("api.example.com", 443, true, false, ZG_FORMAT_URL, NULL);

  decode_ok(CHILD, "http://10.0.0.1:80", &http);
  decode_ok(CHILD, "http://10.0.0.1:80/", &http); /* "/" is no base path */
  decode_ok(CHILD, "tcp://h.example.com:9000", &tcp);
  decode_ok(CHILD, "https://[fe80::1]:8443/api", &v6);
  decode_ok(CHILD, "http://10.0.0.2/x", &http_default);
  decode_ok(CHILD, "https://api.example.com", &https_default);
  /* Data written by `echo` or a shell: surrounding whitespace. */
  decode_ok(CHILD, "  http://10.0.0.1:80\n", &http);
}

/* --------------------------------------------------------------- Curator */

static void test_curator_fixture(void **state) {
  const struct want w =
      WANT("localhost", 8004, false, false, ZG_FORMAT_CURATOR, NULL);

  decode_ok("41d739e4-2452-4137-bfb2-c0cf75d5e802", curator_json, &w);
}

static void test_curator_ports(void **state) {
  const struct want ssl =
      WANT("10.1.2.3", 8443, true, true, ZG_FORMAT_CURATOR, NULL);
  const struct want both =
      WANT("10.1.2.3", 8080, false, true, ZG_FORMAT_CURATOR, NULL);
  const struct want extra =
      WANT("svc.example.com", 8004, false, false, ZG_FORMAT_CURATOR, NULL);

  decode_ok(CHILD,
            "{\"name\":\"s\",\"id\":\"1\",\"address\":\"10.1.2.3\","
            "\"port\":null,\"sslPort\":8443,\"serviceType\":\"DYNAMIC\"}",
            &ssl);
  /* A smaller envelope, told apart by registrationTimeUTC alone. */
  decode_ok(CHILD,
            "{\"address\":\"10.1.2.3\",\"port\":null,\"sslPort\":8443,"
            "\"registrationTimeUTC\":1}",
            &ssl);
  /* sslPort absent altogether: the plain port. */
  decode_ok(CHILD,
            "{\"address\":\"10.1.2.3\",\"port\":8080,"
            "\"serviceType\":\"STATIC\"}",
            &both);
  decode_ok(CHILD,
            "{\"name\":\"s\",\"id\":\"1\",\"address\":\"10.1.2.3\","
            "\"port\":8080,\"sslPort\":8443,\"serviceType\":\"DYNAMIC\"}",
            &both);
  /* Unknown fields, of every JSON type, are ignored. */
  decode_ok(CHILD,
            "{\"name\":\"s\",\"id\":\"1\",\"address\":\"svc.example.com\","
            "\"port\":8004,\"sslPort\":null,\"serviceType\":\"DYNAMIC\","
            "\"registrationTimeUTC\":1662110433938,"
            "\"enabled\":true,\"zone\":\"eu-1\",\"weight\":1.5,"
            "\"tags\":[1,\"a\",null,{}],\"future\":{\"nested\":{\"x\":[]}}}",
            &extra);
}

static void test_curator_bad(void **state) {
  /* Neither port. */
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":\"10.1.2.3\",\"port\":null,"
                    "\"sslPort\":null,\"serviceType\":\"DYNAMIC\"}");
  /* A port as a string, out of range, negative, fractional, zero. */
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":\"10.1.2.3\",\"port\":\"80\","
                    "\"sslPort\":null,\"serviceType\":\"DYNAMIC\"}");
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":\"10.1.2.3\",\"port\":70000,"
                    "\"sslPort\":null,\"serviceType\":\"DYNAMIC\"}");
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":\"10.1.2.3\",\"port\":-80,"
                    "\"sslPort\":null,\"serviceType\":\"DYNAMIC\"}");
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":\"10.1.2.3\",\"port\":0,"
                    "\"sslPort\":null,\"serviceType\":\"DYNAMIC\"}");
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":\"10.1.2.3\",\"port\":null,"
                    "\"sslPort\":70000,\"serviceType\":\"DYNAMIC\"}");
  /* Address missing, empty or not a string. */
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":\"\",\"port\":80,"
                    "\"sslPort\":null,\"serviceType\":\"DYNAMIC\"}");
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":17,\"port\":80,"
                    "\"sslPort\":null,\"serviceType\":\"DYNAMIC\"}");
}

/* ------------------------------------------------------------- host:port */

static void test_hostport_data(void **state) {
  const struct want v4 =
      WANT("10.0.0.5", 8080, false, true, ZG_FORMAT_HOSTPORT, NULL);
  const struct want v6 =
      WANT("::1", 8080, false, true, ZG_FORMAT_HOSTPORT, NULL);
  const struct want dns =
      WANT("db-1.example.com", 5432, false, false, ZG_FORMAT_HOSTPORT, NULL);
  const struct want max =
      WANT("10.0.0.5", 65535, false, true, ZG_FORMAT_HOSTPORT, NULL);

  decode_ok(CHILD, "10.0.0.5:8080", &v4);
  decode_ok(CHILD, "[::1]:8080", &v6);
  decode_ok(CHILD, "db-1.example.com:5432", &dns);
  decode_ok(CHILD, "10.0.0.5:65535", &max);
  decode_ok(CHILD, "\t10.0.0.5:8080\r\n", &v4);
  decode_ok(CHILD, "10.0.0.5:8080\n", &v4);
  /* The length is what counts, not a terminating NUL. */
  decode_ok_len(CHILD, "10.0.0.5:8080999", strlen("10.0.0.5:8080"), &v4);
}

static void test_hostport_name(void **state) {
  const struct want w =
      WANT("10.0.0.7", 9000, false, true, ZG_FORMAT_NAME, NULL);
  const struct want v6 =
      WANT("2001:db8::7", 9000, false, true, ZG_FORMAT_NAME, NULL);

  decode_ok("10.0.0.7:9000", "", &w);
  decode_ok_len("10.0.0.7:9000", NULL, 0, &w);
  decode_ok("[2001:db8::7]:9000", "", &v6);
  /* Free text in the data: the name is the address (REGISTRY-FORMATS.md). */
  decode_ok("10.0.0.7:9000", "@params weight=2", &w);

  decode_bad("instance0000000001", "");
  decode_bad_len("member_0000000001", NULL, 0);
  decode_bad("10.0.0.7", "");
  decode_bad("10.0.0.7:0", "");
}

static void test_garbage(void **state) {
  static const char *const bad[] = {
      "not an address",
      "host:",
      ":80",
      "host:0",
      "host:65536",
      "host:80x",
      "host:-80",
      "host:+80",
      "host: 80",
      "host:99999999999999999999",
      "[::1:80",
      "[::1]",
      "[::1]:",
      "[not-v6]:80",
      "a:b:c",
      "host",
      "{\"json\":\"without address\"}",
      "{broken json",
      "{\"address\":\"10.0.0.1\",\"port\":80",
      "[]",
      "null",
      "http://",
      "http://:80",
      "http://10.0.0.1:0/x",
      "http://10.0.0.1:99999",
      "gopher//10.0.0.1:80",
  };
  /* NUL and 0xff inside: the bytes up to the NUL would decode, so a
   * decoder that reads C strings instead of (data, len) is caught. */
  static const char nul1[] = "10.0.0.1:80\0\xff"
                             "80";
  static const char nul2[] = "10.0.\0\xff.1:8080";
  static const char ff[] = "10.0.0.1\xff:80";
  char longhost[400];

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    decode_bad(CHILD, bad[i]);
  decode_bad_len(CHILD, nul1, sizeof(nul1) - 1);
  decode_bad_len(CHILD, nul2, sizeof(nul2) - 1);
  decode_bad(CHILD, ff);

  /* A 300-character host, as host:port, URL and Curator address. */
  memset(longhost, 'a', 300);
  strcpy(longhost + 300, ":80");
  decode_bad(CHILD, longhost);
  decode_bad(longhost, "");
  {
    char url[420], json[480];

    snprintf(url, sizeof(url), "http://%.300s/x", longhost);
    decode_bad(CHILD, url);
    snprintf(json, sizeof(json),
             "{\"address\":\"%.300s\",\"port\":80,\"sslPort\":null,"
             "\"serviceType\":\"DYNAMIC\"}",
             longhost);
    decode_bad(CHILD, json);
  }
}

static void test_err_truncated(void **state) {
  /* The reason fits the buffer it is given, NUL-terminated. */
  zg_instance_t inst;
  char err[8];

  memset(&inst, 0, sizeof(inst));
  memset(err, 'x', sizeof(err));
  assert_int_equal(zg_instance_decode(CHILD, "not an address", 14, NULL, &inst,
                                      err, sizeof(err)),
                   ZG_EDECODE);
  assert_true(memchr(err, '\0', sizeof(err)) != NULL);
  assert_true(err[0] != '\0');
}

/* ------------------------------------------------------------- parse/copy */

static void test_parse_hostport(void **state) {
  zg_instance_t inst;

  memset(&inst, 0, sizeof(inst));
  inst.tls = true;
  inst.format = ZG_FORMAT_URL;
  assert_int_equal(zg_instance_parse_hostport("10.0.0.5:8080", 13, &inst), 0);
  assert_string_equal(inst.host, "10.0.0.5");
  assert_int_equal(inst.port, 8080);
  assert_true(inst.is_ip);
  /* Other fields are left alone. */
  assert_true(inst.tls);
  assert_int_equal(inst.format, ZG_FORMAT_URL);
  assert_null(inst.base_path);
  assert_null(inst.name);

  assert_int_equal(zg_instance_parse_hostport("[::ffff:10.0.0.1]:1", 19, &inst),
                   0);
  assert_string_equal(inst.host, "::ffff:10.0.0.1");
  assert_int_equal(inst.port, 1);
  assert_true(inst.is_ip);

  assert_int_equal(zg_instance_parse_hostport("example.org:443", 15, &inst), 0);
  assert_string_equal(inst.host, "example.org");
  assert_int_equal(inst.port, 443);
  assert_false(inst.is_ip);

  /* Only `len` bytes count. */
  assert_int_equal(zg_instance_parse_hostport("10.0.0.5:80xyz", 11, &inst), 0);
  assert_string_equal(inst.host, "10.0.0.5");
  assert_int_equal(inst.port, 80);

  assert_int_equal(zg_instance_parse_hostport("10.0.0.5:80xyz", 14, &inst),
                   ZG_EDECODE);
  assert_int_equal(zg_instance_parse_hostport("10.0.0.5", 8, &inst),
                   ZG_EDECODE);
  assert_int_equal(zg_instance_parse_hostport("", 0, &inst), ZG_EDECODE);
}

static void test_copy_clear(void **state) {
  zg_instance_t src, dst;
  char *base = strdup("/warehouse/v1");
  char *name = strdup("warehouse0000000009");

  memset(&src, 0, sizeof(src));
  memset(&dst, 0x5a, sizeof(dst));
  assert_non_null(base);
  assert_non_null(name);
  strcpy(src.host, "192.168.1.94");
  src.port = 1001;
  src.tls = true;
  src.is_ip = true;
  src.format = ZG_FORMAT_URL;
  src.base_path = base;
  src.name = name;

  assert_int_equal(zg_instance_copy(&dst, &src), 0);
  assert_string_equal(dst.host, "192.168.1.94");
  assert_int_equal(dst.port, 1001);
  assert_true(dst.tls);
  assert_true(dst.is_ip);
  assert_int_equal(dst.format, ZG_FORMAT_URL);
  assert_non_null(dst.base_path);
  assert_non_null(dst.name);
  assert_ptr_not_equal(dst.base_path, base);
  assert_ptr_not_equal(dst.name, name);
  assert_string_equal(dst.base_path, "/warehouse/v1");
  assert_string_equal(dst.name, "warehouse0000000009");

  /* The copy owns its strings: changing and freeing the source's (src owns
   * base and name, clear frees them) leaves it intact (ASan reports a use
   * after free otherwise). */
  base[1] = 'X';
  name[0] = 'X';
  zg_instance_clear(&src);
  assert_null(src.base_path);
  assert_null(src.name);
  assert_string_equal(dst.base_path, "/warehouse/v1");
  assert_string_equal(dst.name, "warehouse0000000009");

  zg_instance_clear(&dst);
  assert_null(dst.base_path);
  assert_null(dst.name);
  zg_instance_clear(&dst); /* twice is harmless */
}

static void test_copy_null_strings(void **state) {
  zg_instance_t src, dst;

  memset(&src, 0, sizeof(src));
  memset(&dst, 0x5a, sizeof(dst));
  strcpy(src.host, "db.example.com");
  src.port = 5432;
  src.format = ZG_FORMAT_STATIC;
  assert_int_equal(zg_instance_copy(&dst, &src), 0);
  assert_string_equal(dst.host, "db.example.com");
  assert_int_equal(dst.port, 5432);
  assert_false(dst.is_ip);
  assert_false(dst.tls);
  assert_null(dst.base_path);
  assert_null(dst.name);
  zg_instance_clear(&dst);
}

static void test_addr_str(void **state) {
  zg_instance_t inst;
  char buf[ZG_HOST_MAX + 16];

  memset(&inst, 0, sizeof(inst));
  strcpy(inst.host, "10.0.0.5");
  inst.port = 8080;
  inst.is_ip = true;
  assert_ptr_equal(zg_instance_addr_str(&inst, buf, sizeof(buf)), buf);
  assert_string_equal(buf, "10.0.0.5:8080");

  strcpy(inst.host, "2001:db8::1");
  inst.port = 443;
  assert_ptr_equal(zg_instance_addr_str(&inst, buf, sizeof(buf)), buf);
  assert_string_equal(buf, "[2001:db8::1]:443");

  strcpy(inst.host, "h.example.com");
  inst.port = 9000;
  inst.is_ip = false;
  assert_string_equal(zg_instance_addr_str(&inst, buf, sizeof(buf)),
                      "h.example.com:9000");

  /* A short buffer is truncated, never overrun. */
  {
    char small[8];

    memset(small, 'x', sizeof(small));
    zg_instance_addr_str(&inst, small, sizeof(small));
    assert_true(memchr(small, '\0', sizeof(small)) != NULL);
  }
}

static void test_decode_then_addr_str(void **state) {
  zg_instance_t inst;
  char err[128] = "";
  char buf[300];
  static const char data[] = "http://[::1]:8080/base";

  memset(&inst, 0, sizeof(inst));
  assert_int_equal(zg_instance_decode(CHILD, data, strlen(data), NULL, &inst,
                                      err, sizeof(err)),
                   0);
  assert_string_equal(zg_instance_addr_str(&inst, buf, sizeof(buf)),
                      "[::1]:8080");
  zg_instance_clear(&inst);
}

static void test_format_names(void **state) {
  const char *names[5];

  for (int f = ZG_FORMAT_STATIC; f <= ZG_FORMAT_CURATOR; f++) {
    names[f] = zg_instance_format_name(f);
    assert_non_null(names[f]);
    assert_true(names[f][0] != '\0');
    for (int g = ZG_FORMAT_STATIC; g < f; g++)
      assert_string_not_equal(names[f], names[g]);
  }
  /* An unknown value still gives a printable string. */
  assert_non_null(zg_instance_format_name(99));
  assert_non_null(zg_instance_format_name(-1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url_puttu),
      cmocka_unit_test(test_url_variants),
      cmocka_unit_test(test_curator_fixture),
      cmocka_unit_test(test_curator_ports),
      cmocka_unit_test(test_curator_bad),
      cmocka_unit_test(test_hostport_data),
      cmocka_unit_test(test_hostport_name),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_err_truncated),
      cmocka_unit_test(test_parse_hostport),
      cmocka_unit_test(test_copy_clear),
      cmocka_unit_test(test_copy_null_strings),
      cmocka_unit_test(test_addr_str),
      cmocka_unit_test(test_decode_then_addr_str),
      cmocka_unit_test(test_format_names),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
