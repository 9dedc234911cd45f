# ts_ffi — Quick start: `make demo`, `make test`. Both install the Debian packages they need.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := test

TREE      := build/tree
DOUBLE    := build/ts_double.so
BUSTED    := luajit /usr/bin/busted
RUST_MIN  := 1.88
APT_PKGS  := trafficserver trafficserver-dev luajit libluajit-5.1-dev luarocks lua-busted \
             lua-socket libclang-dev clang pkg-config gcc curl wrk nginx-light \
             geoip-database libgeoip1 libmodsecurity3 libmodsecurity-dev modsecurity-crs \
             libmaxminddb0
LUA_SRC   := $(wildcard lua/ts_ffi/*.lua) conf/modsecurity.conf
RUST_SRC  := $(wildcard src/*.rs) build.rs Cargo.toml Cargo.lock

.PHONY: deps rust-check build tree double unit integration cargo-test test demo clean panic-build bench soak soak-waf bench-waf

# Debian packages: installed with apt-get when any is missing (needs root, as on CI).
deps: build/.deps
build/.deps: Makefile
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root (apt-get install $$missing)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mkdir -p build && touch $@

# Rust comes from rustup, not apt: mlua 0.12 needs rustc >= $(RUST_MIN), Debian 12 has 1.63.
rust-check:
	@command -v cargo >/dev/null && command -v rustc >/dev/null || { \
	  echo "ts_ffi needs Rust >= $(RUST_MIN), installed with rustup (Debian's rustc is too old)."; \
	  echo "Install rustup, then run: rustup toolchain install stable"; exit 1; }
	@v=$$(rustc --version | awk '{print $$2}'); \
	if [ "$$(printf '%s\n' $(RUST_MIN) $$v | sort -V | head -1)" != "$(RUST_MIN)" ]; then \
	  echo "ts_ffi needs rustc >= $(RUST_MIN) (mlua 0.12); this rustc is $$v."; \
	  echo "Update it with: rustup update stable"; exit 1; fi

# Builds with cargo and installs ts_ffi.so and the Lua wrappers into $(TREE), via luarocks.
tree: $(TREE)/.stamp
$(TREE)/.stamp: build/.deps $(LUA_SRC) $(RUST_SRC) rockspec/ts_ffi-scm-1.rockspec | rust-check
	luarocks make --tree $(TREE) rockspec/ts_ffi-scm-1.rockspec
	@touch $@

# The test double of the ATS API (spec/double/ts_double.c).
double: $(DOUBLE)
$(DOUBLE): spec/double/ts_double.c build/.deps
	$(CC) -O1 -g -Wall -Wextra -shared -fPIC $$(pkg-config --cflags luajit) $< -o $@ \
	  $$(pkg-config --libs luajit)

# The panic-test build (cargo feature `panic-test`, never shipped): spec/unit/panic_spec.lua.
PANIC_SO := build/panic/ts_ffi.so
panic-build: $(PANIC_SO)
$(PANIC_SO): build/.deps $(RUST_SRC) | rust-check
	cargo build --locked --quiet --features panic-test --target-dir build/panic-target
	@mkdir -p build/panic && cp build/panic-target/debug/libts_ffi.so $@

cargo-test: build/.deps rust-check
	cargo test --release --locked

unit: tree double panic-build
	$(BUSTED) -o TAP | tee build/unit.tap

integration: tree panic-build
	$(BUSTED) --run=integration -o TAP | tee build/integration.tap

test: cargo-test unit integration
	@cat build/unit.tap build/integration.tap | awk '/^ok /{p++} /^not ok /{f++} \
	  END {printf "busted: %d passed, %d failed\n", p, f; exit f > 0}'


demo: tree
	luajit examples/run_demo.lua

# Benchmarks inside the sandboxed traffic_server (per call, JIT on/off) and end to end with wrk
# and an nginx origin; writes BENCHMARKS.md. Not part of `make test`. BENCH_ARGS: see bench/run.lua.
bench: tree
	luajit bench/run.lua $(BENCH_ARGS)

# The WAF part alone (bench/waf.lua: libmodsecurity in C next to ts_ffi.waf, throughput, latency
# of requests that skip the WAF); replaces only the WAF section of BENCHMARKS.md.
bench-waf: tree
	luajit bench/run.lua --only waf $(BENCH_ARGS)

# Soak: 60 s of wrk through the proxy after a 15 s warm-up; zero non-2xx, zero socket errors,
# ts_ffi agreeing with ts_lua, traffic_server RSS growth < 5%. (`make test` runs 10 s of it.)
SOAK_SECONDS ?= 60
soak: tree
	TS_FFI_SOAK_SECONDS=$(SOAK_SECONDS) TS_FFI_SOAK_WARMUP=15 TS_FFI_SOAK_RSS=1 \
	  $(BUSTED) --run=integration spec/integration/soak_spec.lua

# WAF soak: 100 reloads under load (spec/integration/waf_robust_spec.lua; make test runs 10).
WAF_RELOADS ?= 100
soak-waf: tree
	TS_FFI_WAF_RELOADS=$(WAF_RELOADS) $(BUSTED) --run=integration --filter=reloads \
	  spec/integration/waf_robust_spec.lua

clean:
	rm -rf build target
