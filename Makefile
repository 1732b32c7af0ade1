# Kata-compatible front door for osbuilder.
#
#   make                      build osbuilder (release)
#   make initrd ROOTFS=dir    pack a rootfs into $(INITRD_IMAGE)
#   make matrix               print the compatibility matrix
#   make test                 run the test suite (what CI runs)
#   make bench                run the benchmarks under benches/
#
# Variables follow Kata's osbuilder where they apply.

CARGO        ?= cargo
OSBUILDER    ?= target/release/osbuilder
ROOTFS       ?= $(ROOTFS_DIR)
INITRD_IMAGE ?= kata-containers-initrd.img
# gzip (what Kata's runtime expects), zstd, xz or none
INITRD_COMPRESSION ?= gzip

.PHONY: all build initrd matrix test bench clean print-%

all: build

build:
	$(CARGO) build --release

$(OSBUILDER): build

initrd: $(OSBUILDER)
	@test -n "$(ROOTFS)" || { echo "make initrd: set ROOTFS=<rootfs dir> (or ROOTFS_DIR)" >&2; exit 2; }
	$(OSBUILDER) initrd "$(ROOTFS)" -o "$(INITRD_IMAGE)" --compression $(INITRD_COMPRESSION)

matrix: $(OSBUILDER)
	$(OSBUILDER) matrix

test:
	$(CARGO) test --workspace

bench:
	benches/initrd.sh

clean:
	$(CARGO) clean

print-%:
	@echo '$*=$($*)'
