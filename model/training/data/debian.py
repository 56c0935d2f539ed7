"""Debian package lists: fetching them with apt-get and parsing them.

The Debian Description Translation Project (DDTP) ships each package description in
many languages; a description is identified by the md5 of its English text, so the same
``Description-md5`` in two ``Translation-<lang>`` files is a human translation. The
``Packages`` file adds the control fields (source package, section, homepage, ...).
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import unquote

log = logging.getLogger(__name__)

DEFAULT_LANGUAGES = ("en", "de", "fr", "es", "zh_CN", "it")
_TRANSLATION = re.compile(r"Translation-([A-Za-z_]+)(?:\.(?:lz4|gz|xz|bz2))?$")
_PACKAGES = re.compile(r"Packages(?:\.(?:lz4|gz|xz|bz2))?$")
_VERSION_SUFFIX = re.compile(r"\s*\(.*\)\s*$")


@dataclass(frozen=True)
class Description:
    """One package description: synopsis line plus paragraphs of raw (wrapped) lines.

    Lines keep their extra indentation: Debian marks verbatim lines (lists, code) with
    a second leading space, which the text helpers use to find bullet items.
    """

    synopsis: str
    paragraphs: tuple[tuple[str, ...], ...]

    @classmethod
    def parse(cls, value: str) -> Description:
        """Parse a ``Description`` field value: first line, then continuation lines."""
        first, _, rest = value.partition("\n")
        paragraphs: list[tuple[str, ...]] = []
        current: list[str] = []
        for line in rest.split("\n"):
            if line.strip() == ".":  # " ." separates paragraphs
                if current:
                    paragraphs.append(tuple(current))
                current = []
            elif line.strip():
                current.append(line)
        if current:
            paragraphs.append(tuple(current))
        return cls(first.strip(), tuple(paragraphs))


@dataclass(frozen=True)
class Translation:
    """A ``Translation-<lang>`` stanza: which package, which English text, which words."""

    package: str
    md5: str
    lang: str
    description: Description


def fetch_lists(
    dest: Path, languages: Iterable[str] = DEFAULT_LANGUAGES, apt_get: str = "apt-get"
) -> Path:
    """Download the package lists and translations of this machine's apt sources.

    Uses apt itself (rather than hand-built URLs) so mirrors, suites and compression
    follow the machine's configuration. Needs network access and usually root.
    """
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "partial").mkdir(exist_ok=True)
    cmd = [
        apt_get,
        "-o", f"Dir::State::Lists={dest.resolve()}",
        "-o", f"Acquire::Languages={','.join(languages)}",
        "update",
    ]  # fmt: skip
    log.info("fetching package lists: %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    return dest


def open_text(path: Path) -> IO[str]:
    """Open a list file as UTF-8 text, decompressing by suffix (.lz4, .gz, .xz, .bz2)."""
    openers: dict[str, Callable[[Path, str], Any]] = {
        ".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open,
    }  # fmt: skip
    if path.suffix == ".lz4":
        import lz4.frame  # the `train` extra; imported here so the rest works without it

        openers[".lz4"] = lz4.frame.open
    opener = openers.get(path.suffix)
    raw = cast(IO[bytes], opener(path, "rb") if opener else path.open("rb"))
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def read_stanzas(path: Path) -> Iterator[dict[str, str]]:
    """Yield each deb822 stanza as a dict; continuation lines are kept after ``\\n``."""
    with open_text(path) as fh:
        stanza: dict[str, str] = {}
        last = ""
        for line in fh:
            line = line.rstrip("\n")
            if not line.strip():
                if stanza:
                    yield stanza
                stanza, last = {}, ""
            elif line[0] in " \t":
                if last:
                    stanza[last] += "\n" + line[1:]
            else:
                name, _, value = line.partition(":")
                last = name.strip()
                stanza[last] = value.strip()
        if stanza:
            yield stanza


def translation_language(path: Path) -> str | None:
    """The DDTP language of a ``..._Translation-<lang>[.lz4]`` file, else None."""
    match = _TRANSLATION.search(unquote(path.name))
    return match.group(1) if match else None


def find_list_files(lists_dir: Path) -> tuple[list[Path], list[Path]]:
    """The Translation and Packages files in an apt lists folder, sorted by name.

    Sorted so that the main suite comes before ``-updates`` and ``-security`` (their
    names sort after it); the first stanza seen for a package wins.
    """
    files = sorted(p for p in lists_dir.iterdir() if p.is_file())
    translations = [p for p in files if translation_language(p)]
    packages = [p for p in files if _PACKAGES.search(p.name)]
    translations.sort(key=_suite_order)
    packages.sort(key=_suite_order)
    return translations, packages


def _suite_order(path: Path) -> tuple[int, str]:
    """Main suite first, then updates, then security: main holds the translations."""
    name = path.name
    rank = 2 if "-security" in name else 1 if "-updates" in name else 0
    return rank, name


def read_translations(path: Path) -> Iterator[Translation]:
    """Yield the stanzas of one ``Translation-<lang>`` file."""
    lang = translation_language(path)
    if lang is None:
        raise ValueError(f"{path}: not a Translation-<lang> file")
    field = f"Description-{lang}"
    for stanza in read_stanzas(path):
        if field not in stanza or "Package" not in stanza:
            continue
        yield Translation(
            package=stanza["Package"],
            md5=stanza.get("Description-md5", ""),
            lang=lang,
            description=Description.parse(stanza[field]),
        )


def read_packages(paths: Iterable[Path]) -> dict[str, dict[str, str]]:
    """Control fields per binary package; the first file listing a package wins."""
    packages: dict[str, dict[str, str]] = {}
    for path in paths:
        for stanza in read_stanzas(path):
            name = stanza.get("Package")
            if name and name not in packages:
                packages[name] = stanza
    return packages


def source_name(package: str, control: dict[str, str] | None) -> str:
    """The source package of a binary: ``Source`` without its version, else its own name."""
    if control and control.get("Source"):
        return _VERSION_SUFFIX.sub("", control["Source"]).strip()
    return package


def dependency_names(depends: str) -> list[str]:
    """Package names in a ``Depends`` value: first alternative, no versions or arch."""
    names: list[str] = []
    for clause in depends.replace("\n", " ").split(","):
        first = clause.split("|")[0].strip()
        name = re.split(r"[\s(\[:<]", first, maxsplit=1)[0]
        if name and name not in names:
            names.append(name)
    return names


@dataclass
class Lists:
    """Everything parsed from an apt lists folder, indexed for the example builders."""

    # lang -> Description-md5 -> description; a md5 names one English text and so one
    # description across languages
    descriptions: dict[str, dict[str, Description]]
    # Description-md5 -> the binary packages that use it (siblings often share one)
    packages_by_md5: dict[str, set[str]]
    # binary package -> its control fields from the Packages files
    control: dict[str, dict[str, str]]
    files: list[Path]

    def source_of(self, package: str) -> str:
        """The source package of a binary package (its own name when unknown)."""
        return source_name(package, self.control.get(package))

    def owner(self, md5: str) -> str:
        """One deterministic binary package for a description: lowest (source, name)."""
        names = self.packages_by_md5.get(md5) or {md5}
        return min(names, key=lambda name: (self.source_of(name), name))


def load_lists(lists_dir: Path, languages: Iterable[str] | None = None) -> Lists:
    """Parse the Translation and Packages files of ``lists_dir`` (optionally some langs)."""
    wanted = set(languages) if languages is not None else None
    translation_files, package_files = find_list_files(lists_dir)
    if not any(translation_language(p) == "en" for p in translation_files):
        raise FileNotFoundError(f"{lists_dir}: no Translation-en file (is it an apt lists dir?)")
    descriptions: dict[str, dict[str, Description]] = {}
    packages_by_md5: dict[str, set[str]] = {}
    used: list[Path] = []
    for path in translation_files:
        lang = translation_language(path)
        if lang is None or (wanted is not None and lang not in wanted):
            continue
        used.append(path)
        by_md5 = descriptions.setdefault(lang, {})
        count = 0
        for entry in read_translations(path):
            if not entry.md5:
                continue
            by_md5.setdefault(entry.md5, entry.description)
            packages_by_md5.setdefault(entry.md5, set()).add(entry.package)
            count += 1
        log.info("%s: %d %s descriptions", path.name, count, lang)
    control = read_packages(package_files)
    used.extend(package_files)
    log.info("%d packages in %d Packages files", len(control), len(package_files))
    return Lists(descriptions, packages_by_md5, control, used)
