"""Sphinx extension: every ``autoclass`` renders exactly the members its directive lists.

For each ``.. autoclass::`` and ``.. autoexception::`` it compares the members the directive
asks for (``:members:``, ``:special-members:`` and ``:private-members:``, less
``:exclude-members:``; ``autodoc_default_options`` where the directive gives none) with the
member descriptions the directive renders, and warns, naming the class and the member, when

- a listed member does not exist;
- a listed member exists but is not rendered (it has no docstring), or is rendered empty;
- a listed method or property has no docstring of its own, so that the page shows the one it
  inherits (an undocumented ``forward`` shows ``torch.nn.Module.forward``'s);
- a rendered member is not listed (a ``.. method::`` in a docstring, a default ``members``
  option that overrides the directive's list), or is rendered twice;
- a public method or property with a docstring of its own, defined by the class or by one of
  its private bases (``_Base``) in the same package, is neither listed nor excluded: members
  of a public base are documented with that base, and a framework's hook without a docstring
  (``extra_repr``) is not a member of the API.

``:members:`` without names asks for the public names the class itself defines (with
``:inherited-members:``, its bases' too); ``:special-members:`` and ``:private-members:`` need
names. The warnings have the type ``members``: ``-W`` fails the build on them.
"""

from __future__ import annotations

import importlib
import inspect
from collections import Counter
from typing import Any, Literal

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOGGER = logging.getLogger(__name__)
_DIRECTIVES = ("autoclass", "autoexception")
_NAMED_ONLY = ("special-members", "private-members")
_Names = str | Literal[False] | None  # an option's names; None: given without names


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    # Sphinx 9 registers the autodoc directives on config-inited, earlier versions in setup.
    app.connect("config-inited", _wrap_directives, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def _wrap_directives(app: Sphinx, config: Config) -> None:
    for name in _DIRECTIVES:
        base, _ = directives.directive(name, None, None)
        app.add_directive(name, _checking(base), override=True)


def _checking(base: type[SphinxDirective]) -> type[SphinxDirective]:
    """``base`` (autodoc's directive) that checks the members of what it renders."""

    class Checked(base):  # type: ignore[misc,valid-type]
        def run(self) -> list[nodes.Node]:
            result: list[nodes.Node] = super().run()
            desc = _class_desc(result)
            if desc is not None:
                for problem in _problems(desc, self.options, self.config.autodoc_default_options):
                    LOGGER.warning(problem, location=self.get_location(), type="members")
            return result

    return Checked


def _class_desc(result: list[nodes.Node]) -> addnodes.desc | None:
    for node in result:
        for desc in node.findall(addnodes.desc):
            if desc.get("domain") == "py" and desc.get("objtype") in ("class", "exception"):
                return desc
    return None  # autodoc could not import the object and has said so


def _problems(desc: addnodes.desc, options: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    signature = desc.children[0]
    module, fullname = signature["module"], signature["fullname"]
    cls: Any = importlib.import_module(module)
    for part in fullname.split("."):
        cls = getattr(cls, part)
    unnamed = [key for key in _NAMED_ONLY if _option(options, defaults, key) is None]
    if unnamed:
        problems = [f":{unnamed[0]}: needs the names of the members to check"]
    else:
        excluded = set(_names(_option(options, defaults, "exclude-members")))
        asked = [name for name in _asked(cls, options, defaults) if name not in excluded]
        problems = _member_problems(cls, asked, excluded, _rendered(desc))
    return [f"{module}.{fullname}: {problem}" for problem in problems]


def _member_problems(
    cls: type, asked: list[str], excluded: set[str], rendered: list[tuple[str, addnodes.desc]]
) -> list[str]:
    counts = Counter(name for name, _ in rendered)
    problems = [_listed_problem(cls, name, rendered) for name in asked]
    problems += [
        f"public member {name!r} is documented but not listed (list or exclude it)"
        for name in _documented_names(cls)
        if name not in asked and name not in excluded and name not in counts
    ]
    problems += [
        f"member {name!r} is rendered but not listed" for name in counts if name not in asked
    ]
    problems += [f"member {name!r} is rendered {n} times" for name, n in counts.items() if n > 1]
    return [problem for problem in problems if problem]


def _option(options: dict[str, Any], defaults: dict[str, Any], key: str) -> _Names:
    """The names given to ``key`` (a string), ``None`` for no names, ``False`` if not given."""
    if key in options:
        value = options[key]
    elif f"no-{key}" in options or key not in defaults:
        return False
    else:
        value = defaults[key]
    return None if value is None or value is True else str(value)


def _names(value: _Names) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()] if value else []


def _asked(cls: type, options: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    members = _option(options, defaults, "members")
    asked = _public_names(cls, options.get("inherited-members", False)) if members is None else []
    for key in ("members", *_NAMED_ONLY):
        asked += _names(_option(options, defaults, key))
    return list(dict.fromkeys(asked))


def _public_names(cls: type, inherited: _Names) -> list[str]:
    """The public names of ``cls``, and with ``inherited`` those of its bases up to the named
    one (``object`` by default)."""
    classes = cls.__mro__ if inherited is not False else (cls,)
    stop = {"object", *_names(inherited)}
    names: list[str] = []
    for klass in classes:
        if klass is not cls and klass.__name__ in stop:
            break
        names += [name for name in vars(klass) if not name.startswith("_")]
    return sorted(set(names))


def _documented_names(cls: type) -> list[str]:
    """The public methods and properties with docstrings that ``cls`` and its private bases in
    its package define."""
    package = cls.__module__.split(".")[0]
    own = [cls] + [
        base
        for base in cls.__mro__[1:]
        if base.__name__.startswith("_") and base.__module__.split(".")[0] == package
    ]
    names = set()
    for name in {name for klass in own for name in vars(klass) if not name.startswith("_")}:
        owner, raw = _definition(cls, name)
        if owner in own and _is_routine(raw) and getattr(raw, "__func__", raw).__doc__:
            names.add(name)
    return sorted(names)


def _rendered(desc: addnodes.desc) -> list[tuple[str, addnodes.desc]]:
    content = desc.children[-1]
    return [
        (member.children[0]["fullname"].rsplit(".", 1)[-1], member)
        for member in content.children
        if isinstance(member, addnodes.desc) and member.get("domain") == "py"
    ]


def _listed_problem(cls: type, name: str, rendered: list[tuple[str, addnodes.desc]]) -> str:
    descs = [desc for member, desc in rendered if member == name]
    if not descs:
        if not _exists(cls, name):
            return f"listed member {name!r} does not exist"
        return f"listed member {name!r} is not rendered: it has no docstring"
    if not descs[0].children[-1].astext().strip():
        return f"listed member {name!r} is rendered without a docstring"
    if not _has_own_docstring(cls, name):
        return f"listed member {name!r} has no docstring of its own (the page shows its base's)"
    return ""


def _exists(cls: type, name: str) -> bool:
    try:
        inspect.getattr_static(cls, name)
    except AttributeError:
        return any(name in getattr(klass, "__annotations__", {}) for klass in cls.__mro__)
    return True


def _has_own_docstring(cls: type, name: str) -> bool:
    """Whether the class that defines the method or property ``name`` gave it a docstring."""
    _, raw = _definition(cls, name)
    if not _is_routine(raw):
        return True  # an attribute: autodoc documents it from its doc comment
    return bool(getattr(raw, "__func__", raw).__doc__)


def _definition(cls: type, name: str) -> tuple[type | None, Any]:
    """The class of the MRO that defines ``name``, and the object in its namespace."""
    return next(((k, vars(k)[name]) for k in cls.__mro__ if name in vars(k)), (None, None))


def _is_routine(raw: Any) -> bool:
    return inspect.isroutine(raw) or isinstance(raw, property)
