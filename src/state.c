/* State file encoding and atomic replacement; see state.h. */
#include "zkgate/state.h"

#include "zkgate/error.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATE_FORMAT 1

static json_t *instance_json(const zg_instance_t *in) {
  json_t *o = json_pack(
      "{s:s, s:i, s:b, s:b, s:i, s:s, s:I, s:I}", "host", in->host, "port",
      (int)in->port, "tls", in->tls, "up", in->up, "weight", (int)in->weight,
      "format", zg_instance_format_name(in->format), "data_version",
      (json_int_t)in->data_version, "mtime_ms", (json_int_t)in->mtime_ms);
  if (!o)
    return NULL;
  if ((in->base_path &&
       json_object_set_new(o, "base_path", json_string(in->base_path))) ||
      (in->name && json_object_set_new(o, "name", json_string(in->name))) ||
      (in->znode && json_object_set_new(o, "znode", json_string(in->znode))) ||
      (in->plain_port &&
       json_object_set_new(o, "plain_port", json_integer(in->plain_port)))) {
    json_decref(o);
    return NULL;
  }
  return o;
}

char *zg_state_encode(const zg_state_entry_t *entries, size_t n,
                      int64_t now_ms) {
  json_t *root = json_pack("{s:i, s:I, s:{}}", "format", STATE_FORMAT,
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
    svc = json_pack("{s:I, s:o}", "updated_ms",
                    (json_int_t)entries[i].updated_ms, "instances", list);
    if (!svc || json_object_set_new(services, entries[i].zk_path, svc))
      goto out;
  }
  text = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS);
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
  out->data_version = (int32_t)version;
  out->mtime_ms = mtime;
  if ((base && !(out->base_path = strdup(base))) ||
      (name && !(out->name = strdup(name))) ||
      (znode && !(out->znode = strdup(znode)))) {
    zg_instance_clear(out);
    return -1;
  }
  return 0;
}

typedef struct {
  const char *path;
  zg_pool_t *pool;
  int64_t updated_ms;
} decoded_t;

int zg_state_decode(const char *text, size_t len, zg_state_cb cb, void *arg,
                    char *err, size_t errlen) {
  json_error_t jerr;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  json_t *services, *svc;
  json_int_t format = 0;
  const char *path;
  decoded_t *all = NULL;
  size_t n = 0, cap;
  int rc = ZG_EDECODE;

  if (!root) {
    snprintf(err, errlen, "bad JSON at line %d: %s", jerr.line, jerr.text);
    return ZG_EDECODE;
  }
  if (json_unpack(root, "{s:I, s:o}", "format", &format, "services",
                  &services) != 0 ||
      format != STATE_FORMAT || !json_is_object(services)) {
    snprintf(err, errlen, "not a zkgate state file of format %d", STATE_FORMAT);
    goto out;
  }
  cap = json_object_size(services);
  all = calloc(cap ? cap : 1, sizeof(*all));
  if (!all) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  json_object_foreach(services, path, svc) {
    json_t *list, *o;
    json_int_t updated = 0;
    size_t k;
    zg_instance_t *inst;
    if (json_unpack(svc, "{s:I, s:o}", "updated_ms", &updated, "instances",
                    &list) != 0 ||
        !json_is_array(list)) {
      snprintf(err, errlen, "malformed entry for %s", path);
      goto out;
    }
    inst = calloc(json_array_size(list) + 1, sizeof(*inst));
    if (!inst) {
      snprintf(err, errlen, "out of memory");
      goto out;
    }
    json_array_foreach(list, k, o) {
      if (instance_from_json(o, &inst[k]) != 0) {
        snprintf(err, errlen, "malformed instance %zu of %s", k, path);
        for (size_t j = 0; j < k; j++)
          zg_instance_clear(&inst[j]);
        free(inst);
        goto out;
      }
    }
    all[n].path = path;
    all[n].updated_ms = updated;
    all[n].pool = zg_pool_new(inst, json_array_size(list), 0, 0);
    for (size_t j = 0; j < json_array_size(list); j++)
      zg_instance_clear(&inst[j]);
    free(inst);
    if (!all[n].pool) {
      snprintf(err, errlen, "out of memory");
      goto out;
    }
    n++;
  }
  for (size_t i = 0; i < n; i++) {
    cb(arg, all[i].path, all[i].pool, all[i].updated_ms);
    all[i].pool = NULL;
  }
  rc = 0;
out:
  for (size_t i = 0; i < n; i++)
    zg_pool_unref(all[i].pool);
  free(all);
  json_decref(root);
  return rc;
}

int zg_state_write_file(const char *path, const char *text) {
  size_t plen = strlen(path), len = strlen(text), off = 0;
  char *tmp = malloc(plen + 8);
  int fd, rc = 0;
  if (!tmp)
    return -ENOMEM;
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
  free(tmp);
  return rc;
}
