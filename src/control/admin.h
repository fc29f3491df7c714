/* The admin listener ([admin] listen): /healthz, /ready, /metrics
 * (Prometheus text format) and /services (JSON), served by zkgate's own
 * HTTP parsing (llhttp, strict), one request per connection. */
#ifndef ZKGATE_ADMIN_H
#define ZKGATE_ADMIN_H

#include "control/gateway.h"
#include "core/metrics.h"

typedef struct zg_admin zg_admin_t;

/* An admin listener on `addr`, not yet the gateway's (reload binds first,
 * then swaps with gw->admin); NULL when it cannot listen (logged). */
zg_admin_t *zg_admin_open(zg_gateway_t *gw, const zg_listen_addr_t *addr);
/* Closes the listener and every admin connection (one that zg_admin_open
 * made, used or not); frees itself once the handles are closed. NULL is
 * fine. */
void zg_admin_discard(zg_admin_t *a);
/* The two above, as the gateway takes them (main hands them to
 * zg_gateway_run: the gateway does not include this module). */
extern const zg_gateway_admin_ops_t zg_admin_ops;

/* The bodies, for tests and for the handlers. */
void zg_admin_metrics(zg_gateway_t *gw, zg_text_t *out);
/* NULL when ready; else why not (a static or gateway-owned string written
 * into `buf`). */
const char *zg_admin_not_ready(zg_gateway_t *gw, char *buf, size_t len);
/* JSON text; NULL when out of memory. The caller frees it. */
char *zg_admin_services_json(zg_gateway_t *gw);

#endif
