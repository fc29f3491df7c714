/* zkgate-register's ZooKeeper runtime: owns the loop, the ZooKeeper
 * session and the instance's znode; the health check is register/check's.
 * See register.h.
 *
 * Two inputs decide, one function acts: `healthy` (from the checks) says
 * whether the znode should exist, `node` says whether it exists in this
 * session, and reconcile() issues the one request (chain) that brings the
 * second in line with the first whenever the session is connected and no
 * other request is out. Every completion records what happened and leaves
 * the next step to reconcile(), which runs after each zookeeper_process()
 * and after each check.
 *
 * Ephemeral znodes are created in the session that must own them, so the
 * one case needing care is a create whose answer was lost with the
 * connection (the session lives on, the znode may or may not exist):
 * a sequential create cannot simply be repeated (that could leave a
 * duplicate for the session's lifetime), so the parent is listed and the
 * znode of ours found by its owner; Curator's fixed name turns the repeat
 * into ZNODEEXISTS, resolved by the owner as well.
 *
 * Once registered, an exists watch stays on the znode: a NodeDeleted that
 * is not our own delete (someone else removed it while the session lives)
 * drops `node`, and reconcile() creates it again with the same data. */
#include "register/register.h"

#include "register/check.h"
#include "register/life.h"

#include "core/error.h"
#include "core/log.h"
#include "registry/zkconn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define TICK_MS 100
#define RETRY_MS 1000
#define ADDR_MAX (ZG_HOST_MAX + 16)

typedef struct {
  uv_loop_t *loop;
  const zg_register_opts_t *opts;
  char addr[ADDR_MAX]; /* host:port, for logs and the Host header */
  char *data;          /* the znode's data */
  size_t len;
  char *create_path;  /* full path, or the prefix of a sequential name */
  const char *prefix; /* the child part of create_path */
  bool sequential;

  zg_zkconn_t zk;
  unsigned gen;       /* bumped with every new handle: older completions
                         are stale */
  int64_t session_id; /* of the connected session; 0 before */
  int connected;
  int reinit; /* open a new session after this zookeeper_process */
  uint64_t disconnected_ms;
  int waiting_logged;
  char *node;         /* our znode in this session, or NULL */
  int watching;       /* an exists watch is on `node`, or being set */
  int deleting;       /* our own delete of `node` is out */
  int busy;           /* a request (chain) is out */
  int uncertain;      /* a sequential create's answer was lost */
  uint64_t retry_ms;  /* no request before this, after a hard error */
  uint64_t reopen_ms; /* no new handle before this, after a failed one */
  int auth_refused;   /* the server refused the credentials; logged */
  /* What we create gets this ACL: open without --auth; with it, all to
   * the session's authenticated identity and read to the world. */
  struct ACL acl_entries[2];
  struct ACL_vector acl;
  zg_ratelimit_t error_rl;

  zg_regcheck_t hc; /* hc.health.healthy: the znode should exist */
  uv_timer_t tick_timer;
  uv_signal_t sigterm, sigint;
  int stopping;
} reg_t;

/* One request's context: which handle generation it belongs to. */
typedef struct batch batch_t;
typedef struct {
  reg_t *r;
  unsigned gen;
  batch_t *batch; /* requests answered together, or NULL */
  char path[];
} req_t;

/* Requests whose answers are taken together: the parent path's
 * components, or the children looked at for a lost create. */
struct batch {
  reg_t *r;
  unsigned gen;
  unsigned pending;
  int rc;      /* the first unexpected error */
  char *found; /* scan: our znode */
};

static void reconcile(reg_t *r);

/* ---- requests -------------------------------------------------------- */

static req_t *req_new(reg_t *r, const char *path, batch_t *batch) {
  size_t n = path ? strlen(path) : 0;
  req_t *q = malloc(sizeof(*q) + n + 1);
  if (!q)
    return NULL;
  q->r = r;
  q->gen = r->gen;
  q->batch = batch;
  memcpy(q->path, path ? path : "", n + 1);
  return q;
}

/* Answered by a handle since replaced, or called from zookeeper_close. */
static int stale(reg_t *r, unsigned gen) {
  return gen != r->gen || r->stopping;
}

/* A completion's request, freed: its registration, or NULL when the
 * answer is stale. */
static reg_t *req_take(const void *data) {
  req_t *q = (req_t *)(uintptr_t)data;
  reg_t *r = q->r;
  unsigned gen = q->gen;
  free(q);
  return stale(r, gen) ? NULL : r;
}

static uint64_t now_ms(reg_t *r) {
  return uv_now(r->loop);
}

/* A hard error (not cured by reconnecting): logged, retried later. */
static void hard_error(reg_t *r, const char *what, const char *path, int rc) {
  uint64_t dropped;
  r->retry_ms = now_ms(r) + RETRY_MS;
  if (zg_ratelimit_allow(&r->error_rl, now_ms(r), &dropped))
    zg_error("register", "cannot %s %s: %s; retrying every %d ms%s", what, path,
             zerror(rc), RETRY_MS, dropped ? " (errors suppressed)" : "");
}

/* A request that could not even be queued. */
static void issued(reg_t *r, int rc, void *q, const char *what,
                   const char *path) {
  if (rc == ZOK) {
    r->busy = 1;
    return;
  }
  free(q);
  if (!zg_zkconn_transient(rc))
    hard_error(r, what, path, rc);
}

/* ---- creating the znode ---------------------------------------------- */

static void make_parents(reg_t *r);
static void check_owner(reg_t *r);

static void on_created(int rc, const char *value, const void *data) {
  reg_t *r = req_take(data);
  if (!r)
    return;
  r->busy = 0;
  if (rc == ZOK) {
    r->uncertain = 0;
    if (!(r->node = strdup(value))) {
      r->uncertain = r->sequential; /* found again by the scan */
      return;
    }
    zg_info("register", "registered %s (%s, %s)", r->node,
            zg_register_fmt_name(r->opts->format), r->addr);
  } else if (rc == ZNONODE) {
    make_parents(r);
  } else if (rc == ZNODEEXISTS) {
    check_owner(r); /* Curator: our id, maybe from an earlier session */
  } else if (zg_zkconn_transient(rc)) {
    if (r->sequential) {
      r->uncertain = 1;
      zg_info("register",
              "the answer to creating %s was lost with the "
              "connection: looking for it once reconnected",
              r->create_path);
    }
  } else {
    hard_error(r, "create", r->create_path, rc);
  }
}

static void create_node(reg_t *r) {
  req_t *q = req_new(r, NULL, NULL);
  int rc;
  if (!q)
    return;
  rc = zoo_acreate(r->zk.zh, r->create_path, r->data, (int)r->len, &r->acl,
                   r->sequential ? ZOO_EPHEMERAL_SEQUENTIAL : ZOO_EPHEMERAL,
                   on_created, q);
  issued(r, rc, q, "create", r->create_path);
}

/* ---- the parent path --------------------------------------------------- */

static void on_parent(int rc, const char *value, const void *data) {
  req_t *q = (req_t *)(uintptr_t)data;
  batch_t *b = q->batch;
  reg_t *r = b->r;
  /* Only the parent's own answer counts: a component above it may refuse
   * us (ZNOAUTH on a node that exists) without being in the way. */
  if (!stale(r, b->gen)) {
    if (rc == ZOK)
      zg_info("register", "created the parent znode %s (persistent)", value);
    else if (rc != ZNODEEXISTS && strcmp(q->path, r->opts->zk_path) == 0)
      b->rc = rc;
  }
  free(q);
  if (--b->pending > 0)
    return;
  if (!stale(r, b->gen)) {
    r->busy = 0;
    if (b->rc != 0 && !zg_zkconn_transient(b->rc))
      hard_error(r, "create the parent path", r->opts->zk_path, b->rc);
    /* Otherwise reconcile() creates the znode now. */
  }
  free(b);
}

/* Every component of the parent path, in order: the server executes a
 * session's requests in the order sent, so each exists before its child
 * is created. Persistent and empty, as Curator's creatingParentsIfNeeded
 * makes them. */
static void make_parents(reg_t *r) {
  const char *path = r->opts->zk_path;
  batch_t *b = calloc(1, sizeof(*b));
  char *prefix = strdup(path);
  if (!b || !prefix) {
    free(b);
    free(prefix);
    return;
  }
  b->r = r;
  b->gen = r->gen;
  for (const char *s = strchr(path + 1, '/');; s = strchr(s + 1, '/')) {
    size_t n = s ? (size_t)(s - path) : strlen(path);
    req_t *q;
    int rc;
    prefix[n] = '\0';
    if (!(q = req_new(r, prefix, b)))
      break;
    rc = zoo_acreate(r->zk.zh, prefix, NULL, -1, &r->acl, 0, on_parent, q);
    memcpy(prefix, path, strlen(path) + 1);
    if (rc != ZOK) {
      free(q);
      if (b->rc == 0)
        b->rc = rc;
      break;
    }
    b->pending++;
    if (!s)
      break;
  }
  free(prefix);
  if (b->pending > 0) {
    r->busy = 1;
    return;
  }
  if (!zg_zkconn_transient(b->rc))
    hard_error(r, "create the parent path", path, b->rc);
  free(b);
}

/* ---- Curator: a znode with our id exists ------------------------------- */

static void on_stale_deleted(int rc, const void *data) {
  reg_t *r = req_take(data);
  if (!r)
    return;
  r->busy = 0;
  /* ZBADVERSION: it changed meanwhile; the next create looks again. */
  if (rc != ZOK && rc != ZNONODE && rc != ZBADVERSION &&
      !zg_zkconn_transient(rc))
    hard_error(r, "delete", r->create_path, rc);
}

static void on_owner(int rc, const struct Stat *stat, const void *data) {
  req_t *q = (req_t *)(uintptr_t)data;
  reg_t *r = q->r;
  int drc;
  if (stale(r, q->gen)) {
    free(q);
    return;
  }
  r->busy = 0;
  if (rc == ZOK && stat->ephemeralOwner == r->session_id) {
    /* Our create went through before its answer was lost. */
    free(q);
    if ((r->node = strdup(r->create_path)))
      zg_info("register", "registered %s (%s, %s)", r->node,
              zg_register_fmt_name(r->opts->format), r->addr);
    return;
  }
  if (rc == ZOK) {
    /* Left by an earlier session of ours (the id is ours alone), which the
     * server has not expired yet: replaced now, as Curator does, rather
     * than waited for. */
    zg_info("register",
            "%s exists, owned by session 0x%llx (an earlier one): replacing "
            "it",
            r->create_path, (unsigned long long)stat->ephemeralOwner);
    drc = zoo_adelete(r->zk.zh, r->create_path, stat->version, on_stale_deleted,
                      q);
    issued(r, drc, q, "delete", r->create_path);
    return;
  }
  free(q);
  if (rc != ZNONODE && !zg_zkconn_transient(rc))
    hard_error(r, "look up", r->create_path, rc);
}

static void check_owner(reg_t *r) {
  req_t *q = req_new(r, NULL, NULL);
  if (q)
    issued(r, zoo_aexists(r->zk.zh, r->create_path, 0, on_owner, q), q,
           "look up", r->create_path);
}

/* ---- a sequential create whose answer was lost ------------------------ */

static void on_extra_deleted(int rc, const void *data) {
  (void)rc;
  free((void *)(uintptr_t)data);
}

static void scan_done(batch_t *b) {
  reg_t *r = b->r;
  if (!stale(r, b->gen)) {
    r->busy = 0;
    if (b->found) {
      r->uncertain = 0;
      r->node = b->found;
      b->found = NULL;
      zg_info("register",
              "registered %s (%s, %s; created before the "
              "connection was lost)",
              r->node, zg_register_fmt_name(r->opts->format), r->addr);
    } else if (b->rc == 0) {
      r->uncertain = 0; /* it was never created: reconcile() creates it */
    } else if (!zg_zkconn_transient(b->rc)) {
      hard_error(r, "look up the children of", r->opts->zk_path, b->rc);
    }
  }
  free(b->found);
  free(b);
}

static void on_scan_stat(int rc, const struct Stat *stat, const void *data) {
  req_t *q = (req_t *)(uintptr_t)data;
  batch_t *b = q->batch;
  reg_t *r = b->r;
  if (!stale(r, b->gen)) {
    if (rc == ZOK && stat->ephemeralOwner == r->session_id) {
      if (!b->found) {
        b->found = strdup(q->path);
      } else {
        /* Cannot happen with one create at a time; never keep two. */
        req_t *d = req_new(r, NULL, NULL);
        if (d && zoo_adelete(r->zk.zh, q->path, -1, on_extra_deleted, d) != ZOK)
          free(d);
      }
    } else if (rc != ZOK && rc != ZNONODE && b->rc == 0) {
      b->rc = rc;
    }
  }
  free(q);
  if (--b->pending == 0)
    scan_done(b);
}

/* <prefix> followed by ZooKeeper's ten-digit sequence. */
static int ours_by_name(const reg_t *r, const char *child) {
  size_t n = strlen(r->prefix);
  if (strncmp(child, r->prefix, n) != 0 || strlen(child + n) != 10)
    return 0;
  for (const char *p = child + n; *p; p++)
    if (*p < '0' || *p > '9')
      return 0;
  return 1;
}

static void on_scan_list(int rc, const struct String_vector *children,
                         const void *data) {
  reg_t *r = req_take(data);
  batch_t *b;
  if (!r)
    return;
  if (rc != ZOK) {
    r->busy = 0;
    if (rc == ZNONODE)
      r->uncertain = 0; /* no parent, no child */
    else if (!zg_zkconn_transient(rc))
      hard_error(r, "list the children of", r->opts->zk_path, rc);
    return;
  }
  if (!(b = calloc(1, sizeof(*b)))) {
    r->busy = 0;
    return;
  }
  b->r = r;
  b->gen = r->gen; /* not stale: the current handle */
  b->pending = 1;  /* held until every request is out */
  for (int32_t i = 0; i < children->count; i++) {
    size_t n = strlen(r->opts->zk_path) + strlen(children->data[i]) + 2;
    char *path;
    req_t *cq;
    if (!ours_by_name(r, children->data[i]))
      continue;
    if (!(path = malloc(n))) {
      b->rc = ZSYSTEMERROR; /* looked at again: never a blind create */
      continue;
    }
    snprintf(path, n, "%s/%s", r->opts->zk_path, children->data[i]);
    cq = req_new(r, path, b);
    free(path);
    if (!cq) {
      b->rc = ZSYSTEMERROR;
      continue;
    }
    if (zoo_aexists(r->zk.zh, cq->path, 0, on_scan_stat, cq) != ZOK) {
      free(cq);
      b->rc = ZCONNECTIONLOSS;
      continue;
    }
    b->pending++;
  }
  if (--b->pending == 0)
    scan_done(b);
}

static void scan(reg_t *r) {
  req_t *q = req_new(r, NULL, NULL);
  if (q)
    issued(r, zoo_aget_children(r->zk.zh, r->opts->zk_path, 0, on_scan_list, q),
           q, "list the children of", r->opts->zk_path);
}

/* ---- removing the znode ------------------------------------------------ */

static void on_deleted(int rc, const void *data) {
  reg_t *r = req_take(data);
  if (!r)
    return;
  r->busy = 0;
  r->deleting = 0;
  if (rc == ZOK || rc == ZNONODE) {
    zg_info("register", "removed %s", r->node);
    free(r->node);
    r->node = NULL;
    r->watching = 0;
  } else if (!zg_zkconn_transient(rc)) {
    hard_error(r, "delete", r->node, rc);
  }
}

static void delete_node(reg_t *r) {
  req_t *q = req_new(r, NULL, NULL);
  if (q) {
    issued(r, zoo_adelete(r->zk.zh, r->node, -1, on_deleted, q), q, "delete",
           r->node);
    r->deleting = r->busy;
  }
}

/* ---- keeping the znode: repaired when someone else deletes it --------- */

/* Our znode is gone (or no longer ours) while the session lives: forgotten,
 * so that reconcile() creates it again, with the same data. */
static void node_lost(reg_t *r, const char *why) {
  zg_warn("register", "%s %s: %s", r->node, why,
          r->hc.health.healthy ? "creating it again"
                               : "the instance is unhealthy, not registering");
  free(r->node);
  r->node = NULL;
  r->watching = 0;
}

/* The exists watch on our znode. Watches are one-shot: any event on it
 * clears `watching`, and reconcile() sets the watch again. Session events
 * also reach path watchers (docs/platform.md, "Watches and session
 * events"): the session watcher handles
 * those. Our own delete fires it too: `deleting` tells. */
static void on_node_event(zhandle_t *zh, int type, int state, const char *path,
                          void *ctx) {
  reg_t *r = ctx;
  (void)state;
  if (type == ZOO_SESSION_EVENT || r->stopping || zh != r->zk.zh || !r->node ||
      !path || strcmp(path, r->node) != 0)
    return;
  r->watching = 0;
  if (type == ZOO_DELETED_EVENT && !r->deleting)
    node_lost(r, "was deleted by another session");
}

static void on_watch_set(int rc, const struct Stat *stat, const void *data) {
  req_t *q = (req_t *)(uintptr_t)data;
  reg_t *r = q->r;
  if (stale(r, q->gen) || !r->node || strcmp(q->path, r->node) != 0) {
    free(q);
    return;
  }
  free(q);
  if (rc == ZOK && stat->ephemeralOwner == r->session_id)
    return; /* watched */
  r->watching = 0;
  if (r->deleting)
    return; /* on_deleted() decides */
  if (rc == ZNONODE)
    node_lost(r, "was deleted by another session");
  else if (rc == ZOK)
    /* Deleted and made again by someone else under our name (Curator's
     * fixed one): created again, which replaces it (check_owner()). */
    node_lost(r, "was replaced by another session's znode");
  else if (!zg_zkconn_transient(rc))
    hard_error(r, "watch", r->node, rc);
}

static void watch_node(reg_t *r) {
  req_t *q = req_new(r, r->node, NULL);
  int rc;
  if (!q)
    return;
  rc = zoo_awexists(r->zk.zh, r->node, on_node_event, r, on_watch_set, q);
  if (rc != ZOK) {
    free(q);
    if (!zg_zkconn_transient(rc))
      hard_error(r, "watch", r->node, rc);
    return;
  }
  r->watching = 1; /* not `busy`: a create or delete may go meanwhile */
}

/* The one place that decides what to ask of ZooKeeper. */
static void reconcile(reg_t *r) {
  if (r->stopping || !r->zk.zh || !r->connected || r->busy ||
      now_ms(r) < r->retry_ms)
    return;
  if (r->hc.health.healthy && !r->node) {
    if (r->uncertain)
      scan(r);
    else
      create_node(r);
  } else if (!r->hc.health.healthy && r->node) {
    delete_node(r);
  } else if (r->node && !r->watching) {
    watch_node(r);
  }
}

/* ---- the session ------------------------------------------------------- */

static uint64_t auth_retry_ms(const reg_t *r) {
  return r->opts->session_timeout_ms > RETRY_MS ? r->opts->session_timeout_ms
                                                : RETRY_MS;
}

static void on_session_event(zhandle_t *zh, int type, int state,
                             const char *path, void *ctx) {
  reg_t *r = ctx;
  (void)path;
  if (type != ZOO_SESSION_EVENT || r->stopping || zh != r->zk.zh)
    return;
  if (state == ZOO_CONNECTED_STATE) {
    const clientid_t *id = zoo_client_id(zh);
    if (id->client_id == r->session_id) {
      zg_info("register", "reconnected to ZooKeeper (session 0x%llx)",
              (unsigned long long)id->client_id);
    } else {
      r->session_id = id->client_id;
      zg_info("register", "ZooKeeper session 0x%llx opened (timeout %d ms)",
              (unsigned long long)id->client_id, zoo_recv_timeout(zh));
    }
    r->connected = 1;
    r->waiting_logged = 0;
  } else if (state == ZOO_EXPIRED_SESSION_STATE) {
    zg_warn("register",
            "ZooKeeper session 0x%llx expired%s%s: opening a new session",
            (unsigned long long)r->session_id, r->node ? " and took " : "",
            r->node ? r->node : "");
    r->reinit = 1;
  } else if (state == ZOO_AUTH_FAILED_STATE) {
    /* The handle is dead. A new session is tried once per session timeout
     * (session_restart), not at once: the refused one lingers on the server
     * until then, and a server without the digest scheme refuses every one
     * (a tight loop opened thousands of sessions a second). */
    ZG_LOG(r->auth_refused ? ZG_LOG_DEBUG : ZG_LOG_ERROR, "register",
           "ZooKeeper authentication failed: opening a new session every "
           "%llu ms",
           (unsigned long long)auth_retry_ms(r));
    r->auth_refused = 1;
    r->reinit = 1;
  } else if (state == ZOO_CONNECTING_STATE || state == ZOO_ASSOCIATING_STATE) {
    if (r->connected) {
      zg_warn("register",
              "lost the ZooKeeper connection: reconnecting; %s%s while the "
              "session lives (%d ms)",
              r->node ? r->node : "nothing is registered",
              r->node ? " stays registered" : "", zoo_recv_timeout(zh));
      r->connected = 0;
      r->disconnected_ms = now_ms(r);
    }
  }
}

static int auth_user_len(const reg_t *r) {
  return (int)strcspn(r->opts->auth, ":");
}

/* A refusal also comes as ZOO_AUTH_FAILED_STATE: on_session_event(). */
static void on_auth(int rc, const void *data) {
  reg_t *r = (reg_t *)(uintptr_t)data;
  if (rc == ZOK && !r->stopping) {
    zg_debug("register", "authenticated to ZooKeeper as digest user '%.*s'",
             auth_user_len(r), r->opts->auth);
    r->auth_refused = 0;
  }
}

static void session_open(reg_t *r) {
  uint64_t dropped;
  int rc;
  r->reopen_ms = now_ms(r) + RETRY_MS;
  rc = zg_zkconn_open(&r->zk, r->opts->zk_hosts,
                      (int)r->opts->session_timeout_ms, on_session_event, r);
  /* UV_EAGAIN: the host names are being resolved (off the loop), and a
   * failure to resolve them is logged there; tried again at reopen_ms. */
  if (rc == UV_EAGAIN)
    return;
  /* zkconn queues the credentials (r->opts->auth) on every new handle
   * before it connects, so no request of a session goes unauthenticated.
   * Digest is not refused: a wrong password is another identity, which the
   * ACLs then deny (ZNOAUTH). */
  if (rc != 0 && r->zk.auth_rc != 0) {
    if (zg_ratelimit_allow(&r->error_rl, now_ms(r), &dropped))
      zg_error("register",
               "cannot add the credentials of digest user '%.*s': %s; "
               "retrying",
               auth_user_len(r), r->opts->auth, zerror(r->zk.auth_rc));
  } else if (rc != 0) {
    if (zg_ratelimit_allow(&r->error_rl, now_ms(r), &dropped))
      zg_error("register",
               "cannot create a ZooKeeper handle for '%s': %s; "
               "retrying",
               r->opts->zk_hosts, strerror(errno));
  }
}

/* A new handle, so a new session. The old session's znode is gone with it,
 * or goes when the server expires it. Not from inside a client callback. */
static void session_restart(reg_t *r) {
  r->reinit = 0;
  r->gen++;
  r->connected = 0;
  r->busy = 0;
  r->uncertain = 0;
  r->retry_ms = 0;
  r->watching = 0;
  r->deleting = 0;
  free(r->node);
  r->node = NULL;
  r->disconnected_ms = now_ms(r);
  zg_zkconn_reset(&r->zk, 0);
  if (r->auth_refused)
    r->reopen_ms = now_ms(r) + auth_retry_ms(r); /* on_tick() opens it */
  else
    session_open(r);
}

static void after_process(zg_zkconn_t *zc) {
  reg_t *r = zc->data;
  if (r->stopping)
    return;
  if (r->reinit)
    session_restart(r);
  else
    reconcile(r);
}

/* Every TICK_MS: a handle that could not be created is created; a
 * disconnection longer than the session timeout is treated as an expiry (a
 * server restarted without its data refuses the old session without ever
 * saying it expired); requests held back by an error are retried. */
static void on_tick(uv_timer_t *t) {
  reg_t *r = t->data;
  uint64_t now = now_ms(r), down = now - r->disconnected_ms;
  if (r->stopping)
    return;
  if (!r->zk.zh) {
    if (now >= r->reopen_ms)
      session_open(r);
    return;
  }
  if (!r->connected && r->session_id != 0) {
    int timeout = zoo_recv_timeout(r->zk.zh);
    if (timeout <= 0)
      timeout = (int)r->opts->session_timeout_ms;
    if (down > (uint64_t)timeout) {
      zg_warn("register",
              "no ZooKeeper connection for %llu ms, longer than the session "
              "timeout (%d ms): opening a new session",
              (unsigned long long)down, timeout);
      session_restart(r);
      return;
    }
  }
  if (!r->connected && !r->waiting_logged && down >= 2000) {
    r->waiting_logged = 1;
    zg_warn("register",
            "ZooKeeper at %s unreachable for %llu ms: still trying; %s",
            r->opts->zk_hosts, (unsigned long long)down,
            r->node ? "the znode lives while the session does"
                    : "the instance is not registered meanwhile");
  }
  reconcile(r);
  zg_zkconn_update(&r->zk);
}

/* ---- health checks (register/check.c) -------------------------------- */

static void on_health(void *arg) {
  reg_t *r = arg;
  reconcile(r);
  zg_zkconn_update(&r->zk);
}

static const char *registered_node(void *arg) {
  return ((reg_t *)arg)->node;
}

/* ---- life -------------------------------------------------------------- */

static void stop(reg_t *r, const char *why) {
  int connected = r->connected;
  if (r->stopping)
    return;
  r->stopping = 1;
  zg_info("register", "%s: closing the ZooKeeper session%s%s", why,
          r->node ? ", which removes " : "", r->node ? r->node : "");
  zg_regcheck_stop(&r->hc);
  uv_close((uv_handle_t *)&r->tick_timer, NULL);
  zg_reglife_signals_close(&r->sigterm, &r->sigint);
  /* Closing the session deletes its ephemeral znodes at once; the client
   * waits for the server's answer. */
  zg_zkconn_close(&r->zk, NULL);
  if (r->node && connected)
    zg_info("register", "session 0x%llx closed: %s removed",
            (unsigned long long)r->session_id, r->node);
  else if (r->node)
    zg_warn("register",
            "ZooKeeper unreachable: %s goes when the server expires session "
            "0x%llx",
            r->node, (unsigned long long)r->session_id);
  free(r->node);
  r->node = NULL;
}

static void on_signal(uv_signal_t *h, int signum) {
  stop(h->data, zg_reglife_signame(signum));
}

/* The znode's data and path, fixed for the process's life: a Curator id
 * and registration time survive new sessions, as Curator keeps them. */
static int prepare(void *arg) {
  reg_t *r = arg;
  const zg_register_opts_t *opts = r->opts;
  zg_regfmt_instance_t inst;
  const char *slash;
  int rc;
  if ((rc = zg_reglife_instance(opts, opts->zk_path, &inst)) != 0 ||
      (rc = zg_register_fmt_encode(&inst, &r->data, &r->len)) != 0 ||
      (rc = zg_register_fmt_child(&inst, &r->create_path, &r->sequential)) != 0)
    return rc;
  slash = strrchr(r->create_path, '/');
  r->prefix = slash + 1;
  zg_instance_addr_str(&opts->address, r->addr, sizeof(r->addr));
  if (opts->auth) {
    /* "auth" names every identity the creating session authenticated
     * with: the server writes digest:USER:BASE64(SHA1(USER:PASSWORD)) in
     * its place. World read: gateways list and read without credentials;
     * nobody else may change, delete or add under what we made. */
    r->acl_entries[0].perms = ZOO_PERM_ALL;
    r->acl_entries[0].id = ZOO_AUTH_IDS;
    r->acl_entries[1].perms = ZOO_PERM_READ;
    r->acl_entries[1].id = ZOO_ANYONE_ID_UNSAFE;
    r->acl.count = 2;
    r->acl.data = r->acl_entries;
  } else {
    r->acl = ZOO_OPEN_ACL_UNSAFE;
  }
  return 0;
}

static void release(void *arg) {
  reg_t *r = arg;
  free(r->data);
  free(r->create_path);
}

static void start(void *arg) {
  reg_t *r = arg;
  const zg_register_opts_t *opts = r->opts;
  zg_zkconn_init(r->loop, &r->zk, after_process, r);
  zg_zkconn_set_auth(&r->zk, opts->auth, on_auth, r);
  uv_timer_init(r->loop, &r->tick_timer);
  r->tick_timer.data = r;
  zg_reglife_signals_start(r->loop, &r->sigterm, &r->sigint, on_signal, r);
  zg_info("register",
          "zkgate-register %s: %s as %s under %s, ZooKeeper %s%s%.*s%s",
          ZKGATE_VERSION, r->addr, zg_register_fmt_name(opts->format),
          opts->zk_path, opts->zk_hosts, opts->auth ? " as digest user '" : "",
          opts->auth ? auth_user_len(r) : 0, opts->auth ? opts->auth : "",
          opts->auth ? "' (ACL: that user all, world read)" : "");
  zg_regcheck_start(&r->hc, r->loop, opts, r->addr, on_health, registered_node,
                    r);
  r->disconnected_ms = uv_now(r->loop);
  session_open(r);
  uv_timer_start(&r->tick_timer, on_tick, TICK_MS, TICK_MS);
}

int zg_register_run(const zg_register_opts_t *opts) {
  static const zg_reglife_ops_t ops = {prepare, start, release};
  reg_t r;
  uv_loop_t loop;
  memset(&r, 0, sizeof(r));
  r.opts = opts;
  r.loop = &loop;
  zg_ratelimit_init(&r.error_rl, 10000, 3);
  return zg_reglife_run(&loop, &ops, &r);
}
