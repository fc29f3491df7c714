/* Unit tests for the configuration contract (src/core/config.h and
 * the INI contract in DESIGN.md): values, defaults, and every error with
 * the FILE:LINE it must carry. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <uv.h>

#include "core/config.h"
#include "core/error.h"
#include "net/tls.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The checks of the files a section names (certificates, keys, CA files,
 * cipher strings) are net's, handed to the configuration module as zkgate
 * -t, a start and a reload hand them in. */
#define CHECKS zg_tls_config_checks()

#define NAME "test.ini"

/* Line (1-based) of the first line of `text` that contains `marker`, so
 * that tests name the offending line instead of counting by hand. */
static int line_of(const char *text, const char *marker) {
  const char *at = strstr(text, marker);
  int line = 1;

  assert_non_null(at);
  for (const char *p = text; p < at; p++)
    if (*p == '\n')
      line++;
  return line;
}

static void dump_errors(const char *text, const zg_config_errors_t *errs) {
  print_error("config:\n%s\nerrors (%zu):\n", text, errs->n);
  for (size_t i = 0; i < errs->n; i++)
    print_error("  %s\n", errs->lines[i]);
}

/* The index of the error that starts with "test.ini:LINE: " and has a
 * non-empty message after it, or -1. */
static int find_error_at(const zg_config_errors_t *errs, int line) {
  char prefix[64];
  size_t plen;

  snprintf(prefix, sizeof(prefix), NAME ":%d: ", line);
  plen = strlen(prefix);
  for (size_t i = 0; i < errs->n; i++) {
    const char *l = errs->lines[i];
    if (l != NULL && strncmp(l, prefix, plen) == 0 && strlen(l) > plen)
      return (int)i;
  }
  return -1;
}

static zg_config_t *load_ok(const char *text) {
  zg_config_t *cfg = NULL;
  zg_config_errors_t errs = {0};
  int rc = zg_config_load_string(text, NAME, CHECKS, &cfg, &errs);

  if (rc != 0 || errs.n != 0 || cfg == NULL) {
    print_error("rc=%d (%s)\n", rc, zg_strerror(rc));
    dump_errors(text, &errs);
    zg_config_errors_free(&errs);
    if (cfg != NULL)
      zg_config_free(cfg);
    fail();
  }
  zg_config_errors_free(&errs);
  return cfg;
}

/* Loads `text`, which must fail with exactly `n` errors, one at each of
 * `lines`. Returns the errors (caller frees) for further checks. */
static zg_config_errors_t load_bad(const char *text, const int *lines,
                                   size_t n) {
  zg_config_t *cfg = NULL;
  zg_config_errors_t errs = {0};
  int rc = zg_config_load_string(text, NAME, CHECKS, &cfg, &errs);
  bool ok = rc == ZG_ECONFIG && errs.n == n;

  for (size_t i = 0; ok && i < n; i++)
    ok = find_error_at(&errs, lines[i]) >= 0;
  if (!ok) {
    print_error("rc=%d, want %d (ZG_ECONFIG); want %zu error(s) at line(s)", rc,
                ZG_ECONFIG, n);
    for (size_t i = 0; i < n; i++)
      print_error(" %d", lines[i]);
    print_error("\n");
    dump_errors(text, &errs);
    zg_config_errors_free(&errs);
    if (cfg != NULL)
      zg_config_free(cfg);
    fail();
  }
  if (cfg != NULL)
    zg_config_free(cfg);
  return errs;
}

/* One error, on the line that contains `marker`. */
static void expect_one_error(const char *text, const char *marker) {
  int line = line_of(text, marker);
  zg_config_errors_t errs = load_bad(text, &line, 1);

  zg_config_errors_free(&errs);
}

static const zg_service_conf_t *service(const zg_config_t *cfg,
                                        const char *name) {
  size_t i = 0;

  while (i < cfg->n_services && strcmp(cfg->services[i].name, name) != 0)
    i++;
  if (i == cfg->n_services) {
    print_error("no service named %s\n", name);
    fail();
  }
  return &cfg->services[i];
}

static void assert_v4(const zg_listen_addr_t *l, const char *ip,
                      uint16_t port) {
  const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->ss;
  struct in_addr want;

  assert_int_equal(l->ss.ss_family, AF_INET);
  assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
  assert_int_equal(sin->sin_addr.s_addr, want.s_addr);
  assert_int_equal(ntohs(sin->sin_port), port);
}

static void assert_v6(const zg_listen_addr_t *l, const char *ip,
                      uint16_t port) {
  const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&l->ss;
  struct in6_addr want;

  assert_int_equal(l->ss.ss_family, AF_INET6);
  assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
  assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
  assert_int_equal(ntohs(sin6->sin6_port), port);
}

/* ---------------------------------------------------------------- values */

static const char full_config[] =
    "; zkgate test configuration\n"
    "[zookeeper]\n"
    "hosts = 127.0.0.1:2181,127.0.0.2:2181/chroot ; the ensemble\n"
    "session_timeout = 15s\n"
    "\n"
    "[proxy]\n"
    "connect_timeout = 500ms\n"
    "idle_timeout = 2m\n"
    "log_level = debug\n"
    "workers = 1\n"
    "\n"
    "[service:warehouse]\n"
    "zk_path = /myRegistry/endpoints/warehouse\n"
    "protocol = tcp\n"
    "listen = 127.0.0.1:8080\n"
    "balance = round_robin\n"
    "instances = 10.0.0.5:8080, 10.0.0.6:8081\n"
    "\n"
    "[service:payment-v2.eu_1]\n"
    "zk_path = /services/payment\n"
    "protocol = tcp\n"
    "listen = [::1]:9090\n"
    "balance = random\n";

static void test_full_config(void **state) {
  zg_config_t *cfg = load_ok(full_config);
  const zg_service_conf_t *s;

  assert_string_equal(cfg->path, NAME);
  assert_string_equal(cfg->zk.hosts, "127.0.0.1:2181,127.0.0.2:2181/chroot");
  assert_int_equal(cfg->zk.session_timeout_ms, 15000);
  assert_int_equal(cfg->proxy.workers, 1);
  assert_int_equal(cfg->proxy.connect_timeout_ms, 500);
  assert_int_equal(cfg->proxy.idle_timeout_ms, 120000);
  assert_int_equal(cfg->proxy.log_level, ZG_LOG_DEBUG);
  assert_int_equal(cfg->n_services, 2);

  s = service(cfg, "warehouse");
  assert_string_equal(s->zk_path, "/myRegistry/endpoints/warehouse");
  assert_int_equal(s->protocol, ZG_PROTO_TCP);
  assert_v4(&s->listen, "127.0.0.1", 8080);
  assert_string_equal(s->listen.text, "127.0.0.1:8080");
  assert_int_equal(s->balance, ZG_BALANCE_ROUND_ROBIN);
  assert_int_equal(s->line, line_of(full_config, "[service:warehouse]"));
  assert_int_equal(s->n_instances, 2);
  assert_non_null(s->instances);
  assert_string_equal(s->instances[0].host, "10.0.0.5");
  assert_int_equal(s->instances[0].port, 8080);
  assert_true(s->instances[0].is_ip);
  assert_false(s->instances[0].tls);
  assert_int_equal(s->instances[0].format, ZG_FORMAT_STATIC);
  assert_null(s->instances[0].name);
  assert_null(s->instances[0].base_path);
  assert_string_equal(s->instances[1].host, "10.0.0.6");
  assert_int_equal(s->instances[1].port, 8081);
  assert_int_equal(s->instances[1].format, ZG_FORMAT_STATIC);

  s = service(cfg, "payment-v2.eu_1");
  assert_string_equal(s->zk_path, "/services/payment");
  assert_int_equal(s->protocol, ZG_PROTO_TCP);
  assert_v6(&s->listen, "::1", 9090);
  assert_string_equal(s->listen.text, "[::1]:9090");
  assert_int_equal(s->balance, ZG_BALANCE_RANDOM);
  assert_int_equal(s->line, line_of(full_config, "[service:payment-v2.eu_1]"));
  assert_int_equal(s->n_instances, 0);

  zg_config_free(cfg);
}

static void test_defaults(void **state) {
  static const char text[] = "[service:only]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = 10.0.0.1:80\n";
  zg_config_t *cfg = load_ok(text);
  const zg_service_conf_t *s;

  assert_null(cfg->zk.hosts);
  assert_int_equal(cfg->zk.session_timeout_ms, 10000);
  assert_int_equal(cfg->proxy.connect_timeout_ms, 2000);
  assert_int_equal(cfg->proxy.idle_timeout_ms, 60000);
  assert_int_equal(cfg->proxy.log_level, ZG_LOG_INFO);
  assert_int_equal(cfg->proxy.workers, 1);
  assert_int_equal(cfg->n_services, 1);
  s = service(cfg, "only");
  assert_null(s->zk_path);
  assert_int_equal(s->protocol, ZG_PROTO_TCP);
  assert_int_equal(s->balance, ZG_BALANCE_RANDOM);
  assert_v4(&s->listen, "127.0.0.1", 7000);
  assert_int_equal(s->line, 1);
  assert_int_equal(s->n_instances, 1);
  assert_string_equal(s->instances[0].host, "10.0.0.1");
  assert_int_equal(s->instances[0].port, 80);
  zg_config_free(cfg);
}

static void test_hosts_null_without_zk_services(void **state) {
  /* config.h: hosts is "NULL when no service uses ZooKeeper", so that the
   * gateway starts no ZooKeeper session for static services only. */
  static const char text[] = "[zookeeper]\n"
                             "hosts = 127.0.0.1:2181\n"
                             "[service:s]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = 10.0.0.1:80\n";
  zg_config_t *cfg = load_ok(text);

  assert_null(cfg->zk.hosts);
  zg_config_free(cfg);
}

static void test_log_levels(void **state) {
  static const struct {
    const char *word;
    zg_log_level_t level;
  } cases[] = {{"error", ZG_LOG_ERROR},
               {"warn", ZG_LOG_WARN},
               {"info", ZG_LOG_INFO},
               {"debug", ZG_LOG_DEBUG}};

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char text[256];
    zg_config_t *cfg;

    snprintf(text, sizeof(text),
             "[proxy]\nlog_level = %s\n"
             "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n",
             cases[i].word);
    cfg = load_ok(text);
    assert_int_equal(cfg->proxy.log_level, cases[i].level);
    zg_config_free(cfg);
  }
}

static void test_load_file(void **state) {
  char path[] = "/tmp/zkgate-test-config-XXXXXX";
  int fd = mkstemp(path);
  FILE *f;
  zg_config_t *cfg = NULL;
  zg_config_errors_t errs = {0};
  char prefix[128];

  assert_true(fd >= 0);
  f = fdopen(fd, "w");
  assert_non_null(f);
  fputs("[proxy]\nidle_timeout = 3s\n"
        "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n",
        f);
  assert_int_equal(fclose(f), 0);
  assert_int_equal(zg_config_load(path, CHECKS, &cfg, &errs), 0);
  assert_int_equal(errs.n, 0);
  assert_non_null(cfg);
  assert_string_equal(cfg->path, path);
  assert_int_equal(cfg->proxy.idle_timeout_ms, 3000);
  zg_config_free(cfg);
  zg_config_errors_free(&errs);

  /* Errors name the file as given. */
  f = fopen(path, "w");
  assert_non_null(f);
  fputs("[proxy]\nidle_timeout = 3s\nnope = 1\n"
        "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n",
        f);
  assert_int_equal(fclose(f), 0);
  cfg = NULL;
  assert_int_equal(zg_config_load(path, CHECKS, &cfg, &errs), ZG_ECONFIG);
  assert_int_equal(errs.n, 1);
  snprintf(prefix, sizeof(prefix), "%s:3: ", path);
  assert_true(strncmp(errs.lines[0], prefix, strlen(prefix)) == 0);
  if (cfg != NULL)
    zg_config_free(cfg);
  zg_config_errors_free(&errs);

  assert_int_equal(unlink(path), 0);
  cfg = NULL;
  assert_int_equal(zg_config_load(path, CHECKS, &cfg, &errs), UV_ENOENT);
  if (cfg != NULL)
    zg_config_free(cfg);
  zg_config_errors_free(&errs);
}

/* ---------------------------------------------------------------- errors */

static void test_unknown_key(void **state) {
  static const char text[] = "[proxy]\n"
                             "idle_timeout = 5s\n"
                             "frobnicate = yes\n"
                             "[service:s]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = h:1\n";
  int line = line_of(text, "frobnicate");
  zg_config_errors_t errs = load_bad(text, &line, 1);

  /* The message must say which key. */
  assert_non_null(strstr(errs.lines[0], "frobnicate"));
  zg_config_errors_free(&errs);

  expect_one_error("[service:s]\n"
                   "listen = 127.0.0.1:7000\n"
                   "instances = h:1\n"
                   "colour = blue\n",
                   "colour");
  expect_one_error("[zookeeper]\n"
                   "hosts = 127.0.0.1:2181\n"
                   "session_timout = 5s\n"
                   "[service:s]\n"
                   "zk_path = /s\n"
                   "listen = 127.0.0.1:7000\n",
                   "session_timout");
}

static void test_unknown_section(void **state) {
  /* inih does not report a section without keys: give it two. The error is
   * on the header's line, once, not once per key. */
  static const char text[] = "[service:s]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = h:1\n"
                             "\n"
                             "[proxi]\n"
                             "workers = 1\n"
                             "idle_timeout = 5s\n";
  int line = line_of(text, "[proxi]");
  zg_config_errors_t errs = load_bad(text, &line, 1);

  assert_non_null(strstr(errs.lines[0], "proxi"));
  zg_config_errors_free(&errs);
}

static void test_bad_duration(void **state) {
  static const char *const bad[] = {"5 parsecs", "", "-1s", "10"};
  static const char *const keys[] = {"session_timeout", "connect_timeout",
                                     "idle_timeout"};

  for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
      /* [zookeeper] once: a repeated section is an error of its own. */
      const char *proxy =
          strcmp(keys[k], "session_timeout") == 0 ? "" : "[proxy]\n";
      char text[512];

      snprintf(text, sizeof(text),
               "[zookeeper]\n"
               "hosts = 127.0.0.1:2181\n"
               "%s"
               "%s = %s\n"
               "[service:s]\n"
               "zk_path = /s\n"
               "listen = 127.0.0.1:7000\n",
               proxy, keys[k], bad[i]);
      expect_one_error(text, keys[k]);
    }
  }
}

/* A service under ZooKeeper, with the line `key = value` in [zookeeper]
 * (key NULL: none), written into text. */
static const char *zk_conf(char *text, size_t len, const char *key,
                           const char *value) {
  snprintf(text, len,
           "[zookeeper]\n"
           "hosts = 127.0.0.1:2181\n"
           "%s%s%s%s"
           "[service:s]\n"
           "zk_path = /s\n"
           "listen = 127.0.0.1:7000\n",
           key ? key : "", key ? " = " : "", key ? value : "", key ? "\n" : "");
  return text;
}

/* [zookeeper] max_watch_bytes: bytes or k/m (1024-based), 0 = no budget;
 * the default stays under ZooKeeper's default jute.maxbuffer. */
static void test_max_watch_bytes(void **state) {
  static const struct {
    const char *value;
    uint64_t bytes;
  } good[] = {{"960k", 983040}, {"2m", 2097152}, {"0", 0}, {"4096", 4096}};
  static const char *const bad[] = {
      "-1", "10x", "512", "2048m", "", "k", "99999999999999999999k"};
  zg_config_t *cfg;
  char text[512];
  (void)state;

  cfg = load_ok(zk_conf(text, sizeof(text), NULL, NULL));
  assert_int_equal(cfg->zk.max_watch_bytes, 960 * 1024);
  assert_true(cfg->zk.max_watch_bytes < 1048575); /* jute.maxbuffer */
  zg_config_free(cfg);
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    cfg =
        load_ok(zk_conf(text, sizeof(text), "max_watch_bytes", good[i].value));
    assert_int_equal(cfg->zk.max_watch_bytes, good[i].bytes);
    zg_config_free(cfg);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    expect_one_error(zk_conf(text, sizeof(text), "max_watch_bytes", bad[i]),
                     "max_watch_bytes");
  }
}

/* [zookeeper] data_sweep: a duration, 0 = off, default 30s; under 100ms
 * (all burst) and durations without a unit are refused. */
static void test_data_sweep(void **state) {
  static const struct {
    const char *value;
    uint64_t ms;
  } good[] = {{"1s", 1000}, {"0", 0}, {"100ms", 100}, {"5m", 300000}};
  static const char *const bad[] = {"-1s", "10", "50ms", "", "fast", "1x"};
  zg_config_t *cfg;
  char text[512];
  (void)state;

  cfg = load_ok(zk_conf(text, sizeof(text), NULL, NULL));
  assert_int_equal(cfg->zk.data_sweep_ms, 30000);
  zg_config_free(cfg);
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    cfg = load_ok(zk_conf(text, sizeof(text), "data_sweep", good[i].value));
    assert_int_equal(cfg->zk.data_sweep_ms, good[i].ms);
    zg_config_free(cfg);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    expect_one_error(zk_conf(text, sizeof(text), "data_sweep", bad[i]),
                     "data_sweep");
  }
}

static void test_bad_protocol(void **state) {
  expect_one_error("[service:s]\n"
                   "listen = 127.0.0.1:7000\n"
                   "protocol = udp\n"
                   "instances = h:1\n",
                   "protocol");
}

static void test_bad_balance(void **state) {
  expect_one_error("[service:s]\n"
                   "listen = 127.0.0.1:7000\n"
                   "instances = h:1\n"
                   "balance = least_conn\n",
                   "balance");
}

static void test_balance_keys(void **state) {
  zg_config_t *cfg = load_ok("[service:lr]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = h:1\n"
                             "balance = least_request\n"
                             "slow_start = 30s\n"
                             "[service:hh]\n"
                             "protocol = http\n"
                             "listen = 127.0.0.1:7001\n"
                             "instances = h:1\n"
                             "balance = hash\n"
                             "hash_key = header:X-User-Id\n"
                             "[service:hc]\n"
                             "protocol = http\n"
                             "listen = 127.0.0.1:7001\n"
                             "path_prefix = /c/\n"
                             "instances = h:1\n"
                             "balance = hash\n"
                             "hash_key = cookie:sid\n"
                             "[service:ht]\n"
                             "listen = 127.0.0.1:7002\n"
                             "instances = h:1\n"
                             "balance = hash\n"
                             "hash_key = client\n"
                             "[service:le]\n"
                             "protocol = http\n"
                             "listen = 127.0.0.1:7001\n"
                             "path_prefix = /le/\n"
                             "instances = h:1\n"
                             "balance = least_request\n"
                             "least_request_latency = ewma\n"
                             "[service:ld]\n"
                             "protocol = http\n"
                             "listen = 127.0.0.1:7001\n"
                             "path_prefix = /ld/\n"
                             "instances = h:1\n"
                             "balance = least_request\n"
                             "least_request_latency = ewma\n"
                             "least_request_decay = 2500ms\n"
                             "[service:lo]\n"
                             "listen = 127.0.0.1:7003\n"
                             "instances = h:1\n"
                             "balance = least_request\n"
                             "least_request_latency = off\n");
  const zg_service_conf_t *s = service(cfg, "lr");
  (void)state;
  assert_int_equal(s->balance, ZG_BALANCE_LEAST_REQUEST);
  assert_int_equal(s->slow_start_ms, 30000);
  assert_int_equal(s->hash_key, ZG_HASH_NONE);
  assert_false(s->latency_ewma);
  assert_int_equal(s->latency_decay_ms, 0);
  s = service(cfg, "le"); /* the decay defaults to Finagle's 10 s */
  assert_true(s->latency_ewma);
  assert_int_equal(s->latency_decay_ms, 10000);
  s = service(cfg, "ld");
  assert_true(s->latency_ewma);
  assert_int_equal(s->latency_decay_ms, 2500);
  s = service(cfg, "lo"); /* off, said outright: fine on a TCP service */
  assert_false(s->latency_ewma);
  s = service(cfg, "hh");
  assert_int_equal(s->balance, ZG_BALANCE_HASH);
  assert_int_equal(s->hash_key, ZG_HASH_HEADER);
  assert_string_equal(s->hash_name, "X-User-Id");
  assert_int_equal(s->slow_start_ms, 0);
  s = service(cfg, "hc");
  assert_int_equal(s->hash_key, ZG_HASH_COOKIE);
  assert_string_equal(s->hash_name, "sid");
  s = service(cfg, "ht");
  assert_int_equal(s->hash_key, ZG_HASH_CLIENT);
  zg_config_free(cfg);
}

static void test_bad_balance_keys(void **state) {
  static const char *bad[] = {
      /* hash without a key */
      "balance = hash\n",
      /* a key without hash */
      "balance = random\nhash_key = path\n",
      /* no such key */
      "balance = hash\nhash_key = query\n",
      /* a header name that is not a token */
      "balance = hash\nhash_key = header:X User\n",
      "balance = hash\nhash_key = cookie:\n",
      /* headers on a TCP service */
      "protocol = tcp\nbalance = hash\nhash_key = header:X-A\n",
      /* slow start has nothing to ramp under hash */
      "balance = hash\nhash_key = path\nslow_start = 10s\n",
      "slow_start = fast\n",
      /* latency goes with least_request, HTTP, and a decay above 0 */
      "balance = round_robin\nleast_request_latency = ewma\n",
      "least_request_latency = ewma\n", /* balance = random by default */
      "balance = least_request\nleast_request_latency = peak\n",
      "protocol = tcp\nbalance = least_request\nleast_request_latency = "
      "ewma\n",
      "balance = least_request\nleast_request_decay = 5s\n",
      "balance = least_request\nleast_request_latency = ewma\n"
      "least_request_decay = 0s\n",
      "balance = least_request\nleast_request_latency = ewma\n"
      "least_request_decay = soon\n",
  };
  static const char *marker[] = {"balance",
                                 "hash_key",
                                 "hash_key",
                                 "hash_key",
                                 "hash_key",
                                 "hash_key",
                                 "slow_start",
                                 "slow_start",
                                 "least_request_latency",
                                 "least_request_latency",
                                 "least_request_latency",
                                 "least_request_latency",
                                 "least_request_decay",
                                 "least_request_decay",
                                 "least_request_decay"};
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[512];
    snprintf(text, sizeof(text),
             "[service:s]\n"
             "listen = 127.0.0.1:7000\n"
             "instances = h:1\n"
             "%s%s",
             strncmp(bad[i], "protocol", 8) ? "protocol = http\n" : "", bad[i]);
    expect_one_error(text, marker[i]);
  }
  assert_int_equal(sizeof(bad) / sizeof(bad[0]),
                   sizeof(marker) / sizeof(marker[0]));
  /* discover sections check the same keys the same way, on their lines */
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[512];
    if (!strncmp(bad[i], "protocol", 8))
      continue; /* discovered services are HTTP: protocol = tcp is refused */
    snprintf(text, sizeof(text),
             "[zookeeper]\nhosts = z:2181\n"
             "[discover:d]\n"
             "zk_root = /services\n"
             "listen = 127.0.0.1:7000\n"
             "%s",
             bad[i]);
    expect_one_error(text, marker[i]);
  }
}

static void test_discover_balance_keys(void **state) {
  zg_config_t *cfg = load_ok("[zookeeper]\nhosts = z:2181\n"
                             "[discover:h]\n"
                             "zk_root = /services\n"
                             "listen = 127.0.0.1:7000\n"
                             "balance = hash\n"
                             "hash_key = cookie:sid\n"
                             "[discover:s]\n"
                             "zk_root = /other\n"
                             "listen = 127.0.0.1:7001\n"
                             "balance = least_request\n"
                             "slow_start = 45s\n"
                             "least_request_latency = ewma\n"
                             "least_request_decay = 3s\n"
                             "[discover:p]\n"
                             "zk_root = /third\n"
                             "listen = 127.0.0.1:7002\n");
  const zg_discover_conf_t *d = &cfg->discovers[0];
  zg_discover_conf_t copy;
  (void)state;
  assert_int_equal(cfg->n_discovers, 3);
  assert_int_equal(d->balance, ZG_BALANCE_HASH);
  assert_int_equal(d->hash_key, ZG_HASH_COOKIE);
  assert_string_equal(d->hash_name, "sid");
  assert_int_equal(d->slow_start_ms, 0);
  d = &cfg->discovers[1];
  assert_int_equal(d->balance, ZG_BALANCE_LEAST_REQUEST);
  assert_int_equal(d->hash_key, ZG_HASH_NONE);
  assert_int_equal(d->slow_start_ms, 45000);
  assert_true(d->latency_ewma);
  assert_int_equal(d->latency_decay_ms, 3000);
  d = &cfg->discovers[2]; /* the defaults */
  assert_int_equal(d->balance, ZG_BALANCE_RANDOM);
  assert_int_equal(d->hash_key, ZG_HASH_NONE);
  assert_int_equal(d->slow_start_ms, 0);
  assert_false(d->latency_ewma);
  /* a reload sees a change of any of them */
  d = &cfg->discovers[1];
  assert_true(zg_discover_conf_equal(d, d));
  copy = *d;
  copy.slow_start_ms = 30000;
  assert_false(zg_discover_conf_equal(d, &copy));
  copy = *d;
  copy.latency_decay_ms = 1;
  assert_false(zg_discover_conf_equal(d, &copy));
  copy = cfg->discovers[0];
  snprintf(copy.hash_name, sizeof(copy.hash_name), "uid");
  assert_false(zg_discover_conf_equal(&cfg->discovers[0], &copy));
  zg_config_free(cfg);
}

static void test_bad_log_level(void **state) {
  expect_one_error("[proxy]\n"
                   "log_level = verbose\n"
                   "[service:s]\n"
                   "listen = 127.0.0.1:7000\n"
                   "instances = h:1\n",
                   "log_level");
}

static void test_bad_listen(void **state) {
  static const char *const bad[] = {"127.0.0.1:99999", "nohost", "127.0.0.1:0"};

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[256];

    snprintf(text, sizeof(text),
             "[service:s]\n"
             "instances = h:1\n"
             "listen = %s\n",
             bad[i]);
    expect_one_error(text, "listen");
  }
}

static void test_bad_service_name(void **state) {
  static const char text[] = "[service:good]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = h:1\n"
                             "[service:bad name]\n"
                             "listen = 127.0.0.1:7001\n"
                             "instances = h:1\n";

  expect_one_error(text, "[service:bad name]");
  expect_one_error("[service:]\n"
                   "listen = 127.0.0.1:7001\n"
                   "instances = h:1\n",
                   "[service:]");
  expect_one_error("[service:a/b]\n"
                   "listen = 127.0.0.1:7001\n"
                   "instances = h:1\n",
                   "[service:a/b]");
}

static void test_duplicate_listen(void **state) {
  static const char text[] = "[service:a]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = h:1\n"
                             "[service:b]\n"
                             "instances = h:2\n"
                             "listen = 127.0.0.1:7000 ; same as a\n";

  expect_one_error(text, "; same as a");
}

static void test_duplicate_service(void **state) {
  /* Two sections with one name: the second one is the error. */
  static const char text[] = "[service:a]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = h:1\n"
                             "[service:b]\n"
                             "listen = 127.0.0.1:7001\n"
                             "instances = h:1\n"
                             "[service:a]\n"
                             "listen = 127.0.0.1:7002\n";
  zg_config_t *cfg = NULL;
  zg_config_errors_t errs = {0};

  /* inih merges repeated sections; whether that is an error or a
   * continuation is not in the contract, but it must not crash and a
   * second listen for one service must not be silently accepted. */
  assert_int_equal(zg_config_load_string(text, NAME, CHECKS, &cfg, &errs),
                   ZG_ECONFIG);
  assert_true(errs.n >= 1);
  if (cfg != NULL)
    zg_config_free(cfg);
  zg_config_errors_free(&errs);
}

static void test_service_without_listen(void **state) {
  expect_one_error("[service:a]\n"
                   "listen = 127.0.0.1:7000\n"
                   "instances = h:1\n"
                   "\n"
                   "[service:nolisten]\n"
                   "instances = h:2\n"
                   "balance = random\n",
                   "[service:nolisten]");
}

static void test_service_without_source(void **state) {
  expect_one_error("[zookeeper]\n"
                   "hosts = 127.0.0.1:2181\n"
                   "[service:nothing]\n"
                   "listen = 127.0.0.1:7000\n"
                   "protocol = tcp\n",
                   "[service:nothing]");
}

static void test_relative_zk_path(void **state) {
  expect_one_error("[zookeeper]\n"
                   "hosts = 127.0.0.1:2181\n"
                   "[service:s]\n"
                   "listen = 127.0.0.1:7000\n"
                   "zk_path = services/s\n",
                   "zk_path");
}

static void test_zk_path_without_hosts(void **state) {
  static const char text[] = "[zookeeper]\n"
                             "session_timeout = 5s\n"
                             "[service:s]\n"
                             "listen = 127.0.0.1:7000\n"
                             "zk_path = /services/s\n";
  static const char no_zk_section[] = "[service:s]\n"
                                      "listen = 127.0.0.1:7000\n"
                                      "zk_path = /services/s\n";
  zg_config_t *cfg = NULL;
  zg_config_errors_t errs = {0};
  int header = line_of(text, "[service:s]");
  int key = line_of(text, "zk_path");

  /* The contract does not say which of the two lines: either one points
   * the user at the service, anything else is wrong. */
  assert_int_equal(zg_config_load_string(text, NAME, CHECKS, &cfg, &errs),
                   ZG_ECONFIG);
  if (errs.n != 1 ||
      (find_error_at(&errs, header) < 0 && find_error_at(&errs, key) < 0)) {
    dump_errors(text, &errs);
    fail();
  }
  if (cfg != NULL)
    zg_config_free(cfg);
  zg_config_errors_free(&errs);

  /* Same without any [zookeeper] section. */
  cfg = NULL;
  assert_int_equal(
      zg_config_load_string(no_zk_section, NAME, CHECKS, &cfg, &errs),
      ZG_ECONFIG);
  assert_int_equal(errs.n, 1);
  if (cfg != NULL)
    zg_config_free(cfg);
  zg_config_errors_free(&errs);
}

static void test_discover(void **state) {
  zg_config_t *cfg = load_ok("[zookeeper]\n"
                             "hosts = 127.0.0.1:2181\n"
                             "[service:web]\n"
                             "protocol = http\n"
                             "listen = 127.0.0.1:8080\n"
                             "instances = h:1\n"
                             "[discover:all]\n"
                             "zk_root = /services\n"
                             "listen = 127.0.0.1:8080\n"
                             "protocol = http\n"
                             "domain = Example.COM.\n"
                             "balance = round_robin\n"
                             "endpoint = http\n"
                             "response_timeout = 5s\n"
                             "[discover:other]\n"
                             "zk_root = /other\n"
                             "listen = 127.0.0.1:8090\n");
  const zg_discover_conf_t *d = &cfg->discovers[0];

  (void)state;
  assert_int_equal(cfg->n_discovers, 2);
  assert_string_equal(d->name, "all");
  assert_string_equal(d->zk_root, "/services");
  assert_v4(&d->listen, "127.0.0.1", 8080);
  assert_string_equal(d->domain, "example.com");
  assert_int_equal(d->balance, ZG_BALANCE_ROUND_ROBIN);
  assert_string_equal(d->endpoint, "http");
  assert_int_equal(d->response_timeout_ms, 5000);
  assert_int_equal(d->connect_timeout_ms, cfg->proxy.connect_timeout_ms);
  d = &cfg->discovers[1];
  assert_null(d->domain);
  assert_null(d->endpoint);
  assert_int_equal(d->balance, ZG_BALANCE_RANDOM);
  assert_int_equal(d->response_timeout_ms, 30000);
  /* Discovery needs the ZooKeeper session even without zk_path services. */
  assert_non_null(cfg->zk.hosts);
  zg_config_free(cfg);
}

/* ${VAR} and ${VAR:-default} come from the environment; an unset variable
 * without a default is an error at its line, naming the variable. */
static void test_env_substitution(void **state) {
  zg_config_t *cfg;
  zg_config_errors_t errs;
  (void)state;
  setenv("ZG_TEST_HOSTS", "zk1:2181,zk2:2181", 1);
  setenv("ZG_TEST_PORT", "7100", 1);
  setenv("ZG_TEST_EMPTY", "", 1);
  unsetenv("ZG_TEST_UNSET");
  cfg = load_ok("[zookeeper]\n"
                "hosts = ${ZG_TEST_HOSTS}/chroot\n"
                "[proxy]\n"
                "log_format = ${ZG_TEST_UNSET:-json}\n"
                "access_log_format = ${ZG_TEST_EMPTY:-json}\n"
                "[service:s]\n"
                "listen = 127.0.0.1:${ZG_TEST_PORT}\n"
                "zk_path = /a/${ZG_TEST_UNSET:-b}/$${literal}/$x$\n"
                "[service:t]\n"
                "listen = 127.0.0.1:${ZG_TEST_UNSET:-7101}\n"
                "instances = h:1\n");
  assert_string_equal(cfg->zk.hosts, "zk1:2181,zk2:2181/chroot");
  assert_true(cfg->proxy.log_json);
  assert_true(cfg->proxy.access_log_json); /* empty counts as unset */
  assert_v4(&cfg->services[0].listen, "127.0.0.1", 7100);
  assert_string_equal(cfg->services[0].zk_path, "/a/b/${literal}/$x$");
  assert_v4(&cfg->services[1].listen, "127.0.0.1", 7101);
  zg_config_free(cfg);

  /* Set but empty, without a default: empty (the shell's ${VAR}). */
  cfg = load_ok("[proxy]\naccess_log_format = text${ZG_TEST_EMPTY}\n"
                "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n");
  assert_false(cfg->proxy.access_log_json);
  zg_config_free(cfg);

  {
    static const char text[] = "[proxy]\n"
                               "log_format = ${ZG_TEST_UNSET}\n"
                               "[service:s]\n"
                               "listen = 127.0.0.1:7000\n"
                               "instances = h:1\n";
    int line = 2;
    errs = load_bad(text, &line, 1);
    assert_non_null(strstr(errs.lines[0], "ZG_TEST_UNSET is not set"));
    zg_config_errors_free(&errs);
  }
  expect_one_error("[proxy]\nlog_format = ${ZG_TEST_PORT\n", "log_format");
  expect_one_error("[proxy]\nlog_format = ${}\n", "log_format");
  expect_one_error("[proxy]\nlog_format = ${1X}\n", "log_format");
  expect_one_error("[proxy]\nlog_format = ${A-B}\n", "log_format");
  /* The substituted value is checked like a written one. */
  expect_one_error("[proxy]\nlog_format = ${ZG_TEST_PORT}\n", "log_format");
  expect_one_error("[proxy]\nlog_format = xml\n", "log_format");
}

/* [admin] auth and auth_file: the two forms, the secret never in a
 * message, and one of the two keys at most. */
static void test_admin_auth(void **state) {
  static const char svc[] = "[service:s]\nlisten = 127.0.0.1:7000\n"
                            "instances = h:1\n";
  char text[512], path[] = "/tmp/zkgate-test-auth-XXXXXX";
  zg_config_t *cfg;
  zg_config_errors_t errs;
  int fd, line = 3;
  (void)state;
  snprintf(text, sizeof(text),
           "[admin]\nlisten = 127.0.0.1:9901\n"
           "auth = bearer:abc-DEF_1.2~3+/==\n%s",
           svc);
  cfg = load_ok(text);
  assert_int_equal(cfg->admin.auth, ZG_ADMIN_AUTH_BEARER);
  assert_string_equal(cfg->admin.auth_secret, "abc-DEF_1.2~3+/==");
  zg_config_free(cfg);
  snprintf(text, sizeof(text), "[admin]\nauth = basic:ops:pa:ss word\n%s", svc);
  cfg = load_ok(text);
  assert_int_equal(cfg->admin.auth, ZG_ADMIN_AUTH_BASIC);
  assert_string_equal(cfg->admin.auth_secret, "ops:pa:ss word");
  zg_config_free(cfg);
  cfg = load_ok(svc);
  assert_int_equal(cfg->admin.auth, ZG_ADMIN_AUTH_NONE);
  zg_config_free(cfg);
  /* [admin] before [proxy] with access_log: the secret stays (the access
   * log key once freed it by mistake). */
  snprintf(text, sizeof(text),
           "[admin]\nauth = bearer:keep\n[proxy]\naccess_log = off\n%s", svc);
  cfg = load_ok(text);
  assert_string_equal(cfg->admin.auth_secret, "keep");
  zg_config_free(cfg);
  /* Empty: none, so that a file can say auth = ${VAR:-}. */
  snprintf(text, sizeof(text), "[admin]\nauth = ${ZG_TEST_UNSET_AUTH:-}\n%s",
           svc);
  unsetenv("ZG_TEST_UNSET_AUTH");
  cfg = load_ok(text);
  assert_int_equal(cfg->admin.auth, ZG_ADMIN_AUTH_NONE);
  assert_null(cfg->admin.auth_secret);
  zg_config_free(cfg);

  expect_one_error("[admin]\nauth = bearer:\n", "auth");
  expect_one_error("[admin]\nauth = bearer:a=b\n", "auth");
  expect_one_error("[admin]\nauth = basic::pw\n", "auth");
  expect_one_error("[admin]\nauth = basic:user\n", "auth");
  expect_one_error("[admin]\nauth = basic:user:\n", "auth");
  expect_one_error("[admin]\nauth = digest:user:pw\n", "auth");
  snprintf(text, sizeof(text), "[admin]\nauth = bearer:x\nauth = bearer:y\n");
  errs = load_bad(text, &line, 1);
  zg_config_errors_free(&errs);
  {
    line = 2;
    errs = load_bad("[admin]\nauth = basic:user:TopSecret1\x01\n", &line, 1);
    assert_null(strstr(errs.lines[0], "TopSecret1"));
    zg_config_errors_free(&errs);
  }

  fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "basic:ops:from-file\r\nignored\n", 30), 30);
  close(fd);
  snprintf(text, sizeof(text), "[admin]\nauth_file = %s\n%s", path, svc);
  cfg = load_ok(text);
  assert_int_equal(cfg->admin.auth, ZG_ADMIN_AUTH_BASIC);
  assert_string_equal(cfg->admin.auth_secret, "ops:from-file");
  zg_config_free(cfg);
  snprintf(text, sizeof(text), "[admin]\nauth = bearer:t\nauth_file = %s\n%s",
           path, svc);
  line = 3; /* not both */
  errs = load_bad(text, &line, 1);
  zg_config_errors_free(&errs);
  fd = open(path, O_WRONLY | O_TRUNC);
  assert_int_equal(write(fd, "token-without-scheme\n", 21), 21);
  close(fd);
  snprintf(text, sizeof(text), "[admin]\nauth_file = %s\n", path);
  expect_one_error(text, "auth_file");
  unlink(path);
  snprintf(text, sizeof(text), "[admin]\nauth_file = %s\n", path);
  expect_one_error(text, "auth_file"); /* gone */
  expect_one_error("[admin]\nauth_file = secret.txt\n", "auth_file");
}

static void test_operations_keys(void **state) {
  zg_config_t *cfg = load_ok("[proxy]\n"
                             "access_log = /var/log/zkgate/access.log\n"
                             "access_log_format = json\n"
                             "drain_timeout = 30s\n"
                             "[admin]\n"
                             "listen = 127.0.0.1:9901\n"
                             "[service:s]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = h:1\n");

  (void)state;
  assert_string_equal(cfg->proxy.access_log, "/var/log/zkgate/access.log");
  assert_true(cfg->proxy.access_log_json);
  assert_int_equal(cfg->proxy.drain_timeout_ms, 30000);
  assert_true(cfg->admin.enabled);
  assert_v4(&cfg->admin.listen, "127.0.0.1", 9901);
  zg_config_free(cfg);

  cfg = load_ok("[proxy]\naccess_log = off\n[service:s]\n"
                "listen = 127.0.0.1:7000\ninstances = h:1\n");
  assert_null(cfg->proxy.access_log);
  assert_false(cfg->proxy.access_log_json);
  assert_int_equal(cfg->proxy.drain_timeout_ms, 15000);
  assert_true(cfg->proxy.max_request_body == 0); /* no limit by default */
  assert_true(cfg->proxy.http2);                 /* on by default */
  assert_true(cfg->proxy.tcp_splice);            /* auto by default */
  assert_false(cfg->admin.enabled);
  zg_config_free(cfg);

  cfg = load_ok("[proxy]\nmax_request_body = 10m\n[service:s]\n"
                "listen = 127.0.0.1:7000\ninstances = h:1\n");
  assert_true(cfg->proxy.max_request_body == 10485760);
  zg_config_free(cfg);
  expect_one_error("[proxy]\nmax_request_body = lots\n", "max_request_body");
  cfg = load_ok("[proxy]\nhttp2 = off\n[service:s]\n"
                "listen = 127.0.0.1:7000\ninstances = h:1\n");
  assert_false(cfg->proxy.http2);
  zg_config_free(cfg);
  expect_one_error("[proxy]\nhttp2 = maybe\n", "http2");
  cfg = load_ok("[proxy]\ntcp_splice = off\n[service:s]\n"
                "listen = 127.0.0.1:7000\ninstances = h:1\n");
  assert_false(cfg->proxy.tcp_splice);
  zg_config_free(cfg);
  cfg = load_ok("[proxy]\ntcp_splice = auto\n[service:s]\n"
                "listen = 127.0.0.1:7000\ninstances = h:1\n");
  assert_true(cfg->proxy.tcp_splice);
  zg_config_free(cfg);
  expect_one_error("[proxy]\ntcp_splice = on\n", "tcp_splice");
  expect_one_error("[proxy]\naccess_log = logs/a.log\n", "access_log");
  expect_one_error("[proxy]\naccess_log_format = xml\n", "access_log_format");
  expect_one_error("[admin]\nlisten = nowhere\n", "listen");
  expect_one_error("[admin]\nport = 9901\n", "port");
  {
    static const char text[] = "[admin]\n"
                               "listen = 127.0.0.1:7000\n"
                               "[service:s]\n"
                               "listen = 127.0.0.1:7000\n"
                               "instances = h:1\n";
    int line = 2;
    zg_config_errors_t errs = load_bad(text, &line, 1);
    assert_non_null(strstr(errs.lines[0], "[service:s]"));
    zg_config_errors_free(&errs);
  }
}

/* Requests are routed on their normalised path: a prefix with a dot
 * segment could never match, so it is an error. */
static void test_path_prefix_dot_segments(void **state) {
  static const char *const bad[] = {"/api/../x/", "/api/./",   "/..",
                                    "/a/%2e%2E/", "/a/..%2f/", "/a/."};
  static const char *const good[] = {"/api/",  "/api",   "/.well-known/",
                                     "/a..b/", "/v1.2/", "/"};
  char text[256];

  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    snprintf(text, sizeof(text),
             "[service:s]\nlisten = 127.0.0.1:7000\nprotocol = http\n"
             "instances = h:1\npath_prefix = %s\n",
             bad[i]);
    expect_one_error(text, "path_prefix");
  }
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    zg_config_t *cfg;

    snprintf(text, sizeof(text),
             "[service:s]\nlisten = 127.0.0.1:7000\nprotocol = http\n"
             "instances = h:1\npath_prefix = %s\n",
             good[i]);
    cfg = load_ok(text);
    assert_string_equal(cfg->services[0].path_prefix, good[i]);
    zg_config_free(cfg);
  }
}

static void test_connection_caps(void **state) {
  zg_config_t *cfg;
  static const char *const bad[] = {"0", "-1", "", "ten", "1e3", "123456789"};

  (void)state;
  /* auto (0) unless set; sized when the gateway starts */
  cfg = load_ok("[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n");
  assert_int_equal(cfg->proxy.max_connections, 0);
  assert_int_equal(cfg->proxy.max_head_connections, 0);
  zg_config_free(cfg);
  cfg = load_ok("[proxy]\nmax_connections = 5000\n"
                "max_head_connections = 5000\n"
                "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n");
  assert_int_equal(cfg->proxy.max_connections, 5000);
  assert_int_equal(cfg->proxy.max_head_connections, 5000);
  zg_config_free(cfg);
  cfg = load_ok("[proxy]\nmax_connections = auto\n"
                "max_head_connections = 64\n"
                "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n");
  assert_int_equal(cfg->proxy.max_connections, 0);
  assert_int_equal(cfg->proxy.max_head_connections, 64);
  zg_config_free(cfg);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[256];

    snprintf(text, sizeof(text),
             "[proxy]\nmax_connections = %s\nmax_head_connections = %s\n",
             bad[i], bad[i]);
    {
      int lines[2] = {line_of(text, "max_connections"),
                      line_of(text, "max_head_connections")};
      zg_config_errors_t errs = load_bad(text, lines, 2);
      zg_config_errors_free(&errs);
    }
  }
  /* More in their head than open at all: reported on the head's line. */
  expect_one_error("[proxy]\nmax_connections = 10\n"
                   "max_head_connections = 11\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n",
                   "max_head_connections");
}

/* [proxy] max_pipes: auto (the default), 0 (no pipes) or a count. */
static void test_max_pipes(void **state) {
  zg_config_t *cfg;
  static const char *const bad[] = {"-1",  "",          "ten",
                                    "1e3", "123456789", "0x10"};

  (void)state;
  cfg = load_ok("[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n");
  assert_true(cfg->proxy.max_pipes == ZG_MAX_PIPES_AUTO);
  zg_config_free(cfg);
  cfg = load_ok("[proxy]\nmax_pipes = 0\n"
                "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n");
  assert_int_equal(cfg->proxy.max_pipes, 0);
  zg_config_free(cfg);
  cfg = load_ok("[proxy]\nmax_pipes = 12345678\n"
                "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n");
  assert_int_equal(cfg->proxy.max_pipes, 12345678);
  zg_config_free(cfg);
  cfg = load_ok("[proxy]\nmax_pipes = auto\n"
                "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n");
  assert_true(cfg->proxy.max_pipes == ZG_MAX_PIPES_AUTO);
  zg_config_free(cfg);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[256];

    snprintf(text, sizeof(text),
             "[proxy]\nmax_pipes = %s\n"
             "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n",
             bad[i]);
    expect_one_error(text, "max_pipes");
  }
}

static void test_bad_discover(void **state) {
  static const char base[] = "[zookeeper]\n"
                             "hosts = 127.0.0.1:2181\n";
  char text[512];

  (void)state;
  snprintf(text, sizeof(text),
           "%s[discover:all]\nzk_root = /s\nlisten = 127.0.0.1:8080\n"
           "protocol = tcp\n",
           base);
  expect_one_error(text, "protocol = tcp");
  snprintf(text, sizeof(text),
           "%s[discover:all]\nzk_root = services\nlisten = 127.0.0.1:8080\n",
           base);
  expect_one_error(text, "zk_root = services");
  snprintf(text, sizeof(text),
           "%s[discover:all]\nzk_root = /s\nlisten = 127.0.0.1:8080\n"
           "domain = *.example.com\n",
           base);
  expect_one_error(text, "domain =");
  snprintf(text, sizeof(text),
           "%s[discover:all]\nzk_root = /s\nlisten = 127.0.0.1:8080\n"
           "path_prefix = /x/\n",
           base);
  expect_one_error(text, "path_prefix");
  /* Missing keys: on the section header. */
  snprintf(text, sizeof(text), "%s[discover:all]\nlisten = 127.0.0.1:8080\n",
           base);
  expect_one_error(text, "[discover:all]");
  snprintf(text, sizeof(text), "%s[discover:all]\nzk_root = /s\n", base);
  expect_one_error(text, "[discover:all]");
  /* No ZooKeeper to discover from. */
  expect_one_error("[discover:all]\nzk_root = /s\nlisten = 127.0.0.1:8080\n",
                   "[discover:all]");
  /* A TCP service's address is its own. */
  snprintf(text, sizeof(text),
           "%s[service:db]\nlisten = 127.0.0.1:8080\nzk_path = /db\n"
           "[discover:all]\nzk_root = /s\nlisten = 127.0.0.1:8080\n",
           base);
  {
    int line = 8; /* the discover section's listen */
    zg_config_errors_t errs = load_bad(text, &line, 1);
    assert_non_null(strstr(errs.lines[0], "[service:db]"));
    zg_config_errors_free(&errs);
  }
  snprintf(text, sizeof(text), "%s[discover:a b]\nzk_root = /s\n", base);
  expect_one_error(text, "[discover:a b]");
}

static void test_bad_static_instance(void **state) {
  static const char *const bad[] = {"10.0.0.5:8080, nope", "10.0.0.5:0",
                                    "[::1:80, 10.0.0.6:80"};

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[256];

    snprintf(text, sizeof(text),
             "[service:s]\n"
             "listen = 127.0.0.1:7000\n"
             "instances = %s\n",
             bad[i]);
    expect_one_error(text, "instances");
  }
}

static void test_static_instances_v6_and_names(void **state) {
  static const char text[] = "[service:s]\n"
                             "listen = 127.0.0.1:7000\n"
                             "instances = [::1]:8080,db.example.com:5432\n";
  zg_config_t *cfg = load_ok(text);
  const zg_service_conf_t *s = service(cfg, "s");

  assert_int_equal(s->n_instances, 2);
  assert_string_equal(s->instances[0].host, "::1");
  assert_int_equal(s->instances[0].port, 8080);
  assert_true(s->instances[0].is_ip);
  assert_string_equal(s->instances[1].host, "db.example.com");
  assert_int_equal(s->instances[1].port, 5432);
  assert_false(s->instances[1].is_ip);
  zg_config_free(cfg);
}

/* A line is as long as it needs to be: 40 static instances make a line of
 * 600 bytes, and a section header or a comment may be long too. inih splits
 * a line longer than its ini_max_line in two (found by fuzz_config: the
 * tail was read as a key of its own, or as a syntax error at a line that
 * does not exist), so the limit must be the file's. */
static void test_long_lines(void **state) {
  char text[4096], list[1024];
  size_t n = 0;
  zg_config_t *cfg;
  zg_config_errors_t errs;
  static const int line5[] = {5};

  list[0] = '\0';
  for (int i = 1; i <= 40; i++)
    n += (size_t)snprintf(list + n, sizeof(list) - n, "%s10.0.0.%d:8080",
                          i > 1 ? ", " : "", i);
  assert_true(n > 512);
  snprintf(text, sizeof(text),
           "; %0300d\n"
           "[service:s]\n"
           "listen = 127.0.0.1:7000\n"
           "instances = %s\n",
           0, list);
  cfg = load_ok(text);
  assert_int_equal(service(cfg, "s")->n_instances, 40);
  assert_string_equal(service(cfg, "s")->instances[39].host, "10.0.0.40");
  zg_config_free(cfg);

  /* The line after a long one is counted as the line it is. */
  snprintf(text + strlen(text), sizeof(text) - strlen(text), "bogus = 1\n");
  errs = load_bad(text, line5, 1);
  zg_config_errors_free(&errs);
}

static void test_several_errors(void **state) {
  static const char text[] = "[proxy]\n"
                             "bogus = 1\n"
                             "idle_timeout = 10\n"
                             "\n"
                             "[service:a]\n"
                             "listen = 127.0.0.1:99999\n"
                             "instances = 10.0.0.1:80\n"
                             "balance = sideways\n"
                             "\n"
                             "[service:b]\n"
                             "instances = 10.0.0.2:80\n"
                             "protocol = sctp\n";
  const int lines[] = {
      line_of(text, "bogus"),           line_of(text, "idle_timeout"),
      line_of(text, "127.0.0.1:99999"), line_of(text, "sideways"),
      line_of(text, "[service:b]"),     line_of(text, "sctp"),
  };
  zg_config_errors_t errs =
      load_bad(text, lines, sizeof(lines) / sizeof(lines[0]));

  zg_config_errors_free(&errs);
}

/* --------------------------------------------------------- value parsers */

/* auth = digest:USER:PASSWORD: kept as "user:password" (the password may
 * hold colons, as ZooKeeper splits at the first one); absent, NULL. */
static void test_auth_digest(void **state) {
  static const char text[] = "[zookeeper]\n"
                             "hosts = 127.0.0.1:2181\n"
                             "auth = digest:alice:s3cr:et pw\n"
                             "[service:s]\n"
                             "listen = 127.0.0.1:7000\n"
                             "zk_path = /services/s\n";
  static const char none[] = "[zookeeper]\n"
                             "hosts = 127.0.0.1:2181\n"
                             "[service:s]\n"
                             "listen = 127.0.0.1:7000\n"
                             "zk_path = /services/s\n";
  zg_config_t *cfg = load_ok(text);

  assert_string_equal(cfg->zk.auth, "alice:s3cr:et pw");
  zg_config_free(cfg);
  cfg = load_ok(none);
  assert_null(cfg->zk.auth);
  zg_config_free(cfg);
}

/* Each bad value is one error on the auth line, and no message carries the
 * password (the value holds a secret). */
static void test_bad_auth(void **state) {
  static const char *const values[] = {
      "alice:Hunter2pw",           /* no scheme */
      "sasl:alice:Hunter2pw",      /* not digest */
      "DIGEST:alice:Hunter2pw",    /* schemes are case-sensitive */
      "digest:Hunter2pw",          /* no user */
      "digest::Hunter2pw",         /* empty user */
      "digest:alice:",             /* empty password */
      "digest:alice",              /* no password */
      "digest",                    /* nothing */
      "digest:alice:Hunter\x01pw", /* control byte */
      "Hunter2pw",                 /* no scheme, no user */
  };
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    char text[256];
    int line = 3;
    zg_config_errors_t errs;
    snprintf(text, sizeof(text),
             "[zookeeper]\n"
             "hosts = 127.0.0.1:2181\n"
             "auth = %s\n"
             "[service:s]\n"
             "listen = 127.0.0.1:7000\n"
             "zk_path = /services/s\n",
             values[i]);
    errs = load_bad(text, &line, 1);
    if (!strstr(errs.lines[0], "auth:") || strstr(errs.lines[0], "Hunter")) {
      print_error("auth = %s: %s\n", values[i], errs.lines[0]);
      fail();
    }
    zg_config_errors_free(&errs);
  }
}

/* hosts: every host of the list and the chroot are kept for the client;
 * a chroot must be a znode path other than "/". */
static void test_hosts_chroot(void **state) {
  static const char *const good[] = {
      "127.0.0.1:2181/apps/zkgate",
      "127.0.0.1:1,127.0.0.1:2181",
      "127.0.0.1:1, zk2.example.com:2181,[::1]:2181/chroot",
  };
  static const char *const bad[] = {
      "127.0.0.1:2181/",      "127.0.0.1:2181/a/",   "127.0.0.1:2181/a//b",
      "127.0.0.1:2181/a,b:1", "127.0.0.1:2181,",     "/chroot",
      "127.0.0.1/chroot",     "127.0.0.1:2181/a\tb",
  };
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    char text[256];
    zg_config_t *cfg;
    snprintf(text, sizeof(text),
             "[zookeeper]\nhosts = %s\n"
             "[service:s]\nlisten = 127.0.0.1:7000\nzk_path = /s\n",
             good[i]);
    cfg = load_ok(text);
    assert_string_equal(cfg->zk.hosts, good[i]);
    zg_config_free(cfg);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[256];
    int line = 2;
    zg_config_errors_t errs;
    snprintf(text, sizeof(text),
             "[zookeeper]\nhosts = %s\n"
             "[service:s]\nlisten = 127.0.0.1:7000\nzk_path = /s\n",
             bad[i]);
    errs = load_bad(text, &line, 1);
    zg_config_errors_free(&errs);
  }
}

static void test_parse_duration(void **state) {
  static const struct {
    const char *s;
    uint64_t ms;
  } good[] = {{"250ms", 250},   {"2s", 2000},   {"1m", 60000},
              {"1h", 3600000},  {"0", 0},       {"0s", 0},
              {"1500ms", 1500}, {"90s", 90000}, {"0ms", 0}};
  static const char *const bad[] = {
      "10", "1",    "",     "-1s", "5 parsecs", "s", "ms",
      "1x", "1sec", "+-1s", "1s2", "abc",       " ", "18446744073709551615h"};

  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    uint64_t ms = 12345;

    print_message("duration %s\n", good[i].s);
    assert_int_equal(zg_parse_duration_ms(good[i].s, &ms), 0);
    assert_int_equal(ms, good[i].ms);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint64_t ms = 0;

    print_message("bad duration '%s'\n", bad[i]);
    assert_int_equal(zg_parse_duration_ms(bad[i], &ms), ZG_ECONFIG);
  }
}

static void test_parse_size(void **state) {
  static const struct {
    const char *s;
    uint64_t v;
  } good[] = {{"0", 0},           {"512", 512},
              {"64k", 65536},     {"64K", 65536},
              {"10m", 10485760},  {"1g", 1073741824},
              {"1G", 1073741824}, {"8589934591", 8589934591}};
  static const char *const bad[] = {
      "",    "k",  "-1", "1.5m", "1kb",
      "1 k", " 1", "1t", "x",    "99999999999999999999"};

  (void)state;
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    uint64_t v = 12345;

    print_message("size %s\n", good[i].s);
    assert_int_equal(zg_parse_size(good[i].s, &v), 0);
    assert_true(v == good[i].v);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint64_t v = 0;

    print_message("bad size '%s'\n", bad[i]);
    assert_int_equal(zg_parse_size(bad[i], &v), ZG_ECONFIG);
  }
}

/* The comma-separated lists of [etcd] endpoints (and --etcd). */
static void test_list_next(void **state) {
  const char *list = " a , bb,c , ", *item;
  const char *items[] = {"a", "bb", "c", ""};
  size_t len, n = 0;
  (void)state;
  while (zg_config_list_next(&list, &item, &len)) {
    assert_true(n < 4);
    assert_int_equal(len, strlen(items[n]));
    assert_memory_equal(item, items[n], len);
    n++;
  }
  assert_int_equal(n, 4);
  assert_null(list);
  list = "x,";
  assert_true(zg_config_list_next(&list, &item, &len));
  assert_int_equal(len, 1);
  assert_false(zg_config_list_next(&list, &item, &len)); /* final comma */
  list = "";
  assert_false(zg_config_list_next(&list, &item, &len));
  assert_true(zg_config_valid_etcd_endpoints("http://a:1, https://[::1]:2"));
  assert_false(zg_config_valid_etcd_endpoints("http://a:1, "));
  assert_false(zg_config_valid_etcd_endpoints(""));
}

static void test_parse_bool(void **state) {
  static const struct {
    const char *s;
    bool v;
  } good[] = {{"yes", true}, {"no", false}, {"true", true}, {"false", false}};
  static const char *const bad[] = {"", "maybe", "yess", "2"};

  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    bool v = !good[i].v;

    print_message("bool %s\n", good[i].s);
    assert_int_equal(zg_parse_bool(good[i].s, &v), 0);
    assert_int_equal(v, good[i].v);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    bool v;

    print_message("bad bool '%s'\n", bad[i]);
    assert_int_equal(zg_parse_bool(bad[i], &v), ZG_ECONFIG);
  }
}

static void test_parse_listen(void **state) {
  zg_listen_addr_t l;
  static const char *const bad[] = {
      "127.0.0.1:99999",
      "nohost",
      "127.0.0.1:0",
      "127.0.0.1:",
      ":8080",
      "[::1:8080",
      "[::1]8080",
      "127.0.0.1:80x",
      "127.0.0.1:-1",
      "*:",
      "",
      "[::1]:65536",
  };

  memset(&l, 0xa5, sizeof(l));
  assert_int_equal(zg_parse_listen("127.0.0.1:8080", &l), 0);
  assert_v4(&l, "127.0.0.1", 8080);
  assert_string_equal(l.text, "127.0.0.1:8080");

  memset(&l, 0xa5, sizeof(l));
  assert_int_equal(zg_parse_listen("[::1]:8080", &l), 0);
  assert_v6(&l, "::1", 8080);
  assert_string_equal(l.text, "[::1]:8080");

  memset(&l, 0xa5, sizeof(l));
  assert_int_equal(zg_parse_listen("[::]:8080", &l), 0);
  assert_v6(&l, "::", 8080);

  memset(&l, 0xa5, sizeof(l));
  assert_int_equal(zg_parse_listen("0.0.0.0:1", &l), 0);
  assert_v4(&l, "0.0.0.0", 1);

  memset(&l, 0xa5, sizeof(l));
  assert_int_equal(zg_parse_listen("127.0.0.1:65535", &l), 0);
  assert_v4(&l, "127.0.0.1", 65535);

  /* "*" is the any address, of either family. */
  memset(&l, 0xa5, sizeof(l));
  assert_int_equal(zg_parse_listen("*:8080", &l), 0);
  assert_string_equal(l.text, "*:8080");
  if (l.ss.ss_family == AF_INET)
    assert_v4(&l, "0.0.0.0", 8080);
  else
    assert_v6(&l, "::", 8080);

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    print_message("bad listen '%s'\n", bad[i]);
    assert_int_equal(zg_parse_listen(bad[i], &l), ZG_ECONFIG);
  }
}

/* tls-passthrough: services share an address, told apart by sni; one
 * without sni is the address's default. */
static void test_tls_passthrough(void **state) {
  static const char text[] = "[service:a]\n"
                             "protocol = tls-passthrough\n"
                             "listen = 127.0.0.1:8443\n"
                             "sni = A.Example.COM\n"
                             "instances = h:1\n"
                             "[service:b]\n"
                             "protocol = tls-passthrough\n"
                             "listen = 127.0.0.1:8443\n"
                             "sni = *.b.example.com\n"
                             "instances = h:2\n"
                             "[service:c]\n"
                             "protocol = tls-passthrough\n"
                             "listen = 127.0.0.1:8443\n"
                             "instances = h:3\n"
                             "[service:d]\n"
                             "protocol = tls-passthrough\n"
                             "listen = 127.0.0.1:9443\n"
                             "sni = a.example.com\n"
                             "instances = h:4\n";
  zg_config_t *cfg = load_ok(text), *copy_cfg;
  zg_service_conf_t copy;
  (void)state;
  assert_int_equal(service(cfg, "a")->protocol, ZG_PROTO_TLS_PASSTHROUGH);
  assert_string_equal(service(cfg, "a")->sni, "a.example.com");
  assert_string_equal(service(cfg, "b")->sni, "*.b.example.com");
  assert_null(service(cfg, "c")->sni);
  assert_null(service(cfg, "c")->host);
  assert_string_equal(zg_protocol_name(service(cfg, "c")->protocol),
                      "tls-passthrough");
  /* copied and compared with its sni */
  assert_int_equal(zg_service_conf_copy(&copy, service(cfg, "b")), 0);
  assert_string_equal(copy.sni, "*.b.example.com");
  assert_true(zg_service_conf_equal(&copy, service(cfg, "b")));
  free(copy.sni);
  copy.sni = strdup("*.c.example.com");
  assert_false(zg_service_conf_equal(&copy, service(cfg, "b")));
  zg_service_conf_clear(&copy);
  copy_cfg = cfg;
  zg_config_free(copy_cfg);
}

static void test_tls_passthrough_errors(void **state) {
  (void)state;
  /* the same sni twice on one address */
  expect_one_error("[service:a]\n"
                   "protocol = tls-passthrough\n"
                   "listen = 127.0.0.1:8443\n"
                   "sni = a.example.com\n"
                   "instances = h:1\n"
                   "[service:b] ; second\n"
                   "protocol = tls-passthrough\n"
                   "listen = 127.0.0.1:8443\n"
                   "sni = A.example.com\n"
                   "instances = h:2\n",
                   "; second");
  /* two defaults on one address */
  expect_one_error("[service:a]\n"
                   "protocol = tls-passthrough\n"
                   "listen = 127.0.0.1:8443\n"
                   "instances = h:1\n"
                   "[service:b] ; second\n"
                   "protocol = tls-passthrough\n"
                   "listen = 127.0.0.1:8443\n"
                   "instances = h:2\n",
                   "; second");
  /* the same sni on two addresses is fine; sharing with tcp or http is
   * not */
  expect_one_error("[service:a]\n"
                   "protocol = tls-passthrough\n"
                   "listen = 127.0.0.1:8443\n"
                   "sni = a.example.com\n"
                   "instances = h:1\n"
                   "[service:b]\n"
                   "protocol = tcp\n"
                   "instances = h:2\n"
                   "listen = 127.0.0.1:8443 ; tcp here\n",
                   "; tcp here");
  expect_one_error("[service:a]\n"
                   "protocol = http\n"
                   "listen = 127.0.0.1:8443\n"
                   "instances = h:1\n"
                   "[service:b]\n"
                   "protocol = tls-passthrough\n"
                   "instances = h:2\n"
                   "listen = 127.0.0.1:8443 ; tls here\n",
                   "; tls here");
  expect_one_error("[zookeeper]\n"
                   "hosts = 127.0.0.1:2181\n"
                   "[service:a]\n"
                   "protocol = tls-passthrough\n"
                   "listen = 127.0.0.1:8443\n"
                   "instances = h:1\n"
                   "[discover:all]\n"
                   "zk_root = /services\n"
                   "listen = 127.0.0.1:8443 ; discover here\n",
                   "; discover here");
  /* sni on other protocols, whichever key comes first */
  expect_one_error("[service:a]\n"
                   "listen = 127.0.0.1:8443\n"
                   "sni = a.example.com\n"
                   "instances = h:1\n",
                   "sni =");
  expect_one_error("[service:a]\n"
                   "sni = a.example.com\n"
                   "protocol = http\n"
                   "listen = 127.0.0.1:8443\n"
                   "instances = h:1\n",
                   "sni =");
  /* http keys on tls-passthrough */
  expect_one_error("[service:a]\n"
                   "protocol = tls-passthrough\n"
                   "listen = 127.0.0.1:8443\n"
                   "host = a.example.com\n"
                   "instances = h:1\n",
                   "host =");
}

static void test_bad_sni(void **state) {
  static const char *const bad[] = {
      "",       "*",           "*.",     "a.*.example.com", "a b.com",
      "a/b",    "a.com:443",   "a.com.", "*example.com",    "a..com",
      ".a.com", "\xc3\xa9.com"};
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[256];
    snprintf(text, sizeof(text),
             "[service:s]\n"
             "protocol = tls-passthrough\n"
             "instances = h:1\n"
             "listen = 127.0.0.1:8443\n"
             "sni = %s\n",
             bad[i]);
    expect_one_error(text, "sni =");
  }
}

/* ---- TLS keys ----------------------------------------------------------
 * Certificates and keys made here (P-256, self-signed) into temporary
 * files: two pairs, so that a key can be given with the wrong
 * certificate. */

static char tls_dir[64];
static char cert1[128], key1[128], cert2[128], key2[128];

static void write_pair(const char *crt_path, const char *key_path) {
  EVP_PKEY *pk = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  FILE *f;
  assert_non_null(pk);
  assert_non_null(x);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, pk);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)"unit.example.com", -1, -1,
                             0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
  assert_non_null(f = fopen(crt_path, "w"));
  assert_true(PEM_write_X509(f, x));
  fclose(f);
  assert_non_null(f = fopen(key_path, "w"));
  assert_true(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL));
  fclose(f);
  X509_free(x);
  EVP_PKEY_free(pk);
}

static int tls_setup(void **state) {
  (void)state;
  snprintf(tls_dir, sizeof(tls_dir), "/tmp/zkgate-unit-XXXXXX");
  if (!mkdtemp(tls_dir))
    return -1;
  snprintf(cert1, sizeof(cert1), "%s/1.crt", tls_dir);
  snprintf(key1, sizeof(key1), "%s/1.key", tls_dir);
  snprintf(cert2, sizeof(cert2), "%s/2.crt", tls_dir);
  snprintf(key2, sizeof(key2), "%s/2.key", tls_dir);
  write_pair(cert1, key1);
  write_pair(cert2, key2);
  return 0;
}

static int tls_teardown(void **state) {
  (void)state;
  unlink(cert1);
  unlink(key1);
  unlink(cert2);
  unlink(key2);
  rmdir(tls_dir);
  return 0;
}

static void test_tls_keys(void **state) {
  char text[2048];
  zg_config_t *cfg;
  const zg_service_conf_t *a, *b, *t;
  zg_service_conf_t copy;
  (void)state;
  snprintf(text, sizeof(text),
           "[service:a]\n"
           "protocol = http\n"
           "listen = 127.0.0.1:8443\n"
           "host = a.example.com\n"
           "instances = h:1\n"
           "tls_cert = %s\n"
           "tls_key = %s\n"
           "tls_client_ca = %s\n"
           "tls_ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n"
           "[service:b]\n"
           "protocol = http\n"
           "listen = 127.0.0.1:8443\n"
           "instances = h:1\n"
           "tls_cert = %s\n"
           "tls_key = %s\n"
           "tls_client_ca = %s\n"
           "tls_verify_client = optional\n"
           "tls_ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n"
           "[service:t]\n"
           "listen = 127.0.0.1:9443\n"
           "instances = h:1\n"
           "tls_cert = %s\n"
           "tls_key = %s\n"
           "tls_ciphersuites = TLS_AES_256_GCM_SHA384\n"
           "[service:plain]\n"
           "protocol = http\n"
           "listen = 127.0.0.1:8080\n"
           "instances = h:1\n",
           cert1, key1, cert2, cert2, key2, cert1, cert1, key1);
  cfg = load_ok(text);
  a = service(cfg, "a");
  b = service(cfg, "b");
  t = service(cfg, "t");
  assert_string_equal(a->tls_cert, cert1);
  assert_string_equal(a->tls_key, key1);
  assert_string_equal(a->tls_client_ca, cert2);
  /* a CA without tls_verify_client: required */
  assert_int_equal(a->tls_verify, ZG_TLS_VERIFY_REQUIRED);
  assert_int_equal(b->tls_verify, ZG_TLS_VERIFY_OPTIONAL);
  assert_string_equal(b->tls_ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256");
  assert_null(t->tls_client_ca);
  assert_int_equal(t->tls_verify, ZG_TLS_VERIFY_NONE);
  assert_null(t->tls_ciphers);
  assert_string_equal(t->tls_ciphersuites, "TLS_AES_256_GCM_SHA384");
  assert_null(service(cfg, "plain")->tls_cert);
  /* copies carry the keys; a change of any makes another service */
  assert_int_equal(zg_service_conf_copy(&copy, b), 0);
  assert_true(zg_service_conf_equal(&copy, b));
  copy.tls_verify = ZG_TLS_VERIFY_REQUIRED;
  assert_false(zg_service_conf_equal(&copy, b));
  copy.tls_verify = ZG_TLS_VERIFY_OPTIONAL;
  free(copy.tls_key);
  copy.tls_key = strdup(key1);
  assert_false(zg_service_conf_equal(&copy, b));
  zg_service_conf_clear(&copy);
  zg_config_free(cfg);
}

/* One service on `listen` with `keys` (lines of TLS keys) must give one
 * error, on the line that contains `marker`. */
static void tls_error(const char *protocol, const char *keys,
                      const char *marker) {
  char text[2048];
  snprintf(text, sizeof(text),
           "[service:a]\n"
           "protocol = %s\n"
           "listen = 127.0.0.1:8443\n"
           "instances = h:1\n"
           "%s",
           protocol, keys);
  expect_one_error(text, marker);
}

static void test_tls_errors(void **state) {
  char keys[1024];
  (void)state;
  /* one of a pair */
  snprintf(keys, sizeof(keys), "tls_cert = %s\n", cert1);
  tls_error("http", keys, "tls_cert");
  snprintf(keys, sizeof(keys), "tls_key = %s\n", key1);
  tls_error("tcp", keys, "tls_key");
  /* client certificate keys without a certificate of our own */
  snprintf(keys, sizeof(keys), "tls_client_ca = %s\n", cert1);
  tls_error("tcp", keys, "tls_client_ca");
  /* tls_verify_client without a CA, or with a bad value */
  snprintf(keys, sizeof(keys),
           "tls_cert = %s\ntls_key = %s\ntls_verify_client = optional\n", cert1,
           key1);
  tls_error("http", keys, "tls_verify_client");
  snprintf(keys, sizeof(keys),
           "tls_cert = %s\ntls_key = %s\ntls_client_ca = %s\n"
           "tls_verify_client = sometimes\n",
           cert1, key1, cert2);
  tls_error("http", keys, "tls_verify_client");
  /* files: missing, not a certificate, a key for another certificate */
  snprintf(keys, sizeof(keys), "tls_cert = %s/none.crt\ntls_key = %s\n",
           tls_dir, key1);
  tls_error("http", keys, "tls_cert");
  snprintf(keys, sizeof(keys), "tls_cert = %s\ntls_key = %s\n", key1, key1);
  tls_error("http", keys, "tls_cert");
  snprintf(keys, sizeof(keys), "tls_cert = %s\ntls_key = %s\n", cert1, key2);
  tls_error("tcp", keys, "tls_key");
  snprintf(keys, sizeof(keys), "tls_cert = %s\ntls_key = %s/none.key\n", cert1,
           tls_dir);
  tls_error("tcp", keys, "tls_key");
  snprintf(keys, sizeof(keys),
           "tls_cert = %s\ntls_key = %s\ntls_client_ca = %s/none.crt\n", cert1,
           key1, tls_dir);
  tls_error("http", keys, "tls_client_ca");
  /* cipher strings */
  snprintf(keys, sizeof(keys),
           "tls_cert = %s\ntls_key = %s\ntls_ciphers = NOPE:ALSO-NOT\n", cert1,
           key1);
  tls_error("http", keys, "tls_ciphers");
  snprintf(keys, sizeof(keys),
           "tls_cert = %s\ntls_key = %s\ntls_ciphersuites = TLS_NOPE\n", cert1,
           key1);
  tls_error("tcp", keys, "tls_ciphersuites");
  /* an empty value */
  snprintf(keys, sizeof(keys), "tls_cert =\ntls_key = %s\n", key1);
  tls_error("tcp", keys, "tls_cert");
  /* tls-passthrough does not terminate */
  snprintf(keys, sizeof(keys),
           "sni = a.example.com\ntls_cert = %s\n"
           "tls_key = %s\n",
           cert1, key1);
  tls_error("tls-passthrough", keys, "tls_cert");
}

/* upstream_* keys: TLS to instances. Defaults (auto, system store,
 * verify), every value, https:// static instances, copies and equality. */
static void test_upstream_keys(void **state) {
  char text[2048];
  zg_config_t *cfg;
  const zg_service_conf_t *a, *d, *o;
  zg_service_conf_t copy;
  (void)state;
  snprintf(
      text, sizeof(text),
      "[service:a]\n"
      "protocol = http\n"
      "listen = 127.0.0.1:8080\n"
      "instances = https://10.0.0.1:8443, http://10.0.0.2:80, 10.0.0.3:81\n"
      "upstream_tls = auto\n"
      "upstream_ca = %s\n"
      "upstream_sni = Backend.Internal\n"
      "upstream_cert = %s\n"
      "upstream_key = %s\n"
      "[service:d]\n"
      "listen = 127.0.0.1:9000\n"
      "instances = h:1\n"
      "upstream_tls = on\n"
      "upstream_verify = no\n"
      "[service:o]\n"
      "listen = 127.0.0.1:9001\n"
      "instances = HTTPS://h:2\n"
      "upstream_tls = off\n"
      "[service:plain]\n"
      "listen = 127.0.0.1:9002\n"
      "instances = h:3\n",
      cert1, cert2, key2);
  cfg = load_ok(text);
  a = service(cfg, "a");
  d = service(cfg, "d");
  o = service(cfg, "o");
  assert_int_equal(a->upstream_tls, ZG_UPSTREAM_TLS_AUTO);
  assert_string_equal(a->upstream_ca, cert1);
  assert_false(a->upstream_noverify);
  assert_string_equal(a->upstream_sni, "backend.internal");
  assert_string_equal(a->upstream_cert, cert2);
  assert_string_equal(a->upstream_key, key2);
  assert_int_equal(a->n_instances, 3);
  assert_true(a->instances[0].tls);
  assert_int_equal(a->instances[0].port, 8443);
  assert_string_equal(a->instances[0].host, "10.0.0.1");
  assert_false(a->instances[1].tls);
  assert_int_equal(a->instances[1].port, 80);
  assert_false(a->instances[2].tls);
  assert_int_equal(d->upstream_tls, ZG_UPSTREAM_TLS_ON);
  assert_true(d->upstream_noverify);
  assert_null(d->upstream_ca);
  assert_int_equal(o->upstream_tls, ZG_UPSTREAM_TLS_OFF);
  assert_true(o->instances[0].tls);
  /* defaults */
  o = service(cfg, "plain");
  assert_int_equal(o->upstream_tls, ZG_UPSTREAM_TLS_AUTO);
  assert_null(o->upstream_ca);
  assert_null(o->upstream_sni);
  assert_false(o->upstream_noverify);
  /* copies carry the keys; a change of any makes another service */
  assert_int_equal(zg_service_conf_copy(&copy, a), 0);
  assert_true(zg_service_conf_equal(&copy, a));
  assert_string_equal(copy.upstream_sni, "backend.internal");
  copy.upstream_tls = ZG_UPSTREAM_TLS_ON;
  assert_false(zg_service_conf_equal(&copy, a));
  copy.upstream_tls = ZG_UPSTREAM_TLS_AUTO;
  copy.upstream_noverify = true;
  assert_false(zg_service_conf_equal(&copy, a));
  copy.upstream_noverify = false;
  free(copy.upstream_sni);
  copy.upstream_sni = NULL;
  assert_false(zg_service_conf_equal(&copy, a));
  copy.upstream_sni = strdup("backend.internal");
  assert_true(zg_service_conf_equal(&copy, a));
  copy.instances[0].tls = false;
  assert_false(zg_service_conf_equal(&copy, a));
  zg_service_conf_clear(&copy);
  zg_config_free(cfg);
}

/* The configuration module reads no file a section names: without the
 * checks a missing certificate, key or CA file is the caller's to find;
 * with net's checks handed in, each is an error at its own line. */
static void test_file_checks_are_handed_in(void **state) {
  char text[2048];
  zg_config_t *cfg = NULL;
  zg_config_errors_t errs = {0};
  (void)state;
  snprintf(text, sizeof(text),
           "[service:a]\n"
           "protocol = http\n"
           "listen = 127.0.0.1:8443\n"
           "instances = https://h:1\n"
           "tls_cert = %s/none.crt\n"
           "tls_key = %s\n"
           "upstream_ca = %s/none-ca.crt\n",
           tls_dir, key1, tls_dir);
  assert_int_equal(zg_config_load_string(text, NAME, NULL, &cfg, &errs), 0);
  assert_int_equal(errs.n, 0);
  assert_string_equal(cfg->services[0].upstream_ca + strlen(tls_dir),
                      "/none-ca.crt");
  zg_config_free(cfg);
  zg_config_errors_free(&errs);
  cfg = NULL;
  assert_int_equal(zg_config_load_string(text, NAME, CHECKS, &cfg, &errs),
                   ZG_ECONFIG);
  assert_null(cfg);
  assert_int_equal(errs.n, 2);
  assert_true(find_error_at(&errs, 5) >= 0); /* tls_cert */
  assert_true(find_error_at(&errs, 7) >= 0); /* upstream_ca */
  zg_config_errors_free(&errs);
}

/* [etcd] ca, cert and key are loaded as they will be, errors at their
 * lines, named as the [etcd] keys. */
static void test_etcd_tls_files(void **state) {
  char text[2048];
  zg_config_t *cfg;
  zg_config_errors_t errs;
  int line = 3;
  const char *svc = "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n";
  (void)state;
  snprintf(text, sizeof(text),
           "[etcd]\nendpoints = https://127.0.0.1:2379\nca = %s\ncert = %s\n"
           "key = %s\n%s",
           cert1, cert1, key1, svc);
  cfg = load_ok(text);
  assert_string_equal(cfg->etcd.cert, cert1);
  zg_config_free(cfg);
  snprintf(text, sizeof(text),
           "[etcd]\nendpoints = https://127.0.0.1:2379\nca = %s/none.crt\n%s",
           tls_dir, svc);
  errs = load_bad(text, &line, 1);
  assert_non_null(strstr(errs.lines[0], "test.ini:3: ca "));
  zg_config_errors_free(&errs);
  snprintf(text, sizeof(text),
           "[etcd]\nendpoints = https://127.0.0.1:2379\ncert = %s\n"
           "key = %s\n%s",
           cert1, key2, svc);
  line = 4;
  errs = load_bad(text, &line, 1);
  zg_config_errors_free(&errs);
}

/* upstream_protocol per HTTP service (auto by default), and the static
 * instances' h2 schemes that auto reads; refused on tcp services and for
 * values it does not know. */
static void test_upstream_protocol(void **state) {
  zg_config_t *cfg;
  const zg_service_conf_t *a, *b, *c;
  zg_service_conf_t copy;
  (void)state;
  cfg = load_ok("[service:a]\n"
                "protocol = http\n"
                "listen = 127.0.0.1:8080\n"
                "path_prefix = /a/\n"
                "instances = grpc://10.0.0.1:50051, h2c://10.0.0.2:81, "
                "GRPCS://10.0.0.3:443, h2s://h:2, 10.0.0.4:80\n"
                "[service:b]\n"
                "protocol = http\n"
                "listen = 127.0.0.1:8080\n"
                "path_prefix = /b/\n"
                "instances = 10.0.0.5:80\n"
                "upstream_protocol = h2\n"
                "[service:c]\n"
                "protocol = http\n"
                "listen = 127.0.0.1:8080\n"
                "instances = h2://10.0.0.6:80\n"
                "upstream_protocol = http1\n");
  a = service(cfg, "a");
  b = service(cfg, "b");
  c = service(cfg, "c");
  assert_int_equal(a->upstream_protocol, ZG_UPSTREAM_PROTO_AUTO);
  assert_int_equal(b->upstream_protocol, ZG_UPSTREAM_PROTO_H2);
  assert_int_equal(c->upstream_protocol, ZG_UPSTREAM_PROTO_HTTP1);
  assert_int_equal(a->n_instances, 5);
  assert_int_equal(a->instances[0].proto, ZG_INST_PROTO_H2);
  assert_false(a->instances[0].tls);
  assert_int_equal(a->instances[0].port, 50051);
  assert_int_equal(a->instances[1].proto, ZG_INST_PROTO_H2);
  assert_false(a->instances[1].tls);
  assert_int_equal(a->instances[2].proto, ZG_INST_PROTO_H2);
  assert_true(a->instances[2].tls);
  assert_int_equal(a->instances[3].proto, ZG_INST_PROTO_H2);
  assert_true(a->instances[3].tls);
  assert_string_equal(a->instances[3].host, "h");
  assert_int_equal(a->instances[4].proto, ZG_INST_PROTO_ANY);
  assert_int_equal(c->instances[0].proto, ZG_INST_PROTO_H2);
  /* under http1 the registration is overruled, under h2 it is not needed */
  assert_int_equal(zg_instance_use_h2(&c->instances[0], c->upstream_protocol),
                   0);
  assert_int_equal(zg_instance_use_h2(&b->instances[0], b->upstream_protocol),
                   1);
  assert_int_equal(zg_instance_use_h2(&a->instances[0], a->upstream_protocol),
                   1);
  assert_int_equal(zg_instance_use_h2(&a->instances[4], a->upstream_protocol),
                   -1);
  /* a change of the key, or of an instance's protocol, is another service */
  assert_int_equal(zg_service_conf_copy(&copy, a), 0);
  assert_true(zg_service_conf_equal(&copy, a));
  copy.upstream_protocol = ZG_UPSTREAM_PROTO_H2;
  assert_false(zg_service_conf_equal(&copy, a));
  copy.upstream_protocol = ZG_UPSTREAM_PROTO_AUTO;
  copy.instances[4].proto = ZG_INST_PROTO_H2;
  assert_false(zg_service_conf_equal(&copy, a));
  zg_service_conf_clear(&copy);
  zg_config_free(cfg);

  expect_one_error("[service:a]\n"
                   "protocol = http\n"
                   "listen = 127.0.0.1:8080\n"
                   "instances = h:1\n"
                   "upstream_protocol = http2\n",
                   "upstream_protocol");
  expect_one_error("[service:a]\n"
                   "listen = 127.0.0.1:8080\n"
                   "instances = h:1\n"
                   "upstream_protocol = h2\n",
                   "upstream_protocol");
  expect_one_error("[service:a]\n"
                   "protocol = http\n"
                   "listen = 127.0.0.1:8080\n"
                   "instances = ftp://h:1\n",
                   "instances");
}

static void test_upstream_errors(void **state) {
  char keys[1024];
  (void)state;
  tls_error("http", "upstream_tls = yes\n", "upstream_tls");
  tls_error("tcp", "upstream_verify = maybe\n", "upstream_verify");
  tls_error("http", "upstream_sni = *.example.com\n", "upstream_sni");
  tls_error("http", "upstream_sni = a b\n", "upstream_sni");
  tls_error("http", "upstream_ca =\n", "upstream_ca");
  /* forced off: the others would do nothing */
  tls_error("http", "upstream_tls = off\nupstream_sni = x.example.com\n",
            "upstream_sni");
  /* tls-passthrough forwards TLS untouched */
  snprintf(keys, sizeof(keys), "upstream_ca = %s\n", cert1);
  tls_error("tls-passthrough", keys, "upstream_ca");
  /* files: unreadable, not a certificate, a client certificate alone, a key
   * that is not the certificate's */
  snprintf(keys, sizeof(keys), "upstream_ca = %s/none.crt\n", tls_dir);
  tls_error("http", keys, "upstream_ca");
  snprintf(keys, sizeof(keys), "upstream_ca = %s\n", key1);
  tls_error("tcp", keys, "upstream_ca");
  snprintf(keys, sizeof(keys), "upstream_cert = %s\n", cert1);
  tls_error("http", keys, "upstream_cert");
  snprintf(keys, sizeof(keys), "upstream_cert = %s\nupstream_key = %s\n", cert1,
           key2);
  tls_error("http", keys, "upstream_key");
  snprintf(keys, sizeof(keys),
           "upstream_cert = %s/none.crt\nupstream_key = %s\n", tls_dir, key1);
  tls_error("http", keys, "upstream_cert");
  /* a static instance with another scheme */
  expect_one_error("[service:a]\nlisten = 127.0.0.1:1\n"
                   "instances = ftp://h:1\n",
                   "instances");
}

static void test_tls_shared_listen(void **state) {
  char text[2048];
  (void)state;
  /* all HTTP services of an address terminate TLS, or none */
  snprintf(text, sizeof(text),
           "[service:a]\n"
           "protocol = http\n"
           "listen = 127.0.0.1:8443\n"
           "host = a.example.com\n"
           "instances = h:1\n"
           "tls_cert = %s\n"
           "tls_key = %s\n"
           "[service:b]\n"
           "protocol = http\n"
           "host = b.example.com\n"
           "instances = h:1\n"
           "listen = 127.0.0.1:8443 ; plain here\n",
           cert1, key1);
  expect_one_error(text, "; plain here");
  /* with the same cipher strings */
  snprintf(text, sizeof(text),
           "[service:a]\n"
           "protocol = http\n"
           "listen = 127.0.0.1:8443\n"
           "host = a.example.com\n"
           "instances = h:1\n"
           "tls_cert = %s\n"
           "tls_key = %s\n"
           "[service:b]\n"
           "protocol = http\n"
           "host = b.example.com\n"
           "instances = h:1\n"
           "tls_cert = %s\n"
           "tls_key = %s\n"
           "tls_ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n"
           "listen = 127.0.0.1:8443 ; other ciphers\n",
           cert1, key1, cert2, key2);
  expect_one_error(text, "; other ciphers");
  /* one host, one handshake: paths of a host cannot ask for different
   * client certificates (the handshake is over before the path is read) */
  snprintf(text, sizeof(text),
           "[service:pub]\n"
           "protocol = http\n"
           "listen = 127.0.0.1:8443\n"
           "host = a.example.com\n"
           "path_prefix = /pub/\n"
           "instances = h:1\n"
           "tls_cert = %s\n"
           "tls_key = %s\n"
           "[service:adm] ; mTLS on the same host\n"
           "protocol = http\n"
           "listen = 127.0.0.1:8443\n"
           "host = a.example.com\n"
           "path_prefix = /adm/\n"
           "instances = h:1\n"
           "tls_cert = %s\n"
           "tls_key = %s\n"
           "tls_client_ca = %s\n",
           cert1, key1, cert1, key1, cert2);
  expect_one_error(text, "; mTLS on the same host");
  /* the same checks on both paths are fine */
  {
    zg_config_t *cfg = NULL;
    zg_config_errors_t errs;
    snprintf(text, sizeof(text),
             "[service:pub]\n"
             "protocol = http\n"
             "listen = 127.0.0.1:8443\n"
             "host = a.example.com\n"
             "path_prefix = /pub/\n"
             "instances = h:1\n"
             "tls_cert = %s\n"
             "tls_key = %s\n"
             "tls_client_ca = %s\n"
             "[service:adm]\n"
             "protocol = http\n"
             "listen = 127.0.0.1:8443\n"
             "host = a.example.com\n"
             "path_prefix = /adm/\n"
             "instances = h:1\n"
             "tls_cert = %s\n"
             "tls_key = %s\n"
             "tls_client_ca = %s\n",
             cert1, key1, cert2, cert1, key1, cert2);
    assert_int_equal(zg_config_load_string(text, "t.ini", CHECKS, &cfg, &errs),
                     0);
    zg_config_errors_free(&errs);
    zg_config_free(cfg);
  }
}

/* [etcd] and etcd_prefix: the keys read, the defaults, and a ZooKeeper and
 * an etcd service side by side in one file. */
static void test_etcd(void **state) {
  static const char text[] =
      "[zookeeper]\n"
      "hosts = 127.0.0.1:2181\n"
      "[etcd]\n"
      "endpoints = http://127.0.0.1:2379, https://[::1]:2379,http://e3:1\n"
      "dial_timeout = 500ms\n"
      "username = root\n"
      "password = s3cr:et\n"
      "state_file = /var/lib/zkgate/etcd.json\n"
      "max_stale = 1m\n"
      "[service:a]\n"
      "listen = 127.0.0.1:7000\n"
      "zk_path = /services/a\n"
      "[service:b]\n"
      "listen = 127.0.0.1:7001\n"
      "etcd_prefix = /services/b/\n";
  zg_config_t *cfg = load_ok(text);
  zg_etcd_conf_t copy;
  (void)state;
  assert_string_equal(cfg->etcd.endpoints,
                      "http://127.0.0.1:2379, https://[::1]:2379,http://e3:1");
  assert_int_equal(cfg->etcd.dial_timeout_ms, 500);
  assert_string_equal(cfg->etcd.username, "root");
  assert_string_equal(cfg->etcd.password, "s3cr:et");
  assert_null(cfg->etcd.ca);
  assert_null(cfg->etcd.cert);
  assert_string_equal(cfg->etcd.state_file, "/var/lib/zkgate/etcd.json");
  assert_int_equal(cfg->etcd.max_stale_ms, 60000);
  assert_string_equal(cfg->zk.hosts, "127.0.0.1:2181");
  assert_string_equal(service(cfg, "a")->zk_path, "/services/a");
  assert_null(service(cfg, "a")->etcd_prefix);
  assert_string_equal(service(cfg, "b")->etcd_prefix, "/services/b/");
  assert_null(service(cfg, "b")->zk_path);
  assert_string_equal(zg_service_conf_path(service(cfg, "b")), "/services/b/");
  assert_int_equal(zg_etcd_conf_copy(&copy, &cfg->etcd), 0);
  assert_true(zg_etcd_conf_equal(&copy, &cfg->etcd));
  copy.max_stale_ms++;
  assert_false(zg_etcd_conf_equal(&copy, &cfg->etcd));
  zg_etcd_conf_clear(&copy);
  zg_config_free(cfg);
}

/* Defaults, and no etcd connection when no service reads etcd. */
static void test_etcd_defaults(void **state) {
  static const char one[] = "[etcd]\n"
                            "endpoints = http://127.0.0.1:2379\n"
                            "[service:b]\n"
                            "listen = 127.0.0.1:7001\n"
                            "etcd_prefix = /b/\n";
  static const char unused[] = "[etcd]\n"
                               "endpoints = http://127.0.0.1:2379\n"
                               "[service:s]\n"
                               "listen = 127.0.0.1:7000\n"
                               "instances = 10.0.0.1:80\n";
  zg_config_t *cfg = load_ok(one);
  (void)state;
  assert_int_equal(cfg->etcd.dial_timeout_ms, 2000);
  assert_int_equal(cfg->etcd.max_stale_ms, 0);
  assert_null(cfg->etcd.username);
  assert_null(cfg->etcd.state_file);
  assert_null(cfg->zk.hosts);
  zg_config_free(cfg);
  cfg = load_ok(unused);
  assert_null(cfg->etcd.endpoints);
  zg_config_free(cfg);
}

/* [discover:NAME] etcd_root: kept with a '/' at its end; it needs [etcd]
 * and not [zookeeper]; never with zk_root. */
static void test_discover_etcd_root(void **state) {
  static const char text[] = "[etcd]\n"
                             "endpoints = http://127.0.0.1:2379\n"
                             "[discover:all]\n"
                             "etcd_root = /services\n"
                             "listen = 127.0.0.1:8080\n";
  zg_config_t *cfg = load_ok(text);
  (void)state;
  assert_string_equal(cfg->discovers[0].etcd_root, "/services/");
  assert_null(cfg->discovers[0].zk_root);
  assert_string_equal(zg_discover_conf_root(&cfg->discovers[0]), "/services/");
  assert_non_null(cfg->etcd.endpoints);
  assert_null(cfg->zk.hosts);
  zg_config_free(cfg);
  expect_one_error("[discover:all]\netcd_root = /s/ ; here\n"
                   "listen = 127.0.0.1:8080\n",
                   "; here");
  expect_one_error(
      "[zookeeper]\nhosts = h:2181\n[etcd]\nendpoints = http://h:1\n"
      "[discover:all]\nzk_root = /s\netcd_root = /s/ ; here\n"
      "listen = 127.0.0.1:8080\n",
      "; here");
  expect_one_error("[etcd]\nendpoints = http://h:1\n"
                   "[discover:all]\netcd_root = /a b/ ; here\n"
                   "listen = 127.0.0.1:8080\n",
                   "; here");
}

static void test_etcd_errors(void **state) {
  (void)state;
  /* both sources in one service */
  expect_one_error("[zookeeper]\nhosts = h:2181\n"
                   "[etcd]\nendpoints = http://h:2379\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\n"
                   "zk_path = /a\netcd_prefix = /a/ ; both\n",
                   "; both");
  /* etcd_prefix without [etcd] */
  expect_one_error("[service:s]\nlisten = 127.0.0.1:7000\n"
                   "etcd_prefix = /a/ ; here\n",
                   "; here");
  /* bad endpoints */
  expect_one_error("[etcd]\nendpoints = 127.0.0.1:2379 ; here\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
                   "; here");
  expect_one_error("[etcd]\nendpoints = http://h:2379/x ; here\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
                   "; here");
  expect_one_error("[etcd]\nendpoints = http://h:2379,,http://g:1 ; here\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
                   "; here");
  expect_one_error("[etcd]\nendpoints = http://h:70000 ; here\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
                   "; here");
  expect_one_error(
      "[etcd]\nendpoints = http://h:2379\ndial_timeout = 5 ; here\n"
      "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
      "; here");
  expect_one_error("[etcd]\nendpoints = http://h:2379\nhosts = x ; here\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
                   "; here");
  expect_one_error(
      "[etcd]\nendpoints = http://h:2379\nstate_file = rel ; here\n"
      "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
      "; here");
  expect_one_error("[etcd]\nendpoints = http://h:2379\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\n"
                   "etcd_prefix = /a b/ ; here\n",
                   "; here");
  /* keys that go together: the error is on the section header */
  expect_one_error("[etcd] ; here\nendpoints = http://h:2379\nusername = u\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
                   "; here");
  expect_one_error("[etcd] ; here\nendpoints = https://h:2379\ncert = /c\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
                   "; here");
  expect_one_error("[etcd] ; here\nendpoints = http://h:2379\nca = /c\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\netcd_prefix = /a/\n",
                   "; here");
  expect_one_error("[etcd] ; here\ndial_timeout = 1s\n"
                   "[service:s]\nlisten = 127.0.0.1:7000\ninstances = h:1\n",
                   "; here");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_config),
      cmocka_unit_test(test_etcd),
      cmocka_unit_test(test_etcd_defaults),
      cmocka_unit_test(test_etcd_errors),
      cmocka_unit_test(test_discover_etcd_root),
      cmocka_unit_test(test_tls_passthrough),
      cmocka_unit_test(test_tls_passthrough_errors),
      cmocka_unit_test(test_bad_sni),
      cmocka_unit_test_setup_teardown(test_tls_keys, tls_setup, tls_teardown),
      cmocka_unit_test_setup_teardown(test_etcd_tls_files, tls_setup,
                                      tls_teardown),
      cmocka_unit_test_setup_teardown(test_tls_errors, tls_setup, tls_teardown),
      cmocka_unit_test_setup_teardown(test_upstream_keys, tls_setup,
                                      tls_teardown),
      cmocka_unit_test_setup_teardown(test_file_checks_are_handed_in, tls_setup,
                                      tls_teardown),
      cmocka_unit_test_setup_teardown(test_upstream_errors, tls_setup,
                                      tls_teardown),
      cmocka_unit_test_setup_teardown(test_tls_shared_listen, tls_setup,
                                      tls_teardown),
      cmocka_unit_test(test_upstream_protocol),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_hosts_null_without_zk_services),
      cmocka_unit_test(test_log_levels),
      cmocka_unit_test(test_load_file),
      cmocka_unit_test(test_unknown_key),
      cmocka_unit_test(test_unknown_section),
      cmocka_unit_test(test_bad_duration),
      cmocka_unit_test(test_max_watch_bytes),
      cmocka_unit_test(test_data_sweep),
      cmocka_unit_test(test_bad_protocol),
      cmocka_unit_test(test_bad_balance),
      cmocka_unit_test(test_balance_keys),
      cmocka_unit_test(test_discover_balance_keys),
      cmocka_unit_test(test_bad_balance_keys),
      cmocka_unit_test(test_bad_log_level),
      cmocka_unit_test(test_bad_listen),
      cmocka_unit_test(test_bad_service_name),
      cmocka_unit_test(test_duplicate_listen),
      cmocka_unit_test(test_duplicate_service),
      cmocka_unit_test(test_service_without_listen),
      cmocka_unit_test(test_service_without_source),
      cmocka_unit_test(test_relative_zk_path),
      cmocka_unit_test(test_zk_path_without_hosts),
      cmocka_unit_test(test_discover),
      cmocka_unit_test(test_path_prefix_dot_segments),
      cmocka_unit_test(test_connection_caps),
      cmocka_unit_test(test_max_pipes),
      cmocka_unit_test(test_bad_discover),
      cmocka_unit_test(test_operations_keys),
      cmocka_unit_test(test_bad_static_instance),
      cmocka_unit_test(test_static_instances_v6_and_names),
      cmocka_unit_test(test_long_lines),
      cmocka_unit_test(test_several_errors),
      cmocka_unit_test(test_auth_digest),
      cmocka_unit_test(test_bad_auth),
      cmocka_unit_test(test_hosts_chroot),
      cmocka_unit_test(test_parse_duration),
      cmocka_unit_test(test_parse_size),
      cmocka_unit_test(test_env_substitution),
      cmocka_unit_test(test_admin_auth),
      cmocka_unit_test(test_list_next),
      cmocka_unit_test(test_parse_bool),
      cmocka_unit_test(test_parse_listen),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
