"""The trust list: the exact types a skops file may name before any agent loads it.

A skops file is a schema of ``module.name`` references that the loader imports and calls, so
a name is exactly as safe as the code behind it. An agent loads a file only when every type
it names is on its list: this curated default (the common scikit-learn, xgboost and lightgbm
families, derived by dumping fitted models with ``tests/agent/trust_families.py`` and
reviewed by hand) plus the types an admin added (``jupyter handoff trust add``). Names are
exact: no prefixes, no wildcards. Gadgets (exec, os, subprocess, pickle, …) are never
trusted, whoever asks.

``python -I -m handoff_agent.trust`` reads one job ``{"bundle": PATH}`` on stdin and prints
the types the bundle's model names, read from its schema without importing skops or loading
anything, so a probe costs a Python start-up.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable

from .errors import BadRequest

# fmt: off
DEFAULT_TRUSTED: frozenset[str] = frozenset({
    # Plain data: Python and numpy containers and scalars, scipy sparse matrices.
    "builtins.bytearray", "builtins.bytes", "builtins.dict", "builtins.frozenset",
    "builtins.list", "builtins.set", "builtins.slice", "builtins.str", "builtins.tuple",
    "collections.OrderedDict", "collections.defaultdict",
    "numpy.ndarray", "numpy.dtype", "numpy.bool", "numpy.float32", "numpy.float64",
    "numpy.int32", "numpy.int64", "numpy.uint64",
    "numpy.random.mtrand.RandomState", "numpy.random._generator.Generator",
    "scipy.sparse._csr.csr_matrix", "scipy.sparse._csc.csc_matrix",
    "scipy.sparse._csr.csr_array",
    # Pipelines and column handling. A partial only calls what it wraps, and what it wraps
    # is a type of its own that must be on this list (HistGradientBoosting wraps check_array).
    "sklearn.pipeline.Pipeline", "sklearn.pipeline.FeatureUnion",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "functools.partial", "sklearn.utils.validation.check_array",
    # Encoders, imputers, scalers
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.impute._base.SimpleImputer", "sklearn.impute._base.MissingIndicator",
    "sklearn.preprocessing._data.StandardScaler", "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.preprocessing._data.RobustScaler", "sklearn.preprocessing._data.MaxAbsScaler",
    # Text
    "sklearn.feature_extraction.text.CountVectorizer",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.naive_bayes.MultinomialNB",
    # Linear models (SGD keeps its loss as an object)
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._ridge.Ridge", "sklearn.linear_model._ridge.RidgeClassifier",
    "sklearn.linear_model._coordinate_descent.Lasso",
    "sklearn.linear_model._coordinate_descent.ElasticNet",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn.linear_model._stochastic_gradient.SGDRegressor",
    "sklearn.linear_model._sgd_fast.Hinge", "sklearn.linear_model._sgd_fast.ModifiedHuber",
    "sklearn.linear_model._sgd_fast.SquaredHinge",
    "sklearn.linear_model._sgd_fast.EpsilonInsensitive",
    "sklearn.linear_model._sgd_fast.SquaredEpsilonInsensitive",
    # Trees, forests and gradient boosting, with the losses and links they keep. Tree and
    # TreePredictor hold raw node indices: a crafted file can crash the worker that loads
    # it (inside the sandbox), but cannot run code.
    "sklearn.tree._tree.Tree",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._classes.ExtraTreeClassifier", "sklearn.tree._classes.ExtraTreeRegressor",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    # scikit-learn < 1.4 (the declared floor) keeps gradient boosting's loss as an object.
    "sklearn.ensemble._gb_losses.BinomialDeviance",
    "sklearn.ensemble._gb_losses.MultinomialDeviance",
    "sklearn.ensemble._gb_losses.LeastSquaresError",
    "sklearn.dummy.DummyClassifier", "sklearn.dummy.DummyRegressor",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.link.IdentityLink", "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit",
    # xgboost and lightgbm
    "xgboost.sklearn.XGBClassifier", "xgboost.sklearn.XGBRegressor", "xgboost.core.Booster",
    "lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRegressor",
    "lightgbm.basic.Booster",
})
# fmt: on

# Never trusted, not even by an admin: these run code, touch files, processes or the network.
DENIED_NAMES = frozenset(
    {
        "functools.reduce",
        "operator.attrgetter",
        "operator.itemgetter",
        "operator.methodcaller",
        "types.FunctionType",
        "types.CodeType",
        "types.MethodType",
        "types.LambdaType",
        "types.ModuleType",
        "numpy.load",
        "numpy.save",
        "numpy.fromfile",
        "numpy.memmap",
    }
)
DENIED_MODULES = (
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "importlib",
    "pickle",
    "_pickle",
    "copyreg",
    "marshal",
    "shutil",
    "socket",
    "_socket",
    "ssl",
    "ctypes",
    "_ctypes",
    "runpy",
    "code",
    "codeop",
    "pty",
    "signal",
    "multiprocessing",
    "threading",
    "_thread",
    "asyncio",
    "io",
    "_io",
    "pathlib",
    "tempfile",
    "glob",
    "urllib",
    "http",
    "webbrowser",
    "inspect",
    "gc",
    "ast",
    "dill",
    "cloudpickle",
    "joblib",
    # runners of code given as text, debuggers and profilers
    *("timeit", "cProfile", "profile", "pstats", "pdb", "bdb", "trace", "pydoc", "doctest"),
    *("unittest", "numexpr", "numba", "operator", "_operator", "types", "atexit", "concurrent"),
    # files, archives, databases and the network
    *("shelve", "dbm", "sqlite3", "_sqlite3", "fileinput", "linecache", "tarfile", "zipfile"),
    *("gzip", "bz2", "lzma", "mmap", "fcntl", "codecs", "_codecs", "xml", "socketserver"),
    *("smtplib", "ftplib", "telnetlib", "imaplib", "poplib", "xmlrpc", "select", "selectors"),
    *("logging", "posixpath", "_posixsubprocess", "pty", "tty", "termios", "resource"),
    # imports and the interpreter
    *("pkgutil", "zipimport", "site", "sysconfig", "faulthandler"),
    # tools that load, run or reach out: never part of a model
    *("skops", "setuptools", "pip", "venv", "IPython", "ipykernel", "tornado", "sqlalchemy"),
    *("jupyter_client", "jupyter_core", "jupyter_server", "jupyter_handoff"),
    *("requests", "urllib3", "boto3", "botocore", "mlflow", "torch", "tensorflow", "keras"),
)
# A module part that holds file readers, test helpers or code runners in any library:
# numpy.testing._private.utils.runstring, pandas.io.pickle.read_pickle, numpy.lib.npyio.load.
DENIED_PARTS = frozenset(
    {
        *("testing", "_testing", "_private", "tests", "io", "_io", "datasets", "f2py"),
        *("distutils", "npyio", "_npyio_impl", "ctypeslib", "computation", "externals"),
    }
)
# A function by its name's shape, in any module: what reads, writes, runs or connects
# (a verb alone or before _, a digit or a known object: run_path, loads, runstring).
DENIED_FUNCTION = re.compile(
    r"_*(?:(?:read|load|save|dump|open|eval|exec|run|system|spawn|popen|call|import|compile"
    r"|connect|fetch|download|resolve|pager|shell|invoke)(?:[_0-9].*|s|string|file|txt|ctx)?"
    r"|urlopen|evaluate|fromfile|fromregex|genfromtxt|tofile|pipepager|[gs]etattr|delattr"
    r"|to_(?:pickle|csv|parquet|hdf|sql|json|excel|feather|stata|html|latex|clipboard|xml|orc))"
)
# The only builtins that may ever be trusted: plain data. Everything else in builtins
# (exec, eval, compile, getattr, setattr, __import__, open, …) is a gadget.
BUILTIN_DATA = frozenset(
    f"builtins.{n}"
    for n in (
        "bool",
        "bytes",
        "bytearray",
        "complex",
        "dict",
        "float",
        "frozenset",
        "int",
        "list",
        "range",
        "set",
        "slice",
        "str",
        "tuple",
    )
)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def denied(name: str) -> str | None:
    """Why ``name`` can never be trusted, or None."""
    module = name.rpartition(".")[0]
    if name in DENIED_NAMES:
        return f"{name} can run code or touch the system"
    if module == "builtins" and name not in BUILTIN_DATA:
        return f"{name} is a Python builtin that can run code or touch the system"
    for m in DENIED_MODULES:
        if module == m or module.startswith(m + "."):
            return f"{name} is in module {m}, which can run code or touch the system"
    part = next((p for p in module.split(".") if p in DENIED_PARTS), None)
    if part:
        return f"{name} is in a {part} module, which can read files or run code"
    if DENIED_FUNCTION.fullmatch(name.rpartition(".")[2]):
        return f"{name} is named as a function that reads, writes, runs or connects"
    if any(part.startswith("__") for part in name.split(".")):
        return f"{name} names a dunder, which reaches into Python's machinery"
    return None


def check_shape(name) -> None:
    """BadRequest ``bad_type_name`` unless ``name`` is shaped like an exact type name: the
    CLI says so as a usage mistake before it opens a registry, the API as a 400."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadRequest(
            f"{name!r} is not an exact type name: dotted module and class names in ASCII "
            "letters, digits and _, such as sklearn.tree._tree.Tree; no wildcards.",
            "A refusal to load a model names its types in full.",
            code="bad_type_name",
        )


def check_addable(names: Iterable[str]) -> list[str]:
    """The names, validated for ``trust add``: exact dotted names, never a gadget."""
    out = []
    for name in names:
        check_shape(name)
        why = denied(name)
        if why:
            raise BadRequest(
                f"Refused to trust {name}: {why}. It is never trusted.",
                "A model that needs it cannot be loaded at central; ask the analyst to "
                "rebuild the model without it.",
                code="type_never_trusted",
            )
        out.append(name)
    if not out:
        raise BadRequest("Name at least one type to trust.", code="bad_type_name")
    return sorted(set(out))


def effective(added: Iterable[str] = ()) -> list[str]:
    """Default plus added, gadgets removed whatever the table says."""
    return sorted(n for n in DEFAULT_TRUSTED.union(added) if denied(n) is None)


def untrusted(needed: Iterable[str], added: Iterable[str] = ()) -> list[str]:
    """The needed types that the default list plus ``added`` does not trust."""
    allowed = DEFAULT_TRUSTED.union(added)
    return sorted({n for n in needed if n not in allowed or denied(n) is not None})


def needed_types(data: bytes) -> set[str]:
    """Every type a skops file names, read from its schema. Nothing is imported or built:
    skops' tree is audited with every node trusting nothing, so it reports all it would load.
    """
    import io
    from zipfile import ZipFile

    from skops.io._audit import Node, get_tree

    with ZipFile(io.BytesIO(data), "r") as zf:
        try:
            from skops.io._utils import read_schema

            schema, context = read_schema(zf)
        except ImportError:  # skops < 0.14
            from skops.io._utils import LoadContext

            schema = json.loads(zf.read("schema.json"))
            context = LoadContext(src=zf, protocol=schema["protocol"])
        try:
            tree = get_tree(schema, context, trusted=None)
        except (KeyError, TypeError):
            # A loader this skops does not know: it cannot load the file either. Every type the
            # schema names is then needed, so the refusal still names them.
            return schema_types(data)
        seen: set[int] = set()
        stack = [tree]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            node.trusted = []
            for child in node.children.values():
                if isinstance(child, Node):
                    stack.append(child)
                elif isinstance(child, list):
                    stack.extend(c for c in child if isinstance(c, Node))
                elif isinstance(child, dict):
                    stack.extend(c for c in child.values() if isinstance(c, Node))
        return set(tree.get_unsafe_set())


MAX_SCHEMA = 64 << 20


def schema_types(data: bytes) -> set[str]:
    """The types a skops file names, from its schema.json alone: quick, imports neither
    skops nor the libraries it names. Central's intake uses it to decide whether a version
    waits for trust; ``load_skops`` still checks ``needed_types`` before anything loads."""
    import io
    from zipfile import ZipFile

    with ZipFile(io.BytesIO(data), "r") as zf:
        if zf.getinfo("schema.json").file_size > MAX_SCHEMA:
            raise ValueError("schema.json is too large")
        schema = json.loads(zf.read("schema.json"))
    out: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            cls, module = node.get("__class__"), node.get("__module__")
            if isinstance(cls, str) and isinstance(module, str):
                out.add(f"{module}.{cls}")
                content = node.get("content")
                if node.get("__loader__") == "MethodNode" and isinstance(content, dict):
                    out.add(f"{module}.{cls}.{content.get('func')}")
            stack.extend(node.values())
    return out


class UntrustedTypes(Exception):
    """The model names types that are not on the trust list; nothing was loaded."""

    def __init__(self, types: list[str]):
        self.types = types
        never = [t for t in types if denied(t)]
        others = [t for t in types if not denied(t)]
        text = f"the model needs types that are not on the trust list: {', '.join(types)}."
        if never:
            text += f" Never trusted, since they can run code: {', '.join(never)}."
        if others:
            text += f" An admin can trust the rest: `jupyter handoff trust add {' '.join(others)}`."
        super().__init__(text)


def load_skops(data: bytes, trusted: Iterable[str]):
    """Load only when every type the file names is on ``trusted`` (default plus added)."""
    import skops.io as sio

    allowed = effective(trusted)
    missing = untrusted(needed_types(data), allowed)
    if missing:
        raise UntrustedTypes(missing)
    return sio.loads(data, trusted=allowed)


def _probe(job: dict) -> dict:
    """Which types does the bundle's model name? Reads the schema only; no model code runs."""
    import tarfile

    from .manifest import model_member

    with tarfile.open(job["bundle"], mode="r:") as tar:
        data = tar.extractfile(model_member("skops")).read()
    return {"ok": True, "types": sorted(schema_types(data))}


def main() -> int:
    from .sandbox import serve_one_job

    return serve_one_job(_probe)  # an unreadable file is a verdict, not a crash


if __name__ == "__main__":
    sys.exit(main())
