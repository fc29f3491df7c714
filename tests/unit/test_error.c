/* Unit tests for the error table (src/core/error.h): zkgate's codes
 * stay clear of libuv's, and every code has its message. */
#include <string.h>

#include <uv.h>

#include "core/error.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static const struct {
  int code;
  const char *name;
  const char *message;
} table[] = {
#define XX(code, msg) {ZG_E##code, "ZG_E" #code, msg},
    ZG_ERRNO_MAP(XX)
#undef XX
};

#define TABLE_LEN (sizeof(table) / sizeof(table[0]))

static void test_codes_below_libuv(void **state) {
  for (size_t i = 0; i < TABLE_LEN; i++) {
    print_message("%s = %d\n", table[i].name, table[i].code);
    assert_true(table[i].code < 0);
    assert_true(table[i].code < UV_ERRNO_MAX);
    for (size_t j = 0; j < i; j++)
      assert_int_not_equal(table[i].code, table[j].code);
  }
  /* The codes the other modules use exist and are distinct. */
  assert_int_not_equal(ZG_ECONFIG, ZG_EDECODE);
  assert_int_not_equal(ZG_ENOINSTANCE, ZG_EZOOKEEPER);
  assert_true(ZG_ENOTSUP < 0);
}

static void test_zg_messages(void **state) {
  for (size_t i = 0; i < TABLE_LEN; i++) {
    const char *m = zg_strerror(table[i].code);

    print_message("%s: %s\n", table[i].name, m ? m : "(null)");
    assert_non_null(m);
    assert_string_equal(m, table[i].message);
  }
  assert_string_equal(zg_strerror(ZG_ECONFIG), "invalid configuration");
  assert_string_equal(zg_strerror(ZG_EDECODE),
                      "instance data cannot be decoded");
}

static void test_uv_messages(void **state) {
  static const int codes[] = {UV_ECONNREFUSED, UV_ETIMEDOUT, UV_ENOENT,
                              UV_EADDRINUSE,   UV_ENOMEM,    UV_EOF};

  for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    const char *m = zg_strerror(codes[i]);

    assert_non_null(m);
    assert_string_equal(m, uv_strerror(codes[i]));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_codes_below_libuv),
      cmocka_unit_test(test_zg_messages),
      cmocka_unit_test(test_uv_messages),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
