"""Named suites (``harness run --suite NAME``): ``default``, ``all`` and the profiles in ``scenarios/suites/``.

A profile is a small TOML file that lists scenarios of the library by name:

    description = "what the suite is for"
    scenarios = ["ci_gate"]

It is validated like a scenario (unknown key, missing scenario: file, key
and fix, exit 2), and so is every scenario it names.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.scenario import ScenarioError

__all__ = ["BUILTIN_SUITES", "SuiteProfile", "known_suites", "load_profile", "suite_scenarios"]

BUILTIN_SUITES = ("default", "all")
_KEYS = ("description", "scenarios")


@dataclass(frozen=True)
class SuiteProfile:
    name: str
    description: str
    scenarios: tuple[str, ...]
    source: str


def _hint(word: str, options: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def known_suites(root: Path) -> list[str]:
    """``default``, ``all`` and every profile under ``root/suites/``."""
    folder = root / "suites"
    return [*BUILTIN_SUITES, *sorted(p.stem for p in folder.glob("*.toml"))] if folder.is_dir() else [*BUILTIN_SUITES]


def load_profile(path: Path, root: Path) -> SuiteProfile:
    """Read and validate a suite profile; its scenarios are names of ``root/<name>.toml``."""
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(file, "", f"cannot read the suite file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(file, "", "not UTF-8 text: save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(file, "", f"not valid TOML: {exc}") from None
    for k in data:
        if k not in _KEYS:
            raise ScenarioError(file, k, f"unknown key; {_hint(k, _KEYS)}allowed here: {', '.join(_KEYS)}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(file, "description", f"expected a string, got {description!r}")
    names = data.get("scenarios")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ScenarioError(
            file, "scenarios", f'expected a non-empty list of scenario names, e.g. ["ci_gate"], got {names!r}'
        )
    library = sorted(p.stem for p in root.glob("*.toml"))
    for n in names:
        if n not in library:
            raise ScenarioError(
                file, "scenarios", f"no scenario {n!r} under {root}/; {_hint(n, library)}known: {', '.join(library)}"
            )
    if len(set(names)) != len(names):
        raise ScenarioError(file, "scenarios", f"a scenario is listed twice: {names!r}")
    return SuiteProfile(path.stem, description, tuple(names), file)


def suite_scenarios(root: Path, suite: str) -> list[Path]:
    """The scenario files of the profile ``root/suites/<suite>.toml`` (``default`` and ``all`` are the caller's)."""
    path = root / "suites" / f"{suite}.toml"
    if not path.is_file():
        known = known_suites(root)
        raise ScenarioError(f"--suite {suite}", "", f"unknown suite; {_hint(suite, known)}allowed: {', '.join(known)}")
    return [root / f"{n}.toml" for n in load_profile(path, root).scenarios]
