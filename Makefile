# dropship — common tasks. `make test` is what CI runs (see .ci/run).

GO       ?= go
PKGS     ?= ./...
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)

.PHONY: all build test lint fmt-check vet staticcheck race tidy-check bench bench-wan package package-test clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dropship ./cmd/dropship

## test: vet, staticcheck, and every test with the race detector.
test: lint race

lint: fmt-check vet staticcheck tidy-check

## fmt-check: every Go file is gofmt'ed.
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) tool staticcheck $(PKGS)

race:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## tidy-check: go.mod and go.sum are tidy.
tidy-check:
	$(GO) mod tidy -diff

clean:
	rm -rf bin dist

## package: dist/dropship_<version>-1_<arch>.deb and dist/dropship-<version>-1.<arch>.rpm,
## built by nfpm from packaging/nfpm.yaml (nfpm runs pinned through `go run`, not from go.mod;
## v2.45.2 is the newest whose dependencies all come from the Go module proxy).
NFPM        ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
PKG_VERSION ?= $(shell sh packaging/version.sh $(VERSION))
PKG_ARCH    ?= $(shell $(GO) env GOARCH)
DIST        ?= dist

.PHONY: package package-test

package:
	GOOS=linux GOARCH=$(PKG_ARCH) $(MAKE) build
	mkdir -p $(DIST)
	rm -f $(DIST)/dropship_*.deb $(DIST)/dropship-*.rpm
	sh packaging/default-config.sh agent.toml.example >$(DIST)/agent.toml
	gzip -9n <docs/dropship.1 >$(DIST)/dropship.1.gz
	PKG_VERSION=$(PKG_VERSION) PKG_ARCH=$(PKG_ARCH) DIST=$(DIST) $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(DIST)/
	PKG_VERSION=$(PKG_VERSION) PKG_ARCH=$(PKG_ARCH) DIST=$(DIST) $(NFPM) package --config packaging/nfpm.yaml --packager rpm --target $(DIST)/

## package-test: build the packages and check their contents, metadata, lintian and the unit
## (packaging/test-packages.sh; CI adds --install: install, run, upgrade, remove and purge the .deb).
package-test:
	bash packaging/test-packages.sh

## bench: issue 8's benchmark, side by side with OpenSSH on a loopback sshd (about 5 minutes on
## 2 cores; needs sshd, scp, tar and inotifywait). Prints the table and saves it as
## bench/results/<UTC time>.md and bench/results/latest.md; see bench/README.md.
## DROPSHIP_BENCH_STRICT=1 makes a missed target fail the run.
bench:
	DROPSHIP_BENCH=1 $(GO) test ./bench -run '^TestBench$$' -v -count=1 -timeout 60m

## bench-wan: issue 11's WAN benchmark: the same tools through toxiproxy (in the test process)
## at 25 ms and then 100 ms each way: dropship beside rsync, tar | ssh, scp and sftp (about 20
## minutes on 2 cores; also needs rsync). Saves bench/results/wan-<UTC time>.md and
## bench/results/wan-latest.md. DROPSHIP_BENCH_QUICK=1 is a smoke run with small sizes that saves
## nothing; DROPSHIP_BENCH_WAN_TIMEOUT=5m is the time one tool may take for one row.
bench-wan:
	DROPSHIP_BENCH_WAN=1 $(GO) test ./bench -run '^TestBenchWAN$$' -v -count=1 -timeout 90m

## bench-fleet: issue 16's fleet benchmark: three agents against an R3 stream on a 3-node
## JetStream cluster on loopback (in-process nats-servers): a 300-file burst per agent, then
## leader step-downs, kills of the leader's node and a whole-cluster restart under traffic
## (under a minute on 2 cores; needs the OpenSSH client). Prints events/s, delivery-to-stored
## latency and the stalls beside issue 16's targets; saves bench/results/fleet-<UTC time>.md
## and bench/results/fleet-latest.md. DROPSHIP_BENCH_QUICK=1 is a smoke run that saves nothing.
.PHONY: bench-fleet
bench-fleet:
	DROPSHIP_BENCH_FLEET=1 $(GO) test ./bench -run '^TestBenchFleet$$' -v -count=1 -timeout 30m

## package-live: the packaged service under a real systemd: boots a minimal Debian 12 under
## systemd-nspawn (rootfs debootstrapped once, cached in /var/cache/dropship-live) and tests the
## .deb's unit live with an sshd as target, then the .rpm with `rpm --root`
## (packaging/live-test.sh, packaging/NOTES.md). Root; about 5 minutes fresh, 3 once cached.
.PHONY: package-live
package-live:
	bash packaging/live-test.sh
