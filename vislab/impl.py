"""Import a lab's code from exactly one place: labs/, solutions/, or a folder the user names.

The lab folder is imported as a package under a name unique to its path, so the same lab can be
loaded from labs/ and solutions/ in one process without one shadowing the other, and every
module is checked to come from the folder that was asked for.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from vislab import LABS_DIR, SOLUTIONS_DIR


class ImplNotFound(FileNotFoundError):
    """The folder to grade or train does not exist or is not a lab folder."""


def lab_dir(lab: str, impl: str | Path = "labs") -> Path:
    """Resolve --impl: 'labs', 'solutions', a lab folder, or a folder that holds `<lab>/`."""
    if str(impl) in ("labs", "solutions"):
        path = (LABS_DIR if str(impl) == "labs" else SOLUTIONS_DIR) / lab
    else:
        path = Path(impl).expanduser().resolve()
        if (path / lab).is_dir() and not (path / "__init__.py").exists():
            path = path / lab
    if not path.is_dir():
        raise ImplNotFound(f"no folder {path} for lab '{lab}' (--impl takes labs, solutions, "
                           f"or a path to a folder holding the lab's files)")
    if not (path / "__init__.py").exists():
        raise ImplNotFound(f"{path} is not a lab folder: it has no __init__.py "
                           f"(copy the whole labs/{lab}/ folder)")
    check_is_lab(path, lab)
    return path.resolve()


def task_files(lab: str) -> set[str]:
    """The files of labs/<lab>/ that hold the lab's TODOs: what a folder of that lab has."""
    return {p.name for p in (LABS_DIR / lab).glob("*.py") if "TODO(" in p.read_text()}


def check_is_lab(path: Path, lab: str) -> None:
    """Refuse a folder of another lab: one that lacks most of `lab`'s task files (a student's
    folder may lack one, which grading reports for its tasks)."""
    expected = task_files(lab)
    have = {p.name for p in path.glob("*.py")}
    if not expected or len(expected - have) * 2 <= len(expected):
        return
    others = sorted((len(task_files(o) & have), o) for o in
                    (d.name for d in LABS_DIR.iterdir() if d.is_dir() and d.name != lab))
    like = f"; it looks like the {others[-1][1]} lab" if others and others[-1][0] else ""
    raise ImplNotFound(f"{path} does not look like the {lab} lab: it has none or few of "
                       f"{', '.join(sorted(expected))}{like} (point --impl at your {lab} folder)")


def package_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return f"_vislab_impl_{path.name}_{digest}"


def load_package(path: Path) -> ModuleType:
    """Import the lab folder `path` as a fresh package (any earlier import is discarded)."""
    name = package_name(path)
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    spec = importlib.util.spec_from_file_location(
        name, path / "__init__.py", submodule_search_locations=[str(path)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


class Lab:
    """A lab folder's modules, imported on first use: `import_lab(path).model.ViT`."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self._package = None

    def __getattr__(self, name: str) -> ModuleType:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._package is None:
            self._package = load_package(self.path)
        return load_module(self._package, name)


def import_lab(path: str | Path) -> Lab:
    """The lab folder at `path` (e.g. "." in a notebook next to model.py)."""
    path = Path(path).resolve()
    if not (path / "__init__.py").exists():
        raise ImplNotFound(f"{path} is not a lab folder: it has no __init__.py")
    return Lab(path)


def load_module(package: ModuleType, module: str) -> ModuleType:
    """Import `package.module` and check that it was read from the package's own folder."""
    mod = importlib.import_module(f"{package.__name__}.{module}")
    folder = Path(package.__path__[0]).resolve()
    origin = Path(mod.__file__).resolve()
    if folder not in origin.parents:
        raise ImportError(f"{module} was loaded from {origin}, outside {folder}")
    return mod
