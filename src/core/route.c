/* Routing: which service an HTTP request goes to, by Host and longest path
 * prefix. Owns the route table: one allocation made by zg_route_table_new,
 * immutable afterwards, so any number of sessions of one loop can match
 * against it. Pure: no I/O, no loop, no allocation when matching. */
#include "core/route.h"

#include "core/instance.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum host_kind {
  HOST_ANY = 0, /* ranks lowest on equal prefixes */
  HOST_WILDCARD = 1,
  HOST_EXACT = 2,
};

typedef struct {
  zg_route_t route; /* first: &entry->route is what callers get back */
  enum host_kind kind;
  const char *name; /* exact: the host; wildcard: ".example.com" */
  size_t name_len;  /* without a trailing dot */
  size_t prefix_len;
} entry_t;

struct zg_route_table {
  size_t n;
  entry_t e[];
};

static int lower(int c) {
  /* ASCII only: host names compare the same whatever the locale. */
  return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static bool ieq(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
      return false;
  return true;
}

/* The host part of a Host header value: without surrounding whitespace, a
 * ":port" suffix or a trailing dot ("example.com." is the same name, RFC
 * 1034 §3.1). An IP literal keeps its brackets: "[::1]:8080" is "[::1]". */
static void host_part(const char **host, size_t *len) {
  const char *h = *host;
  size_t n = *len;

  while (n > 0 && (h[0] == ' ' || h[0] == '\t')) {
    h++;
    n--;
  }
  while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
    n--;
  if (n > 0 && h[0] == '[') {
    const char *end = memchr(h, ']', n);

    if (end != NULL)
      n = (size_t)(end - h) + 1;
  } else if (n > 0) {
    const char *colon = memchr(h, ':', n);

    if (colon != NULL)
      n = (size_t)(colon - h);
  }
  if (n > 0 && h[n - 1] == '.')
    n--;
  *host = h;
  *len = n;
}

zg_route_table_t *zg_route_table_new(const zg_route_t *routes, size_t n) {
  zg_route_table_t *t;
  size_t strings = 0, size;
  char *p;

  for (size_t i = 0; i < n; i++) {
    if (routes[i].host != NULL)
      strings += strlen(routes[i].host) + 1;
    if (routes[i].prefix != NULL)
      strings += strlen(routes[i].prefix) + 1;
  }
  if (n > (SIZE_MAX - sizeof(*t) - strings) / sizeof(entry_t))
    return NULL;
  size = sizeof(*t) + n * sizeof(entry_t) + strings;
  t = malloc(size);
  if (t == NULL)
    return NULL;
  memset(t, 0, sizeof(*t) + n * sizeof(entry_t));
  t->n = n;
  p = (char *)&t->e[n];
  for (size_t i = 0; i < n; i++) {
    entry_t *e = &t->e[i];
    const char *host = routes[i].host;

    e->route.service = routes[i].service;
    e->route.whole_host = routes[i].whole_host;
    if (host != NULL) {
      size_t len = strlen(host);

      memcpy(p, host, len + 1);
      e->route.host = p;
      p += len + 1;
      if (len > 0 && e->route.host[len - 1] == '.')
        len--;
      /* "" and "*" name no host: they mean any host, like NULL. */
      if (len == 0 || (len == 1 && host[0] == '*')) {
        e->kind = HOST_ANY;
      } else if (len > 2 && host[0] == '*' && host[1] == '.') {
        e->kind = HOST_WILDCARD;
        e->name = e->route.host + 1;
        e->name_len = len - 1;
      } else {
        e->kind = HOST_EXACT;
        e->name = e->route.host;
        e->name_len = len;
      }
    }
    if (routes[i].prefix != NULL) {
      size_t len = strlen(routes[i].prefix);

      memcpy(p, routes[i].prefix, len + 1);
      e->route.prefix = p;
      e->prefix_len = len;
      p += len + 1;
    } else {
      e->route.prefix = "/"; /* defensive: no prefix is the catch-all */
      e->prefix_len = 1;
    }
  }
  return t;
}

void zg_route_table_free(zg_route_table_t *t) {
  free(t);
}

static bool prefix_matches(const entry_t *e, const char *path,
                           size_t path_len) {
  const char *prefix = e->route.prefix;
  size_t n = e->prefix_len;

  /* At a segment boundary, as in every anchor: "/api" takes "/api" and
   * "/api/x" but not "/apix", another resource altogether. */
  if (path_len >= n)
    return n == 0 ||
           (memcmp(path, prefix, n) == 0 &&
            (path_len == n || prefix[n - 1] == '/' || path[n] == '/'));
  /* "/api/" also takes "/api", the same resource to most users. */
  return n > 0 && prefix[n - 1] == '/' && path_len == n - 1 &&
         (path_len == 0 || memcmp(path, prefix, path_len) == 0);
}

static bool host_matches(const entry_t *e, const char *host, size_t len) {
  switch (e->kind) {
  case HOST_ANY:
    return true;
  case HOST_EXACT:
    return len == e->name_len && ieq(host, e->name, len);
  case HOST_WILDCARD:
    /* name is ".example.com": at least one label in front of it, so the
     * apex "example.com" does not match. */
    return len > e->name_len &&
           ieq(host + len - e->name_len, e->name, e->name_len);
  }
  return false;
}

/* Whether a beats b, both matching: longer prefix, then exact host over
 * wildcard over any host, then the longer wildcard suffix. */
static bool better(const entry_t *a, const entry_t *b) {
  if (a->prefix_len != b->prefix_len)
    return a->prefix_len > b->prefix_len;
  if (a->kind != b->kind)
    return a->kind > b->kind;
  return a->kind == HOST_WILDCARD && a->name_len > b->name_len;
}

const zg_route_t *zg_route_match(const zg_route_table_t *t, const char *host,
                                 size_t host_len, const char *path,
                                 size_t path_len) {
  const entry_t *best = NULL, *best_exact = NULL;
  bool claimed = false; /* a whole_host route of this exact host matched */

  if (t == NULL)
    return NULL;
  if (host == NULL)
    host_len = 0;
  else
    host_part(&host, &host_len);
  for (size_t i = 0; i < t->n; i++) {
    const entry_t *e = &t->e[i];

    if (!prefix_matches(e, path, path_len))
      continue;
    if (!host_matches(e, host, host_len))
      continue;
    /* Equal rank: the first route in configuration order stays. */
    if (best == NULL || better(e, best))
      best = e;
    if (e->kind == HOST_EXACT) {
      claimed |= e->route.whole_host != 0;
      if (best_exact == NULL || better(e, best_exact))
        best_exact = e;
    }
  }
  if (claimed)
    best = best_exact;
  return best != NULL ? &best->route : NULL;
}

/* Host and an absolute-form authority name the same host (whitespace
 * around the Host value aside; an empty Host is allowed, RFC 9112 §3.2). */
static int same_host(const char *h, size_t hl, const char *a, size_t al) {
  while (hl > 0 && (h[0] == ' ' || h[0] == '\t'))
    h++, hl--;
  while (hl > 0 && (h[hl - 1] == ' ' || h[hl - 1] == '\t'))
    hl--;
  return hl == 0 || (hl == al && strncasecmp(h, a, al) == 0);
}

int zg_http_route_request(const zg_route_table_t *t, const zg_http_head_t *h,
                          const char *head, size_t head_len, zg_routed_t *out,
                          const char **reason) {
  int status;
  /* Not path_buf: it is written before it is read. */
  memset(out, 0, offsetof(zg_routed_t, path_buf));
  if (zg_http_prescan(head, head_len, reason) != 0)
    return 400;
  if ((status = zg_http_check_request(h, reason)) != 0)
    return status < 0 ? 400 : status;
  return zg_http_route_target(t, h, out, reason);
}

int zg_http_route_target(const zg_route_table_t *t, const zg_http_head_t *h,
                         zg_routed_t *out, const char **reason) {
  const char *hv;
  const char *path;
  size_t path_len;
  int n;

  memset(out, 0, offsetof(zg_routed_t, path_buf));
  if (zg_http_split_target(h->buf + h->url_off, h->url_len, &path, &path_len,
                           &out->query, &out->query_len, &out->authority,
                           &out->authority_len) != 0) {
    *reason = "bad request target";
    return 400;
  }
  /* Route, strip and send the path the instance will resolve: dot segments
   * must not lead out of a prefix (RFC 3986 §5.2.4). check_request bounds
   * the target by ZG_HTTP_MAX_URL, and the output is never longer. */
  if (path_len > sizeof(out->path_buf)) {
    *reason = "request target too long";
    return 414;
  }
  if ((n = zg_http_normalize_path(path, path_len, out->path_buf)) < 0) {
    *reason = "dot segments above the root or hidden in the path";
    return 400;
  }
  out->path = out->path_buf;
  out->path_len = (size_t)n;
  out->host = zg_http_find(h, "host");
  /* Longer than a host name: it could not be passed on whole. */
  if (out->authority_len >= ZG_HOST_MAX + 8 ||
      (out->host && out->host->value_len >= ZG_HOST_MAX + 8)) {
    *reason = "host name too long";
    return 400;
  }
  hv = out->host ? h->buf + out->host->value_off : NULL;
  /* absolute-form: the target's authority is the host (RFC 9112 §3.2.2) */
  if (out->authority_len > 0 && out->host &&
      !same_host(hv, out->host->value_len, out->authority,
                 out->authority_len)) {
    *reason = "absolute-form target and Host differ";
    return 400;
  }
  if (out->authority_len > 0)
    out->route = zg_route_match(t, out->authority, out->authority_len,
                                out->path, out->path_len);
  else
    out->route = zg_route_match(t, hv, out->host ? out->host->value_len : 0,
                                out->path, out->path_len);
  if (!out->route) {
    *reason = "no service for this host and path";
    return 404;
  }
  return 0;
}
