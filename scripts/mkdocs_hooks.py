"""mkdocs hooks (mkdocs.yml ``hooks:``): links to repository files outside docs/.

A page may link to a file of the repository that is not documentation, as
``[tour](../examples/tour.py)``: right when the Markdown is read on a code
host.  mkdocs would report such a link as not found, so this hook serves each
file linked that way on the site under ``repo/`` (``repo/examples/tour.py``)
and points the link there.  A link to a file that does not exist is left
alone, and the strict build fails on it as on any broken link.  Markdown
files outside docs/ are not served this way (they would become pages).
"""

from __future__ import annotations

import os
import posixpath
import re

from mkdocs.structure.files import File

_LINK = re.compile(r"\]\(([^)\s#]+)((?:#[^)\s]*)?)\)")
_PREFIX = "repo"


def _outside_target(docs_dir: str, src_uri: str, url: str) -> str | None:
    """The repository-relative path ``url`` (a link on page ``src_uri``)
    names, when it is an existing non-Markdown file outside ``docs_dir``."""
    if "://" in url or url.startswith(("/", "mailto:")) or url.endswith(".md"):
        return None
    root = os.path.dirname(os.path.abspath(docs_dir))
    page_dir = os.path.dirname(os.path.join(docs_dir, src_uri))
    target = os.path.normpath(os.path.join(page_dir, url))
    docs = os.path.abspath(docs_dir)
    if os.path.commonpath([target, docs]) == docs:
        return None
    if os.path.commonpath([target, root]) != root or not os.path.isfile(target):
        return None
    return os.path.relpath(target, root).replace(os.sep, "/")


def on_files(files, config):  # noqa: ANN001, ANN201 - mkdocs' hook signature
    docs_dir = config["docs_dir"]
    wanted = set()
    for page in files.documentation_pages():
        with open(page.abs_src_path, encoding="utf-8") as f:
            text = f.read()
        for url, _anchor in _LINK.findall(text):
            rel = _outside_target(docs_dir, page.src_uri, url)
            if rel is not None:
                wanted.add(rel)
    root = os.path.dirname(os.path.abspath(docs_dir))
    for rel in sorted(wanted):
        files.append(
            File.generated(config, f"{_PREFIX}/{rel}", abs_src_path=os.path.join(root, rel))
        )
    return files


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001, ANN201
    docs_dir = config["docs_dir"]
    src_uri = page.file.src_uri

    def repl(m: re.Match) -> str:
        rel = _outside_target(docs_dir, src_uri, m.group(1))
        if rel is None:
            return m.group(0)
        start = posixpath.dirname(src_uri) or "."
        return f"]({posixpath.relpath(f'{_PREFIX}/{rel}', start)}{m.group(2)})"

    return _LINK.sub(repl, markdown)
