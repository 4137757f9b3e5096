"""``Command``: the base of every ``jupyter handoff`` command. A mistyped option is a usage
mistake (one line, exit 2), not traitlets' warning that it "will have no effect" while the
command goes ahead without it, and a bad value is one line too."""

from __future__ import annotations

import json
import re
import traceback

from jupyter_core.application import JupyterApp
from traitlets import TraitError, default
from traitlets.config.loader import (
    _DOT_REPLACEMENT,
    ConfigFileNotFound,
    JSONFileConfigLoader,
    KVArgParseConfigLoader,
    PyFileConfigLoader,
    _KVArgParser,
)

from .shell import complain

_TRAIT_ERROR = re.compile(
    r"The '(\w+)' trait of an? \w+ instance expected (.+), not the \w+ (.+)\."
)


class UsageError(Exception):
    pass


class ConfigFileError(Exception):
    """A config file that does not load: the command stops, rather than run on defaults (a
    central would start as a local agent on SQLite)."""


def _file_line(filename: str, e: Exception) -> str:
    """Where ``e`` happened in ``filename`` and what it is, without the source line (it may
    hold a password) or the exception's text, unless that is the parser's own message."""
    if isinstance(e, (SyntaxError, json.JSONDecodeError)):
        line, what = e.lineno, f"{type(e).__name__}: {e.msg}"
    else:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == filename]
        line, what = (frames[-1].lineno if frames else "?"), type(e).__name__
        if isinstance(e, NameError) and e.name:
            what += f": name {e.name!r} is not defined"
    return (
        f"Config file {filename}, line {line}: {what}. Fix it: Handoff does not run on a "
        "config file it cannot read."
    )


class _Raising:
    def load_config(self):
        try:
            return super().load_config()
        except ConfigFileNotFound:
            raise
        except Exception as e:
            raise ConfigFileError(_file_line(self.full_filename, e)) from None


class _PyLoader(_Raising, PyFileConfigLoader):
    pass


class _JSONLoader(_Raising, JSONFileConfigLoader):
    pass


class _Parser(_KVArgParser):
    def error(self, message):  # argparse prints its usage block and exits: one line instead
        m = re.fullmatch(r"argument --?([\w.-]+): expected (?:at least )?one argument", message)
        if m:
            raise _NoValue(m.group(1))
        raise UsageError(message[:1].upper() + message[1:])


class _NoValue(Exception):
    """``--name`` last, without a value: a known option's value left out, or an unknown one."""


class _Loader(KVArgParseConfigLoader):
    parser_class = _Parser

    def load_config(self, *args, **kwargs):
        try:
            return super().load_config(*args, **kwargs)
        except _NoValue as e:
            name = str(e)  # an alias's "Class.trait", a --Class.trait, or unknown
            if "." not in name:
                raise UsageError(f"Unknown option {_dashed(name)}.") from None
            typed = _typed(self.argv, self.aliases, name)
            option = typed or _option(self.aliases, name)
            raise UsageError(_negative(self.argv, option) or f"{option} needs a value.") from None

    def _handle_unrecognized_alias(self, arg: str) -> None:
        raise UsageError(f"Unknown option {_dashed(arg)}.")

    def _add_arguments(self, aliases, flags, classes) -> None:
        """A list setting tagged ``multiplicity="+"`` takes several values after one option
        as well as the option repeated (``--on change drift``, ``--on change --on drift``),
        as the magics read theirs: argparse's ``extend``. traitlets offers append or nargs,
        not both, and parses an alias as its ``--Class.trait``, so that one is declared."""
        super()._add_arguments(aliases, flags, classes)
        for name, (_trait, kwargs) in self.argparse_traits.items():
            if kwargs.get("nargs") == "+":
                self.parser.add_argument(
                    f"--{name}",
                    type=str,
                    nargs="+",
                    action="extend",
                    dest=name.replace(".", _DOT_REPLACEMENT),
                    metavar=name,
                )


class Command(JupyterApp):
    python_config_loader_class = _PyLoader
    json_config_loader_class = _JSONLoader

    @default("raise_config_file_errors")
    def _raise_config_file_errors(self):  # else traitlets logs a traceback and goes on
        return True

    def _create_loader(self, argv, aliases, flags, classes):
        return _Loader(argv, aliases, flags, classes=classes, log=self.log)

    def update_config(self, config) -> None:
        try:
            super().update_config(config)
        except TraitError as e:
            raise UsageError(_value_line(e, self.aliases)) from None

    def initialize(self, argv=None):
        try:
            super().initialize(argv)
            _given_home(self.config)
            _known_settings(self.cli_config)
        except ConfigFileError as e:
            complain(str(e))
            self.exit(2)
        except UsageError as e:
            usage = getattr(self, "usage", "")
            command = self.name.replace("-", " ")
            complain(str(e), f"Usage: {usage}" if usage else f"See: {command} --help")
            self.exit(2)


def _known_settings(cli_config) -> None:
    """``--HandofAgent.port=…`` or ``--HandoffAgent.trsut_list=…`` on the command line: a
    typo traitlets ignores (or only warns of) while the agent runs without the setting."""
    import difflib

    from traitlets.config import Configurable

    classes, stack = {}, [Configurable]
    while stack:  # every settings class loaded: the agent's, the checks', the plugins'
        cls = stack.pop()
        classes.setdefault(cls.__name__, cls)
        stack += cls.__subclasses__()
    for section, values in cli_config.items():
        if section not in classes:  # a plugin's class may load later: only a near miss
            near = difflib.get_close_matches(section, list(classes), 1, cutoff=0.85)
            if near:
                raise UsageError(
                    f"--{section}.…: no settings are named {section}; did you mean --{near[0]}.…?"
                )
            continue
        settable = classes[section].class_trait_names(config=True)
        for key in values:
            if key not in settable:
                near = difflib.get_close_matches(key, settable, 1)
                maybe = f"; did you mean --{section}.{near[0]}?" if near else ""
                raise UsageError(f"--{section}.{key}: {section} has no setting {key!r}{maybe}")


def _given_home(config) -> None:
    """``--home=``: every command would take the current directory (or the default home)
    for the registry while the agent's lock went elsewhere; refused before anything runs."""
    from .agent import EMPTY_HOME

    home = config.HandoffAgent.get("home") if "HandoffAgent" in config else None
    if home is not None and not str(home).strip():
        raise UsageError(EMPTY_HOME)


def _value_line(e: TraitError, aliases: dict) -> str:
    """traitlets' "The 'fmt' trait of an InventoryApp instance expected any of ['table',
    'json', 'csv'], not the str 'xml'." as "--format 'xml': expected any of …"."""
    m = _TRAIT_ERROR.match(str(e))
    if m is None:
        return str(e)
    trait, expected, value = m.groups()
    return f"{_option(aliases, trait)} {value}: expected {expected}."


def _names(aliases: dict, trait: str) -> list[str]:
    """Every alias of ``Class.trait`` (or ``trait``): traitlets may have split a tuple of
    names into keys of their own, in no fixed order."""
    found = []
    for names, to in aliases.items():
        target = to if isinstance(to, str) else to[0]
        if target == trait or target.endswith(f".{trait}"):
            found += [names] if isinstance(names, str) else list(names)
    return found


def _option(aliases: dict, trait: str) -> str:
    """The option people type for ``Class.trait``: its longest alias, if it has one."""
    return _dashed(max(_names(aliases, trait), key=len, default=trait))


def _typed(argv: list[str], aliases: dict, trait: str) -> str | None:
    """The option as the user typed it, so ``-m`` without a value is named ``-m``."""
    names = set(_names(aliases, trait)) | {trait}
    for arg in reversed(argv or []):
        if arg.startswith("-") and arg.lstrip("-").split("=")[0] in names:
            return arg.split("=")[0]
    return None


def _negative(argv: list[str], option: str) -> str | None:
    """``--older-than -1h``: argparse takes ``-1h`` for an option and says the value is
    missing. Said once here for every option: a period (``--every``, ``--older-than``,
    ``--expires``) or a count is positive."""
    from .vocabulary import PERIOD_UNITS

    args = list(argv or [])
    following = args[args.index(option) + 1 :][:1] if option in args else []
    if not following or not re.fullmatch(r"-\d[\d.]*[A-Za-z]*", following[0]):
        return None
    value = following[0]
    if value[-1] in PERIOD_UNITS:
        how = "a period must be positive, written with its unit, e.g. 30m, 24h, 7d."
        return f"{option} {value}: {how}"
    return f"{option} {value}: a negative number is not allowed here."


def _dashed(name: str) -> str:
    return f"-{name}" if len(name) == 1 else f"--{name}"
