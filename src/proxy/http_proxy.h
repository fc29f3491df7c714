/* HTTP/1.1 proxying: listeners shared by the HTTP services of one listen
 * address, routing by Host and path prefix, one exchange at a time per
 * client connection (pipelined requests wait their turn), bodies streamed
 * both ways, keep-alive on both sides with idle upstream connections kept
 * per instance. */
#ifndef ZKGATE_HTTP_PROXY_H
#define ZKGATE_HTTP_PROXY_H

#include <uv.h>

#include "control/gateway.h"
#include "core/route.h"

/* What a route leads to: route.service indexes the listener's targets. */
typedef struct {
  zg_service_t *svc; /* borrowed: the gateway holds it while it routes */
  int strip;         /* the route's prefix is removed from the target */
} zg_http_target_t;

typedef struct zg_http_listener {
  zg_gateway_t *gw;
  uv_tcp_t tcp;
  zg_listen_addr_t addr;
  zg_route_table_t *routes; /* replaced as services come and go */
  zg_http_target_t *targets;
  size_t n_targets;
  int listening;
  int handle_open;
  int retired;               /* a reload took its address away */
  unsigned refs;             /* the gateway's while in use, sessions' */
  uint64_t accepted, active; /* client connections */
} zg_http_listener_t;

/* Starts one listener per distinct listen address of the HTTP services
 * and [discover:] sections, with their routes. 0 or the first error
 * (logged). */
int zg_http_start(zg_gateway_t *gw);
/* Rebuilds every listener's routes from the gateway's services (after
 * services came or went). 0 or UV_ENOMEM: then the old routes stay. */
int zg_http_routes_update(zg_gateway_t *gw);
/* Reload, in two steps. First the addresses of `cfg` that no listener has
 * yet are bound (all or none: UV_EADDRINUSE, logged, when one fails);
 * *out lists them (malloc'ed). Then, once gw->services and gw->cfg are the
 * new ones, zg_http_sync closes listeners of addresses no longer used
 * (their connections go on), adds the opened ones and rebuilds every
 * route table. */
int zg_http_addrs_to_open(zg_gateway_t *gw, const zg_config_t *cfg,
                          zg_http_listener_t ***out, size_t *n_out);
int zg_http_sync(zg_gateway_t *gw, zg_http_listener_t **opened, size_t n);
/* Closes and drops a listener opened by zg_http_addrs_to_open that will
 * not be used. */
void zg_http_listener_discard(zg_http_listener_t *hl);
/* Requests of `svc` now on instance `key` ("host:port"). */
size_t zg_http_instance_active(zg_gateway_t *gw, const zg_service_t *svc,
                               const char *key);
/* Client connections open, on any listener (also one a reload removed). */
size_t zg_http_sessions_open(const zg_gateway_t *gw);
/* Drain: closes the listeners, idle client connections and idle upstream
 * connections; the others close after their current exchange. */
void zg_http_drain(zg_gateway_t *gw);
/* Closes the listeners, every session and every idle upstream connection.
 */
void zg_http_stop(zg_gateway_t *gw);
/* Frees what zg_http_start allocated, once the loop has closed the
 * handles. */
void zg_http_free(zg_gateway_t *gw);

#endif
