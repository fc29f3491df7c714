/* Routing HTTP requests to services: by Host and longest path prefix.
 * Pure code, built once per listener from the configuration. */
#ifndef ZKGATE_ROUTE_H
#define ZKGATE_ROUTE_H

#include <stddef.h>

#include "core/http_msg.h"

typedef struct {
  const char *host;   /* NULL (or "" or "*"): any host; "*.example.com":
                         any subdomain of example.com (not example.com
                         itself); else exact. Compared case-insensitively,
                         a trailing dot ignored. */
  const char *prefix; /* path prefix, starts with '/'; "/" matches all */
  size_t service;     /* the caller's service index */
  int whole_host;     /* with an exact host: a request for that host goes to
                         the routes of that exact host only, whatever the
                         prefixes of any-host and wildcard routes (a
                         virtual host) */
} zg_route_t;

typedef struct zg_route_table zg_route_table_t;

/* Copies the routes (and their strings). NULL when out of memory. */
zg_route_table_t *zg_route_table_new(const zg_route_t *routes, size_t n);
void zg_route_table_free(zg_route_table_t *t);

/* The route for a request, or NULL. `host` is the Host header value as
 * received (any ":port" is ignored, a trailing dot too, "[::1]:80" is
 * "[::1]"; may be NULL when absent: then only any-host routes match);
 * `path` is the target's path without the query.
 *
 * Among routes whose host matches, the longest prefix wins (byte-wise,
 * case-sensitive); on equal prefixes an exact host beats a wildcard (the
 * longer one first), which beats "any host"; then the first route. A prefix
 * ending in '/' also matches the path without that slash ("/api/" matches
 * "/api"); one that does not matches at a segment boundary only ("/api"
 * matches "/api" and "/api/x", not "/apix"). A matching whole_host route
 * restricts the choice to the routes of its exact host. */
const zg_route_t *zg_route_match(const zg_route_table_t *t, const char *host,
                                 size_t host_len, const char *path,
                                 size_t path_len);

/* A request routed: the route, and the parts of its target. */
typedef struct {
  const zg_route_t *route;
  const char *path;              /* normalised: points into path_buf */
  const char *query, *authority; /* point into the head's buffer */
  size_t path_len, query_len, authority_len;
  const zg_hdr_t *host;           /* the Host header, or NULL */
  char path_buf[ZG_HTTP_MAX_URL]; /* zg_http_normalize_path's output */
} zg_routed_t;

/* The checks and routing every request head goes through, in the order
 * the gateway applies them: zg_http_prescan over the raw head (`head`,
 * `head_len`), zg_http_check_request, zg_http_split_target,
 * zg_http_normalize_path (400 for a path that climbs above the root or
 * hides ".."), host length (ZG_HOST_MAX + 8), an absolute-form authority
 * that must match Host, then zg_route_match on the normalised path (by the
 * authority for absolute-form, else by Host).
 * Returns 0 with *out, or the status to answer (400, 404, 405, 414, 505)
 * with *reason set to a static string. */
int zg_http_route_request(const zg_route_table_t *t, const zg_http_head_t *h,
                          const char *head, size_t head_len, zg_routed_t *out,
                          const char **reason);

/* The routing part of zg_http_route_request, for a head its codec already
 * checked (HTTP/1.1: zg_http_prescan and zg_http_check_request): from
 * zg_http_split_target on. Returns 0 with *out, or 400, 404 or 414 with
 * *reason. */
int zg_http_route_target(const zg_route_table_t *t, const zg_http_head_t *h,
                         zg_routed_t *out, const char **reason);

#endif
