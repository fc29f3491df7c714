/* libFuzzer target over instance decoding (src/core/instance.c): what the
 * registry does with every child it reads, in every format of
 * docs/registry-formats.md.
 *
 * The input is one child: byte 0 chooses the options (bits 0-1: the
 * serverset endpoint NULL, "http", "otherport" or "none"; bit 2: no child
 * name at all), then the child's name up to the first '\n' (a name ends at
 * a NUL, as a znode name does), then its data, in a buffer of exactly its
 * length so that a read past the end is seen by ASan. Without a '\n' the
 * rest is the name and the data is NULL (a child without data).
 *
 * Checks, abort() when one fails:
 * - zg_instance_decode returns 0, ZG_ESKIP or ZG_EDECODE, with a
 *   NUL-terminated message, non-empty on failure, and *out left with
 *   nothing in it after a failure;
 * - a decoded instance has a host (an IP literal when is_ip says so, a
 *   name without ':' otherwise), a port, a weight within ZG_WEIGHT_MAX, a
 *   format of the registry, its child name, and a base path that starts
 *   with '/';
 * - its "host:port" text reads back as the same host and port;
 * - zg_instance_decode_name agrees with zg_instance_decode on the names it
 *   decodes (instance.h promises the same result);
 * - a copy is the same instance, and every upstream_tls mode gives a port. */
#include "core/error.h"
#include "core/instance.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "fuzz_instance.c:%d: check failed: %s\n", __LINE__, #c); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static int str_eq(const char *a, const char *b) {
  return a == b || (a && b && strcmp(a, b) == 0);
}

static int same_instance(const zg_instance_t *a, const zg_instance_t *b) {
  return strcmp(a->host, b->host) == 0 && a->port == b->port &&
         a->tls == b->tls && a->plain_port == b->plain_port &&
         a->is_ip == b->is_ip && a->up == b->up && a->format == b->format &&
         a->weight == b->weight && str_eq(a->base_path, b->base_path) &&
         str_eq(a->name, b->name) && str_eq(a->key, b->key);
}

static void check_err(const char *err, size_t len) {
  CHECK(memchr(err, '\0', len) != NULL);
}

static void check_decoded(const zg_instance_t *inst, const char *name) {
  static const zg_upstream_tls_t modes[] = {
      ZG_UPSTREAM_TLS_AUTO, ZG_UPSTREAM_TLS_ON, ZG_UPSTREAM_TLS_OFF};
  size_t host_len = strnlen(inst->host, sizeof(inst->host));
  unsigned char bin[16];
  char addr[ZG_HOST_MAX + 16];
  zg_instance_t back, copy;

  CHECK(host_len >= 1 && host_len <= ZG_HOST_MAX);
  if (inst->is_ip)
    CHECK(inet_pton(AF_INET, inst->host, bin) == 1 ||
          inet_pton(AF_INET6, inst->host, bin) == 1);
  else
    CHECK(memchr(inst->host, ':', host_len) == NULL);
  CHECK(inst->port != 0);
  CHECK(inst->weight <= ZG_WEIGHT_MAX);
  CHECK(inst->format > ZG_FORMAT_STATIC && inst->format <= ZG_FORMAT_DUBBO);
  CHECK(strcmp(zg_instance_format_name(inst->format), "unknown") != 0);
  CHECK(str_eq(inst->name, name));
  CHECK(inst->key == NULL);
  CHECK(!inst->base_path ||
        (inst->base_path[0] == '/' && strlen(inst->base_path) > 1));

  /* The address the proxies log and connect by reads back. */
  zg_instance_addr_str(inst, addr, sizeof(addr));
  memset(&back, 0, sizeof(back));
  CHECK(zg_instance_parse_hostport(addr, strlen(addr), &back) == 0);
  CHECK(strcmp(back.host, inst->host) == 0 && back.port == inst->port &&
        back.is_ip == inst->is_ip);

  for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
    uint16_t port = 0;
    bool tls = zg_instance_use_tls(inst, modes[i], &port);
    CHECK(port != 0);
    CHECK(modes[i] != ZG_UPSTREAM_TLS_ON || tls);
    CHECK(modes[i] != ZG_UPSTREAM_TLS_OFF || !tls);
  }

  CHECK(zg_instance_copy(&copy, inst) == 0);
  CHECK(same_instance(&copy, inst));
  zg_instance_clear(&copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const endpoints[] = {NULL, "http", "otherport", "none"};
  static const zg_instance_t zero;
  zg_decode_opts_t opts;
  zg_instance_t inst, by_name;
  char err[256], err_name[256];
  const uint8_t *nl;
  char *name = NULL, *child = NULL;
  size_t name_len, data_len = 0;
  int rc, rc_name;

  if (size < 1)
    return 0;
  opts.endpoint = endpoints[data[0] & 3];
  data++;
  size--;

  nl = memchr(data, '\n', size);
  name_len = nl ? (size_t)(nl - data) : size;
  if (!(data[-1] & 4)) {
    CHECK((name = malloc(name_len + 1)) != NULL);
    memcpy(name, data, name_len);
    name[name_len] = '\0';
  }
  if (nl) {
    data_len = size - name_len - 1;
    /* malloc(0) may give NULL: keep one byte so that the data is not. */
    CHECK((child = malloc(data_len ? data_len : 1)) != NULL);
    memcpy(child, nl + 1, data_len);
  }

  memset(err, 0x55, sizeof(err));
  rc =
      zg_instance_decode(name, child, data_len, &opts, &inst, err, sizeof(err));
  check_err(err, sizeof(err));
  CHECK(rc == 0 || rc == ZG_ESKIP || rc == ZG_EDECODE);
  if (rc == 0) {
    check_decoded(&inst, name);
  } else {
    CHECK(err[0] != '\0');
    CHECK(memcmp(&inst, &zero, sizeof(inst)) == 0);
  }

  memset(err_name, 0x55, sizeof(err_name));
  rc_name = zg_instance_decode_name(name, &by_name, err_name, sizeof(err_name));
  check_err(err_name, sizeof(err_name));
  CHECK(rc_name == 0 || rc_name == 1 || rc_name == ZG_EDECODE);
  if (rc_name != 1) {
    CHECK(rc == rc_name);
    CHECK(strcmp(err, err_name) == 0);
    if (rc_name == 0) {
      check_decoded(&by_name, name);
      CHECK(same_instance(&by_name, &inst));
    }
  }
  if (rc_name == 0)
    zg_instance_clear(&by_name);
  if (rc == 0)
    zg_instance_clear(&inst);
  free(name);
  free(child);
  return 0;
}
