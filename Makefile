# webrtc-gateway: `make run` and `make test` install what is missing (Debian, as root),
# build, and run the gateway or every test.

SHELL := /bin/bash
CARGO ?= cargo

# GStreamer 1.22 development files and plugin sets the gateway needs.
RUN_PACKAGES := pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
# What the tests use besides: ffmpeg/ffprobe decode the outputs, VLC plays them,
# Chromium and Firefox ESR (headless, fake devices, over WebDriver: chromedriver from
# chromium-driver, geckodriver below) publish from the pages and play HLS in them;
# Varnish, with the README's configuration, is the shared cache of `tests/cache.rs`;
# redis-server holds the cluster of `tests/cluster.rs`, HAProxy (the README's
# configuration) is its one address; `tests/networks.rs` builds networks of namespaces
# (iproute2: `ip netns`, veth, `tc tbf`; nftables: NAT, firewalls, loss) with coturn as
# the TURN server.
TEST_PACKAGES := ffmpeg vlc-bin vlc-plugin-base chromium chromium-driver firefox-esr varnish redis-server haproxy coturn nftables iproute2

.PHONY: run test build build-tools deps test-deps apt-pkgs lint bench bench-abuse bench-latency bench-passthrough bench-cache bench-upload bench-cluster bench-access bench-soak bench-networks fuzz clean

# Installs the given Debian packages that are not installed yet.
define apt_install
	@missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi
endef

deps:
	$(call apt_install,$(RUN_PACKAGES))

# hls.js for the dashboard, from the npm registry (never committed). Defined before the
# rules that need it: make expands a rule's prerequisites as it reads the rule.
HLS_JS := node_modules/hls.js/dist/hls.min.js

# Python tools the tests use (aiortc as a WHIP client, a Prometheus parser), from PyPI.
VENV := target/venv
PYTHON_PACKAGES := aiortc aiohttp prometheus-client

# geckodriver, Firefox's WebDriver server, is not packaged in Debian 12: built from
# crates.io into an ignored folder, once.
GECKODRIVER_VERSION := 0.37.1
GECKODRIVER := target/tools/bin/geckodriver

# s3s-fs, an S3-compatible server over a directory that checks SigV4 signatures: the
# object store of `tests/upload.rs`. From crates.io into the same ignored folder, once
# (0.14.1: later releases need a newer rustc).
S3S_FS_VERSION := 0.14.1
S3S_FS := target/tools/bin/s3s-fs

test-deps: deps $(HLS_JS) $(GECKODRIVER) $(S3S_FS)
	$(call apt_install,$(TEST_PACKAGES))
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV) || { \
		$(MAKE) --no-print-directory PKGS=python3-venv apt-pkgs && python3 -m venv $(VENV); }
	@$(VENV)/bin/python -c "import aiortc, aiohttp, prometheus_client" 2>/dev/null || \
		$(VENV)/bin/pip install -q $(PYTHON_PACKAGES)

apt-pkgs:
	$(call apt_install,$(PKGS))

$(HLS_JS): package.json
	@command -v npm >/dev/null || $(MAKE) --no-print-directory PKGS="nodejs npm" apt-pkgs
	npm install --no-audit --no-fund --no-package-lock
	@touch $(HLS_JS)

$(GECKODRIVER):
	$(CARGO) install geckodriver --version $(GECKODRIVER_VERSION) --locked --root target/tools

$(S3S_FS):
	$(CARGO) install s3s-fs --version $(S3S_FS_VERSION) --locked --features binary --root target/tools

# The gateway alone: its tools (the publisher, the benchmark) are crates of their own.
build: deps
	$(CARGO) build --release -p webrtc-gateway --bin webrtc-gateway

# The gateway, the test publisher and the benchmark, in release mode (the benchmark runs
# the release gateway and publisher beside it).
build-tools: deps
	$(CARGO) build --release --workspace --bins

run: build $(HLS_JS)
	./target/release/webrtc-gateway --config gateway.toml

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The tests run the test publisher of crates/publish: every binary of the workspace is
# built first (cargo builds only the tested package's own for its tests).
# The suite runs under cargo-nextest (tests/nextest.toml): each test a process of its own,
# the test files side by side, the timing tests alone. Installed from crates.io where the
# machine lacks it.
test: test-deps
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --config-file tests/nextest.toml
	$(CARGO) test --workspace --doc

# The property tests of `make test` with FUZZ_CASES times their cases (1000 unless set),
# from the same fixed seed unless FUZZ_SEED is set.
FUZZ_CASES ?= 1000
fuzz: deps
	FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release --test properties

clean:
	$(CARGO) clean

# Benchmarks (not part of `make test`): start-up time and CPU against bare gst-launch.
bench: build-tools
	./target/release/webrtc-gateway-bench startup

# What hostile clients cost, with the default limits: memory around 2,000 idle
# WebSockets, datagrams under a candidate flood, the time a silent publisher is held.
bench-abuse: build-tools
	./target/release/webrtc-gateway-bench abuse --json target/bench-abuse.json

# H.264 publishers passed through (transcode.mode = "auto") against the same publishers
# transcoded, at 1280x720: receive-only cost, capacity, cores and RSS per stream.
bench-passthrough: build-tools
	./target/release/webrtc-gateway-bench passthrough --sizes 1280x720 --seconds 10 --max-passthrough 256 --max-streams 32 --json target/bench-passthrough.json

# Simulated low-latency viewers (1, 10, 100, 1,000) through Varnish with the README's
# configuration, and straight at the gateway: the requests a second that reach the
# gateway, how far behind live the viewers are, the time the cache adds.
bench-cache: build-tools test-deps
	./target/release/webrtc-gateway-bench cache --seconds 15 --json target/bench-cache.json

# Two nodes sharing a Redis behind HAProxy (the README's configuration): what forwarding
# adds to a playlist, a part and a segment; Redis commands per node and per stream; the
# time from SIGKILL of a node to its publisher live again on the other.
bench-cluster: build-tools test-deps
	./target/release/webrtc-gateway-bench cluster --seconds 20 --json target/bench-cluster.json

# 16 transcoded streams recorded to MP4, on disk only against also uploaded to s3s-fs
# (with a 512 MiB backlog from before uploading meanwhile): frame rate, delay, upload rate.
bench-upload: build-tools test-deps
	./target/release/webrtc-gateway-bench upload --only 16 --sizes 640x360 --seconds 30 --json target/bench-upload.json

# Glass-to-glass latency of RTP (ffmpeg) and HLS (hls.js in headless Chromium) in each HLS
# variant, and 1,000 held playlist requests. Needs what `make test-deps` installs.
bench-latency: build-tools test-deps
	./target/release/webrtc-gateway-bench latency --seconds 15 --json target/bench-latency.json

# What the publish and read hooks cost (a hook server on loopback): a WHIP offer's answer
# without and with a publish hook, and the read-hook calls of one low-latency viewer.
bench-access: build-tools
	./target/release/webrtc-gateway-bench access --seconds 60 --json target/bench-access.json

# The gateway for SOAK_MINUTES (60 unless set) under churn, killed and restarted a third of
# the way: samples RSS, descriptors, threads, tasks, allocators, HLS and recording
# directories and counters; fails when any trends upward over the last half, or when
# memory is not back near its start once every stream has ended (README, "Memory").
SOAK_MINUTES ?= 60
bench-soak: build-tools
	./target/release/webrtc-gateway-bench soak --soak $(SOAK_MINUTES) --json target/bench-soak.json

# One UDP port for every publisher against a socket per publisher, in one run: cores and
# RSS per passed-through stream at 32 and 128 publishers, UDP sockets and threads, offer
# to answer and ICE connected to live; then 10 publications each over UDP, ICE-TCP (its
# port and the HTTP port) and relayed through coturn (Debian's, on loopback).
bench-networks: build-tools
	$(call apt_install,coturn)
	./target/release/webrtc-gateway-bench networks --publishers 32,128 --seconds 10 --timed 10 --json target/bench-networks.json
