"""Command-line entry point ``mcf-rotator``.

No sub-command starts the GUI (``--simulate`` puts every device on the simulated rig);
sub-commands live in :mod:`mcf_rotator.commands`, one module each.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from mcf_rotator import __version__
from mcf_rotator.errors import McfRotatorError


def build_parser() -> argparse.ArgumentParser:
    from mcf_rotator.commands import COMMAND_MODULES

    parser = argparse.ArgumentParser(
        prog="mcf-rotator",
        description="AI-driven optical projection tomography with a multi-core fibre cell rotator. "
        "Without a sub-command the operator GUI starts.",
    )
    parser.add_argument("--version", action="version", version=f"mcf-rotator {__version__}")
    parser.add_argument("--simulate", action="store_true", help="run the GUI on the simulated rig")
    parser.add_argument("--config", type=Path, default=None, help="rig configuration (YAML/JSON)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mcf_rotator.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mcf_rotator.commands.{name}":
                continue  # command not part of this build
            raise
        module.register(sub)
    return parser


def _run_gui(args: argparse.Namespace) -> int:
    try:
        from mcf_rotator.gui.app import run_app
    except ImportError as exc:
        raise McfRotatorError(f"the GUI cannot start: {exc}") from exc
    return run_app(config_path=args.config, simulate=args.simulate)


def configure_threads() -> None:
    """Process-wide threading set-up, done once before any command starts a worker thread.

    OpenCV's thread count is pinned here (to what ``import ultralytics`` would set later):
    changing it while another thread is inside a ``cv2`` call can kill the process.
    """
    from mcf_rotator.reconstruction.ultralytics_env import configure_opencv_threads

    configure_opencv_threads()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_threads()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command is None:
            return _run_gui(args)
        return int(args.func(args) or 0)
    except McfRotatorError as exc:
        print(f"mcf-rotator: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mcf-rotator: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
