# solargw: the two commands a newcomer types are `make image` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

# Debian packages the tests and the image build need (all from Debian's archive).
APT_PACKAGES := \
	mosquitto mosquitto-clients nats-server \
	dnsmasq-base hostapd wpasupplicant iw nftables iproute2 busybox \
	chromium fonts-dejavu-core \
	sqlite3 xz-utils zstd \
	debootstrap qemu-user-static binfmt-support qemu-system-arm qemu-utils \
	genimage dosfstools mtools e2fsprogs fdisk openssh-client \
	device-tree-compiler openssl vagrant \
	cpp git python3

.PHONY: deps apt-deps python-deps firmware-tools test test-fast test-slow test-image test-ha ha-rootfs image demo bench lint clean

deps: apt-deps python-deps firmware-tools

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

# The ROM-bootloader flasher behind `solargw firmware flash`: cc1352-flasher is the PyPI
# packaging of cc2538-bsl (same options, --bootloader-sonoff-usb included). Its metadata pins
# stale setuptools/gpiod/python-magic that only its BeagleBoard GPIO mode uses, so it goes in
# without them; what it runs on (pyserial, intelhex) is in pyproject.toml.
firmware-tools: .deps/firmware-tools.stamp
.deps/firmware-tools.stamp: .deps/python.stamp
	$(PY) -m pip install -q --no-deps 'cc1352-flasher==3.0a7'
	@touch $@

test-fast: deps
	$(PYTEST) -m "not slow and not netns and not browser and not image"

test-slow: deps
	$(PYTEST) -m "slow or netns or browser"

# Every tier: the package's tests (the Home Assistant tier included), then the SD-card image
# built and booted in QEMU (test-image).
test: deps ha-rootfs
	$(PYTEST) -m "not image"
	$(MAKE) --no-print-directory test-image

bench: deps
	$(PY) -m bench

# The whole appliance on this PC: web UI, mosquitto, the Zigbee service on the emulated coordinator,
# four simulated Enecsys inverters on the radio, three behind a simulated Enecsys gateway and three simulated
# NEP inverters, with a week of history. Prints the URL and password; Ctrl-C stops it.
demo: deps
	$(PY) -m appliance demo

lint: deps
	$(VENV)/bin/ansible-lint ansible/

clean:
	rm -rf .deps build .pytest_cache

# The SD-card image (as root): build/solargw-<version>-arm64.img.xz + .sha256.
# Caches (base rootfs, apt archives) in $(SOLARGW_IMAGE_CACHE), outside the repo.
SOLARGW_IMAGE_CACHE ?= /var/cache/solargw-image
export SOLARGW_IMAGE_CACHE
image: deps
	$(PY) image/build.py

# Builds the raw image (what `make image` compresses: xz adds ~2 minutes and nothing to test), runs
# the playbook a second time on its root file system (nothing may change), boots it in QEMU
# (-M virt and -M raspi3b) and checks it from outside. Needs root.
test-image: deps
	$(PY) image/build.py --no-compress
	$(PYTEST) -m image tests/test_ansible.py tests/test_image.py

# The `ha` tier (as root): a real Home Assistant against the appliance's services. Its release is
# pinned in tests/support/ha_rootfs.py (HA_VERSION; or run `make test-ha SOLARGW_HA_VERSION=x.y.z`), installed
# in a Debian root file system cached in $(SOLARGW_HA_CACHE), outside the repo.
SOLARGW_HA_CACHE ?= /var/cache/solargw-ha
export SOLARGW_HA_CACHE
ha-rootfs: deps
	$(PY) tests/support/ha_rootfs.py

test-ha: ha-rootfs
	$(PYTEST) -m ha
