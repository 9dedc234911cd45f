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
  int server_fd; /* -1: no origin connection (the default) */
} fake_txn;

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

void *_TSmalloc(size_t size, const char *path) { (void)path; return malloc(size); }
void _TSfree(void *p) { free(p); }

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
  lua_xmove(l, L, nres);
  return nres + 1;
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
      {"set_server_fd", d_set_server_fd},
      {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
