"""Report blocks -> Markdown and self-contained HTML.

A report is a list of blocks, tuples whose first item says what they are: ("h1" | "h2" | "h3", text),
("p", text), ("ul", items), ("table", header, rows), ("figure", stem, alt), ("code", text) and
("details", summary, blocks): blocks folded away under a one-line summary (an HTML <details>
element, which GitHub also renders in Markdown).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def markdown(blocks: Sequence[tuple]) -> str:
    return "\n\n".join(_markdown_blocks(blocks)) + "\n"


def _markdown_blocks(blocks: Sequence[tuple]) -> list[str]:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {_md(args[0])}")
        elif kind == "p":
            out.append(_md(args[0]))
        elif kind == "ul":
            out.append("\n".join(f"- {_md(item)}" for item in args[0]))
        elif kind == "table":
            header, rows = args
            lines = [header, ["---"] * len(header), *rows]
            out.append("\n".join("| " + " | ".join(_md(c) for c in row) + " |" for row in lines))
        elif kind == "code":
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", args[0])), default=0))
            out.append(f"{fence}toml\n{args[0].rstrip()}\n{fence}")
        elif kind == "figure":
            out.append(f"![{_md(args[1])}]({args[0]}.png)\n\n[SVG]({args[0]}.svg)")
        elif kind == "details":  # raw HTML around Markdown: the blank lines let GitHub render both
            inner = "\n\n".join(_markdown_blocks(args[1]))
            out.append(
                f"<details><summary>{html.escape(args[0])}</summary>\n\n{inner}\n\n</details>"
            )
    return out


_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #1a1a1a; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
pre { background: #f6f8fa; padding: .8rem; overflow-x: auto; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
li { margin: .3rem 0; }
summary { cursor: pointer; font-weight: 600; margin: .6rem 0; }
"""


def _h(text: str) -> str:
    """Escape, then show 10^x as a superscript."""
    return re.sub(
        r"10\^(-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)", r"10<sup>\1</sup>", html.escape(text)
    )


def html_page(blocks: Sequence[tuple], title: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(_html_blocks(blocks))
        + "\n</body>\n</html>\n"
    )


def _html_blocks(blocks: Sequence[tuple]) -> list[str]:
    body = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_h(args[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_h(args[0])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_h(i)}</li>" for i in args[0]) + "</ul>")
        elif kind == "table":
            header, rows = args
            head = "".join(f"<th>{_h(c)}</th>" for c in header) if any(header) else ""
            cells = "".join(
                "<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in rows
            )
            body.append(f"<table>{f'<tr>{head}</tr>' if head else ''}{cells}</table>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(args[0])}</code></pre>")
        elif kind == "figure":
            src = html.escape(args[0], quote=True)
            body.append(
                f'<figure><a href="{src}.svg"><img src="{src}.png" '
                f'alt="{html.escape(args[1], quote=True)}"></a></figure>'
            )
        elif kind == "details":
            inner = "\n".join(_html_blocks(args[1]))
            body.append(f"<details><summary>{_h(args[0])}</summary>\n{inner}\n</details>")
    return body
