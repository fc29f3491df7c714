/* The admin listener ([admin] listen): /healthz, /ready, /metrics
 * (Prometheus text format) and /services (JSON), served by zkgate's own
 * HTTP parsing (llhttp, strict), one request per connection. */
#ifndef ZKGATE_ADMIN_H
#define ZKGATE_ADMIN_H

#include "control/gateway.h"
#include "core/metrics.h"

typedef struct zg_admin zg_admin_t;

/* Listens on cfg->admin.listen when [admin] is on. 0 or an error (logged).
 */
int zg_admin_start(zg_gateway_t *gw);
/* An admin listener on `addr`, not yet the gateway's (reload binds first,
 * then swaps with gw->admin); NULL when it cannot listen (logged). */
zg_admin_t *zg_admin_open(zg_gateway_t *gw, const zg_listen_addr_t *addr);
/* Closes one that zg_admin_open made and nobody used. */
void zg_admin_discard(zg_admin_t *a);
/* Closes the listener and every admin connection; frees itself once the
 * handles are closed. */
void zg_admin_stop(zg_gateway_t *gw);

/* The bodies, for tests and for the handlers. */
void zg_admin_metrics(zg_gateway_t *gw, zg_text_t *out);
/* NULL when ready; else why not (a static or gateway-owned string written
 * into `buf`). */
const char *zg_admin_not_ready(zg_gateway_t *gw, char *buf, size_t len);
/* JSON text; NULL when out of memory. The caller frees it. */
char *zg_admin_services_json(zg_gateway_t *gw);

#endif
