"""``toolmesh.hub`` exports its public names: the docs teach ``from toolmesh.hub import ...``."""

from __future__ import annotations

import re
from pathlib import Path

import toolmesh.hub as hub
from toolmesh.hub import configfile, handle, owner
from toolmesh.hub import hub as hub_module

DOCS = Path(__file__).resolve().parent.parent / "docs" / "hub.md"


def test_every_exported_name_is_there_and_is_the_defining_modules_object() -> None:
    missing = [name for name in hub.__all__ if not hasattr(hub, name)]
    assert not missing
    assert hub.load_config is configfile.load_config
    assert hub.Hub is hub_module.Hub
    assert hub.ServerHandle is handle.ServerHandle
    assert hub.HandleOwner is owner.HandleOwner
    assert {"Hub", "ServerConfig", "ToolResult", "load_config", "ChangeEvent", "HandleOwner"} <= set(hub.__all__)


def test_docs_import_from_the_package() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert "from toolmesh.hub import Hub, ServerConfig, load_config" in text
    # Every name the docs import from toolmesh.hub is exported there.
    imported = {name.strip() for line in re.findall(r"from toolmesh\.hub import ([\w, ]+)", text)
                for name in line.split(",")}
    assert imported and imported <= set(hub.__all__)
