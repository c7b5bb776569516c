"""Write the intersphinx inventories of this folder from the installed packages.

``docs/conf.py`` links to Python, torch, torchmetrics, PyTorch-Ignite and Lightning through these
files instead of the projects' own ``objects.inv``, so that the docs build needs no network.
Each inventory is built by importing the package: the objects of the namespaces below (their
``__all__``, or the public names they define), with the members of the classes marked so, each
at the page and anchor where that project's docs put it. An object is also listed under the
name it is defined under and under the names the alias modules export it as, so that
``torch.nn.modules.module.Module`` (what autodoc writes for a base class) and
``lightning.pytorch.Callback`` both link. Run it after a version change in
``requirements-dev.txt``::

    python docs/_intersphinx/make_inventories.py
"""

from __future__ import annotations

import builtins
import enum
import functools
import importlib
import importlib.metadata
import inspect
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Doc:
    """An object that a project documents as ``name`` on ``page``; with ``members``, its public
    methods and properties too, on ``members.format(member name)``."""

    name: str
    page: str
    members: str | None = None


@dataclass(frozen=True)
class Project:
    """The inventory of the docs at ``url``: ``docs()`` lists what they document, ``aliases``
    the modules whose exports are other names of it."""

    key: str
    url: str
    distribution: str | None
    docs: Callable[[], list[Doc]]
    aliases: tuple[str, ...] = ()


def resolve(name: str) -> Any:
    """The object named ``name``: a module, or an attribute path below the longest importable
    prefix; a bare name is a builtin."""
    parts = name.split(".")
    if len(parts) == 1 and hasattr(builtins, name):
        return getattr(builtins, name)
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(name)


def public(module: str, *, origins: Iterable[str] | None = None) -> list[str]:
    """The public names of ``module``: its ``__all__``, else those defined in ``origins``
    (the module itself by default)."""
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    if names is not None:
        return sorted(name for name in names if hasattr(mod, name))
    allowed = set(origins or (module,))
    return sorted(
        name
        for name, obj in vars(mod).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) in allowed
    )


def namespace(
    module: str,
    page: str,
    *,
    kinds: tuple[str, ...] = ("function",),
    names: Iterable[str] | None = None,
    origins: Iterable[str] | None = None,
) -> list[Doc]:
    """A ``Doc`` on ``page.format(name)`` for each public object of ``module`` of the ``kinds``
    ("function", "class", "data")."""
    mod = importlib.import_module(module)
    chosen = public(module, origins=origins) if names is None else names
    docs = []
    for name in chosen:
        if _kind(getattr(mod, name)) in kinds:
            full = f"{module}.{name}"
            docs.append(Doc(full, page.format(full)))
    return docs


def _kind(obj: Any) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if inspect.isroutine(obj) or isinstance(obj, functools.partial):
        return "function"
    return "data"


def _role(obj: Any) -> str:
    kind = _kind(obj)
    if kind == "class" and issubclass(obj, BaseException):
        return "py:exception"
    return f"py:{kind}"


def _members(cls: type) -> list[tuple[str, str, type]]:
    """``(name, role, defining class)`` of the public methods, properties and enum members of
    ``cls`` that its own package defines."""
    package = cls.__module__.split(".")[0]
    owners: dict[str, type] = {}
    for klass in cls.__mro__:
        for name in vars(klass):
            owners.setdefault(name, klass)
    members = []
    for name, owner in sorted(owners.items()):
        raw = vars(owner)[name]
        if name.startswith("_") or owner.__module__.split(".")[0] != package:
            continue
        if inspect.isroutine(raw):
            members.append((name, "py:method", owner))
        elif isinstance(raw, property | functools.cached_property):
            members.append((name, "py:property", owner))
        elif inspect.isdatadescriptor(raw) or (
            isinstance(cls, enum.EnumMeta) and isinstance(raw, cls)
        ):
            members.append((name, "py:attribute", owner))
    return members


def entries(project: Project) -> dict[str, tuple[str, str]]:
    """``name -> (role, uri)`` of every documented object and member, then of their aliases."""
    unique: dict[str, Doc] = {}
    for doc in project.docs():
        unique.setdefault(doc.name, doc)
    docs = list(unique.values())
    objects = {doc.name: resolve(doc.name) for doc in docs}
    by_id = {id(obj): doc for doc, obj in zip(docs, objects.values(), strict=True)}
    found: dict[str, tuple[str, str]] = {}
    for doc in docs:
        obj = objects[doc.name]
        anchor = f"module-{doc.name}" if inspect.ismodule(obj) else doc.name
        found.setdefault(doc.name, (_role(obj), f"{doc.page}#{anchor}"))
        if doc.members and inspect.isclass(obj):
            for name, role, owner in _members(obj):
                # A member of a documented base is on the base's page, else on this class's.
                home = by_id.get(id(owner), doc)
                home = home if home.members else doc
                target = f"{home.name}.{name}"
                uri = f"{home.members.format(target)}#{target}"  # type: ignore[union-attr]
                found.setdefault(target, (role, uri))
                found.setdefault(f"{doc.name}.{name}", (role, uri))
    for doc in docs:
        for alias in _aliases(objects[doc.name], doc.name, project.aliases):
            for name, value in list(found.items()):
                if name == doc.name or name.startswith(f"{doc.name}."):
                    found.setdefault(alias + name[len(doc.name) :], value)
    return found


def _aliases(obj: Any, name: str, modules: tuple[str, ...]) -> list[str]:
    """Other names of ``obj``: where it is defined, and what the alias modules export it as."""
    if _kind(obj) not in ("class", "function"):
        return []  # a module's or a constant's exports are not other names of it
    names = []
    qualname = getattr(obj, "__qualname__", "")
    if "<" not in qualname and getattr(obj, "__module__", None):
        names.append(f"{obj.__module__}.{qualname}")
    for module in modules:
        mod = importlib.import_module(module)
        names += [
            f"{module}.{attr}"
            for attr, value in vars(mod).items()
            if not attr.startswith("_") and value is obj
        ]
    return [alias for alias in dict.fromkeys(names) if alias != name]


def write(project: Project, found: dict[str, tuple[str, str]]) -> Path:
    """Write ``found`` as a version 2 Sphinx inventory, ``<key>.inv``."""
    if project.distribution is None:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
    else:
        version = importlib.metadata.version(project.distribution)
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project.key}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    lines = []
    for name, (role, uri) in sorted(found.items()):
        short = uri[: -len(name)] + "$" if uri.endswith(f"#{name}") else uri
        lines.append(f"{name} {role} 1 {short} -\n")
    path = Path(mapping()[project.key][1])
    path.write_bytes(header.encode() + zlib.compress("".join(lines).encode(), 9))
    return path


# Python
_PY_MODULES = [
    "abc",
    "argparse",
    "collections",
    "collections.abc",
    "contextlib",
    "dataclasses",
    "enum",
    "functools",
    "io",
    "itertools",
    "json",
    "math",
    "numbers",
    "os",
    "pathlib",
    "tempfile",
    "types",
    "typing",
    "warnings",
]
_PY_MEMBERS = ("pathlib.PurePath", "pathlib.Path", "argparse.ArgumentParser")
_PY_STDTYPES = [
    "bytearray",
    "bytes",
    "dict",
    "frozenset",
    "list",
    "memoryview",
    "range",
    "set",
    "str",
    "tuple",
]
_PY_CONSTANTS = ("Ellipsis", "False", "None", "NotImplemented", "True")


def python_docs() -> list[Doc]:
    docs = [Doc(name, "library/constants.html") for name in _PY_CONSTANTS]
    for name, obj in sorted(vars(builtins).items()):
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            docs.append(Doc(name, "library/exceptions.html"))
        elif name in _PY_STDTYPES:
            docs.append(Doc(name, "library/stdtypes.html"))
        else:
            docs.append(Doc(name, "library/functions.html"))
    for module in _PY_MODULES:
        page = f"library/{module}.html"
        docs.append(Doc(module, page))
        docs += [
            Doc(doc.name, page, page if doc.name in _PY_MEMBERS else None)
            for doc in namespace(module, page, kinds=("function", "class", "data"))
        ]
    return docs


# torch
_TORCH_MODULES = {  # module: its page
    "torch": "torch.html",
    "torch.autograd": "autograd.html",
    "torch.distributed": "distributed.html",
    "torch.distributions": "distributions.html",
    "torch.func": "func.html",
    "torch.nn": "nn.html",
    "torch.nn.functional": "nn.functional.html",
    "torch.special": "special.html",
}
_TORCH_ATTRIBUTES = ("torch.device", "torch.dtype", "torch.layout", "torch.memory_format")


def torch_docs() -> list[Doc]:
    import torch.distributions
    import torch.nn.modules

    docs = [Doc(module, page) for module, page in _TORCH_MODULES.items()]
    docs += [
        Doc("torch.Tensor", "tensors.html", "generated/{}.html"),
        Doc("torch.Generator", "generated/torch.Generator.html", "generated/torch.Generator.html"),
        Doc("torch.Size", "size.html"),
        Doc("torch.autograd.Function", "autograd.html", "generated/{}.html"),
        Doc("torch.autograd.function.FunctionCtx", "autograd.html", "generated/{}.html"),
        Doc("torch.nn.Module", "generated/torch.nn.Module.html", "generated/torch.nn.Module.html"),
    ]
    docs += [Doc(name, "tensor_attributes.html") for name in _TORCH_ATTRIBUTES]
    docs += namespace("torch", "generated/{}.html")
    docs += namespace("torch.func", "generated/{}.html")
    docs += namespace("torch.special", "special.html")
    docs += namespace(
        "torch.nn.functional",
        "generated/{}.html",
        origins=("torch", "torch.nn.functional", "torch._C._nn"),
    )
    docs += namespace(
        "torch.distributed",
        "distributed.html",
        origins=("torch.distributed", "torch.distributed.distributed_c10d"),
    )
    modules = [name for name in torch.nn.modules.__all__ if name != "Module"]
    docs += namespace("torch.nn", "generated/{}.html", kinds=("class",), names=modules)
    docs += namespace("torch.nn.parameter", "generated/{}.html", kinds=("class",))
    for name in torch.distributions.__all__:
        obj = getattr(torch.distributions, name)
        if _kind(obj) not in ("class", "function"):
            continue  # submodules and registries
        docs.append(Doc(f"{obj.__module__}.{obj.__qualname__}", "distributions.html"))
    return docs


# torchmetrics
def torchmetrics_docs() -> list[Doc]:
    return [
        Doc("torchmetrics", "index.html"),
        Doc("torchmetrics.Metric", "references/metric.html", "references/metric.html"),
        Doc("torchmetrics.MetricCollection", "pages/overview.html"),
    ]


# PyTorch-Ignite documents most objects under the module that defines them, on a page of their
# own; these few are listed under their package instead.
_IGNITE_EXPORTED = {"DiskSaver", "TimeLimit", "global_step_from_engine"}
_IGNITE_MEMBERS = {  # the classes whose members are listed too
    "ignite.engine.engine.Engine",
    "ignite.engine.events.Events",
    "ignite.handlers.checkpoint.Checkpoint",
    "ignite.handlers.checkpoint.ModelCheckpoint",
    "ignite.handlers.param_scheduler.ParamScheduler",
    "ignite.handlers.state_param_scheduler.StateParamScheduler",
}


def ignite_docs() -> list[Doc]:
    import ignite.engine
    import ignite.handlers
    import ignite.metrics.metric

    docs = [Doc(f"ignite.{name}", f"{name}.html") for name in ("engine", "handlers", "metrics")]
    for package in (ignite.engine, ignite.handlers):
        for name in package.__all__:
            obj = getattr(package, name)
            if name in _IGNITE_EXPORTED:
                full = f"{package.__name__}.{name}"
            else:
                full = f"{obj.__module__}.{obj.__qualname__}"
            page = f"generated/{full}.html"
            docs.append(Doc(full, page, page if full in _IGNITE_MEMBERS else None))
    page = "generated/ignite.metrics.metric.Metric.html"
    docs.append(Doc("ignite.metrics.metric.Metric", page, page))
    usages = [name for name in public("ignite.metrics.metric") if name != "Metric"]
    docs += namespace("ignite.metrics.metric", "metrics.html", kinds=("class",), names=usages)
    return docs


# Lightning has a page per class, named as its API reference lists it.
_LIGHTNING_CORE = (
    "LightningDataModule",
    "LightningModule",
    "hooks.CheckpointHooks",
    "hooks.DataHooks",
    "hooks.ModelHooks",
    "mixins.HyperparametersMixin",
    "optimizer.LightningOptimizer",
)


def lightning_docs() -> list[Doc]:
    import lightning.pytorch.callbacks

    names = [f"lightning.pytorch.callbacks.{name}" for name in lightning.pytorch.callbacks.__all__]
    names += [f"lightning.pytorch.core.{name}" for name in _LIGHTNING_CORE]
    names.append("lightning.pytorch.trainer.trainer.Trainer")
    docs = [Doc("lightning.pytorch", "api_references.html")]
    docs += [Doc(name, f"api/{name}.html", f"api/{name}.html") for name in names]
    return docs


PROJECTS = (
    Project("python", "https://docs.python.org/3/", None, python_docs),
    Project(
        "torch",
        "https://pytorch.org/docs/stable/",
        "torch",
        torch_docs,
        ("torch", "torch.nn", "torch.distributions"),
    ),
    Project(
        "torchmetrics",
        "https://lightning.ai/docs/torchmetrics/stable/",
        "torchmetrics",
        torchmetrics_docs,
        ("torchmetrics",),
    ),
    Project(
        "ignite",
        "https://pytorch.org/ignite/",
        "pytorch-ignite",
        ignite_docs,
        ("ignite.engine", "ignite.handlers", "ignite.metrics"),
    ),
    Project(
        "lightning",
        "https://lightning.ai/docs/pytorch/stable/",
        "lightning",
        lightning_docs,
        ("lightning", "lightning.pytorch", "lightning.pytorch.core", "lightning.pytorch.trainer"),
    ),
)


def mapping() -> dict[str, tuple[str, str]]:
    """``intersphinx_mapping``: each project's site, with its inventory file here."""
    return {project.key: (project.url, str(HERE / f"{project.key}.inv")) for project in PROJECTS}


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the packages' import-time deprecations
        for project in PROJECTS:
            found = entries(project)
            path = write(project, found)
            print(f"{path.name}: {len(found)} names, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
