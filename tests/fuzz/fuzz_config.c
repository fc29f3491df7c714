/* libFuzzer target over the configuration reader (src/core/config.c): inih
 * and every key's validation, through zg_config_load_string, the entry
 * point zg_config_load reads a file into (a file with a NUL byte is
 * refused before it, so the text here ends at the first NUL).
 *
 * Checks, abort() when one fails:
 * - the result is 0 with a configuration and no error, or ZG_ECONFIG with
 *   no configuration and at least one error (UV_ENOMEM aside);
 * - every error reads "fuzz.ini:LINE: message" with LINE a line of the text
 *   (or "fuzz.ini: message" about the text as a whole);
 * - an accepted configuration has 1..ZG_MAX_WORKERS workers and services
 *   with names; each service and discover section equals itself and its
 *   deep copy (what a reload compares);
 * - reading the same text twice gives the same configuration. */
#include "core/config.h"
#include "core/error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NAME "fuzz.ini"

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "fuzz_config.c:%d: check failed: %s\n", __LINE__, #c);   \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static void check_errors(const zg_config_errors_t *errs, size_t n_lines) {
  const size_t pre = strlen(NAME);
  for (size_t i = 0; i < errs->n; i++) {
    const char *e = errs->lines[i];
    CHECK(e && strncmp(e, NAME, pre) == 0);
    e += pre;
    if (e[0] == ':' && e[1] >= '1' && e[1] <= '9') {
      char *end;
      unsigned long line = strtoul(e + 1, &end, 10);
      CHECK(line >= 1 && line <= n_lines);
      e = end;
    }
    CHECK(e[0] == ':' && e[1] == ' ' && e[2] != '\0');
  }
}

static void check_config(const zg_config_t *cfg) {
  CHECK(cfg->proxy.workers >= 1 && cfg->proxy.workers <= ZG_MAX_WORKERS);
  CHECK(cfg->path && strcmp(cfg->path, NAME) == 0);
  for (size_t i = 0; i < cfg->n_services; i++) {
    const zg_service_conf_t *svc = &cfg->services[i];
    zg_service_conf_t copy;
    CHECK(svc->name && svc->name[0]);
    CHECK(zg_service_conf_equal(svc, svc));
    CHECK(zg_service_conf_copy(&copy, svc) == 0);
    CHECK(zg_service_conf_equal(&copy, svc));
    zg_service_conf_clear(&copy);
  }
  for (size_t i = 0; i < cfg->n_discovers; i++) {
    CHECK(cfg->discovers[i].name && cfg->discovers[i].name[0]);
    CHECK(zg_discover_conf_equal(&cfg->discovers[i], &cfg->discovers[i]));
  }
}

static void check_same(const zg_config_t *a, const zg_config_t *b) {
  CHECK(a->n_services == b->n_services && a->n_discovers == b->n_discovers);
  CHECK(a->proxy.workers == b->proxy.workers);
  for (size_t i = 0; i < a->n_services; i++)
    CHECK(zg_service_conf_equal(&a->services[i], &b->services[i]));
  for (size_t i = 0; i < a->n_discovers; i++)
    CHECK(zg_discover_conf_equal(&a->discovers[i], &b->discovers[i]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  zg_config_t *cfg = NULL, *again = NULL;
  zg_config_errors_t errs, errs2;
  size_t n_lines = 1;
  char *text;
  int rc, rc2;

  CHECK((text = malloc(size + 1)) != NULL);
  memcpy(text, data, size);
  text[size] = '\0';
  for (size_t i = 0; text[i]; i++)
    n_lines += text[i] == '\n';

  /* No file checks (NULL): the fuzzer's paths are not files to open. */
  rc = zg_config_load_string(text, NAME, NULL, &cfg, &errs);
  CHECK(rc == 0 || rc == ZG_ECONFIG || rc == UV_ENOMEM);
  if (rc == 0) {
    CHECK(cfg != NULL && errs.n == 0);
    check_config(cfg);
  } else {
    CHECK(cfg == NULL);
    CHECK(rc == UV_ENOMEM || errs.n > 0);
  }
  check_errors(&errs, n_lines);

  rc2 = zg_config_load_string(text, NAME, NULL, &again, &errs2);
  CHECK(rc2 == rc && errs2.n == errs.n);
  for (size_t i = 0; i < errs.n; i++)
    CHECK(strcmp(errs.lines[i], errs2.lines[i]) == 0);
  if (rc == 0)
    check_same(cfg, again);

  zg_config_free(cfg);
  zg_config_free(again);
  zg_config_errors_free(&errs);
  zg_config_errors_free(&errs2);
  free(text);
  return 0;
}
