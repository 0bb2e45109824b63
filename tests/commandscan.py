"""Which programs can the test suite start? Read from the source (AST), not from a run on one machine.

A run shows only what one machine happens to have: a test that runs nginx passes wherever nginx is installed.
This reads tests/, asgigate/, examples/ and benchmarks/ and finds every program named where one is started or
looked for:

- ``subprocess.run/Popen/call/check_call/check_output``, ``asyncio.create_subprocess_exec/_shell``,
  ``os.exec*``, ``os.spawn*``, ``os.posix_spawn*``, ``os.system``, ``os.popen``, ``pty.spawn``,
  ``shutil.which``, and a keyword ``executable=`` or ``executable_path=`` (playwright's ``launch``);
- through the code's own helpers: a parameter that reaches one of those is followed to every call of its
  function (``Proc(name, cmd, ...)``, ``serve_process(args, ...)``, ``spawn(*args)``), a name to what is
  assigned to it (``cmd = [...]``, ``self.binary = shutil.which("x")``), a call to what its function returns
  (``uvicorn_cmd(...)``, ``systems.command(...)``, a dict of lambdas), and ``taskset``/``setarch``/
  ``valgrind``/``env`` to the program they run.

Only code the suite can run counts: every function of tests/, asgigate/ and examples/, module-level code (it
runs on import), and in benchmarks/ what those reach (calls and references followed by name, erring towards
"reached"; a Python script in a string constant, as the tests run with ``python -c``, is read as code too).
So the benchmarks' own ``nginx -v`` is fine until a test reaches it.

What the scan cannot follow to a constant is reported as unresolved, never guessed.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ("tests", "asgigate", "examples", "benchmarks")
ALWAYS_RUN = ("tests", "asgigate", "examples")  # every function counts; benchmarks/ only what these reach
# the folders on sys.path when the code runs (the tests and the benchmarks import their modules by bare name)
IMPORT_ROOTS = ("", "tests", "tests/idp", "benchmarks", "benchmarks/apps")
SKIPPED_DIRS = {"node_modules", "__pycache__", ".venv"}

PYTHON = "python"  # what sys.executable is reported as: the interpreter running the suite
# Programs that run another program: how many positional arguments they take before it (options skipped).
RUNNERS = {"taskset": 1, "setarch": 0, "valgrind": 0, "env": 0, "nice": 0, "timeout": 1, "sudo": 0, "xvfb-run": 0}

_ARGV_FIRST = {  # the argument vector is the first argument (or args=)
    "subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call", "subprocess.check_output",
    "pty.spawn",
}  # fmt: skip
_ARGV_VARARGS = {"asyncio.create_subprocess_exec"}  # the positional arguments are the argument vector
_SHELL_FIRST = {"asyncio.create_subprocess_shell", "os.system", "os.popen", "subprocess.getoutput",
                "subprocess.getstatusoutput"}  # fmt: skip
_PROGRAM_FIRST = {  # the program is the first argument
    "os.execv", "os.execve", "os.execvp", "os.execvpe", "os.execl", "os.execle", "os.execlp", "os.execlpe",
    "os.posix_spawn", "os.posix_spawnp", "shutil.which",
}  # fmt: skip
_PROGRAM_SECOND = {"os.spawnv", "os.spawnve", "os.spawnvp", "os.spawnvpe", "os.spawnl", "os.spawnle",
                   "os.spawnlp", "os.spawnlpe"}  # fmt: skip
_PROGRAM_KEYWORDS = ("executable", "executable_path")
_PASS_THROUGH = {"str", "list", "tuple", "Path", "os.fspath", "pathlib.Path", "shutil.which"}  # f(x) names x
_FORMAT_FIELD = re.compile(r"\{\{|\}\}|\{[A-Za-z_]\w*(?:![rsa])?\}")


@dataclass(frozen=True)
class Found:
    """A program (its base name) the suite can start or look for, and where its name is written."""

    program: str
    file: str  # relative to the repository
    line: int
    function: str  # the function (or <module>) the name is written in

    def where(self) -> str:
        return f"{self.file}:{self.line} ({self.function})"


@dataclass(frozen=True)
class Unresolved:
    """Where a program is started whose name the scan could not follow to a constant."""

    file: str
    line: int
    function: str
    text: str

    def where(self) -> str:
        return f"{self.file}:{self.line} ({self.function}): {self.text}"


class Elements(ast.expr):
    """Any element of an iterable: what a loop variable, an unpacked name or a subscript is bound to."""

    def __init__(self, iterable: ast.expr) -> None:
        super().__init__()
        self.iterable = iterable
        ast.copy_location(self, iterable)


class ArgList(ast.expr):
    """The positional arguments of one call (from an index on): a ``*args`` parameter's value."""

    def __init__(self, items: list[ast.expr], origin: ast.AST) -> None:
        super().__init__()
        self.items = items
        ast.copy_location(self, origin)


PYTHON_MARK = ast.Constant(value=None)  # sys.executable, however it is reached


@dataclass(eq=False)
class SourceFile:
    rel: str
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # alias -> (module, name or None)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    self_assigned: dict[tuple[str, str], list[tuple[ast.expr, Scope]]] = field(default_factory=dict)
    scopes: list[Scope] = field(default_factory=list)
    script_of: Scope | None = None  # a script in a string constant: the scope the string is in


@dataclass(eq=False)
class Scope:
    """A module, a function, a lambda or a module's ``if __name__ == "__main__":`` block."""

    file: SourceFile
    node: ast.AST
    qualname: str
    parent: Scope | None
    cls: ast.ClassDef | None = None  # a method's class
    statements: list[ast.stmt] = field(default_factory=list)
    assigned: dict[str, list[ast.expr]] = field(default_factory=dict)
    defs: dict[str, ast.AST] = field(default_factory=dict)  # functions and classes defined here
    nodes: list[ast.AST] | None = None  # _own_nodes, once read

    def arguments(self) -> ast.arguments | None:
        return self.node.args if isinstance(self.node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) else None

    @property
    def positional(self) -> list[str]:
        args = self.arguments()
        return [p.arg for p in [*args.posonlyargs, *args.args]] if args else []

    @property
    def vararg(self) -> str | None:
        args = self.arguments()
        return args.vararg.arg if args and args.vararg else None

    @property
    def params(self) -> set[str]:
        args = self.arguments()
        if args is None:
            return set()
        extra = [p.arg for p in (args.vararg, args.kwarg) if p is not None]
        return {*self.positional, *(p.arg for p in args.kwonlyargs), *extra}


class Scan:
    """``Scan().found``: every program the suite can start; ``.unresolved``: starts the scan could not follow."""

    def __init__(self, paths: Iterable[Path] | None = None, root: Path = ROOT) -> None:
        self.root = root
        self.files: list[SourceFile] = []
        self.by_module: dict[str, list[SourceFile]] = {}
        self.scope_of: dict[int, Scope] = {}  # id(function or lambda node) -> its scope
        self.methods: dict[str, list[Scope]] = {}
        for path in paths if paths is not None else _python_files(root):
            rel = path.relative_to(root).as_posix()
            source = self._read(rel, ast.parse(path.read_text(), filename=rel))
            for name in _module_names(rel):
                self.by_module.setdefault(name, []).append(source)
        self.reachable: set[Scope] = set()
        self.reached_from: dict[Scope, Scope | None] = {}
        self._reach()
        self.found: set[Found] = set()
        self.unresolved: set[Unresolved] = set()
        self._busy: set[tuple[int, int]] = set()
        self._memo: dict[tuple[int, int], list[tuple[ast.expr, Scope]]] = {}
        self._calls: dict[int, list[tuple[ast.Call, Scope]]] | None = None
        for scope in list(self.reachable):
            for node in _own_nodes(scope):
                if isinstance(node, ast.Call):
                    self._start(node, scope)

    # --- reading

    def _read(self, rel: str, tree: ast.Module, script_of: Scope | None = None) -> SourceFile:
        source = SourceFile(rel, script_of=script_of)
        self._collect(Scope(source, tree, "<module>" if script_of is None else "<script>", None), tree.body)
        self.files.append(source)
        return source

    def _collect(self, scope: Scope, body: list[ast.stmt]) -> None:
        source = scope.file
        source.scopes.append(scope)
        self.scope_of[id(scope.node)] = scope
        if scope.cls is not None:
            self.methods.setdefault(scope.qualname.rsplit(".", 1)[-1], []).append(scope)
        main: list[ast.stmt] = []
        for statement in body:
            if scope.parent is None and isinstance(statement, ast.If) and _is_main_check(statement.test):
                main.extend(statement.body)  # runs only when the file is run as a script
            else:
                scope.statements.append(statement)
        for node in _own_nodes(scope):
            self._bind(scope, node)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                self._define(scope, node)
        if main:
            self._collect(Scope(source, ast.Module(body=main, type_ignores=[]), "<__main__>", scope), main)

    def _define(self, scope: Scope, node: ast.AST, cls: ast.ClassDef | None = None) -> None:
        prefix = "" if scope.parent is None else f"{scope.qualname}."
        if isinstance(node, ast.ClassDef):
            scope.defs[node.name] = node
            scope.file.classes.setdefault(node.name, node)
            for child in node.body:
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    self._define(scope, child, cls=node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            name = getattr(node, "name", "<lambda>")
            if cls is None and not isinstance(node, ast.Lambda):
                scope.defs[name] = node
            qualname = f"{prefix}{cls.name}.{name}" if cls is not None else f"{prefix}{name}"
            body: list[ast.stmt] = node.body if isinstance(node.body, list) else [ast.Return(value=node.body)]
            self._collect(Scope(scope.file, node, qualname, scope, cls=cls), body)

    def _bind(self, scope: Scope, node: ast.AST) -> None:
        source = scope.file
        owner = _owner(scope)

        def bind(target: ast.expr, value: ast.expr) -> None:
            if isinstance(target, ast.Name):
                scope.assigned.setdefault(target.id, []).append(value)
            elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and \
                    target.value.id == "self" and owner is not None:  # fmt: skip
                source.self_assigned.setdefault((owner.name, target.attr), []).append((value, scope))
            elif isinstance(target, ast.Tuple | ast.List):
                for elt in target.elts:  # unpacking: any name may get any element
                    bind(elt.value if isinstance(elt, ast.Starred) else elt, Elements(value))

        if isinstance(node, ast.Assign):
            for target in node.targets:
                bind(target, node.value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            bind(node.target, node.value)
        # (not AugAssign: `cmd += [...]` adds arguments, the program stays the one first assigned)
        elif isinstance(node, ast.NamedExpr):
            bind(node.target, node.value)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
            bind(node.target, Elements(node.iter))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            bind(node.optional_vars, node.context_expr)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                source.imports[alias.asname or top] = (alias.name if alias.asname else top, None)
        elif isinstance(node, ast.ImportFrom):
            package = Path(source.rel.split(":")[0]).parent.parts  # `from .x import y`: from the file's package
            base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
            module = node.module if node.level == 0 and node.module else base
            for alias in node.names:
                source.imports[alias.asname or alias.name] = (module, alias.name)

    # --- what the suite runs

    def _reach(self) -> None:
        todo: list[tuple[Scope, Scope | None]] = []  # (scope, the scope it is reached from)
        for source in list(self.files):
            todo.append((source.scopes[0], None))  # module-level code runs when the module is imported
            if source.rel.split("/")[0] in ALWAYS_RUN:
                todo += [(scope, None) for scope in source.scopes]
        while todo:
            scope, caller = todo.pop()
            if scope in self.reachable:
                continue
            self.reachable.add(scope)
            self.reached_from[scope] = caller
            for node in _own_nodes(scope):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                    todo += [(s, scope) for s in self._scopes_of(self._lookup(scope, node.id))]
                elif isinstance(node, ast.Attribute):
                    todo += [(s, scope) for s in self._attribute(scope, node)]
                elif isinstance(node, ast.Lambda):
                    todo.append((self.scope_of[id(node)], scope))
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value:
                    script = self._script(scope, node)
                    if script is not None:  # all of it: what a script defines, it is there to run
                        todo += [(inner, scope) for inner in script.scopes]

    def how_reached(self, found: Found) -> str:
        """How the suite gets to where a program is written: ``test_x (tests/test_x.py) -> render (...) -> ...``."""
        scope = next((s for f in self.files for s in f.scopes if f.rel == found.file and s.qualname == found.function),
                     None)  # fmt: skip
        chain: list[str] = []
        while scope is not None and len(chain) < 12:
            holder = scope.file.script_of
            chain.append(f"{scope.qualname} ({scope.file.rel})" if holder is None else "a script in a string")
            scope = self.reached_from.get(scope)
        return " <- ".join(chain)

    def _script(self, scope: Scope, node: ast.Constant) -> SourceFile | None:
        """A Python script in a string constant (run with ``python -c``); str.format fields read as None."""
        assert isinstance(node.value, str)
        text = _FORMAT_FIELD.sub(lambda m: {"{{": "{", "}}": "}"}.get(m.group(0), "None"), node.value)
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return None
        if not any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(tree)):
            return None
        rel = f"{scope.file.rel}:{node.lineno}"
        known = next((f for f in self.files if f.rel == rel and f.script_of is scope), None)
        return known or self._read(rel, tree, script_of=scope)

    def _lookup(self, scope: Scope | None, name: str) -> list[ast.AST]:
        """The functions and classes a name means in `scope` (Python's scoping; imports of scanned modules)."""
        while scope is not None:
            if name in scope.defs:
                return [scope.defs[name]]
            if name in scope.params or name in scope.assigned:
                return []
            if scope.parent is None:
                imported = scope.file.imports.get(name)
                if imported is not None and imported[1] is not None:
                    return [d for f in self.by_module.get(imported[0], []) for d in self._module_def(f, imported[1])]
                return []
            scope = scope.parent
        return []

    def _module_def(self, source: SourceFile, name: str, depth: int = 0) -> list[ast.AST]:
        module = source.scopes[0]
        if name in module.defs:
            return [module.defs[name]]
        imported = source.imports.get(name)
        if imported is not None and imported[1] is not None and depth < 5:  # re-exported
            return [d for f in self.by_module.get(imported[0], []) if f is not source
                    for d in self._module_def(f, imported[1], depth + 1)]  # fmt: skip
        return []

    def _scopes_of(self, defs: list[ast.AST]) -> list[Scope]:
        """Functions: their scope; classes: all their methods (any may be called once there is an instance)."""
        out = []
        for node in defs:
            children = node.body if isinstance(node, ast.ClassDef) else [node]
            out += [self.scope_of[id(c)] for c in children if id(c) in self.scope_of]
        return out

    def _attribute(self, scope: Scope, node: ast.Attribute, call: bool = False) -> list[Scope]:
        """What ``x.name`` can be: a function of a scanned module when x names one (imported, or loaded by hand
        under its own name, as ``instructions = load("instructions")``); a method of x's class when x is a
        class, ``self`` or ``super()``. For a call on any other object (`call`): the methods of that name of
        the classes the suite uses (a class the suite names has all its methods reached already, which is why
        reaching needs no such guess)."""
        target = node.value
        owner = _owner(scope)
        if isinstance(target, ast.Call) and isinstance(target.func, ast.Name) and target.func.id == "super":
            if owner is not None:
                return self._methods(node.attr, self._family(owner) - {owner.name})
        elif isinstance(target, ast.Name):
            receiver = target.id
            imported = scope.file.imports.get(receiver)
            names = [receiver] if imported is None else [
                imported[0] if imported[1] is None else f"{imported[0]}.{imported[1]}"]  # fmt: skip
            modules = [f for m in names for f in self.by_module.get(m, [])]
            functions = self._scopes_of([d for f in modules for d in self._module_def(f, node.attr)])
            if functions:
                return functions
            if imported is not None and imported[1] is None:
                return []  # a module outside the scanned code (subprocess.run is not a method of ours)
            classes = [d for d in self._lookup(scope, receiver) if isinstance(d, ast.ClassDef)]
            if classes:
                return self._methods(node.attr, {n for c in classes for n in self._family(c)})
            if receiver in {"self", "cls"} and owner is not None:
                mine = self._methods(node.attr, self._family(owner))
                if mine:
                    return mine
        if not call:
            return []
        return [s for s in self.methods.get(node.attr, []) if s in self.reachable]

    def _methods(self, name: str, classes: set[str]) -> list[Scope]:
        return [s for s in self.methods.get(name, []) if s.cls is not None and s.cls.name in classes]

    def _family(self, cls: ast.ClassDef) -> set[str]:
        """The class's name and its bases' (by name, in the scanned code)."""
        names: set[str] = set()
        todo = [cls]
        while todo:
            current = todo.pop()
            if current.name not in names:
                names.add(current.name)
                for base in current.bases:
                    if isinstance(base, ast.Name):
                        todo += [f.classes[base.id] for f in self.files if base.id in f.classes]
        return names

    # --- the programs

    def _start(self, call: ast.Call, scope: Scope) -> None:
        name = self._qualified(scope, call.func)
        keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
        for keyword in _PROGRAM_KEYWORDS:
            if keyword in keywords:
                self._program(keywords[keyword], scope)
        if name in _ARGV_FIRST:
            argv = call.args[0] if call.args else keywords.get("args")
            shell = keywords.get("shell")
            if argv is None:
                return
            if isinstance(shell, ast.Constant) and shell.value is True:
                self._shell(argv, scope)
            else:
                self._argv(argv, scope)
        elif name in _ARGV_VARARGS:
            self._items(call.args, scope)
        elif name in _SHELL_FIRST and call.args:
            self._shell(call.args[0], scope)
        elif name in _PROGRAM_FIRST and call.args:
            self._program(call.args[0], scope)
        elif name in _PROGRAM_SECOND and len(call.args) > 1:
            self._program(call.args[1], scope)

    def _qualified(self, scope: Scope, func: ast.expr) -> str:
        """``subprocess.run`` for subprocess.run(...), sp.run(...) after ``import subprocess as sp``, run(...)
        after ``from subprocess import run``."""
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            imported = scope.file.imports.get(func.value.id)
            module = imported[0] if imported is not None and imported[1] is None else func.value.id
            return f"{module}.{func.attr}"
        if isinstance(func, ast.Name):
            imported = scope.file.imports.get(func.id)
            if imported is not None:
                return f"{imported[0]}.{imported[1]}" if imported[1] else imported[0]
            return func.id
        return ""

    def _shell(self, command: ast.expr, scope: Scope) -> None:
        for value, where in self._values(command, scope):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                words = [w for w in shlex.split(value.value) if "=" not in w]
                if words:
                    self._note(words[0], value, where)
            else:
                self._unresolved(value, where)

    def _argv(self, argv: ast.expr, scope: Scope) -> None:
        for value, where in self._values(argv, scope):
            if isinstance(value, ast.List | ast.Tuple):
                self._items(value.elts, where)
            elif isinstance(value, ArgList):
                self._items(value.items, where)
            elif isinstance(value, ast.Constant) and isinstance(value.value, str):
                self._note(value.value, value, where)  # a program without arguments
            else:
                self._unresolved(value, where)

    def _items(self, items: list[ast.expr], scope: Scope) -> None:
        """The program of an argument vector, and the one a runner in front of it (taskset ...) runs."""
        runner: str | None = None
        before = 0  # positional arguments of the runner still to come before its program
        for item in items:
            if isinstance(item, ast.Starred):
                if self._options_only(item.value, scope):
                    continue
                if before == 0:
                    self._argv(item.value, scope)
                    return
                before -= 1
                continue
            if _is_option(item, runner):
                continue
            if before > 0:
                before -= 1
                continue
            runners = [p for p in self._program(item, scope) if p in RUNNERS]
            if not runners:
                return
            runner = runners[0]
            before = RUNNERS[runner]

    def _options_only(self, expr: ast.expr, scope: Scope) -> bool:
        """True for ``*(["--flag"] if x else [])``: options, not the program."""
        seen = False
        for value, _ in self._values(expr, scope):
            items = value.items if isinstance(value, ArgList) else getattr(value, "elts", None)
            if items is None:
                return False
            for item in items:
                if not _is_option(item, None):
                    return False
                seen = True
        return seen

    def _program(self, expr: ast.expr, scope: Scope) -> set[str]:
        """The programs an expression can name (each recorded where it is written)."""
        names = set()
        for value, where in self._values(expr, scope):
            if value is PYTHON_MARK:
                names.add(PYTHON)
            elif isinstance(value, ast.Constant) and isinstance(value.value, str):
                self._note(value.value, value, where)
                names.add(os.path.basename(value.value))
            elif not (isinstance(value, ast.Constant) and value.value is None):
                self._unresolved(value, where)
        return names

    def _note(self, program: str, node: ast.AST, scope: Scope) -> None:
        base = os.path.basename(program)
        if base and not base.startswith("-"):
            self.found.add(Found(base, *_where(node, scope)))

    def _unresolved(self, node: ast.AST, scope: Scope) -> None:
        text = type(node).__name__ if isinstance(node, Elements | ArgList) else ast.unparse(node)
        self.unresolved.add(Unresolved(*_where(node, scope), text))

    # --- following values

    def _values(self, expr: ast.expr, scope: Scope) -> Iterator[tuple[ast.expr, Scope]]:
        """What `expr` can evaluate to, as constants, list displays and argument lists where the scan can tell
        (any other expression: as itself), each with the scope it is written in."""
        key = (id(expr), id(scope))
        if key in self._memo:
            yield from self._memo[key]
            return
        if key in self._busy:  # a cycle (a recursive helper): its other values come from elsewhere
            return
        self._busy.add(key)
        try:
            values = list(dict.fromkeys(self._values_of(expr, scope)))
        finally:
            self._busy.discard(key)
        self._memo[key] = values
        yield from values

    def _values_of(self, expr: ast.expr, scope: Scope) -> Iterator[tuple[ast.expr, Scope]]:
        if isinstance(expr, ast.Attribute) and self._qualified(scope, expr) == "sys.executable":
            yield PYTHON_MARK, scope
        elif isinstance(expr, ast.Name):
            yield from self._name_values(expr, scope)
        elif isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "self":
            owner = _owner(scope)
            family = self._family(owner) if owner is not None else set()
            values = [v for f in self.files for cls in family for v in f.self_assigned.get((cls, expr.attr), [])]
            if not values:
                yield expr, scope
            for value, where in values:
                yield from self._values(value, where)
        elif isinstance(expr, ast.IfExp):
            yield from self._values(expr.body, scope)
            yield from self._values(expr.orelse, scope)
        elif isinstance(expr, ast.BoolOp):
            for value in expr.values:
                yield from self._values(value, scope)
        elif isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div):  # REPO / ".venv" / "bin" / "python"
            yield from self._values(expr.right, scope)
        elif isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):  # [program, ...] + [...]
            yield from self._values(expr.left, scope)
        elif isinstance(expr, ast.Subscript):  # commands[0], SERVERS[name]
            yield from self._values(Elements(expr.value), scope)
        elif isinstance(expr, Elements):
            yield from self._elements(expr.iterable, scope)
        elif isinstance(expr, ast.Call):
            yield from self._call_values(expr, scope)
        else:
            yield expr, scope

    def _elements(self, iterable: ast.expr, scope: Scope) -> Iterator[tuple[ast.expr, Scope]]:
        for value, where in self._values(iterable, scope):
            if isinstance(value, ast.List | ast.Tuple | ast.Set):
                for elt in value.elts:
                    if isinstance(elt, ast.Starred):
                        yield from self._values(Elements(elt.value), where)
                    else:
                        yield from self._values(elt, where)
            elif isinstance(value, ArgList):
                for item in value.items:
                    yield from self._values(item, where)
            elif isinstance(value, ast.Dict):
                for item in value.values:
                    yield from self._values(item, where)
            elif isinstance(value, ast.ListComp | ast.GeneratorExp | ast.SetComp):
                yield from self._values(value.elt, where)
            elif isinstance(value, ast.DictComp):
                yield from self._values(value.value, where)
            elif not (isinstance(value, ast.Constant) and isinstance(value.value, str)):  # not a string's letters
                yield value, where

    def _name_values(self, expr: ast.Name, scope: Scope) -> Iterator[tuple[ast.expr, Scope]]:
        name = expr.id
        current: Scope | None = scope
        while current is not None:
            if name in current.params:
                yield from self._param_values(current, name)
                return
            if name in current.assigned:
                for value in current.assigned[name]:
                    yield from self._values(value, current)
                return
            if name in current.defs:
                yield expr, scope  # a function or a class, not a program
                return
            if current.parent is None:
                imported = current.file.imports.get(name)
                if imported is not None and imported[1] is not None:
                    for source in self.by_module.get(imported[0], []):
                        other = ast.copy_location(ast.Name(id=imported[1], ctx=ast.Load()), expr)
                        yield from self._values(other, source.scopes[0])
                    return
                if imported is not None:
                    return  # a module, not a program
            current = current.parent
        yield expr, scope

    def _param_values(self, function: Scope, name: str) -> Iterator[tuple[ast.expr, Scope]]:
        """A parameter's values: the matching argument of every call the suite can make to its function."""
        positional = function.positional
        bound = 1 if function.cls is not None and positional[:1] in (["self"], ["cls"]) else 0
        if bound and name == positional[0]:
            return
        arguments = function.arguments()
        assert arguments is not None
        for call, where in self._calls_of(function):
            keyword = next((k.value for k in call.keywords if k.arg == name), None)
            if name == function.vararg:
                yield ArgList(list(call.args[len(positional) - bound :]), call), where
            elif keyword is not None:
                yield from self._values(keyword, where)
            elif name in positional:
                index = positional.index(name) - bound
                starred = next((a for a in call.args[: index + 1] if isinstance(a, ast.Starred)), None)
                if starred is not None:
                    yield from self._values(Elements(starred.value), where)
                elif index < len(call.args):
                    yield from self._values(call.args[index], where)
                else:
                    position = positional.index(name) - (len(positional) - len(arguments.defaults))
                    if 0 <= position < len(arguments.defaults):
                        yield from self._values(arguments.defaults[position], function.parent or function)
            else:  # keyword-only
                names = [a.arg for a in arguments.kwonlyargs]
                default = arguments.kw_defaults[names.index(name)] if name in names else None
                if default is not None:
                    yield from self._values(default, function.parent or function)

    def _calls_of(self, function: Scope) -> list[tuple[ast.Call, Scope]]:
        if self._calls is None:
            self._calls = {}
            for scope in self.reachable:
                for node in _own_nodes(scope):
                    if isinstance(node, ast.Call):
                        for callee in self._callees(node, scope):
                            self._calls.setdefault(id(callee.node), []).append((node, scope))
        return self._calls.get(id(function.node), [])

    def _callees(self, call: ast.Call, scope: Scope) -> list[Scope]:
        func = call.func
        if isinstance(func, ast.Name):
            found = []
            for node in self._lookup(scope, func.id):
                if isinstance(node, ast.ClassDef):  # a class call runs __init__ (its bases' when it has none)
                    inits = [self.scope_of[id(c)] for c in node.body if isinstance(c, ast.FunctionDef)
                             and c.name == "__init__" and id(c) in self.scope_of]  # fmt: skip
                    found += inits or [s for s in self.methods.get("__init__", [])
                                       if s.cls is not None and s.cls.name in self._family(node) - {node.name}]
                elif id(node) in self.scope_of:
                    found.append(self.scope_of[id(node)])
            return found
        if isinstance(func, ast.Attribute):
            return self._attribute(scope, func, call=True)
        if isinstance(func, ast.Subscript):  # SERVERS[name](port): a dict (or list) of lambdas or functions
            found = []
            for value, where in self._values(Elements(func.value), scope):
                if isinstance(value, ast.Lambda):
                    found.append(self.scope_of[id(value)])
                elif isinstance(value, ast.Name):
                    found += self._scopes_of(self._lookup(where, value.id))
            return found
        return []

    def _call_values(self, call: ast.Call, scope: Scope) -> Iterator[tuple[ast.expr, Scope]]:
        if self._qualified(scope, call.func) in _PASS_THROUGH:  # shutil.which(name), str(path), list(args)
            if call.args:
                yield from self._values(call.args[0], scope)
            return
        callees = self._callees(call, scope)
        if not callees:
            yield call, scope
        for callee in callees:
            for node in _own_nodes(callee):
                if isinstance(node, ast.Return) and node.value is not None:
                    yield from self._values(node.value, callee)


def _python_files(root: Path) -> Iterator[Path]:
    for tree in TREES:
        for path in sorted((root / tree).rglob("*.py")):
            if not SKIPPED_DIRS & set(path.relative_to(root).parts):
                yield path


def _module_names(rel: str) -> set[str]:
    """The dotted names a file can be imported as, from the folders on sys.path."""
    parts = list(Path(rel).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    names = set()
    for root in IMPORT_ROOTS:
        prefix = [p for p in root.split("/") if p]
        if parts[: len(prefix)] == prefix and len(parts) > len(prefix):
            names.add(".".join(parts[len(prefix) :]))
    return names


def _own_nodes(scope: Scope) -> list[ast.AST]:
    """The scope's own nodes: not the bodies of the functions and lambdas in it (scopes of their own), but their
    decorators and defaults, and the bodies of its classes (they run where the class is defined)."""
    if scope.nodes is None:
        scope.nodes = list(_walk(scope.statements))
    return scope.nodes


def _walk(statements: list[ast.stmt]) -> Iterator[ast.AST]:
    todo: list[ast.AST] = list(reversed(statements))
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo += [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
            if not isinstance(node, ast.Lambda):
                todo += node.decorator_list
        elif isinstance(node, ast.ClassDef):
            todo += [*node.bases, *node.decorator_list]
            todo += [n for n in node.body if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
            for method in node.body:
                if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
                    todo += [*method.decorator_list, *method.args.defaults]
        else:
            todo += ast.iter_child_nodes(node)


def _is_main_check(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))  # fmt: skip


def _is_option(item: ast.expr, runner: str | None) -> bool:
    """``-x``, ``--flag=value`` (also as an f-string), and ``NAME=value`` after env."""
    if isinstance(item, ast.Constant) and isinstance(item.value, str):
        return item.value.startswith("-") or (runner == "env" and "=" in item.value)
    if isinstance(item, ast.JoinedStr) and item.values and isinstance(item.values[0], ast.Constant):
        return str(item.values[0].value).startswith("-")
    return False


def _owner(scope: Scope) -> ast.ClassDef | None:
    current: Scope | None = scope
    while current is not None:
        if current.cls is not None:
            return current.cls
        current = current.parent
    return None


def _where(node: ast.AST, scope: Scope) -> tuple[str, int, str]:
    source = scope.file
    line = getattr(node, "lineno", 0)
    if source.script_of is not None:  # a script in a string: where the string is written
        holder = source.script_of
        return holder.file.rel, int(source.rel.rsplit(":", 1)[1]), f"{holder.qualname}, script line {line}"
    return source.rel, line, scope.qualname
