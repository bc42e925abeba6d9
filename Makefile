# The two set-up commands of the README:
#   make run   installs dependencies, builds Release, starts a local cluster on
#              the bundled model (`strata cluster up`: a router and REPLICAS
#              replicas of TP x PP worker ranks), streams a sample story,
#              serves until Ctrl-C. `make run TP=1 PP=1` runs one process per
#              replica; PORT=50051 pins the router's port (default: any free).
#   make test  installs dependencies, builds, runs every test through ctest.
# Other targets: build, deps, bench, format, clean.

BUILD_DIR ?= build
BUILD_TYPE ?= Release
MODEL ?= models/stories260k
TP ?= 2
PP ?= 2
REPLICAS ?= 1
PORT ?=
CTEST_ARGS ?=
JOBS ?= $(shell nproc)

# ccache keys on paths relative to the repository, so a clone in another
# folder reuses the cache.
export CCACHE_BASEDIR := $(CURDIR)

.PHONY: all deps configure build test run bench format clean

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
