/* zkgate-register --etcd: keeps one instance registered in etcd, as the
 * key PREFIX + host:port under a lease, for as long as its health check
 * passes (register/check.h), through etcd's v3 JSON gateway
 * (registry/etcd_http.h).
 *
 * - Healthy: a lease of the TTL asked is granted and the key put under
 *   it, with the data of --format (register_fmt.h); the lease is kept
 *   alive every TTL/3 and the key read back after each keep-alive.
 * - A lost lease (a keep-alive with no TTL left, "lease not found") is
 *   granted again and the key put again; a key someone deleted is put
 *   again.
 * - Unhealthy (`fall` failing checks): the lease is revoked, which removes
 *   the key; healthy again (`rise` passing): a new lease and the key.
 * - An endpoint that fails (connection, timeout, 5xx) is left for the
 *   next one at once; etcd being unreachable is retried for ever.
 * - SIGTERM/SIGINT: the lease is revoked, so the key goes at once, not
 *   after the TTL; etcd unreachable: it goes when the lease expires. */
#ifndef ZKGATE_REGISTER_ETCD_H
#define ZKGATE_REGISTER_ETCD_H

#include "register/register_opts.h"

/* Runs until SIGTERM or SIGINT. Returns the exit status: 0 after a signal,
 * 1 when it cannot even start. */
int zg_register_etcd_run(const zg_register_opts_t *opts);

#endif
