# dropship — common tasks. `make test` is what CI runs (see .ci/run).

GO       ?= go
PKGS     ?= ./...
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)

.PHONY: all build test lint vet staticcheck race tidy-check bench package clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dropship ./cmd/dropship

## test: vet, staticcheck, and every test with the race detector.
test: lint race

lint: vet staticcheck

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
