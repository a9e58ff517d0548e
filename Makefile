# stoney conductor. `make demo` and `make test` install what they need first.
# Evaluated when used, so a Go installed by `deps` is found.
GO       = $(shell command -v go 2>/dev/null || echo /usr/lib/go-1.23/bin/go)
PKGS    := ./...
export CGO_ENABLED := 1

.PHONY: all deps build test vet fmtcheck bench demo crashtest clean

all: build

deps:
	bash deploy/install-deps.sh

build:
	$(GO) build -o bin/ ./controld ./nodebackupd

vet:
	$(GO) vet $(PKGS)

fmtcheck:
	@out="$$($(GO) run cmd/gofmt -l $$(find . -name '*.go' -not -path './.demo/*'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The whole suite, against a real slapd and a real libvirtd started by the tests.
# The operation-level crash points run as a fixed sample (docs/crashes.md).
test: deps
	$(MAKE) fmtcheck vet
	CRASHTEST_POINTS=sample $(GO) test -count=1 -timeout 20m -p 2 $(PKGS)

# Go benchmarks; figures are ratios against a baseline measured in the same run.
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 5x -timeout 30m ./libvirt/ ./internal/e2e/ ./controld/control/ ./nodebackupd/node/

# Kill nodebackupd and controld at every step boundary of a backup and a
# restore, and slapd and libvirtd mid-workflow; then crash the node before and
# after every host operation of every step, and fail each operation (EIO,
# ENOSPC); kill libvirtd after its calls; then put a second fault into every
# operation only a rollback, a re-run or a tidy does. One line per point, then
# the totals. `make test` runs a sample.
# Replay one point: make crashtest CRASHTEST_RUN=TestOpPoints CRASHTEST_POINTS='backup/running#17:crash-after'
CRASHTEST_POINTS ?= all
CRASHTEST_RUN    ?= TestCrashPoints|TestLeftoverScan|TestOpPointSelection|TestChainPoints|TestOpPoints
crashtest: deps
	CRASHTEST_POINTS='$(CRASHTEST_POINTS)' $(GO) test -count=1 -v -timeout 4h -run '$(CRASHTEST_RUN)' ./internal/crashtest/

# Back up three tiny VMs on a private slapd and libvirtd, printing each step.
# STAY=1 keeps the demo's directory, VMs and web UI up after its checks.
demo: deps build
	$(GO) run ./internal/demo $(if $(STAY),-stay)

clean:
	rm -rf bin
