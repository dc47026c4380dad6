# Web targets (included from the Makefile; $(PY) and the venv / apt targets come from there).
#
#   make bench-web   DICOMweb under 16 concurrent clients against 10 000 indexed instances:
#                    QIDO-RS study search and WADO-RS instance retrieval, requests/s and p99,
#                    mammo-node beside Orthanc's DICOMweb plugin on the same data (~5 min)
.PHONY: bench-web

BENCH_WEB_ARGS ?=

bench-web: venv apt
	$(PY) scripts/bench_web.py $(BENCH_WEB_ARGS)
