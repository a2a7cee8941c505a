"""Which config file a command reads: one rule for every command, in this order.

1. a path the user gave (``--config``, or the command's environment variable such as
   ``CHURN_SERVICE_CONFIG``): it must exist, else the command stops with one line;
2. ``configs/<name>`` in the working directory (a project of the user's own);
3. ``configs/<name>`` of the checkout these packages were installed from (so ``churn drift``
   run from any folder of a source checkout reads the repository's file, as the drill did);
4. the built-in defaults (every setting has one that works).

Every command names what it chose in its first log line (``ConfigFile.describe``), so nobody
has to guess whether a file was read. This module imports only the standard library: the Bento
packs it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = "configs"
log = logging.getLogger("churn.config")


class ConfigNotFound(FileNotFoundError):
    """A config file the user named does not exist."""


def project_root() -> Path:
    """The folder holding these packages (a source checkout, or the Bento's source folder)."""
    return Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ConfigFile:
    """The file a command reads for ``name`` (None: the built-in defaults), and why."""

    name: str
    path: Path | None
    reason: str

    def describe(self) -> str:
        if self.path is None:
            return f"config {self.name}: built-in defaults ({self.reason})"
        return f"config {self.name}: {self.path} ({self.reason})"

    def announce(self, logger: logging.Logger = log) -> ConfigFile:
        """Log which file this is (what a command says first); returns itself."""
        logger.info(self.describe())
        return self


def find_config(name: str, explicit: Path | str | None = None,
                env_var: str | None = None, required: bool = False) -> ConfigFile:
    """The config file for ``name`` (e.g. ``"monitoring.yaml"``) by the module's rule.
    Raises ConfigNotFound when ``explicit`` (or ``$env_var``) names a missing file, or when
    nothing is found for a ``required`` file (one without built-in defaults: a contract)."""
    given, how = (explicit, "--config") if explicit else (
        (os.environ.get(env_var), f"${env_var}") if env_var else (None, ""))
    if given:
        path = Path(given)
        if not path.is_file():
            raise ConfigNotFound(f"{how} names {path}, which does not exist")
        return ConfigFile(name, path.resolve(), f"from {how}")
    local = Path.cwd() / CONFIG_DIR / name
    if local.is_file():
        return ConfigFile(name, local, "found in the working directory")
    checkout = project_root() / CONFIG_DIR / name
    if checkout.is_file():
        return ConfigFile(name, checkout, "the project's file")
    looked = f"no {CONFIG_DIR}/{name} in {Path.cwd()} or {project_root()}"
    if required:
        raise ConfigNotFound(f"{looked}: give its path")
    return ConfigFile(name, None, looked)
