"""`churn`: the one command line of churn-serve. Each package registers its subcommands.

Errors a user can act on (bad data, a bad contract, a missing model, an unreachable service)
end as one readable line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import typer

from drill import cli as drill_cli
from monitoring import cli as monitoring_cli
from rollout import cli as rollout_cli
from rollout import shadow_cli
from rollout.lifecycle import cli as lifecycle_cli
from service import cli as service_cli
from training import cli as training_cli

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train, serve and watch a churn model. State lives in ./.churn unless configured.",
)


@app.callback()
def _main(
    home: Path = typer.Option(
        Path(".churn"), "--home", envvar="CHURN_HOME",
        help="Folder for generated data, the MLflow database and (unless BENTOML_HOME is set) "
        "the BentoML model store.",
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    home = home.resolve()
    # Must happen before bentoml is imported anywhere: bentoml reads it once, at import.
    os.environ.setdefault("BENTOML_HOME", str(home / "bentoml"))
    os.environ["CHURN_HOME"] = str(home)
    os.environ["CHURN_DEBUG"] = "1" if debug else os.environ.get("CHURN_DEBUG", "")


training_cli.register(app)
service_cli.register(app)
monitoring_cli.register(app)
rollout_cli.register(app)
shadow_cli.register(app)
lifecycle_cli.register(app)
drill_cli.register(app)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # As PID 1 of a container (a CronJob's pod) Python would ignore SIGTERM and be killed at
    # the end of the grace period; exiting instead runs every `finally` (temporary files and
    # staging tables of the all-or-nothing writers are removed).
    raise SystemExit(128 + signum)


# Options whose value may be left out, and what they mean then: `--dask` alone is a local
# cluster, `--dask tcp://host:8786` a scheduler. Click's parser (through typer) cannot express
# an optional value, so the missing one is filled in before parsing.
OPTIONAL_VALUES = {"--dask": "local"}


def with_optional_values(argv: list[str]) -> list[str]:
    """``argv`` with the implied value inserted after an option of OPTIONAL_VALUES that is
    last or followed by another option."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg in OPTIONAL_VALUES and (following is None or following.startswith("-")):
            out.append(OPTIONAL_VALUES[arg])
    return out


def main() -> None:
    """Entry point that turns expected failures into one line and exit code 2."""
    sys.argv[1:] = with_optional_values(sys.argv[1:])
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        # Without standalone mode click *returns* a typer.Exit code instead of exiting with it.
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: everything ends as one line
        if os.environ.get("CHURN_DEBUG"):
            raise
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {type(exc).__name__}: {message}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
