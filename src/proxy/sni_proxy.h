/* tls-passthrough: one listener per listen address of the tls-passthrough
 * services, which reads each client's ClientHello, chooses the service by
 * its server name, and hands the client with the bytes read to the TCP
 * relay (tcp_proxy.h). TLS is not terminated: the bytes pass untouched. */
#ifndef ZKGATE_SNI_PROXY_H
#define ZKGATE_SNI_PROXY_H

#include <stddef.h>
#include <uv.h>

#include "core/config.h"
#include "net/listener.h"
#include "proxy/proxy.h"

typedef struct zg_sni_listener zg_sni_listener_t;

/* This loop's tls-passthrough state (px->sni): made before zg_sni_start,
 * freed with its listeners by zg_sni_free once the loop has closed the
 * handles. 0 or UV_ENOMEM. */
int zg_sni_init(zg_proxy_ctx_t *px);
/* Opens one listener per distinct address of the tls-passthrough services
 * (px->hooks->services). 0 or the first error (logged). */
int zg_sni_start(zg_proxy_ctx_t *px);
/* Reload, in two steps as for HTTP (http_proxy.h): first the addresses of
 * `cfg` that no listener has yet are bound (all or none); then, once the
 * services are the new list, zg_sni_sync closes the listeners of
 * addresses no longer used, adds the opened ones and rebuilds every
 * listener's table. A listener whose address stays is kept as it is. */
int zg_sni_addrs_to_open(zg_proxy_ctx_t *px, const zg_config_t *cfg,
                         zg_listener_set_t *out);
int zg_sni_sync(zg_proxy_ctx_t *px, zg_listener_set_t *opened);
/* Closes the listeners zg_sni_addrs_to_open opened that will not be used;
 * `opened` is empty after. */
void zg_sni_opened_discard(zg_proxy_ctx_t *px, zg_listener_set_t *opened);
/* Sessions still reading their ClientHello. */
size_t zg_sni_pending(const zg_proxy_ctx_t *px);
/* Drain: closes the listeners; sessions reading a ClientHello go on. */
void zg_sni_drain(zg_proxy_ctx_t *px);
/* Closes the listeners and every session reading a ClientHello. */
void zg_sni_stop(zg_proxy_ctx_t *px);
/* Frees the listeners once the loop has closed their handles, and the
 * state. */
void zg_sni_free(zg_proxy_ctx_t *px);
/* The admin's view: the listeners in use, and the counters of the i-th. */
size_t zg_sni_listener_count(const zg_proxy_ctx_t *px);
void zg_sni_listener_stats(const zg_proxy_ctx_t *px, size_t i,
                           zg_listener_stats_t *st);

#endif
