/* Unit tests for the change feed's pure parts (src/control/events.h): the
 * bounded history with increasing ids, ?since= replay, subscribers, and
 * the diff of two pools into instances added, removed and changed. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/events.h"
#include "core/instance.h"
#include "core/pool.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

typedef struct {
  char text[16][512];
  size_t n;
} seen_t;

static void collect(void *arg, const char *text, size_t len) {
  seen_t *s = arg;
  assert_true(len < sizeof(s->text[0]));
  assert_int_equal(strlen(text), len);
  if (s->n < 16)
    memcpy(s->text[s->n++], text, len + 1);
}

static uint64_t text_id(const char *text) {
  unsigned long long id = 0;
  assert_int_equal(sscanf(text, "id: %llu\n", &id), 1);
  return id;
}

/* The data line's JSON. */
static json_t *text_json(const char *text) {
  const char *d = strstr(text, "\ndata: ");
  json_t *j;
  assert_non_null(d);
  assert_non_null(strstr(d, "\n\n"));
  j = json_loadb(d + 7, (size_t)(strstr(d, "\n\n") - d - 7), 0, NULL);
  assert_non_null(j);
  return j;
}

/* Past max_bytes, the oldest go first; the newest stays whatever it
 * weighs. */
static void test_ring_bytes(void **state) {
  zg_events_t *ev = zg_events_new(100, 300);
  seen_t seen = {0};
  char big[400];
  (void)state;
  for (int i = 0; i < 10; i++)
    zg_events_emit(ev, "small", NULL, 0); /* about 75 bytes each */
  assert_int_equal(zg_events_first_id(ev), 7);
  assert_int_equal(zg_events_since(ev, 0, collect, &seen), 4);
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  zg_events_emit(ev, "big", json_pack("{s:s}", "x", big), 0);
  assert_int_equal(zg_events_first_id(ev), 11);
  assert_int_equal(zg_events_last_id(ev), 11);
  zg_events_emit(ev, "small", NULL, 0);
  assert_int_equal(zg_events_first_id(ev), 12);
  zg_events_free(ev);
}

static void test_ring_ids_and_since(void **state) {
  zg_events_t *ev = zg_events_new(3, 1 << 20);
  seen_t seen = {0};
  json_t *j;
  (void)state;
  assert_int_equal(zg_events_last_id(ev), 0);
  assert_int_equal(zg_events_first_id(ev), 1);
  assert_int_equal(zg_events_since(ev, 0, collect, &seen), 0);
  assert_int_equal(
      zg_events_emit(ev, "reload_applied",
                     json_pack("{s:s}", "summary", "line\nbreak \"q\""),
                     1764979200123LL),
      1);
  assert_int_equal(zg_events_emit(ev, "b", NULL, 0), 2);
  assert_int_equal(zg_events_since(ev, 0, collect, &seen), 2);
  assert_int_equal(text_id(seen.text[0]), 1);
  /* One data line: the newline in a value is escaped by JSON. */
  assert_ptr_equal(strchr(strstr(seen.text[0], "data: "), '\n'),
                   strstr(seen.text[0], "\n\n"));
  j = text_json(seen.text[0]);
  assert_int_equal(json_integer_value(json_object_get(j, "id")), 1);
  assert_string_equal(json_string_value(json_object_get(j, "type")),
                      "reload_applied");
  assert_string_equal(json_string_value(json_object_get(j, "time")),
                      "2025-12-06T00:00:00.123Z");
  assert_string_equal(json_string_value(json_object_get(j, "summary")),
                      "line\nbreak \"q\"");
  json_decref(j);
  /* Past its capacity the oldest go; ids go on. */
  zg_events_emit(ev, "c", NULL, 0);
  zg_events_emit(ev, "d", NULL, 0);
  zg_events_emit(ev, "e", NULL, 0);
  assert_int_equal(zg_events_last_id(ev), 5);
  assert_int_equal(zg_events_first_id(ev), 3);
  seen.n = 0;
  assert_int_equal(zg_events_since(ev, 0, collect, &seen), 3);
  assert_int_equal(text_id(seen.text[0]), 3);
  assert_int_equal(text_id(seen.text[2]), 5);
  seen.n = 0;
  assert_int_equal(zg_events_since(ev, 4, collect, &seen), 1);
  assert_int_equal(text_id(seen.text[0]), 5);
  assert_int_equal(zg_events_since(ev, 5, collect, &seen), 0);
  assert_int_equal(zg_events_since(ev, 99, collect, &seen), 0);
  zg_events_free(ev);
  assert_null(zg_events_new(0, 1 << 20));
}

typedef struct {
  zg_events_sub_t sub;
  seen_t seen;
  zg_events_sub_t *drop; /* unsubscribed from inside the first call */
} sub_t;

static void on_event(zg_events_sub_t *sub, const char *text, size_t len) {
  sub_t *s = (sub_t *)(void *)sub;
  collect(&s->seen, text, len);
  if (s->drop) {
    zg_events_unsubscribe(s->drop);
    s->drop = NULL;
  }
}

static void test_subscribers(void **state) {
  zg_events_t *ev = zg_events_new(8, 1 << 20);
  sub_t a, b;
  (void)state;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  a.sub.on_event = on_event;
  b.sub.on_event = on_event;
  zg_events_emit(ev, "before", NULL, 0);
  zg_events_subscribe(ev, &a.sub);
  zg_events_subscribe(ev, &b.sub);
  assert_int_equal(zg_events_subscribers(ev), 2);
  a.drop = &a.sub; /* a leaves from inside its own call */
  zg_events_emit(ev, "one", NULL, 0);
  zg_events_emit(ev, "two", NULL, 0);
  assert_int_equal(a.seen.n, 1);
  assert_int_equal(text_id(a.seen.text[0]), 2);
  assert_int_equal(b.seen.n, 2);
  assert_int_equal(text_id(b.seen.text[1]), 3);
  zg_events_unsubscribe(&a.sub); /* twice: nothing */
  assert_int_equal(zg_events_subscribers(ev), 1);
  zg_events_free(ev); /* with b still subscribed */
  zg_events_unsubscribe(&b.sub);
}

static zg_instance_t inst(const char *host, uint16_t port, const char *key,
                          int64_t version) {
  zg_instance_t in;
  memset(&in, 0, sizeof(in));
  snprintf(in.host, sizeof(in.host), "%s", host);
  in.port = port;
  in.is_ip = true;
  in.up = true;
  in.weight = ZG_WEIGHT_DEFAULT;
  in.format = ZG_FORMAT_URL;
  in.key = key ? strdup(key) : NULL;
  in.version = version;
  return in;
}

static zg_pool_t *pool_of(zg_instance_t *v, size_t n) {
  zg_pool_t *p = zg_pool_new(v, n, 1, 0);
  for (size_t i = 0; i < n; i++)
    free(v[i].key);
  assert_non_null(p);
  return p;
}

typedef struct {
  char line[16][400];
  size_t n;
} diffs_t;

static void on_diff(void *arg, zg_diff_kind_t kind, const zg_instance_t *b,
                    const zg_instance_t *a) {
  diffs_t *d = arg;
  const zg_instance_t *x = a ? a : b;
  assert_true(d->n < 16);
  assert_true(kind == ZG_DIFF_ADDED     ? !b && a
              : kind == ZG_DIFF_REMOVED ? b && !a
                                        : a && b);
  snprintf(d->line[d->n++], sizeof(d->line[0]), "%s %s:%u %s",
           zg_diff_kind_name(kind), x->host, x->port, x->key ? x->key : "-");
}

static void test_pool_diff(void **state) {
  zg_instance_t v1[] = {
      inst("10.0.0.1", 80, "/s/a", 0), inst("10.0.0.2", 80, "/s/b", 0),
      inst("10.0.0.3", 80, "/s/c", 0), inst("10.0.0.9", 90, NULL, 0)};
  zg_instance_t v2[] = {inst("10.0.0.1", 80, "/s/a", 0), /* same */
                        inst("10.0.0.2", 80, "/s/b", 3), /* new data */
                        inst("10.0.0.4", 80, "/s/d", 0), /* added */
                        inst("10.0.0.5", 81, "/s/c", 0), /* moved */
                        inst("10.0.0.9", 91, NULL, 0)};  /* static: other */
  zg_pool_t *p1 = pool_of(v1, 4), *p2 = pool_of(v2, 5), *p3;
  diffs_t d = {0};
  (void)state;
  assert_int_equal(zg_events_pool_diff(p1, p2, on_diff, &d), 5);
  assert_string_equal(d.line[0], "instance_changed 10.0.0.2:80 /s/b");
  assert_string_equal(d.line[1], "instance_changed 10.0.0.5:81 /s/c");
  assert_string_equal(d.line[2], "instance_added 10.0.0.4:80 /s/d");
  /* Without a key, an instance is its address: another address is another
   * instance. */
  assert_string_equal(d.line[3], "instance_removed 10.0.0.9:90 -");
  assert_string_equal(d.line[4], "instance_added 10.0.0.9:91 -");
  d.n = 0;
  assert_int_equal(zg_events_pool_diff(p2, p2, on_diff, &d), 0);
  assert_int_equal(zg_events_pool_diff(NULL, p1, on_diff, &d), 4);
  assert_string_equal(d.line[0], "instance_added 10.0.0.1:80 /s/a");
  d.n = 0;
  assert_int_equal(zg_events_pool_diff(p1, NULL, on_diff, &d), 4);
  assert_string_equal(d.line[3], "instance_removed 10.0.0.9:90 -");
  assert_int_equal(zg_events_pool_diff(NULL, NULL, on_diff, &d), 0);
  /* Down, reweighted: changed. */
  {
    zg_instance_t v3[] = {inst("10.0.0.1", 80, "/s/a", 0)};
    v3[0].up = false;
    p3 = pool_of(v3, 1);
  }
  d.n = 0;
  zg_events_pool_diff(p1, p3, on_diff, &d);
  assert_string_equal(d.line[0], "instance_changed 10.0.0.1:80 /s/a");
  zg_pool_unref(p1);
  zg_pool_unref(p2);
  zg_pool_unref(p3);
}

static void test_instance_json(void **state) {
  zg_instance_t in = inst("10.0.0.1", 8080, "/s/a", 7);
  json_t *j = zg_events_instance_json(&in);
  (void)state;
  assert_string_equal(json_string_value(json_object_get(j, "address")),
                      "10.0.0.1:8080");
  assert_string_equal(json_string_value(json_object_get(j, "key")), "/s/a");
  assert_int_equal(json_integer_value(json_object_get(j, "version")), 7);
  assert_string_equal(json_string_value(json_object_get(j, "format")), "url");
  assert_true(json_is_true(json_object_get(j, "up")));
  json_decref(j);
  free(in.key);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ring_ids_and_since),
      cmocka_unit_test(test_ring_bytes),
      cmocka_unit_test(test_subscribers),
      cmocka_unit_test(test_pool_diff),
      cmocka_unit_test(test_instance_json),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
