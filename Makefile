# kvmops.fleet developer entry points. Every target sets up what it needs (hack/setup.sh is
# idempotent and takes seconds when everything is in place).
#
#   make test         everything, in order: lint sanity unit py39 integration vm molecule
#   make check        the inner loop: lint + sanity + unit
#   make lint|sanity|unit|py39|integration|vm|molecule    one tier
#   make demo         the main job: a real lab with paused VMs, diagnosed by kvmops.fleet.diagnose
#   make docs         render the collection reference with antsibull-docs into .build/docs
#   make build        the collection tarball
#   make bench        kvm_pause_facts side by side with the alternatives (benchmarks/README.md)
SHELL := /bin/bash
TIERS := lint sanity unit py39 integration vm molecule

.PHONY: test check setup images build docs demo bench lab-down clean $(TIERS)

test: setup images
	hack/tiers.sh $(TIERS)

check: setup
	hack/tiers.sh lint sanity unit

setup:
	hack/setup.sh

images: setup
	hack/fleet-image.sh bookworm >/dev/null
	hack/fleet-image.sh bullseye >/dev/null
	hack/fleet-image.sh trixie >/dev/null
	hack/hypervisor-image.sh 12 >/dev/null
	hack/hypervisor-image.sh 13 >/dev/null
	source hack/env.sh && PYTHONPATH=tests python -m vmlab build --variant base --variant libvirt

lint sanity unit integration: setup
	hack/tiers.sh $@

py39 vm molecule: setup images
	hack/tiers.sh $@

build: setup
	source hack/env.sh && ansible-galaxy collection build --force --output-path .build/dist .

docs: setup
	hack/docs.sh

demo:
	hack/demo.sh

bench: setup
	python3 benchmarks/bench_pause_facts.py

lab-down: setup
	source hack/env.sh && PYTHONPATH=tests python -m kvmlab down

clean:
	rm -rf .build
