"""The package files a subcommand runs: a rule's code inputs and a training checkpoint's fingerprint.

A rule's code inputs and a training run's checkpoint fingerprint are the package files its
command runs. In the cli package (diffpo/cli/): the module defining the command's function
``cmd_NAME`` and its options ``options_NAME``, the definitions they refer to there, those it imports from other modules of the
package (transitively), every module-level statement of the modules so reached, and the
package's ``main`` and ``build_parser`` (cli/__init__.py). build_parser imports every module
of the package by name (importlib), to find ``cmd_NAME``; their module level is imports and
constants only (a test checks), so a command does not depend on another command's module.
Then every package module those definitions import, transitively (module-level and
function-local imports alike), and the package data files (YAML beside the modules) whose names they hold.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "diffpo"
CLI = f"{PACKAGE}.cli"
ALWAYS_RUN = ("main", "build_parser")  # cli/__init__.py functions every command runs


def code_files(command: str, root: Path) -> list[str]:
    """The files ``python -m diffpo COMMAND`` runs, relative to the project ``root`` (``src/diffpo/...``)."""
    root = Path(root)
    return [str(p.relative_to(root)) for p in command_sources(command, root / "src" / PACKAGE)]


def code_digest(command: str, package_dir: Path | None = None) -> str:
    """A digest of the files ``command`` runs, read where the package is imported from by default."""
    if package_dir is None:
        import diffpo

        package_dir = Path(diffpo.__file__).parent
    digest = hashlib.sha256()
    for path in command_sources(command, package_dir):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def command_sources(command: str, package_dir: Path) -> list[Path]:
    """Sorted paths of the package files that subcommand ``command`` (e.g. ``pretrain-unet``) runs."""
    package_dir = Path(package_dir)
    cli = _CliPackage(package_dir)
    entry = "cmd_" + command.replace("-", "_")
    homes = [name for name in cli.commands if entry in cli.defs[name]]
    if len(homes) != 1:
        where = f"{len(homes)} of its modules define" if homes else "no module of it defines"
        raise ValueError(f"unknown diffpo subcommand {command!r}: {cli.directory} has {where} {entry}()")
    pending = [f"{PACKAGE}.__main__"]  # modules outside the cli package that run
    loaded: set[str] = set()  # modules of the cli package that run

    def load(module: str) -> None:  # a cli module runs: its module-level statements
        if module not in loaded:
            loaded.add(module)
            for node in cli.trees[module].body:
                if not isinstance(node, _DEFINITIONS):
                    follow(node, module)

    def follow(node: ast.AST, module: str) -> None:  # the modules a node imports
        for imported in _imported(node, module, package_dir, module == CLI):
            if imported in cli.trees:
                load(imported)
            else:
                pending.append(imported)

    # the command's function and its options' declaration (``options_NAME``, beside it)
    entries = [(homes[0], name) for name in (entry, "options_" + entry[len("cmd_"):]) if name in cli.defs[homes[0]]]
    used, todo = set(), [(CLI, name) for name in ALWAYS_RUN if name in cli.defs[CLI]] + entries
    while todo:  # the command's function and the definitions it refers to, in its module or imported from another
        module, name = todo.pop()
        if (module, name) in used:
            continue
        used.add((module, name))
        load(module)
        node = cli.defs[module][name]
        follow(node, module)
        for ref in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}:
            if ref in cli.defs[module]:
                todo.append((module, ref))
            elif ref in cli.aliases[module]:
                todo.append(cli.aliases[module][ref])
    files: set[Path] = set()
    while pending:  # every package module those import, transitively
        module = pending.pop()
        if module in cli.trees:  # a cli module imported from outside the package (__main__): its module level
            load(module)
            continue
        path = _module_file(module, package_dir)
        if path is None or path in files:
            continue
        files.add(path)
        pending += _parents(module)
        pending += _imported(_parse(path), _module_name(path, package_dir), package_dir, path.name == "__init__.py")
    files |= {cli.files[module] for module in loaded}
    sources = [p for p in files if p.suffix == ".py"]
    return sorted(files | set(_data_files(sources, package_dir)))


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class _CliPackage:
    """The modules of the cli package, parsed: their top-level definitions, and the names they
    import from one another (``from diffpo.cli.evaluate import _world``: _world there)."""

    def __init__(self, package_dir: Path):
        self.directory = package_dir / "cli"
        self.files = {CLI: self.directory / "__init__.py"}
        self.files |= {f"{CLI}.{p.stem}": p for p in sorted(self.directory.glob("*.py")) if p.stem != "__init__"}
        self.commands = [name for name in self.files if name != CLI]  # where ``cmd_NAME`` may be
        self.trees = {name: _parse(path) for name, path in self.files.items()}
        self.defs = {name: {n.name: n for n in tree.body if isinstance(n, _DEFINITIONS)}
                     for name, tree in self.trees.items()}
        self.aliases: dict[str, dict[str, tuple[str, str]]] = {}
        for name, tree in self.trees.items():
            self.aliases[name] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    base = _absolute(node, name, name == CLI)
                    for alias in node.names:
                        if alias.name in self.defs.get(base, {}):
                            self.aliases[name][alias.asname or alias.name] = (base, alias.name)


def _imported(node: ast.AST, importer: str, package_dir: Path, is_package: bool) -> set[str]:
    """The package modules an AST node imports (a ``from P import x`` also names P.x, if x is a module)."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names if _ours(a.name))
        elif isinstance(n, ast.ImportFrom):
            base = _absolute(n, importer, is_package)
            if _ours(base):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in n.names if _module_file(f"{base}.{a.name}", package_dir))
    return out


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, a relative one resolved from the importing module's package."""
    if not node.level:
        return node.module or ""
    anchor = importer.split(".") if is_package else importer.split(".")[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _module_file(module: str, package_dir: Path) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for path in (package_dir / rel.with_suffix(".py") if rel.parts else None, package_dir / rel / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def _module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir).with_suffix("").parts
    return ".".join([PACKAGE, *(parts[:-1] if parts[-1] == "__init__" else parts)])


def _parse(path: Path) -> ast.Module:
    return _parse_text(path.read_text(), str(path))


@functools.lru_cache(maxsize=256)
def _parse_text(text: str, filename: str) -> ast.Module:  # each rule's code(): the same files again
    return ast.parse(text, filename)


def _data_files(sources: list[Path], package_dir: Path) -> list[Path]:
    """Package data files (not Python) whose file name appears in a string of one of ``sources``."""
    data = [p for p in package_dir.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts]
    if not data:
        return []
    strings = [n.value for s in sources for n in ast.walk(_parse(s)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return [p for p in data if any(p.name in s for s in strings)]
