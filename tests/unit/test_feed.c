/* Unit tests for what the change feed makes of the registries' state
 * (src/control/feed.h): a fake probe stands for the gateway, a real libuv
 * loop runs the feed's timer, and a subscriber collects the events. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "control/feed.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

typedef struct {
  zg_source_stats_t st[ZG_FEED_SOURCES];
  int present[ZG_FEED_SOURCES];
  int probes;
} fake_t;

static json_t *probe(void *arg, int which, zg_source_stats_t *st) {
  fake_t *f = arg;
  f->probes++;
  if (!f->present[which])
    return NULL;
  *st = f->st[which];
  return json_pack("[s]", which == ZG_FEED_ETCD ? "e" : "z");
}

typedef struct {
  zg_events_sub_t sub;
  char types[32][96];
  size_t n;
} collect_t;

/* "type/registry" of each event. */
static void on_event(zg_events_sub_t *sub, const char *text, size_t len) {
  collect_t *c = (collect_t *)(void *)sub;
  const char *d = strstr(text, "\ndata: ");
  json_t *j = json_loadb(d + 7, len - (size_t)(d + 7 - text), 0, NULL);
  assert_non_null(j);
  assert_true(c->n < 32);
  snprintf(c->types[c->n++], sizeof(c->types[0]), "%s/%s",
           json_string_value(json_object_get(j, "type")),
           json_object_get(j, "registry")
               ? json_string_value(json_object_get(j, "registry"))
               : "-");
  json_decref(j);
}

/* Runs the loop until the probe has been asked `looks` more times. */
static void looks(uv_loop_t *loop, fake_t *f, int n) {
  int want = f->probes + n * ZG_FEED_SOURCES;
  while (f->probes < want)
    uv_run(loop, UV_RUN_ONCE);
}

static void test_registry_states(void **state) {
  uv_loop_t loop;
  fake_t f;
  collect_t c;
  zg_feed_t *feed;
  (void)state;
  memset(&f, 0, sizeof(f));
  memset(&c, 0, sizeof(c));
  assert_int_equal(uv_loop_init(&loop), 0);
  f.present[ZG_FEED_ZOOKEEPER] = 1;
  f.st[ZG_FEED_ZOOKEEPER].state = ZG_SOURCE_CONNECTING;
  f.st[ZG_FEED_ZOOKEEPER].max_stale_ms = 1000;
  feed = zg_feed_new(&loop, NULL, probe, &f);
  assert_non_null(feed);
  c.sub.on_event = on_event;
  zg_events_subscribe(zg_feed_events(feed), &c.sub);

  looks(&loop, &f, 2); /* connecting: nothing to tell */
  assert_int_equal(c.n, 0);
  f.st[0].state = ZG_SOURCE_CONNECTED;
  looks(&loop, &f, 2);
  assert_int_equal(c.n, 1);
  assert_string_equal(c.types[0], "registry_connected/zookeeper");
  f.st[0].state = ZG_SOURCE_DISCONNECTED;
  f.st[0].disconnected_for_ms = 10;
  looks(&loop, &f, 1);
  assert_int_equal(c.n, 3);
  assert_string_equal(c.types[1], "registry_disconnected/zookeeper");
  assert_string_equal(c.types[2], "services_stale/zookeeper");
  f.st[0].disconnected_for_ms = 1000; /* past max_stale: once */
  looks(&loop, &f, 3);
  assert_int_equal(c.n, 4);
  assert_string_equal(c.types[3], "services_stale/zookeeper");
  f.st[0].state = ZG_SOURCE_CONNECTED;
  f.st[0].disconnected_for_ms = 0;
  looks(&loop, &f, 2);
  assert_int_equal(c.n, 6);
  assert_string_equal(c.types[4], "registry_connected/zookeeper");
  assert_string_equal(c.types[5], "services_synchronised/zookeeper");
  /* An expiry between two looks that both saw "connected": a new session,
   * not a staleness. */
  f.st[0].expiries = 1;
  looks(&loop, &f, 2);
  assert_int_equal(c.n, 8);
  assert_string_equal(c.types[6], "registry_expired/zookeeper");
  assert_string_equal(c.types[7], "registry_connected/zookeeper");
  /* Expired, then a new session still connecting: stale until it is
   * connected, synchronised then. */
  f.st[0].expiries = 2;
  f.st[0].state = ZG_SOURCE_CONNECTING;
  looks(&loop, &f, 1);
  assert_int_equal(c.n, 10);
  assert_string_equal(c.types[8], "registry_expired/zookeeper");
  assert_string_equal(c.types[9], "services_stale/zookeeper");
  f.st[0].state = ZG_SOURCE_CONNECTED;
  looks(&loop, &f, 2);
  assert_int_equal(c.n, 12);
  assert_string_equal(c.types[10], "registry_connected/zookeeper");
  assert_string_equal(c.types[11], "services_synchronised/zookeeper");
  /* A second registry, told apart. */
  f.present[ZG_FEED_ETCD] = 1;
  f.st[ZG_FEED_ETCD].state = ZG_SOURCE_CONNECTED;
  looks(&loop, &f, 2);
  assert_int_equal(c.n, 13);
  assert_string_equal(c.types[12], "registry_connected/etcd");

  zg_feed_close(feed);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_pools_and_reloads(void **state) {
  uv_loop_t loop;
  fake_t f;
  collect_t c;
  zg_feed_t *feed;
  zg_instance_t in;
  zg_pool_t *p1, *p2;
  char key[] = "/s/a"; /* copied by zg_pool_new */
  (void)state;
  memset(&f, 0, sizeof(f));
  memset(&c, 0, sizeof(c));
  memset(&in, 0, sizeof(in));
  assert_int_equal(uv_loop_init(&loop), 0);
  feed = zg_feed_new(&loop, NULL, probe, &f);
  c.sub.on_event = on_event;
  zg_events_subscribe(zg_feed_events(feed), &c.sub);
  snprintf(in.host, sizeof(in.host), "10.0.0.1");
  in.port = 80;
  in.up = true;
  in.key = key;
  p1 = zg_pool_new(&in, 1, 1, 0);
  in.version = 2;
  p2 = zg_pool_new(&in, 1, 2, 0);
  zg_feed_pool(feed, "web", NULL, p1);
  zg_feed_pool(feed, "web", p1, p2);
  zg_feed_pool(feed, "web", p2, NULL);
  zg_feed_reload(feed, 1, "reloaded");
  zg_feed_reload(feed, 0, "bad");
  assert_int_equal(c.n, 6);
  assert_string_equal(c.types[0], "instance_added/-");
  assert_string_equal(c.types[1], "service_synchronised/-");
  assert_string_equal(c.types[2], "instance_changed/-");
  assert_string_equal(c.types[3], "instance_removed/-");
  assert_string_equal(c.types[4], "reload_applied/-");
  assert_string_equal(c.types[5], "reload_rejected/-");
  /* No feed: nothing, no crash. */
  zg_feed_pool(NULL, "web", NULL, p1);
  zg_feed_reload(NULL, 1, "x");
  zg_pool_unref(p1);
  zg_pool_unref(p2);
  zg_feed_close(feed);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registry_states),
      cmocka_unit_test(test_pools_and_reloads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
