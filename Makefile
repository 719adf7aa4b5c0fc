# Set-up is part of every target: `make shards` and `make test` work on a fresh machine.
PY      := .venv/bin/python
SAMPLE  := data/sample_videos
OUT     := data/sample

.PHONY: install shards scores train test test-fast bench bench-models bench-gpu clean

install: .venv/.installed

# ffmpeg/ffprobe come from the system (Debian's package when root); Python packages are pinned.
.venv/.installed: requirements.txt requirements-gpu.txt requirements-model.txt requirements-dev.txt pyproject.toml
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "ffmpeg is missing: install it (e.g. sudo apt-get install ffmpeg) and rerun" >&2; exit 1; fi; }
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-gpu.txt -r requirements-model.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The main job on its embedded default: sample videos -> local Ray -> data/sample. The sample is offline by
# design: BLIP-2 captions when its weights are already local (HF_HOME), else the run goes on uncaptioned and
# says so in its summary and in every clip's `captioner`.
shards: install
	$(PY) -m hdvg.cli sample $(SAMPLE)
	HF_HUB_OFFLINE=1 $(PY) -m pipelines.curate --input $(SAMPLE) --output $(OUT) --on-missing-weights uncaptioned
	$(PY) -m hdvg.cli validate $(OUT)

# The tiny video diffusion model trained on `make shards`' output. The sample is uncaptioned (offline), so it
# trains with empty text (unconditional) and its log says so. Without real weights on this machine, the
# VAE and CLIP text encoder are tiny RANDOM models saved by model/tiny.py: this proves the pipeline
# end to end, not image quality (pass real ones with `hdvg train --components PATH`).
TRAIN_RUN := data/train_tiny
train: install
	@test -d $(OUT)/shards || $(MAKE) shards
	@echo "make train: VAE + CLIP text encoder are tiny RANDOM weights ($(TRAIN_RUN)/components), not a real model"
	rm -rf $(TRAIN_RUN)
	$(PY) -m model.tiny $(TRAIN_RUN)/components
	$(PY) -m hdvg.cli train --config tiny --components $(TRAIN_RUN)/components --shards '$(OUT)/shards/*.tar' \
	  --set data.uncaptioned=empty --output $(TRAIN_RUN)/run $(if $(WHERE),--where "$(WHERE)")

# Every score of `make shards`' output, then a read-time selection of it (docs/scores.md). Offline, CLIP and the
# aesthetic head are tiny RANDOM weights saved by model/tiny.py: the passes and the filter run for real, the
# clip_score and aesthetic values mean nothing (the README says how to point at real weights). The cutter's
# measures (motion_score, ...) and dedup (its weight-free perceptual hash, without a CLIP) are real. Train on the selection with
# `make train WHERE="..."`.
SCORE_RUN := data/scores_tiny
WHERE_SAMPLE := motion_score > 0.05 AND static_fraction < 0.5 AND duplicate_of IS NULL
scores: install
	@test -d $(OUT)/shards || $(MAKE) shards
	@echo "make scores: CLIP and the aesthetic head are tiny RANDOM weights ($(SCORE_RUN)), not real scores"
	rm -rf $(SCORE_RUN) $(OUT)/scores
	$(PY) -m model.tiny --scorers $(SCORE_RUN)
	$(PY) -m hdvg.cli score $(OUT) --scorers clip,aesthetic --clip-model $(SCORE_RUN)/clip \
	  --aesthetic-clip-model $(SCORE_RUN)/clip --aesthetic-head $(SCORE_RUN)/aesthetic_head.safetensors
	$(PY) -m hdvg.cli score $(OUT) --scorers dedup
	$(PY) -m hdvg.cli filter $(OUT) --where "$(WHERE_SAMPLE)" --output $(SCORE_RUN)/keep.parquet

# The whole suite, with the 15 slowest tests named at the end; test-fast leaves out the slow end-to-end ones.
test: install
	$(PY) -m pytest -q -ra --durations=15

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow"

bench: install
	$(PY) bench/bench_cpu.py
	$(PY) bench/bench_detect.py

# Model and scale benchmarks; each prints ratios against a baseline of the same run and writes bench/results/.
# On CPU the Swap-CA bench runs at width 32 (paper width on a GPU); the SR bench uses its quick CPU mode.
bench-models: install
	@test -d $(OUT)/shards || $(MAKE) shards
	$(PY) bench/bench_swapca.py --repeat 1
	$(PY) bench/bench_loader.py
	$(PY) bench/bench_sr.py --quick --train-steps 100
	$(PY) bench/bench_eval.py
	$(PY) bench/bench_resume.py
	$(PY) bench/bench_writer.py
	$(PY) bench/bench_dedup.py

# The prepared GPU check (docs/gpu_check.md): at most 8 minutes on one H200-class GPU, each part timed out on
# its own and written to bench/results/gpu.json as it ends. On CPU: make bench-gpu ARGS=--dry-run
bench-gpu: install
	$(PY) bench/gpu_check.py $(ARGS)

clean:
	rm -rf data/sample data/bench $(TRAIN_RUN) $(SCORE_RUN)
