"""Sub-commands of ``mcf-rotator``; one module each, exposing ``register(subparsers)``.

``register`` adds an argparse sub-parser and sets ``func=run`` on it, where
``run(args) -> int`` does the work. Raise :class:`~mcf_rotator.errors.McfRotatorError` for
anything the user should read; the CLI prints it without a traceback.
"""

#: module names in the order they appear in ``mcf-rotator --help``
COMMAND_MODULES = [
    "demo",
    "simulate",
    "reconstruct",
    "batch",
    "evaluate",
    "train_corenet",
    "calibrate",
    "train_detector",
    "label",
    "evaluate_detector",
    "check_hardware",
]
