/* The ZooKeeper registry source: owns the ZooKeeper session and, for every
 * watched path, the cache of decoded children. See zk_source.h and
 * source.h (the operations it implements for the gateway).
 *
 * The client is driven from libuv by registry/zkconn (uv_poll, its timer,
 * the interest/process cycle, the host names resolved off the loop): this
 * file keeps what the session means (connection, expiry, authentication,
 * flaps) and what it reads.
 *
 * Reads: a child list re-arms the child watch (zoo_awget_children2); data is
 * fetched only for children not seen before, so a change costs one list
 * plus one read per new child, and a removal costs no read at all. Data
 * watches are kept within the watch budget; children past it are checked
 * by the data sweep instead (both below). */
#include "registry/zk_source.h"

#include "core/error.h"
#include "core/instance.h"
#include "core/log.h"
#include "registry/catalog.h"
#include "registry/zkconn.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zookeeper/zookeeper.h>

typedef struct zk_source zk_source_t;

typedef struct {
  char *name;
  zg_instance_t inst;
  unsigned decoded : 1;   /* inst is valid */
  unsigned fetched : 1;   /* data read (decoded or not) */
  unsigned in_flight : 1; /* a read is outstanding */
  unsigned present : 1;   /* mark for the mark-and-sweep of a list */
  unsigned changed : 1;   /* data changed while a read was in flight */
  unsigned watched : 1;   /* holds a data watch of the budget: set by its
                             last read, or asked for by the read out */
  unsigned has_stat : 1;  /* read from its data: mzxid is that read's */
  unsigned checking : 1;  /* a sweep's stat is out */
  int64_t mzxid;          /* of the last read: the sweep compares it */
} reg_child_t;

typedef struct reg_service {
  zg_catalog_entry_t e; /* first: the catalog's entry (path, endpoint, ctx,
                           root, the pool published, outstanding reads) */
  zk_source_t *reg;
  int gone; /* unwatched: in the graveyard until no callback can come */
  uint64_t gy_bytes; /* its data watches left in the client while gone */
  size_t gy_watches;
  zg_decode_opts_t opts; /* opts.endpoint points at e.endpoint */
  reg_child_t *children;
  size_t n_children, cap_children;
  size_t n_sorted;    /* children[0..n_sorted) are sorted by name */
  int need_list;      /* list (and re-arm the watch) when connected */
  int denied;         /* ZooKeeper refused to list it (ZNOAUTH); logged */
  uint64_t denied_ms; /* when it last did */
} reg_service_t;

struct zk_source {
  zg_source_t base; /* first: a zg_source_t * is a zk_source_t * */
  uv_loop_t *loop;
  char *hosts;
  int session_timeout_ms;
  zg_catalog_t cat; /* pools, coalescing, max_stale, the state file; its
                       state and disconnected_ms are the session's */

  clientid_t last_client; /* the session we had; zero before the first */
  int reinit;             /* open a new session after this callback */
  int closing;
  int started;
  char *auth;               /* digest "user:password", NULL: none. Secret */
  int auth_refused;         /* the server refused it; logged */
  uint64_t auth_refused_ms; /* when it last did */
  zg_zkconn_t zk;           /* the handle and its loop driving; zk.zh is
                               NULL while there is no session */
  int zk_set;               /* zk initialised (zk_start) */
  uint64_t open_after_ms;   /* a failed zookeeper_init: not before then */
  zg_ratelimit_t open_rl;
  uint64_t max_watch_bytes; /* 0: no budget */
  uint64_t connected_ms;    /* uv_now of the last CONNECTED */
  int reconnected;          /* ... and it was to the same session */
  unsigned flaps;           /* drops right after CONNECTED, in a row */
  zg_ratelimit_t watch_rl;
  /* The watch budget's books (see "the watch budget" below). */
  uint64_t watch_budget;    /* max_watch_bytes, lowered by a refusal */
  uint64_t path_bytes;      /* child/exists watches of every path */
  size_t n_paths;           /* ... how many */
  uint64_t data_bytes;      /* data watches held by children */
  size_t n_data_watches;    /* ... how many */
  uint64_t graveyard_bytes; /* data watches left by unwatched paths */
  size_t n_graveyard_watches;
  int budget_short;  /* a read went without a watch: warn */
  int budget_warned; /* ... warned (until every child is watched) */
  zg_ratelimit_t budget_rl;
  /* The data sweep over children read without a watch. */
  uint64_t data_sweep_ms;  /* a full pass this often; 0: off */
  uint64_t sweep_start_ms; /* uv_now when the last pass started */
  int sweep_active;        /* a pass is under way */
  int promote_due;     /* data_sweep = 0: room was freed, promote by a read */
  size_t sweep_total;  /* children to check, counted at its start */
  size_t sweep_issued; /* checks issued in this pass */
  size_t sweep_svc, sweep_child; /* the pass's cursor */
  unsigned sweep_in_flight;
  uint64_t checks_total; /* stats issued by the sweep */

  uv_timer_t health_timer; /* session watchdog and list retries */
  uint64_t lists_total, reads_total;
  uint64_t expiries, watch_events;
  int open_handles;

  /* Unwatched paths. The client may still hold their watches and
   * completions, so they are kept (and reused for the same path) until the
   * client is closed: at a new session or at shutdown. */
  reg_service_t **graveyard;
  size_t n_graveyard;
  zg_ratelimit_t error_rl;
};

static void update_interest(zk_source_t *reg);
static const zg_source_ops_t zk_ops;
static void list_children(reg_service_t *svc);
static void watch_exists(reg_service_t *svc);
static void graveyard_free(zk_source_t *reg);

/* Errors that a reconnection or a new session cures: retried, not logged.
 * ZAUTHFAILED too: the handle is dead, and a new session is opened. */
static int transient(int rc) {
  return zg_zkconn_transient(rc) || rc == ZAUTHFAILED;
}

/* ---- access: credentials and ACLs -------------------------------------
 * Digest credentials are added to every new handle before it connects; the
 * client sends them ahead of any request on every connection (again after
 * a reconnection), so a session never reads unauthenticated.
 *
 * A wrong digest password is not refused: the server hashes what it gets
 * into an identity of its own, and the ACL then refuses the reads
 * (ZNOAUTH). That is reported per path, once, and retried every second
 * (a change of ACL fires no watch). The server refuses the credentials
 * themselves only when it has no such scheme (digest disabled on it): the
 * handle is then dead (ZOO_AUTH_FAILED_STATE). That is logged once, and a
 * new session is tried once per session timeout (the refused one lingers
 * on the server until then). Last known pools serve all along. */
#define DENIED_RETRY_MS 1000

static int auth_user_len(const zk_source_t *reg) {
  return (int)strcspn(reg->auth, ":");
}

static uint64_t auth_retry_ms(const zk_source_t *reg) {
  return reg->session_timeout_ms > 1000 ? (uint64_t)reg->session_timeout_ms
                                        : 1000;
}

/* The password is overwritten before its memory goes back to malloc. */
static void secret_free(char *s) {
  if (s) {
    for (volatile char *c = s; *c; c++)
      *c = 0;
    free(s);
  }
}

static void on_auth(int rc, const void *data) {
  zk_source_t *reg = (zk_source_t *)(uintptr_t)data;
  if (rc != ZOK || reg->closing)
    return; /* a refusal is also a session event: auth_refused() */
  if (reg->auth_refused)
    zg_info("registry",
            "ZooKeeper accepted the credentials of digest user '%.*s' again",
            auth_user_len(reg), reg->auth);
  else
    zg_debug("registry", "authenticated to ZooKeeper as digest user '%.*s'",
             auth_user_len(reg), reg->auth);
  reg->auth_refused = 0;
}

/* ZOO_AUTH_FAILED_STATE: the handle is dead (its requests fail with
 * ZAUTHFAILED, which transient() takes as cured by a new session). It is
 * closed after this callback, and session_open() waits auth_retry_ms()
 * before the next. */
static void auth_refused(zk_source_t *reg) {
  uint64_t now = uv_now(reg->loop);
  if (!reg->auth_refused && reg->auth) {
    zg_error("registry",
             "ZooKeeper refused the credentials of digest user '%.*s' "
             "([zookeeper] auth): trying a new session every %llu ms; the "
             "last known pools keep serving",
             auth_user_len(reg), reg->auth,
             (unsigned long long)auth_retry_ms(reg));
  } else if (!reg->auth_refused) {
    /* No credentials of ours: a server that insists on SASL, which the
     * single-threaded client does not have. */
    zg_error("registry",
             "ZooKeeper refused the session's authentication (does it "
             "require SASL?): trying a new session every %llu ms; the last "
             "known pools keep serving",
             (unsigned long long)auth_retry_ms(reg));
  } else {
    zg_debug("registry", "ZooKeeper refused the authentication again");
  }
  if (!reg->auth_refused && reg->cat.state == ZG_SOURCE_CONNECTED)
    reg->cat.disconnected_ms = now;
  if (reg->cat.state == ZG_SOURCE_CONNECTED)
    reg->cat.state = ZG_SOURCE_DISCONNECTED;
  reg->auth_refused = 1;
  reg->auth_refused_ms = now;
  reg->reinit = 1;
}

/* ZNOAUTH on a list: the ACL of the path gives this session no READ. */
static void list_denied(reg_service_t *svc) {
  zk_source_t *reg = svc->reg;
  svc->denied_ms = uv_now(reg->loop);
  if (svc->denied)
    return;
  svc->denied = 1;
  zg_error("registry",
           "%s: ZooKeeper denies listing it to %s%.*s%s (no READ in its "
           "ACL%s): retrying every %d ms; %s",
           svc->e.path, reg->auth ? "digest user '" : "this unauthenticated",
           reg->auth ? auth_user_len(reg) : 0, reg->auth ? reg->auth : "",
           reg->auth ? "'" : " session",
           reg->auth ? "; check [zookeeper] auth" : "; set [zookeeper] auth",
           DENIED_RETRY_MS,
           svc->e.published && svc->e.published->n > 0
               ? "the last known pool keeps serving"
               : "no instance from it until then");
}

/* The services, in the catalog (each starts with its entry). */
static reg_service_t *svc_at(const zk_source_t *reg, size_t i) {
  return (reg_service_t *)reg->cat.entries[i];
}

/* The catalog's view of a service's instances: its decoded children. */
static size_t svc_instances(zg_catalog_entry_t *e, zg_instance_t *list) {
  reg_service_t *svc = (reg_service_t *)e;
  size_t n = 0;
  if (!list)
    return svc->n_children;
  for (size_t i = 0; i < svc->n_children; i++)
    if (svc->children[i].decoded)
      list[n++] = svc->children[i].inst;
  return n;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- the watch budget's books -------------------------------------------
 * What a reconnection would re-register in its one SetWatches packet (see
 * "the watch budget" below): a child (or exists) watch per watched path,
 * the data watches children hold, and those that unwatched paths left in
 * the client. A child holds a data watch from the read that asks for one
 * until it leaves the list (its deletion fired the watch) or a read
 * fails (no watch was set); a watch that fires for a change is re-armed by
 * the read that follows, in the same place of the budget. The books count
 * a watch as soon as it is asked for, so they never undercount. */
#define SETWATCHES_OVERHEAD 64 /* header, relative zxid, vector counts */
/* Kept free for the paths of services added later (a reload, a discovery
 * root's new children), whose child watches are not optional. */
#define BUDGET_RESERVE_DIV 16

static size_t chroot_len(const zk_source_t *reg) {
  const char *chroot = strchr(reg->hosts, '/');
  return chroot && chroot[1] ? strlen(chroot) : 0;
}

/* A watch in the packet: its path as a length and the bytes, chroot
 * included. */
static uint64_t data_watch_cost(const reg_service_t *svc,
                                const reg_child_t *c) {
  return 4 + chroot_len(svc->reg) + strlen(svc->e.path) + 1 + strlen(c->name);
}

static void path_bytes_recount(zk_source_t *reg) {
  size_t clen = chroot_len(reg);
  reg->path_bytes = 0;
  reg->n_paths = reg->cat.n_entries + reg->n_graveyard;
  for (size_t i = 0; i < reg->n_paths; i++) {
    const reg_service_t *svc = i < reg->cat.n_entries
                                   ? svc_at(reg, i)
                                   : reg->graveyard[i - reg->cat.n_entries];
    reg->path_bytes += 4 + clen + strlen(svc->e.path);
  }
}

static uint64_t budget_used(const zk_source_t *reg) {
  return SETWATCHES_OVERHEAD + reg->path_bytes + reg->data_bytes +
         reg->graveyard_bytes;
}

/* 1 when `c` holds a data watch (already, or now taken from the budget). */
static int watch_take(reg_service_t *svc, reg_child_t *c) {
  zk_source_t *reg = svc->reg;
  uint64_t cost, limit;
  if (c->watched)
    return 1;
  cost = data_watch_cost(svc, c);
  limit = reg->watch_budget - reg->watch_budget / BUDGET_RESERVE_DIV;
  if (reg->watch_budget && budget_used(reg) + cost > limit)
    return 0;
  c->watched = 1;
  reg->data_bytes += cost;
  reg->n_data_watches++;
  return 1;
}

static void watch_release(reg_service_t *svc, reg_child_t *c) {
  zk_source_t *reg = svc->reg;
  if (!c->watched)
    return;
  c->watched = 0;
  reg->data_bytes -= data_watch_cost(svc, c);
  reg->n_data_watches--;
  reg->promote_due = 1;
}

/* ---- children and their data ----------------------------------------- */

static void child_free(reg_service_t *svc, reg_child_t *c) {
  watch_release(svc, c);
  free(c->name);
  if (c->decoded)
    zg_instance_clear(&c->inst);
}

static void forget_children(reg_service_t *svc) {
  for (size_t i = 0; i < svc->n_children; i++)
    child_free(svc, &svc->children[i]);
  svc->n_children = 0;
  svc->n_sorted = 0;
}

static int child_cmp(const void *a, const void *b) {
  return strcmp(((const reg_child_t *)a)->name, ((const reg_child_t *)b)->name);
}

/* Children are kept sorted by name after every list; the ones added by the
 * list being applied sit unsorted after n_sorted. */
static reg_child_t *child_find(reg_service_t *svc, const char *name) {
  size_t lo = 0, hi = svc->n_sorted;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(svc->children[mid].name, name);
    if (c == 0)
      return &svc->children[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (size_t i = svc->n_sorted; i < svc->n_children; i++)
    if (!strcmp(svc->children[i].name, name))
      return &svc->children[i];
  return NULL;
}

static char *child_path(const reg_service_t *svc, const char *name) {
  size_t plen = strlen(svc->e.path), nlen = strlen(name);
  char *path = malloc(plen + nlen + 2);
  if (path) {
    memcpy(path, svc->e.path, plen);
    path[plen] = '/';
    memcpy(path + plen + 1, name, nlen + 1);
  }
  return path;
}

/* Sets what the decoders cannot know: where the instance came from. */
static int set_provenance(reg_service_t *svc, reg_child_t *c,
                          const struct Stat *stat) {
  if (!(c->inst.key = child_path(svc, c->name)))
    return UV_ENOMEM;
  c->inst.version = stat ? stat->version : 0;
  c->inst.mtime_ms = stat ? stat->mtime : 0;
  return 0;
}

static void decoded(reg_service_t *svc, reg_child_t *c, int rc,
                    const char *err) {
  if (rc == 0) {
    c->decoded = 1;
    /* Something ignored (a weight that cannot be read): once per child
     * version, like the errors below. */
    if (err[0])
      zg_warn("registry", "%s/%s: %s", svc->e.path, c->name, err);
    zg_debug("registry", "%s/%s: %s instance %s:%u%s weight %u", svc->e.path,
             c->name, zg_instance_format_name(c->inst.format), c->inst.host,
             c->inst.port, c->inst.up ? "" : " (down)", c->inst.weight);
  } else if (rc == ZG_ESKIP) {
    zg_debug("registry", "%s/%s: not an instance (%s)", svc->e.path, c->name,
             err);
  } else {
    /* Once per child version: it is read again only when it changes. */
    zg_warn("registry",
            "%s/%s: cannot decode instance data (%s); child skipped",
            svc->e.path, c->name, err);
  }
}

typedef struct {
  reg_service_t *svc;
  char name[];
} data_req_t;

static void fetch(reg_service_t *svc, reg_child_t *c);

static void on_data(int rc, const char *value, int value_len,
                    const struct Stat *stat, const void *data) {
  data_req_t *req = (data_req_t *)(uintptr_t)data;
  reg_service_t *svc = req->svc;
  reg_child_t *c = child_find(svc, req->name);
  char err[160];

  svc->e.outstanding--;
  if (c && !svc->gone) {
    c->in_flight = 0;
    if (rc != ZOK)
      watch_release(svc, c); /* a read that fails sets no watch */
    if (rc == ZOK) {
      int drc;
      c->fetched = 1;
      c->has_stat = stat != NULL;
      c->mzxid = stat ? stat->mzxid : 0;
      if (c->decoded) {
        zg_instance_clear(&c->inst); /* a change in place */
        c->decoded = 0;
      }
      drc = zg_instance_decode(c->name, value,
                               value_len > 0 ? (size_t)value_len : 0,
                               &svc->opts, &c->inst, err, sizeof(err));
      if (drc == 0 && set_provenance(svc, c, stat) != 0) {
        zg_instance_clear(&c->inst);
        drc = UV_ENOMEM;
        snprintf(err, sizeof(err), "out of memory");
      }
      decoded(svc, c, drc, err);
    } else if (rc == ZNONODE) {
      /* Gone when read. Its removal is the child watch's business (which
       * fired before this answer came); but a child deleted and created
       * again under the same name stays in the list, so it is read again
       * when the next list still shows it. Until then the last data
       * stands. */
      c->fetched = 0;
      c->changed = 0;
      c->has_stat = 0;
    } else if (transient(rc)) {
      /* Neither data nor a data watch came back: the next list (once
       * connected) reads it again. The last data serves until then. */
      c->fetched = 0;
      c->changed = 0;
      svc->need_list = 1;
    } else {
      c->fetched = 1;
      zg_warn("registry",
              "%s/%s: cannot read instance data (%s); child skipped",
              svc->e.path, c->name, zerror(rc));
    }
    /* Changed again while this read was out: read once more. */
    if (c->changed && !svc->reg->closing && !transient(rc)) {
      c->changed = 0;
      fetch(svc, c);
    }
  }
  free(req);
  if (svc->e.outstanding == 0 && !transient(rc) && !svc->reg->closing &&
      !svc->gone)
    zg_catalog_changed(&svc->e);
}

/* A child's data changed (address, status, weight): read it again.
 *
 * A child deleted: its removal is the child watch's business, but it may
 * have been created again under the same name (Curator re-registering its
 * id, Dubbo 3, Registrator; in one transaction the child list does not even
 * change). The server sends this event before the parent's child event, so
 * the list that follows sees the name again and reads it as new: no read
 * for a plain removal, one for a re-creation. The last data serves until
 * then, so the pool changes in one step. */
static void on_data_watch(zhandle_t *zh, int type, int state, const char *path,
                          void *ctx) {
  reg_service_t *svc = ctx;
  size_t plen = strlen(svc->e.path);
  reg_child_t *c;
  (void)zh;
  (void)state;
  if ((type != ZOO_CHANGED_EVENT && type != ZOO_DELETED_EVENT) ||
      svc->reg->closing || svc->gone || !path ||
      strncmp(path, svc->e.path, plen) != 0 || path[plen] != '/')
    return;
  svc->reg->watch_events++;
  c = child_find(svc, path + plen + 1);
  if (!c)
    return;
  if (type == ZOO_DELETED_EVENT) {
    /* A read still out was sent before this event arrived but is answered
     * after the deletion: it tells what is there now. */
    if (!c->in_flight)
      c->fetched = 0;
    return;
  }
  zg_debug("registry", "%s/%s: data changed (data watch)", svc->e.path,
           c->name);
  if (c->in_flight)
    c->changed = 1;
  else
    fetch(svc, c);
}

static void fetch(reg_service_t *svc, reg_child_t *c) {
  zk_source_t *reg = svc->reg;
  size_t nlen = strlen(c->name);
  data_req_t *req = malloc(sizeof(*req) + nlen + 1);
  char *path = child_path(svc, c->name);
  int rc;
  if (!req || !path || !reg->zk.zh) {
    free(req);
    free(path);
    watch_release(svc, c); /* taken by a promotion: none was set */
    c->fetched = 0;        /* the next list reads it */
    svc->need_list = 1;
    return;
  }
  req->svc = svc;
  memcpy(req->name, c->name, nlen + 1);
  /* The data watch (context: the service, which outlives every watch)
   * tells of changes in place; past the watch budget the child is read
   * without one, and the data sweep looks for its changes. */
  if (watch_take(svc, c)) {
    rc = zoo_awget(reg->zk.zh, path, on_data_watch, svc, on_data, req);
  } else {
    rc = zoo_aget(reg->zk.zh, path, 0, on_data, req);
    reg->budget_short = 1; /* budget_warn() tells, once */
  }
  free(path);
  if (rc != ZOK) {
    watch_release(svc, c);
    free(req);
    c->fetched = 0; /* the next list reads it */
    svc->need_list = 1;
    return;
  }
  c->in_flight = 1;
  svc->e.outstanding++;
  svc->e.reads++;
  reg->reads_total++;
}

/* A new child: formats that live in the name need no read. A known child
 * listed unread (deleted and created again, a read lost) is read again;
 * its instance stands until the answer replaces it. */
static void child_added(reg_service_t *svc, reg_child_t *c) {
  char err[160];
  int rc;
  if (c->decoded) {
    fetch(svc, c);
    return;
  }
  rc = zg_instance_decode_name(c->name, &c->inst, err, sizeof(err));
  if (rc == 1) {
    fetch(svc, c);
    return;
  }
  c->fetched = 1;
  if (rc == 0 && set_provenance(svc, c, NULL) != 0) {
    zg_instance_clear(&c->inst);
    rc = UV_ENOMEM;
    snprintf(err, sizeof(err), "out of memory");
  }
  decoded(svc, c, rc, err);
}

static int has_decoded(const reg_service_t *svc) {
  for (size_t i = 0; i < svc->n_children; i++)
    if (svc->children[i].decoded)
      return 1;
  return 0;
}

/* A discovery root's list: its children, by name and sorted, are the
 * services. A root that does not exist (yet, or any more) changes nothing:
 * like a vanished zk_path, services stay until the root says otherwise. */
static void root_children(reg_service_t *svc, int rc,
                          const struct String_vector *strings) {
  zk_source_t *reg = svc->reg;
  const char **names;
  if (rc == ZNONODE) {
    zg_info("registry",
            "discovery root %s does not exist (yet): waiting for it",
            svc->e.path);
    watch_exists(svc);
    return;
  }
  if (rc != ZOK) {
    uint64_t dropped;
    svc->need_list = 1;
    if (!transient(rc) &&
        zg_ratelimit_allow(&reg->error_rl, uv_now(reg->loop), &dropped))
      zg_error("registry", "%s: cannot list children: %s", svc->e.path,
               zerror(rc));
    return;
  }
  names = malloc(((size_t)strings->count + 1) * sizeof(*names));
  if (!names) {
    svc->need_list = 1;
    return;
  }
  for (int32_t i = 0; i < strings->count; i++)
    names[i] = strings->data[i];
  qsort(names, (size_t)strings->count, sizeof(*names), name_cmp);
  svc->need_list = 0;
  zg_catalog_children(&svc->e, names, (size_t)strings->count);
  free(names);
}

static void on_children(int rc, const struct String_vector *strings,
                        const struct Stat *stat, const void *data) {
  reg_service_t *svc = (reg_service_t *)(uintptr_t)data;
  zk_source_t *reg = svc->reg;
  size_t kept = 0;
  int removed = 0;

  (void)stat;
  if (reg->closing || svc->gone)
    return;
  if (svc->e.root) {
    root_children(svc, rc, strings);
    return;
  }
  if (rc == ZNONODE) {
    /* Instances deregister by deleting their own znodes, never the parent:
     * a parent that vanishes is a registry accident (a server restarted
     * without its data, a careless delete). The last known pool keeps
     * serving until the path is back and says otherwise. */
    if (svc->e.published && svc->e.published->n > 0)
      zg_warn("registry",
              "%s vanished: keeping the last known %zu instance(s) until it "
              "reappears",
              svc->e.path, svc->e.published->n);
    else
      zg_info("registry", "%s does not exist (yet): waiting for it",
              svc->e.path);
    /* Children are forgotten (a re-created path may reuse their names for
     * other znodes), the pool is not. Watch for the path's creation; the
     * exists call may find it already there, and on_exists lists it. */
    forget_children(svc);
    watch_exists(svc);
    svc->e.resync = 0; /* the list has said what there is: nothing */
    if (!svc->e.synced)
      zg_catalog_changed(&svc->e);
    return;
  }
  if (rc != ZOK) {
    uint64_t dropped;
    svc->need_list = 1;
    if (rc == ZNOAUTH) {
      list_denied(svc);
      return;
    }
    if (!transient(rc) &&
        zg_ratelimit_allow(&reg->error_rl, uv_now(reg->loop), &dropped))
      zg_error("registry", "%s: cannot list children: %s", svc->e.path,
               zerror(rc));
    return;
  }
  svc->need_list = 0;
  /* From here the children are this session's: publications wait for
   * their reads (outstanding) as after any list. */
  svc->e.resync = 0;
  if (svc->denied)
    zg_info("registry", "%s: ZooKeeper lets us list it now", svc->e.path);
  svc->denied = 0;
  reg->auth_refused = 0; /* this session is accepted, credentials or not */

  /* Mark and sweep: children in the list are marked, new ones appended,
   * unmarked ones dropped. */
  for (size_t i = 0; i < svc->n_children; i++)
    svc->children[i].present = 0;
  for (int32_t i = 0; i < strings->count; i++) {
    const char *name = strings->data[i];
    reg_child_t *c = child_find(svc, name);
    if (!c) {
      if (svc->n_children == svc->cap_children) {
        size_t cap = svc->cap_children ? svc->cap_children * 2 : 8;
        reg_child_t *nc = realloc(svc->children, cap * sizeof(*nc));
        if (!nc) {
          svc->need_list = 1;
          break;
        }
        svc->children = nc;
        svc->cap_children = cap;
      }
      c = &svc->children[svc->n_children];
      memset(c, 0, sizeof(*c));
      if (!(c->name = strdup(name))) {
        svc->need_list = 1;
        break;
      }
      svc->n_children++;
    }
    c->present = 1;
  }
  for (size_t i = 0; i < svc->n_children; i++) {
    reg_child_t *c = &svc->children[i];
    if (!c->present) {
      if (c->decoded)
        removed = 1;
      child_free(svc, c);
      continue;
    }
    svc->children[kept++] = *c;
  }
  svc->n_children = kept;
  /* Sorted by name: lookups by name are binary searches, and pools and
   * logs come out in one order. */
  if (svc->n_children > 1)
    qsort(svc->children, svc->n_children, sizeof(*svc->children), child_cmp);
  svc->n_sorted = svc->n_children;
  for (size_t i = 0; i < svc->n_children; i++) {
    reg_child_t *c = &svc->children[i];
    if (!c->fetched && !c->in_flight)
      child_added(svc, c);
  }
  /* A removal is applied at once, without waiting for new children's
   * data, unless that would leave the pool empty while reads are out (a
   * resync where every instance came back under a new name): then the
   * pool changes in one step when the last read is back. */
  if (svc->e.outstanding == 0 || (removed && has_decoded(svc)))
    zg_catalog_changed(&svc->e); /* no-op when the pool would not change */
}

static void on_child_watch(zhandle_t *zh, int type, int state, const char *path,
                           void *ctx) {
  reg_service_t *svc = ctx;
  (void)zh;
  (void)state;
  (void)path;
  if (type == ZOO_SESSION_EVENT || svc->reg->closing || svc->gone)
    return; /* session events also reach path watchers: not ours */
  svc->reg->watch_events++;
  list_children(svc);
}

static void on_exists(int rc, const struct Stat *stat, const void *data) {
  reg_service_t *svc = (reg_service_t *)(uintptr_t)data;
  (void)stat;
  if (svc->reg->closing || svc->gone)
    return;
  if (rc == ZOK)
    list_children(svc); /* created between our list and this call */
  else if (rc != ZNONODE)
    svc->need_list = 1;
}

static void on_exists_watch(zhandle_t *zh, int type, int state,
                            const char *path, void *ctx) {
  reg_service_t *svc = ctx;
  (void)zh;
  (void)state;
  (void)path;
  if (type == ZOO_SESSION_EVENT || svc->reg->closing || svc->gone)
    return;
  svc->reg->watch_events++;
  list_children(svc);
}

/* Lists the children and re-arms the child watch; when the node does not
 * exist, on_children turns to an exists watch. */
static void list_children(reg_service_t *svc) {
  zk_source_t *reg = svc->reg;
  svc->need_list = 1;
  if (!reg->zk.zh || reg->closing || reg->cat.state != ZG_SOURCE_CONNECTED)
    return;
  if (svc->denied && uv_now(reg->loop) - svc->denied_ms < DENIED_RETRY_MS)
    return; /* the health timer retries */
  if (zoo_awget_children2(reg->zk.zh, svc->e.path, on_child_watch, svc,
                          on_children, svc) == ZOK) {
    svc->need_list = 0;
    svc->e.lists++;
    reg->lists_total++;
  }
}

static void watch_exists(reg_service_t *svc) {
  zk_source_t *reg = svc->reg;
  if (!reg->zk.zh || reg->closing ||
      zoo_awexists(reg->zk.zh, svc->e.path, on_exists_watch, svc, on_exists,
                   svc) != ZOK)
    svc->need_list = 1;
}

/* ---- the watch budget --------------------------------------------------
 * On every reconnection the C client re-registers all the session's
 * watches in one SetWatches packet (3.8: no persistent watches, and the
 * packet is not split). A server refuses a packet over its jute.maxbuffer
 * (default 1 MiB - 1) by closing the connection: the connection then drops
 * right after each CONNECTED, and the session, kept alive by every
 * reconnection, stays blind for good. So the watches are kept under
 * max_watch_bytes:
 * - every path keeps its child (or exists) watch: that is what sees
 *   instances come and go;
 * - a child read from its data holds a data watch while the books say it
 *   fits (watch_take); past that it is read without one, and the data
 *   sweep below finds its changes in place. A reconnection within the
 *   session then always fits, however many instances there are.
 * Two defences remain for an estimate that is wrong:
 * - a session whose watches are estimated over the budget anyway (paths
 *   added after the data watches filled it) is given up at its first lost
 *   connection, for a new one, which sets its watches a read at a time (a
 *   full re-read; the pools serve meanwhile, as after an expiry);
 * - whatever the estimate says, FLAP_LIMIT connections in a row that drop
 *   within FLAP_MS of CONNECTED are taken for that refusal (a server whose
 *   jute.maxbuffer is under max_watch_bytes): a new session, and the budget
 *   is halved below what was refused, so that the new session fits. Those
 *   short connections do not restart the clock of the disconnection either
 *   (max_stale, "longer than the session timeout"). */
#define FLAP_MS 1000
#define FLAP_LIMIT 3

/* The packet's size, from the books. */
static uint64_t watch_bytes(const zk_source_t *reg, size_t *n_watches) {
  *n_watches = reg->n_paths + reg->n_data_watches + reg->n_graveyard_watches;
  return budget_used(reg);
}

/* Children read from their data that hold no data watch. */
static size_t count_unwatched(const zk_source_t *reg) {
  size_t n = 0;
  for (size_t i = 0; i < reg->cat.n_entries; i++) {
    const reg_service_t *svc = svc_at(reg, i);
    for (size_t k = 0; !svc->e.root && k < svc->n_children; k++)
      n += svc->children[k].has_stat && !svc->children[k].watched;
  }
  return n;
}

/* Once when the budget is first reached (again after every child was
 * watched once more), at most every 10 minutes: the operator learns that
 * changes in place of some instances now take up to data_sweep. */
static void budget_warn(zk_source_t *reg) {
  uint64_t dropped;
  size_t n;
  if (!reg->budget_short || reg->budget_warned)
    return;
  n = count_unwatched(reg);
  if (n == 0) {
    /* Those read without a watch are not back yet: wait for them (a read
     * that failed is no news). */
    for (size_t i = 0; i < reg->cat.n_entries; i++)
      if (svc_at(reg, i)->e.outstanding)
        return;
  }
  reg->budget_short = 0;
  if (n == 0 ||
      !zg_ratelimit_allow(&reg->budget_rl, uv_now(reg->loop), &dropped))
    return;
  reg->budget_warned = 1;
  if (reg->data_sweep_ms)
    zg_warn("registry",
            "the ZooKeeper watch budget is reached ([zookeeper] "
            "max_watch_bytes %llu: %zu path and %zu data watches, about "
            "%llu bytes to re-register): %zu instance(s) are read without a "
            "data watch, and their data changes in place are seen by the "
            "data sweep within data_sweep (%llu ms); new and removed "
            "instances are still seen at once",
            (unsigned long long)reg->watch_budget, reg->n_paths,
            reg->n_data_watches, (unsigned long long)budget_used(reg), n,
            (unsigned long long)reg->data_sweep_ms);
  else
    zg_warn("registry",
            "the ZooKeeper watch budget is reached ([zookeeper] "
            "max_watch_bytes %llu: %zu path and %zu data watches, about "
            "%llu bytes to re-register): %zu instance(s) are read without a "
            "data watch, and with data_sweep = 0 their data changes in place "
            "are not seen (new and removed instances are)",
            (unsigned long long)reg->watch_budget, reg->n_paths,
            reg->n_data_watches, (unsigned long long)budget_used(reg), n);
}

/* ---- the data sweep ------------------------------------------------------
 * Children read without a data watch are checked with a stat (zoo_aexists
 * without a watch: no data, nothing left in the client), one pass every
 * data_sweep, the checks of a pass spread over its first three quarters
 * and at most SWEEP_IN_FLIGHT out at once: never a burst of 100,000
 * requests. A stat whose mzxid differs from that of the last read (the
 * data was set, or the znode deleted and created again) reads the child
 * again. A child met by the sweep while the budget has room again (watched
 * children went away) is read with a data watch instead: promoted. */
#define SWEEP_IN_FLIGHT 128

typedef struct {
  reg_service_t *svc;
  char name[];
} sweep_req_t;

static void sweep_pump(zk_source_t *reg);

static void on_sweep_stat(int rc, const struct Stat *stat, const void *data) {
  sweep_req_t *req = (sweep_req_t *)(uintptr_t)data;
  reg_service_t *svc = req->svc;
  zk_source_t *reg = svc->reg;
  reg_child_t *c;
  reg->sweep_in_flight--;
  if (reg->closing || svc->gone || !(c = child_find(svc, req->name))) {
    free(req);
    return;
  }
  c->checking = 0;
  /* ZNONODE: gone, which the child watch tells (and a re-creation too, or
   * the next pass sees its new mzxid). Other errors: the next pass. */
  if (rc == ZOK && c->has_stat && stat->mzxid != c->mzxid && !c->in_flight) {
    zg_debug("registry", "%s/%s: data changed (seen by the data sweep)",
             svc->e.path, c->name);
    fetch(svc, c);
  }
  free(req);
  if (!transient(rc)) /* else the handle is going: the next tick */
    sweep_pump(reg);
}

/* The next child of the pass to check, or NULL at its end. */
static reg_child_t *sweep_next(zk_source_t *reg, reg_service_t **svc_out) {
  for (; reg->sweep_svc < reg->cat.n_entries;
       reg->sweep_svc++, reg->sweep_child = 0) {
    reg_service_t *svc = svc_at(reg, reg->sweep_svc);
    if (svc->e.root)
      continue;
    while (reg->sweep_child < svc->n_children) {
      reg_child_t *c = &svc->children[reg->sweep_child++];
      if (c->has_stat && !c->watched && !c->in_flight && !c->checking) {
        *svc_out = svc;
        return c;
      }
    }
  }
  return NULL;
}

static int sweep_check(reg_service_t *svc, reg_child_t *c) {
  zk_source_t *reg = svc->reg;
  size_t nlen = strlen(c->name);
  sweep_req_t *req;
  char *path;
  int rc;
  if (watch_take(svc, c)) { /* room again: promoted, by a read */
    fetch(svc, c);
    return 0;
  }
  req = malloc(sizeof(*req) + nlen + 1);
  path = child_path(svc, c->name);
  if (!req || !path) {
    free(req);
    free(path);
    return UV_ENOMEM;
  }
  req->svc = svc;
  memcpy(req->name, c->name, nlen + 1);
  rc = zoo_aexists(reg->zk.zh, path, 0, on_sweep_stat, req);
  free(path);
  if (rc != ZOK) {
    free(req);
    return ZG_EZOOKEEPER;
  }
  c->checking = 1;
  reg->sweep_in_flight++;
  reg->checks_total++;
  return 0;
}

/* data_sweep = 0: without a sweep to promote them, unwatched children
 * are read again with a watch once room is freed, SWEEP_IN_FLIGHT a tick
 * at most; a full scan only after a watch was released. */
static void promote_pass(zk_source_t *reg) {
  unsigned n = 0;
  for (size_t i = 0; i < reg->cat.n_entries; i++) {
    reg_service_t *svc = svc_at(reg, i);
    if (svc->e.root)
      continue;
    for (size_t k = 0; k < svc->n_children; k++) {
      reg_child_t *c = &svc->children[k];
      if (!c->has_stat || c->watched || c->in_flight || c->checking)
        continue;
      if (n == SWEEP_IN_FLIGHT)
        return; /* the next tick goes on */
      if (!watch_take(svc, c)) {
        reg->promote_due = 0; /* full again */
        return;
      }
      fetch(svc, c);
      n++;
    }
  }
  reg->promote_due = 0;
}

/* From the health timer and from each answer: issues the checks the pass
 * is due by now. */
static void sweep_pump(zk_source_t *reg) {
  uint64_t now = uv_now(reg->loop), spread, elapsed, due;
  if (!reg->zk.zh || reg->closing || reg->cat.state != ZG_SOURCE_CONNECTED)
    return;
  if (!reg->data_sweep_ms) {
    if (reg->promote_due)
      promote_pass(reg);
    return;
  }
  if (!reg->sweep_active) {
    if (now - reg->sweep_start_ms < reg->data_sweep_ms)
      return;
    reg->sweep_start_ms = now;
    reg->sweep_total = count_unwatched(reg);
    if (reg->sweep_total == 0) {
      reg->budget_warned = 0; /* every child is watched again */
      return;
    }
    reg->sweep_active = 1;
    reg->sweep_issued = 0;
    reg->sweep_svc = reg->sweep_child = 0;
  }
  spread = reg->data_sweep_ms - reg->data_sweep_ms / 4;
  elapsed = now - reg->sweep_start_ms;
  /* Children that came after the count are checked once the spread is
   * over. */
  due = spread == 0 || elapsed >= spread
            ? SIZE_MAX
            : reg->sweep_total * elapsed / spread + 1;
  while (reg->sweep_issued < due && reg->sweep_in_flight < SWEEP_IN_FLIGHT) {
    reg_service_t *svc = NULL;
    reg_child_t *c = sweep_next(reg, &svc);
    if (!c) {
      reg->sweep_active = 0; /* the pass is over */
      return;
    }
    if (sweep_check(svc, c) != 0)
      return; /* the next tick goes on from the next child */
    reg->sweep_issued++;
  }
}

/* ZOO_CONNECTING_STATE after CONNECTED: 1 when a new session must replace
 * this one (reg->reinit is then set and the reason logged). */
static int connection_lost(zk_source_t *reg) {
  uint64_t now = uv_now(reg->loop), bytes, dropped;
  size_t n;
  /* Only a reconnection re-sends watches: a new session's first
   * connection that drops is an ordinary drop. */
  if (reg->reconnected && now - reg->connected_ms < FLAP_MS) {
    reg->flaps++;
  } else {
    reg->flaps = 0;
    reg->cat.disconnected_ms = now;
  }
  reg->cat.state = ZG_SOURCE_DISCONNECTED;
  if (reg->flaps >= FLAP_LIMIT) {
    uint64_t was = reg->watch_budget;
    bytes = watch_bytes(reg, &n);
    /* The servers take less than the budget said: the new session keeps
     * under half of what was refused (never under 1k, where no data watch
     * would fit), for as long as this process runs. */
    if (bytes / 2 >= 1024 && (was == 0 || bytes / 2 < was))
      reg->watch_budget = bytes / 2;
    if (zg_ratelimit_allow(&reg->watch_rl, now, &dropped))
      zg_error("registry",
               "the ZooKeeper connection dropped within %d ms of each of the "
               "last %u reconnections: the server is likely refusing the "
               "%zu watches (about %llu bytes) the session re-registers in "
               "one SetWatches packet, over its jute.maxbuffer; opening a "
               "new session (pools are kept until it is synchronised), "
               "with the watch budget lowered from %llu to %llu bytes. "
               "Raise jute.maxbuffer on the servers, or lower [zookeeper] "
               "max_watch_bytes (now %llu) under it",
               FLAP_MS, reg->flaps, n, (unsigned long long)bytes,
               (unsigned long long)was, (unsigned long long)reg->watch_budget,
               (unsigned long long)reg->max_watch_bytes);
    reg->reinit = 1;
    return 1;
  }
  if (reg->flaps > 0)
    return 0; /* the first drop was logged */
  if (reg->watch_budget && (bytes = watch_bytes(reg, &n)) > reg->watch_budget) {
    if (zg_ratelimit_allow(&reg->watch_rl, now, &dropped))
      zg_warn("registry",
              "lost the ZooKeeper connection: the session's %zu watches "
              "(about %llu bytes) are over [zookeeper] max_watch_bytes "
              "(%llu) to re-register in one packet (a server refuses one "
              "over its jute.maxbuffer): opening a new session instead; "
              "pools are kept until it is synchronised",
              n, (unsigned long long)bytes,
              (unsigned long long)reg->watch_budget);
    reg->reinit = 1;
    return 1;
  }
  zg_warn("registry", "lost the ZooKeeper connection: serving the last "
                      "known pools while reconnecting");
  return 0;
}

/* ---- session --------------------------------------------------------- */

static void list_pending(zk_source_t *reg) {
  for (size_t i = 0; i < reg->cat.n_entries; i++)
    if (svc_at(reg, i)->need_list)
      list_children(svc_at(reg, i));
}

static void on_session_event(zhandle_t *zh, int type, int state,
                             const char *path, void *ctx) {
  zk_source_t *reg = ctx;
  (void)path;
  if (type != ZOO_SESSION_EVENT || reg->closing)
    return;
  if (state == ZOO_CONNECTED_STATE) {
    const clientid_t *id = zoo_client_id(zh);
    int same = id->client_id == reg->last_client.client_id;
    const char *chroot = strchr(reg->hosts, '/');
    /* The server, for ensembles; the chroot, which every path logged is
     * relative to. */
    ZG_LOG(reg->auth_refused ? ZG_LOG_DEBUG : ZG_LOG_INFO, "registry",
           "%s ZooKeeper session 0x%llx on %s%s%s (timeout %d ms)",
           same ? "reconnected to" : "opened", (long long)id->client_id,
           zoo_get_current_server(zh), chroot ? ", chroot " : "",
           chroot ? chroot : "", zoo_recv_timeout(zh));
    reg->last_client = *id;
    reg->cat.state = ZG_SOURCE_CONNECTED;
    reg->connected_ms = uv_now(reg->loop);
    reg->reconnected = same;
    if (!same)
      for (size_t i = 0; i < reg->cat.n_entries; i++)
        svc_at(reg, i)->need_list = 1;
    /* Within the same session the client re-registers its watches; only
     * lists that failed while disconnected are repeated, and pools that
     * max_stale hid come back from the children still known. */
    list_pending(reg);
    for (size_t i = 0; i < reg->cat.n_entries; i++)
      if (svc_at(reg, i)->e.stale && same && !svc_at(reg, i)->need_list &&
          svc_at(reg, i)->e.outstanding == 0)
        zg_catalog_changed(&svc_at(reg, i)->e);
  } else if (state == ZOO_EXPIRED_SESSION_STATE) {
    zg_warn("registry",
            "ZooKeeper session 0x%llx expired: opening a new "
            "session; pools are kept until it is synchronised",
            (long long)reg->last_client.client_id);
    reg->reinit = 1;
  } else if (state == ZOO_AUTH_FAILED_STATE) {
    auth_refused(reg);
  } else if (state == ZOO_CONNECTING_STATE || state == ZOO_ASSOCIATING_STATE) {
    if (reg->cat.state == ZG_SOURCE_CONNECTED)
      connection_lost(reg);
  }
}

static int session_open(zk_source_t *reg) {
  uint64_t now = uv_now(reg->loop), dropped;
  int rc;
  if (reg->auth_refused && now - reg->auth_refused_ms < auth_retry_ms(reg))
    return UV_EAGAIN; /* the health timer comes back */
  if (now < reg->open_after_ms)
    return UV_EAGAIN;
  /* On the addresses the names resolved to, off the loop: UV_EAGAIN until
   * there are some (a failure to resolve is logged by zg_zkhosts). Static
   * instances and the state file serve meanwhile. */
  rc = zg_zkconn_open(&reg->zk, reg->hosts, reg->session_timeout_ms,
                      on_session_event, reg);
  if (rc == UV_EAGAIN)
    return UV_EAGAIN;
  if (rc != 0 && reg->zk.auth_rc != 0) {
    /* zkconn queues the credentials on every new handle (zkconn.h). */
    zg_error("registry", "cannot add the credentials of digest user '%.*s': %s",
             auth_user_len(reg), reg->auth, zerror(reg->zk.auth_rc));
    return ZG_EZOOKEEPER;
  }
  if (rc != 0) {
    /* Retried every second by the health timer; logged once a minute. */
    reg->open_after_ms = now + 1000;
    if (zg_ratelimit_allow(&reg->open_rl, now, &dropped))
      zg_error("registry",
               "cannot create a ZooKeeper handle for '%s': %s; retrying "
               "every second%s",
               reg->hosts, strerror(errno),
               dropped ? " (repeats suppressed)" : "");
    return ZG_EZOOKEEPER;
  }
  return 0;
}

/* Closes the handle and opens a new session. Outside of zookeeper_process
 * only: the client must not be closed from its own callbacks. */
static void session_restart(zk_source_t *reg) {
  reg->reinit = 0;
  reg->flaps = 0;
  reg->expiries++;
  zg_zkconn_reset(&reg->zk, 0);
  graveyard_free(reg); /* the client that held their watches is gone */
  reg->cat.state = ZG_SOURCE_CONNECTING;
  /* zookeeper_close answered the sweep's stats; the new session reads
   * every child, so its first pass comes a full interval later. */
  reg->sweep_in_flight = 0;
  reg->sweep_active = 0;
  reg->sweep_start_ms = uv_now(reg->loop);
  memset(&reg->last_client, 0, sizeof(reg->last_client));
  for (size_t i = 0; i < reg->cat.n_entries; i++) {
    reg_service_t *svc = svc_at(reg, i);
    svc->need_list = 1;
    /* Reads of the old session were completed with an error by
     * zookeeper_close. The children are forgotten too: a name seen in the
     * new session may be a new znode (sequence numbers start again on a
     * server that lost its data), so every child is read again. The
     * published pool stays until the first list of the new session has
     * been read in full, and is then replaced in one step. */
    svc->e.outstanding = 0;
    forget_children(svc);
    /* A publication the window was still holding was of the old session's
     * children, which are gone: published now it would be an empty pool. */
    svc->e.dirty = 0;
    svc->e.resync = 1;
  }
  session_open(reg); /* else retried by the health timer */
}

/* After every zookeeper_process(), outside of the client's callbacks
 * (zkconn updates the interest next). */
static void after_process(zg_zkconn_t *zc) {
  zk_source_t *reg = zc->data;
  if (reg->reinit && !reg->closing)
    session_restart(reg);
}

/* After issuing requests from outside a client callback (zkconn.h). */
static void update_interest(zk_source_t *reg) {
  if (!reg->closing)
    zg_zkconn_update(&reg->zk);
}

/* Every 100 ms: a disconnection longer than the session timeout is treated
 * as an expiry (a server restarted without its data refuses the old session
 * without ever saying it expired); failed lists are retried. */
static void on_health_timer(uv_timer_t *t) {
  zk_source_t *reg = t->data;
  uint64_t now = uv_now(reg->loop);
  if (reg->closing)
    return;
  zg_catalog_check_stale(&reg->cat, now);
  zg_zkhosts_tick(&reg->zk.hosts, reg->cat.state == ZG_SOURCE_CONNECTED);
  if (!reg->zk.zh) {
    session_open(reg);
    return;
  }
  if (reg->cat.state == ZG_SOURCE_DISCONNECTED) {
    int timeout = zoo_recv_timeout(reg->zk.zh);
    if (timeout <= 0)
      timeout = reg->session_timeout_ms;
    if (now - reg->cat.disconnected_ms > (uint64_t)timeout) {
      zg_warn("registry",
              "no ZooKeeper connection for %llu ms, longer than "
              "the session timeout (%d ms): opening a new session; pools are "
              "kept until it is synchronised",
              (unsigned long long)(now - reg->cat.disconnected_ms), timeout);
      session_restart(reg);
      return;
    }
  }
  if (reg->cat.state == ZG_SOURCE_CONNECTED) {
    list_pending(reg);
    budget_warn(reg);
    sweep_pump(reg);
    update_interest(reg);
  }
}

/* ---- life ------------------------------------------------------------ */

static zk_source_t *zk_new(uv_loop_t *loop, const char *hosts,
                           uint64_t session_timeout_ms, uint64_t coalesce_ms,
                           zg_source_publish_cb cb,
                           zg_source_children_cb children_cb, void *cb_arg) {
  zk_source_t *reg = calloc(1, sizeof(*reg));
  if (!reg)
    return NULL;
  reg->base.ops = &zk_ops;
  reg->loop = loop;
  reg->hosts = strdup(hosts);
  reg->session_timeout_ms = (int)session_timeout_ms;
  zg_catalog_init(&reg->cat, loop, "ZooKeeper", coalesce_ms, cb, children_cb,
                  cb_arg, svc_instances);
  zg_ratelimit_init(&reg->error_rl, 10000, 5);
  zg_ratelimit_init(&reg->open_rl, 60000, 1);
  zg_ratelimit_init(&reg->watch_rl, 60000, 1);
  zg_ratelimit_init(&reg->budget_rl, 600000, 1);
  reg->data_sweep_ms = 30000;
  if (!reg->hosts) {
    free(reg);
    return NULL;
  }
  return reg;
}

static void service_free(reg_service_t *svc) {
  forget_children(svc);
  free(svc->children);
  zg_catalog_entry_clear(&svc->e);
  free(svc);
}

static void graveyard_free(zk_source_t *reg) {
  for (size_t i = 0; i < reg->n_graveyard; i++)
    service_free(reg->graveyard[i]);
  free(reg->graveyard);
  reg->graveyard = NULL;
  reg->n_graveyard = 0;
  reg->graveyard_bytes = 0;
  reg->n_graveyard_watches = 0;
  path_bytes_recount(reg);
}

static int same_opt(const char *a, const char *b) {
  return (!a && !b) || (a && b && !strcmp(a, b));
}

static int add_watch(zk_source_t *reg, const char *zk_path,
                     const char *endpoint, void *ctx, int root) {
  reg_service_t *svc = NULL;
  int from_graveyard = 0;
  /* A path watched before: its graveyard entry comes back, so that the
   * graveyard holds each path once at most. */
  for (size_t i = 0; i < reg->n_graveyard; i++) {
    reg_service_t *g = reg->graveyard[i];
    if (g->e.root == root && g->e.outstanding == 0 &&
        !strcmp(g->e.path, zk_path) && same_opt(g->e.endpoint, endpoint)) {
      svc = g;
      from_graveyard = 1;
      reg->graveyard[i] = reg->graveyard[--reg->n_graveyard];
      svc->gone = 0;
      /* Its children's paths are watched again by this very context:
       * the client keeps one watch per path, counted once. */
      reg->graveyard_bytes -= svc->gy_bytes;
      reg->n_graveyard_watches -= svc->gy_watches;
      svc->gy_bytes = 0;
      svc->gy_watches = 0;
      svc->e.synced = svc->e.dirty = svc->e.stale = svc->e.from_file = 0;
      svc->e.lists = svc->e.reads = 0;
      break;
    }
  }
  if (!svc) {
    if (!(svc = calloc(1, sizeof(*svc))))
      return UV_ENOMEM;
    if (zg_catalog_entry_init(&reg->cat, &svc->e, zk_path, endpoint, root) !=
        0) {
      free(svc);
      return UV_ENOMEM;
    }
    svc->reg = reg;
    svc->opts.endpoint = svc->e.endpoint;
  }
  if (zg_catalog_add(&reg->cat, &svc->e, ctx) != 0) {
    if (from_graveyard) { /* back where it was: its slot is still there */
      svc->gone = 1;
      reg->graveyard[reg->n_graveyard++] = svc;
    } else {
      service_free(svc);
    }
    return UV_ENOMEM;
  }
  svc->need_list = 1;
  path_bytes_recount(reg);
  if (reg->started && reg->cat.state == ZG_SOURCE_CONNECTED) {
    list_children(svc);
    update_interest(reg);
  }
  return 0;
}

static int zk_watch(zg_source_t *src, const char *zk_path, const char *endpoint,
                    void *ctx) {
  return add_watch((zk_source_t *)src, zk_path, endpoint, ctx, 0);
}

static int zk_watch_root(zg_source_t *src, const char *zk_root, void *ctx) {
  return add_watch((zk_source_t *)src, zk_root, NULL, ctx, 1);
}

static void zk_retarget(zg_source_t *src, void *old_ctx, void *new_ctx) {
  zk_source_t *reg = (zk_source_t *)src;
  for (size_t i = 0; i < reg->cat.n_entries; i++)
    if (svc_at(reg, i)->e.ctx == old_ctx) {
      svc_at(reg, i)->e.ctx = new_ctx;
      return;
    }
}

static void zk_unwatch(zg_source_t *src, void *ctx) {
  zk_source_t *reg = (zk_source_t *)src;
  for (size_t i = 0; i < reg->cat.n_entries; i++) {
    reg_service_t *svc = svc_at(reg, i), **ng;
    if (svc->e.ctx != ctx)
      continue;
    ng = realloc(reg->graveyard, (reg->n_graveyard + 1) * sizeof(*ng));
    if (ng)
      reg->graveyard = ng;
    zg_catalog_remove(&reg->cat, &svc->e); /* the file forgets the path */
    svc->gone = 1;
    /* Its children's data watches stay in the client until they fire or
     * the session ends: still in the packet of a reconnection. */
    for (size_t k = 0; k < svc->n_children; k++)
      if (svc->children[k].watched) {
        uint64_t cost = data_watch_cost(svc, &svc->children[k]);
        reg->graveyard_bytes += cost;
        reg->n_graveyard_watches++;
        svc->gy_bytes += cost;
        svc->gy_watches++;
        watch_release(svc, &svc->children[k]);
      }
    forget_children(svc);
    if (ng) /* else leaked: the client may still call back with it */
      reg->graveyard[reg->n_graveyard++] = svc;
    path_bytes_recount(reg);
    return;
  }
}

/* New addresses went to the live handle (zkconn: the client moves only if
 * its server is no longer among them); the first ones open the session. */
static void on_registry_hosts(zg_zkconn_t *zc, int status, int changed) {
  zk_source_t *reg = zc->data;
  (void)changed;
  if (status == 0 && !reg->closing && !reg->zk.zh)
    session_open(reg);
}

static int zk_start(zg_source_t *src) {
  zk_source_t *reg = (zk_source_t *)src;
  int rc;
  zg_zkconn_init(reg->loop, &reg->zk, after_process, reg);
  zg_zkconn_set_auth(&reg->zk, reg->auth, on_auth, reg);
  reg->zk_set = 1;
  if ((rc = zg_zkconn_set_hosts(&reg->zk, reg->hosts, "registry",
                                on_registry_hosts)) != 0) {
    zg_error("registry", "ZooKeeper hosts '%s': %s", reg->hosts,
             zg_strerror(rc));
    return rc;
  }
  uv_timer_init(reg->loop, &reg->health_timer);
  reg->sweep_start_ms = uv_now(reg->loop); /* the first pass: after one */
  /* max_stale counts from now; the state file's pools and discovered
   * services come first. */
  zg_catalog_start(&reg->cat);
  reg->health_timer.data = reg;
  reg->open_handles = 1; /* the health timer; zk and cat at close */
  reg->started = 1;
  /* A session that cannot open yet (names not resolved) is retried in the
   * background: the gateway starts and serves what it has. */
  session_open(reg);
  uv_timer_start(&reg->health_timer, on_health_timer, 100, 100);
  return 0;
}

static int zk_set_auth(zk_source_t *reg, const char *digest) {
  secret_free(reg->auth);
  reg->auth = NULL;
  if (digest && !(reg->auth = strdup(digest)))
    return UV_ENOMEM;
  return 0;
}

static void zk_set_max_watch_bytes(zk_source_t *reg, uint64_t bytes) {
  reg->max_watch_bytes = bytes;
  reg->watch_budget = bytes;
}

static void zk_set_data_sweep(zk_source_t *reg, uint64_t interval_ms) {
  reg->data_sweep_ms = interval_ms;
}

static int zk_set_state(zk_source_t *reg, const char *state_file,
                        uint64_t max_stale_ms) {
  return zg_catalog_set_state(&reg->cat, state_file, max_stale_ms);
}

static void zk_stats(const zg_source_t *src, zg_source_stats_t *out) {
  const zk_source_t *reg = (const zk_source_t *)src;
  memset(out, 0, sizeof(*out));
  out->kind = ZG_SOURCE_ZOOKEEPER;
  out->state = reg->cat.state;
  if (reg->cat.state != ZG_SOURCE_CONNECTED && reg->started)
    out->disconnected_for_ms = uv_now(reg->loop) - reg->cat.disconnected_ms;
  out->max_stale_ms = reg->cat.max_stale_ms;
  out->expiries = reg->expiries;
  out->watch_events = reg->watch_events;
  out->zk.lists = reg->lists_total;
  out->zk.reads = reg->reads_total;
  out->zk.checks = reg->checks_total;
  out->zk.path_watches = reg->n_paths;
  out->zk.data_watches = reg->n_data_watches + reg->n_graveyard_watches;
  out->zk.unwatched = count_unwatched(reg);
  out->zk.watch_bytes = budget_used(reg);
  out->zk.watch_budget = reg->watch_budget;
  out->last_update_wall_ms = reg->cat.last_update_wall_ms;
}

static void handle_closed(zk_source_t *reg) {
  if (--reg->open_handles == 0)
    free(reg);
}

static void on_timer_closed(uv_handle_t *h) {
  handle_closed(h->data);
}

static void on_zk_closed(zg_zkconn_t *zc) {
  handle_closed(zc->data);
}

static void on_cat_closed(zg_catalog_t *cat) {
  handle_closed((zk_source_t *)((char *)cat - offsetof(zk_source_t, cat)));
}

static void zk_close(zg_source_t *src) {
  zk_source_t *reg = (zk_source_t *)src;
  reg->closing = 1;
  zg_catalog_close(&reg->cat); /* the state file's last write */
  /* Ends the session now (a handshake on the wire is finished first, for
   * at most a second), so its ephemeral nodes go at once. Pending
   * completions are called from here with ZCLOSING; they see `closing` and
   * touch nothing but their own request. */
  if (reg->zk_set) {
    reg->open_handles++;
    zg_zkconn_close(&reg->zk, on_zk_closed);
  }
  for (size_t i = 0; i < reg->cat.n_entries; i++)
    service_free(svc_at(reg, i));
  reg->cat.n_entries = 0; /* before graveyard_free() counts the paths */
  graveyard_free(reg);
  free(reg->hosts);
  reg->hosts = NULL;
  secret_free(reg->auth);
  reg->auth = NULL;
  if (zg_catalog_free(&reg->cat, on_cat_closed))
    reg->open_handles++;
  if (reg->started)
    uv_close((uv_handle_t *)&reg->health_timer, on_timer_closed);
  else if (reg->open_handles == 0)
    free(reg); /* else when zk's timer has closed */
}

static const zg_source_ops_t zk_ops = {
    .watch = zk_watch,
    .watch_root = zk_watch_root,
    .unwatch = zk_unwatch,
    .retarget = zk_retarget,
    .start = zk_start,
    .close = zk_close,
    .stats = zk_stats,
};

int zg_zk_source_new(uv_loop_t *loop, const zg_config_t *cfg,
                     zg_source_publish_cb cb, zg_source_children_cb children_cb,
                     void *cb_arg, zg_source_t **out) {
  zk_source_t *reg;
  *out = NULL;
  if (!cfg->zk.hosts)
    return 0;
  reg = zk_new(loop, cfg->zk.hosts, cfg->zk.session_timeout_ms,
               cfg->zk.coalesce_window_ms, cb, children_cb, cb_arg);
  if (!reg)
    return UV_ENOMEM;
  if (zk_set_auth(reg, cfg->zk.auth) != 0 ||
      zk_set_state(reg, cfg->zk.state_file, cfg->zk.max_stale_ms) != 0) {
    zk_close(&reg->base); /* never started: freed at once */
    return UV_ENOMEM;
  }
  zk_set_max_watch_bytes(reg, cfg->zk.max_watch_bytes);
  zk_set_data_sweep(reg, cfg->zk.data_sweep_ms);
  *out = &reg->base;
  return 0;
}
