# mailpopbox — build, test, run, bench.
#
# Every user-facing target first makes sure the Debian packages it needs are
# installed (we are root on a fresh bookworm machine), so each one works as
# the first command typed.

CC      ?= gcc
BUILD   := build
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
ifeq ($(CI),true)
WARN    += -Werror
endif
CPPFLAGS := -D_GNU_SOURCE -I. -MMD -MP
LDLIBS  := -luring -lssl -lcrypto -lcrypt -lcares -ljemalloc -lpthread

ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
              -fno-sanitize-recover=undefined

PROTO_SRC := $(wildcard proto/*.c)
STORE_SRC := $(wildcard store/*.c)
CORE_SRC  := $(filter-out core/main.c,$(wildcard core/*.c))
LIB_SRC   := $(PROTO_SRC) $(STORE_SRC) $(CORE_SRC)
BENCH_SRC := $(wildcard bench/*.c)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)

LIB_OBJ      := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB_OBJ_ASAN := $(LIB_SRC:%.c=$(BUILD)/asan/%.o)

# Runtime and test dependencies, all from Debian.
DEB_BUILD := build-essential pkg-config liburing-dev libssl-dev libjemalloc-dev \
             libcriterion-dev libc-ares-dev libcrypt-dev clang libclang-rt-14-dev
DEB_TEST  := openssl swaks libnet-ssleay-perl curl python3 fetchmail procps postfix dnsmasq-base \
             python3-fusepy e2fsprogs
DEB_BENCH := postfix dovecot-pop3d gnuplot-nox

.PHONY: all test unit integration fuzz run bench clean format lint deps deps-test deps-bench asan test-ktls
all: deps $(BUILD)/mailpopbox $(BUILD)/mailpopbox-bench

# apt-get only when something is missing; postfix must not start or ask.
define apt_need
	@missing=""; for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
endef

deps:
	$(call apt_need,$(DEB_BUILD))
deps-test: deps
	$(call apt_need,$(DEB_TEST))
deps-bench: deps
	$(call apt_need,$(DEB_BENCH))

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -c $< -o $@
$(BUILD)/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ASAN_FLAGS) $(WARN) -c $< -o $@

$(BUILD)/mailpopbox: $(BUILD)/obj/core/main.o $(LIB_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/mailpopbox-asan: $(BUILD)/asan/core/main.o $(LIB_OBJ_ASAN)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(filter-out -ljemalloc,$(LDLIBS))
$(BUILD)/mailpopbox-bench: $(BENCH_SRC:%.c=$(BUILD)/obj/%.o)
	$(CC) $(CFLAGS) -o $@ $^ -luring -lssl -lcrypto -ljemalloc -lpthread -lm

# Unit tests: criterion, built with ASan+UBSan against the pure modules
# (proto/, store/) and the parts of core/ that need no ring.
UNIT_CORE := core/toml.c core/config.c
UNIT_OBJ  := $(patsubst %.c,$(BUILD)/asan/%.o,$(PROTO_SRC) $(STORE_SRC) $(wildcard $(UNIT_CORE)))
$(BUILD)/unit/%: tests/unit/%.c $(UNIT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ASAN_FLAGS) $(WARN) -o $@ $(filter %.c %.o,$^) -lcriterion $(filter-out -ljemalloc,$(LDLIBS))

UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/unit/%)

asan: deps $(BUILD)/mailpopbox-asan

unit: deps $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 $$t --jobs=2; done

integration: deps-test $(BUILD)/mailpopbox $(BUILD)/mailpopbox-asan
	python3 tests/integration/run.py

# libFuzzer targets: clang, bounded time per target.
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 20
$(BUILD)/fuzz/%: tests/fuzz/%.c $(PROTO_SRC)
	@mkdir -p $(dir $@)
	clang -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined -o $@ $(filter %.c,$^)
$(BUILD)/fuzz/fuzz_queue: store/queue.c store/sync.c store/dir.c
fuzz: deps $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do echo "== $$f ($(FUZZ_SECONDS)s)"; \
	  mkdir -p $(BUILD)/corpus/$$(basename $$f); \
	  if ! $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=0 \
	       -artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/corpus/$$(basename $$f) \
	       tests/fuzz/corpus/$$(basename $$f) >$(BUILD)/fuzz/$$(basename $$f).log 2>&1; then \
	    tail -60 $(BUILD)/fuzz/$$(basename $$f).log; exit 1; fi; \
	  tail -1 $(BUILD)/fuzz/$$(basename $$f).log; done

test: deps-test unit fuzz integration test-ktls

# --- test-ktls: the kernel TLS path, on Debian's kernel under qemu (TCG) ---
# This machine's kernel has no `tls` module; see tests/ktls/run.sh.
test-ktls: deps $(BUILD)/mailpopbox
	tests/ktls/run.sh
# --- end test-ktls ---

# SPEC 2: a development certificate generated on first use.
var/example.test.crt:
	@mkdir -p var
	openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
	  -addext "subjectAltName=DNS:localhost,DNS:example.test,IP:127.0.0.1" \
	  -keyout var/example.test.key -out var/example.test.crt 2>/dev/null
	chmod 600 var/example.test.key

run: all var/example.test.crt
	$(BUILD)/mailpopbox mailpopbox.toml

bench: deps-bench all
	bench/run.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

lint:
	clang-tidy --quiet $$(git ls-files '*.c') -- $(CPPFLAGS) 2>/dev/null | grep -E 'warning|error' || true
	cppcheck --quiet --enable=warning,performance,portability --inline-suppr -I. core proto store bench

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
