"""Command-line entry point ``mcf-rotator`` (placeholder: sub-commands are registered below)."""

from __future__ import annotations

import argparse
import sys

from mcf_rotator import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcf-rotator")
    parser.add_argument("--version", action="version", version=f"mcf-rotator {__version__}")
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
