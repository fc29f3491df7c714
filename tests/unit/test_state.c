/* State file: encoding and decoding round trip, refusal of anything
 * half-understood, atomic replacement. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/pool.h"
#include "registry/state.h"

#include <uv.h>

/* cmocka needs these first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

typedef struct {
  char path[4][64], endpoint[4][64];
  zg_pool_t *pool[4];
  int64_t updated_ms[4], fresh_ms[4];
  int calls;
} seen_t;

static void on_entry(void *arg, const zg_state_entry_t *e, zg_pool_t *pool) {
  seen_t *seen = arg;
  int i = seen->calls++;
  assert_true(i < 4);
  assert_ptr_equal(e->pool, pool);
  snprintf(seen->path[i], sizeof(seen->path[i]), "%s", e->zk_path);
  snprintf(seen->endpoint[i], sizeof(seen->endpoint[i]), "%s",
           e->endpoint ? e->endpoint : "(none)");
  seen->pool[i] = pool;
  seen->updated_ms[i] = e->updated_ms;
  seen->fresh_ms[i] = e->fresh_ms;
}

static void seen_free(seen_t *seen) {
  for (int i = 0; i < seen->calls; i++)
    zg_pool_unref(seen->pool[i]);
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
  in[0].key = znode;
  in[0].version = 4;
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

static zg_pool_t *one_pool(const char *host, uint16_t port) {
  zg_instance_t in;
  zg_pool_t *p;
  memset(&in, 0, sizeof(in));
  snprintf(in.host, sizeof(in.host), "%s", host);
  in.port = port;
  in.is_ip = true;
  in.up = true;
  in.weight = 1;
  in.format = ZG_FORMAT_SERVERSET;
  p = zg_pool_new(&in, 1, 1, 0);
  assert_non_null(p);
  return p;
}

static void test_round_trip(void **state) {
  zg_pool_t *p = sample_pool();
  zg_state_entry_t e = {"/svc", NULL, p, 1700000000000, 1700000000500};
  char *text = zg_state_encode(&e, 1, 1700000001000), err[128];
  seen_t seen;
  (void)state;
  memset(&seen, 0, sizeof(seen));
  assert_non_null(text);
  assert_int_equal(
      zg_state_decode(text, strlen(text), on_entry, &seen, err, sizeof(err)),
      0);
  assert_int_equal(seen.calls, 1);
  assert_string_equal(seen.path[0], "/svc");
  assert_string_equal(seen.endpoint[0], "(none)");
  assert_int_equal(seen.updated_ms[0], 1700000000000);
  assert_int_equal(seen.fresh_ms[0], 1700000000500);
  assert_int_equal(seen.pool[0]->n, 2);
  assert_true(zg_pool_same(p, seen.pool[0]));
  /* the fields zg_pool_same does not look at */
  for (size_t i = 0; i < 2; i++) {
    const zg_instance_t *a = &p->inst[i], *b = &seen.pool[0]->inst[i];
    assert_int_equal(a->format, b->format);
    assert_int_equal(a->is_ip, b->is_ip);
    assert_int_equal(a->mtime_ms, b->mtime_ms);
  }
  assert_string_equal(seen.pool[0]->inst[0].host, "10.0.0.5");
  assert_string_equal(seen.pool[0]->inst[0].name, "warehouse0000000009");
  assert_string_equal(seen.pool[0]->inst[1].host, "fd00::7");
  assert_false(seen.pool[0]->inst[1].up);
  seen_free(&seen);
  zg_pool_unref(p);
  free(text);
}

/* One path read through two endpoints (and the main one): three entries,
 * each with its own pool, none overwriting another. */
static void test_entries_keyed_by_path_and_endpoint(void **state) {
  zg_pool_t *main_pool = one_pool("10.0.0.1", 80),
            *http = one_pool("10.0.0.1", 8080),
            *admin = one_pool("10.0.0.1", 9990);
  zg_state_entry_t e[3] = {{"/ss", NULL, main_pool, 1, 11},
                           {"/ss", "http", http, 2, 12},
                           {"/ss", "admin", admin, 3, 13}};
  char *text = zg_state_encode(e, 3, 100), err[128];
  seen_t seen;
  (void)state;
  memset(&seen, 0, sizeof(seen));
  assert_non_null(text);
  assert_int_equal(
      zg_state_decode(text, strlen(text), on_entry, &seen, err, sizeof(err)),
      0);
  assert_int_equal(seen.calls, 3);
  for (int i = 0; i < 3; i++) {
    assert_string_equal(seen.path[i], "/ss");
    assert_string_equal(seen.endpoint[i],
                        e[i].endpoint ? e[i].endpoint : "(none)");
    assert_true(zg_pool_same(seen.pool[i], e[i].pool));
    assert_int_equal(seen.fresh_ms[i], e[i].fresh_ms);
  }
  seen_free(&seen);
  zg_pool_unref(main_pool);
  zg_pool_unref(http);
  zg_pool_unref(admin);
  free(text);
}

static void test_key_match(void **state) {
  (void)state;
  assert_true(zg_state_key_match("/a", NULL, "/a", NULL));
  assert_true(zg_state_key_match("/a", "http", "/a", "http"));
  assert_false(zg_state_key_match("/a", NULL, "/a", "http"));
  assert_false(zg_state_key_match("/a", "http", "/a", NULL));
  assert_false(zg_state_key_match("/a", "http", "/a", "admin"));
  assert_false(zg_state_key_match("/a", NULL, "/b", NULL));
  assert_false(zg_state_key_match("/a", NULL, "/a/b", NULL));
}

static void test_age_and_max_stale(void **state) {
  const int64_t now = 1700000000000;
  (void)state;
  assert_int_equal(zg_state_age_ms(now - 3600000, now), 3600000);
  assert_int_equal(zg_state_age_ms(now + 5000, now), 0); /* clock went back */
  /* an hour-old file with max_stale = 10m: stale from the start */
  assert_true(zg_state_past_max_stale(now - 3600000, now, 600000));
  assert_false(zg_state_past_max_stale(now - 599999, now, 600000));
  assert_true(zg_state_past_max_stale(now - 600000, now, 600000));
  /* 0: forever */
  assert_false(zg_state_past_max_stale(0, now, 0));
}

/* A file of the format before endpoints: the main endpoint's entries,
 * known current when it was written. */
static void test_reads_format_1(void **state) {
  const char *text =
      "{\"format\": 1, \"written_ms\": 5000, \"services\": {\"/a\": "
      "{\"updated_ms\": 4000, \"instances\": [{\"host\": \"10.0.0.9\", "
      "\"port\": 80, \"tls\": false, \"up\": true, \"weight\": 1, "
      "\"format\": \"url\"}]}}}";
  seen_t seen;
  char err[128];
  (void)state;
  memset(&seen, 0, sizeof(seen));
  assert_int_equal(
      zg_state_decode(text, strlen(text), on_entry, &seen, err, sizeof(err)),
      0);
  assert_int_equal(seen.calls, 1);
  assert_string_equal(seen.path[0], "/a");
  assert_string_equal(seen.endpoint[0], "(none)");
  assert_int_equal(seen.updated_ms[0], 4000);
  assert_int_equal(seen.fresh_ms[0], 5000);
  assert_int_equal(seen.pool[0]->n, 1);
  seen_free(&seen);
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

#define INST_OK                                                                \
  "{\"host\": \"h\", \"port\": 80, \"tls\": false, \"up\": true, "             \
  "\"weight\": 1, \"format\": \"url\"}"

static void test_refuses_bad_files(void **state) {
  (void)state;
  /* format 2 */
  refused("{\"format\": 2, \"services\": {}}"); /* an object: format 1's */
  refused("{\"format\": 2, \"services\": [{\"updated_ms\": 1, "
          "\"fresh_ms\": 1, \"instances\": []}]}"); /* no zk_path */
  refused("{\"format\": 2, \"services\": [{\"zk_path\": \"/a\", "
          "\"updated_ms\": 1, \"instances\": []}]}"); /* no fresh_ms */
  refused("{\"format\": 2, \"services\": [{\"zk_path\": \"a\", "
          "\"updated_ms\": 1, \"fresh_ms\": 1, \"instances\": []}]}");
  refused("{\"format\": 2, \"services\": [{\"zk_path\": \"/a\", "
          "\"endpoint\": 7, \"updated_ms\": 1, \"fresh_ms\": 1, "
          "\"instances\": []}]}");
  refused("{\"format\": 2, \"services\": [{\"zk_path\": \"/a\", "
          "\"updated_ms\": 1, \"fresh_ms\": 1, \"instances\": [" INST_OK
          "]}, {\"zk_path\": \"/b\", \"updated_ms\": 1, \"fresh_ms\": 1, "
          "\"instances\": [{\"host\": \"h\"}]}]}");
  refused("{\"format\": 3, \"services\": []}");
  /* format 1 */
  refused("");
  refused("not json");
  refused("[]");
  refused("{\"format\": 1, \"services\": []}");
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

static int count_tmp(const char *dir) {
  char cmd[256];
  FILE *p;
  int n = -1;
  snprintf(cmd, sizeof(cmd), "ls -a %s | grep -c '\\.tmp'", dir);
  p = popen(cmd, "r");
  assert_non_null(p);
  assert_int_equal(fscanf(p, "%d", &n), 1);
  pclose(p);
  return n;
}

static void test_write_replaces_atomically(void **state) {
  char dir[] = "/tmp/zkgate-state-XXXXXX", path[128], taken[160], buf[64];
  unsigned seq = 0;
  FILE *f;
  size_t n;
  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/state.json", dir);
  /* a temporary name another run of this pid left: skipped, untouched */
  snprintf(taken, sizeof(taken), "%s.tmp.%ld.0", path, (long)getpid());
  f = fopen(taken, "w");
  assert_non_null(f);
  fputs("theirs", f);
  fclose(f);
  assert_int_equal(zg_state_write_file(path, "first", &seq), 0);
  assert_true(seq >= 2);
  assert_int_equal(zg_state_write_file(path, "second", &seq), 0);
  f = fopen(path, "r");
  assert_non_null(f);
  n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  fclose(f);
  assert_string_equal(buf, "second");
  f = fopen(taken, "r");
  assert_non_null(f);
  n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  fclose(f);
  assert_string_equal(buf, "theirs");
  unlink(taken);
  assert_int_equal(count_tmp(dir), 0); /* none of ours left */
  /* a directory that does not exist: an error, not a crash */
  assert_true(zg_state_write_file("/nonexistent-dir/x/state.json", "x", &seq) <
              0);
  unlink(path);
  rmdir(dir);
}

static void test_write_delay(void **state) {
  (void)state;
  /* never written: after the settle time */
  assert_int_equal(zg_state_write_delay(5000, 0, 100, 1000), 100);
  /* 300 ms after the last start: waits until a second after it */
  assert_int_equal(zg_state_write_delay(5300, 5000, 100, 1000), 700);
  /* 950 ms after: the settle time is longer than what is left */
  assert_int_equal(zg_state_write_delay(5950, 5000, 100, 1000), 100);
  /* long after */
  assert_int_equal(zg_state_write_delay(9000, 5000, 100, 1000), 100);
}

/* ---- the writer on a real loop ----------------------------------------- */

typedef struct {
  zg_pool_t *pool;
  int collects;
  char endpoint[16];
} owner_t;

static void on_collect(void *arg, zg_state_writer_t *w) {
  owner_t *o = arg;
  zg_state_entry_t e = {"/w", o->endpoint, o->pool, 1, 2};
  o->collects++;
  assert_int_equal(zg_state_writer_put(w, &e, 1, 3), 0);
}

static void read_file(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  size_t n;
  assert_non_null(f);
  n = fread(buf, 1, len - 1, f);
  buf[n] = '\0';
  fclose(f);
}

static void test_writer_coalesces_and_writes_at_close(void **state) {
  char dir[] = "/tmp/zkgate-state-XXXXXX", path[128], buf[4096];
  owner_t o;
  uv_loop_t loop;
  zg_state_writer_t *w;
  uint64_t written, failed;
  (void)state;
  memset(&o, 0, sizeof(o));
  o.pool = one_pool("10.0.0.2", 81);
  snprintf(o.endpoint, sizeof(o.endpoint), "first");
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/state.json", dir);
  assert_int_equal(uv_loop_init(&loop), 0);
  w = zg_state_writer_new(&loop, path, on_collect, &o);
  assert_non_null(w);
  /* a burst of changes: one collect, one write */
  for (int i = 0; i < 50; i++)
    zg_state_writer_mark(w);
  assert_int_equal(o.collects, 0); /* not on the spot */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(o.collects, 1);
  zg_state_writer_counts(w, &written, &failed);
  assert_int_equal(written, 1);
  assert_int_equal(failed, 0);
  read_file(path, buf, sizeof(buf));
  assert_non_null(strstr(buf, "\"endpoint\":\"first\""));
  /* a change, then shutdown before its timer: written at close */
  snprintf(o.endpoint, sizeof(o.endpoint), "second");
  zg_state_writer_mark(w);
  zg_state_writer_close(w);
  assert_int_equal(o.collects, 2); /* collected at close, not after */
  uv_run(&loop, UV_RUN_DEFAULT);
  read_file(path, buf, sizeof(buf));
  assert_non_null(strstr(buf, "\"endpoint\":\"second\""));
  assert_int_equal(count_tmp(dir), 0);
  assert_int_equal(uv_loop_close(&loop), 0); /* the writer is gone */
  zg_pool_unref(o.pool);
  unlink(path);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_entries_keyed_by_path_and_endpoint),
      cmocka_unit_test(test_key_match),
      cmocka_unit_test(test_age_and_max_stale),
      cmocka_unit_test(test_reads_format_1),
      cmocka_unit_test(test_refuses_bad_files),
      cmocka_unit_test(test_write_replaces_atomically),
      cmocka_unit_test(test_write_delay),
      cmocka_unit_test(test_writer_coalesces_and_writes_at_close),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
