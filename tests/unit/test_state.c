/* State file: encoding and decoding round trip, refusal of anything
 * half-understood, atomic replacement. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zkgate/error.h"
#include "zkgate/pool.h"
#include "zkgate/state.h"

/* cmocka needs these first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

typedef struct {
  char path[64];
  zg_pool_t *pool;
  int64_t updated_ms;
  int calls;
} seen_t;

static void on_entry(void *arg, const char *zk_path, zg_pool_t *pool,
                     int64_t updated_ms) {
  seen_t *seen = arg;
  snprintf(seen->path, sizeof(seen->path), "%s", zk_path);
  zg_pool_unref(seen->pool);
  seen->pool = pool;
  seen->updated_ms = updated_ms;
  seen->calls++;
}

static zg_pool_t *sample_pool(void) {
  static char base[] = "/warehouse/v1", name[] = "warehouse0000000009",
              znode[] = "/svc/warehouse0000000009";
  zg_instance_t in[2];
  zg_pool_t *p;
  memset(in, 0, sizeof(in));
  snprintf(in[0].host, sizeof(in[0].host), "10.0.0.5");
  in[0].port = 8080;
  in[0].is_ip = true;
  in[0].up = true;
  in[0].weight = 3;
  in[0].format = ZG_FORMAT_URL;
  in[0].tls = true;
  in[0].base_path = base; /* zg_pool_new copies them */
  in[0].name = name;
  in[0].znode = znode;
  in[0].data_version = 4;
  in[0].mtime_ms = 1662110433938;
  snprintf(in[1].host, sizeof(in[1].host), "fd00::7");
  in[1].port = 9000;
  in[1].is_ip = true;
  in[1].up = false;
  in[1].weight = 1;
  in[1].format = ZG_FORMAT_CURATOR;
  p = zg_pool_new(in, 2, 7, 0);
  assert_non_null(p);
  return p;
}

static void test_round_trip(void **state) {
  zg_pool_t *p = sample_pool();
  zg_state_entry_t e = {"/svc", p, 1700000000000};
  char *text = zg_state_encode(&e, 1, 1700000001000), err[128];
  seen_t seen;
  (void)state;
  memset(&seen, 0, sizeof(seen));
  assert_non_null(text);
  assert_int_equal(
      zg_state_decode(text, strlen(text), on_entry, &seen, err, sizeof(err)),
      0);
  assert_int_equal(seen.calls, 1);
  assert_string_equal(seen.path, "/svc");
  assert_int_equal(seen.updated_ms, 1700000000000);
  assert_int_equal(seen.pool->n, 2);
  assert_true(zg_pool_same(p, seen.pool));
  /* the fields zg_pool_same does not look at */
  for (size_t i = 0; i < 2; i++) {
    const zg_instance_t *a = &p->inst[i], *b = &seen.pool->inst[i];
    assert_int_equal(a->format, b->format);
    assert_int_equal(a->is_ip, b->is_ip);
    assert_int_equal(a->mtime_ms, b->mtime_ms);
  }
  assert_string_equal(seen.pool->inst[0].host, "10.0.0.5");
  assert_string_equal(seen.pool->inst[0].name, "warehouse0000000009");
  assert_string_equal(seen.pool->inst[1].host, "fd00::7");
  assert_false(seen.pool->inst[1].up);
  zg_pool_unref(seen.pool);
  zg_pool_unref(p);
  free(text);
}

static void refused(const char *text) {
  seen_t seen;
  char err[128] = "";
  memset(&seen, 0, sizeof(seen));
  assert_int_equal(
      zg_state_decode(text, strlen(text), on_entry, &seen, err, sizeof(err)),
      ZG_EDECODE);
  assert_int_equal(seen.calls, 0); /* nothing passed on from a bad file */
  assert_true(err[0] != '\0');
}

static void test_refuses_bad_files(void **state) {
  (void)state;
  refused("");
  refused("not json");
  refused("[]");
  refused("{\"format\": 2, \"services\": {}}");
  refused("{\"format\": 1}");
  refused("{\"format\": 1, \"services\": {\"/a\": {\"instances\": []}}}");
  /* one good entry and one bad: the whole file is refused */
  refused("{\"format\": 1, \"services\": {"
          "\"/a\": {\"updated_ms\": 1, \"instances\": []},"
          "\"/b\": {\"updated_ms\": 1, \"instances\": [{\"host\": \"h\", "
          "\"port\": 70000, \"tls\": false, \"up\": true, \"weight\": 1, "
          "\"format\": \"url\"}]}}}");
  refused("{\"format\": 1, \"services\": {\"/b\": {\"updated_ms\": 1, "
          "\"instances\": [{\"host\": \"bad host\", \"port\": 80, \"tls\": "
          "false, \"up\": true, \"weight\": 1, \"format\": \"url\"}]}}}");
  refused("{\"format\": 1, \"services\": {\"/b\": {\"updated_ms\": 1, "
          "\"instances\": [{\"host\": \"h\", \"port\": 80, \"tls\": false, "
          "\"up\": true, \"weight\": 1, \"format\": \"nonsense\"}]}}}");
}

static void test_write_replaces_atomically(void **state) {
  char dir[] = "/tmp/zkgate-state-XXXXXX", path[128], tmp[140], buf[64];
  FILE *f;
  size_t n;
  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/state.json", dir);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  assert_int_equal(zg_state_write_file(path, "first"), 0);
  assert_int_equal(zg_state_write_file(path, "second"), 0);
  f = fopen(path, "r");
  assert_non_null(f);
  n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  fclose(f);
  assert_string_equal(buf, "second");
  assert_int_equal(access(tmp, F_OK), -1);
  /* a directory that does not exist: an error, not a crash */
  assert_true(zg_state_write_file("/nonexistent-dir/x/state.json", "x") < 0);
  unlink(path);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_refuses_bad_files),
      cmocka_unit_test(test_write_replaces_atomically),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
