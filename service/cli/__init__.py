"""The ``autoprune`` command line. Subcommands live in small modules registered here."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autoprune")
def main() -> None:
    """autoprune: search per-layer pruning ratios that meet a MACs, params or latency budget."""


def _register() -> None:
    # Each module adds its commands to ``main``; a missing module simply adds none yet.
    import importlib

    for module in ("service.cli.engine", "service.cli.jobs"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_register()
