# Kata-compatible front door for osbuilder.
#
#   make                          build osbuilder (release)
#   make demo                     build, then the main job end to end: a Debian agent-init
#                                 rootfs → initrd → Debian's kernel → boot to the agent
#   make rootfs                   $(DISTRO) rootfs in $(ROOTFS_DIR), with the agent
#   make image                    $(IMAGE) from $(ROOTFS_DIR) (built first if missing)
#   make initrd                   $(INITRD_IMAGE) from $(ROOTFS_DIR) (built first if missing)
#   make all                      image + initrd
#   make smoke                    boot $(INITRD_IMAGE) under QEMU with Debian's kernel
#   make matrix                   print the compatibility matrix
#   make test                     run the test suite (what CI runs)
#   make bench                    run the benchmarks under benches/
#
# Variables follow Kata's osbuilder (tools/osbuilder) where they apply. Unlike Kata, the
# rootfs is rebuilt on every `make rootfs` (no stale marker files; downloads are cached).

CARGO     ?= cargo
OSBUILDER ?= target/release/osbuilder

# --- rootfs (Kata's rootfs.sh variables) ---
# Kata defaults to ubuntu, which needs an Ubuntu mirror (--mirror/REPO_URL); debian's mirror
# is found in the host's APT sources, so a fresh clone builds without any setting.
DISTRO     ?= debian
ARCH       ?=
OS_VERSION ?=
AGENT_INIT ?= no
EXTRA_PKGS ?=
ROOTFS_DIR ?= $(CURDIR)/$(DISTRO)_rootfs
REPO_URL   ?=
AGENT_SOURCE_BIN   ?=
AGENT_TARBALL      ?=
KERNEL_MODULES_DIR ?=
ROOTFS_ONLY        ?= no
BUILD_METHOD       ?= distro
# --- image (Kata's image_builder.sh variables) ---
IMAGE                   ?= kata-containers.img
FS_TYPE                 ?= ext4
ROOT_FREE_SPACE         ?= 0
BLOCK_SIZE              ?= 4096
SKIP_DAX_HEADER         ?= no
MEASURED_ROOTFS         ?= no
IMAGE_SIZE_ALIGNMENT_MB ?= 128
SKIP_ROOTFS_CHECK       ?= no
# --- initrd ---
INITRD_IMAGE       ?= kata-containers-initrd.img
INITRD_COMPRESSION ?= gzip
# --- smoke test ---
KERNEL_DIR ?= $(CURDIR)/kernels/$(if $(ARCH),$(ARCH),host)

yes = $(filter yes true 1,$(1))
comma := ,
empty :=
space := $(empty) $(empty)

ROOTFS_FLAGS := --distro $(DISTRO) \
	$(if $(ARCH),--arch $(ARCH)) \
	$(if $(OS_VERSION),--os-version $(OS_VERSION)) \
	$(if $(call yes,$(AGENT_INIT)),--agent-init,--systemd) \
	$(if $(strip $(EXTRA_PKGS)),--extra-pkgs $(subst $(space),$(comma),$(strip $(EXTRA_PKGS)))) \
	$(if $(REPO_URL),--mirror $(REPO_URL)) \
	$(if $(AGENT_SOURCE_BIN),--agent-bin $(AGENT_SOURCE_BIN)) \
	$(if $(AGENT_TARBALL),--agent-tarball $(AGENT_TARBALL)) \
	$(if $(KERNEL_MODULES_DIR),--kernel-modules $(KERNEL_MODULES_DIR)) \
	$(if $(call yes,$(ROOTFS_ONLY)),--no-agent)

IMAGE_FLAGS := --fs $(FS_TYPE) --free-mb $(ROOT_FREE_SPACE) --block-size $(BLOCK_SIZE) \
	--align-mb $(IMAGE_SIZE_ALIGNMENT_MB) \
	$(if $(call yes,$(SKIP_DAX_HEADER)),--no-dax) \
	$(if $(call yes,$(MEASURED_ROOTFS)),--measured) \
	$(if $(call yes,$(SKIP_ROOTFS_CHECK)),--skip-rootfs-check) \
	$(if $(ARCH),--arch $(ARCH))

.PHONY: all build demo rootfs image initrd smoke matrix test bench clean print-% check-vars

all: image initrd

build:
	$(CARGO) build --release

$(OSBUILDER):
	$(CARGO) build --release

check-vars:
	@case "$(AGENT_INIT)" in yes|no|true|false|1|0) ;; \
	  *) echo "AGENT_INIT must be yes or no (got '$(AGENT_INIT)')" >&2; exit 2;; esac
	@if [ -n "$(USE_DOCKER)$(USE_PODMAN)" ] && [ "$(USE_DOCKER)$(USE_PODMAN)" != "false" ] && [ "$(USE_DOCKER)$(USE_PODMAN)" != "no" ]; then \
	  echo "USE_DOCKER/USE_PODMAN: the container build mode is not available yet; osbuilder builds natively (no root, no Docker). Unset them." >&2; exit 2; fi
	@if [ "$(BUILD_METHOD)" != "distro" ]; then \
	  echo "BUILD_METHOD=$(BUILD_METHOD): only 'distro' is available yet (the dracut mode is not)." >&2; exit 2; fi

# --- demo: what a newcomer runs first (outputs in $(DEMO_DIR); rerunning replaces them) ---
DEMO_DIR  ?= $(CURDIR)/demo
HOST_ARCH := $(shell uname -m)
DEMO_QEMU := $(if $(filter aarch64 arm64,$(HOST_ARCH)),qemu-system-aarch64,qemu-system-x86_64)
DEMO_QEMU_PKG := $(if $(filter aarch64 arm64,$(HOST_ARCH)),qemu-system-arm,qemu-system-x86)

demo:
	@command -v $(CARGO) >/dev/null || { echo "make demo builds osbuilder with cargo (Rust >= 1.85): install it from https://rustup.rs" >&2; exit 2; }
	@command -v $(DEMO_QEMU) >/dev/null || { echo "make demo boots the guest with $(DEMO_QEMU), which is missing: sudo apt-get install --no-install-recommends $(DEMO_QEMU_PKG)" >&2; exit 2; }
	$(CARGO) build --release
	mkdir -p "$(DEMO_DIR)"
	$(OSBUILDER) rootfs --distro debian --agent-init -o "$(DEMO_DIR)/rootfs"
	$(OSBUILDER) initrd "$(DEMO_DIR)/rootfs" -o "$(DEMO_DIR)/kata-containers-initrd.img"
	$(OSBUILDER) kernel fetch -o "$(DEMO_DIR)/kernel"
	$(OSBUILDER) boot --kernel "$(DEMO_DIR)/kernel/vmlinuz" --initrd "$(DEMO_DIR)/kata-containers-initrd.img" --poweroff

rootfs: check-vars $(OSBUILDER)
	$(OSBUILDER) rootfs $(ROOTFS_FLAGS) -o "$(ROOTFS_DIR)"

# Build the rootfs only when it does not exist yet (run `make rootfs` to rebuild).
$(ROOTFS_DIR): | $(OSBUILDER)
	$(MAKE) rootfs

image: check-vars | $(ROOTFS_DIR)
	$(OSBUILDER) image "$(ROOTFS_DIR)" -o "$(IMAGE)" $(IMAGE_FLAGS)

initrd: check-vars | $(ROOTFS_DIR)
	$(OSBUILDER) initrd "$(ROOTFS_DIR)" -o "$(INITRD_IMAGE)" --compression $(INITRD_COMPRESSION)

smoke: $(OSBUILDER)
	$(OSBUILDER) kernel fetch $(if $(ARCH),--arch $(ARCH)) -o "$(KERNEL_DIR)"
	$(OSBUILDER) boot --kernel "$(KERNEL_DIR)/vmlinuz" --initrd "$(INITRD_IMAGE)" --poweroff

matrix: $(OSBUILDER)
	$(OSBUILDER) matrix

# Every test binary runs (--no-fail-fast); the run ends with what was skipped and why.
SKIPS := $(CURDIR)/target/tmp/skips
test:
	@rm -rf "$(SKIPS)"
	@status=0; OSBUILDER_TEST_SKIPS="$(SKIPS)" $(CARGO) test --workspace --no-fail-fast || status=$$?; \
	  tests/skip-summary "$(SKIPS)"; exit $$status

bench:
	benches/initrd.sh
	benches/image.sh
	benches/rootfs.sh
	benches/oci.sh

clean:
	rm -rf "$(ROOTFS_DIR)" "$(ROOTFS_DIR).mtree" "$(ROOTFS_DIR).packages.json" "$(IMAGE)" "$(INITRD_IMAGE)"

print-%:
	@echo '$*=$($*)'
