/* Termination reasons: how a request or a connection ended, as the
 * access log writes it. Pure code: a table, no state.
 *
 * Each termination is one value of zg_term_t, with the words operators
 * read in the access log (unchanged from when the reason was a string) and
 * what ended the exchange (the cause, first letter of the code). The
 * proxy that ends the exchange adds the phase it was in (second letter),
 * from its own state: the two letters read as HAProxy's termination state
 * (its `include/haproxy/stream-t.h` SF_ERR_* x SF_FINST_*), with zkgate's
 * own letters where it has other causes. README "Access log" lists them. */
#ifndef ZKGATE_TERM_H
#define ZKGATE_TERM_H

#include <stddef.h>

/* What ended the exchange: the first letter of the code. */
#define ZG_TERM_CAUSE_MAP(XX)                                                  \
  XX(NONE, '-', "normal")       /* a normal end */                             \
  XX(CLIENT, 'C', "client")     /* closed, reset, failed */                    \
  XX(SERVER, 'S', "instance")   /* closed, reset, failed, unreachable */       \
  XX(PROXY, 'P', "refused")     /* the gateway refused it */                   \
  XX(RESOURCE, 'R', "resource") /* out of memory */                            \
  XX(INTERNAL, 'I', "internal") /* an error inside the gateway */              \
  XX(DOWN, 'D', "no_instance")  /* no live instance */                         \
  XX(KILLED, 'K', "killed")     /* stop, drain, reload */                      \
  XX(CLIENT_TIMEOUT, 'c', "client_timeout")                                    \
  XX(SERVER_TIMEOUT, 's', "instance_timeout")

typedef enum {
#define XX(name, letter, _) ZG_CAUSE_##name,
  ZG_TERM_CAUSE_MAP(XX)
#undef XX
      ZG_CAUSE_COUNT
} zg_term_cause_t;

/* In which phase: the second letter of the code. */
#define ZG_TERM_PHASE_MAP(XX)                                                  \
  XX(NONE, '-', "a normal end: no phase")                                      \
  XX(REQUEST, 'R', "TLS handshake, or waiting for or reading a request head")  \
  XX(CONNECT, 'C', "getting a connection to an instance")                      \
  XX(HEADERS, 'H', "the request sent, waiting for the response head")          \
  XX(DATA, 'D', "bodies either way, a tunnel, a TCP relay")                    \
  XX(LAST, 'L', "the response sent, closing the connection")

typedef enum {
#define XX(name, letter, _) ZG_PHASE_##name,
  ZG_TERM_PHASE_MAP(XX)
#undef XX
      ZG_PHASE_COUNT
} zg_term_phase_t;

/* Every termination: its name, cause and words. */
#define ZG_TERM_MAP(XX)                                                        \
  XX(DONE, NONE, "done")                                                       \
  XX(CLOSED, NONE, "closed")                                                   \
  XX(CLOSED_AFTER_RESPONSE, NONE, "closed after response")                     \
  XX(TUNNEL_CLOSED, NONE, "tunnel closed")                                     \
  XX(CLIENT_CLOSED, CLIENT, "client closed")                                   \
  XX(CLIENT_CLOSED_IN_HEAD, CLIENT, "client closed in a request head")         \
  XX(CLIENT_CLOSED_IN_REQUEST, CLIENT, "client closed in a request")           \
  XX(CLIENT_ERROR, CLIENT, "client error")                                     \
  XX(CLIENT_GONE, CLIENT, "client gone")                                       \
  XX(CLIENT_RESET, CLIENT, "client reset")                                     \
  XX(CLIENT_WRITE_ERROR, CLIENT, "client write error")                         \
  XX(TLS_HANDSHAKE_FAILED, CLIENT, "TLS handshake failed")                     \
  XX(INSTANCE_GONE, SERVER, "instance gone")                                   \
  XX(INSTANCE_RESET, SERVER, "instance reset")                                 \
  XX(INSTANCE_CLOSED, SERVER, "instance closed the connection")                \
  XX(INSTANCE_ERROR, SERVER, "instance connection error")                      \
  XX(INSTANCE_READ_ERROR, SERVER, "instance read error")                       \
  XX(INSTANCE_WRITE_ERROR, SERVER, "instance write error")                     \
  XX(INSTANCE_FAILED, SERVER, "the instance failed to answer")                 \
  XX(UNREACHABLE, SERVER, "instances unreachable")                             \
  XX(BAD_REQUEST, PROXY, "bad request")                                        \
  XX(BAD_REQUEST_BODY, PROXY, "bad request body")                              \
  XX(BAD_RESPONSE, PROXY, "bad response from the instance")                    \
  XX(RESPONSE_HEAD_TOO_LARGE, PROXY, "response head too large")                \
  XX(OUT_OF_MEMORY, RESOURCE, "out of memory")                                 \
  XX(ACCEPT_FAILED, INTERNAL, "accept failed")                                 \
  XX(NO_CERTIFICATE, INTERNAL, "no certificate")                               \
  XX(NO_TLS_CONTEXT, INTERNAL, "no TLS context for the instances")             \
  XX(READ_ERROR, INTERNAL, "read error")                                       \
  XX(TUNNEL_PEER_GONE, INTERNAL, "tunnel peer gone")                           \
  XX(TUNNEL_WRITE_ERROR, INTERNAL, "tunnel write error")                       \
  XX(NO_INSTANCE, DOWN, "no instance")                                         \
  XX(GATEWAY_STOPPING, KILLED, "gateway stopping")                             \
  XX(IDLE_AT_DRAIN, KILLED, "idle at drain")                                   \
  XX(LISTENER_REMOVED, KILLED, "listener removed")                             \
  XX(IDLE_TIMEOUT, CLIENT_TIMEOUT, "idle timeout")                             \
  XX(TLS_HANDSHAKE_TIMEOUT, CLIENT_TIMEOUT, "TLS handshake timeout")           \
  XX(HEAD_TIMEOUT, CLIENT_TIMEOUT, "request head not received in time")        \
  XX(RESPONSE_TIMEOUT, SERVER_TIMEOUT, "response timeout")

typedef enum {
#define XX(name, cause, _) ZG_TERM_##name,
  ZG_TERM_MAP(XX)
#undef XX
      ZG_TERM_COUNT
} zg_term_t;

/* The words of `t` ("done", "client closed", ...); "unknown" out of range. */
const char *zg_term_text(zg_term_t t);
/* What ended it; ZG_CAUSE_INTERNAL out of range. */
zg_term_cause_t zg_term_cause(zg_term_t t);
/* The cause's name for a metrics label ("client", "instance_timeout");
 * "internal" out of range. */
const char *zg_term_cause_name(zg_term_cause_t c);
/* The two-letter code of `t` ended in `phase`, into out[0..2] (NUL-ended):
 * cause letter, phase letter. A normal end is "--" whatever the phase, as
 * in HAProxy; a value out of range is "I-". Returns out. */
const char *zg_term_code(zg_term_t t, zg_term_phase_t phase, char out[3]);

#endif
