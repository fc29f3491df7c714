/* The admin listener ([admin] listen): /healthz, /ready, /metrics
 * (Prometheus text format) and /services (JSON), served by zkgate's own
 * HTTP parsing (llhttp, strict), one request per connection. */
#ifndef ZKGATE_ADMIN_H
#define ZKGATE_ADMIN_H

#include "zkgate/gateway.h"
#include "zkgate/metrics.h"

typedef struct zg_admin zg_admin_t;

/* Listens on cfg->admin.listen. 0 or an error (logged). */
int zg_admin_start(zg_gateway_t *gw);
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
