"""Splitting HTML into text nodes and markup: the markup comes back byte for byte."""

from __future__ import annotations

import pytest

from service.markup import join, split, texts


def roundtrip(doc: str) -> tuple[list[str], str]:
    segments = split(doc)
    assert "".join(s.raw for s in segments) == doc
    found = texts(segments)
    return found, join(segments, [f"[{t.upper()}]" for t in found])


def test_nested_elements_entities_and_attributes() -> None:
    doc = '<div id="a&amp;b"><p class=x>Tom &amp; <em>Jerry&#39;s</em> show</p>\n</div>'
    found, out = roundtrip(doc)
    assert found == ["Tom &", "Jerry's", "show"]
    assert out == ('<div id="a&amp;b"><p class=x>[TOM &amp;] <em>[JERRY\'S]</em> [SHOW]</p>\n'
                   "</div>")


def test_script_style_code_and_translate_no_are_untouched() -> None:
    doc = ('<style>p { content: "<b>x</b>"; }</style><script>if (a < b) f("hi");</script>'
           '<p>run <code>ls -l</code> now</p><pre>keep  this</pre>'
           '<span translate="no">Sora <b>API</b></span><p>end</p>')
    found, out = roundtrip(doc)
    assert found == ["run", "now", "end"]
    assert out == ('<style>p { content: "<b>x</b>"; }</style><script>if (a < b) f("hi");'
                   '</script><p>[RUN] <code>ls -l</code> [NOW]</p><pre>keep  this</pre>'
                   '<span translate="no">Sora <b>API</b></span><p>[END]</p>')


@pytest.mark.parametrize(("doc", "expected", "out"), [
    ("<p>unclosed <b>bold", ["unclosed", "bold"], "<p>[UNCLOSED] <b>[BOLD]"),
    ("</span>stray</div> end", ["stray", "end"], "</span>[STRAY]</div> [END]"),
    ("a < b and c", ["a < b and c"], "[A &lt; B AND C]"),
    ("<code>never closed <p>text", [], "<code>never closed <p>text"),
    ("<!DOCTYPE html><!-- note --><br/>x<img src='a.png'>", ["x"],
     "<!DOCTYPE html><!-- note --><br/>[X]<img src='a.png'>"),
    ("  \n ", [], "  \n "),
])
def test_malformed_html(doc: str, expected: list[str], out: str) -> None:
    found, result = roundtrip(doc)
    assert found == expected
    assert result == out
