/* Reading the server name (SNI) out of a TLS ClientHello without
 * terminating TLS, and choosing among sni patterns. Pure code: no loop,
 * no allocation, no OpenSSL. */
#ifndef ZKGATE_TLS_HELLO_H
#define ZKGATE_TLS_HELLO_H

#include <stddef.h>
#include <stdint.h>

/* The most bytes of a connection the parser looks at: one full record
 * (16 KiB of plaintext, RFC 8446 §5.1) and its header. A ClientHello
 * that is not complete within them is refused. */
#define ZG_TLS_HELLO_MAX (16384 + 5)
/* A DNS name is at most 253 characters without the trailing dot. */
#define ZG_TLS_NAME_MAX 253

typedef enum {
  ZG_TLS_HELLO_NEED_MORE = 0, /* complete so far: read more */
  ZG_TLS_HELLO_SNI,           /* a complete ClientHello with a host_name */
  ZG_TLS_HELLO_NO_SNI,        /* a complete ClientHello without one */
  ZG_TLS_HELLO_NOT_TLS,       /* not a TLS ClientHello, malformed, or
                                 larger than ZG_TLS_HELLO_MAX */
} zg_tls_hello_result_t;

typedef struct {
  char name[ZG_TLS_NAME_MAX + 1]; /* SNI: lowercase, no trailing dot */
  size_t name_len;
  const char *why; /* NOT_TLS: a static reason for the log */
} zg_tls_hello_t;

/* Parses the first `len` bytes a client sent (everything so far: call it
 * again from the start after each read). The ClientHello may span several
 * records, and the bytes may stop anywhere; bytes after it are ignored.
 * The SSLv2-compatible hello is NOT_TLS. */
zg_tls_hello_result_t zg_tls_hello_parse(const uint8_t *buf, size_t len,
                                         zg_tls_hello_t *out);

/* The data of a server_name extension alone (as OpenSSL's ClientHello
 * callback gives it): SNI, NO_SNI (no host_name in it) or NOT_TLS
 * (malformed), with `out` as above. */
zg_tls_hello_result_t zg_tls_sni_ext_parse(const uint8_t *ext, size_t len,
                                           zg_tls_hello_t *out);

/* No pattern chosen. */
#define ZG_SNI_NONE ((size_t)-1)

/* Chooses among `n` sni patterns the one for `name` (lowercase; NULL when
 * the client sent none). A pattern is an exact name, "*.suffix" (any name
 * ending in ".suffix", not "suffix" itself) or NULL (the default: any
 * other name, and no name). An exact name beats a wildcard, a longer
 * wildcard beats a shorter one, and the default takes what is left; on a
 * tie the first pattern. Returns the index or ZG_SNI_NONE. */
size_t zg_tls_sni_pick(const char *const *patterns, size_t n, const char *name);

#endif
