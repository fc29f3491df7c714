/* Unit tests for instance decoding (src/core/instance.h) against the
 * registry formats in docs/registry-formats.md: every format that must decode,
 * and garbage that must be refused with a reason. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/instance.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* A child name that is not host:port, so that a decoder cannot fall back
 * on it. */
#define CHILD "instance0000000009"

/* The Curator fixture from docs/registry-formats.md, verbatim. */
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
  bool up;
  uint32_t weight;
};

/* In service, default weight: what every format gives unless it says
 * otherwise. */
#define WANT(host, port, tls, is_ip, format, base_path)                        \
  ((struct want){host, port, tls, is_ip, format, base_path, true,              \
                 ZG_WEIGHT_DEFAULT})
#define WANT_UW(host, port, tls, is_ip, format, base_path, up, weight)         \
  ((struct want){host, port, tls, is_ip, format, base_path, up, weight})

/* Checks every field of a decoded instance; `name` must come back as
 * inst->name, a copy. */
static void check_instance(const zg_instance_t *inst, const char *name,
                           const struct want *w) {
  print_message("decoded %s:%u as %s, up=%d weight=%u\n", inst->host,
                inst->port, zg_instance_format_name(inst->format), inst->up,
                inst->weight);
  assert_string_equal(inst->host, w->host);
  assert_int_equal(inst->port, w->port);
  assert_int_equal(inst->tls, w->tls);
  assert_int_equal(inst->is_ip, w->is_ip);
  assert_int_equal(inst->format, w->format);
  if (w->base_path == NULL)
    assert_null(inst->base_path);
  else
    assert_string_equal(inst->base_path, w->base_path);
  assert_int_equal(inst->up, w->up);
  assert_int_equal(inst->weight, w->weight);
  assert_non_null(inst->name);
  assert_string_equal(inst->name, name);
  assert_ptr_not_equal(inst->name, name);
  assert_null(inst->key);
  assert_int_equal(inst->version, 0);
  assert_int_equal(inst->mtime_ms, 0);
}

static void decode_ok_opts(const char *name, const char *data, size_t len,
                           const zg_decode_opts_t *opts, const struct want *w) {
  zg_instance_t inst;
  char err[256] = "";
  int rc;

  memset(&inst, 0x5a, sizeof(inst));
  rc = zg_instance_decode(name, data, len, opts, &inst, err, sizeof(err));
  if (rc != 0) {
    print_error("decode(name=%s, data=%.*s) = %d: %s\n", name, (int)len,
                data ? data : "", rc, err);
    fail();
  }
  if (err[0]) {
    print_error("decode(name=%s, data=%.*s) warned: %s\n", name, (int)len,
                data ? data : "", err);
    fail();
  }
  check_instance(&inst, name, w);
  zg_instance_clear(&inst);
}

/* Decodes `data` (which must succeed) into the instance `w`, with a
 * warning that holds `reason`: something was ignored (a bad weight), the
 * instance is kept. */
static void decode_warns(const char *name, const char *data,
                         const struct want *w, const char *reason) {
  zg_instance_t inst;
  char err[256] = "";
  int rc;

  memset(&inst, 0x5a, sizeof(inst));
  rc = zg_instance_decode(name, data, strlen(data), NULL, &inst, err,
                          sizeof(err));
  if (rc != 0 || !strstr(err, reason) || !strstr(err, "default weight")) {
    print_error("decode(name=%s, data=%s) = %d: err='%s', want a warning "
                "with '%s'\n",
                name, data, rc, err, reason);
    if (rc == 0)
      zg_instance_clear(&inst);
    fail();
  }
  check_instance(&inst, name, w);
  zg_instance_clear(&inst);
}

static void decode_ok_len(const char *name, const char *data, size_t len,
                          const struct want *w) {
  decode_ok_opts(name, data, len, NULL, w);
}

static void decode_ok(const char *name, const char *data,
                      const struct want *w) {
  decode_ok_len(name, data, data ? strlen(data) : 0, w);
}

/* Decodes `name` alone, and by zg_instance_decode with empty and with
 * unrelated data: a name-only format must give the same instance all
 * three ways (the registry may use either). */
static void decode_name_ok(const char *name, const struct want *w) {
  zg_instance_t inst;
  char err[256] = "";
  int rc;

  memset(&inst, 0x5a, sizeof(inst));
  rc = zg_instance_decode_name(name, &inst, err, sizeof(err));
  if (rc != 0) {
    print_error("decode_name(%s) = %d: %s\n", name, rc, err);
    fail();
  }
  if (err[0]) {
    print_error("decode_name(%s) warned: %s\n", name, err);
    fail();
  }
  check_instance(&inst, name, w);
  zg_instance_clear(&inst);
  decode_ok(name, "", w);
  decode_ok_len(name, NULL, 0, w);
  decode_ok(name, "10.99.99.99:9999", w);
  decode_ok(name, "{\"host\":\"10.99.99.99\",\"port\":9999}", w);
}

/* Decoding fails with `want_rc` and a reason; `reason` (when not NULL)
 * must be part of it. */
static void decode_fails(const char *name, const char *data, size_t len,
                         const zg_decode_opts_t *opts, int want_rc,
                         const char *reason) {
  zg_instance_t inst;
  char err[256] = "";
  int rc;

  memset(&inst, 0, sizeof(inst));
  rc = zg_instance_decode(name, data, len, opts, &inst, err, sizeof(err));
  if (rc != want_rc || err[0] == '\0' || (reason && !strstr(err, reason))) {
    print_error("decode(name=%s, data=%.*s): rc=%d, want %d; err='%s', "
                "want '%s'\n",
                name, (int)len, data ? data : "", rc, want_rc, err,
                reason ? reason : "(any)");
    if (rc == 0)
      zg_instance_clear(&inst);
    fail();
  }
  /* Not cleared on failure: a decoder that allocates and then fails must
   * free what it took (ASan reports it otherwise). */
}

static void decode_bad_len(const char *name, const char *data, size_t len) {
  decode_fails(name, data, len, NULL, ZG_EDECODE, NULL);
}

static void decode_bad(const char *name, const char *data) {
  decode_bad_len(name, data, strlen(data));
}

static void decode_bad_reason(const char *name, const char *data,
                              const char *reason) {
  decode_fails(name, data, strlen(data), NULL, ZG_EDECODE, reason);
}

/* A name-only format decoded with a warning holding `reason`, alone and
 * with data. */
static void decode_name_warns(const char *name, const struct want *w,
                              const char *reason) {
  zg_instance_t inst;
  char err[256] = "";
  int rc;

  memset(&inst, 0x5a, sizeof(inst));
  rc = zg_instance_decode_name(name, &inst, err, sizeof(err));
  if (rc != 0 || !strstr(err, reason) || !strstr(err, "default weight")) {
    print_error("decode_name(%s) = %d: err='%s', want a warning with '%s'\n",
                name, rc, err, reason);
    if (rc == 0)
      zg_instance_clear(&inst);
    fail();
  }
  check_instance(&inst, name, w);
  zg_instance_clear(&inst);
  decode_warns(name, "", w, reason);
  decode_warns(name, "10.99.99.99:9999", w, reason);
}

/* A name-only format that must be refused, with or without data. */
static void decode_name_bad(const char *name, const char *reason) {
  zg_instance_t inst;
  char err[256] = "";
  int rc;

  memset(&inst, 0, sizeof(inst));
  rc = zg_instance_decode_name(name, &inst, err, sizeof(err));
  if (rc != ZG_EDECODE || err[0] == '\0' || (reason && !strstr(err, reason))) {
    print_error("decode_name(%s): rc=%d, want %d; err='%s', want '%s'\n", name,
                rc, ZG_EDECODE, err, reason ? reason : "(any)");
    if (rc == 0)
      zg_instance_clear(&inst);
    fail();
  }
  decode_fails(name, "", 0, NULL, ZG_EDECODE, reason);
  decode_bad_reason(name, "10.0.0.1:80", reason);
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
      WANT("10.1.2.3", 8443, true, true, ZG_FORMAT_CURATOR, NULL);
  const struct want plain =
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
            &plain);
  /* Both: sslPort is preferred (TLS); the plain port is kept aside. */
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

/* Decodes `data` (which must succeed) into *inst. */
static void decode_into(const char *data, zg_instance_t *inst) {
  char err[256] = "";
  assert_int_equal(zg_instance_decode(CHILD, data, strlen(data), NULL, inst,
                                      err, sizeof(err)),
                   0);
}

/* What upstream_tls makes of a registration: auto follows the registry,
 * on and off force it; off goes to the plain port when Curator has both. */
static void test_upstream_tls_choice(void **state) {
  zg_instance_t inst;
  uint16_t port = 0;
  (void)state;

  decode_into("{\"address\":\"10.1.2.3\",\"port\":8080,\"sslPort\":8443,"
              "\"serviceType\":\"DYNAMIC\"}",
              &inst);
  assert_true(inst.tls);
  assert_int_equal(inst.port, 8443);
  assert_int_equal(inst.plain_port, 8080);
  assert_true(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_AUTO, &port));
  assert_int_equal(port, 8443);
  assert_true(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_ON, &port));
  assert_int_equal(port, 8443);
  assert_false(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_OFF, &port));
  assert_int_equal(port, 8080);
  zg_instance_clear(&inst);

  /* sslPort alone: off forces plain on that same port. */
  decode_into("{\"address\":\"h.example\",\"port\":null,\"sslPort\":8443,"
              "\"serviceType\":\"DYNAMIC\"}",
              &inst);
  assert_true(inst.tls);
  assert_int_equal(inst.plain_port, 0);
  assert_false(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_OFF, &port));
  assert_int_equal(port, 8443);
  zg_instance_clear(&inst);

  /* port alone: plain under auto, TLS under on. */
  decode_into("{\"address\":\"10.1.2.3\",\"port\":8080,\"sslPort\":null,"
              "\"serviceType\":\"DYNAMIC\"}",
              &inst);
  assert_false(inst.tls);
  assert_int_equal(inst.plain_port, 0);
  assert_false(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_AUTO, &port));
  assert_int_equal(port, 8080);
  assert_true(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_ON, &port));
  assert_int_equal(port, 8080);
  zg_instance_clear(&inst);

  /* URL schemes: https means TLS (443 by default), http does not. */
  decode_into("https://192.168.1.94:1001/warehouse/v1", &inst);
  assert_true(inst.tls);
  assert_int_equal(inst.port, 1001);
  assert_true(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_AUTO, &port));
  assert_false(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_OFF, &port));
  assert_int_equal(port, 1001);
  zg_instance_clear(&inst);
  decode_into("https://api.example.com", &inst);
  assert_true(inst.tls);
  assert_int_equal(inst.port, 443);
  zg_instance_clear(&inst);
  decode_into("http://192.168.1.94:1001", &inst);
  assert_false(inst.tls);
  assert_false(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_AUTO, &port));
  zg_instance_clear(&inst);

  /* Serverset: the endpoint named https means TLS. */
  {
    const char *ss =
        "{\"serviceEndpoint\":{\"host\":\"10.0.0.9\",\"port\":80},"
        "\"additionalEndpoints\":{\"https\":{\"host\":\"10.0.0.9\","
        "\"port\":443}},\"status\":\"ALIVE\"}";
    zg_decode_opts_t opts = {.endpoint = "https"};
    char err[256];
    assert_int_equal(zg_instance_decode("member_0000000001", ss, strlen(ss),
                                        &opts, &inst, err, sizeof(err)),
                     0);
    assert_true(inst.tls);
    assert_int_equal(inst.port, 443);
    assert_true(zg_instance_use_tls(&inst, ZG_UPSTREAM_TLS_AUTO, &port));
    zg_instance_clear(&inst);
    assert_int_equal(zg_instance_decode("member_0000000001", ss, strlen(ss),
                                        NULL, &inst, err, sizeof(err)),
                     0);
    assert_false(inst.tls);
    assert_int_equal(inst.port, 80);
    zg_instance_clear(&inst);
  }
}

static void test_curator_bad(void **state) {
  /* Neither port. */
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":\"10.1.2.3\",\"port\":null,"
                    "\"sslPort\":null,\"serviceType\":\"DYNAMIC\"}");
  /* A port as a string that is no port (test_string_ports for good ones),
   * out of range, negative, fractional, zero. */
  decode_bad(CHILD, "{\"name\":\"s\",\"address\":\"10.1.2.3\",\"port\":\"80x\","
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
  /* Free text in the data: the name is the address (docs/registry-formats.md),
   * the text may carry a weight (test_text_weight). */
  decode_ok("10.0.0.7:9000", "@params", &w);

  decode_bad("instance0000000001", "");
  decode_bad_len("member_0000000001", NULL, 0);
  decode_bad("10.0.0.7", "");
  decode_bad("10.0.0.7:0", "");
}

/* ------------------------------------------------------------ serverset */

/* The serverset fixture from docs/registry-formats.md, verbatim. */
static const char serverset_json[] =
    "{\"serviceEndpoint\":{\"host\":\"somehostname\",\"port\":31943},\n"
    " \"additionalEndpoints\":{\"http\":{\"host\":\"somehostname\","
    "\"port\":31943},\n"
    "                        \"otherport\":{\"host\":\"somehostname\","
    "\"port\":31944}},\n"
    " \"status\":\"ALIVE\",\"shard\":0,\"metadata\":{\"k\":\"v\"}}";

#define MEMBER "member_0000000007"

/* A serverset member with `status_member` (a JSON member, or "" for
 * none) before the fixture's endpoints. */
static const char *serverset_with(char *buf, size_t len,
                                  const char *status_member) {
  snprintf(buf, len,
           "{%s\"serviceEndpoint\":{\"host\":\"10.2.0.1\",\"port\":9000},"
           "\"additionalEndpoints\":{"
           "\"https\":{\"host\":\"10.2.0.1\",\"port\":9443},"
           "\"admin\":{\"host\":\"10.2.0.2\",\"port\":9990}},"
           "\"shard\":3}",
           status_member);
  return buf;
}

static void test_serverset_fixture(void **state) {
  const struct want w =
      WANT("somehostname", 31943, false, false, ZG_FORMAT_SERVERSET, NULL);

  decode_ok(MEMBER, serverset_json, &w);
}

static void test_serverset_status(void **state) {
  const struct want up =
      WANT("10.2.0.1", 9000, false, true, ZG_FORMAT_SERVERSET, NULL);
  const struct want down = WANT_UW("10.2.0.1", 9000, false, true,
                                   ZG_FORMAT_SERVERSET, NULL, false, 1);
  static const char *const not_alive[] = {
      "\"status\":\"DEAD\",",
      "\"status\":\"STARTING\",",
      "\"status\":\"STOPPING\",",
      "\"status\":\"STOPPED\",",
      "\"status\":\"WARNING\",",
      "\"status\":\"alive\",",
      "\"status\":1,",
  };
  char buf[512];

  decode_ok(MEMBER, serverset_with(buf, sizeof(buf), "\"status\":\"ALIVE\","),
            &up);
  /* No status at all: in service. */
  decode_ok(MEMBER, serverset_with(buf, sizeof(buf), ""), &up);
  for (size_t i = 0; i < sizeof(not_alive) / sizeof(not_alive[0]); i++)
    decode_ok(MEMBER, serverset_with(buf, sizeof(buf), not_alive[i]), &down);
}

static void test_serverset_skip(void **state) {
  const zg_decode_opts_t opts = {.endpoint = "admin"};
  char buf[512];

  /* Only member_* children are instances: ZG_ESKIP, with the name. */
  decode_fails("other_1", serverset_json, strlen(serverset_json), NULL,
               ZG_ESKIP, "other_1");
  decode_fails("leader_0000000001", serverset_json, strlen(serverset_json),
               NULL, ZG_ESKIP, "member_");
  decode_fails("member", serverset_json, strlen(serverset_json), NULL, ZG_ESKIP,
               NULL);
  serverset_with(buf, sizeof(buf), "\"status\":\"DEAD\",");
  decode_fails("other_1", buf, strlen(buf), &opts, ZG_ESKIP, "other_1");
}

static void test_serverset_endpoint(void **state) {
  const zg_decode_opts_t none = {.endpoint = NULL};
  const zg_decode_opts_t other = {.endpoint = "otherport"};
  const zg_decode_opts_t http = {.endpoint = "http"};
  const zg_decode_opts_t https = {.endpoint = "https"};
  const zg_decode_opts_t admin = {.endpoint = "admin"};
  const zg_decode_opts_t missing = {.endpoint = "thrift"};
  const struct want fix_main =
      WANT("somehostname", 31943, false, false, ZG_FORMAT_SERVERSET, NULL);
  const struct want fix_other =
      WANT("somehostname", 31944, false, false, ZG_FORMAT_SERVERSET, NULL);
  const struct want w_https =
      WANT("10.2.0.1", 9443, true, true, ZG_FORMAT_SERVERSET, NULL);
  const struct want w_admin_dead = WANT_UW("10.2.0.2", 9990, false, true,
                                           ZG_FORMAT_SERVERSET, NULL, false, 1);
  const size_t n = strlen(serverset_json);
  char buf[512];

  decode_ok_opts(MEMBER, serverset_json, n, &none, &fix_main);
  decode_ok_opts(MEMBER, serverset_json, n, &other, &fix_other);
  decode_ok_opts(MEMBER, serverset_json, n, &http, &fix_main);
  serverset_with(buf, sizeof(buf), "");
  decode_ok_opts(MEMBER, buf, strlen(buf), &https, &w_https);
  serverset_with(buf, sizeof(buf), "\"status\":\"DEAD\",");
  decode_ok_opts(MEMBER, buf, strlen(buf), &admin, &w_admin_dead);
  /* A missing endpoint is named in the reason. */
  decode_fails(MEMBER, serverset_json, n, &missing, ZG_EDECODE, "thrift");
  decode_fails(MEMBER, serverset_json, n, &https, ZG_EDECODE, "https");
}

static void test_serverset_bad(void **state) {
  decode_bad(MEMBER, "{\"serviceEndpoint\":{\"host\":\"h\"},"
                     "\"status\":\"ALIVE\"}");
  decode_bad(MEMBER, "{\"serviceEndpoint\":{\"host\":7,\"port\":80}}");
  decode_bad(MEMBER, "{\"serviceEndpoint\":{\"host\":\"h\",\"port\":0}}");
  decode_bad(MEMBER, "{\"serviceEndpoint\":null,\"additionalEndpoints\":{}}");
  decode_bad(MEMBER, "{\"serviceEndpoint\":\"h:80\"}");
}

/* ------------------------------------------------- Curator: status, weight */

/* The Spring Cloud fixture with its instance_status and metadata changed;
 * `extra` goes into the envelope. */
static const char *spring_with(char *buf, size_t len, const char *metadata,
                               const char *extra) {
  snprintf(buf, len,
           "{\"name\":\"cloud-provider-payment\",\"id\":\"41d739e4\","
           "\"address\":\"10.3.0.4\",\"port\":8004,\"sslPort\":null,%s"
           "\"payload\":{\"@class\":\"org.springframework.cloud.zookeeper."
           "discovery.ZookeeperInstance\",\"id\":\"application-1\","
           "\"name\":\"cloud-provider-payment\",\"metadata\":{%s}},"
           "\"registrationTimeUTC\":1662110433938,\"serviceType\":\"DYNAMIC\"}",
           extra, metadata);
  return buf;
}

static void test_curator_status(void **state) {
  const struct want up =
      WANT("10.3.0.4", 8004, false, true, ZG_FORMAT_CURATOR, NULL);
  const struct want down =
      WANT_UW("10.3.0.4", 8004, false, true, ZG_FORMAT_CURATOR, NULL, false, 1);
  const struct want fixture =
      WANT("localhost", 8004, false, false, ZG_FORMAT_CURATOR, NULL);
  char buf[1024];

  decode_ok(CHILD, curator_json, &fixture);
  decode_ok(CHILD,
            spring_with(buf, sizeof(buf), "\"instance_status\":\"UP\"", ""),
            &up);
  decode_ok(CHILD,
            spring_with(buf, sizeof(buf), "\"instance_status\":\"up\"", ""),
            &up);
  decode_ok(CHILD, spring_with(buf, sizeof(buf), "", ""), &up);
  decode_ok(CHILD,
            spring_with(buf, sizeof(buf),
                        "\"instance_status\":\"OUT_OF_SERVICE\"", ""),
            &down);
  decode_ok(CHILD,
            spring_with(buf, sizeof(buf), "\"instance_status\":\"DOWN\"", ""),
            &down);
  /* enabled: absent or true in service, false out. */
  decode_ok(CHILD,
            spring_with(buf, sizeof(buf), "\"instance_status\":\"UP\"",
                        "\"enabled\":true,"),
            &up);
  decode_ok(CHILD,
            spring_with(buf, sizeof(buf), "\"instance_status\":\"UP\"",
                        "\"enabled\":false,"),
            &down);
  decode_ok(CHILD,
            "{\"address\":\"10.3.0.4\",\"port\":8004,\"enabled\":false,"
            "\"serviceType\":\"DYNAMIC\"}",
            &down);
  /* A string is not a boolean: refused, not read as enabled. */
  decode_bad_reason(CHILD,
                    spring_with(buf, sizeof(buf), "", "\"enabled\":\"false\","),
                    "enabled");
}

static void test_curator_weight(void **state) {
  const struct want w5 =
      WANT_UW("10.3.0.4", 8004, false, true, ZG_FORMAT_CURATOR, NULL, true, 5);
  const struct want w7 =
      WANT_UW("10.3.0.4", 8004, false, true, ZG_FORMAT_CURATOR, NULL, true, 7);
  const struct want w0 =
      WANT_UW("10.3.0.4", 8004, false, true, ZG_FORMAT_CURATOR, NULL, true, 0);
  const struct want wmax = WANT_UW("10.3.0.4", 8004, false, true,
                                   ZG_FORMAT_CURATOR, NULL, true, 1000000);
  const struct want down9 =
      WANT_UW("10.3.0.4", 8004, false, true, ZG_FORMAT_CURATOR, NULL, false, 9);
  const struct want w1 =
      WANT("10.3.0.4", 8004, false, true, ZG_FORMAT_CURATOR, NULL);
  /* Not weights: the instance serves with the default weight, warned. */
  static const char *const bad[] = {
      "\"weight\":\"1.5\"",     "\"weight\":\"-1\"",
      "\"weight\":\"\"",        "\"weight\":\" 5\"",
      "\"weight\":\"1000001\"", "\"weight\":1.5",
      "\"weight\":-1",          "\"weight\":1000001",
      "\"weight\":true",        "\"weight\":\"99999999999999999999\"",
      "\"weight\":\"NaN\"",     "\"weight\":NaN",
      "\"weight\":-Infinity",   "\"weight\":[]",
  };
  char buf[1024];

  decode_ok(CHILD, spring_with(buf, sizeof(buf), "\"weight\":\"5\"", ""), &w5);
  decode_ok(CHILD, spring_with(buf, sizeof(buf), "\"weight\":7", ""), &w7);
  decode_ok(CHILD, spring_with(buf, sizeof(buf), "\"weight\":\"0\"", ""), &w0);
  decode_ok(CHILD, spring_with(buf, sizeof(buf), "\"weight\":\"1000000\"", ""),
            &wmax);
  decode_ok(CHILD,
            spring_with(buf, sizeof(buf),
                        "\"instance_status\":\"OUT_OF_SERVICE\","
                        "\"weight\":\"9\"",
                        ""),
            &down9);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    decode_warns(CHILD, spring_with(buf, sizeof(buf), bad[i], ""), &w1,
                 "weight");
}

static void test_curator_dubbo3(void **state) {
  /* Dubbo 3 application-level registration: the Curator envelope at
   * /services/<app>/<ip:port>, Dubbo's own payload class. */
  static const char dubbo3[] =
      "{\"name\":\"demo-provider\",\"id\":\"10.0.1.9:20880\","
      "\"address\":\"10.0.1.9\",\"port\":20880,\"sslPort\":null,"
      "\"payload\":{\"@class\":\"org.apache.dubbo.registry.zookeeper."
      "ZookeeperInstance\",\"id\":\"10.0.1.9:20880\","
      "\"name\":\"demo-provider\",\"metadata\":{"
      "\"dubbo.endpoints\":\"[{\\\"port\\\":20880,\\\"protocol\\\":"
      "\\\"dubbo\\\"}]\","
      "\"dubbo.metadata.revision\":\"a1b2c3\","
      "\"dubbo.metadata.storage-type\":\"local\"}},"
      "\"registrationTimeUTC\":1662110433938,\"serviceType\":\"DYNAMIC\","
      "\"uriSpec\":null}";
  const struct want w =
      WANT("10.0.1.9", 20880, false, true, ZG_FORMAT_CURATOR, NULL);

  decode_ok("10.0.1.9:20880", dubbo3, &w);
  decode_ok(CHILD, dubbo3, &w);
}

/* A Curator instance whose uriSpec has `parts` (a JSON array body). */
static const char *uri_spec_with(char *buf, size_t len, const char *parts) {
  snprintf(buf, len,
           "{\"name\":\"s\",\"id\":\"1\",\"address\":\"10.3.0.5\","
           "\"port\":8080,\"sslPort\":null,\"serviceType\":\"DYNAMIC\","
           "\"uriSpec\":{\"parts\":[%s]}}",
           parts);
  return buf;
}

#define PART(v, var) "{\"value\":\"" v "\",\"variable\":" #var "}"
#define AUTHORITY                                                              \
  PART("scheme", true)                                                         \
  "," PART("://", false) "," PART("address", true) "," PART(                   \
      ":", false) "," PART("port", true)

/* What upstream_protocol = auto reads (docs/registry-formats.md, "HTTP/2
 * and gRPC"): h2 URL schemes (h2, h2c, grpc cleartext; h2s, grpcs TLS),
 * a Curator uriSpec scheme or payload protocol, a serverset endpoint
 * named grpc/h2 (chosen, or on serviceEndpoint's port). Anything else
 * says nothing. */
static void test_h2_registrations(void **state) {
  static const struct {
    const char *data;
    bool h2, tls;
    uint16_t port;
  } cases[] = {
      {"grpc://10.0.0.1:50051", true, false, 50051},
      {"GRPC://10.0.0.1:50051/", true, false, 50051},
      {"h2c://10.0.0.1:8080", true, false, 8080},
      {"h2://10.0.0.1:8080", true, false, 8080},
      {"grpcs://10.0.0.1:8443", true, true, 8443},
      {"h2s://10.0.0.1:8443", true, true, 8443},
      {"http://10.0.0.1:8080", false, false, 8080},
      {"https://10.0.0.1:8443", false, true, 8443},
      {"tcp://10.0.0.1:9", false, false, 9},
      {"grpcx://10.0.0.1:9", false, false, 9},
      {"10.0.0.1:9", false, false, 9},
      /* Curator: uriSpec's scheme, payload.protocol, metadata.protocol */
      {"{\"address\":\"10.0.0.2\",\"port\":50051,\"uriSpec\":{\"parts\":"
       "[{\"value\":\"grpc\",\"variable\":false},{\"value\":\"://\","
       "\"variable\":false}]}}",
       true, false, 50051},
      {"{\"address\":\"10.0.0.2\",\"port\":50051,\"uriSpec\":{\"parts\":"
       "[{\"value\":\"grpcs://\",\"variable\":false}]}}",
       true, true, 50051},
      {"{\"address\":\"10.0.0.2\",\"port\":50051,"
       "\"payload\":{\"protocol\":\"h2c\"}}",
       true, false, 50051},
      {"{\"address\":\"10.0.0.2\",\"port\":50051,"
       "\"payload\":{\"metadata\":{\"protocol\":\"grpc\"}}}",
       true, false, 50051},
      {"{\"address\":\"10.0.0.2\",\"port\":50051,"
       "\"payload\":{\"metadata\":{\"protocol\":\"dubbo\"}}}",
       false, false, 50051},
      {"{\"address\":\"10.0.0.2\",\"port\":50051,"
       "\"payload\":{\"protocol\":7}}",
       false, false, 50051},
      /* serverset: serviceEndpoint on the port named grpc */
      {"{\"serviceEndpoint\":{\"host\":\"10.0.0.3\",\"port\":9000},"
       "\"additionalEndpoints\":{\"grpc\":{\"host\":\"10.0.0.3\","
       "\"port\":9000},\"admin\":{\"host\":\"10.0.0.3\",\"port\":9990}},"
       "\"status\":\"ALIVE\"}",
       true, false, 9000},
      {"{\"serviceEndpoint\":{\"host\":\"10.0.0.3\",\"port\":9000},"
       "\"additionalEndpoints\":{\"grpc\":{\"host\":\"10.0.0.3\","
       "\"port\":9001}},\"status\":\"ALIVE\"}",
       false, false, 9000},
  };
  const zg_decode_opts_t grpc = {.endpoint = "grpc"};
  const char *ss = "{\"serviceEndpoint\":{\"host\":\"10.0.0.3\",\"port\":80},"
                   "\"additionalEndpoints\":{\"grpc\":{\"host\":\"10.0.0.3\","
                   "\"port\":9001}},\"status\":\"ALIVE\"}";
  zg_instance_t inst;
  char err[256];
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *name =
        cases[i].data[0] == '{' && strstr(cases[i].data, "serviceEndpoint")
            ? MEMBER
            : CHILD;
    int rc = zg_instance_decode(name, cases[i].data, strlen(cases[i].data),
                                NULL, &inst, err, sizeof(err));
    if (rc != 0)
      print_error("case %zu: %s\n", i, err);
    assert_int_equal(rc, 0);
    if ((inst.proto == ZG_INST_PROTO_H2) != cases[i].h2 ||
        inst.tls != cases[i].tls || inst.port != cases[i].port)
      print_error("case %zu: %s\n", i, cases[i].data);
    assert_int_equal(inst.proto,
                     cases[i].h2 ? ZG_INST_PROTO_H2 : ZG_INST_PROTO_ANY);
    assert_int_equal(inst.tls, cases[i].tls);
    assert_int_equal(inst.port, cases[i].port);
    assert_int_equal(zg_instance_use_h2(&inst, ZG_UPSTREAM_PROTO_AUTO),
                     cases[i].h2 ? 1 : -1);
    assert_int_equal(zg_instance_use_h2(&inst, ZG_UPSTREAM_PROTO_HTTP1), 0);
    assert_int_equal(zg_instance_use_h2(&inst, ZG_UPSTREAM_PROTO_H2), 1);
    zg_instance_clear(&inst);
  }
  /* endpoint = grpc picks that endpoint, and it speaks h2 */
  assert_int_equal(zg_instance_decode(MEMBER, ss, strlen(ss), &grpc, &inst, err,
                                      sizeof(err)),
                   0);
  assert_int_equal(inst.port, 9001);
  assert_int_equal(inst.proto, ZG_INST_PROTO_H2);
  /* a copy keeps it */
  {
    zg_instance_t copy;
    assert_int_equal(zg_instance_copy(&copy, &inst), 0);
    assert_int_equal(copy.proto, ZG_INST_PROTO_H2);
    zg_instance_clear(&copy);
  }
  zg_instance_clear(&inst);
}

static void test_curator_uri_spec(void **state) {
  const struct want none =
      WANT("10.3.0.5", 8080, false, true, ZG_FORMAT_CURATOR, NULL);
  const struct want api =
      WANT("10.3.0.5", 8080, false, true, ZG_FORMAT_CURATOR, "/api/v1");
  const struct want tls_api =
      WANT("10.3.0.5", 8080, true, true, ZG_FORMAT_CURATOR, "/api");
  const struct want tls_none =
      WANT("10.3.0.5", 8080, true, true, ZG_FORMAT_CURATOR, NULL);
  char buf[1024];

  decode_ok(CHILD, uri_spec_with(buf, sizeof(buf), AUTHORITY), &none);
  decode_ok(
      CHILD,
      uri_spec_with(buf, sizeof(buf), AUTHORITY "," PART("/api/v1/", false)),
      &api);
  /* Variables after the literal path are not expanded. */
  decode_ok(CHILD,
            uri_spec_with(buf, sizeof(buf),
                          AUTHORITY "," PART("/api/v1/", false) "," PART(
                              "version", true) "," PART("/x", false)),
            &api);
  /* "/" alone is no base path, and a query is not part of it. */
  decode_ok(CHILD,
            uri_spec_with(buf, sizeof(buf), AUTHORITY "," PART("/", false)),
            &none);
  decode_ok(CHILD,
            uri_spec_with(buf, sizeof(buf),
                          AUTHORITY
                          "," PART("/api/v1?x=", false) "," PART("id", true)),
            &api);
  /* A variable named like a path is no literal. */
  decode_ok(CHILD,
            uri_spec_with(buf, sizeof(buf), AUTHORITY "," PART("/api", true)),
            &none);
  /* A literal https scheme, alone or with its separator. */
  decode_ok(CHILD,
            uri_spec_with(
                buf, sizeof(buf),
                PART("https", false) "," PART("://", false) "," PART(
                    "address",
                    true) "," PART(":", false) "," PART("port",
                                                        true) "," PART("/api",
                                                                       false)),
            &tls_api);
  decode_ok(
      CHILD,
      uri_spec_with(buf, sizeof(buf),
                    PART("https://", false) "," PART("address", true) "," PART(
                        ":", false) "," PART("port", true)),
      &tls_none);
  /* A literal http scheme is plain. */
  decode_ok(
      CHILD,
      uri_spec_with(buf, sizeof(buf),
                    PART("http://", false) "," PART("address", true) "," PART(
                        ":", false) "," PART("port", true)),
      &none);
  /* Control characters in the path are refused, as in URL data. */
  decode_bad_reason(
      CHILD, uri_spec_with(buf, sizeof(buf), AUTHORITY "," PART("/a b", false)),
      "base path");
}

/* ----------------------------------------------------------------- Nerve */

/* The Nerve fixture from docs/registry-formats.md, verbatim. */
static const char nerve_json[] =
    "{\"host\":\"10.0.1.5\",\"port\":8080,\"name\":\"i-0abc123\","
    "\"weight\":10,\n"
    " \"haproxy_server_options\":\"backup\",\"labels\":{\"az\":"
    "\"us-east-1a\"}}";

static void test_nerve_fixture(void **state) {
  const struct want w =
      WANT_UW("10.0.1.5", 8080, false, true, ZG_FORMAT_NERVE, NULL, true, 10);

  decode_ok("i-0abc123_0000000004", nerve_json, &w);
}

static void test_nerve_flags(void **state) {
  const struct want up =
      WANT("nerve.example.com", 81, false, false, ZG_FORMAT_NERVE, NULL);
  const struct want down = WANT_UW("nerve.example.com", 81, false, false,
                                   ZG_FORMAT_NERVE, NULL, false, 1);
  const struct want w0 = WANT_UW("nerve.example.com", 81, false, false,
                                 ZG_FORMAT_NERVE, NULL, true, 0);
  const struct want max = WANT_UW("nerve.example.com", 81, false, false,
                                  ZG_FORMAT_NERVE, NULL, true, 1000000);
  const struct want v6 =
      WANT("2001:db8::5", 81, false, true, ZG_FORMAT_NERVE, NULL);
  const struct want w10 = WANT_UW("nerve.example.com", 81, false, false,
                                  ZG_FORMAT_NERVE, NULL, true, 10);

#define NERVE(extra) "{\"host\":\"nerve.example.com\",\"port\":81" extra "}"
  decode_ok(CHILD, NERVE(""), &up);
  decode_ok(CHILD, NERVE(",\"down\":false"), &up);
  decode_ok(CHILD, NERVE(",\"down\":true"), &down);
  decode_ok(CHILD, NERVE(",\"haproxy_server_options\":\"disabled\""), &down);
  decode_ok(CHILD, NERVE(",\"haproxy_server_options\":\"backup disabled\""),
            &down);
  decode_ok(CHILD,
            NERVE(",\"haproxy_server_options\":\"disabled check inter 2s\""),
            &down);
  /* Only the word: not a part of another one. */
  decode_ok(CHILD, NERVE(",\"haproxy_server_options\":\"nodisabled\""), &up);
  decode_ok(CHILD, NERVE(",\"haproxy_server_options\":\"disabledx backup\""),
            &up);
  decode_ok(CHILD, NERVE(",\"haproxy_server_options\":\"backup\""), &up);
  decode_ok(CHILD, NERVE(",\"weight\":0"), &w0);
  decode_ok(CHILD, NERVE(",\"weight\":1000000"), &max);
  decode_ok(CHILD, NERVE(",\"weight\":null"), &up);
  decode_ok(CHILD, "{\"host\":\"2001:db8::5\",\"port\":81}", &v6);

  /* A weight that cannot be read costs the instance nothing but its
   * weight: the default one, with a warning. */
  decode_warns(CHILD, NERVE(",\"weight\":-1"), &up, "weight");
  decode_warns(CHILD, NERVE(",\"weight\":1000001"), &up, "weight");
  decode_warns(CHILD, NERVE(",\"weight\":1.5"), &up, "weight");
  decode_warns(CHILD, NERVE(",\"weight\":2.0"), &up, "weight");
  decode_warns(CHILD, NERVE(",\"weight\":\"1.5\""), &up, "weight");
  decode_warns(CHILD, NERVE(",\"weight\":NaN"), &up, "NaN");
  decode_warns(CHILD, NERVE(",\"weight\":Infinity,\"down\":false"), &up,
               "Infinity");
  decode_warns(CHILD, NERVE(",\"weight\":-Infinity"), &up, "weight");
  decode_ok(CHILD, NERVE(",\"weight\":\"10\""), &w10);
  decode_bad_reason(CHILD, NERVE(",\"down\":\"yes\""), "down");
  /* NaN as a value elsewhere is judged by its field: a string, ignored
   * where unknown, refused as a port. Inside a string it is text. */
  decode_ok(CHILD, NERVE(",\"name\":\"NaN Infinity\",\"x\":[NaN,-Infinity]"),
            &up);
  decode_bad(CHILD, "{\"host\":\"10.0.1.5\",\"port\":NaN}");
  decode_bad(CHILD, "{\"host\":\"10.0.1.5\",\"port\":8080,\"w\":NaNa}");
#undef NERVE
  /* A port in a string: the text must be a port. */
  decode_ok(CHILD, "{\"host\":\"nerve.example.com\",\"port\":\"81\"}", &up);
  decode_bad(CHILD, "{\"host\":\"10.0.1.5\",\"port\":\"80a\"}");
  decode_bad(CHILD, "{\"host\":\"10.0.1.5\",\"port\":\" 80\"}");
  decode_bad(CHILD, "{\"host\":\"10.0.1.5\",\"port\":\"0\"}");
  decode_bad(CHILD, "{\"host\":\"10.0.1.5\",\"port\":\"65536\"}");
  decode_bad(CHILD, "{\"host\":\"10.0.1.5\",\"port\":\"\"}");
  decode_bad(CHILD, "{\"host\":\"10.0.1.5\",\"port\":null}");
  decode_bad(CHILD, "{\"host\":\"\",\"port\":8080}");
}

/* ------------------------------------------------- Nerve, path-encoded */

/* printf '%s' "$NERVE_JSON" | base64 -w0 | tr '+/' '-_', for the fixture
 * on one line (168 characters, one '=' of padding). */
static const char nerve_b64[] =
    "eyJob3N0IjoiMTAuMC4xLjUiLCJwb3J0Ijo4MDgwLCJuYW1lIjoiaS0wYWJjMTIzIiwid2Vp"
    "Z2h0IjoxMCwiaGFwcm94eV9zZXJ2ZXJfb3B0aW9ucyI6ImJhY2t1cCIsImxhYmVscyI6eyJh"
    "eiI6InVzLWVhc3QtMWEifX0=";
static const char nerve_json_line[] =
    "{\"host\":\"10.0.1.5\",\"port\":8080,\"name\":\"i-0abc123\","
    "\"weight\":10,\"haproxy_server_options\":\"backup\","
    "\"labels\":{\"az\":\"us-east-1a\"}}";

/* Same for {"host":"10.0.1.6","port":8081,"weight":3,"x":"???>>>"}: its
 * text holds '_' and '-', and "==" of padding. */
#define NERVE_B64_UNDERSCORE                                                   \
  "eyJob3N0IjoiMTAuMC4xLjYiLCJwb3J0Ijo4MDgxLCJ3ZWlnaHQiOjMsIngiOiI_Pz8-"       \
  "Pj4ifQ=="

/* A tiny URL-safe base64 encoder (RFC 4648 section 5) for round trips. */
static void b64url(const char *in, size_t n, bool pad, char *out) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
      "0123456789-_";
  size_t j = 0;

  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)(unsigned char)in[i] << 16;

    if (i + 1 < n)
      v |= (uint32_t)(unsigned char)in[i + 1] << 8;
    if (i + 2 < n)
      v |= (unsigned char)in[i + 2];
    out[j++] = abc[(v >> 18) & 63];
    out[j++] = abc[(v >> 12) & 63];
    if (i + 1 < n)
      out[j++] = abc[(v >> 6) & 63];
    else if (pad)
      out[j++] = '=';
    if (i + 2 < n)
      out[j++] = abc[v & 63];
    else if (pad)
      out[j++] = '=';
  }
  out[j] = '\0';
}

/* base64_<len>_<text>_<seq> for `json`, as Nerve names its child. */
static const char *nerve_name_of(const char *json, bool pad, size_t seq,
                                 char *name, size_t len) {
  char enc[256];

  assert_true(strlen(json) < sizeof(enc) / 4 * 3 - 3);
  b64url(json, strlen(json), pad, enc);
  snprintf(name, len, "base64_%zu_%s_%010zu", strlen(enc), enc, seq);
  return name;
}

static void test_nerve_name_fixture(void **state) {
  const struct want w = WANT_UW("10.0.1.5", 8080, false, true,
                                ZG_FORMAT_NERVE_NAME, NULL, true, 10);
  const struct want w6 = WANT_UW("10.0.1.6", 8081, false, true,
                                 ZG_FORMAT_NERVE_NAME, NULL, true, 3);
  char enc[256];

  /* The test's encoder agrees with base64(1) on the fixture. */
  b64url(nerve_json_line, strlen(nerve_json_line), true, enc);
  assert_string_equal(enc, nerve_b64);
  assert_int_equal(strlen(nerve_b64), 168);

  decode_name_ok("base64_168_" /* nerve_b64 */
                 "eyJob3N0IjoiMTAuMC4xLjUiLCJwb3J0Ijo4MDgwLCJuYW1lIjoiaS0wYWJj"
                 "MTIzIiwid2VpZ2h0IjoxMCwiaGFwcm94eV9zZXJ2ZXJfb3B0aW9ucyI6ImJh"
                 "Y2t1cCIsImxhYmVscyI6eyJheiI6InVzLWVhc3QtMWEifX0="
                 "_0000000003",
                 &w);
  /* '_' inside the text: the length, not the next '_', ends it. */
  decode_name_ok("base64_76_" NERVE_B64_UNDERSCORE "_0000000012", &w6);
  /* Without padding, as unpadded encoders write it. */
  decode_name_ok("base64_74_eyJob3N0IjoiMTAuMC4xLjYiLCJwb3J0Ijo4MDgxLCJ3ZWlna"
                 "HQiOjMsIngiOiI_Pz8-Pj4ifQ_0000000012",
                 &w6);
  /* No sequence after the last '_' (a persistent node). */
  decode_name_ok("base64_76_" NERVE_B64_UNDERSCORE "_", &w6);
}

static void test_nerve_name_round_trip(void **state) {
  /* Lengths 0, 1 and 2 mod 3 (no, two and one padding bytes), with bytes
   * that encode to '-' and '_', and a down instance. */
  static const struct {
    const char *json;
    struct want w;
  } cases[] = {
      {"{\"host\":\"h.example\",\"port\":1,\"l\":\"~~~?\"}",
       WANT("h.example", 1, false, false, ZG_FORMAT_NERVE_NAME, NULL)},
      {"{\"host\":\"10.0.0.9\",\"port\":65535,\"weight\":0,\"x\":\">>?\"}",
       WANT_UW("10.0.0.9", 65535, false, true, ZG_FORMAT_NERVE_NAME, NULL, true,
               0)},
      {"{\"host\":\"::1\",\"port\":443,\"down\":true,\"labels\":{}}",
       WANT_UW("::1", 443, false, true, ZG_FORMAT_NERVE_NAME, NULL, false, 1)},
      {"{\"host\":\"10.0.0.8\",\"port\":80,"
       "\"haproxy_server_options\":\"disabled\",\"weight\":42}",
       WANT_UW("10.0.0.8", 80, false, true, ZG_FORMAT_NERVE_NAME, NULL, false,
               42)},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (int pad = 0; pad <= 1; pad++) {
      char name[320];

      decode_name_ok(nerve_name_of(cases[i].json, pad, i, name, sizeof(name)),
                     &cases[i].w);
    }
  }
}

static void test_nerve_name_bad(void **state) {
  char name[320];

  /* Wrong <len>: one short, one long, far too long, huge, missing. */
  decode_name_bad(
      "base64_167_"
      "eyJob3N0IjoiMTAuMC4xLjUiLCJwb3J0Ijo4MDgwLCJuYW1lIjoiaS0wYWJjMTIz"
      "Iiwid2VpZ2h0IjoxMCwiaGFwcm94eV9zZXJ2ZXJfb3B0aW9ucyI6ImJhY2t1cCIs"
      "ImxhYmVscyI6eyJheiI6InVzLWVhc3QtMWEifX0=_0000000003",
      "length");
  snprintf(name, sizeof(name), "base64_169_%s_0000000003", nerve_b64);
  decode_name_bad(name, "length");
  snprintf(name, sizeof(name), "base64_1000_%s_0000000003", nerve_b64);
  decode_name_bad(name, "length");
  snprintf(name, sizeof(name), "base64_99999999999999999999999_%s_1",
           nerve_b64);
  decode_name_bad(name, NULL);
  snprintf(name, sizeof(name), "base64__%s_0000000003", nerve_b64);
  decode_name_bad(name, "length");
  snprintf(name, sizeof(name), "base64_%s_0000000003", nerve_b64);
  decode_name_bad(name, "length");
  /* The '_' inside the text (at offset 63) taken for its end. */
  decode_name_bad("base64_63_" NERVE_B64_UNDERSCORE "_0000000012", "length");
  /* Anything but a sequence after the text. */
  decode_name_bad("base64_76_" NERVE_B64_UNDERSCORE "_12a", "length");
  decode_name_bad("base64_76_" NERVE_B64_UNDERSCORE "_0000000012_1", "length");
  decode_name_bad("base64_76_" NERVE_B64_UNDERSCORE, "length");
  /* Bad base64: a character outside the URL-safe alphabet, the standard
   * alphabet's '+', a length that is 1 mod 4, padding in the middle or
   * three of it. */
  decode_name_bad("base64_8_eyJo*3N0_1", "base64");
  decode_name_bad("base64_8_eyJo+3N0_1", "base64");
  decode_name_bad("base64_5_eyJob_1", "base64");
  decode_name_bad("base64_8_ey=ob3N0_1", "base64");
  decode_name_bad("base64_8_eyJob===_1", "base64");
  decode_name_bad("base64_0__1", NULL);
  /* Good base64 of something that is not a Nerve instance. */
  decode_name_bad(nerve_name_of("not json", true, 1, name, sizeof(name)),
                  "JSON");
  decode_name_bad(nerve_name_of("[1,2]", false, 1, name, sizeof(name)),
                  "object");
  decode_name_bad(
      nerve_name_of("{\"host\":\"10.0.0.1\"}", false, 1, name, sizeof(name)),
      "port");
  /* A bad weight in the name: the default weight, with a warning. */
  {
    const struct want w1 =
        WANT("10.0.0.1", 80, false, true, ZG_FORMAT_NERVE_NAME, NULL);
    decode_name_warns(nerve_name_of("{\"host\":\"10.0.0.1\",\"port\":80,"
                                    "\"weight\":-3}",
                                    false, 1, name, sizeof(name)),
                      &w1, "weight");
  }
}

/* ----------------------------------------------------------- Registrator */

/* The Registrator fixture from docs/registry-formats.md, verbatim. */
static const char registrator_json[] =
    "{\"Name\":\"web\",\"IP\":\"10.0.1.7\",\"PublicPort\":32768,"
    "\"PrivatePort\":80,\n"
    " \"ContainerID\":\"c0ffee\",\"Tags\":[\"prod\"],\"Attrs\":{}}";

static void test_registrator(void **state) {
  const struct want w =
      WANT("10.0.1.7", 32768, false, true, ZG_FORMAT_REGISTRATOR, NULL);

  decode_ok("10.0.1.7:32768", registrator_json, &w);
  decode_ok(CHILD, registrator_json, &w);
  decode_bad(CHILD, "{\"IP\":\"10.0.1.7\",\"PublicPort\":null}");
  decode_bad(CHILD, "{\"IP\":\"10.0.1.7\",\"PublicPort\":\"32768/tcp\"}");
  decode_bad(CHILD, "{\"IP\":\"\",\"PublicPort\":32768}");
  /* Without the port only PrivatePort is left, which is not reachable. */
  decode_bad(CHILD, "{\"IP\":\"10.0.1.7\",\"PrivatePort\":80}");
}

/* ------------------------------------------------------------ etcd-addr */

/* The etcd naming fixture from docs/registry-formats.md, verbatim. */
static const char etcd_addr_json[] =
    "{\"Addr\":\"10.0.2.4:9000\",\"Metadata\":{\"zone\":\"a\","
    "\"weight\":3}}";

static void test_etcd_addr(void **state) {
  const struct want w = WANT_UW("10.0.2.4", 9000, false, true,
                                ZG_FORMAT_ETCD_ADDR, NULL, true, 3);
  const struct want plain =
      WANT("web-1.internal", 80, false, false, ZG_FORMAT_ETCD_ADDR, NULL);
  const struct want url =
      WANT("10.0.2.5", 8443, true, true, ZG_FORMAT_ETCD_ADDR, NULL);
  zg_instance_t inst;
  char err[128];
  (void)state;
  decode_ok("10.0.2.4:9000", etcd_addr_json, &w);
  decode_ok(CHILD, "{\"Addr\":\"web-1.internal:80\"}", &plain);
  decode_ok(CHILD,
            "{\"Op\":0,\"Addr\":\"web-1.internal:80\",\"Metadata\":null}",
            &plain);
  decode_ok(CHILD, "{\"Addr\":\"https://10.0.2.5:8443\",\"Metadata\":\"x\"}",
            &url);
  decode_bad(CHILD, "{\"Addr\":\"\"}");
  decode_bad(CHILD, "{\"Addr\":\"10.0.2.4\"}");
  decode_bad(CHILD, "{\"Addr\":9000}");
  /* The older grpc-go update's deletion is no instance, and says so. */
  {
    static const char del[] = "{\"Op\":1,\"Addr\":\"h:1\"}";
    assert_int_equal(zg_instance_decode(CHILD, del, strlen(del), NULL, &inst,
                                        err, sizeof(err)),
                     ZG_ESKIP);
  }
  assert_non_null(strstr(err, "deletion"));
  /* The plain {"host","port"} shape many etcd registrars write reads as
   * Nerve's, which it is. */
  {
    const struct want hp =
        WANT("10.0.2.6", 7000, false, true, ZG_FORMAT_NERVE, NULL);
    decode_ok(CHILD, "{\"host\":\"10.0.2.6\",\"port\":7000}", &hp);
  }
  assert_string_equal(zg_instance_format_name(ZG_FORMAT_ETCD_ADDR),
                      "etcd-addr");
}

/* --------------------------------------------------------------- Dubbo 2 */

/* The Dubbo provider name from docs/registry-formats.md, verbatim. */
#define DUBBO_NAME                                                             \
  "dubbo%3A%2F%2F10.0.1.9%3A20880%2Fcom.example.DemoService%3Fanyhost%"        \
  "3Dtrue%26application%3Ddemo%26methods%3DsayHello"

/* The fixture's URL with `params` in place of its query. */
#define DUBBO_WITH(params)                                                     \
  "dubbo%3A%2F%2F10.0.1.9%3A20880%2Fcom.example.DemoService%3F" params

static void test_dubbo_fixture(void **state) {
  const struct want w =
      WANT("10.0.1.9", 20880, false, true, ZG_FORMAT_DUBBO, NULL);

  decode_name_ok(DUBBO_NAME, &w);
}

static void test_dubbo_params(void **state) {
  const struct want w50 =
      WANT_UW("10.0.1.9", 20880, false, true, ZG_FORMAT_DUBBO, NULL, true, 50);
  const struct want down =
      WANT_UW("10.0.1.9", 20880, false, true, ZG_FORMAT_DUBBO, NULL, false, 1);
  const struct want down50 =
      WANT_UW("10.0.1.9", 20880, false, true, ZG_FORMAT_DUBBO, NULL, false, 50);
  const struct want up =
      WANT("10.0.1.9", 20880, false, true, ZG_FORMAT_DUBBO, NULL);
  const struct want tri =
      WANT("provider.example", 50051, false, false, ZG_FORMAT_DUBBO, NULL);
  const struct want v6 = WANT_UW("2001:db8::9", 20880, false, true,
                                 ZG_FORMAT_DUBBO, NULL, true, 0);

  decode_name_ok(DUBBO_WITH("anyhost%3Dtrue%26weight%3D50%26side%3Dprovider"),
                 &w50);
  decode_name_ok(DUBBO_WITH("disabled%3Dtrue"), &down);
  decode_name_ok(DUBBO_WITH("enabled%3Dfalse%26weight%3D50"), &down50);
  decode_name_ok(DUBBO_WITH("enabled%3Dtrue%26disabled%3Dfalse"), &up);
  /* Parameter names are whole: default.weight is not weight. */
  decode_name_ok(DUBBO_WITH("default.weight%3D50%26xdisabled%3Dtrue"), &up);
  /* Lower-case hex in the escapes, another scheme, no path, IPv6. */
  decode_name_ok("dubbo%3a%2f%2f10.0.1.9%3a20880%2fcom.example.DemoService",
                 &up);
  decode_name_ok("tri%3A%2F%2Fprovider.example%3A50051", &tri);
  decode_name_ok("dubbo%3A%2F%2F%5B2001%3Adb8%3A%3A9%5D%3A20880%2FDemo%3F"
                 "weight%3D0",
                 &v6);
  /* Credentials, when a provider URL has them, are not the address. */
  decode_name_ok("dubbo%3A%2F%2Fadmin%3As3cret%4010.0.1.9%3A20880%2FDemo", &up);
}

static void test_dubbo_bad(void **state) {
  const struct want up1 =
      WANT("10.0.1.9", 20880, false, true, ZG_FORMAT_DUBBO, NULL);
  /* Malformed percent escapes: cut short, not hex, %00. */
  decode_name_bad(DUBBO_WITH("weight%3D5%"), "percent");
  decode_name_bad(DUBBO_WITH("weight%3D5%2"), "percent");
  decode_name_bad(DUBBO_WITH("weight%3D5%zz"), "percent");
  decode_name_bad(DUBBO_WITH("weight%3D5%G1"), "percent");
  decode_name_bad(DUBBO_WITH("weight%3D5%00"), "percent");
  decode_name_bad("dubbo%3A%2F%2F10.0.1.9%3A20880%2FDemo%", "percent");
  /* Weights out of range or not integers: the default weight, warned. */
  decode_name_warns(DUBBO_WITH("weight%3D1000001"), &up1, "weight");
  decode_name_warns(DUBBO_WITH("weight%3D-1"), &up1, "weight");
  decode_name_warns(DUBBO_WITH("weight%3D1.5"), &up1, "weight");
  decode_name_warns(DUBBO_WITH("weight%3DNaN"), &up1, "NaN");
  decode_name_warns(DUBBO_WITH("weight%3D"), &up1, "weight");
  decode_name_warns(DUBBO_WITH("weight%3D99999999999999999999"), &up1,
                    "weight");
  /* No port, no host, a bad port. */
  decode_name_bad("dubbo%3A%2F%2F10.0.1.9%2FDemo", "host:port");
  decode_name_bad("dubbo%3A%2F%2F%2FDemo", "host:port");
  decode_name_bad("dubbo%3A%2F%2F10.0.1.9%3A0%2FDemo", "host:port");
  decode_name_bad("dubbo%3A%2F%2F10.0.1.9%3A65536", "host:port");
}

/* ------------------------------------------------------------ name-only */

static void test_decode_name_other(void **state) {
  static const char *const names[] = {
      "member_0000000001",
      "10.0.0.1:80",
      CHILD,
      "i-0abc123_0000000004",
      "base64",
      "dubbo",
      "dubbo%3A",
      "%3A%2F%2Fh%3A1",
      "dubbo:%2F%2Fh%3A1",
      "9p%3A%2F%2Fh%3A1",
  };

  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    zg_instance_t inst;
    char err[64] = "";

    memset(&inst, 0x5a, sizeof(inst));
    assert_int_equal(zg_instance_decode_name(names[i], &inst, err, sizeof(err)),
                     1);
    assert_null(inst.name);
    assert_null(inst.base_path);
  }
}

/* ------------------------------------------------------- weights elsewhere */

static void test_url_query(void **state) {
  const struct want w5 =
      WANT_UW("10.0.0.1", 80, false, true, ZG_FORMAT_URL, "/api", true, 5);
  const struct want w0 =
      WANT_UW("10.0.0.1", 80, false, true, ZG_FORMAT_URL, NULL, true, 0);
  const struct want plain =
      WANT("10.0.0.1", 80, false, true, ZG_FORMAT_URL, "/x");
  const struct want http =
      WANT("10.0.0.1", 80, false, true, ZG_FORMAT_URL, NULL);
  const struct want https = WANT_UW("api.example.com", 443, true, false,
                                    ZG_FORMAT_URL, NULL, true, 1000000);
  const struct want api =
      WANT("10.0.0.1", 80, false, true, ZG_FORMAT_URL, "/api");

  decode_ok(CHILD, "http://10.0.0.1:80/api?weight=5", &w5);
  decode_ok(CHILD, "http://10.0.0.1:80/api/?a=b&weight=5&c", &w5);
  decode_ok(CHILD, "http://10.0.0.1:80?weight=0", &w0);
  decode_ok(CHILD, "http://10.0.0.1:80/?weight=0", &w0);
  decode_ok(CHILD, "http://10.0.0.1/x?zone=a", &plain);
  decode_ok(CHILD, "http://10.0.0.1/x?weights=7&xweight=7", &plain);
  decode_ok(CHILD, "https://api.example.com?weight=1000000", &https);

  decode_warns(CHILD, "http://10.0.0.1:80/api?weight=1000001", &api, "weight");
  decode_warns(CHILD, "http://10.0.0.1:80/api?weight=-1", &api, "weight");
  decode_warns(CHILD, "http://10.0.0.1:80/api?weight=1.5", &api, "weight");
  decode_warns(CHILD, "http://10.0.0.1:80/api?weight=NaN", &api, "NaN");
  decode_warns(CHILD, "http://10.0.0.1:80/api?weight=", &api, "weight");
  decode_warns(CHILD, "http://10.0.0.1:80/api?weight", &api, "weight");
  /* Fragments stay refused, before or after a query. */
  decode_bad_reason(CHILD, "http://10.0.0.1:80/api#top", "fragment");
  decode_bad_reason(CHILD, "http://10.0.0.1:80/api?weight=2#top", "fragment");
  /* An empty query is still a URL (RFC 3986 section 3.4). */
  decode_ok(CHILD, "http://10.0.0.1:80?", &http);
}

static void test_text_weight(void **state) {
  const struct want name2 =
      WANT_UW("10.0.0.7", 9000, false, true, ZG_FORMAT_NAME, NULL, true, 2);
  const struct want name1 =
      WANT("10.0.0.7", 9000, false, true, ZG_FORMAT_NAME, NULL);
  const struct want data3 =
      WANT_UW("10.0.0.5", 8080, false, true, ZG_FORMAT_HOSTPORT, NULL, true, 3);
  const struct want data1 =
      WANT("10.0.0.5", 8080, false, true, ZG_FORMAT_HOSTPORT, NULL);

  decode_ok("10.0.0.7:9000", "@params weight=2", &name2);
  decode_ok("10.0.0.7:9000", "@params zone=a, weight=2; x=y\n", &name2);
  decode_ok("10.0.0.7:9000", "@params", &name1);
  decode_ok("10.0.0.7:9000", "@params weighty=9 overweight=9", &name1);
  decode_ok(CHILD, "10.0.0.5:8080 weight=3", &data3);
  decode_ok(CHILD, "10.0.0.5:8080\t@params weight=3", &data3);

  decode_warns("10.0.0.7:9000", "@params weight=1000001", &name1, "weight");
  decode_warns("10.0.0.7:9000", "@params weight=2.5", &name1, "weight");
  decode_warns("10.0.0.7:9000", "@params weight=-2", &name1, "weight");
  decode_warns("10.0.0.7:9000", "@params weight=", &name1, "weight");
  decode_warns(CHILD, "10.0.0.5:8080 weight=x", &data1, "weight");
  /* Free text beside a name that is not host:port is still refused. */
  decode_bad(CHILD, "@params weight=2");
}

/* Ports written as JSON strings ("3000"), as writers that keep every value
 * as text do: the same instance as with a number. */
static void test_string_ports(void **state) {
  const struct want curator =
      WANT("10.3.0.4", 3000, false, true, ZG_FORMAT_CURATOR, NULL);
  const struct want curator_tls =
      WANT("10.3.0.4", 8443, true, true, ZG_FORMAT_CURATOR, NULL);
  const struct want registrator =
      WANT("10.0.1.7", 32768, false, true, ZG_FORMAT_REGISTRATOR, NULL);
  const struct want serverset =
      WANT("10.0.0.8", 31943, false, true, ZG_FORMAT_SERVERSET, NULL);
  (void)state;

  decode_ok(CHILD,
            "{\"address\":\"10.3.0.4\",\"port\":\"3000\",\"sslPort\":null,"
            "\"serviceType\":\"DYNAMIC\"}",
            &curator);
  decode_ok(CHILD,
            "{\"address\":\"10.3.0.4\",\"port\":null,\"sslPort\":\"8443\","
            "\"serviceType\":\"DYNAMIC\"}",
            &curator_tls);
  decode_ok("10.0.1.7:32768",
            "{\"Name\":\"web\",\"IP\":\"10.0.1.7\",\"PublicPort\":\"32768\"}",
            &registrator);
  decode_ok("member_0000000001",
            "{\"serviceEndpoint\":{\"host\":\"10.0.0.8\",\"port\":\"31943\"},"
            "\"status\":\"ALIVE\"}",
            &serverset);
  decode_bad(CHILD, "{\"address\":\"10.3.0.4\",\"port\":\"3000.0\","
                    "\"serviceType\":\"DYNAMIC\"}");
  decode_bad(CHILD, "{\"address\":\"10.3.0.4\",\"port\":\"-3000\","
                    "\"serviceType\":\"DYNAMIC\"}");
  decode_bad(CHILD, "{\"address\":\"10.3.0.4\",\"port\":\"+3000\","
                    "\"serviceType\":\"DYNAMIC\"}");
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
  static const char *const want[] = {
      [ZG_FORMAT_STATIC] = "static",
      [ZG_FORMAT_HOSTPORT] = "host:port",
      [ZG_FORMAT_NAME] = "name",
      [ZG_FORMAT_URL] = "url",
      [ZG_FORMAT_CURATOR] = "curator",
      [ZG_FORMAT_SERVERSET] = "serverset",
      [ZG_FORMAT_NERVE] = "nerve",
      [ZG_FORMAT_NERVE_NAME] = "nerve-name",
      [ZG_FORMAT_REGISTRATOR] = "registrator",
      [ZG_FORMAT_DUBBO] = "dubbo",
      [ZG_FORMAT_ETCD_ADDR] = "etcd-addr",
  };

  for (int f = ZG_FORMAT_STATIC; f <= ZG_FORMAT_ETCD_ADDR; f++)
    assert_string_equal(zg_instance_format_name(f), want[f]);
  /* An unknown value still gives a printable string. */
  assert_string_equal(zg_instance_format_name(ZG_FORMAT_ETCD_ADDR + 1),
                      "unknown");
  assert_string_equal(zg_instance_format_name(99), "unknown");
  assert_string_equal(zg_instance_format_name(-1), "unknown");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url_puttu),
      cmocka_unit_test(test_url_variants),
      cmocka_unit_test(test_curator_fixture),
      cmocka_unit_test(test_curator_ports),
      cmocka_unit_test(test_string_ports),
      cmocka_unit_test(test_upstream_tls_choice),
      cmocka_unit_test(test_curator_bad),
      cmocka_unit_test(test_hostport_data),
      cmocka_unit_test(test_hostport_name),
      cmocka_unit_test(test_serverset_fixture),
      cmocka_unit_test(test_serverset_status),
      cmocka_unit_test(test_serverset_skip),
      cmocka_unit_test(test_serverset_endpoint),
      cmocka_unit_test(test_serverset_bad),
      cmocka_unit_test(test_curator_status),
      cmocka_unit_test(test_curator_weight),
      cmocka_unit_test(test_curator_dubbo3),
      cmocka_unit_test(test_curator_uri_spec),
      cmocka_unit_test(test_h2_registrations),
      cmocka_unit_test(test_nerve_fixture),
      cmocka_unit_test(test_nerve_flags),
      cmocka_unit_test(test_nerve_name_fixture),
      cmocka_unit_test(test_nerve_name_round_trip),
      cmocka_unit_test(test_nerve_name_bad),
      cmocka_unit_test(test_registrator),
      cmocka_unit_test(test_etcd_addr),
      cmocka_unit_test(test_dubbo_fixture),
      cmocka_unit_test(test_dubbo_params),
      cmocka_unit_test(test_dubbo_bad),
      cmocka_unit_test(test_decode_name_other),
      cmocka_unit_test(test_url_query),
      cmocka_unit_test(test_text_weight),
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
