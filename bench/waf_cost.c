/* libmodsecurity's own cost per transaction, in C: the reference for ts_ffi.waf's cost in
 * `make bench` (bench/waf.lua). It loads the rule files it is given (the same ones the
 * bench's traffic_server script loads) and runs each URI through one libmodsecurity
 * transaction after another, with the calls ts_ffi.waf makes for a GET (src/waf.rs,
 * run_phase): connection, URI, request headers, request body (phase 2, no body), response
 * headers, response body (the -b bytes appended, as ts_ffi holds back and appends an inspected
 * response body), then the final status and the
 * logging phase, and cleanup. A disruptive intervention ends the inspection as in ts_ffi
 * (the rest of the request and the response phases are skipped; logging still runs).
 *
 *   waf_cost [-n transactions] [-r runs] [-w warmup] [-g gap_us] [-h 'Name: value']... [-s ...]... [-b body]
 *            -u URI [-u URI]... -f rules.conf [-f rules.conf]...
 *
 * Output, one line per run and URI (URIs interleaved within a run):
 *   rules <count loaded>
 *   run <r> uri <i> status <final status> median_us <wall> p90_us <wall> mean_us <wall> cpu_us <mean CPU>
 * Build: cc -O2 waf_cost.c -o waf_cost -lmodsecurity (Debian libmodsecurity-dev).
 */
#define _GNU_SOURCE
#include <modsecurity/intervention.h>
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXN 64

static size_t log_bytes; /* rule messages seen by the log callback (kept, so not optimized out) */

static void log_cb(void *data, const void *msg) {
  (void)data;
  if (msg) log_bytes += strlen((const char *)msg);
}

static double now_us(clockid_t clk) {
  struct timespec ts;
  clock_gettime(clk, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* 0 when the transaction continues, else the status of the intervention. */
static int check(Transaction *tx) {
  ModSecurityIntervention it = {200, 0, NULL, NULL, 0};
  int disruptive = msc_intervention(tx, &it), redirect = it.url != NULL;
  free(it.url);
  free(it.log);
  if (!disruptive) return 0;
  if (redirect) return it.status >= 300 && it.status < 400 ? it.status : 302;
  return it.status >= 400 ? it.status : 403;
}

struct hdr {
  char *name, *value;
};

static int split(const char *line, struct hdr *h) {
  const char *colon = strchr(line, ':');
  if (!colon) return -1;
  h->name = strndup(line, colon - line);
  colon++;
  while (*colon == ' ') colon++;
  h->value = strdup(colon);
  return 0;
}

static struct hdr req[MAXN], resp[MAXN];
static int nreq, nresp;
/* The response body appended in phase 4 (-b), as ts_ffi does for inspected media types. */
static const char *resp_body = "";

static int transaction(ModSecurity *msc, RulesSet *rules, const char *uri) {
  Transaction *tx = msc_new_transaction(msc, rules, NULL);
  int status = 0;
  if (!tx) {
    fprintf(stderr, "msc_new_transaction failed\n");
    exit(1);
  }
  msc_process_connection(tx, "127.0.0.1", 41000, "127.0.0.1", 8080);
  if ((status = check(tx))) goto done;
  msc_process_uri(tx, uri, "GET", "1.1");
  if ((status = check(tx))) goto done;
  for (int i = 0; i < nreq; i++)
    msc_add_n_request_header(tx, (const unsigned char *)req[i].name, strlen(req[i].name),
                             (const unsigned char *)req[i].value, strlen(req[i].value));
  msc_process_request_headers(tx);
  if ((status = check(tx))) goto done;
  msc_process_request_body(tx);
  if ((status = check(tx))) goto done;
  for (int i = 0; i < nresp; i++)
    msc_add_n_response_header(tx, (const unsigned char *)resp[i].name, strlen(resp[i].name),
                              (const unsigned char *)resp[i].value, strlen(resp[i].value));
  msc_process_response_headers(tx, 200, "HTTP 1.1");
  if ((status = check(tx))) goto done;
  if (*resp_body) {
    msc_append_response_body(tx, (const unsigned char *)resp_body, strlen(resp_body));
    if ((status = check(tx))) goto done;
  }
  msc_process_response_body(tx);
  if ((status = check(tx))) goto done;
  status = 200;
done:
  msc_update_status_code(tx, status);
  msc_process_logging(tx);
  msc_transaction_cleanup(tx);
  return status;
}

int main(int argc, char **argv) {
  int n = 1000, runs = 5, warmup = 100, nuri = 0, nfile = 0, gap_us = 0;
  const char *uris[MAXN], *files[1024];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v || a[0] != '-' || strlen(a) != 2) {
      fprintf(stderr, "usage: waf_cost [-n N] [-r runs] [-w warmup] [-g gap_us] [-h hdr]... [-s hdr]... [-b body] -u URI... -f file...\n");
      return 2;
    }
    i++;
    switch (a[1]) {
    case 'n': n = atoi(v); break;
    case 'r': runs = atoi(v); break;
    case 'w': warmup = atoi(v); break;
    case 'g': gap_us = atoi(v); break;
    case 'u': if (nuri < MAXN) uris[nuri++] = v; break;
    case 'f': if (nfile < 1024) files[nfile++] = v; break;
    case 'h': if (nreq < MAXN && split(v, &req[nreq]) == 0) nreq++; break;
    case 's': if (nresp < MAXN && split(v, &resp[nresp]) == 0) nresp++; break;
    case 'b': resp_body = v; break;
    default: fprintf(stderr, "unknown option %s\n", a); return 2;
    }
  }
  if (!nuri || !nfile || n < 1 || runs < 1) {
    fprintf(stderr, "waf_cost: give -u URI and -f rules\n");
    return 2;
  }
  ModSecurity *msc = msc_init();
  msc_set_connector_info(msc, "ts_ffi bench/waf_cost.c");
  msc_set_log_cb(msc, log_cb);
  RulesSet *rules = msc_create_rules_set();
  int total = 0;
  for (int i = 0; i < nfile; i++) {
    const char *err = NULL;
    int got = msc_rules_add_file(rules, files[i], &err);
    if (got < 0) {
      fprintf(stderr, "%s: %s\n", files[i], err ? err : "cannot load");
      return 1;
    }
    total += got;
  }
  printf("rules %d\n", total);
  for (int u = 0; u < nuri; u++)
    for (int i = 0; i < warmup; i++) transaction(msc, rules, uris[u]);
  double *t = malloc(sizeof(double) * n);
  for (int r = 1; r <= runs; r++) {
    for (int u = 0; u < nuri; u++) {
      int status = 0;
      double sum = 0, cpu0 = now_us(CLOCK_PROCESS_CPUTIME_ID);
      for (int i = 0; i < n; i++) {
        if (gap_us > 0) usleep(gap_us);
        double t0 = now_us(CLOCK_MONOTONIC);
        status = transaction(msc, rules, uris[u]);
        t[i] = now_us(CLOCK_MONOTONIC) - t0;
        sum += t[i];
      }
      double cpu = (now_us(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / n;
      qsort(t, n, sizeof(double), cmp_double);
      printf("run %d uri %d status %d median_us %.1f p90_us %.1f mean_us %.1f cpu_us %.1f\n", r, u + 1,
             status, t[n / 2], t[(int)(n * 0.9)], sum / n, cpu);
      fflush(stdout);
    }
  }
  free(t);
  msc_rules_cleanup(rules);
  msc_cleanup(msc);
  fprintf(stderr, "log bytes %zu\n", log_bytes);
  return 0;
}
