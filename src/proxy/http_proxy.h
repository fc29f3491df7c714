/* HTTP/1.1 proxying: listeners shared by the HTTP services of one listen
 * address, routing by Host and path prefix, one exchange at a time per
 * client connection (pipelined requests wait their turn), bodies streamed
 * both ways, keep-alive on both sides with idle upstream connections kept
 * per instance. */
#ifndef ZKGATE_HTTP_PROXY_H
#define ZKGATE_HTTP_PROXY_H

#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"
#include "core/route.h"
#include "net/listener.h"
#include "proxy/proxy.h"
#include "upstream/service.h"

/* A listener shared by the HTTP services of one address (defined in
 * proxy/exchange.h, the HTTP modules' own header). */
typedef struct zg_http_listener zg_http_listener_t;

/* This loop's HTTP state (px->http): made before zg_http_start, freed by
 * zg_http_free. 0 or UV_ENOMEM. */
int zg_http_init(zg_proxy_ctx_t *px);
/* Starts one listener per distinct listen address of the HTTP services
 * and [discover:] sections, with their routes. 0 or the first error
 * (logged). */
int zg_http_start(zg_proxy_ctx_t *px);
/* Rebuilds every listener's routes from the loop's services (after
 * services came or went). 0 or UV_ENOMEM: then the old routes stay. */
int zg_http_routes_update(zg_proxy_ctx_t *px);
/* Reload, in two steps. First the addresses of `cfg` that no listener has
 * yet are bound (all or none: UV_EADDRINUSE, logged, when one fails);
 * *out holds them. Then, once the services and px->cfg are the new ones,
 * zg_http_sync closes listeners of addresses no longer used (their
 * connections go on), takes the opened ones (`opened` is empty after) and
 * rebuilds every route table. */
int zg_http_addrs_to_open(zg_proxy_ctx_t *px, const zg_config_t *cfg,
                          zg_listener_set_t *out);
int zg_http_sync(zg_proxy_ctx_t *px, zg_listener_set_t *opened);
/* Closes and drops the listeners zg_http_addrs_to_open opened that will
 * not be used; `opened` is empty after. */
void zg_http_opened_discard(zg_proxy_ctx_t *px, zg_listener_set_t *opened);
/* Requests of `svc` now on instance `key` ("host:port"). */
size_t zg_http_instance_active(zg_proxy_ctx_t *px, const zg_service_t *svc,
                               const char *key);
/* Client connections open, on any listener (also one a reload removed). */
size_t zg_http_sessions_open(const zg_proxy_ctx_t *px);
/* Drain: closes the listeners, idle client connections and idle upstream
 * connections; the others close after their current exchange. */
void zg_http_drain(zg_proxy_ctx_t *px);
/* Closes the listeners, every session and every idle upstream connection.
 */
void zg_http_stop(zg_proxy_ctx_t *px);
/* Frees what zg_http_init and zg_http_start allocated, once the loop has
 * closed the handles. */
void zg_http_free(zg_proxy_ctx_t *px);
/* The admin's view: the listeners in use, the counters of the i-th, and
 * the requests that reached no service. */
size_t zg_http_listener_count(const zg_proxy_ctx_t *px);
void zg_http_listener_stats(const zg_proxy_ctx_t *px, size_t i,
                            zg_listener_stats_t *st);
const zg_traffic_t *zg_http_unrouted(const zg_proxy_ctx_t *px);

#endif
