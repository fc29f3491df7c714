/* The access log: one line per HTTP request or TCP connection, written at
 * completion to stderr or a file (O_APPEND, one write per line), reopened
 * on SIGUSR1 for log rotation. */
#ifndef ZKGATE_ACCESS_LOG_H
#define ZKGATE_ACCESS_LOG_H

#include <stdbool.h>

#include "core/metrics.h"

typedef struct zg_access_log zg_access_log_t;

/* `where`: "stderr" or an absolute path. NULL (with the reason logged)
 * when the file cannot be opened. */
zg_access_log_t *zg_access_log_open(const char *where, bool json);
void zg_access_log_write(zg_access_log_t *log, const zg_access_entry_t *e);
/* Reopens the file (after a rotation moved it); the old one stays in use
 * when the new one cannot be opened. 0 or a negative errno. */
int zg_access_log_reopen(zg_access_log_t *log);
/* Another reference (workers share the log); close drops one and closes
 * with the last. Writes and reopen are safe from any thread. */
zg_access_log_t *zg_access_log_ref(zg_access_log_t *log);
void zg_access_log_close(zg_access_log_t *log); /* NULL is fine */

#endif
