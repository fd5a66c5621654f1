# kvmops.fleet developer entry points. Every target sets up what it needs (hack/setup.sh is
# idempotent and takes seconds when everything is in place).
#
#   make test         everything, in order: lint sanity unit matrix py39 integration vm molecule, with the
#                     image builds overlapping the first tiers; a table of every tier against its budgets
#   make check        the inner loop: lint + sanity + unit
#   make lint|sanity|unit|matrix|py39|integration|vm|molecule    one tier
#   make vm K=NAME    only the real-kernel scenarios whose file or directory name contains NAME
#                     (e.g. make vm K=kvm_tune); the shared fleet boots once for them
#   make images       every image the tiers boot (cached; seconds when warm)
#   make demo         the main job: a real lab with paused VMs, diagnosed by kvmops.fleet.diagnose
#   make docs         render the collection reference with antsibull-docs into .build/docs
#   make build        the collection tarball
#   make bench        kvm_pause_facts side by side with the alternatives (benchmarks/README.md)
SHELL := /bin/bash
TIERS := lint sanity unit matrix py39 integration vm molecule

.PHONY: test check setup images build docs demo bench lab-down clean $(TIERS)

# setup is timed here so the tier table shows it; the images are built by tiers.sh, in the background.
test:
	start=$$SECONDS; hack/setup.sh && KVMOPS_SETUP_SECONDS=$$((SECONDS - start)) hack/tiers.sh --images $(TIERS)

check: setup
	hack/tiers.sh lint sanity unit

setup:
	hack/setup.sh

images: setup
	hack/images.sh

lint sanity unit matrix integration: setup
	hack/tiers.sh $@

py39: setup
	hack/images.sh fleet && hack/tiers.sh $@

vm: setup
	hack/images.sh vm && VM_K='$(K)' hack/tiers.sh $@

molecule: setup
	hack/images.sh fleet hypervisor && hack/tiers.sh $@

build: setup
	source hack/env.sh && ansible-galaxy collection build --force --output-path .build/dist .

docs: setup
	hack/docs.sh

demo:
	hack/demo.sh

bench: setup
	python3 benchmarks/bench_pause_facts.py
	python3 benchmarks/bench_pause_risk.py

lab-down: setup
	source hack/env.sh && PYTHONPATH=tests python -m kvmlab down

clean:
	rm -rf .build
