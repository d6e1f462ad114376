"""Each broker's config file, written into its data directory before `up` starts it.

The plan says what a broker runs with (`BrokerPlan.config`) and where the file goes
(`BrokerPlan.config_path`); this writes it, readable by its owner only (it holds the
group's securityToken). Written by the command that starts the plan, so that a process
is never started without its file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from broker.cluster.errors import UpError
from broker.cluster.model import AUTO_PORT
from broker.cluster.paths import display_path
from broker.cluster.plan import BrokerPlan, security_file
from broker.config import BrokerConfig, ConfigError


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by its owner only (a users file holds password hashes)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_configs(plans: Sequence[BrokerPlan], cwd: Path | None = None) -> None:
    """Write every plan's config file; UpError names the first that cannot be written."""
    for p in plans:
        if p.config is None:
            raise UpError(f"broker {p.name}: planned without its config; cannot start it")
        try:
            p.data_dir.mkdir(parents=True, exist_ok=True)
            p.config.to_file(p.config_path)
            security = security_file(p.spec, cwd)
            if security is not None and p.config.users_file is not None:
                _write_private(p.config.users_file, json.dumps(security, indent=2) + "\n")
        except OSError as e:
            raise UpError(
                f"broker {p.name}: cannot write {display_path(p.config_path, cwd)}: "
                f"{e.strerror or e}"
            ) from None


def metrics_port(p: BrokerPlan) -> int | None:
    """Where broker `p` serves /metrics: the file's port, or for `metrics_port: auto` the
    one `up` picked, read back from the config file it wrote (None if unreadable)."""
    if p.config is not None or p.spec.metrics_port != AUTO_PORT:
        return p.metrics_port
    try:
        return BrokerConfig.from_file(p.config_path).metrics_port or None
    except ConfigError:
        return None
