"""A griffe extension (mkdocs.yml, mkdocstrings ``extensions:``): the
docstrings' reST roles rendered as code, linked where the target is documented.

greencoap's docstrings are prose that names other objects the Sphinx way,
``:class:`Server```, ``:meth:`Client.get```, ``:class:`~greencoap.hub.Hub```.
Markdown has no roles, so mkdocstrings would print ``:class:`` in front of
each name.  This extension rewrites every role, once the whole package is
loaded, into the name as code (``~`` keeps the last component, as Sphinx
does) wrapped in an optional cross-reference: a link when the name resolves
to a greencoap object the site renders, plain code otherwise (a name from the
standard library, a private helper) without a warning.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|exc|obj|const):`([^`]+)`")


def _lookup(scope: Any, dotted: str) -> Any | None:
    """The object ``dotted`` names from ``scope`` (a module or class), or None."""
    try:
        return scope[dotted]
    except Exception:  # noqa: BLE001 - griffe raises KeyError, AliasResolutionError, ...
        return None


def _canonical(obj: Any) -> str | None:
    try:
        return obj.final_target.path if obj.is_alias else obj.path
    except Exception:  # noqa: BLE001 - an alias to something outside the package
        return None


class RestRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        self._walk(pkg, pkg, seen)

    def _walk(self, pkg: griffe.Module, obj: Any, seen: set[int]) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(
                lambda m: self._render(pkg, obj, m.group(1)), obj.docstring.value
            )
        for member in list(obj.members.values()):
            if not member.is_alias:
                self._walk(pkg, member, seen)

    def _render(self, pkg: griffe.Module, obj: Any, target: str) -> str:
        text = target
        if "<" in target and target.endswith(">"):  # :class:`title <target>`
            text, target = target[:-1].split("<", 1)
            text = text.strip()
        short = target.startswith("~")
        target = target.lstrip("~").strip().removesuffix("()")
        if text == target or text.lstrip("~") == target:
            text = target.rsplit(".", 1)[-1] if short else target
        path = self._resolve(pkg, obj, target)
        code = f"<code>{html.escape(text)}</code>"
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    def _resolve(self, pkg: griffe.Module, obj: Any, target: str) -> str | None:
        """The canonical path of ``target`` as seen from ``obj``: its class,
        its module, then the package's top level."""
        if target.startswith(pkg.name + "."):
            found = _lookup(pkg, target[len(pkg.name) + 1 :])
            return _canonical(found) if found is not None else None
        scopes = []
        node = obj
        while node is not None:
            if node.is_class or node.is_module:
                scopes.append(node)
            node = node.parent
        scopes.append(pkg)
        for scope in scopes:
            found = _lookup(scope, target)
            if found is not None:
                return _canonical(found)
        return None
