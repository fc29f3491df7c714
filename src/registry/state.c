/* State file encoding, atomic replacement, and the writer that keeps it up
 * to date off the loop; see state.h. */
#include "registry/state.h"

#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 2: a list of entries keyed by zk_path and endpoint, each with fresh_ms.
 * 1: an object keyed by zk_path alone (still read). */
#define STATE_FORMAT 2

static json_t *instance_json(const zg_instance_t *in) {
  json_t *o = json_pack(
      "{s:s, s:i, s:b, s:b, s:i, s:s, s:I, s:I}", "host", in->host, "port",
      (int)in->port, "tls", in->tls, "up", in->up, "weight", (int)in->weight,
      "format", zg_instance_format_name(in->format), "data_version",
      (json_int_t)in->version, "mtime_ms", (json_int_t)in->mtime_ms);
  if (!o)
    return NULL;
  if ((in->base_path &&
       json_object_set_new(o, "base_path", json_string(in->base_path))) ||
      (in->name && json_object_set_new(o, "name", json_string(in->name))) ||
      (in->key && json_object_set_new(o, "znode", json_string(in->key))) ||
      (in->plain_port &&
       json_object_set_new(o, "plain_port", json_integer(in->plain_port)))) {
    json_decref(o);
    return NULL;
  }
  return o;
}

char *zg_state_encode(const zg_state_entry_t *entries, size_t n,
                      int64_t now_ms) {
  json_t *root = json_pack("{s:i, s:I, s:[]}", "format", STATE_FORMAT,
                           "written_ms", (json_int_t)now_ms, "services");
  json_t *services;
  char *text = NULL;
  if (!root)
    return NULL;
  services = json_object_get(root, "services");
  for (size_t i = 0; i < n; i++) {
    json_t *list = json_array(), *svc;
    if (!list)
      goto out;
    for (size_t k = 0; k < entries[i].pool->n; k++)
      if (json_array_append_new(list,
                                instance_json(&entries[i].pool->inst[k]))) {
        json_decref(list);
        goto out;
      }
    svc = json_pack("{s:s, s:I, s:I, s:o}", "zk_path", entries[i].zk_path,
                    "updated_ms", (json_int_t)entries[i].updated_ms, "fresh_ms",
                    (json_int_t)entries[i].fresh_ms, "instances", list);
    if (!svc || (entries[i].endpoint &&
                 json_object_set_new(svc, "endpoint",
                                     json_string(entries[i].endpoint)))) {
      json_decref(svc);
      goto out;
    }
    if (json_array_append_new(services, svc))
      goto out;
  }
  /* Compact: a registry of 10,000 instances makes a file of a few MB. */
  text = json_dumps(root, JSON_COMPACT);
out:
  json_decref(root);
  return text;
}

static int format_by_name(const char *s) {
  for (int f = 0; f < 32; f++)
    if (!strcmp(zg_instance_format_name(f), s))
      return f;
  return -1;
}

/* One instance object back into *out; -1 when malformed. */
static int instance_from_json(json_t *o, zg_instance_t *out) {
  const char *host = NULL, *format = NULL, *base = NULL, *name = NULL,
             *znode = NULL;
  json_int_t port = 0, weight = 0, version = 0, mtime = 0, plain = 0;
  int tls = 0, up = 0, f;
  zg_instance_t parsed;
  char addr[ZG_HOST_MAX + 16];

  memset(out, 0, sizeof(*out));
  if (json_unpack(o,
                  "{s:s, s:I, s:b, s:b, s:I, s:s, s?I, s?I, s?s, s?s, s?s, "
                  "s?I}",
                  "host", &host, "port", &port, "tls", &tls, "up", &up,
                  "weight", &weight, "format", &format, "data_version",
                  &version, "mtime_ms", &mtime, "base_path", &base, "name",
                  &name, "znode", &znode, "plain_port", &plain) != 0)
    return -1;
  if (port <= 0 || port > 65535 || plain < 0 || plain > 65535 || weight < 0 ||
      weight > ZG_WEIGHT_MAX || (f = format_by_name(format)) < 0)
    return -1;
  /* The address goes through the same parser as registry data. */
  snprintf(addr, sizeof(addr), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
           (int)port);
  memset(&parsed, 0, sizeof(parsed));
  if (zg_instance_parse_hostport(addr, strlen(addr), &parsed) != 0)
    return -1;
  memcpy(out->host, parsed.host, sizeof(out->host));
  out->port = parsed.port;
  out->is_ip = parsed.is_ip;
  out->tls = tls;
  out->plain_port = (uint16_t)plain;
  out->up = up;
  out->weight = (uint32_t)weight;
  out->format = (uint8_t)f;
  out->version = (int64_t)version;
  out->mtime_ms = mtime;
  if ((base && !(out->base_path = strdup(base))) ||
      (name && !(out->name = strdup(name))) ||
      (znode && !(out->key = strdup(znode)))) {
    zg_instance_clear(out);
    return -1;
  }
  return 0;
}

typedef struct {
  zg_state_entry_t e; /* strings borrowed from the JSON tree */
  zg_pool_t *pool;
} decoded_t;

/* One entry's instances into out->pool; -1 with a reason when malformed. */
static int decode_entry(json_t *list, const char *what, decoded_t *out,
                        char *err, size_t errlen) {
  size_t k, n;
  json_t *o;
  zg_instance_t *inst;
  if (!json_is_array(list)) {
    snprintf(err, errlen, "malformed entry for %s", what);
    return -1;
  }
  n = json_array_size(list);
  if (!(inst = calloc(n + 1, sizeof(*inst)))) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  json_array_foreach(list, k, o) {
    if (instance_from_json(o, &inst[k]) != 0) {
      snprintf(err, errlen, "malformed instance %zu of %s", k, what);
      for (size_t j = 0; j < k; j++)
        zg_instance_clear(&inst[j]);
      free(inst);
      return -1;
    }
  }
  out->pool = zg_pool_new(inst, n, 0, 0);
  for (size_t j = 0; j < n; j++)
    zg_instance_clear(&inst[j]);
  free(inst);
  if (!out->pool) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

int zg_state_decode(const char *text, size_t len, zg_state_cb cb, void *arg,
                    char *err, size_t errlen) {
  json_error_t jerr;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *services, *svc, *list;
  json_int_t format = 0, written = 0;
  const char *path;
  decoded_t *all = NULL;
  size_t n = 0, cap, i;
  int rc = ZG_EDECODE;

  if (!root) {
    snprintf(err, errlen, "bad JSON at line %d: %s", jerr.line, jerr.text);
    return ZG_EDECODE;
  }
  if (json_unpack(root, "{s:I, s?I, s:o}", "format", &format, "written_ms",
                  &written, "services", &services) != 0 ||
      !((format == 1 && json_is_object(services)) ||
        (format == STATE_FORMAT && json_is_array(services)))) {
    snprintf(err, errlen, "not a zkgate state file of format 1 or %d",
             STATE_FORMAT);
    goto out;
  }
  cap = format == 1 ? json_object_size(services) : json_array_size(services);
  all = calloc(cap ? cap : 1, sizeof(*all));
  if (!all) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  if (format == 1) {
    /* Keyed by path alone: the main endpoint's, known current when the
     * file was written (the best it tells). */
    json_object_foreach(services, path, svc) {
      json_int_t updated = 0;
      if (json_unpack(svc, "{s:I, s:o}", "updated_ms", &updated, "instances",
                      &list) != 0) {
        snprintf(err, errlen, "malformed entry for %s", path);
        goto out;
      }
      if (decode_entry(list, path, &all[n], err, errlen) != 0)
        goto out;
      all[n].e.zk_path = path;
      all[n].e.updated_ms = updated;
      all[n].e.fresh_ms = written ? written : updated;
      n++;
    }
  } else {
    json_array_foreach(services, i, svc) {
      json_int_t updated = 0, fresh = 0;
      const char *endpoint = NULL;
      char what[32];
      snprintf(what, sizeof(what), "entry %zu", i);
      if (json_unpack(svc, "{s:s, s?s, s:I, s:I, s:o}", "zk_path", &path,
                      "endpoint", &endpoint, "updated_ms", &updated, "fresh_ms",
                      &fresh, "instances", &list) != 0 ||
          path[0] != '/') {
        snprintf(err, errlen, "malformed %s", what);
        goto out;
      }
      if (decode_entry(list, path, &all[n], err, errlen) != 0)
        goto out;
      all[n].e.zk_path = path;
      all[n].e.endpoint = endpoint;
      all[n].e.updated_ms = updated;
      all[n].e.fresh_ms = fresh;
      n++;
    }
  }
  for (i = 0; i < n; i++) {
    all[i].e.pool = all[i].pool;
    cb(arg, &all[i].e, all[i].pool);
    all[i].pool = NULL;
  }
  rc = 0;
out:
  for (i = 0; i < n; i++)
    zg_pool_unref(all[i].pool);
  free(all);
  json_decref(root);
  return rc;
}

int zg_state_key_match(const char *zk_path, const char *endpoint,
                       const char *want_path, const char *want_endpoint) {
  if (strcmp(zk_path, want_path) != 0)
    return 0;
  if (!endpoint || !want_endpoint)
    return !endpoint && !want_endpoint;
  return strcmp(endpoint, want_endpoint) == 0;
}

uint64_t zg_state_age_ms(int64_t fresh_ms, int64_t now_ms) {
  return now_ms > fresh_ms ? (uint64_t)(now_ms - fresh_ms) : 0;
}

int zg_state_past_max_stale(int64_t fresh_ms, int64_t now_ms,
                            uint64_t max_stale_ms) {
  return max_stale_ms > 0 && zg_state_age_ms(fresh_ms, now_ms) >= max_stale_ms;
}

/* The rename is an entry of the directory: fsynced too, or a crash may
 * bring back the old file (or none) after the new one was reported
 * written. EINVAL: a file system that cannot sync directories. */
static int fsync_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  int fd, rc = 0;
  if (!slash)
    dir = strdup(".");
  else if (slash == path)
    dir = strdup("/");
  else
    dir = strndup(path, (size_t)(slash - path));
  if (!dir)
    return -ENOMEM;
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0)
    return -errno;
  if (fsync(fd) != 0 && errno != EINVAL)
    rc = -errno;
  close(fd);
  return rc;
}

int zg_state_write_file(const char *path, const char *text, unsigned *seq) {
  size_t plen = strlen(path), len = strlen(text), off = 0, tlen = plen + 48;
  char *tmp = malloc(tlen);
  int fd = -1, rc = 0;
  if (!tmp)
    return -ENOMEM;
  /* A name of our own, created exclusively: never a file another process
   * (a second gateway given the same path) is writing. A name left by an
   * earlier process with our pid is skipped. */
  for (int tries = 0; tries < 100; tries++) {
    snprintf(tmp, tlen, "%s.tmp.%ld.%u", path, (long)getpid(), (*seq)++);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0 || errno != EEXIST)
      break;
  }
  if (fd < 0) {
    rc = -errno;
    free(tmp);
    return rc;
  }
  while (off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      break;
    }
    off += (size_t)w;
  }
  /* Data on disk before the rename makes it visible: a crash leaves the
   * old file or the new one, never a torn one. */
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  if (close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc != 0)
    unlink(tmp);
  else
    rc = fsync_dir(path);
  free(tmp);
  return rc;
}

uint64_t zg_state_write_delay(uint64_t now_ms, uint64_t last_ms,
                              uint64_t settle_ms, uint64_t min_interval_ms) {
  uint64_t due = last_ms ? last_ms + min_interval_ms : 0;
  if (due > now_ms && due - now_ms > settle_ms)
    return due - now_ms;
  return settle_ms;
}

/* ---- the writer ---------------------------------------------------------
 * Collecting the entries is the loop's part: a reference on each pool (the
 * pools are immutable and reference-counted atomically) and a copy of each
 * path, O(services). Encoding (O(instances)) and the file system's part
 * (write, fsync, rename, fsync of the directory: the slow part on a busy
 * disk) run on libuv's thread pool. One job at a time, so writes land in
 * order; changes during a job make the next one, at least a second after
 * the last start. */

#define SETTLE_MS 100
#define MIN_INTERVAL_MS 1000

typedef struct job {
  uv_work_t work;
  zg_state_writer_t *w;
  zg_state_entry_t *entries; /* pointing into `owned` */
  struct owned {
    char *zk_path, *endpoint;
    zg_pool_t *pool;
  } * owned;
  size_t n;
  int64_t now_ms;
  int rc;
} job_t;

struct zg_state_writer {
  uv_loop_t *loop;
  char *path;
  zg_state_collect_cb collect;
  void *arg;
  uv_timer_t timer;
  int dirty;       /* changed since the last collect */
  int closing;     /* zg_state_writer_close() was called */
  int timer_open;  /* until its close callback */
  job_t *inflight; /* on the thread pool */
  job_t *next;     /* collected at close while another was in flight */
  job_t *put;      /* what the collect callback gave */
  uint64_t last_start_ms;
  unsigned seq; /* temporary names; touched by the one job in flight only */
  uint64_t written, failed;
  zg_ratelimit_t error_rl;
};

static void job_free(job_t *j) {
  if (!j)
    return;
  for (size_t i = 0; i < j->n; i++) {
    free(j->owned[i].zk_path);
    free(j->owned[i].endpoint);
    zg_pool_unref(j->owned[i].pool);
  }
  free(j->entries);
  free(j->owned);
  free(j);
}

int zg_state_writer_put(zg_state_writer_t *w, const zg_state_entry_t *entries,
                        size_t n, int64_t now_ms) {
  job_t *j = calloc(1, sizeof(*j));
  if (!j || !(j->entries = calloc(n ? n : 1, sizeof(*j->entries))) ||
      !(j->owned = calloc(n ? n : 1, sizeof(*j->owned)))) {
    if (j)
      free(j->entries);
    free(j);
    return UV_ENOMEM;
  }
  j->w = w;
  j->now_ms = now_ms;
  for (size_t i = 0; i < n; i++) {
    struct owned *o = &j->owned[i];
    o->pool = zg_pool_ref(entries[i].pool);
    o->zk_path = strdup(entries[i].zk_path);
    o->endpoint = entries[i].endpoint ? strdup(entries[i].endpoint) : NULL;
    j->n++;
    if (!o->zk_path || (entries[i].endpoint && !o->endpoint)) {
      job_free(j);
      return UV_ENOMEM;
    }
    j->entries[i] = entries[i];
    j->entries[i].zk_path = o->zk_path;
    j->entries[i].endpoint = o->endpoint;
    j->entries[i].pool = o->pool;
  }
  job_free(w->put);
  w->put = j;
  return 0;
}

static void on_work(uv_work_t *req) {
  job_t *j = req->data;
  char *text = zg_state_encode(j->entries, j->n, j->now_ms);
  if (!text) {
    j->rc = -ENOMEM;
    return;
  }
  j->rc = zg_state_write_file(j->w->path, text, &j->w->seq);
  free(text);
}

static void writer_maybe_free(zg_state_writer_t *w) {
  if (w->closing && !w->timer_open && !w->inflight && !w->next) {
    free(w->path);
    free(w);
  }
}

static void start_job(zg_state_writer_t *w, job_t *j);

static void schedule(zg_state_writer_t *w);

static void on_work_done(uv_work_t *req, int status) {
  job_t *j = req->data;
  zg_state_writer_t *w = j->w;
  int rc = status < 0 ? status : j->rc;
  w->inflight = NULL;
  if (rc == 0) {
    w->written++;
  } else {
    uint64_t dropped;
    w->failed++;
    if (zg_ratelimit_allow(&w->error_rl, uv_now(w->loop), &dropped))
      zg_error("registry", "cannot write the state file %s: %s%s", w->path,
               rc == UV_ECANCELED ? "cancelled" : strerror(-rc),
               dropped ? " (errors suppressed)" : "");
  }
  job_free(j);
  if (w->next) {
    job_t *next = w->next;
    w->next = NULL;
    start_job(w, next);
  } else if (!w->closing && w->dirty) {
    schedule(w);
  }
  writer_maybe_free(w);
}

static void start_job(zg_state_writer_t *w, job_t *j) {
  int rc;
  j->work.data = j;
  w->last_start_ms = uv_now(w->loop);
  w->inflight = j;
  if ((rc = uv_queue_work(w->loop, &j->work, on_work, on_work_done)) != 0) {
    w->inflight = NULL;
    w->failed++;
    zg_error("registry", "cannot write the state file %s: %s", w->path,
             uv_strerror(rc));
    job_free(j);
  }
}

/* The owner's entries, now. NULL when out of memory (logged). */
static job_t *collect(zg_state_writer_t *w) {
  job_t *j;
  w->dirty = 0;
  w->put = NULL;
  w->collect(w->arg, w);
  j = w->put;
  w->put = NULL;
  if (!j) {
    w->failed++;
    zg_error("registry", "state file %s: out of memory", w->path);
  }
  return j;
}

static void on_writer_timer(uv_timer_t *t) {
  zg_state_writer_t *w = t->data;
  job_t *j;
  if (w->closing || w->inflight || !w->dirty)
    return; /* the job in flight schedules the next */
  if ((j = collect(w)))
    start_job(w, j);
}

static void schedule(zg_state_writer_t *w) {
  uint64_t now = uv_now(w->loop);
  if (uv_is_active((uv_handle_t *)&w->timer))
    return;
  uv_timer_start(
      &w->timer, on_writer_timer,
      zg_state_write_delay(now, w->last_start_ms, SETTLE_MS, MIN_INTERVAL_MS),
      0);
}

zg_state_writer_t *zg_state_writer_new(uv_loop_t *loop, const char *path,
                                       zg_state_collect_cb collect_cb,
                                       void *arg) {
  zg_state_writer_t *w = calloc(1, sizeof(*w));
  if (!w || !(w->path = strdup(path))) {
    free(w);
    return NULL;
  }
  w->loop = loop;
  w->collect = collect_cb;
  w->arg = arg;
  zg_ratelimit_init(&w->error_rl, 10000, 3);
  uv_timer_init(loop, &w->timer);
  w->timer.data = w;
  w->timer_open = 1;
  return w;
}

void zg_state_writer_mark(zg_state_writer_t *w) {
  if (w->closing)
    return;
  w->dirty = 1;
  if (!w->inflight)
    schedule(w);
}

static void on_writer_timer_closed(uv_handle_t *h) {
  zg_state_writer_t *w = h->data;
  w->timer_open = 0;
  writer_maybe_free(w);
}

void zg_state_writer_close(zg_state_writer_t *w) {
  job_t *j = NULL;
  if (!w || w->closing)
    return;
  if (w->dirty)
    j = collect(w);
  w->closing = 1;
  uv_timer_stop(&w->timer);
  uv_close((uv_handle_t *)&w->timer, on_writer_timer_closed);
  if (j && w->inflight)
    w->next = j; /* after it: the files land in order */
  else if (j)
    start_job(w, j);
}

void zg_state_writer_counts(const zg_state_writer_t *w, uint64_t *written,
                            uint64_t *failed) {
  *written = w->written;
  *failed = w->failed;
}
