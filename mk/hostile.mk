# Hostile input: coverage-guided fuzzing and a soak under faults (issue 12).
FUZZ_SECONDS ?= 60
SOAK_MINUTES ?= 3

.PHONY: fuzz soak

fuzz: venv  # atheris over the header reader, grouping rules, STOW-RS multipart parser
	@$(PY) -c "import atheris" 2>/dev/null || $(PIP) install -q -e ".[fuzz]"
	$(PY) scripts/fuzz.py all $(FUZZ_SECONDS)

soak: venv apt  # mixed traffic while the node is SIGKILLed, its PACS goes away, its disk fills
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) scripts/soak.py
