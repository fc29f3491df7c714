/* The server name of a TLS ClientHello, read without terminating TLS.
 *
 * Stateless: each call parses everything read so far from its first byte,
 * in two passes. The first walks the record headers (RFC 8446 §5.1, RFC
 * 5246 §6.2.1): every record before the end of the ClientHello must be a
 * handshake record (handshake messages are not interleaved with other
 * record types) of 1..16384 bytes, and the first handshake byte must be
 * client_hello; this decides NOT_TLS at the first byte that proves it (a
 * plain-text "GET /" after one byte) and NEED_MORE without copying. The
 * second pass, once the whole message is in, reads the ClientHello
 * (RFC 8446 §4.1.2; the TLS 1.2 form of RFC 5246 §7.4.1.2, where the
 * extensions may be absent) and its server_name extension (RFC 6066 §3),
 * checking every length against what encloses it. */
#include "core/tls_hello.h"

#include <stdbool.h>
#include <string.h>

#define REC_HDR 5
#define REC_MAX 16384
#define CT_HANDSHAKE 22
#define HS_CLIENT_HELLO 1
#define EXT_SERVER_NAME 0
#define NAME_HOST 0

/* A bounded view of bytes; every read checks what is left. */
typedef struct {
  const uint8_t *p;
  size_t n;
} cur_t;

static bool get_u8(cur_t *c, unsigned *v) {
  if (c->n < 1)
    return false;
  *v = c->p[0];
  c->p++;
  c->n--;
  return true;
}

static bool get_u16(cur_t *c, unsigned *v) {
  if (c->n < 2)
    return false;
  *v = (unsigned)c->p[0] << 8 | c->p[1];
  c->p += 2;
  c->n -= 2;
  return true;
}

/* The next `len` bytes as a view of their own. */
static bool get_sub(cur_t *c, size_t len, cur_t *sub) {
  if (c->n < len)
    return false;
  sub->p = c->p;
  sub->n = len;
  c->p += len;
  c->n -= len;
  return true;
}

static zg_tls_hello_result_t not_tls(zg_tls_hello_t *out, const char *why) {
  out->why = why;
  return ZG_TLS_HELLO_NOT_TLS;
}

/* A host name as RFC 6066 §3 wants it: a DNS name, ASCII, no trailing dot
 * (one is forgiven), no IP literal checks (an IP simply names no
 * service). Letters, digits, '-' and '_' in labels of 1..63 bytes. */
static bool take_name(zg_tls_hello_t *out, const uint8_t *p, size_t n) {
  size_t label = 0;
  if (n > 0 && p[n - 1] == '.')
    n--;
  if (n == 0 || n > ZG_TLS_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = p[i];
    if (ch == '.') {
      if (label == 0)
        return false;
      label = 0;
    } else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
               ch == '-' || ch == '_') {
      label++;
    } else if (ch >= 'A' && ch <= 'Z') {
      ch = (uint8_t)(ch - 'A' + 'a');
      label++;
    } else {
      return false;
    }
    if (label > 63)
      return false;
    out->name[i] = (char)ch;
  }
  if (label == 0) /* "a.example.com.." */
    return false;
  out->name[n] = '\0';
  out->name_len = n;
  return true;
}

/* The server_name extension's data: a ServerNameList. */
static zg_tls_hello_result_t read_sni(cur_t ext, zg_tls_hello_t *out) {
  cur_t list;
  unsigned list_len;
  bool found = false;
  if (!get_u16(&ext, &list_len) || list_len != ext.n || list_len == 0)
    return not_tls(out, "malformed server_name extension");
  list = ext;
  while (list.n > 0) {
    unsigned type, len;
    cur_t name;
    /* Every name type defined so far has this shape; OpenSSL and others
     * read unknown ones the same way. */
    if (!get_u8(&list, &type) || !get_u16(&list, &len) ||
        !get_sub(&list, len, &name))
      return not_tls(out, "malformed server_name extension");
    if (type != NAME_HOST)
      continue;
    /* "MUST NOT contain more than one name of the same name_type" */
    if (found)
      return not_tls(out, "more than one host_name in server_name");
    if (!take_name(out, name.p, name.n))
      return not_tls(out, "server_name is not a valid host name");
    found = true;
  }
  return found ? ZG_TLS_HELLO_SNI : ZG_TLS_HELLO_NO_SNI;
}

/* The ClientHello body (after the 4-byte handshake header). */
static zg_tls_hello_result_t read_hello(cur_t c, zg_tls_hello_t *out) {
  unsigned version, len;
  cur_t skip, exts;
  zg_tls_hello_result_t rc = ZG_TLS_HELLO_NO_SNI;
  bool seen_sni = false;

  if (!get_u16(&c, &version) || (version >> 8) != 3)
    return not_tls(out, "ClientHello version is not TLS");
  if (!get_sub(&c, 32, &skip)) /* random */
    return not_tls(out, "ClientHello truncated");
  if (!get_u8(&c, &len) || len > 32 || !get_sub(&c, len, &skip))
    return not_tls(out, "malformed ClientHello session id");
  if (!get_u16(&c, &len) || len < 2 || len % 2 != 0 || !get_sub(&c, len, &skip))
    return not_tls(out, "malformed ClientHello cipher suites");
  if (!get_u8(&c, &len) || len < 1 || !get_sub(&c, len, &skip))
    return not_tls(out, "malformed ClientHello compression methods");
  if (c.n == 0)
    return ZG_TLS_HELLO_NO_SNI; /* no extensions (TLS 1.2 allows it) */
  if (!get_u16(&c, &len) || len != c.n)
    return not_tls(out, "malformed ClientHello extensions length");
  exts = c;
  while (exts.n > 0) {
    unsigned type;
    cur_t ext;
    if (!get_u16(&exts, &type) || !get_u16(&exts, &len) ||
        !get_sub(&exts, len, &ext))
      return not_tls(out, "malformed ClientHello extension");
    if (type != EXT_SERVER_NAME)
      continue;
    /* RFC 8446 §4.2: no extension type twice. */
    if (seen_sni)
      return not_tls(out, "two server_name extensions");
    seen_sni = true;
    rc = read_sni(ext, out);
    if (rc == ZG_TLS_HELLO_NOT_TLS)
      return rc;
  }
  return rc;
}

static zg_tls_hello_result_t parse(const uint8_t *buf, size_t len,
                                   zg_tls_hello_t *out) {
  uint8_t hdr[4];
  size_t have_hdr = 0, msg_len = 0, got = 0, pos = 0;
  bool complete = false;

  out->name[0] = '\0';
  out->name_len = 0;
  out->why = NULL;

  /* Only the first ZG_TLS_HELLO_MAX bytes count, so that a decision
   * never changes when more bytes arrive. */
  if (len > ZG_TLS_HELLO_MAX)
    len = ZG_TLS_HELLO_MAX;

  /* Pass 1: record headers and the handshake header. */
  while (pos < len && !complete) {
    size_t left = len - pos, rlen, flen;
    const uint8_t *r = buf + pos;
    /* A first byte with the high bit set is an SSLv2-style header. */
    if (r[0] != CT_HANDSHAKE)
      return not_tls(out, pos == 0 && (r[0] & 0x80)
                              ? "SSLv2-compatible ClientHello"
                          : pos == 0 ? "not a TLS handshake"
                                     : "ClientHello interleaved with other "
                                       "records");
    if (left >= 2 && r[1] != 3)
      return not_tls(out, "not a TLS record version");
    if (left >= 3 && r[2] > 4)
      return not_tls(out, "not a TLS record version");
    if (left < REC_HDR)
      break;
    rlen = (size_t)r[3] << 8 | r[4];
    if (rlen == 0 || rlen > REC_MAX)
      return not_tls(out, "bad TLS record length");
    flen = left - REC_HDR < rlen ? left - REC_HDR : rlen;
    for (size_t i = 0; i < flen && have_hdr < 4; i++) {
      hdr[have_hdr++] = r[REC_HDR + i];
      if (have_hdr == 1 && hdr[0] != HS_CLIENT_HELLO)
        return not_tls(out, "first handshake message is not a ClientHello");
      if (have_hdr == 4) {
        msg_len = 4 + ((size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3]);
        if (msg_len + REC_HDR > ZG_TLS_HELLO_MAX)
          return not_tls(out, "ClientHello too large");
      }
    }
    got += flen;
    complete = have_hdr == 4 && got >= msg_len;
    pos += REC_HDR + rlen;
  }
  if (!complete)
    return len >= ZG_TLS_HELLO_MAX ? not_tls(out, "ClientHello too large")
                                   : ZG_TLS_HELLO_NEED_MORE;

  /* Pass 2: the message, in place when one record holds it. */
  if (REC_HDR + msg_len <= len && ((size_t)buf[3] << 8 | buf[4]) >= msg_len) {
    cur_t c = {buf + REC_HDR + 4, msg_len - 4};
    return read_hello(c, out);
  }
  {
    uint8_t msg[ZG_TLS_HELLO_MAX];
    size_t n = 0;
    cur_t c;
    pos = 0;
    while (n < msg_len) {
      size_t rlen = (size_t)buf[pos + 3] << 8 | buf[pos + 4];
      size_t flen = len - pos - REC_HDR < rlen ? len - pos - REC_HDR : rlen;
      if (flen > msg_len - n)
        flen = msg_len - n;
      memcpy(msg + n, buf + pos + REC_HDR, flen);
      n += flen;
      pos += REC_HDR + rlen;
    }
    c.p = msg + 4;
    c.n = msg_len - 4;
    return read_hello(c, out);
  }
}

zg_tls_hello_result_t zg_tls_hello_parse(const uint8_t *buf, size_t len,
                                         zg_tls_hello_t *out) {
  zg_tls_hello_result_t rc = parse(buf, len, out);
  if (rc != ZG_TLS_HELLO_SNI) {
    /* A name read before a later field proved the message bad. */
    out->name[0] = '\0';
    out->name_len = 0;
  }
  return rc;
}

size_t zg_tls_sni_pick(const char *const *patterns, size_t n,
                       const char *name) {
  size_t best = ZG_SNI_NONE, best_rank = 0;
  size_t name_len = name ? strlen(name) : 0;
  for (size_t i = 0; i < n; i++) {
    const char *p = patterns[i];
    size_t rank = 0; /* 0: no match; 1: default; 2 + suffix: wildcard */
    if (!p) {
      rank = 1;
    } else if (!name) {
      continue;
    } else if (p[0] == '*' && p[1] == '.') {
      size_t sl = strlen(p + 1); /* ".example.com" */
      if (name_len > sl && !memcmp(name + name_len - sl, p + 1, sl))
        rank = 2 + sl;
    } else if (!strcmp(p, name)) {
      rank = (size_t)-1; /* exact beats everything */
    }
    if (rank > best_rank) {
      best_rank = rank;
      best = i;
    }
  }
  return best;
}

zg_tls_hello_result_t zg_tls_sni_ext_parse(const uint8_t *ext, size_t len,
                                           zg_tls_hello_t *out) {
  cur_t c = {ext, len};
  out->name[0] = '\0';
  out->name_len = 0;
  out->why = NULL;
  return read_sni(c, out);
}
