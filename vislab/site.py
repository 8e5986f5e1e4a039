"""Build the self-study site: every lab's handout, concept page and results, searchable, offline.

    python -m vislab.site                 # build/site/index.html (what `make docs` runs)
    python -m vislab.site --student       # build/site-student/: without the instructors' answers
    python -m vislab.site --screenshots   # also docs/img/site_home.png and site_lab.png

The pages are generated, never copied by hand, from the files that ship: `docs/` (concept
pages, data, instructors' guide, images) and each lab's handout `labs/<lab>/README.md` (itself
generated from solutions/ by `vislab release`), their links written for the repository
pointed at the same files on the site (`relink`). Labs are found, not listed: a lab is a folder
`labs/<lab>/` with a README.md or a page `docs/labs/<lab>.md`; the README's lab table gives the
order. The generated tree goes to `build/site-src/` and MkDocs (Material theme, mkdocs.yml)
turns it into HTML with a strict build: a broken link, a missing image or page, or maths that
does not render is an error.

This file is also the MkDocs hook named in mkdocs.yml; on every page it
  - turns the TeX of `$...$` / `$$...$$` (found by pymdownx.arithmatex) into MathML at build
    time (latex2mathml), which browsers lay out natively: no maths script, no CDN;
  - links a file named in code (`labs/vit/README.md`, `docs/data.md`, `benchmarks/x.py`) and a
    command (`vislab train vit ...`, `python benchmarks/x.py ...`) to its page on the site,
    the command to a page with the source of the script that runs it;
  - gives a table that names no command a "Made by" line with the command its section names.
"""
from __future__ import annotations

import argparse
import html as htmllib
import logging
import posixpath
import re
import shutil
import sys
from pathlib import Path

from vislab.written import INSTRUCTORS as INSTRUCTOR_HEADING  # the rule is vislab.written's
from vislab.written import strip_instructor_sections

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
LABS_MARKER = "<!-- vislab: the labs -->"
log = logging.getLogger("mkdocs.plugins.vislab")  # under "mkdocs": counted by the strict build


class SiteError(Exception):
    """The site did not build: every warning of the strict build, one per line."""


# ---------------------------------------------------------------------------------------------
# Which labs there are, and what the site's pages are
# ---------------------------------------------------------------------------------------------

def lab_names(root: Path = ROOT) -> list[str]:
    """Every lab with a handout or a concept page, in the README's table order, then by name."""
    found = {p.parent.name for p in (root / "labs").glob("*/README.md")}
    found |= {p.stem for p in (root / "docs" / "labs").glob("*.md")}
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    order = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    return sorted(found, key=lambda n: (order.index(n) if n in order else len(order), n))


def _title(markdown: str, fallback: str) -> str:
    m = re.search(r"^# (.+)$", markdown, flags=re.M)
    return m[1].strip() if m else fallback


def _first_sentence(markdown: str) -> str:
    """The first sentence of the first paragraph of prose (after the title), on one line."""
    for block in re.split(r"\n\s*\n", markdown):
        block = block.strip()
        if block and not block.startswith(("#", "-", "|", "`", "<", "!", ">", "*")):
            para = " ".join(block.split())
            para = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", para)  # its links are relative
            m = re.match(r"(.+?[.!?])(\s|$)", para)
            return m[1] if m else para
    return ""


def drop_instructor_sections(markdown: str) -> str:
    """The page without each section headed exactly INSTRUCTOR_HEADING, up to the next heading
    of level 1 or 2 (code fences are not read as headings): vislab.written's, the one rule."""
    return strip_instructor_sections(markdown)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    return "`" * max(3, longest + 1)


# Files and commands that get a page of their own, and where that page is in the site.
_PY = r"(?:OMP_NUM_THREADS=\d+ )?(?:\.venv/bin/)?python3? (?:-m )?"
_COMMAND_SCRIPT = re.compile(_PY + r"(benchmarks/[\w/.-]+\.py)\b")
_COMMAND_TRAIN = re.compile(r"(?:OMP_NUM_THREADS=\d+ )?(?:\.venv/bin/)?vislab train (\w+)\b")


def _source_page(repo_path: str) -> str:
    return "source/" + repo_path[:-3] + ".md"  # benchmarks/x.py -> source/benchmarks/x.md


def target_of(code: str) -> tuple[str | None, bool]:
    """The site page (relative to the site's source folder) that a code span names, and whether
    it is a command; (None, False) when it names nothing on the site."""
    t = code.strip()
    if m := _COMMAND_SCRIPT.match(t):
        return _source_page(m[1]), True
    if m := _COMMAND_TRAIN.match(t):
        return _source_page(f"labs/{m[1]}/train.py"), True
    if m := re.fullmatch(r"(?:\./)?docs/([\w/.-]+\.\w+)", t):  # a page, a figure, a file
        return m[1], False
    if m := re.fullmatch(r"(?:\./)?labs/(\w+)/README\.md", t):
        return f"handouts/{m[1]}/README.md", False
    if re.fullmatch(r"benchmarks/[\w/.-]+\.py", t):
        return _source_page(t), False
    return None, False


def _source_markdown(root: Path, repo_path: str) -> str:
    """A page showing a script that a results command runs."""
    text = (root / repo_path).read_text(encoding="utf-8")
    fence = _fence(text)
    m = re.match(r"labs/(\w+)/train\.py", repo_path)
    if m:
        head = (f"# `vislab train {m[1]}`\n\n`vislab train {m[1]}` runs `main()` of this file, "
                f"`{repo_path}` (given code, the same in `solutions/{m[1]}/`): `--impl labs` "
                f"trains your modules, `--impl solutions` the reference's. "
                f"`vislab train {m[1]} --help` lists the options.\n")
    else:
        head = (f"# `{repo_path}`\n\nRun it from the repository root: "
                f"`python {repo_path}` (`--help` lists its options, where it has any).\n")
    return f"{head}\n{fence}python\n{text.rstrip()}\n{fence}\n"


# Material's search runs in a Web Worker, which Chromium will not start from a file:// page; its
# offline plugin would load a polyfill from a CDN. This one, written for the kit, runs the worker
# script in a hidden iframe instead (same messages, importScripts as a promise). The name holds
# "iframe-worker" so that the offline plugin adds no script of its own (mkdocs.yml: polyfills).
WORKER_POLYFILL = "assets/javascripts/iframe-worker.js"
WORKER_POLYFILL_JS = """\
(function () {
  if (location.protocol !== "file:") return;
  function load(win, url) {
    return new Promise(function (resolve, reject) {
      var s = win.document.createElement("script");
      s.src = new URL(url, win.__base).href;
      s.onload = resolve;
      s.onerror = function () { reject(new Error("cannot load " + url)); };
      win.document.documentElement.appendChild(s);
    });
  }
  function FileWorker(url) {
    var target = new EventTarget(), self = this, pending = [];
    var frame = document.createElement("iframe");
    frame.hidden = true;
    document.documentElement.appendChild(frame);
    var win = frame.contentWindow, ready = false;
    win.__base = new URL(url, location.href).href;
    win.postMessage = function (data) {
      setTimeout(function () {
        var ev = new MessageEvent("message", { data: data });
        target.dispatchEvent(ev);
        if (self.onmessage) self.onmessage(ev);
      });
    };
    win.importScripts = function () {
      var urls = Array.prototype.slice.call(arguments);
      return urls.reduce(function (p, u) {
        return p.then(function () { return load(win, u); });
      }, Promise.resolve());
    };
    this.onmessage = null;
    this.addEventListener = target.addEventListener.bind(target);
    this.removeEventListener = target.removeEventListener.bind(target);
    this.postMessage = function (data) {
      if (!ready) { pending.push(data); return; }
      win.dispatchEvent(new win.MessageEvent("message", { data: data }));
    };
    this.terminate = function () { frame.remove(); };
    load(win, win.__base).then(function () {
      ready = true;
      pending.splice(0).forEach(self.postMessage);
    });
  }
  window.Worker = FileWorker;
})();
"""


# MathML Core leaves out the attributes that align a table's columns (latex2mathml writes them
# for align*, cases, matrices): CSS does it. Maths in a maths font where the system has one.
STYLESHEET = "assets/stylesheets/vislab.css"
STYLESHEET_CSS = """\
math { font-family: "Latin Modern Math", "STIX Two Math", "Cambria Math", math; font-size: 1.1em; }
math[display="block"] { margin: 0.8em 0; overflow-x: auto; }
mtd[columnalign="right"] { display: flex; justify-content: flex-end; }  /* text-align: ignored */
mtd[columnalign="left"] { text-align: left; }
mtd { padding: 0.15em 0; }
.md-typeset .vislab-made-by {
  margin-top: -0.4em; font-size: 0.85em; color: var(--md-default-fg-color--light);
}
"""


def site_path(repo_path: str) -> str | None:
    """Where a repository file is on the site (relative to the site's source), if it is."""
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    if m := re.fullmatch(r"(?:labs|solutions)/(\w+)/README\.md", repo_path):
        return f"handouts/{m[1]}/README.md"
    if m := re.fullmatch(r"labs/(\w+)/(.+)", repo_path):
        return f"handouts/{m[1]}/{m[2]}"  # a file beside the handout: copied beside it
    if re.fullmatch(r"benchmarks/[\w/.-]+\.py", repo_path):
        return _source_page(repo_path)
    if repo_path == "README.md":
        return "index.md"
    return None


_MD_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)")


def relink(markdown: str, repo_rel: str, site_rel: str, root: Path,
           copies: dict[str, Path]) -> str:
    """The page's relative links and images, written for the repository (so that they work on
    GitHub), pointed at the same files on the site; files beside a handout go into `copies`.
    A link to a file that is not on the site is left as it is (and fails the strict build)."""
    def repl(m):
        link = m[2]
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:|[#/]", link):
            return m[0]
        path, _, frag = link.partition("#")
        repo = posixpath.normpath(posixpath.join(posixpath.dirname(repo_rel), path))
        target = site_path(repo) if (root / repo).exists() else None
        if target is None or (root / repo).is_dir():
            return m[0]
        if target.startswith("handouts/") and not target.endswith("/README.md"):
            copies[target] = root / repo
        new = posixpath.relpath(target, posixpath.dirname(site_rel) or ".")
        return m[1] + new + (f"#{frag}" if frag else "")

    out, fence = [], None
    for line in markdown.splitlines(keepends=True):
        m = re.match(r"^\s*(```+|~~~+)", line)
        if m and fence is None:
            fence = m[1]
        elif m and m[1].startswith(fence[0]) and len(m[1]) >= len(fence):
            fence = None
        elif fence is None:
            parts = re.split(r"(`[^`]*`)", line)  # never inside inline code
            line = "".join(p if i % 2 else _MD_LINK.sub(repl, p) for i, p in enumerate(parts))
        out.append(line)
    return "".join(out)


def stage(root: Path, src: Path, student: bool = False) -> list:
    """Write the site's source tree into `src` (emptied first) and return MkDocs' `nav`."""
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    pages: dict[str, str] = {}  # site path -> markdown
    origin: dict[str, str] = {}  # site path -> the repository file it comes from

    (src / WORKER_POLYFILL).parent.mkdir(parents=True)
    (src / WORKER_POLYFILL).write_text(WORKER_POLYFILL_JS, encoding="utf-8")
    (src / STYLESHEET).parent.mkdir(parents=True)
    (src / STYLESHEET).write_text(STYLESHEET_CSS, encoding="utf-8")
    docs = root / "docs"
    for path in sorted(docs.rglob("*")):
        rel = path.relative_to(docs).as_posix()
        if path.is_dir():
            continue
        if path.suffix == ".md":
            pages[rel] = path.read_text(encoding="utf-8")
            origin[rel] = f"docs/{rel}"
        else:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / rel)

    labs = lab_names(root)
    entries = []
    for lab in labs:
        handout = root / "labs" / lab / "README.md"
        concept = pages.get(f"labs/{lab}.md")
        group = []
        if handout.exists():
            text = handout.read_text(encoding="utf-8")
            pages[f"handouts/{lab}/README.md"] = text
            origin[f"handouts/{lab}/README.md"] = f"labs/{lab}/README.md"
            group.append({"Handout": f"handouts/{lab}/README.md"})
            title = _title(text, lab).removeprefix("Lab: ")
        else:
            title = _title(concept or "", lab)
        if concept is not None:
            group.append({"Concepts and results": f"labs/{lab}.md"})
        about = _first_sentence(concept or "") or _first_sentence(
            pages.get(f"handouts/{lab}/README.md", ""))
        entries.append((lab, title, group, about))

    commands = sorted({p for text in pages.values() for p in _mentioned_scripts(text, root)})
    copies: dict[str, Path] = {}
    for rel, repo_rel in origin.items():
        pages[rel] = relink(pages[rel], repo_rel, rel, root, copies)
    for rel, path in copies.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, src / rel)
    for repo_path in commands:
        pages[_source_page(repo_path)] = _source_markdown(root, repo_path)

    home = pages.get("index.md", "# vislab\n\n" + LABS_MARKER + "\n")
    rows = ["| lab | what it is about | pages |", "|---|---|---|"]
    for lab, title, group, about in entries:
        links = ", ".join(f"[{name.lower()}]({path})" for item in group
                          for name, path in item.items())
        rows.append(f"| **{title}** (`{lab}`) | {about} | {links} |")
    pages["index.md"] = home.replace(LABS_MARKER, "\n".join(rows))

    for rel, text in pages.items():
        if student:
            text = drop_instructor_sections(text)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text, encoding="utf-8")

    nav: list = [{"Home": "index.md"}]
    nav.append({"Labs": [{f"{title} ({lab})": group} for lab, title, group, _ in entries]})
    named = {"data.md": "Data sets", "instructors.md": "For instructors",
             "site.md": "About this site"}
    placed = {"index.md", *named} | {path for *_, group, _ in entries
                                     for item in group for path in item.values()}
    placed |= {_source_page(p) for p in commands}
    more = [{_title(pages[rel], rel[:-3]): rel} for rel in sorted(pages) if rel not in placed]
    more += [{named[rel]: rel} for rel in named if rel in pages]
    if commands:
        more.append({"Commands behind the results": [
            {p if not p.endswith("/train.py") else f"vislab train {p.split('/')[1]}":
             _source_page(p)} for p in commands]})
    nav.append({"More": more})
    return nav


def _mentioned_scripts(text: str, root: Path) -> set[str]:
    """Repository scripts that a page's commands run: benchmarks scripts and labs' train.py."""
    found = set(re.findall(r"\b(benchmarks/[\w/.-]+\.py)\b", text))
    found |= {f"labs/{lab}/train.py" for lab in re.findall(r"\bvislab train (\w+)\b", text)}
    return {p for p in found if (root / p).is_file()}


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------

def build(root: Path = ROOT, out: Path | None = None, student: bool = False,
          src: Path | None = None) -> Path:
    """Generate the pages and build the site strictly; return the folder with index.html.
    Raises SiteError listing every warning when the strict build fails."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort, MkDocsException

    suffix = "-student" if student else ""
    out = Path(out) if out else BUILD / f"site{suffix}"
    src = Path(src) if src else BUILD / f"site-src{suffix}"
    nav = stage(root, src, student=student)

    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    mk_log = logging.getLogger("mkdocs")
    mk_log.addHandler(handler)
    try:
        config = load_config(str(root / "mkdocs.yml"), docs_dir=str(src), site_dir=str(out),
                             nav=nav, strict=True)
        config["plugins"].run_event("startup", command="build", dirty=False)
        try:
            mkdocs_build(config)
        finally:
            config["plugins"].run_event("shutdown")
    except (Abort, MkDocsException) as e:
        lines = "\n".join(f"  {w}" for w in warnings) or f"  {e}"
        raise SiteError(f"the site did not build (strict):\n{lines}") from None
    finally:
        mk_log.removeHandler(handler)
    return out


# ---------------------------------------------------------------------------------------------
# The MkDocs hook (mkdocs.yml: hooks)
# ---------------------------------------------------------------------------------------------

_ARITHMATEX = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)


def tex_to_mathml(tex: str, display: bool) -> str:
    """MathML for one formula; ValueError when latex2mathml cannot read it."""
    from latex2mathml.converter import convert
    depth = 0
    for brace in re.sub(r"\\[{}]", "", tex):  # latex2mathml closes an open brace silently
        depth += {"{": 1, "}": -1}.get(brace, 0)
        if depth < 0:
            raise ValueError("a } closes no {")
    if depth:
        raise ValueError("a { is never closed")
    try:
        mathml = convert(tex, display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises its own exception types, and some builtins
        raise ValueError(f"{type(e).__name__}: {e}") from None
    if "<merror" in mathml:
        raise ValueError("latex2mathml returned an error element")
    # an unknown command is left as text (so is \lvert after \big, and \_ in \text)
    left = r"<m(?:i|o|text)\b[^>]*>[^<]*?(\\(?:[A-Za-z]+|_))[^<]*</m(?:i|o|text)>"
    if m := re.search(left, mathml):
        raise ValueError(f"unknown command {m[1]}")
    if "<mi>&</mi>" in mathml:
        raise ValueError("an & outside an environment that aligns (use align*, cases, matrix)")
    # \log, \exp, ... come out as <mi>log</mi>, which a browser sets against what follows
    # ("log2"): TeX's thin space after the function name, except before a parenthesis
    mathml = re.sub(r"(<mi>(?:log|ln|exp|tanh|sin|cos|det|max|min|sup|inf|arg)</mi>)"
                    r'(?!<mo stretchy="false">&#x00028;)', r'\1<mspace width="0.1667em"></mspace>',
                    mathml)
    # a right-aligned cell (align*'s left-hand sides) holds one mrow, which CSS aligns
    mathml = re.sub(r'(<mtd columnalign="right">)((?:(?!<mtd).)*?)(</mtd>)', r"\1<mrow>\2</mrow>\3",
                    mathml, flags=re.S)
    alt = htmllib.escape(tex, quote=True)
    return mathml.replace("<math ", f'<math alttext="{alt}" ', 1)


def _maths(content: str, where: str) -> str:
    def repl(m):
        tex = htmllib.unescape(m[2]).strip()
        display = tex.startswith(r"\[")
        body = tex[2:-2] if tex[:2] in (r"\(", r"\[") else tex
        try:
            return tex_to_mathml(body.strip(), display)
        except ValueError as e:
            log.warning(f"{where}: the maths {tex!r} does not render: {e}")
            return m[0]
    return _ARITHMATEX.sub(repl, content)


_PROTECTED = re.compile(r"(<pre\b.*?</pre>|<a\b.*?</a>|<h[1-6]\b.*?</h[1-6]>)", re.S)
_CODE = re.compile(r"<code>([^<]+)</code>")


def _linker(page, files):
    """A function: code-span match -> the span linked to its page (or unchanged), plus the
    link's URL for commands."""
    from mkdocs.utils import get_relative_url

    def link(m) -> tuple[str, str | None]:
        target, command = target_of(htmllib.unescape(m[1]))
        f = files.get_file_from_path(target) if target else None
        if f is None or f.src_uri == page.file.src_uri:
            return m[0], None
        url = get_relative_url(f.url, page.url)
        cls = ' class="vislab-command"' if command else ""
        return f'<a href="{url}"{cls}>{m[0]}</a>', url if command else None
    return link


def _links(content: str, link) -> str:
    """Every code span outside code blocks, links and headings that names a page: linked."""
    parts = _PROTECTED.split(content)
    return "".join(p if i % 2 else _CODE.sub(lambda m: link(m)[0], p)
                   for i, p in enumerate(parts))


_BLOCKS = re.compile(r'(<h[1-6]\b.*?</h[1-6]>|<table>.*?</table>'
                     r'|<div class="highlight"><pre>.*?</pre></div>|<pre\b.*?</pre>)', re.S)
_COMMAND_LINK = re.compile(r'<a href="[^"]*" class="vislab-command">.*?</a>', re.S)
# A results table: one of its cells is a measured number (0.920, 28.8 s, 1.2x, 95 %).
_NUMBER_CELL = re.compile(
    r"<td[^>]*>(?:<strong>)?\s*[-+]?\d[\d.,]*\s*(?:%|s|x|GB|MB)?\s*(?:</strong>)?</td>")


def _commands(content: str, link) -> str:
    """Link file names and commands, and give each results table (a cell holds a number) that
    names no command itself a line
    "Made by ..." with the command its section names: the last one before the table in its
    (sub)section, else the last one of the section's introduction, else the first one after
    the table in its (sub)section. A command is a linked code span (also in a heading) or a
    code block whose line runs `vislab train` or `python benchmarks/...`; such a block gets an
    id, and the line links to it and to the page of the script it runs."""
    parts = _BLOCKS.split(content)
    found = []  # (part index, (section, subsection), html of the link)
    tables = []  # (part index, (section, subsection))
    section, sub, blocks = 0, 0, 0
    for i, part in enumerate(parts):
        where = (section, sub)
        if i % 2 == 0 or part.startswith("<table>"):
            parts[i] = part = _links(part, link)
            if part.startswith("<table>"):
                if not _COMMAND_LINK.search(part) and _NUMBER_CELL.search(part):
                    tables.append((i, where))
                continue
            found += [(i, where, a) for a in _COMMAND_LINK.findall(part)]
        elif part.startswith("<h"):
            level = int(part[2])
            section, sub = (section + 1, 0) if level <= 2 else (section, sub + 1)
            for m in _CODE.finditer(part):
                html, url = link(m)
                if url:
                    found.append((i, (section, sub), html))
        else:
            text = htmllib.unescape(re.sub(r"<[^>]+>", "", part))
            lines = [ln.split("  #")[0].strip() for ln in text.splitlines()]
            lines = [ln for ln in lines if target_of(ln)[1]]
            if lines:
                blocks += 1
                anchor = f"vislab-command-{blocks}"
                parts[i] = f'<span id="{anchor}"></span>\n{part}'
                code = f"<code>{htmllib.escape(lines[0])}</code>"
                _, url = link(_CODE.match(code))
                extra = len(lines) - 1
                more = f" and {extra} more line{'s' if extra > 1 else ''}" if extra else ""
                source = f' (<a href="{url}">source</a>)' if url else ""
                found.append((i, where, f'<a href="#{anchor}" class="vislab-command">{code}</a>'
                                        f"{more}{source}"))
    for i, where in tables:
        before = [a for j, w, a in found if j < i and w == where]
        intro = [a for j, w, a in found if j < i and w == (where[0], 0)]
        after = [a for j, w, a in found if j > i and w == where]
        made_by = (before or intro or [None])[-1] or (after or [None])[0]
        if made_by:
            parts[i] += f'\n<p class="vislab-made-by">Made by {made_by}</p>'
    return "".join(parts)


def on_page_content(html: str, page, config, files) -> str:
    return _commands(_maths(html, page.file.src_uri), _linker(page, files))


# ---------------------------------------------------------------------------------------------
# The browser: Chromium from the system's packages, or one Playwright installed
# ---------------------------------------------------------------------------------------------

def find_browser() -> tuple[str | None, str]:
    """(path of a Chromium, "") or (None, why there is none)."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return None, "the Python package playwright is not installed (pip install -e '.[docs]')"
    # Debian's binary itself first: its wrapper script /usr/bin/chromium only adds flags
    for path in ("/usr/lib/chromium/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if path and Path(path).exists():
            return path, ""
    try:
        from playwright.sync_api import sync_playwright
        with sync_playwright() as p:
            if Path(p.chromium.executable_path).exists():
                return p.chromium.executable_path, ""
    except Exception:
        pass
    return None, ("no Chromium: none on PATH (Debian: apt-get install chromium) and no browser "
                  "of Playwright's own (which would be downloaded from outside the registries)")


def screenshots(site: Path, img: Path = ROOT / "docs" / "img", lab: str = "vit",
                browser=None, section: str = "attention-mixes-tokens") -> list[Path]:
    """The home page and one lab's concept page, 1280 x 800, as docs/img/site_*.png (with a
    Playwright browser of the caller's, or one started here). The lab page is shown from its
    heading `section` (where the maths is), or from the top where it has none."""
    shots = [(site / "index.html", img / "site_home.png", None),
             (site / "labs" / f"{lab}.html", img / "site_lab.png", section)]
    if browser is None:
        from playwright.sync_api import sync_playwright
        browser_path, why = find_browser()
        if browser_path is None:
            raise SiteError(f"cannot take screenshots: {why}")
        with sync_playwright() as p:
            started = p.chromium.launch(executable_path=browser_path)
            try:
                return screenshots(site, img, lab, browser=started, section=section)
            finally:
                started.close()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    for html, png, anchor in shots:
        page.goto(html.resolve().as_uri())
        page.wait_for_load_state("load")
        if anchor:  # the heading a little below the header bar, as a link to it would show it
            page.evaluate("""id => { const h = document.getElementById(id); if (h)
                window.scrollTo(0, h.getBoundingClientRect().top + window.scrollY - 72); }""",
                          anchor)
            page.wait_for_timeout(600)  # the header's title swap (Material animates it) ends
        page.screenshot(path=str(png))
    page.close()
    return [png for _, png, _ in shots]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vislab.site", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", action="store_true",
                        help="leave out every section headed '" + INSTRUCTOR_HEADING + "'")
    parser.add_argument("--out", type=Path, help="output folder (default build/site, or "
                        "build/site-student with --student)")
    parser.add_argument("--screenshots", action="store_true",
                        help="then write docs/img/site_home.png and docs/img/site_lab.png")
    args = parser.parse_args(argv)
    try:
        import latex2mathml  # noqa: F401
        import material  # noqa: F401
        import mkdocs  # noqa: F401
    except ImportError as e:
        print(f"the site needs the docs extra ({e.name} is missing): "
              "pip install -e '.[docs]'", file=sys.stderr)
        return 2
    try:
        out = build(student=args.student, out=args.out)
        print(f"built {out / 'index.html'} (open it in a browser; it needs no server)")
        if args.screenshots:
            for png in screenshots(out):
                print(f"wrote {png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}")
    except SiteError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
