# solargw: the two commands a newcomer types are `make image` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

# Debian packages the tests and the image build need (all from Debian's archive).
APT_PACKAGES := \
	mosquitto mosquitto-clients nats-server \
	dnsmasq-base hostapd wpasupplicant iw nftables iproute2 \
	chromium fonts-dejavu-core \
	sqlite3 xz-utils zstd \
	debootstrap qemu-user-static binfmt-support qemu-system-arm qemu-utils \
	genimage dosfstools mtools e2fsprogs fdisk \
	device-tree-compiler openssl vagrant

.PHONY: deps apt-deps python-deps test test-fast test-slow test-image image demo bench lint clean

deps: apt-deps python-deps

apt-deps: .deps/apt.stamp
.deps/apt.stamp: Makefile
	@mkdir -p .deps
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

python-deps: .deps/python.stamp
.deps/python.stamp: pyproject.toml
	@mkdir -p .deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

test-fast: deps
	$(PYTEST) -m "not slow and not netns and not browser and not image"

test-slow: deps
	$(PYTEST) -m "slow or netns or browser"

test: deps
	$(PYTEST)

bench: deps
	$(PY) -m bench

lint: deps
	$(VENV)/bin/ansible-lint ansible/

clean:
	rm -rf .deps build .pytest_cache
