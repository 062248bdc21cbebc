"""The `yicrouter` command: serve, config check, demo, queue."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from yicrouter import __version__
from yicrouter.config import ConfigError, check_config, load_config
from yicrouter.logs import configure_logging
from yicrouter.queue_cli import add_queue_parser, run as run_queue_command

DEFAULT_CONFIG = Path("/etc/yicrouter/yicrouter.toml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yicrouter", description="DIMSE-native DICOM router")
    parser.add_argument("--version", action="version", version=f"yicrouter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the router daemon")
    serve.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help=f"main config file; drop-ins are read from yicrouter.d/ beside it "
                            f"(default: {DEFAULT_CONFIG})")

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a config and its drop-ins; exit 0 or 1")
    check.add_argument("path", type=Path, help="main config file")

    demo = commands.add_parser("demo", help="run the router with two sample peer PACS on loopback")
    demo.add_argument("--port", type=int, default=11112, help="router port (default: 11112)")
    demo.add_argument("--workstation-port", type=int, default=11113,
                      help="port of the demo workstation DEMOWS, the Move Destination (default: 11113)")
    demo.add_argument("--state-dir", type=Path, default=None,
                      help="state folder (default: a new temporary folder)")

    add_queue_parser(commands, DEFAULT_CONFIG)
    return parser


def _serve(path: Path) -> int:
    """Load the configuration and run the router, which ends the process itself.

    Returns 1 only when the configuration is invalid.
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        print("yicrouter: invalid configuration, not starting:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    configure_logging(config.router.log_level, config.router.log_format)
    from yicrouter.daemon import serve

    serve(config)


def _config_check(path: Path) -> int:
    ok, lines = check_config(path)
    stream = sys.stdout if ok else sys.stderr
    for line in lines:
        print(line, file=stream)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.config)
    if args.command == "config":
        return _config_check(args.path)
    if args.command == "demo":
        from yicrouter.demo.region import run_demo

        exit_status: int = run_demo(port=args.port, state_dir=args.state_dir,
                                    workstation_port=args.workstation_port)
        return exit_status
    if args.command == "queue":
        return _run_piped(lambda: run_queue_command(args))
    return 2


def _run_piped(command: Callable[[], int]) -> int:
    """Run a command whose output may go to a pipe that closes early, as `| head` does."""
    try:
        exit_status = command()
        sys.stdout.flush()
        return exit_status
    except BrokenPipeError:
        # Send the rest to /dev/null, so the interpreter's final flush of
        # stdout does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
