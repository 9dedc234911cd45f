/* A small HTTP/1.1 load generator for the WAF part of `make bench` (bench/waf.lua): several
 * streams of GETs against one loopback port, each either at a fixed rate (open loop: requests
 * are due on a schedule whatever the responses do; a request that had to wait for a free
 * connection counts its latency from when it was due, so a server that falls behind is not
 * hidden by the generator waiting for it) or closed loop (each connection sends its next
 * request when the previous answer arrives, as wrk does). Keep-alive connections, one request
 * in flight per connection, single-threaded ppoll() (sleeping until the next request is due:
 * no busy waiting, timer slack 1 ns).
 *
 *   waf_load -p PORT -d SECONDS [-w WARMUP_S] [-t TIMEOUT_MS] [-h 'Name: value']...
 *            -s 'NAME HOST PATH RATE CONNS [EXPECT]'...
 *
 * RATE is requests/s (0: closed loop). EXPECT is the expected status (default 200). Requests
 * due during the first WARMUP_S seconds are sent but not counted.
 * Output, one line per stream:
 *   stream NAME sent N done N expected N other N errors N timeouts N unsent N rps R
 *          p10_us X p50_us X p90_us X p99_us X max_us X
 * errors: connections closed or failed with a request in flight; timeouts: no complete answer
 * within TIMEOUT_MS (the connection is then closed); unsent: due requests never sent (every
 * connection of the stream busy until the end).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXS 8
#define MAXC 1024
#define BUF 65536

struct stream {
  char name[64], req[4096];
  size_t reqlen;
  double rate, next_due;
  uint64_t scheduled;
  int conns, expect;
  /* due, unsent requests: their due times (ring) */
  double *queue;
  size_t qcap, qhead, qlen;
  uint64_t sent, done, expected, other, errors, timeouts, unsent, dropped;
  uint32_t *lat;
  size_t nlat, caplat;
};

struct conn {
  int fd, busy, stream;
  double t_due;  /* when the request in flight was due (open loop) or sent (closed loop) */
  double t_sent;
  int counted;
  char buf[BUF];
  size_t len;
};

static struct stream S[MAXS];
static int nstreams;
static struct conn C[MAXC];
static int nconns;
static struct sockaddr_in addr;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int open_conn(struct conn *c) {
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) { /* loopback: immediate */
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
  c->len = 0;
  return 0;
}

static void close_conn(struct conn *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->busy = 0;
  c->len = 0;
}

static void record(struct stream *s, struct conn *c, int status, double t) {
  if (!c->counted) return;
  s->done++;
  if (status == s->expect) s->expected++; else s->other++;
  if (s->nlat == s->caplat) {
    s->caplat = s->caplat ? s->caplat * 2 : 4096;
    s->lat = realloc(s->lat, s->caplat * sizeof *s->lat);
  }
  double us = (t - c->t_due) * 1e6;
  s->lat[s->nlat++] = us > 4e9 ? 4000000000u : (uint32_t)us;
}

static int send_req(struct conn *c, double due, int counted) {
  struct stream *s = &S[c->stream];
  if (c->fd < 0 && open_conn(c) != 0) {
    if (counted) s->errors++;
    return -1;
  }
  ssize_t w = send(c->fd, s->req, s->reqlen, MSG_NOSIGNAL);
  if (w != (ssize_t)s->reqlen) { /* a stale keep-alive connection: once more on a new one */
    close_conn(c);
    if (open_conn(c) != 0 || send(c->fd, s->req, s->reqlen, MSG_NOSIGNAL) != (ssize_t)s->reqlen) {
      close_conn(c);
      if (counted) s->errors++;
      return -1;
    }
  }
  c->busy = 1;
  c->t_due = due;
  c->t_sent = now();
  c->counted = counted;
  if (counted) s->sent++;
  return 0;
}

/* Does the header line [h, eol) contain `word` (any case)? */
static int has_token(const char *h, const char *eol, const char *word) {
  size_t n = strlen(word);
  for (const char *p = h; eol && p + n <= eol; p++)
    if (!strncasecmp(p, word, n)) return 1;
  return 0;
}

/* A complete response in c->buf? Returns its length, 0 if incomplete, -1 if malformed;
 * *status, *close_after are set. */
static long complete(struct conn *c, int *status, int *close_after) {
  c->buf[c->len < BUF ? c->len : BUF - 1] = 0;
  char *end = strstr(c->buf, "\r\n\r\n");
  if (!end) return c->len >= BUF - 1 ? -1 : 0;
  size_t head = end + 4 - c->buf;
  if (sscanf(c->buf, "HTTP/%*s %d", status) != 1) return -1;
  long clen = -1;
  int chunked = 0;
  *close_after = 0;
  for (char *l = strstr(c->buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
    char *h = l + 2, *eol = strstr(h, "\r\n");
    if (!strncasecmp(h, "Content-Length:", 15)) clen = strtol(h + 15, NULL, 10);
    else if (!strncasecmp(h, "Transfer-Encoding:", 18) && has_token(h, eol, "chunked")) chunked = 1;
    else if (!strncasecmp(h, "Connection:", 11) && has_token(h, eol, "close")) *close_after = 1;
  }
  if (clen >= 0) return c->len >= head + clen ? (long)(head + clen) : 0;
  if (chunked) return memmem(c->buf + head, c->len - head, "0\r\n\r\n", 5) ? (long)c->len : 0;
  if (*status == 204 || *status == 304) return head;
  *close_after = 1;
  return -2; /* body until EOF */
}

static void on_readable(struct conn *c, double t) {
  struct stream *s = &S[c->stream];
  for (;;) {
    if (c->len >= BUF - 1) {
      s->errors += c->counted;
      close_conn(c);
      return;
    }
    ssize_t r = recv(c->fd, c->buf + c->len, BUF - 1 - c->len, 0);
    if (r > 0) {
      c->len += r;
      continue;
    }
    int status = 0, close_after = 0;
    if (r == 0) { /* EOF */
      long n = c->busy && c->len ? complete(c, &status, &close_after) : 0;
      if (n > 0 || n == -2) record(s, c, status, t); /* answered, then closed */
      else if (c->busy) s->errors += c->counted;
      close_conn(c);
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (c->busy) s->errors += c->counted;
    close_conn(c);
    return;
  }
  if (!c->busy) { /* data on an idle connection: not ours to keep */
    close_conn(c);
    return;
  }
  int status = 0, close_after = 0;
  long n = complete(c, &status, &close_after);
  if (n == 0 || n == -2) return;
  if (n < 0) {
    s->errors += c->counted;
    close_conn(c);
    return;
  }
  record(s, c, status, t);
  c->busy = 0;
  memmove(c->buf, c->buf + n, c->len - n);
  c->len -= n;
  if (close_after) close_conn(c);
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int port = 0, timeout_ms = 5000;
  double seconds = 5, warmup = 0;
  char headers[2048] = "";
  const char *specs[MAXS];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v || a[0] != '-' || strlen(a) != 2) goto usage;
    i++;
    switch (a[1]) {
    case 'p': port = atoi(v); break;
    case 'd': seconds = atof(v); break;
    case 'w': warmup = atof(v); break;
    case 't': timeout_ms = atoi(v); break;
    case 'h':
      if (strlen(headers) + strlen(v) + 3 < sizeof headers) strcat(strcat(headers, v), "\r\n");
      break;
    case 's': if (nstreams < MAXS) specs[nstreams++] = v; break;
    default: goto usage;
    }
  }
  if (!port || !nstreams) goto usage;
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake up when a request is due, not 50 us later */
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < nstreams; i++) {
    struct stream *s = &S[i];
    char host[256], path[2048];
    s->expect = 200;
    if (sscanf(specs[i], "%63s %255s %2047s %lf %d %d", s->name, host, path, &s->rate, &s->conns, &s->expect) < 5
        || s->conns < 1 || nconns + s->conns > MAXC)
      goto usage;
    s->reqlen = snprintf(s->req, sizeof s->req, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", path, host, headers);
    s->qcap = s->rate > 0 ? (size_t)(s->rate * (seconds + 1)) + 16 : 1;
    s->queue = malloc(s->qcap * sizeof(double));
    for (int k = 0; k < s->conns; k++) {
      C[nconns].stream = i;
      C[nconns].fd = -1;
      if (open_conn(&C[nconns]) != 0) {
        fprintf(stderr, "waf_load: cannot connect to 127.0.0.1:%d\n", port);
        return 1;
      }
      nconns++;
    }
  }
  double start = now(), stop = start + seconds, count_from = start + warmup;
  for (int i = 0; i < nstreams; i++) S[i].next_due = start;
  struct pollfd pfd[MAXC];
  double t_prev = start;
  for (;;) {
    double t = now();
    int scheduling = t < stop, inflight = 0;
    for (int i = 0; i < nstreams; i++) {
      struct stream *s = &S[i];
      if (s->rate > 0) {
        while (scheduling && s->next_due <= t) {
          if (s->qlen < s->qcap) s->queue[(s->qhead + s->qlen++) % s->qcap] = s->next_due;
          else s->dropped++;
          s->next_due = start + (double)++s->scheduled / s->rate;
        }
      }
    }
    for (int k = 0; k < nconns; k++) {
      struct conn *c = &C[k];
      struct stream *s = &S[c->stream];
      if (c->busy && (t - c->t_sent) * 1000 > timeout_ms) {
        s->timeouts += c->counted;
        close_conn(c);
      }
      if (!c->busy) {
        if (s->rate > 0 && s->qlen) {
          double due = s->queue[s->qhead];
          s->qhead = (s->qhead + 1) % s->qcap;
          s->qlen--;
          /* Due since the previous pass: only the generator's own wake-up delayed it, so its
           * latency counts from now; due earlier: it waited for a free connection (the
           * server was behind), so it counts from when it was due. */
          send_req(c, due >= t_prev ? t : due, due >= count_from);
        } else if (s->rate == 0 && scheduling) {
          send_req(c, t, t >= count_from);
        }
      }
      inflight += c->busy;
    }
    t_prev = t;
    if (!scheduling && !inflight) {
      int queued = 0;
      for (int i = 0; i < nstreams; i++) queued += S[i].qlen > 0;
      if (!queued) break;
    }
    if (!scheduling && t > stop + timeout_ms / 1000.0 + 1) break;
    /* wait for answers, or until the next request is due */
    double wait = 0.005;
    for (int i = 0; i < nstreams; i++)
      if (S[i].rate > 0 && scheduling && S[i].next_due - t < wait) wait = S[i].next_due - t;
    int n = 0;
    for (int k = 0; k < nconns; k++)
      if (C[k].fd >= 0) {
        pfd[n].fd = C[k].fd;
        pfd[n].events = POLLIN;
        pfd[n].revents = 0;
        n++;
      }
    if (wait < 0) wait = 0;
    struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
    if (ppoll(pfd, n, &ts, NULL) > 0) {
      double t2 = now();
      for (int j = 0; j < n; j++) {
        if (!pfd[j].revents) continue;
        for (int k = 0; k < nconns; k++)
          if (C[k].fd == pfd[j].fd) {
            on_readable(&C[k], t2);
            break;
          }
      }
    }
  }
  double elapsed = seconds - warmup;
  for (int i = 0; i < nstreams; i++) {
    struct stream *s = &S[i];
    for (int k = 0; k < nconns; k++)
      if (C[k].stream == i && C[k].busy) s->timeouts += C[k].counted;
    s->unsent = s->qlen + s->dropped;
    qsort(s->lat, s->nlat, sizeof *s->lat, cmp_u32);
#define PCT(p) (s->nlat ? s->lat[(size_t)((s->nlat - 1) * (p))] : 0)
    printf("stream %s sent %lu done %lu expected %lu other %lu errors %lu timeouts %lu unsent %lu rps %.1f "
           "p10_us %u p50_us %u p90_us %u p99_us %u max_us %u\n",
           s->name, (unsigned long)s->sent, (unsigned long)s->done, (unsigned long)s->expected,
           (unsigned long)s->other, (unsigned long)s->errors, (unsigned long)s->timeouts,
           (unsigned long)s->unsent, elapsed > 0 ? s->done / elapsed : 0, PCT(0.1), PCT(0.5), PCT(0.9), PCT(0.99),
           PCT(1.0));
  }
  return 0;
usage:
  fprintf(stderr, "usage: waf_load -p PORT -d SECONDS [-w WARMUP] [-t TIMEOUT_MS] [-h 'Name: value']... "
                  "-s 'NAME HOST PATH RATE CONNS [EXPECT]'...\n");
  return 2;
}
