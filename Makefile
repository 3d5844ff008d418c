# trustflow — make help lists the targets.
GO       ?= go
PG_URL   ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: help build test test-pg lint bench fuzz ci

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build ./bin/trustflow
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/trustflow ./cmd/trustflow

test: ## run the tests (SQLite; PostgreSQL too when TRUSTFLOW_TEST_DATABASE_URL is set)
	$(GO) test ./...

test-pg: ## run the tests against SQLite and the local PostgreSQL
	TRUSTFLOW_TEST_DATABASE_URL='$(PG_URL)' $(GO) test -count=1 ./...

lint: ## gofmt and go vet
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: ## run the benchmarks (SQLite and PostgreSQL)
	TRUSTFLOW_TEST_DATABASE_URL='$(PG_URL)' $(GO) test -run '^$$' -bench . -benchmem ./...

fuzz: ## run each fuzz target for 20s
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "$$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$pkg || exit 1; \
	  done; done

ci: ## what CI runs
	bash .ci/run
