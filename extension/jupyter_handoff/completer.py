"""Tab completion for ``%mlops``: subcommands, options and their choices, model names, version
numbers, and the notebook's variables where a model or data goes.

What the word under the cursor is comes from the subcommand's own parser (``magics.PARSERS``),
so a new option completes without a change here. On IPython 8.6 and later this is a matcher
of IPython's API v2 that answers alone on a ``%mlops`` line: a frontend's completion would
otherwise bury ``churn:2`` under every builtin name Jedi knows. Older IPython gets the same
candidates through the ``complete_command`` hook. It imports nothing heavy and asks the agent
(with a short timeout) only when a model name or version is being completed.
"""

from __future__ import annotations

import inspect
import math

MAGIC = "%mlops"
MATCHER_ID = "jupyter_handoff.mlops"
TIMEOUT = 1.0
PATHS = {"NOTEBOOK", "FILE", "PATH_OR_URL"}  # IPython's own completion offers the files
# (subcommand, dest) where a variable goes: a model (it has predict), or rows (a shape).
MODEL_VARIABLES = {("push", "model")}
DATA_VARIABLES = {
    ("push", "data"),
    ("push", "reference"),
    ("push", "sensitive"),
    ("predict", "data"),
}


def _client():
    from .client import connect

    client = connect(start=False, announce=lambda *_: None)
    client.timeout = TIMEOUT
    return client


def model_names() -> list[str]:
    try:
        return [m["name"] for m in _client().get("/api/v1/models")["models"]]
    except Exception:
        return []


def version_numbers(name: str) -> list[str]:
    try:
        rows = _client().get(f"/api/v1/models/{name}/versions?limit=100")["versions"]
    except Exception:
        return []
    return [str(r["number"]) for r in rows]


def options(sub: str) -> list[str]:
    from .magics import PARSERS

    return sorted(o for a in PARSERS[sub]._actions for o in a.option_strings)


def _count(action) -> float:
    """How many words ``action`` takes: argparse's ``nargs`` as a number."""
    nargs = action.nargs
    if nargs is None or nargs == "?":
        return 1
    if nargs in ("+", "*"):
        return math.inf
    return nargs


def _expected(parser, words: list[str]):
    """The argparse action whose value the next word is, after ``words``; None past the
    last positional."""
    flags = {s: a for a in parser._actions for s in a.option_strings}
    pending, left, seen = None, 0, 0
    for word in words:
        if word in flags:
            pending, left = flags[word], _count(flags[word])
        elif pending is not None and left:
            left -= 1
        else:
            pending, seen = None, seen + 1
    if pending is not None and left:
        return pending
    for action in (a for a in parser._actions if not a.option_strings):
        if seen < _count(action):
            return action
        seen -= _count(action)
    return None


def _variables(namespace: dict, hidden: dict, attribute: str) -> list[str]:
    """The notebook's variables (not classes) that have ``attribute``, looked up without
    running any property of theirs."""
    out = []
    for name, value in namespace.items():
        if name.startswith("_") or name in hidden or isinstance(value, type):
            continue
        try:
            inspect.getattr_static(value, attribute)
        except AttributeError:
            continue
        out.append(name)
    return sorted(out)


def _columns(namespace: dict, words: list[str]) -> list[str]:
    """The named columns of the pandas frame given as ``--data X``, if it is one."""
    if "--data" not in words[:-1]:
        return []
    frame = namespace.get(words[words.index("--data") + 1])
    if not type(frame).__module__.startswith("pandas") or not hasattr(frame, "columns"):
        return []
    return [c for c in map(str, frame.columns) if c.split() == [c]]  # one word each


def candidates(text_until_cursor: str, namespace=None, hidden=None):
    """``(fragment, candidates)`` for the word being typed on a ``%mlops`` line: the
    candidates replace ``fragment``, the end of that word. None where the word is not ours to
    complete (a path): IPython's own completion answers there."""
    from .magics import PARSERS

    words = text_until_cursor.split()
    if not words or words[0] != MAGIC:
        return None
    words = words[1:]
    current = "" if text_until_cursor.endswith((" ", "\t")) or not words else words.pop()
    if not words:  # the subcommand
        return current, [s for s in PARSERS if s.startswith(current)]
    sub = words[0]
    if sub not in PARSERS:
        return None
    parser = PARSERS[sub]
    if current.startswith("-"):
        return current, [o for o in options(sub) if o.startswith(current)]
    action = _expected(parser, words[1:])
    if action is None:  # past the positionals: only options are left
        return current, [o for o in options(sub) if o.startswith(current)]
    if action.choices:
        return current, [str(c) for c in action.choices if str(c).startswith(current)]
    if (sub, action.dest) in MODEL_VARIABLES | DATA_VARIABLES:
        attribute = "predict" if (sub, action.dest) in MODEL_VARIABLES else "shape"
        found = _variables(namespace or {}, hidden or {}, attribute)
        if action.dest == "sensitive":  # or a column of X
            found = _columns(namespace or {}, words) + found
        return current, [n for n in found if n.startswith(current)]
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest
    if "|" in metavar and metavar.islower():  # the values themselves: change|schema|drift
        return current, [v for v in metavar.split("|") if v.startswith(current)]
    if metavar in PATHS:
        return None
    if not metavar.upper().startswith("NAME"):
        return current, []  # free text (a message, K=V, SQL): nothing to offer, nor Jedi's
    if ":" in current and ":" in metavar:
        name, _, typed = current.partition(":")
        return typed, [n for n in version_numbers(name) if n.startswith(typed)]
    return current, [n for n in model_names() if n.startswith(current)]


def complete(text_until_cursor: str, namespace=None) -> list[str]:
    """Candidates for the word being typed after ``%mlops``."""
    found = candidates(text_until_cursor, namespace)
    return found[1] if found else []


def _hook(shell, event):
    """IPython before 8.6: the ``complete_command`` hook (which, like IPython, splits words
    at ':', so after "churn:" it completes just the number)."""
    found = candidates(event.text_until_cursor, shell.user_ns, shell.user_ns_hidden)
    return (found and found[1]) or None


def _matcher(ipython, completion, context_matcher):
    @context_matcher(identifier=MATCHER_ID)
    def mlops_matcher(context):
        found = candidates(context.text_until_cursor, ipython.user_ns, ipython.user_ns_hidden)
        if found is None:
            return {"completions": [], "suppress": False}
        fragment, texts = found
        return {
            "completions": [completion(t, type="mlops") for t in texts],
            "matched_fragment": fragment,
            "suppress": True,
            "ordered": True,  # newest version first, subcommands in the help's order
        }

    return mlops_matcher


def register(ipython) -> None:
    try:
        from IPython.core.completer import SimpleCompletion, context_matcher  # IPython >= 8.6
    except ImportError:
        ipython.set_hook("complete_command", _hook, str_key=MAGIC)
        return
    matchers = ipython.Completer.custom_matchers
    matchers[:] = [m for m in matchers if getattr(m, "matcher_identifier", None) != MATCHER_ID]
    matchers.append(_matcher(ipython, SimpleCompletion, context_matcher))
