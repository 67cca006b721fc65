# Two entry points for a fresh machine:
#   make demo   set up .venv (if missing) and start the app on the simulated rig
#   make test   set up .venv, install the Xvfb system packages (as root, if missing), run all tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := xvfb xauth libgl1-mesa-dri libegl1 libgl1 libxkbcommon-x11-0 libxcb-cursor0 \
	libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 \
	libxcb-image0 libfontconfig1 libdbus-1-3
PYTEST_ARGS ?=

.PHONY: demo demo-headless test test-fast setup system-deps benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

system-deps:
	@if ! command -v Xvfb >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-cursor.so.0; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Xvfb and Qt's X11 libraries"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "Xvfb or Qt X11 libraries missing; run as root or: sudo apt-get install $(APT_PACKAGES)"; \
	  fi; \
	fi

demo: setup
	$(VENV)/bin/mcf-rotator --simulate

demo-headless: setup
	$(VENV)/bin/mcf-rotator demo --headless -o demo-output --overwrite

# pytest exits 5 when it collected no test; treat that as a failure of the set-up, not success.
test: setup system-deps
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test-fast: setup
	$(PY) -m pytest -m "not slow and not gui" $(PYTEST_ARGS)

benchmark: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
