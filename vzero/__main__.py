"""The ``vzero`` command: one function per subcommand."""

from __future__ import annotations

import sys

from vzero.offline import stay_offline

USAGE = """usage: vzero <command> [options]

commands:
  fit        train a model by self-play (Iterative-SPO); e.g. vzero fit --config configs/tiny.yaml
  validate   play the model against its frozen reference and log the win rate
  play       play games with a checkpoint (or the base model); write their transcripts (HTML, JSONL)
  evaluate   answer question suites (clevr-qa, clevr-diff, chart-qa, a JSONL file) with a checkpoint or a model
  export     write a checkpoint as a peft adapter folder, and with --merge a merged Hugging Face model
  compare    compare the runs of an MLflow experiment: a table and a figure of their curves
  pairs      write procedural image pairs (clevr, chart) to a folder
Run `vzero <command> --help` for a command's options."""


def _pairs(argv: list[str]) -> None:
    from jsonargparse import auto_cli

    from vzero.cli.pairs import pairs

    manifest = auto_cli(pairs, args=argv, as_positional=False)
    print(f"wrote {manifest}")


def _lightning(command: str):
    def run(argv: list[str]) -> None:
        from vzero.cli.train import main

        main([command, *argv])

    return run


def _module(name: str):
    def run(argv: list[str]) -> None:
        import importlib

        importlib.import_module(f"vzero.cli.{name}").main(argv)

    return run


COMMANDS = {
    "fit": _lightning("fit"),
    "validate": _lightning("validate"),
    "play": _module("play"),
    "evaluate": _module("evaluate"),
    "export": _module("export"),
    "compare": _module("compare"),
    "pairs": _pairs,
}


def main(argv: list[str] | None = None) -> None:
    stay_offline()  # first: before MLflow or the hub client is imported, they read it at import
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"vzero: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    COMMANDS[command](rest)


if __name__ == "__main__":
    main()
