"""The default model's sample outputs shown in the README, kept true by a test.

    python -m tests.readme_examples          # print the block
    python -m tests.readme_examples --write  # rewrite it in README.md

The block sits between the two EXAMPLES markers in README.md; the test regenerates it
with greedy decoding on the shipped checkpoint and fails when the README differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from model.checkpoint import load_checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from service.config import DEFAULT_MODEL_REPOSITORY

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- EXAMPLES:BEGIN -->", "<!-- EXAMPLES:END -->"

# (task, target language, text, context)
EXAMPLES: list[tuple[str, str | None, str, str | None]] = [
    ("translate", "de", "Command-line tool to convert images between formats", None),
    ("translate", "fr", "This package contains the documentation.", None),
    ("translate", "en", "Dieses Paket enthält die Entwicklungsdateien.", None),
    ("translate", "en", "Ce paquet fournit une bibliothèque partagée.", None),
    ("translate", "en", "这个软件包包含开发文件。", None),
    ("translate", "zh", "This package contains the development files.", None),
    (
        "translate",
        "de",
        "The library provides functions to read and write files. It supports many "
        "formats. This package contains the shared library.",
        None,
    ),
    (
        "summarize",
        None,
        "GNU Wget is a free utility for non-interactive download of files from the Web. "
        "It supports HTTP, HTTPS, and FTP protocols, as well as retrieval through HTTP "
        "proxies. It can follow links in HTML pages and create local versions of remote "
        "web sites, fully recreating the directory structure of the original site.",
        None,
    ),
    (
        "answer",
        None,
        "What is the homepage of wget?",
        "Package: wget\nSection: web\nHomepage: https://www.gnu.org/software/wget/\n"
        "GNU Wget is a free utility for non-interactive download of files from the Web.",
    ),
    (
        "answer",
        None,
        "Which section is wget in?",
        "Package: wget\nSection: web\nHomepage: https://www.gnu.org/software/wget/\n"
        "GNU Wget is a free utility for non-interactive download of files from the Web.",
    ),
]


def render(checkpoint: Path = DEFAULT_MODEL_REPOSITORY) -> str:
    """The README block: each input and the model's greedy output."""
    ckpt = load_checkpoint(checkpoint)
    params = DecodingParams(max_new_tokens=96)
    lines = [BEGIN, "", "| task | input | output |", "|---|---|---|"]
    for task, lang, text, context in EXAMPLES:
        src = ckpt.tokenizer.source_ids(task, text, lang, context)
        out = generate(ckpt.model, ckpt.tokenizer, [src], params)[0].text
        label = f"{task} -> {lang}" if lang else task
        shown = text if context is None else f"{text} (context: {context!r})"
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in (label, shown, out.strip())]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", END]
    return "\n".join(lines)


def current_block(readme: str) -> str:
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[start:end]


def main(argv: list[str]) -> int:
    block = render()
    if "--write" in argv:
        text = README.read_text(encoding="utf-8")
        README.write_text(text.replace(current_block(text), block), encoding="utf-8")
    else:
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
