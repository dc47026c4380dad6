# Web targets (included from the Makefile; $(PY) and the venv / apt targets come from there).
#
#   make bench-web   a large database: 100 000 exams / 400 000 instances (1 000 exams filed as
#                    real files through the Ingestor, the rest bulk index rows): median and p95
#                    of the worklist page, the exam page, QIDO-RS by patient / date / accession
#                    and WADO-RS instance; Orthanc's DICOMweb beside it on the filed exams
#                    (~10-15 min). Quick: make bench-web BENCH_WEB_ARGS="--exams 2000
#                    --filed-exams 200"; PostgreSQL: BENCH_WEB_ARGS="--db-url postgresql://..."
.PHONY: bench-web

BENCH_WEB_ARGS ?=

bench-web: venv apt
	$(PY) scripts/bench_web.py $(BENCH_WEB_ARGS)
