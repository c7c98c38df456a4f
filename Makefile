# webrtc-gateway: `make run` and `make test` install what is missing (Debian, as root),
# build, and run the gateway or every test.

SHELL := /bin/bash
CARGO ?= cargo

# GStreamer 1.22 development files and plugin sets the gateway needs.
RUN_PACKAGES := pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
# What the tests use besides: ffmpeg/ffprobe decode the outputs, VLC plays them,
# Chromium (headless, fake devices) publishes from the pages.
TEST_PACKAGES := ffmpeg vlc-bin vlc-plugin-base chromium

.PHONY: run test build deps test-deps lint bench clean

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

test-deps: deps
	$(call apt_install,$(TEST_PACKAGES))

build: deps
	$(CARGO) build --release

run: build
	./target/release/webrtc-gateway --config gateway.toml

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: test-deps
	$(CARGO) build --bins
	$(CARGO) test --no-fail-fast

clean:
	$(CARGO) clean

# Benchmarks (not part of `make test`): start-up time and CPU against bare gst-launch.
bench: build
	./target/release/webrtc-gateway-bench
