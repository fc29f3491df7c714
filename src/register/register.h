/* zkgate-register: keeps one instance registered in ZooKeeper, as an
 * ephemeral znode, for as long as its health check passes (for services
 * that cannot register themselves). One libuv loop, single-threaded: the
 * ZooKeeper session, the checks, the timers and the signals.
 *
 * - The znode is created once the instance is healthy (at once without a
 *   check; after `rise` passing checks with one), under the parent path,
 *   which is created (persistent) when missing.
 * - After `fall` failing checks in a row it is deleted; after `rise`
 *   passing ones it is created again.
 * - Disconnection: nothing to do, the session keeps the znode. Session
 *   expiry, or a disconnection longer than the session timeout: a new
 *   session, and the znode is created again. ZooKeeper being unreachable is
 *   retried for ever, never fatal.
 * - Someone else deletes the znode while the instance is healthy: it is
 *   created again (an exists watch on it).
 * - With digest credentials, every session authenticates before its first
 *   request, and what it creates (the znode and the parents it makes) gets
 *   the ACL "the authenticated user: all; world: read".
 * - SIGTERM/SIGINT: the session is closed, so the znode goes at once. */
#ifndef ZKGATE_REGISTER_H
#define ZKGATE_REGISTER_H

#include "register/register_opts.h"

/* Runs until SIGTERM or SIGINT. Returns the exit status: 0 after a signal,
 * 1 when the loop cannot even start. */
int zg_register_run(const zg_register_opts_t *opts);

#endif
