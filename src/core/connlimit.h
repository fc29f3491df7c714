/* Caps on the client connections of the whole process ([proxy]
 * max_connections and max_head_connections): how many are open, and how
 * many of those are still in their head (accepted, the first request head
 * or ClientHello not yet complete; a TLS handshake included); and on the
 * busy splice(2) pipes ([proxy] max_pipes), each two descriptors that the
 * open-file budget of max_connections = auto counts. Global per
 * process, not per worker: the counters live in the shared state and
 * every worker updates them with atomic builtins, so N workers admit like
 * one and a busy worker is not refused while another idles. Pure: no loop,
 * no I/O, no lock. */
#ifndef ZKGATE_CONNLIMIT_H
#define ZKGATE_CONNLIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/log.h"

typedef struct {
  uint64_t max_open, max_head; /* 0: not set yet, nothing is capped */
  uint64_t open, head;         /* admitted and not yet released */
  uint64_t refused_open;       /* refused: max_connections reached */
  uint64_t refused_head;       /* refused: max_head_connections reached */
  uint64_t max_pipes;          /* ZG_PIPES_UNCAPPED: not set yet */
  uint64_t pipes;              /* busy pipes, never above max_pipes */
  zg_ratelimit_t log_rl;       /* the refusal log line; under the shared
                                  state's lock */
} zg_connlimit_t;

/* What one admitted connection holds; zeroed: holds nothing. */
typedef struct {
  zg_connlimit_t *l;
  uint8_t open, head;
} zg_conn_ticket_t;

typedef enum {
  ZG_CONN_ADMITTED = 0,
  ZG_CONN_REFUSED_OPEN, /* max_connections reached */
  ZG_CONN_REFUSED_HEAD, /* max_head_connections reached */
} zg_conn_admit_t;

void zg_connlimit_init(zg_connlimit_t *l);
/* New caps (start, reload). Connections already open stay; new ones are
 * refused until the counts are below the caps again. */
void zg_connlimit_set(zg_connlimit_t *l, uint64_t max_open, uint64_t max_head);
/* A new cap on busy pipes (start, reload; 0: none at all). Pipes busy
 * already stay; new ones are refused until the count is below it. */
#define ZG_PIPES_UNCAPPED UINT64_MAX
void zg_connlimit_set_pipes(zg_connlimit_t *l, uint64_t max_pipes);
/* One more busy pipe, if the cap allows: true. The count never passes the
 * cap, not even for an instant (a metric samples it). */
bool zg_connlimit_pipe_take(zg_connlimit_t *l);
/* A busy pipe is given back (kept empty or closed). */
void zg_connlimit_pipe_give(zg_connlimit_t *l);
/* The cap is 0: no pipe at all. */
bool zg_connlimit_no_pipes(zg_connlimit_t *l);

/* Admits one new connection (in its head when `in_head`) into *t, or
 * refuses it, counting the refusal. */
zg_conn_admit_t zg_connlimit_admit(zg_connlimit_t *l, bool in_head,
                                   zg_conn_ticket_t *t);
/* The connection's head is complete: it no longer counts in its head.
 * Idempotent. */
void zg_conn_ticket_head_done(zg_conn_ticket_t *t);
/* The connection is closed: releases what it holds. Idempotent. */
void zg_conn_ticket_release(zg_conn_ticket_t *t);

/* A consistent enough snapshot for metrics (each field read atomically). */
void zg_connlimit_read(zg_connlimit_t *l, zg_connlimit_t *out);

/* Defaults for `auto`. Each proxied connection holds two descriptors (the
 * client's and the instance's) and each busy pipe two more: with P pipes,
 * 2 * max_connections + 2 * P + `reserve` (listeners, ZooKeeper, admin,
 * logs, the loops' own descriptors, their kept pipes) fit in the open-file
 * limit `nofile`. `max_pipes` is the [proxy] max_pipes set, or
 * ZG_PIPES_AUTO: a quarter of max_connections (zg_connlimit_auto_pipes),
 * which makes max_connections (nofile - reserve) / 2.5. Never less than a
 * quarter of `nofile` (at least 1): a reserve (or a max_pipes) that eats
 * the limit still leaves a usable gateway, and zg_connlimit_auto_floored()
 * says so for a warning.
 * max_head_connections is half of max_connections, at most
 * ZG_HEAD_CONNECTIONS_AUTO_MAX, at least 1: a connection in its head can
 * pin a 16 KiB read buffer, so the default bounds that to 64 MiB. */
#define ZG_HEAD_CONNECTIONS_AUTO_MAX 4096
#define ZG_PIPES_AUTO UINT64_MAX
uint64_t zg_connlimit_auto_open(uint64_t nofile, uint64_t reserve,
                                uint64_t max_pipes);
bool zg_connlimit_auto_floored(uint64_t nofile, uint64_t reserve,
                               uint64_t max_pipes);
uint64_t zg_connlimit_auto_head(uint64_t max_open);
/* max_pipes = auto: a quarter of max_connections, as HAProxy's maxpipes
 * (0 below 4 connections: then nothing is spliced). */
uint64_t zg_connlimit_auto_pipes(uint64_t max_open);

#endif
