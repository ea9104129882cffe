"""``curate audit <command> OUT``: summary, sample, why, pii, sql, grep, similar, report, diff.

Each command is a module of this package with ``HELP``, ``add_arguments(parser)`` and ``run(args, output)``
(``output`` a :class:`curate.audit.run.RunOutput`); ``curate audit OUT`` alone is ``summary``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from curate.config import ConfigError, load_profile
from curate.io.fs import Location

COMMANDS = ("summary", "sample", "why", "pii", "sql", "grep", "similar", "report", "diff")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("audit", help="what every stage removed and why: summary, sample, why, pii, sql, "
                            "grep, similar, report, diff")
    commands = parser.add_subparsers(dest="audit_command", required=True)
    for name in available():
        module = importlib.import_module(f"curate.audit.{name}")
        command = commands.add_parser(name, help=module.HELP, description=module.HELP)
        command.add_argument("output", help="the --output folder of a run (local path or s3://...)")
        command.add_argument("--config", default=None, help="runtime profile YAML (storage options for S3)")
        module.add_arguments(command)


def available() -> list[str]:
    """The commands of :data:`COMMANDS` whose module is installed, in that order."""
    return [name for name in COMMANDS if importlib.util.find_spec(f"curate.audit.{name}") is not None]


def with_default_command(argv: list[str]) -> list[str]:
    """``curate audit OUT [--examples N]`` (the original form) is ``curate audit summary OUT ...``."""
    if len(argv) >= 2 and argv[0] == "audit" and argv[1] not in COMMANDS and argv[1] not in ("-h", "--help"):
        return ["audit", "summary", *argv[1:]]
    return argv


def run(args: argparse.Namespace) -> int:
    from curate.audit.run import RunOutput

    try:
        options = dict(load_profile(args.config).storage_options)
        output = RunOutput(Location(args.output, options))
        return importlib.import_module(f"curate.audit.{args.audit_command}").run(args, output)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
