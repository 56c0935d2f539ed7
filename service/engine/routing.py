"""Which model serves a request: one rule, called by every front end (REST, gRPC, OIP).

A checkpoint's manifest declares what it serves (`architecture`, `tasks`, `languages`
and optionally `language_pairs`; no pairs means any ordered pair of its languages).
The rule, for a request naming task T and languages S -> G (translate only):

1. `model` named: that model (404 / NOT_FOUND if it is not served), provided it serves
   T (and S -> G); otherwise 400 / INVALID_ARGUMENT saying what it serves.
2. Otherwise, among the models serving T (and S -> G):
   a. a model whose `language_pairs` list S -> G exactly (a dedicated translator),
   b. then any other that serves it (its languages cover S and G);
   within a tier the server's default model comes first, then names in sorted order.
3. No model serves it: 400 / INVALID_ARGUMENT listing every model and what it serves.

REST and gRPC translate requests without `source_lang` have it detected first
(service/engine/autodetect.py), so the rule sees S. Where no source is known (an OIP
request without one), translate asks only that G be one of a model's languages, and
rule 2a does not apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from model.tokenizer import LANGUAGES, TASKS
from service.engine.errors import InvalidRequest
from service.engine.request import TaskInput

SORA_ARCHITECTURE = "sora"


class ManifestError(ValueError):
    """A manifest whose serving declaration is malformed; names the key."""


@dataclass(frozen=True)
class Capabilities:
    """What one model serves, from its manifest."""

    architecture: str
    tasks: tuple[str, ...]
    languages: tuple[str, ...]
    # Directions served; None: any ordered pair of `languages`.
    language_pairs: tuple[tuple[str, str], ...] | None = None

    @classmethod
    def from_manifest(
        cls, manifest: Mapping[str, Any], default_tasks: Sequence[str] = TASKS,
        default_languages: Sequence[str] = LANGUAGES,
    ) -> Capabilities:
        """Read and check the manifest's declaration; defaults fill absent keys (our
        own checkpoints predate `architecture` and always had tasks and languages)."""
        arch = manifest.get("architecture", SORA_ARCHITECTURE)
        if not isinstance(arch, str) or not arch:
            raise ManifestError(f"manifest 'architecture' must be a string, got {arch!r}")
        tasks = _strings(manifest, "tasks", default_tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ManifestError(f"manifest 'tasks': unknown task(s) {', '.join(unknown)} "
                                f"(expected {', '.join(TASKS)})")
        languages = _strings(manifest, "languages", default_languages)
        pairs = manifest.get("language_pairs")
        if pairs is not None:
            if not isinstance(pairs, list) or not all(
                isinstance(p, list | tuple) and len(p) == 2
                and all(isinstance(x, str) and x in languages for x in p) for p in pairs
            ):
                raise ManifestError(
                    "manifest 'language_pairs' must be a list of [source, target] pairs of "
                    f"codes in 'languages' ({', '.join(languages)}), got {pairs!r}")
            pairs = tuple((str(s), str(t)) for s, t in pairs)
        return cls(arch, tasks, languages, pairs)

    def to_dict(self) -> dict[str, Any]:
        """The manifest keys (and the engine-core wire form)."""
        return {
            "architecture": self.architecture, "tasks": list(self.tasks),
            "languages": list(self.languages),
            "language_pairs": None if self.language_pairs is None
            else [list(p) for p in self.language_pairs],
        }

    def serves(self, inp: TaskInput) -> bool:
        if inp.task not in self.tasks:
            return False
        target, source = inp.target_lang, inp.source_lang
        if inp.task != "translate" or target is None:
            return True  # a missing target_lang is admission's error to name
        if self.language_pairs is None:
            return target in self.languages and (source is None or source in self.languages)
        return any(t == target and (source is None or s == source)
                   for s, t in self.language_pairs)

    def lists_pair(self, inp: TaskInput) -> bool:
        """Whether `inp` is a translation whose exact direction the model declares."""
        return (inp.task == "translate" and inp.source_lang is not None
                and self.language_pairs is not None
                and (inp.source_lang, inp.target_lang) in self.language_pairs)

    def describe(self) -> str:
        """`translate en->de, de->en; summarize` or `translate (en, de, fr); answer`."""
        parts = []
        for task in self.tasks:
            if task != "translate":
                parts.append(task)
            elif self.language_pairs is not None:
                parts.append("translate " + ", ".join(f"{s}->{t}" for s, t in
                                                      self.language_pairs))
            else:
                parts.append(f"translate ({', '.join(self.languages)})")
        return "; ".join(parts) or "nothing"


def _strings(manifest: Mapping[str, Any], key: str, default: Sequence[str]) -> tuple[str, ...]:
    value = manifest.get(key, list(default))
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"manifest {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


def served(models: Mapping[str, Capabilities]) -> str:
    """Every model and what it serves, for error messages."""
    return "; ".join(f"{name}: {caps.describe()}" for name, caps in sorted(models.items()))


def _what(inp: TaskInput, models: Iterable[Capabilities]) -> tuple[str, str]:
    """The request as words, and the request field that names what is not served: the
    source language when the target alone would be served, else the target."""
    if not any(inp.task in caps.tasks for caps in models):
        return inp.task, "task"
    if inp.source_lang is None:
        return f"translate into {inp.target_lang!r}", "target_lang"
    any_source = replace(inp, source_lang=None)
    field = "source_lang" if any(caps.serves(any_source) for caps in models) else "target_lang"
    return f"translate {inp.source_lang!r} -> {inp.target_lang!r}", field


def check_serves(name: str, caps: Capabilities, inputs: Iterable[TaskInput]) -> None:
    """Rule 1: the named model must serve every input."""
    for inp in inputs:
        if not caps.serves(inp):
            what, field = _what(inp, [caps])
            raise InvalidRequest(
                f"model {name!r} does not serve {what}; it serves {caps.describe()}",
                field=field)


def choose(
    models: Mapping[str, Capabilities], inputs: Sequence[TaskInput], default: str | None
) -> str:
    """Rules 2-3: the name of the model to serve `inputs` (which share a task and
    languages in every front end, but each is checked)."""
    candidates = [n for n, caps in models.items() if all(caps.serves(i) for i in inputs)]
    if not candidates:
        # Name an input no model serves (else the inputs only fail together).
        unserved = (i for i in inputs if not any(c.serves(i) for c in models.values()))
        what, field = _what(next(unserved, inputs[0]), models.values())
        raise InvalidRequest(f"no model serves {what}; served: {served(models)}",
                             field=field)

    def rank(name: str) -> tuple[bool, bool, str]:
        exact = all(models[name].lists_pair(i) for i in inputs)
        return (not exact, name != default, name)

    return min(candidates, key=rank)
