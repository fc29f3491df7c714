/* Unit tests for zkgate-register's encoding (src/register/register_fmt.h):
 * whatever it writes must decode with zg_instance_decode() to the same
 * address, in every format, for IPv4, IPv6 and names, with and without
 * TLS; child names and paths follow each format's writer. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/error.h"
#include "core/instance.h"
#include "register/register_fmt.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define ZK_PATH "/myRegistry/endpoints/warehouse"

static zg_regfmt_instance_t make(zg_regfmt_t format, const char *host,
                                 uint16_t port, bool tls) {
  static const uint8_t rnd[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2,  3,  4,
                                  5,    6,    7,    8,    9, 10, 11, 12};
  zg_regfmt_instance_t inst;
  memset(&inst, 0, sizeof(inst));
  inst.format = format;
  inst.zk_path = ZK_PATH;
  inst.host = host;
  inst.port = port;
  inst.tls = tls;
  inst.registration_ms = 1662110433938;
  zg_register_fmt_uuid(rnd, inst.id);
  return inst;
}

/* The child name ZooKeeper would give: the prefix plus a sequence number
 * for sequential formats. */
static char *child_name(const zg_regfmt_instance_t *inst) {
  char *path = NULL, *name;
  bool seq = false;
  size_t plen = strlen(ZK_PATH);
  assert_int_equal(zg_register_fmt_child(inst, &path, &seq), 0);
  assert_memory_equal(path, ZK_PATH "/", plen + 1);
  name = malloc(strlen(path) + 11);
  assert_non_null(name);
  sprintf(name, "%s%s", path + plen + 1, seq ? "0000000042" : "");
  free(path);
  return name;
}

static void round_trip(zg_regfmt_t format, const char *host, uint16_t port,
                       bool tls) {
  zg_regfmt_instance_t inst = make(format, host, port, tls);
  zg_instance_t out;
  char *data = NULL, *name, err[160] = "";
  size_t len = 0;
  int rc;
  static const zg_instance_format_t want_format[] = {
      [ZG_REGFMT_URL] = ZG_FORMAT_URL,
      [ZG_REGFMT_CURATOR] = ZG_FORMAT_CURATOR,
      [ZG_REGFMT_SERVERSET] = ZG_FORMAT_SERVERSET,
      [ZG_REGFMT_HOSTPORT] = ZG_FORMAT_HOSTPORT,
  };

  assert_int_equal(zg_register_fmt_encode(&inst, &data, &len), 0);
  assert_non_null(data);
  assert_int_equal(strlen(data), len);
  name = child_name(&inst);
  rc = zg_instance_decode(name, data, len, NULL, &out, err, sizeof(err));
  if (rc != 0)
    fail_msg("%s %s:%u%s: '%s' (child %s) does not decode: %s",
             zg_register_fmt_name(format), host, port, tls ? " tls" : "", data,
             name, err);
  assert_string_equal(out.host, host);
  assert_int_equal(out.port, port);
  assert_int_equal(out.format, want_format[format]);
  assert_true(out.up);
  assert_int_equal(out.weight, ZG_WEIGHT_DEFAULT);
  assert_null(out.base_path);
  /* TLS is said by the scheme (url), the sslPort (curator); a serverset
   * says it through the "https" endpoint, host:port cannot say it. */
  if (format == ZG_REGFMT_URL || format == ZG_REGFMT_CURATOR)
    assert_int_equal(out.tls, tls);
  else
    assert_false(out.tls);
  zg_instance_clear(&out);

  if (format == ZG_REGFMT_SERVERSET && tls) {
    zg_decode_opts_t opts = {"https"};
    assert_int_equal(
        zg_instance_decode(name, data, len, &opts, &out, err, sizeof(err)), 0);
    assert_string_equal(out.host, host);
    assert_int_equal(out.port, port);
    assert_true(out.tls);
    zg_instance_clear(&out);
  }
  free(name);
  free(data);
}

static void test_round_trip_every_format(void **state) {
  static const char *const hosts[] = {"127.0.0.1", "10.0.0.5",
                                      "::1",       "fd00::5",
                                      "localhost", "svc-1.example.com"};
  static const uint16_t ports[] = {1, 80, 8080, 65535};
  (void)state;
  for (int f = ZG_REGFMT_URL; f <= ZG_REGFMT_HOSTPORT; f++)
    for (size_t h = 0; h < sizeof(hosts) / sizeof(hosts[0]); h++)
      for (size_t p = 0; p < sizeof(ports) / sizeof(ports[0]); p++)
        for (int tls = 0; tls <= 1; tls++)
          round_trip((zg_regfmt_t)f, hosts[h], ports[p], tls);
}

static char *encode(const zg_regfmt_instance_t *inst) {
  char *data = NULL;
  size_t len;
  assert_int_equal(zg_register_fmt_encode(inst, &data, &len), 0);
  return data;
}

static void test_url_and_hostport_text(void **state) {
  zg_regfmt_instance_t inst = make(ZG_REGFMT_URL, "10.0.0.5", 8080, false);
  char *s;
  (void)state;
  assert_string_equal(s = encode(&inst), "http://10.0.0.5:8080");
  free(s);
  inst.tls = true;
  inst.host = "fd00::5";
  assert_string_equal(s = encode(&inst), "https://[fd00::5]:8080");
  free(s);
  inst.format = ZG_REGFMT_HOSTPORT;
  assert_string_equal(s = encode(&inst), "[fd00::5]:8080");
  free(s);
  inst.host = "db.example.com";
  assert_string_equal(s = encode(&inst), "db.example.com:8080");
  free(s);
}

static json_t *encode_json(const zg_regfmt_instance_t *inst) {
  char *s = encode(inst);
  json_error_t jerr;
  json_t *root = json_loads(s, JSON_REJECT_DUPLICATES, &jerr);
  free(s);
  assert_non_null(root);
  assert_true(json_is_object(root));
  return root;
}

static void test_curator_fields(void **state) {
  zg_regfmt_instance_t inst = make(ZG_REGFMT_CURATOR, "10.0.0.5", 8004, false);
  json_t *root = encode_json(&inst), *parts;
  (void)state;
  assert_string_equal(json_string_value(json_object_get(root, "name")),
                      "warehouse");
  assert_string_equal(json_string_value(json_object_get(root, "id")), inst.id);
  assert_string_equal(json_string_value(json_object_get(root, "address")),
                      "10.0.0.5");
  assert_int_equal(json_integer_value(json_object_get(root, "port")), 8004);
  assert_true(json_is_null(json_object_get(root, "sslPort")));
  assert_true(json_is_null(json_object_get(root, "payload")));
  assert_true(json_integer_value(json_object_get(
                  root, "registrationTimeUTC")) == 1662110433938);
  assert_string_equal(json_string_value(json_object_get(root, "serviceType")),
                      "DYNAMIC");
  /* Older Curator readers fail on fields they do not know. */
  assert_null(json_object_get(root, "enabled"));
  parts = json_object_get(json_object_get(root, "uriSpec"), "parts");
  assert_int_equal(json_array_size(parts), 5);
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(parts, 0), "value")),
      "http");
  json_decref(root);

  inst.tls = true;
  root = encode_json(&inst);
  assert_true(json_is_null(json_object_get(root, "port")));
  assert_int_equal(json_integer_value(json_object_get(root, "sslPort")), 8004);
  parts = json_object_get(json_object_get(root, "uriSpec"), "parts");
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(parts, 0), "value")),
      "https");
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(parts, 4), "value")),
      "ssl-port");
  json_decref(root);
}

static void test_serverset_fields(void **state) {
  zg_regfmt_instance_t inst = make(ZG_REGFMT_SERVERSET, "::1", 31943, false);
  json_t *root = encode_json(&inst), *ep, *extra;
  (void)state;
  ep = json_object_get(root, "serviceEndpoint");
  assert_string_equal(json_string_value(json_object_get(ep, "host")), "::1");
  assert_int_equal(json_integer_value(json_object_get(ep, "port")), 31943);
  extra = json_object_get(root, "additionalEndpoints");
  assert_true(json_is_object(extra));
  assert_int_equal(json_object_size(extra), 0);
  assert_string_equal(json_string_value(json_object_get(root, "status")),
                      "ALIVE");
  json_decref(root);
  inst.tls = true;
  root = encode_json(&inst);
  ep = json_object_get(json_object_get(root, "additionalEndpoints"), "https");
  assert_int_equal(json_integer_value(json_object_get(ep, "port")), 31943);
  json_decref(root);
}

static void test_children(void **state) {
  zg_regfmt_instance_t inst = make(ZG_REGFMT_URL, "10.0.0.5", 80, false);
  char *path;
  bool seq;
  (void)state;
  assert_int_equal(zg_register_fmt_child(&inst, &path, &seq), 0);
  assert_string_equal(path, ZK_PATH "/warehouse");
  assert_true(seq);
  free(path);
  inst.format = ZG_REGFMT_HOSTPORT;
  assert_int_equal(zg_register_fmt_child(&inst, &path, &seq), 0);
  assert_string_equal(path, ZK_PATH "/warehouse");
  assert_true(seq);
  free(path);
  inst.format = ZG_REGFMT_SERVERSET;
  assert_int_equal(zg_register_fmt_child(&inst, &path, &seq), 0);
  assert_string_equal(path, ZK_PATH "/member_");
  assert_true(seq);
  free(path);
  inst.format = ZG_REGFMT_CURATOR;
  assert_int_equal(zg_register_fmt_child(&inst, &path, &seq), 0);
  assert_string_equal(path + strlen(ZK_PATH), "/deadbeef-0102-4304-8506-"
                                              "0708090a0b0c");
  assert_false(seq);
  free(path);
}

static void test_uuid(void **state) {
  uint8_t ones[16], zeros[16];
  char out[ZG_REGFMT_UUID_LEN + 1];
  (void)state;
  memset(ones, 0xff, sizeof(ones));
  memset(zeros, 0, sizeof(zeros));
  zg_register_fmt_uuid(ones, out);
  assert_string_equal(out, "ffffffff-ffff-4fff-bfff-ffffffffffff");
  zg_register_fmt_uuid(zeros, out);
  assert_string_equal(out, "00000000-0000-4000-8000-000000000000");
}

static void test_format_names(void **state) {
  zg_regfmt_t f;
  (void)state;
  for (int i = ZG_REGFMT_URL; i <= ZG_REGFMT_HOSTPORT; i++) {
    assert_int_equal(
        zg_register_fmt_parse(zg_register_fmt_name((zg_regfmt_t)i), &f), 0);
    assert_int_equal(f, i);
  }
  assert_int_equal(zg_register_fmt_parse("nerve", &f), ZG_ECONFIG);
  assert_int_equal(zg_register_fmt_parse("URL", &f), ZG_ECONFIG);
  assert_int_equal(zg_register_fmt_parse("", &f), ZG_ECONFIG);
}

static void test_check_path(void **state) {
  static const char *const good[] = {"/a", "/myRegistry/endpoints/web",
                                     "/a.b/c-d/e_f", "/..a/b.."};
  static const char *const bad[] = {"",   "a/b",  "/",     "/a/",   "/a//b",
                                    "//", "/./a", "/a/..", "/a\tb", "/a\nb"};
  const char *why;
  (void)state;
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    why = "unset";
    assert_int_equal(zg_register_fmt_check_path(good[i], &why), 0);
    assert_null(why);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    why = NULL;
    if (zg_register_fmt_check_path(bad[i], &why) != ZG_ECONFIG)
      fail_msg("path '%s' accepted", bad[i]);
    assert_non_null(why);
  }
}

/* etcd: the key is the prefix as given + host:port (IPv6 in brackets);
 * the service name for the data is the prefix's last component. */
static void test_etcd_key_and_service(void **state) {
  static const struct {
    const char *prefix, *host, *key, *service;
    uint16_t port;
  } cases[] = {
      {"/services/web/", "10.0.0.5", "/services/web/10.0.0.5:8080", "/web",
       8080},
      {"/services/web", "::1", "/services/web[::1]:80", "/web", 80},
      {"svc//", "a.example", "svc//a.example:1", "/svc", 1},
      {"/", "h", "/h:65535", "/", 65535},
  };
  const char *why;
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *key = NULL, *svc = zg_register_fmt_etcd_service(cases[i].prefix);
    assert_int_equal(zg_register_fmt_etcd_key(cases[i].prefix, cases[i].host,
                                              cases[i].port, &key),
                     0);
    assert_string_equal(key, cases[i].key);
    assert_non_null(svc);
    assert_string_equal(svc, cases[i].service);
    free(key);
    free(svc);
  }
  assert_int_equal(zg_register_fmt_check_prefix("/services/web/", &why), 0);
  assert_null(why);
  assert_int_equal(zg_register_fmt_check_prefix("", &why), ZG_ECONFIG);
  assert_string_equal(why, "is empty");
  assert_int_equal(zg_register_fmt_check_prefix("/a\nb/", &why), ZG_ECONFIG);
  assert_string_equal(why, "holds a control character");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_every_format),
      cmocka_unit_test(test_url_and_hostport_text),
      cmocka_unit_test(test_curator_fields),
      cmocka_unit_test(test_serverset_fields),
      cmocka_unit_test(test_children),
      cmocka_unit_test(test_uuid),
      cmocka_unit_test(test_format_names),
      cmocka_unit_test(test_check_path),
      cmocka_unit_test(test_etcd_key_and_service),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
