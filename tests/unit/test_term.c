/* Unit tests for termination reasons (src/core/term.h): the words each
 * termination writes in the access log, and its two-letter code. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/term.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static const char *code(zg_term_t t, zg_term_phase_t phase) {
  static char buf[3];
  return zg_term_code(t, phase, buf);
}

/* The words the access log wrote when the reason was a string: operators
 * may match on them, so every one of them is still some termination's. */
static void test_words_unchanged(void **state) {
  static const char *const words[] = {
      "done",
      "closed",
      "closed after response",
      "tunnel closed",
      "client closed",
      "client closed in a request head",
      "client closed in a request",
      "client error",
      "client gone",
      "client reset",
      "client write error",
      "TLS handshake failed",
      "instance gone",
      "instance reset",
      "instance closed the connection",
      "instance connection error",
      "instance read error",
      "instance write error",
      "instances unreachable",
      "bad request body",
      "bad response from the instance",
      "response head too large",
      "out of memory",
      "accept failed",
      "no certificate",
      "read error",
      "tunnel peer gone",
      "tunnel write error",
      "no instance",
      "gateway stopping",
      "idle at drain",
      "listener removed",
      "idle timeout",
      "TLS handshake timeout",
      "response timeout",
  };

  (void)state;
  for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
    bool found = false;
    for (int t = 0; t < ZG_TERM_COUNT && !found; t++)
      found = strcmp(zg_term_text((zg_term_t)t), words[i]) == 0;
    if (!found)
      fail_msg("no termination writes \"%s\"", words[i]);
  }
}

static void test_texts_distinct(void **state) {
  (void)state;
  for (int a = 0; a < ZG_TERM_COUNT; a++) {
    const char *ta = zg_term_text((zg_term_t)a);
    assert_non_null(ta);
    assert_true(ta[0] != '\0');
    assert_null(strchr(ta, '"')); /* quoted as is in the text log */
    for (int b = a + 1; b < ZG_TERM_COUNT; b++)
      assert_string_not_equal(ta, zg_term_text((zg_term_t)b));
  }
}

static void test_codes(void **state) {
  (void)state;
  /* A normal end is "--" whatever the phase. */
  assert_string_equal(code(ZG_TERM_DONE, ZG_PHASE_NONE), "--");
  assert_string_equal(code(ZG_TERM_DONE, ZG_PHASE_DATA), "--");
  assert_string_equal(code(ZG_TERM_CLOSED, ZG_PHASE_DATA), "--");
  assert_string_equal(code(ZG_TERM_CLOSED_AFTER_RESPONSE, ZG_PHASE_LAST), "--");
  assert_string_equal(code(ZG_TERM_TUNNEL_CLOSED, ZG_PHASE_DATA), "--");
  /* Cause x phase. */
  assert_string_equal(code(ZG_TERM_CLIENT_CLOSED_IN_HEAD, ZG_PHASE_REQUEST),
                      "CR");
  assert_string_equal(code(ZG_TERM_CLIENT_CLOSED_IN_REQUEST, ZG_PHASE_DATA),
                      "CD");
  assert_string_equal(code(ZG_TERM_CLIENT_RESET, ZG_PHASE_DATA), "CD");
  assert_string_equal(code(ZG_TERM_TLS_HANDSHAKE_FAILED, ZG_PHASE_REQUEST),
                      "CR");
  assert_string_equal(code(ZG_TERM_INSTANCE_RESET, ZG_PHASE_DATA), "SD");
  assert_string_equal(code(ZG_TERM_INSTANCE_CLOSED, ZG_PHASE_HEADERS), "SH");
  assert_string_equal(code(ZG_TERM_UNREACHABLE, ZG_PHASE_CONNECT), "SC");
  assert_string_equal(code(ZG_TERM_BAD_REQUEST, ZG_PHASE_REQUEST), "PR");
  assert_string_equal(code(ZG_TERM_BAD_RESPONSE, ZG_PHASE_HEADERS), "PH");
  assert_string_equal(code(ZG_TERM_OUT_OF_MEMORY, ZG_PHASE_REQUEST), "RR");
  assert_string_equal(code(ZG_TERM_ACCEPT_FAILED, ZG_PHASE_REQUEST), "IR");
  assert_string_equal(code(ZG_TERM_NO_INSTANCE, ZG_PHASE_CONNECT), "DC");
  assert_string_equal(code(ZG_TERM_GATEWAY_STOPPING, ZG_PHASE_DATA), "KD");
  assert_string_equal(code(ZG_TERM_IDLE_AT_DRAIN, ZG_PHASE_REQUEST), "KR");
  assert_string_equal(code(ZG_TERM_IDLE_TIMEOUT, ZG_PHASE_REQUEST), "cR");
  assert_string_equal(code(ZG_TERM_HEAD_TIMEOUT, ZG_PHASE_REQUEST), "cR");
  assert_string_equal(code(ZG_TERM_TLS_HANDSHAKE_TIMEOUT, ZG_PHASE_REQUEST),
                      "cR");
  assert_string_equal(code(ZG_TERM_RESPONSE_TIMEOUT, ZG_PHASE_HEADERS), "sH");
  assert_string_equal(code(ZG_TERM_CLIENT_WRITE_ERROR, ZG_PHASE_LAST), "CL");
  assert_int_equal(zg_term_cause(ZG_TERM_INSTANCE_GONE), ZG_CAUSE_SERVER);
  assert_int_equal(zg_term_cause(ZG_TERM_CLIENT_GONE), ZG_CAUSE_CLIENT);
}

/* Every code is two letters, and a code tells its cause and phase apart:
 * no two causes and no two phases share a letter. */
static void test_letters_distinct(void **state) {
  char seen_cause[128] = {0}, seen_phase[128] = {0};

  (void)state;
  for (int t = 0; t < ZG_TERM_COUNT; t++) {
    for (int p = 0; p < ZG_PHASE_COUNT; p++) {
      const char *c = code((zg_term_t)t, (zg_term_phase_t)p);
      int cause = zg_term_cause((zg_term_t)t);
      assert_int_equal(strlen(c), 2);
      if (seen_cause[(unsigned char)c[0]] &&
          seen_cause[(unsigned char)c[0]] != cause + 1)
        fail_msg("cause letter %c used twice", c[0]);
      seen_cause[(unsigned char)c[0]] = (char)(cause + 1);
      if (cause != ZG_CAUSE_NONE) {
        if (seen_phase[(unsigned char)c[1]] &&
            seen_phase[(unsigned char)c[1]] != p + 1)
          fail_msg("phase letter %c used twice", c[1]);
        seen_phase[(unsigned char)c[1]] = (char)(p + 1);
      }
    }
  }
}

/* Metrics label the causes by name: one each, label-safe. */
static void test_cause_names(void **state) {
  (void)state;
  for (int a = 0; a < ZG_CAUSE_COUNT; a++) {
    const char *na = zg_term_cause_name((zg_term_cause_t)a);
    assert_true(na[0] != '\0');
    assert_int_equal(strspn(na, "abcdefghijklmnopqrstuvwxyz_"), strlen(na));
    for (int b = a + 1; b < ZG_CAUSE_COUNT; b++)
      assert_string_not_equal(na, zg_term_cause_name((zg_term_cause_t)b));
  }
  assert_string_equal(zg_term_cause_name(ZG_CAUSE_NONE), "normal");
  assert_string_equal(zg_term_cause_name(ZG_CAUSE_SERVER_TIMEOUT),
                      "instance_timeout");
  assert_string_equal(zg_term_cause_name(ZG_CAUSE_COUNT), "internal");
}

static void test_out_of_range(void **state) {
  char buf[3];

  (void)state;
  assert_string_equal(zg_term_text(ZG_TERM_COUNT), "unknown");
  assert_string_equal(zg_term_text((zg_term_t)-1), "unknown");
  assert_string_equal(zg_term_code(ZG_TERM_COUNT, ZG_PHASE_DATA, buf), "I-");
  assert_string_equal(
      zg_term_code(ZG_TERM_CLIENT_RESET, (zg_term_phase_t)ZG_PHASE_COUNT, buf),
      "C-");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_words_unchanged),
      cmocka_unit_test(test_texts_distinct),
      cmocka_unit_test(test_codes),
      cmocka_unit_test(test_letters_distinct),
      cmocka_unit_test(test_cause_names),
      cmocka_unit_test(test_out_of_range),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
