"""Griffe extension: read the package's doctest sections as code examples.

The package writes `Example:` followed by a blank line and doctest lines at
the header's own indentation. Griffe's Google parser wants `Examples:` with
its content indented below it; otherwise it renders the doctest as prose and
reads output such as `[0.75, 0.56]` as Markdown links. (A blank line right
after the header also ends the section for griffe.)
"""

import re

import griffe

_HEADER = re.compile(r"^(?P<indent>\s*)Examples?:[ \t]*$")
_OTHER_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:[ \t]*$")


def _indent_examples(text):
    lines = text.split("\n")
    out, inside, indent, just_opened = [], False, "", False
    for line in lines:
        header = _HEADER.match(line)
        if header:
            inside, indent, just_opened = True, header.group("indent"), True
            out.append(f"{indent}Examples:")
            continue
        if just_opened and not line.strip():
            continue
        just_opened = False
        if inside and _OTHER_SECTION.match(line) and not line.startswith(indent + " "):
            inside = False
        if inside and line.strip():
            out.append("    " + line)
        else:
            out.append(line)
    return "\n".join(out)


class DoctestExampleSections(griffe.Extension):
    """Turn `Example:` + doctest lines into an indented `Examples:` section."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = _indent_examples(obj.docstring.value)
