# Model targets (included from the Makefile; $(PY) and $(VENV) come from there).
#
#   make model-cv      the documented CPU end-to-end run: synthetic exams -> index -> 5-fold
#                      cross-validation -> Table 1 (about 45 min on 2 cores; resumable)
#   make demo-bundle   the node's default model, exported from that run (best fold, fp16) into
#                      mammo_node/demo_bundle; reuses a finished model-cv run (seconds)
#   make demo-calibrate  fit the demo bundle's calibration, 1-10 categories and operating
#                      points on freshly generated exams (another seed than its training
#                      data; the weights are not retrained; about a minute)
#   make bench-model   seconds per image, FLOPs and bf16-vs-fp32 agreement (ResNet-101 @ 976)
#   make bench-train   training images/s, holistic and attention, and the loader's share
#                      (tiny on CPU by default; BENCH_TRAIN_ARGS="--paper" for ResNet-101 @ 976)
.PHONY: model-cv demo-bundle demo-calibrate bench-model bench-train

MODEL_WORK   ?= build/model-cv
DEMO_BUNDLE  ?= mammo_node/demo_bundle
DEMO_NAME    ?= mammo-node-demo-synthetic
DEMO_VERSION ?= 0.2.0
# Synthetic cohort: 240 exams (30 % screening, 10 % interval cancers), 320 x 256 pixels.
SYNTH_ARGS   ?= --exams 240 --rows 320 --columns 256 --seed 11 --lesion-contrast 0.25
# Small CPU model: ResNet-18, 128 px holistic input, 128 px ROIs cut at 2x resolution (half the
# 256 px hires image, the paper's proportion); 20 holistic and 10 attention epochs (from
# random weights fewer leave a seed-dependent fold that never finds the lesions: README).
CV_ARGS      ?= --folds 5 --arch resnet18 --input-size 128 --roi-size 128 --roi-scale 2 \
                --saliency-smoothing 2 --init scratch \
                --epochs 20 --attention-epochs 10 --batch-size 16 --lr 5e-4 --workers 0 \
                --device cpu --threads 2
MTRAIN       := $(VENV)/bin/mammo-train
BENCH_MODEL_ARGS ?=
BENCH_TRAIN_ARGS ?=
CALIBRATION_WORK ?= build/demo-calibration
# Held-out synthetic exams for the demo's calibration: the training cohort's recipe, seed 23.
CALIBRATION_SYNTH_ARGS ?= --exams 240 --rows 320 --columns 256 --seed 23 --lesion-contrast 0.25
DEMO_PREVALENCE ?= 0.007

$(MODEL_WORK)/data/labels.csv:
	$(VENV)/bin/mammo-node synth $(MODEL_WORK)/data $(SYNTH_ARGS)

$(MODEL_WORK)/manifest.json: $(MODEL_WORK)/data/labels.csv
	$(MTRAIN) index $(MODEL_WORK)/data --labels $(MODEL_WORK)/data/labels.csv \
	  --truth $(MODEL_WORK)/data/truth.csv --out $@

model-cv: venv $(MODEL_WORK)/manifest.json
	time $(MTRAIN) cv $(MODEL_WORK)/manifest.json --out $(MODEL_WORK)/run $(CV_ARGS)
	$(MTRAIN) report $(MODEL_WORK)/run

demo-bundle: model-cv
	rm -rf $(DEMO_BUNDLE).tmp
	$(MTRAIN) export $(MODEL_WORK)/run --out $(DEMO_BUNDLE).tmp --best-fold --demo \
	  --name $(DEMO_NAME) --version $(DEMO_VERSION) --storage-dtype float16
	rm -rf $(DEMO_BUNDLE) && mv $(DEMO_BUNDLE).tmp $(DEMO_BUNDLE)
	du -sh $(DEMO_BUNDLE)

demo-calibrate: venv
	rm -rf $(CALIBRATION_WORK)
	$(VENV)/bin/mammo-node synth $(CALIBRATION_WORK)/data $(CALIBRATION_SYNTH_ARGS)
	$(MTRAIN) index $(CALIBRATION_WORK)/data --labels $(CALIBRATION_WORK)/data/labels.csv \
	  --truth $(CALIBRATION_WORK)/data/truth.csv --out $(CALIBRATION_WORK)/manifest.json
	$(MTRAIN) calibrate $(DEMO_BUNDLE) $(CALIBRATION_WORK)/manifest.json \
	  --prevalence $(DEMO_PREVALENCE) \
	  --source "240 synthetic exams generated with $(CALIBRATION_SYNTH_ARGS) (training: seed 11)"

bench-train: venv
	$(PY) scripts/bench_train.py $(BENCH_TRAIN_ARGS)

bench-model: venv
	$(PY) scripts/bench_model.py $(BENCH_MODEL_ARGS)
