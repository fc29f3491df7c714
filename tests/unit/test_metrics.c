/* Unit tests for the metrics pieces (src/core/metrics.h): the
 * duration histogram, label and JSON escaping, and access log lines. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_observe_classes_and_buckets(void **state) {
  zg_traffic_t t;
  zg_text_t out = {0};

  (void)state;
  memset(&t, 0, sizeof(t));
  zg_traffic_observe(&t, 200, 1000);   /* 1 ms: first bucket */
  zg_traffic_observe(&t, 204, 5000);   /* on the bound: first bucket */
  zg_traffic_observe(&t, 503, 300000); /* 0.3 s: the 0.5 bucket */
  zg_traffic_observe(&t, 0, 60000000); /* 60 s: only +Inf */
  zg_traffic_observe(&t, 101, 7000);   /* 7 ms: the 0.01 bucket */
  assert_int_equal(t.requests[2], 2);
  assert_int_equal(t.requests[5], 1);
  assert_int_equal(t.requests[0], 1);
  assert_int_equal(t.requests[1], 1);
  assert_int_equal(t.dur_count, 5);
  assert_int_equal(t.dur_sum_us, 1000 + 5000 + 300000 + 60000000 + 7000);
  zg_text_histogram(&out, "d", "service=\"w\"", &t);
  assert_false(out.oom);
  /* Cumulative: 2 at 5 ms, 3 at 10 ms, 4 from 0.5 s, 5 in +Inf. */
  assert_non_null(strstr(out.p, "d_bucket{service=\"w\",le=\"0.005\"} 2\n"));
  assert_non_null(strstr(out.p, "d_bucket{service=\"w\",le=\"0.01\"} 3\n"));
  assert_non_null(strstr(out.p, "d_bucket{service=\"w\",le=\"0.25\"} 3\n"));
  assert_non_null(strstr(out.p, "d_bucket{service=\"w\",le=\"0.5\"} 4\n"));
  assert_non_null(strstr(out.p, "d_bucket{service=\"w\",le=\"10\"} 4\n"));
  assert_non_null(strstr(out.p, "d_bucket{service=\"w\",le=\"+Inf\"} 5\n"));
  assert_non_null(strstr(out.p, "d_sum{service=\"w\"} 60.313000\n"));
  assert_non_null(strstr(out.p, "d_count{service=\"w\"} 5\n"));
  zg_text_free(&out);
}

static void test_label_and_json_escaping(void **state) {
  zg_text_t t = {0};

  (void)state;
  zg_text_label(&t, "a\\b\"c\nd");
  assert_string_equal(t.p, "a\\\\b\\\"c\\nd");
  t.len = 0;
  zg_text_json_string(&t, "q\"\\\x01\xc3\xa9");
  assert_string_equal(t.p, "\"q\\\"\\\\\\u0001\\u00c3\\u00a9\"");
  zg_text_free(&t);
}

static void test_text_grows(void **state) {
  zg_text_t t = {0};
  char big[1000];

  (void)state;
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  for (int i = 0; i < 20; i++)
    zg_text_printf(&t, "%s%d", big, i);
  assert_false(t.oom);
  assert_int_equal(t.len, 20 * 999 + 10 + 20);
  assert_int_equal(strlen(t.p), t.len);
  zg_text_free(&t);
}

static void test_access_text(void **state) {
  zg_text_t t = {0};
  zg_access_entry_t e = {0};
  const char target[] = "/a b\"c";

  (void)state;
  e.time_ms = 1795000000123LL; /* 2026-11-18T... */
  e.kind = "http";
  e.client = "127.0.0.1:5000";
  e.service = "web";
  e.instance = "10.0.0.5:80";
  e.method = "GET";
  e.target = target;
  e.target_len = strlen(target);
  e.status = 200;
  e.bytes_in = 78;
  e.bytes_out = 1234;
  e.duration_us = 1500;
  e.reason = "done";
  zg_access_format(&t, &e, false);
  assert_non_null(strstr(t.p, ".123Z http 127.0.0.1:5000 web 10.0.0.5:80 "
                              "\"GET /a\\x20b\\x22c\" 200 78 1234 1.500 "
                              "\"done\" --\n"));
  assert_int_equal(t.p[4], '-');
  /* HTTP/2 requests show their version; HTTP/1.x ones none. */
  t.len = 0;
  e.version = "HTTP/2.0";
  zg_access_format(&t, &e, false);
  assert_non_null(strstr(t.p, " \"GET /a\\x20b\\x22c HTTP/2.0\" 200 78 "));
  t.len = 0;
  zg_access_format(&t, &e, true);
  assert_non_null(strstr(t.p, ",\"version\":\"HTTP/2.0\","));
  e.version = NULL;
  /* Absent parts are "-". */
  t.len = 0;
  e.service = NULL;
  e.instance = NULL;
  e.method = NULL;
  e.status = 0;
  e.kind = "tcp";
  zg_access_format(&t, &e, false);
  assert_non_null(strstr(t.p, " tcp 127.0.0.1:5000 - - - 0 78 1234 1.500 "
                              "\"done\" --\n"));
  /* The words are the termination's own unless given; the code is its
   * cause and the phase. */
  t.len = 0;
  e.reason = NULL;
  e.term = ZG_TERM_INSTANCE_RESET;
  e.phase = ZG_PHASE_DATA;
  zg_access_format(&t, &e, false);
  assert_non_null(strstr(t.p, " 1.500 \"instance reset\" SD\n"));
  t.len = 0;
  e.reason = "no service for this host and path";
  e.term = ZG_TERM_BAD_REQUEST;
  e.phase = ZG_PHASE_REQUEST;
  zg_access_format(&t, &e, false);
  assert_non_null(
      strstr(t.p, " 1.500 \"no service for this host and path\" PR\n"));
  zg_text_free(&t);
}

static void test_access_json(void **state) {
  zg_text_t t = {0};
  zg_access_entry_t e = {0};

  (void)state;
  e.time_ms = 0;
  e.kind = "http";
  e.client = "[::1]:9";
  e.service = "w\"x";
  e.method = "POST";
  e.target = "/p\nq";
  e.target_len = 4;
  e.status = 502;
  e.duration_us = 2;
  e.term = ZG_TERM_INSTANCE_RESET;
  e.phase = ZG_PHASE_HEADERS;
  zg_access_format(&t, &e, true);
  assert_string_equal(
      t.p, "{\"time\":\"1970-01-01T00:00:00.000Z\",\"kind\":\"http\","
           "\"client\":\"[::1]:9\",\"service\":\"w\\\"x\",\"instance\":null,"
           "\"method\":\"POST\",\"target\":\"/p\\u000aq\",\"status\":502,"
           "\"bytes_in\":0,\"bytes_out\":0,\"duration_ms\":0.002,"
           "\"reason\":\"instance reset\",\"term\":\"SH\"}\n");
  zg_text_free(&t);
}

static void test_terminations(void **state) {
  zg_traffic_t t;
  zg_text_t out = {0};

  (void)state;
  memset(&t, 0, sizeof(t));
  zg_traffic_ended(&t, ZG_TERM_DONE);
  zg_traffic_ended(&t, ZG_TERM_CLOSED_AFTER_RESPONSE);
  zg_traffic_ended(&t, ZG_TERM_CLIENT_RESET);
  zg_traffic_ended(&t, ZG_TERM_RESPONSE_TIMEOUT);
  zg_traffic_ended(&t, ZG_TERM_NO_INSTANCE);
  assert_int_equal(t.ended[ZG_CAUSE_NONE], 2);
  assert_int_equal(t.ended[ZG_CAUSE_CLIENT], 1);
  assert_int_equal(t.ended[ZG_CAUSE_SERVER_TIMEOUT], 1);
  assert_int_equal(t.ended[ZG_CAUSE_DOWN], 1);
  zg_text_terminations(&out, "zkgate_terminations_total", "service=\"web\"",
                       &t);
  assert_non_null(strstr(
      out.p,
      "zkgate_terminations_total{service=\"web\",cause=\"normal\"} 2\n"
      "zkgate_terminations_total{service=\"web\",cause=\"client\"} 1\n"
      "zkgate_terminations_total{service=\"web\",cause=\"instance\"} 0\n"));
  assert_non_null(strstr(out.p, "cause=\"no_instance\"} 1\n"));
  assert_non_null(strstr(out.p, "cause=\"instance_timeout\"} 1\n"));
  assert_non_null(strstr(out.p, "cause=\"client_timeout\"} 0\n"));
  zg_text_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_observe_classes_and_buckets),
      cmocka_unit_test(test_terminations),
      cmocka_unit_test(test_label_and_json_escaping),
      cmocka_unit_test(test_text_grows),
      cmocka_unit_test(test_access_text),
      cmocka_unit_test(test_access_json),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
