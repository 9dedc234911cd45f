/* Test double of the parts of traffic_server and ts_lua that ts_ffi uses.
 *
 * Loaded globally (package.loadlib(path, "*")) before ts_ffi, it provides the TS* functions
 * that ts_ffi resolves from the process, and, as the Lua module "ts_double", fake ts_lua
 * transactions laid out like ts_lua 9.2's: a context struct with the coroutine, its registry
 * reference, the async chain and the TSHttpTxn at the same offsets, and a coroutine whose
 * environment holds `__ts_http_ctx` as ts_lua sets it. Releasing a transaction runs the
 * async chain's cleanups the way ts_lua_release_cont_info does.
 */
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <lauxlib.h>
#include <lua.h>

/* ---- ts_lua 9.2 private layout (ts_lua_coroutine.h / ts_lua_common.h) ---- */
struct async_item;
typedef int (*async_clean)(struct async_item *item);

typedef struct async_item {
  struct async_item *next;
  void *cinfo;
  void *contp;
  void *data;
  async_clean cleanup;
  unsigned int deleted : 1;
} async_item;

typedef struct {
  void *mctx;
  lua_State *lua;
  int ref;
  void *contp;
  void *mutex;
  async_item *async_chain;
  void *txnp; /* offset 48 */
  char rest[128];
} fake_http_ctx;

/* ---- fake ATS objects ---- */
typedef struct {
  int64_t id;
} fake_ssn;

typedef struct {
  uint64_t id;
  int client_fd; /* -1: the client connection is gone */
  fake_ssn *ssn; /* NULL: no session */
  int server_fd; /* -1: no origin connection */
  int aborted;
  int has_next_hop;
  struct sockaddr_storage next_hop;
  char *from_url, *to_url; /* NULL: no remap rule */
  int outgoing_sets;
  struct sockaddr_storage outgoing;
  int response_started; /* the origin response header has been read */
  int hooks[16];        /* TSHttpTxnHookAdd calls by hook id */
} fake_txn;


/* A transform VConn with its input VIO and buffer, as far as ts_ffi looks. */
typedef struct {
  int64_t watermark;
} fake_buffer;
typedef struct {
  fake_buffer *buffer;
} fake_vio;
typedef struct {
  fake_vio *vio;
} fake_vconn;

/* ts_lua's transform context: cont info first, upstream_watermark_bytes at 112. */
typedef struct {
  void *mctx;
  lua_State *lua;
  int ref;
  void *contp; /* 24: the transform VConn */
  void *mutex;
  async_item *async_chain;
  char io[48];   /* output, reserved */
  void *hctx;    /* 96 */
  int64_t upstream_bytes;
  int64_t upstream_watermark_bytes; /* 112 */
  int64_t downstream_bytes;
  int64_t total;
} fake_transform_ctx;

static char version[32] = "9.2.9";
static int v_major = 9, v_minor = 2, v_patch = 9;

/* ---- the TS* API ---- */
const char *TSTrafficServerVersionGet(void) { return version; }
int TSTrafficServerVersionGetMajor(void) { return v_major; }
int TSTrafficServerVersionGetMinor(void) { return v_minor; }
int TSTrafficServerVersionGetPatch(void) { return v_patch; }
const char *TSInstallDirGet(void) { return "/double/install"; }
const char *TSConfigDirGet(void) { return "/double/config"; }
const char *TSRuntimeDirGet(void) { return "/double/runtime"; }
const char *TSPluginDirGet(void) { return "/double/plugins"; }

uint64_t TSHttpTxnIdGet(void *txnp) { return ((fake_txn *)txnp)->id; }

int TSHttpTxnClientFdGet(void *txnp, int *fdp) {
  fake_txn *t = txnp;
  if (t->client_fd < 0) return -1; /* TS_ERROR */
  *fdp = t->client_fd;
  return 0;
}

int TSHttpTxnServerFdGet(void *txnp, int *fdp) {
  fake_txn *t = txnp;
  *fdp = -1;
  if (t->server_fd < 0) return -1; /* TS_ERROR */
  *fdp = t->server_fd;
  return 0;
}

void *TSHttpTxnSsnGet(void *txnp) { return ((fake_txn *)txnp)->ssn; }
int64_t TSHttpSsnIdGet(void *ssnp) { return ((fake_ssn *)ssnp)->id; }


int TSHttpTxnAborted(void *txnp) { return ((fake_txn *)txnp)->aborted ? 0 : -1; }

const struct sockaddr *TSHttpTxnNextHopAddrGet(void *txnp) {
  fake_txn *t = txnp;
  return t->has_next_hop ? (const struct sockaddr *)&t->next_hop : NULL;
}

/* The URL handle is the string itself. */
static int remap_url(char *url, void **locp) {
  if (!url) return -1;
  *locp = url;
  return 0;
}
int TSRemapFromUrlGet(void *txnp, void **locp) { return remap_url(((fake_txn *)txnp)->from_url, locp); }
int TSRemapToUrlGet(void *txnp, void **locp) { return remap_url(((fake_txn *)txnp)->to_url, locp); }
char *TSUrlStringGet(void *bufp, void *loc, int *length) {
  (void)bufp;
  *length = (int)strlen(loc);
  return strdup(loc);
}

int TSHttpTxnOutgoingAddrSet(void *txnp, const struct sockaddr *addr) {
  fake_txn *t = txnp;
  size_t n = addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
           : addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr);
  memset(&t->outgoing, 0, sizeof t->outgoing);
  memcpy(&t->outgoing, addr, n);
  t->outgoing_sets++;
  return 0;
}

void *TSVConnWriteVIOGet(void *connp) { return ((fake_vconn *)connp)->vio; }
void *TSVIOBufferGet(void *viop) { return ((fake_vio *)viop)->buffer; }
int64_t TSIOBufferWaterMarkGet(void *bufp) { return ((fake_buffer *)bufp)->watermark; }
void TSIOBufferWaterMarkSet(void *bufp, int64_t wm) { ((fake_buffer *)bufp)->watermark = wm; }

int TSHttpTxnServerRespGet(void *txnp, void **bufp, void **locp) {
  fake_txn *t = txnp;
  if (!t->response_started) return -1;
  *bufp = t;
  *locp = t;
  return 0;
}
int TSHandleMLocRelease(void *bufp, void *parent, void *loc) { (void)bufp; (void)parent; (void)loc; return 0; }
void *TSContCreate(void *func, void *mutex);
void *TSTransformCreate(void *func, void *txnp) { (void)txnp; return TSContCreate(func, NULL); }
void *TSContMutexGet(void *contp) { (void)contp; return NULL; }
void TSHttpTxnHookAdd(void *txnp, int id, void *contp) {
  (void)contp;
  if (id >= 0 && id < 16) ((fake_txn *)txnp)->hooks[id]++;
}

void *_TSmalloc(size_t size, const char *path) { (void)path; return malloc(size); }
void _TSfree(void *p) { free(p); }

/* ---- continuations, mutexes, HostDB (ts_ffi.dns) ----
 * A fake main ctx (VM lock), the ts_lua continuation of each transaction (TSContCall with
 * event 20000 resumes the transaction's coroutine, as ts_lua_http_cont_handler does), and a
 * HostDB that answers inline or keeps one lookup pending until double.dns_answer(). */
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>

typedef struct {
  lua_State *lua;
  void *mutexp; /* offset 8 */
} fake_main_ctx;

typedef int (*fake_event_fn)(void *contp, int event, void *edata);

typedef struct {
  fake_event_fn func;
  void *mutex;
  void *data;
  void *ts_lua_ctx; /* non-NULL: a transaction's ts_lua continuation */
  int destroyed;
} fake_cont;

typedef struct {
  int cancelled;
} fake_action;

static int vm_mutex_obj, txn_mutex_obj;
static fake_main_ctx main_ctx = {NULL, &vm_mutex_obj};
static int vm_lock_depth;
static struct {
  int conts, destroyed, lookups, cancels, resumes, resumed_locked;
} dns_stats;
static char dns_mode[16] = "pending";
static char dns_inline_addr[64] = "";
static fake_cont *pending_cont;
static fake_action *pending_action;
static fake_action done_action; /* stands for ACTION_RESULT_DONE */
static lua_State *resume_out; /* where the coroutine's results go after a resume */
static int resume_status, resume_nres;

static void dns_init_ctx(fake_http_ctx *ctx) {
  fake_cont *c = calloc(1, sizeof *c);
  c->ts_lua_ctx = ctx;
  ctx->mctx = &main_ctx;
  ctx->contp = c;
  ctx->mutex = &txn_mutex_obj;
}

void TSMutexLock(void *m) { if (m == &vm_mutex_obj) vm_lock_depth++; }
void TSMutexUnlock(void *m) { if (m == &vm_mutex_obj) vm_lock_depth--; }

void *TSContCreate(void *func_, void *mutex) {
  fake_event_fn func = (fake_event_fn)func_;
  fake_cont *c = calloc(1, sizeof *c);
  c->func = func;
  c->mutex = mutex;
  dns_stats.conts++;
  return c;
}
void TSContDestroy(void *contp) { ((fake_cont *)contp)->destroyed = 1; dns_stats.destroyed++; }
void TSContDataSet(void *contp, void *data) { ((fake_cont *)contp)->data = data; }
void *TSContDataGet(void *contp) { return ((fake_cont *)contp)->data; }

int TSContCall(void *contp, int event, void *edata) {
  fake_cont *c = contp;
  if (c->ts_lua_ctx && event == 20000) { /* ts_lua_http_cont_handler, COROUTINE_CONT */
    lua_State *l = ((fake_http_ctx *)c->ts_lua_ctx)->lua;
    dns_stats.resumes++;
    if (vm_lock_depth > 0) dns_stats.resumed_locked++;
    resume_status = lua_resume(l, (int)(intptr_t)edata);
    resume_nres = lua_gettop(l);
    if (resume_status == LUA_YIELD) { /* left on the stack, as ts_lua does */
      for (int i = 1; i <= resume_nres; i++) lua_pushvalue(l, i);
    }
    if (resume_out) lua_xmove(l, resume_out, resume_nres);
    else lua_settop(l, resume_status == LUA_YIELD ? resume_nres : 0);
    return 0;
  }
  return c->func ? c->func(contp, event, edata) : 0;
}

int TSActionDone(void *a) { return a == &done_action; }
void TSActionCancel(void *a) { if (a && a != &done_action) { ((fake_action *)a)->cancelled = 1; dns_stats.cancels++; } }

static struct sockaddr_storage dns_result;
const struct sockaddr *TSHostLookupResultAddrGet(void *r) { return (const struct sockaddr *)r; }

/* Fills dns_result from address text; returns it, or NULL for NULL/unparsable text. */
static void *make_result(const char *addr) {
  memset(&dns_result, 0, sizeof dns_result);
  if (!addr) return NULL;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&dns_result;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&dns_result;
  if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) { a4->sin_family = AF_INET; return &dns_result; }
  if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) { a6->sin6_family = AF_INET6; return &dns_result; }
  return NULL;
}

void *TSHostLookup(void *contp, const char *name, size_t len) {
  fake_cont *c = contp;
  (void)name;
  if (len == 0) abort(); /* ATS release-asserts namelen > 0 */
  dns_stats.lookups++;
  if (strcmp(dns_mode, "inline") == 0) { /* HostDB answers inside the call */
    c->func(contp, 500, make_result(dns_inline_addr[0] ? dns_inline_addr : NULL));
    return &done_action;
  }
  pending_cont = c;
  pending_action = calloc(1, sizeof *pending_action);
  return pending_action;
}

/* double.dns_mode("pending" | "inline" [, addr]) */
static int d_dns_mode(lua_State *L) {
  snprintf(dns_mode, sizeof dns_mode, "%s", luaL_checkstring(L, 1));
  snprintf(dns_inline_addr, sizeof dns_inline_addr, "%s", luaL_optstring(L, 2, ""));
  return 0;
}

/* double.dns_answer(addr | nil [, event]) -> delivered, status, results...
 * Completes the pending lookup the way HostDB does: not at all if it was cancelled;
 * otherwise the continuation's handler runs, and whatever the coroutine returns or
 * yields after being resumed comes back here. */
static int d_dns_answer(lua_State *L) {
  fake_cont *c = pending_cont;
  fake_action *a = pending_action;
  int event = (int)luaL_optinteger(L, 2, 500);
  pending_cont = NULL;
  pending_action = NULL;
  if (!c || !a || a->cancelled) {
    free(a);
    lua_pushboolean(L, 0);
    return 1;
  }
  free(a);
  if (c->destroyed) return luaL_error(L, "HostDB would call a destroyed continuation");
  int top = lua_gettop(L);
  resume_out = L;
  resume_nres = 0;
  resume_status = -1;
  c->func(c, event, make_result(lua_tostring(L, 1)));
  resume_out = NULL;
  lua_pushboolean(L, 1);
  lua_pushinteger(L, resume_status);
  lua_insert(L, top + 1);
  lua_insert(L, top + 1);
  return lua_gettop(L) - top;
}

/* double.dns_stats() -> { conts, destroyed, lookups, cancels, resumes, resumed_locked,
 * vm_lock_depth, pending } */
static int d_dns_stats(lua_State *L) {
  lua_newtable(L);
#define F(name, v) lua_pushinteger(L, v); lua_setfield(L, -2, name)
  F("conts", dns_stats.conts); F("destroyed", dns_stats.destroyed);
  F("lookups", dns_stats.lookups); F("cancels", dns_stats.cancels);
  F("resumes", dns_stats.resumes); F("resumed_locked", dns_stats.resumed_locked);
  F("vm_lock_depth", vm_lock_depth);
#undef F
  lua_pushboolean(L, pending_cont != NULL);
  lua_setfield(L, -2, "pending");
  return 1;
}

/* double.call(thread, fn, ...) -> ok, results... | false, err
 * Runs fn in the transaction's coroutine under lua_pcall, as ts_lua runs do_remap and the
 * TXN_CLOSE hook (the coroutine cannot yield there). */
static int d_call(lua_State *L) {
  lua_State *l = lua_tothread(L, 1);
  int nargs = lua_gettop(L) - 2, status, nres;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(l, 0);
  lua_xmove(L, l, nargs + 1);
  status = lua_pcall(l, nargs, LUA_MULTRET, 0);
  nres = lua_gettop(l);
  lua_pushboolean(L, status == 0);
  lua_xmove(l, L, nres);
  return nres + 1;
}

/* ---- Lua side: fake transactions ---- */
static uint64_t next_txn_id = 1000;

/* Contexts are never returned to malloc: a released one goes to a pool and the next new
 * transaction reuses its memory, so a stale pointer deterministically names another
 * transaction (the hazard ts_ffi must detect). */
static fake_http_ctx *pool[64];
static int pooled = 0;

/* double.new_txn{ client_fd = n, ssn_id = n | false, server_fd = n } -> thread, ctx (light userdata), id
 * The thread's environment is a new table (with __index to the globals) holding
 * __ts_http_ctx, as ts_lua_create_http_ctx makes it. */
static int d_new_txn(lua_State *L) {
  fake_http_ctx *ctx = pooled > 0 ? pool[--pooled] : malloc(sizeof *ctx);
  fake_txn *txn = calloc(1, sizeof *txn);
  memset(ctx, 0, sizeof *ctx);
  txn->id = ++next_txn_id;
  txn->client_fd = 7;
  txn->server_fd = -1;
  txn->ssn = calloc(1, sizeof *txn->ssn);
  txn->ssn->id = (int64_t)txn->id + 500000;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "client_fd");
    if (lua_isnumber(L, -1)) txn->client_fd = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "server_fd");
    if (lua_isnumber(L, -1)) txn->server_fd = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "ssn_id");
    if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) { free(txn->ssn); txn->ssn = NULL; }
    else if (lua_isnumber(L, -1)) txn->ssn->id = lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  ctx->txnp = txn;
  dns_init_ctx(ctx); /* mctx, contp, mutex: what ts.hook coroutines have (ts_ffi.dns) */

  lua_State *l = lua_newthread(L); /* [thread] */
  lua_newtable(l);
  lua_pushvalue(l, -1);
  lua_setfield(l, -2, "_G");
  lua_newtable(l);
  lua_pushvalue(L, LUA_GLOBALSINDEX);
  lua_xmove(L, l, 1);
  lua_setfield(l, -2, "__index");
  lua_setmetatable(l, -2);
  lua_replace(l, LUA_GLOBALSINDEX);

  lua_pushvalue(L, -1);
  ctx->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  ctx->lua = l;
  lua_pushliteral(l, "__ts_http_ctx");
  lua_pushlightuserdata(l, ctx);
  lua_rawset(l, LUA_GLOBALSINDEX);

  lua_pushlightuserdata(L, ctx);
  lua_pushnumber(L, (lua_Number)txn->id);
  return 3;
}

/* double.release(ctx): what ts_lua_destroy_http_ctx does: run the async chain's cleanups,
 * free the items, unref the coroutine, drop the context (into the reuse pool). */
static int d_release(lua_State *L) {
  fake_http_ctx *ctx = lua_touserdata(L, 1);
  async_item *ai = ctx->async_chain, *next;
  int cleaned = 0;
  while (ai) {
    next = ai->next;
    if (ai->cleanup && !ai->deleted) { ai->cleanup(ai); cleaned++; }
    _TSfree(ai);
    ai = next;
  }
  ctx->async_chain = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, ctx->ref);
  fake_txn *txn = ctx->txnp;
  free(txn->ssn);
  free(txn->from_url);
  free(txn->to_url);
  free(txn);
  ctx->txnp = NULL;
  if (pooled < 64) pool[pooled++] = ctx;
  lua_pushinteger(L, cleaned);
  return 1;
}

/* double.chain_length(ctx): items on the context's async chain. */
static int d_chain_length(lua_State *L) {
  fake_http_ctx *ctx = lua_touserdata(L, 1);
  int n = 0;
  for (async_item *ai = ctx->async_chain; ai; ai = ai->next) n++;
  lua_pushinteger(L, n);
  return 1;
}

/* double.set_client_fd(ctx, fd) */
static int d_set_client_fd(lua_State *L) {
  fake_http_ctx *ctx = lua_touserdata(L, 1);
  ((fake_txn *)ctx->txnp)->client_fd = (int)luaL_checkinteger(L, 2);
  return 0;
}

/* double.set_server_fd(ctx, fd) */
static int d_set_server_fd(lua_State *L) {
  fake_http_ctx *ctx = lua_touserdata(L, 1);
  ((fake_txn *)ctx->txnp)->server_fd = (int)luaL_checkinteger(L, 2);
  return 0;
}

/* double.run(thread, fn, ...) -> ok, results... | false, err
 * Runs fn in the transaction's coroutine, as ts_lua resumes a hook function. */
static int d_run(lua_State *L) {
  lua_State *l = lua_tothread(L, 1);
  int nargs = lua_gettop(L) - 2, status, nres;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(l, 0);
  lua_xmove(L, l, nargs + 1);
  status = lua_resume(l, nargs);
  nres = lua_gettop(l);
  lua_pushboolean(L, status == 0);
  if (status == LUA_YIELD) { /* ts_lua leaves yielded values on the coroutine's stack */
    for (int i = 1; i <= nres; i++) lua_pushvalue(l, i);
  }
  lua_xmove(l, L, nres);
  return nres + 1;
}

static fake_txn *txn_of(lua_State *L) {
  fake_http_ctx *ctx = lua_touserdata(L, 1);
  luaL_argcheck(L, ctx && ctx->txnp, 1, "live fake context expected");
  return ctx->txnp;
}

static void set_string(char **slot, lua_State *L, int idx) {
  free(*slot);
  *slot = lua_isstring(L, idx) ? strdup(lua_tostring(L, idx)) : NULL;
}

/* double.set_txn(ctx, { server_fd =, aborted =, next_hop = {ip, port} | false,
 *                       from_url =, to_url = })  (false clears a field) */
static int d_set_txn(lua_State *L) {
  fake_txn *t = txn_of(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "server_fd");
  if (!lua_isnil(L, -1)) t->server_fd = lua_toboolean(L, -1) ? (int)lua_tointeger(L, -1) : -1;
  lua_getfield(L, 2, "response_started");
  if (!lua_isnil(L, -1)) t->response_started = lua_toboolean(L, -1);
  lua_getfield(L, 2, "aborted");
  if (!lua_isnil(L, -1)) t->aborted = lua_toboolean(L, -1);
  lua_getfield(L, 2, "from_url");
  if (!lua_isnil(L, -1)) set_string(&t->from_url, L, -1);
  lua_getfield(L, 2, "to_url");
  if (!lua_isnil(L, -1)) set_string(&t->to_url, L, -1);
  lua_getfield(L, 2, "next_hop");
  if (lua_istable(L, -1)) {
    const char *ip;
    int port;
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    ip = luaL_checkstring(L, -2);
    port = (int)luaL_checkinteger(L, -1);
    memset(&t->next_hop, 0, sizeof t->next_hop);
    if (strchr(ip, ':')) {
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&t->next_hop;
      s6->sin6_family = AF_INET6;
      s6->sin6_port = htons(port);
      luaL_argcheck(L, inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1, 2, "bad next_hop");
    } else {
      struct sockaddr_in *s4 = (struct sockaddr_in *)&t->next_hop;
      s4->sin_family = AF_INET;
      s4->sin_port = htons(port);
      luaL_argcheck(L, inet_pton(AF_INET, ip, &s4->sin_addr) == 1, 2, "bad next_hop");
    }
    t->has_next_hop = 1;
  } else if (lua_isboolean(L, -1)) {
    t->has_next_hop = 0;
  }
  return 0;
}

/* double.outgoing(ctx) -> times set, "ip", port | "unspec" */
static int d_outgoing(lua_State *L) {
  fake_txn *t = txn_of(L);
  char text[INET6_ADDRSTRLEN] = "unspec";
  int port = 0;
  lua_pushinteger(L, t->outgoing_sets);
  if (t->outgoing.ss_family == AF_INET) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&t->outgoing;
    inet_ntop(AF_INET, &s4->sin_addr, text, sizeof text);
    port = ntohs(s4->sin_port);
  } else if (t->outgoing.ss_family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&t->outgoing;
    inet_ntop(AF_INET6, &s6->sin6_addr, text, sizeof text);
    port = ntohs(s6->sin6_port);
  }
  lua_pushstring(L, text);
  lua_pushinteger(L, port);
  return 3;
}

/* double.new_transform(txn_thread, handler [, has_buffer]) -> thread, tctx
 * A ts_lua transform: a coroutine made from the transaction's (sharing its environment), a
 * registry reference, the handler keyed by the context pointer, and a VConn whose input
 * buffer has a watermark. Run its handler with double.run_transform. */
static int d_new_transform(lua_State *L) {
  lua_State *tl = lua_tothread(L, 1);
  fake_transform_ctx *tc = calloc(1, sizeof *tc);
  fake_vconn *vc = calloc(1, sizeof *vc);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  vc->vio = calloc(1, sizeof *vc->vio);
  if (lua_isnoneornil(L, 3) || lua_toboolean(L, 3)) vc->vio->buffer = calloc(1, sizeof(fake_buffer));
  tc->contp = vc;
  lua_State *l = lua_newthread(tl); /* shares tl's environment */
  lua_xmove(tl, L, 1);              /* the thread, onto our stack */
  lua_pushvalue(L, -1);
  tc->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  tc->lua = l;
  lua_pushlightuserdata(l, tc);
  lua_pushvalue(L, 2);
  lua_xmove(L, l, 1);
  lua_rawset(l, LUA_GLOBALSINDEX); /* env[tctx] = handler */
  lua_pushliteral(l, "__ts_http_transform_ctx");
  lua_pushlightuserdata(l, tc);
  lua_rawset(l, LUA_GLOBALSINDEX);
  lua_pushlightuserdata(L, tc);
  return 2;
}

/* double.set_cont_info(thread, ptr | nil): __ts_cont_info, as ts_lua sets it before running
 * a handler (the transform's context, or the transaction's). */
static int d_set_cont_info(lua_State *L) {
  lua_State *l = lua_tothread(L, 1);
  lua_pushliteral(l, "__ts_cont_info");
  lua_pushlightuserdata(l, lua_touserdata(L, 2));
  lua_rawset(l, LUA_GLOBALSINDEX);
  return 0;
}

/* double.transform_state(tctx) -> buffer watermark | nil, ts_lua's upstream_watermark_bytes */
static int d_transform_state(lua_State *L) {
  fake_transform_ctx *tc = lua_touserdata(L, 1);
  fake_vconn *vc = tc->contp;
  if (vc->vio->buffer) lua_pushnumber(L, (lua_Number)vc->vio->buffer->watermark);
  else lua_pushnil(L);
  lua_pushnumber(L, (lua_Number)tc->upstream_watermark_bytes);
  return 2;
}

/* double.hooks(ctx) -> { [hook id] = count }, has_hook (ts_lua's flag at offset 160) */
static int d_hooks(lua_State *L) {
  fake_http_ctx *ctx = lua_touserdata(L, 1);
  fake_txn *t = txn_of(L);
  lua_newtable(L);
  for (int i = 0; i < 16; i++) {
    if (t->hooks[i]) {
      lua_pushinteger(L, t->hooks[i]);
      lua_rawseti(L, -2, i);
    }
  }
  lua_pushinteger(L, *(int *)((char *)ctx + 160));
  return 2;
}

/* double.set_version(major, minor, patch) */
static int d_set_version(lua_State *L) {
  v_major = (int)luaL_checkinteger(L, 1);
  v_minor = (int)luaL_checkinteger(L, 2);
  v_patch = (int)luaL_checkinteger(L, 3);
  snprintf(version, sizeof version, "%d.%d.%d", v_major, v_minor, v_patch);
  return 0;
}

/* double.setenv(name, value | nil) */
static int d_setenv(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (lua_isnoneornil(L, 2)) unsetenv(name);
  else setenv(name, luaL_checkstring(L, 2), 1);
  return 0;
}

int luaopen_ts_double(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"new_txn", d_new_txn},         {"release", d_release},
      {"chain_length", d_chain_length}, {"set_client_fd", d_set_client_fd},
      {"set_version", d_set_version}, {"setenv", d_setenv},
      {"run", d_run},
      {"set_txn", d_set_txn},         {"outgoing", d_outgoing},
      {"new_transform", d_new_transform}, {"set_cont_info", d_set_cont_info},
      {"transform_state", d_transform_state}, {"hooks", d_hooks},
      {"call", d_call}, {"dns_mode", d_dns_mode}, {"dns_answer", d_dns_answer},
      {"dns_stats", d_dns_stats},
      {"set_server_fd", d_set_server_fd},
      {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
