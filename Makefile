# The two set-up commands of the README:
#   make run   installs dependencies, builds Release, starts a local cluster on
#              the bundled model (`strata cluster up`: a router and REPLICAS
#              replicas of TP x PP worker ranks), streams a sample story,
#              serves until Ctrl-C. `make run TP=1 PP=1` runs one process per
#              replica; PORT=50051 pins the router's port (default: any free).
#   make test  installs dependencies, builds, runs every test through ctest,
#              then the engine's tests again under ASan and UBSan (test-asan).
# Other targets: build, deps, bench, format, clean.

BUILD_DIR ?= build
BUILD_TYPE ?= Release
MODEL ?= models/stories260k
TP ?= 2
PP ?= 2
REPLICAS ?= 1
PORT ?=
CTEST_ARGS ?=
ASAN_BUILD_DIR ?= build-asan
JOBS ?= $(shell nproc)

# ccache keys on paths relative to the repository, so a clone in another
# folder reuses the cache.
export CCACHE_BASEDIR := $(CURDIR)

.PHONY: all deps configure build test test-asan run bench format clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	ninja -C $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)
	@$(MAKE) --no-print-directory test-asan

# The engine's tests (scheduler, KV block accounting under 1,000 random
# requests with cancels, prefix cache, batched-equals-sequential on the bundled
# model) built with AddressSanitizer (leaks included) and UBSan: only what
# they need is built, so this adds minutes, not a second full build.
ASAN_TESTS := engine_test engine_reference_test
test-asan: deps
	cmake -S . -B $(ASAN_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DSTRATA_WITH_CUDA=OFF -DSTRATA_BUILD_BENCH=OFF -DSTRATA_SANITIZE=address,undefined
	ninja -C $(ASAN_BUILD_DIR) -j $(JOBS) $(ASAN_TESTS)
	for t in $(ASAN_TESTS); do \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(ASAN_BUILD_DIR)/tests/worker/engine/$$t --gtest_brief=1 || exit 1; \
	done

run: configure
	ninja -C $(BUILD_DIR) -j $(JOBS) strata-worker strata-router strata
	$(BUILD_DIR)/cli/strata cluster up --model $(MODEL) --tp $(TP) --pp $(PP) \
	  --replicas $(REPLICAS) $(if $(PORT),--router-port $(PORT)) --sample-prompt "Once upon a time"

bench: configure
	ninja -C $(BUILD_DIR) -j $(JOBS) strata-model-bench strata-stream-bench strata-bench strata-engine-bench

format:
	git ls-files '*.cc' '*.h' '*.cu' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
