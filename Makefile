# Kata-compatible front door for osbuilder.
#
#   make                          build osbuilder (release)
#   make demo                     build, then the main job end to end: a Debian agent-init
#                                 rootfs → initrd → Debian's kernel → boot to the agent
#   make rootfs                   $(DISTRO) rootfs in $(ROOTFS_DIR), with the agent
#                                 (PACKAGE_SET=minimal, KEEP_DOCS=yes: docs/slim.md)
#                                 (USE_PODMAN=true / USE_DOCKER=true: in a builder container;
#                                 BUILD_METHOD=dracut: the host's dracut initrd, unpacked)
#   make image                    $(IMAGE) from $(ROOTFS_DIR) (built first if missing)
#   make initrd                   $(INITRD_IMAGE) from $(ROOTFS_DIR) (built first if missing;
#                                 BUILD_METHOD=dracut: straight from dracut, no rootfs)
#   make all                      image + initrd
#   make smoke                    boot $(INITRD_IMAGE) under QEMU with Debian's kernel
#   make release                  build $(RELEASE_FILE) and write Kata's release tree in
#                                 $(RELEASE_DIR) (docs/release.md); ARCH=aarch64 builds one arch
#                                 (a CI job), MERGE="out-x86_64 out-aarch64" merges such runs
#   make matrix                   print the compatibility matrix
#   make test                     run the test suite (what CI runs)
#   make test-xen                 boot the host profiles: Xen + dom0 + a bundled guest (aarch64),
#                                 the baremetal host under OVMF (x86_64) and AAVMF (aarch64);
#                                 minutes under TCG (26 min on the shared 2-core machine)
#   make boot-matrix              build and boot every distro × arch × init × artifact cell
#                                 reachable from here, one at a time, and print a table
#                                 (tests/boot_matrix.rs; not part of `make test`: 8 min
#                                 under TCG on the shared 2-core machine). BOOT_MATRIX_CELLS=
#                                 "debian x86_64,alpine" runs only the cells naming those words
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
REPO_URL   ?=
AGENT_SOURCE_BIN   ?=
AGENT_TARBALL      ?=
KERNEL_MODULES_DIR ?=
ROOTFS_ONLY        ?= no
# distro | dracut (Kata's variables; dracut: the host is the base, see docs/dracut.md)
BUILD_METHOD       ?= distro
# Kata's container build mode: the distro's own installer in a builder container.
# USE_DOCKER wins when both are set; empty, false, no and 0 mean off.
USE_DOCKER         ?=
USE_PODMAN         ?=
# Slim guests (docs/slim.md): PACKAGE_SET=minimal installs only what an agent guest needs;
# KEEP_DOCS=yes keeps the docs, man pages and translations the distro's path filters drop.
PACKAGE_SET        ?= default
KEEP_DOCS          ?= no
DRACUT_KVERSION    ?=
DRACUT_KMODDIR     ?=
DRACUT_PROFILES    ?= kata
ifeq ($(BUILD_METHOD),dracut)
ROOTFS_DIR ?= $(CURDIR)/dracut_rootfs
else
ROOTFS_DIR ?= $(CURDIR)/$(DISTRO)_rootfs
endif
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
on = $(filter-out false no 0,$(strip $(1)))
BUILDER := $(if $(call on,$(USE_DOCKER)),docker,$(if $(call on,$(USE_PODMAN)),podman,native))
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
	$(if $(call yes,$(ROOTFS_ONLY)),--no-agent) \
	$(if $(filter-out default,$(PACKAGE_SET)),--package-set $(PACKAGE_SET)) \
	$(if $(call yes,$(KEEP_DOCS)),--keep-docs) \
	--builder $(BUILDER)

AGENT_FLAGS := $(if $(call yes,$(AGENT_INIT)),--agent-init,--systemd) \
	$(if $(AGENT_SOURCE_BIN),--agent-bin $(AGENT_SOURCE_BIN)) \
	$(if $(AGENT_TARBALL),--agent-tarball $(AGENT_TARBALL)) \
	$(if $(call yes,$(ROOTFS_ONLY)),--no-agent)

DRACUT_FLAGS := --method dracut $(AGENT_FLAGS) \
	$(foreach p,$(DRACUT_PROFILES),--profile $(p)) \
	$(if $(DRACUT_KVERSION),--kver $(DRACUT_KVERSION)) \
	$(if $(DRACUT_KMODDIR),--kmoddir $(DRACUT_KMODDIR))

IMAGE_FLAGS := --fs $(FS_TYPE) --free-mb $(ROOT_FREE_SPACE) --block-size $(BLOCK_SIZE) \
	--align-mb $(IMAGE_SIZE_ALIGNMENT_MB) \
	$(if $(call yes,$(SKIP_DAX_HEADER)),--no-dax) \
	$(if $(call yes,$(MEASURED_ROOTFS)),--measured) \
	$(if $(call yes,$(SKIP_ROOTFS_CHECK)),--skip-rootfs-check) \
	$(if $(ARCH),--arch $(ARCH))

.PHONY: all build demo rootfs image initrd smoke release matrix test test-xen boot-matrix bench clean print-% check-vars

all: image initrd

build:
	$(CARGO) build --release

$(OSBUILDER):
	$(CARGO) build --release

check-vars:
	@case "$(AGENT_INIT)" in yes|no|true|false|1|0) ;; \
	  *) echo "AGENT_INIT must be yes or no (got '$(AGENT_INIT)')" >&2; exit 2;; esac
	@case "$(BUILD_METHOD)" in distro|dracut) ;; \
	  *) echo "BUILD_METHOD must be distro or dracut (got '$(BUILD_METHOD)')" >&2; exit 2;; esac
	@if [ "$(BUILD_METHOD)" = dracut ] && [ "$(BUILDER)" != native ]; then \
	  echo "BUILD_METHOD=dracut builds from the host's dracut: unset USE_DOCKER/USE_PODMAN" >&2; exit 2; fi

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

# Packing needs no container: with USE_DOCKER/USE_PODMAN only the rootfs is built in one.
ifneq ($(BUILDER),native)
ifneq ($(filter image initrd all,$(or $(MAKECMDGOALS),all)),)
$(info USE_DOCKER/USE_PODMAN: the rootfs is built with --builder $(BUILDER); packing runs natively (no container needed))
endif
endif

ifeq ($(BUILD_METHOD),dracut)
rootfs: check-vars $(OSBUILDER)
	$(OSBUILDER) rootfs $(DRACUT_FLAGS) -o "$(ROOTFS_DIR)"
else
rootfs: check-vars $(OSBUILDER)
	$(OSBUILDER) rootfs $(ROOTFS_FLAGS) -o "$(ROOTFS_DIR)"
endif

# Build the rootfs only when it does not exist yet (run `make rootfs` to rebuild).
$(ROOTFS_DIR): | $(OSBUILDER)
	$(MAKE) rootfs

image: check-vars | $(ROOTFS_DIR)
	$(OSBUILDER) image "$(ROOTFS_DIR)" -o "$(IMAGE)" $(IMAGE_FLAGS)

ifeq ($(BUILD_METHOD),dracut)
initrd: check-vars $(OSBUILDER)
	$(OSBUILDER) initrd $(DRACUT_FLAGS) -o "$(INITRD_IMAGE)" --compression $(INITRD_COMPRESSION)
else
initrd: check-vars | $(ROOTFS_DIR)
	$(OSBUILDER) initrd "$(ROOTFS_DIR)" -o "$(INITRD_IMAGE)" --compression $(INITRD_COMPRESSION)
endif

smoke: $(OSBUILDER)
	$(OSBUILDER) kernel fetch $(if $(ARCH),--arch $(ARCH)) -o "$(KERNEL_DIR)"
	$(OSBUILDER) boot --kernel "$(KERNEL_DIR)/vmlinuz" --initrd "$(INITRD_IMAGE)" --poweroff

# --- release: a build file (osbuilder.toml) → Kata's release tree ---
# Kata's variables narrow the build file down when given on the command line or in the
# environment: ARCH → --only arch=, DISTRO → --only distro=. LOCKED=yes builds exactly the
# lock file's packages.
RELEASE_FILE ?= examples/osbuilder.toml
RELEASE_DIR  ?= $(CURDIR)/release
LOCKED       ?= no
MERGE        ?=
given = $(filter command line environment,$(origin $(1)))
RELEASE_ONLY := $(if $(ARCH),--only arch=$(ARCH)) \
	$(if $(call given,DISTRO),--only distro=$(DISTRO))

release: $(OSBUILDER)
ifneq ($(strip $(MERGE)),)
	$(OSBUILDER) release --merge $(MERGE) -o "$(RELEASE_DIR)"
else
	$(OSBUILDER) release -f "$(RELEASE_FILE)" -o "$(RELEASE_DIR)" $(RELEASE_ONLY) \
		$(if $(call yes,$(LOCKED)),--locked)
endif

matrix: $(OSBUILDER)
	$(OSBUILDER) matrix

# Every test binary runs (--no-fail-fast); the run ends with what was skipped and why.
SKIPS := $(CURDIR)/target/tmp/skips
test:
	@rm -rf "$(SKIPS)"
	@status=0; OSBUILDER_TEST_SKIPS="$(SKIPS)" $(CARGO) test --workspace --no-fail-fast || status=$$?; \
	  tests/skip-summary "$(SKIPS)"; exit $$status

# The boots tests/host_boot.rs keeps out of the default run (#[ignore]), one at a time.
test-xen:
	@rm -rf "$(SKIPS)"
	@status=0; OSBUILDER_TEST_SKIPS="$(SKIPS)" $(CARGO) test --test host_boot -- --ignored --test-threads 1 || status=$$?; \
	  tests/skip-summary "$(SKIPS)"; exit $$status

# The boot matrix (tests/boot_matrix.rs, #[ignore]d so `make test` leaves it out): every cell
# this machine can reach, one at a time; the others are listed as not reachable, with why.
BOOT_MATRIX_CELLS ?=
boot-matrix:
	@rm -rf "$(SKIPS)"
	@status=0; OSBUILDER_TEST_SKIPS="$(SKIPS)" BOOT_MATRIX_CELLS="$(BOOT_MATRIX_CELLS)" \
	  $(CARGO) test --test boot_matrix -- --ignored --nocapture --test-threads 1 || status=$$?; \
	  tests/skip-summary "$(SKIPS)"; exit $$status

bench:
	benches/initrd.sh
	benches/image.sh
	benches/rootfs.sh
	benches/container.sh
	benches/release.sh
	benches/oci.sh
	benches/boot-dracut.sh

clean:
	rm -rf "$(ROOTFS_DIR)" "$(ROOTFS_DIR).mtree" "$(ROOTFS_DIR).packages.json" "$(IMAGE)" "$(INITRD_IMAGE)"

print-%:
	@echo '$*=$($*)'
