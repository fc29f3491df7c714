/* Termination reasons: the tables of term.h. */
#include "core/term.h"

static const char cause_letter[] = {
#define XX(name, letter, _) letter,
    ZG_TERM_CAUSE_MAP(XX)
#undef XX
};

static const char *const cause_name[] = {
#define XX(name, letter, label) label,
    ZG_TERM_CAUSE_MAP(XX)
#undef XX
};

static const char phase_letter[] = {
#define XX(name, letter, _) letter,
    ZG_TERM_PHASE_MAP(XX)
#undef XX
};

static const struct {
  zg_term_cause_t cause;
  const char *text;
} terms[] = {
#define XX(name, cause, text) {ZG_CAUSE_##cause, text},
    ZG_TERM_MAP(XX)
#undef XX
};

const char *zg_term_text(zg_term_t t) {
  return (unsigned)t < ZG_TERM_COUNT ? terms[t].text : "unknown";
}

zg_term_cause_t zg_term_cause(zg_term_t t) {
  return (unsigned)t < ZG_TERM_COUNT ? terms[t].cause : ZG_CAUSE_INTERNAL;
}

const char *zg_term_cause_name(zg_term_cause_t c) {
  return (unsigned)c < ZG_CAUSE_COUNT ? cause_name[c]
                                      : cause_name[ZG_CAUSE_INTERNAL];
}

const char *zg_term_code(zg_term_t t, zg_term_phase_t phase, char out[3]) {
  zg_term_cause_t c = zg_term_cause(t);
  out[0] = cause_letter[c];
  out[1] = c == ZG_CAUSE_NONE || (unsigned)phase >= ZG_PHASE_COUNT ||
                   (unsigned)t >= ZG_TERM_COUNT
               ? '-'
               : phase_letter[phase];
  out[2] = '\0';
  return out;
}
