/* Unit tests for logging (src/core/log.h): the rate limiter, the
 * level switch, and the line format on stderr. */
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* Calls zg_ratelimit_allow and checks both outputs. `want_suppressed` is
 * checked only when the message is let through. */
static void allow(zg_ratelimit_t *rl, uint64_t now_ms, int want,
                  uint64_t want_suppressed) {
  uint64_t suppressed = 777;
  int rc = zg_ratelimit_allow(rl, now_ms, &suppressed);

  if (rc != want || (want == 1 && suppressed != want_suppressed)) {
    print_error("at %llu ms: allow=%d suppressed=%llu, want %d/%llu\n",
                (unsigned long long)now_ms, rc, (unsigned long long)suppressed,
                want, (unsigned long long)want_suppressed);
    fail();
  }
}

static void test_ratelimit_burst_then_report(void **state) {
  zg_ratelimit_t rl;
  const uint64_t t0 = 5000;

  zg_ratelimit_init(&rl, 1000, 3);
  /* The burst goes through, nothing suppressed yet. */
  allow(&rl, t0, 1, 0);
  allow(&rl, t0 + 1, 1, 0);
  allow(&rl, t0 + 2, 1, 0);
  /* The rest of the window is counted, not logged. */
  allow(&rl, t0 + 3, 0, 0);
  allow(&rl, t0 + 500, 0, 0);
  allow(&rl, t0 + 999, 0, 0);
  /* Next window: the first message carries the count, once. */
  allow(&rl, t0 + 1001, 1, 3);
  allow(&rl, t0 + 1002, 1, 0);
  allow(&rl, t0 + 1003, 1, 0);
  allow(&rl, t0 + 1004, 0, 0);
  allow(&rl, t0 + 1005, 0, 0);
  /* A long silence: the count waits for the next message. */
  allow(&rl, t0 + 60000, 1, 2);
  allow(&rl, t0 + 60001, 1, 0);
}

static void test_ratelimit_burst_one(void **state) {
  zg_ratelimit_t rl;

  zg_ratelimit_init(&rl, 250, 1);
  allow(&rl, 1000000, 1, 0);
  for (int i = 0; i < 10; i++)
    allow(&rl, 1000000 + (uint64_t)i * 20, 0, 0);
  allow(&rl, 1000251, 1, 10);
  allow(&rl, 1000252, 0, 0);
  allow(&rl, 1000600, 1, 1);
  /* A quiet window in between: nothing to report. */
  allow(&rl, 1002000, 1, 0);
}

static void test_ratelimit_starts_at_zero(void **state) {
  /* A clock that starts at 0 (uv_now early in a test loop). */
  zg_ratelimit_t rl;

  zg_ratelimit_init(&rl, 100, 2);
  allow(&rl, 0, 1, 0);
  allow(&rl, 0, 1, 0);
  allow(&rl, 0, 0, 0);
  allow(&rl, 50, 0, 0);
  allow(&rl, 101, 1, 2);
}

static void test_ratelimit_many(void **state) {
  /* Counts past 32 bits of suppressed messages are not needed, but many
   * thousands in one window are. */
  zg_ratelimit_t rl;

  zg_ratelimit_init(&rl, 1000, 5);
  for (int i = 0; i < 5; i++)
    allow(&rl, 10, 1, 0);
  for (int i = 0; i < 100000; i++)
    allow(&rl, 10 + (uint64_t)i % 900, 0, 0);
  allow(&rl, 2000, 1, 100000);
}

static void test_level(void **state) {
  zg_log_set_level(ZG_LOG_WARN);
  assert_true(zg_log_enabled(ZG_LOG_ERROR));
  assert_true(zg_log_enabled(ZG_LOG_WARN));
  assert_false(zg_log_enabled(ZG_LOG_INFO));
  assert_false(zg_log_enabled(ZG_LOG_DEBUG));

  zg_log_set_level(ZG_LOG_DEBUG);
  assert_true(zg_log_enabled(ZG_LOG_INFO));
  assert_true(zg_log_enabled(ZG_LOG_DEBUG));

  zg_log_set_level(ZG_LOG_ERROR);
  assert_true(zg_log_enabled(ZG_LOG_ERROR));
  assert_false(zg_log_enabled(ZG_LOG_WARN));

  zg_log_set_level(ZG_LOG_INFO);
  assert_true(zg_log_enabled(ZG_LOG_INFO));
  assert_false(zg_log_enabled(ZG_LOG_DEBUG));
}

/* Runs the logging calls of `which` with stderr sent to a file and returns
 * what was written (caller frees). */
static char *capture_stderr(void (*which)(void)) {
  char path[] = "/tmp/zkgate-test-log-XXXXXX";
  int fd = mkstemp(path);
  int saved;
  FILE *f;
  char *buf;
  long size;

  assert_true(fd >= 0);
  fflush(stderr);
  saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fd, STDERR_FILENO) >= 0);
  which();
  fflush(stderr);
  assert_true(dup2(saved, STDERR_FILENO) >= 0);
  close(saved);
  close(fd);

  f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  size = ftell(f);
  assert_true(size >= 0);
  rewind(f);
  buf = calloc(1, (size_t)size + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
  fclose(f);
  unlink(path);
  return buf;
}

static void log_some(void) {
  zg_log_set_level(ZG_LOG_INFO);
  zg_warn("registry", "hello %d", 42);
  zg_debug("registry", "not shown %d", 1); /* below the level */
  zg_error("config", "%s", "bye");
}

static void log_nothing(void) {
  zg_log_set_level(ZG_LOG_ERROR);
  zg_warn("registry", "hidden");
  zg_info("registry", "hidden");
  zg_debug("registry", "hidden");
}

/* The clock the logger reads: time() is a coarser clock that can lag it
 * across a second boundary. */
static void utc_now(char *buf, size_t len) {
  struct timespec ts;
  time_t t;
  struct tm tm;

  clock_gettime(CLOCK_REALTIME, &ts);
  t = ts.tv_sec;

  assert_non_null(gmtime_r(&t, &tm));
  assert_true(strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm) > 0);
}

static void test_line_format(void **state) {
  static const char pattern[] =
      "^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
      "\\.[0-9]{3}Z warn registry: hello 42\n"
      "([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
      "\\.[0-9]{3}Z error config: bye\n$";
  char before[32], after[32], stamp[32];
  regex_t re;
  regmatch_t m[3];
  char *out;

  utc_now(before, sizeof(before));
  out = capture_stderr(log_some);
  utc_now(after, sizeof(after));
  zg_log_set_level(ZG_LOG_INFO);

  assert_int_equal(regcomp(&re, pattern, REG_EXTENDED), 0);
  if (regexec(&re, out, 3, m, 0) != 0) {
    print_error("stderr was:\n%s\n", out);
    fail();
  }
  regfree(&re);
  /* The timestamp is now, in UTC (ISO 8601 sorts as text). */
  assert_int_equal(m[1].rm_eo - m[1].rm_so, 19);
  memcpy(stamp, out + m[1].rm_so, 19);
  stamp[19] = '\0';
  print_message("%s <= %s <= %s\n", before, stamp, after);
  assert_true(strcmp(before, stamp) <= 0);
  assert_true(strcmp(stamp, after) <= 0);
  free(out);

  out = capture_stderr(log_nothing);
  zg_log_set_level(ZG_LOG_INFO);
  assert_string_equal(out, "");
  free(out);
}

/* log_format = json: one object a line, the message escaped (RFC 8259 §7)
 * and cut, when too long, so that the line stays valid JSON. */
static void test_json_format(void **state) {
  char line[256], big[600];
  size_t n;
  (void)state;
  n = zg_log_format(line, sizeof(line), 1, "2026-11-22T02:30:00.123Z",
                    ZG_LOG_WARN, "registry",
                    "a \"b\"\\c\n\x01"
                    "d");
  line[n] = '\0';
  assert_string_equal(line, "{\"time\":\"2026-11-22T02:30:00.123Z\","
                            "\"level\":\"warn\",\"module\":\"registry\","
                            "\"msg\":\"a \\\"b\\\"\\\\c\\n\\u0001d\"}\n");
  n = zg_log_format(line, sizeof(line), 0, "T", ZG_LOG_ERROR, "m", "x");
  line[n] = '\0';
  assert_string_equal(line, "T error m: x\n");
  memset(big, '"', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  n = zg_log_format(line, sizeof(line), 1, "T", ZG_LOG_INFO, "m", big);
  assert_true(n <= sizeof(line));
  assert_int_equal(line[n - 1], '\n');
  assert_int_equal(line[n - 2], '}');
  assert_int_equal(line[n - 3], '"');
  assert_int_equal(line[n - 4], '"'); /* a whole \" pair, not half of one */
  assert_int_equal(line[n - 5], '\\');
  n = zg_log_format(line, sizeof(line), 0, "T", ZG_LOG_INFO, "m", big);
  assert_true(n <= sizeof(line));
  assert_int_equal(line[n - 1], '\n');
}

static void log_json_some(void) {
  zg_log_set_level(ZG_LOG_INFO);
  zg_log_set_json(1);
  zg_warn("registry", "hello %d", 42);
  zg_log_set_json(0);
}

static void test_json_line(void **state) {
  static const char pattern[] =
      "^\\{\"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
      "\\.[0-9]{3}Z\",\"level\":\"warn\",\"module\":\"registry\","
      "\"msg\":\"hello 42\"\\}\n$";
  regex_t re;
  char *out = capture_stderr(log_json_some);
  (void)state;
  assert_int_equal(regcomp(&re, pattern, REG_EXTENDED), 0);
  if (regexec(&re, out, 0, NULL, 0) != 0) {
    print_error("stderr was:\n%s\n", out);
    fail();
  }
  regfree(&re);
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ratelimit_burst_then_report),
      cmocka_unit_test(test_ratelimit_burst_one),
      cmocka_unit_test(test_ratelimit_starts_at_zero),
      cmocka_unit_test(test_ratelimit_many),
      cmocka_unit_test(test_level),
      cmocka_unit_test(test_line_format),
      cmocka_unit_test(test_json_format),
      cmocka_unit_test(test_json_line),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
