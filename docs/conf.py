"""Sphinx configuration: ``make docs`` builds the pages of ``docs/`` and the API
reference (``api.rst``, autodoc of ``rstream.__all__``) into ``build/docs``, with
warnings as errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import rstream

project = "rstream"
author = "rstream maintainers"
copyright = "rstream maintainers"
release = rstream.__version__
version = release

extensions = ["sphinx.ext.autodoc"]
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"

autodoc_member_order = "bysource"  # the order the source gives, not alphabetical

_API = Path(__file__).with_name("api.rst")
_DOCUMENTED = re.compile(r"^\.\. auto(?:class|exception|function|data):: rstream\.(\w+)", re.M)


def _check_api_page(app: Any) -> None:
    """Warn (an error under -W) when a name of ``rstream.__all__`` has no entry in api.rst."""
    from sphinx.util import logging

    documented = set(_DOCUMENTED.findall(_API.read_text(encoding="utf-8")))
    public = set(rstream.__all__) - {"__version__"}
    log = logging.getLogger(__name__)
    for name in sorted(public - documented):
        log.warning("rstream.%s is public (rstream.__all__) but not in docs/api.rst", name)
    for name in sorted(documented - public):
        log.warning("docs/api.rst documents rstream.%s, which is not in rstream.__all__", name)


def setup(app: Any) -> None:
    app.connect("builder-inited", _check_api_page)
