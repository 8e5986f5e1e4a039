# The two commands of the README. Both create .venv on first use.
PY := .venv/bin/python

.venv/installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: .venv/installed  ## train the reference ViT on MNIST-5k (CPU) and write plots
	.venv/bin/vislab train vit --impl solutions

test: .venv/installed  ## run the kit's test suite
	$(PY) -m pytest -q

.PHONY: demo test

docs: .venv/installed  ## build the self-study site into build/site (offline; open build/site/index.html)
	$(PY) -m vislab.site

.PHONY: docs
