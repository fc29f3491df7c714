/* Unit tests for HTTP routing (src/core/route.h): host matching
 * (exact, wildcard, any; ports, trailing dots, case), longest prefix, the
 * order of ranks on equal prefixes, and the table's own copies. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/route.h"

#include <llhttp.h>

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The service of the route matched for host and path (NUL-terminated,
 * host may be NULL), or -1 for no route. */
static long match(const zg_route_table_t *t, const char *host,
                  const char *path) {
  const zg_route_t *r =
      zg_route_match(t, host, host ? strlen(host) : 0, path, strlen(path));

  return r != NULL ? (long)r->service : -1;
}

static void test_route_longest_prefix(void **state) {
  /* Out of order on purpose: the table does not depend on it. */
  const zg_route_t routes[] = {
      {NULL, "/api/", 1, 0},
      {NULL, "/", 0, 0},
      {NULL, "/api/v2/", 2, 0},
      {NULL, "/static", 3, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  assert_non_null(t);
  assert_int_equal(match(t, "example.com", "/api/v2/users"), 2);
  assert_int_equal(match(t, "example.com", "/api/v2/"), 2);
  assert_int_equal(match(t, "example.com", "/api/v2"), 2);
  assert_int_equal(match(t, "example.com", "/api/v1/users"), 1);
  assert_int_equal(match(t, "example.com", "/api/"), 1);
  assert_int_equal(match(t, "example.com", "/api"), 1);
  /* "/api/" is not a prefix of "/apix", and "/api" without the slash is
   * only a match for the exact path. */
  assert_int_equal(match(t, "example.com", "/apix"), 0);
  assert_int_equal(match(t, "example.com", "/ap"), 0);
  /* A prefix without a trailing slash matches at a segment boundary: the
   * path itself or below it, never a longer name. */
  assert_int_equal(match(t, "example.com", "/static"), 3);
  assert_int_equal(match(t, "example.com", "/static/a.css"), 3);
  assert_int_equal(match(t, "example.com", "/static/"), 3);
  assert_int_equal(match(t, "example.com", "/staticfiles"), 0);
  assert_int_equal(match(t, "example.com", "/static.css"), 0);
  /* Byte-wise: paths are case-sensitive (RFC 3986 §6.2.2.1). */
  assert_int_equal(match(t, "example.com", "/API/v2/users"), 0);
  assert_int_equal(match(t, NULL, "/api/x"), 1);
  zg_route_table_free(t);
}

static void test_route_host_ranks(void **state) {
  /* The exact route last: it wins by rank, not by position. */
  const zg_route_t routes[] = {
      {NULL, "/x/", 0, 0},
      {"*.example.com", "/x/", 1, 0},
      {"a.example.com", "/x/", 2, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  assert_non_null(t);
  assert_int_equal(match(t, "a.example.com", "/x/1"), 2);
  assert_int_equal(match(t, "b.example.com", "/x/1"), 1);
  assert_int_equal(match(t, "other.org", "/x/1"), 0);
  assert_int_equal(match(t, NULL, "/x/1"), 0);
  assert_int_equal(match(t, "", "/x/1"), 0);
  zg_route_table_free(t);
}

static void test_route_host_ranks_reversed(void **state) {
  const zg_route_t routes[] = {
      {"a.example.com", "/x/", 2, 0},
      {"*.example.com", "/x/", 1, 0},
      {NULL, "/x/", 0, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  assert_non_null(t);
  assert_int_equal(match(t, "a.example.com", "/x/1"), 2);
  assert_int_equal(match(t, "b.example.com", "/x/1"), 1);
  assert_int_equal(match(t, "other.org", "/x/1"), 0);
  zg_route_table_free(t);
}

static void test_route_prefix_before_host(void **state) {
  /* The longer prefix wins even for a route open to any host. */
  const zg_route_t routes[] = {
      {"a.example.com", "/", 0, 0},
      {NULL, "/api/", 1, 0},
      {"*.example.com", "/api/admin/", 2, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  assert_non_null(t);
  assert_int_equal(match(t, "a.example.com", "/"), 0);
  assert_int_equal(match(t, "a.example.com", "/api/x"), 1);
  assert_int_equal(match(t, "a.example.com", "/api/admin/x"), 2);
  assert_int_equal(match(t, "other.org", "/api/admin/x"), 1);
  assert_int_equal(match(t, "other.org", "/"), -1);
  zg_route_table_free(t);
}

static void test_route_whole_host(void **state) {
  /* A whole_host route makes its exact host a virtual host: prefixes of
   * any-host and wildcard routes no longer reach it, routes of the same
   * exact host still do (longest prefix among them). */
  const zg_route_t routes[] = {
      {NULL, "/users/", 0, 0},
      {"orders.example.com", "/", 1, 1},
      {"*.example.com", "/admin/", 2, 0},
      {"orders.example.com", "/api/", 3, 0},
      {NULL, "/", 4, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  (void)state;
  assert_non_null(t);
  assert_int_equal(match(t, "orders.example.com", "/users/x"), 1);
  assert_int_equal(match(t, "ORDERS.example.com.:80", "/admin/x"), 1);
  assert_int_equal(match(t, "orders.example.com", "/api/x"), 3);
  assert_int_equal(match(t, "orders.example.com", "/"), 1);
  /* Other hosts: the ordinary ranking. */
  assert_int_equal(match(t, "users.example.com", "/users/x"), 0);
  assert_int_equal(match(t, "users.example.com", "/admin/x"), 2);
  assert_int_equal(match(t, "x.example.org", "/y"), 4);
  assert_int_equal(match(t, NULL, "/users/"), 0);
  zg_route_table_free(t);
}

static void test_route_whole_host_not_set(void **state) {
  /* Without the flag the same table ranks by prefix first. */
  const zg_route_t routes[] = {
      {NULL, "/users/", 0, 0},
      {"orders.example.com", "/", 1, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  (void)state;
  assert_non_null(t);
  assert_int_equal(match(t, "orders.example.com", "/users/x"), 0);
  assert_int_equal(match(t, "orders.example.com", "/x"), 1);
  zg_route_table_free(t);
}

static void test_route_host_forms(void **state) {
  const zg_route_t routes[] = {
      {"a.example.com", "/", 1, 0},
      {"b.example.com.", "/", 2, 0}, /* trailing dot in the configuration */
      {"[::1]", "/", 3, 0},
      {"127.0.0.1", "/", 4, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  assert_non_null(t);
  assert_int_equal(match(t, "a.example.com", "/"), 1);
  assert_int_equal(match(t, "a.example.com:8080", "/"), 1);
  assert_int_equal(match(t, "a.example.com.", "/"), 1);
  assert_int_equal(match(t, "a.example.com.:8080", "/"), 1);
  assert_int_equal(match(t, "A.Example.COM", "/"), 1);
  assert_int_equal(match(t, " a.example.com ", "/"), 1);
  assert_int_equal(match(t, "B.EXAMPLE.COM", "/"), 2);
  assert_int_equal(match(t, "b.example.com.:80", "/"), 2);
  assert_int_equal(match(t, "[::1]:8080", "/"), 3);
  assert_int_equal(match(t, "[::1]", "/"), 3);
  assert_int_equal(match(t, "127.0.0.1:80", "/"), 4);
  /* Neither a prefix nor a suffix of a configured host is that host. */
  assert_int_equal(match(t, "a.example.co", "/"), -1);
  assert_int_equal(match(t, "xa.example.com", "/"), -1);
  assert_int_equal(match(t, "a.example.com.evil", "/"), -1);
  assert_int_equal(match(t, "[::2]:8080", "/"), -1);
  assert_int_equal(match(t, NULL, "/"), -1);
  zg_route_table_free(t);
}

static void test_route_host_len_respected(void **state) {
  const zg_route_t routes[] = {{"a.example.com", "/", 1, 0}};
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));
  const char *host = "a.example.comEXTRA";
  const zg_route_t *r;

  assert_non_null(t);
  r = zg_route_match(t, host, strlen("a.example.com"), "/", 1);
  assert_non_null(r);
  assert_int_equal(r->service, 1);
  assert_null(zg_route_match(t, host, strlen(host), "/", 1));
  /* The path length is respected too: "/" of "/ignored". */
  r = zg_route_match(t, "a.example.com", 13, "/ignored", 1);
  assert_non_null(r);
  zg_route_table_free(t);
}

static void test_route_wildcard(void **state) {
  const zg_route_t routes[] = {
      {"*.example.com", "/", 1, 0},
      {"*.api.example.com", "/", 2, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  assert_non_null(t);
  assert_int_equal(match(t, "a.example.com", "/"), 1);
  assert_int_equal(match(t, "a.b.example.com", "/"), 1);
  assert_int_equal(match(t, "A.EXAMPLE.com:443", "/"), 1);
  assert_int_equal(match(t, "a.example.com.", "/"), 1);
  /* The more specific wildcard wins on equal prefixes. */
  assert_int_equal(match(t, "v1.api.example.com", "/"), 2);
  assert_int_equal(match(t, "api.example.com", "/"), 1);
  /* Never the apex, nor a name that merely ends the same way. */
  assert_int_equal(match(t, "example.com", "/"), -1);
  assert_int_equal(match(t, "example.com:80", "/"), -1);
  assert_int_equal(match(t, ".example.com", "/"), -1);
  assert_int_equal(match(t, "aexample.com", "/"), -1);
  assert_int_equal(match(t, "example.com.evil", "/"), -1);
  zg_route_table_free(t);
}

static void test_route_no_match(void **state) {
  const zg_route_t routes[] = {
      {NULL, "/api/", 1, 0},
      {"a.example.com", "/", 2, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));
  zg_route_table_t *empty = zg_route_table_new(NULL, 0);

  assert_non_null(t);
  assert_int_equal(match(t, "b.example.com", "/other"), -1);
  assert_int_equal(match(t, NULL, "/other"), -1);
  assert_int_equal(match(t, "b.example.com", ""), -1);
  assert_int_equal(match(t, "b.example.com", "*"), -1);
  assert_non_null(empty);
  assert_int_equal(match(empty, "a.example.com", "/"), -1);
  assert_null(zg_route_match(NULL, "a", 1, "/", 1));
  zg_route_table_free(t);
  zg_route_table_free(empty);
  zg_route_table_free(NULL);
}

static void test_route_catch_all(void **state) {
  const zg_route_t routes[] = {{NULL, "/", 7, 0}};
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  assert_non_null(t);
  assert_int_equal(match(t, "a.example.com", "/"), 7);
  assert_int_equal(match(t, "a.example.com", "/anything/at/all"), 7);
  assert_int_equal(match(t, NULL, "/x?not-a-query-here"), 7);
  /* "/" without its slash is the empty path. */
  assert_int_equal(match(t, NULL, ""), 7);
  zg_route_table_free(t);
}

static void test_route_any_host_spellings(void **state) {
  /* "" and "*" name no host: the same as NULL. */
  const zg_route_t routes[] = {
      {"", "/a/", 1, 0},
      {"*", "/b/", 2, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  assert_non_null(t);
  assert_int_equal(match(t, "x.org", "/a/"), 1);
  assert_int_equal(match(t, NULL, "/a/"), 1);
  assert_int_equal(match(t, "x.org", "/b/"), 2);
  assert_int_equal(match(t, NULL, "/b/"), 2);
  zg_route_table_free(t);
}

static void test_route_equal_rank_first_wins(void **state) {
  const zg_route_t routes[] = {
      {"a.example.com", "/x/", 1, 0},
      {"A.EXAMPLE.COM", "/x/", 2, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));

  assert_non_null(t);
  assert_int_equal(match(t, "a.example.com", "/x/"), 1);
  zg_route_table_free(t);
}

static void test_route_copies(void **state) {
  char host[] = "a.example.com";
  char prefix[] = "/api/";
  zg_route_t routes[] = {{host, prefix, 5, 0}};
  zg_route_table_t *t = zg_route_table_new(routes, ARRAY_LEN(routes));
  const zg_route_t *r;

  assert_non_null(t);
  /* The caller's strings change and go away; the table does not. */
  memset(host, 'x', sizeof(host) - 1);
  memset(prefix, 'y', sizeof(prefix) - 1);
  routes[0].service = 9;
  r = zg_route_match(t, "a.example.com", 13, "/api/z", 6);
  assert_non_null(r);
  assert_int_equal(r->service, 5);
  assert_string_equal(r->host, "a.example.com");
  assert_string_equal(r->prefix, "/api/");
  assert_ptr_not_equal(r->host, host);
  assert_ptr_not_equal(r->prefix, prefix);
  zg_route_table_free(t);
}

static void test_route_many(void **state) {
  /* 200 services on one listener, by host: each finds its own. */
  char hosts[200][32], prefixes[200][16];
  zg_route_t routes[200];
  zg_route_table_t *t;

  for (size_t i = 0; i < 200; i++) {
    snprintf(hosts[i], sizeof(hosts[i]), "s%zu.example.com", i % 100);
    snprintf(prefixes[i], sizeof(prefixes[i]), "/%s/", i < 100 ? "a" : "b");
    routes[i].host = hosts[i];
    routes[i].prefix = prefixes[i];
    routes[i].service = i;
  }
  t = zg_route_table_new(routes, ARRAY_LEN(routes));
  assert_non_null(t);
  for (size_t i = 0; i < 200; i++) {
    char path[16];

    snprintf(path, sizeof(path), "/%s/x", i < 100 ? "a" : "b");
    assert_int_equal(match(t, hosts[i], path), (long)i);
  }
  zg_route_table_free(t);
}

/* ---- zg_http_route_request: checks, then routing ------------------------ */

typedef struct {
  zg_http_head_t h;
  int value_open;
} parsed_t;

static int p_url(llhttp_t *p, const char *at, size_t len) {
  parsed_t *x = p->data;
  if (x->h.url_len == 0)
    x->h.url_off = (uint32_t)(at - x->h.buf);
  x->h.url_len += (uint32_t)len;
  return 0;
}

static int p_field(llhttp_t *p, const char *at, size_t len) {
  parsed_t *x = p->data;
  if (x->value_open || x->h.n_hdr == 0) {
    x->h.hdr[x->h.n_hdr].name_off = (uint32_t)(at - x->h.buf);
    x->h.hdr[x->h.n_hdr].name_len = 0;
    x->h.n_hdr++;
    x->value_open = 0;
  }
  x->h.hdr[x->h.n_hdr - 1].name_len += (uint32_t)len;
  return 0;
}

static int p_value(llhttp_t *p, const char *at, size_t len) {
  parsed_t *x = p->data;
  zg_hdr_t *hd = &x->h.hdr[x->h.n_hdr - 1];
  if (!x->value_open) {
    hd->value_off = (uint32_t)(at - x->h.buf);
    hd->value_len = 0;
    x->value_open = 1;
  }
  hd->value_len += (uint32_t)len;
  return 0;
}

static int p_done(llhttp_t *p) {
  (void)p;
  return HPE_PAUSED;
}

/* Routes `raw` (a whole request head) through `t`; *path gets the path.
 * `checked`: through zg_http_route_target only, as for a head its codec
 * already checked. */
static int route_raw_as(const zg_route_table_t *t, const char *raw,
                        const zg_route_t **route, char *path, size_t path_cap,
                        bool checked) {
  llhttp_settings_t st;
  llhttp_t p;
  parsed_t x;
  zg_routed_t rt;
  const char *reason = NULL;
  size_t len = strlen(raw);
  int rc;

  memset(&x, 0, sizeof(x));
  x.h.buf = raw;
  x.h.is_request = true;
  llhttp_settings_init(&st);
  st.on_url = p_url;
  st.on_header_field = p_field;
  st.on_header_value = p_value;
  st.on_headers_complete = p_done;
  llhttp_init(&p, HTTP_REQUEST, &st);
  p.data = &x;
  assert_int_equal(llhttp_execute(&p, raw, len), HPE_PAUSED);
  x.h.method = p.method;
  x.h.major = p.http_major;
  x.h.minor = p.http_minor;
  rc = checked ? zg_http_route_target(t, &x.h, &rt, &reason)
               : zg_http_route_request(t, &x.h, raw, len, &rt, &reason);
  if (rc == 0) {
    *route = rt.route;
    snprintf(path, path_cap, "%.*s", (int)rt.path_len, rt.path);
  } else {
    assert_non_null(reason);
  }
  return rc;
}

static int route_raw(const zg_route_table_t *t, const char *raw,
                     const zg_route_t **route, char *path, size_t path_cap) {
  return route_raw_as(t, raw, route, path, path_cap, false);
}

/* zg_http_route_target leaves the HTTP/1.1 checks to the codec that read
 * the head (h1_server.c): a head without Host, which an HTTP/1.1 client
 * may not send but an HTTP/2 one does (its :authority is not a field),
 * routes by its path alone; routing, dot segments and the absolute-form
 * authority are still checked. */
static void test_route_target_checked_head(void **state) {
  static const zg_route_t routes[] = {
      {NULL, "/", 0, 0},
      {"app.example.com", "/api/", 1, 0},
      {NULL, "/api/", 2, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, 3);
  const zg_route_t *r = NULL;
  char path[64];
  (void)state;
  assert_non_null(t);
  assert_int_equal(
      route_raw(t, "GET /api/x HTTP/1.1\r\n\r\n", &r, path, sizeof(path)), 400);
  assert_int_equal(route_raw_as(t, "GET /api/x HTTP/1.1\r\n\r\n", &r, path,
                                sizeof(path), true),
                   0);
  assert_int_equal(r->service, 2);
  assert_string_equal(path, "/api/x");
  assert_int_equal(route_raw_as(t,
                                "GET http://app.example.com/api/y HTTP/1.1\r\n"
                                "\r\n",
                                &r, path, sizeof(path), true),
                   0);
  assert_int_equal(r->service, 1);
  assert_int_equal(route_raw_as(t, "GET /a/../../x HTTP/1.1\r\n\r\n", &r, path,
                                sizeof(path), true),
                   400);
  assert_int_equal(route_raw_as(t,
                                "GET http://app.example.com/api/y HTTP/1.1\r\n"
                                "Host: other\r\n\r\n",
                                &r, path, sizeof(path), true),
                   400);
  zg_route_table_free(t);
}

static void test_route_request(void **state) {
  static const zg_route_t routes[] = {
      {NULL, "/", 0, 0},
      {"app.example.com", "/api/", 1, 0},
  };
  zg_route_table_t *t = zg_route_table_new(routes, 2);
  const zg_route_t *r = NULL;
  char path[64];
  char big[600];
  (void)state;
  assert_non_null(t);
  assert_int_equal(route_raw(t,
                             "GET /api/x?q HTTP/1.1\r\nHost: app.example.com"
                             "\r\n\r\n",
                             &r, path, sizeof(path)),
                   0);
  assert_int_equal(r->service, 1);
  assert_string_equal(path, "/api/x");
  /* absolute-form routes by its authority */
  assert_int_equal(
      route_raw(t,
                "GET http://app.example.com/api/y HTTP/1.1\r\nHost: "
                "app.example.com \r\n\r\n",
                &r, path, sizeof(path)),
      0);
  assert_int_equal(r->service, 1);
  /* ... and must agree with Host */
  assert_int_equal(route_raw(t,
                             "GET http://app.example.com/api/y HTTP/1.1\r\n"
                             "Host: other\r\n\r\n",
                             &r, path, sizeof(path)),
                   400);
  /* checks come first */
  assert_int_equal(route_raw(t, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                             &r, path, sizeof(path)),
                   400);
  assert_int_equal(route_raw(t,
                             "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
                             &r, path, sizeof(path)),
                   400);
  /* a host name too long to pass on whole */
  memset(big, 'a', sizeof(big));
  memcpy(big, "GET / HTTP/1.1\r\nHost: ", 22);
  memcpy(big + 22 + 300, "\r\n\r\n", 5);
  assert_int_equal(route_raw(t, big, &r, path, sizeof(path)), 400);

  /* Dot segments are resolved before routing, %2e spellings too: they
   * never lead into or out of a prefix, and the path passed on is the
   * normalised one. */
  {
    static const struct {
      const char *target;
      long service; /* -1: refused with 400 */
      const char *path;
    } cases[] = {
        {"/api/../admin", 0, "/admin"},
        {"/api/%2e%2e/admin", 0, "/admin"},
        {"/api/%2E./admin", 0, "/admin"},
        {"/api/.%2E/admin", 0, "/admin"},
        {"/x/../api/y", 1, "/api/y"},
        {"/x/%2e%2e/api/./y", 1, "/api/y"},
        {"/api/a/../b", 1, "/api/b"},
        {"/api/./", 1, "/api/"},
        {"/api/x/..", 1, "/api/"},
        {"/api/..", 0, "/"},
        {"/api/...", 1, "/api/..."},
        {"/api/..x", 1, "/api/..x"},
        {"/api/a%2fb", 1, "/api/a%2fb"},
        {"/../x", -1, NULL},
        {"/api/../../x", -1, NULL},
        {"/%2e%2e", -1, NULL},
        {"/api/..%2fadmin", -1, NULL},
        {"/api/..%2Fadmin", -1, NULL},
        {"/api/%2e%2e%2fadmin", -1, NULL},
        {"/api/x%2f..%2f..", -1, NULL},
        {"/api/..%5cadmin", -1, NULL},
        {"/api/..\\admin", -1, NULL},
        {"/api/..;/admin", -1, NULL},
        {"http://app.example.com/api/%2e%2e/x", 0, "/x"},
    };
    char raw[256];

    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
      int rc;

      snprintf(raw, sizeof(raw),
               "GET %s HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
               cases[i].target);
      r = NULL;
      rc = route_raw(t, raw, &r, path, sizeof(path));
      if (cases[i].service < 0) {
        if (rc != 400)
          fail_msg("%s: %d, want 400", cases[i].target, rc);
        continue;
      }
      if (rc != 0 || (long)r->service != cases[i].service ||
          strcmp(path, cases[i].path) != 0)
        fail_msg("%s: %d service %ld path %s, want %ld %s", cases[i].target, rc,
                 r ? (long)r->service : -1L, rc == 0 ? path : "-",
                 cases[i].service, cases[i].path);
    }
  }
  zg_route_table_free(t);

  /* no route: 404 */
  {
    static const zg_route_t only[] = {{"a.example.com", "/", 0, 0}};
    zg_route_table_t *t2 = zg_route_table_new(only, 1);
    assert_int_equal(route_raw(t2, "GET / HTTP/1.1\r\nHost: b\r\n\r\n", &r,
                               path, sizeof(path)),
                     404);
    zg_route_table_free(t2);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_route_longest_prefix),
      cmocka_unit_test(test_route_host_ranks),
      cmocka_unit_test(test_route_host_ranks_reversed),
      cmocka_unit_test(test_route_prefix_before_host),
      cmocka_unit_test(test_route_whole_host),
      cmocka_unit_test(test_route_whole_host_not_set),
      cmocka_unit_test(test_route_host_forms),
      cmocka_unit_test(test_route_host_len_respected),
      cmocka_unit_test(test_route_wildcard),
      cmocka_unit_test(test_route_no_match),
      cmocka_unit_test(test_route_catch_all),
      cmocka_unit_test(test_route_any_host_spellings),
      cmocka_unit_test(test_route_equal_rank_first_wins),
      cmocka_unit_test(test_route_copies),
      cmocka_unit_test(test_route_many),
      cmocka_unit_test(test_route_request),
      cmocka_unit_test(test_route_target_checked_head),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
