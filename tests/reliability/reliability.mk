# `make reliability` (issue 11): the crash and abuse tests of tests/reliability
# with RELIABILITY_SCALE times their default counts, then docs/RELIABILITY.md
# rewritten from what they measured (plus the corpus replay and, when
# present, the last `make fuzz` logs). The same tests run with default counts
# in `make test` (integration-tests).
RELIABILITY_SCALE ?= 5
RELIABILITY_PLUGINS := storage-sqlite storage-pg auth images-fs kudos broker

reliability: $(BUILD)/horde-node $(RELIABILITY_PLUGINS:%=$(BUILD)/plugins/%.so) \
             $(FUZZ_ALL:%=$(BUILD)/fuzz-replay/replay_%)
	@rm -f $(BUILD)/reliability.jsonl
	@$(MAKE) --no-print-directory fuzz-replay BUILD=$(BUILD) > $(BUILD)/reliability-replay.txt 2>&1 \
	    || { cat $(BUILD)/reliability-replay.txt; exit 1; }
	HN_BUILD=$(abspath $(BUILD)) HN_RELIABILITY_SCALE=$(RELIABILITY_SCALE) \
	    HN_RELIABILITY_REPORT=$(abspath $(BUILD))/reliability.jsonl \
	    sh scripts/pytest -q tests/reliability; st=$$?; \
	HN_RELIABILITY_SCALE=$(RELIABILITY_SCALE) /usr/bin/python3 tests/reliability/report.py \
	    $(BUILD)/reliability.jsonl $(FUZZ_BUILD) $(BUILD)/reliability-replay.txt > docs/RELIABILITY.md; \
	echo "reliability: docs/RELIABILITY.md written"; exit $$st

.PHONY: reliability
