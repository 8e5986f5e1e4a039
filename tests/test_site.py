"""The self-study site (issue 19): the strict build, the student build, and the built site read
in headless Chromium as a reader sees it (maths, images, links, search), all offline."""
import collections
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from vislab import site

ROOT = site.ROOT
# The labs whose pages give their maths in TeX: each one's concept page must show formulas (the
# labs still being written join by the other rule: any lab page whose Markdown has TeX in it).
MATHS_LABS = ("vit", "swin_cnn", "unet", "vae", "slots", "seq2seq", "ssl", "diffusion")


def _has_tex(markdown: str) -> bool:
    """Whether a page's Markdown has maths between dollars outside code (as arithmatex reads
    it: `$$...$$`, or `$...$` with no space just inside the dollars)."""
    prose = re.sub(r"(```|~~~).*?\1", " ", markdown, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", " ", prose)
    return bool(re.search(r"\$\$.+?\$\$|\$(?!\s)[^$\n]+?(?<!\s)\$", prose, flags=re.S))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The site built strictly from this checkout (into a temporary folder)."""
    tmp = tmp_path_factory.mktemp("site")
    return site.build(out=tmp / "site", src=tmp / "src")


def _mini_root(tmp_path: Path, pages: dict[str, str]) -> Path:
    """A repository with mkdocs.yml, the hook and the given files: a site in miniature."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "vislab").mkdir()
    shutil.copy(ROOT / "vislab" / "site.py", tmp_path / "vislab" / "site.py")
    for rel, text in pages.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------

def test_strict_build_of_the_whole_site(built):
    """Every lab has its handout and concept page, in the navigation and on the home page."""
    home = (built / "index.html").read_text()
    for lab in site.lab_names():
        pages = []
        if (ROOT / "labs" / lab / "README.md").exists():
            pages.append(f"handouts/{lab}/index.html")
        if (ROOT / "docs" / "labs" / f"{lab}.md").exists():
            pages.append(f"labs/{lab}.html")
        assert pages, lab
        for page in pages:
            assert (built / page).is_file(), page
            assert f'href="{page}"' in home, f"the home page does not link {page}"
    assert (built / "search" / "search_index.js").is_file()  # the search from file://
    for lab in MATHS_LABS:  # their maths is TeX, written as MathML (read in a browser below)
        assert "<math " in (built / "labs" / f"{lab}.html").read_text(), lab


def test_has_tex():
    assert _has_tex("The scale $1/\\sqrt{d}$ and\n\n$$a = b$$\n")
    assert not _has_tex("No maths: `$VISLAB_DATA`, 5 $ and 6 $, a price of $ 5.\n\n"
                        "```bash\necho $HOME $PATH\n```\n")


def test_strict_build_names_each_broken_link_image_and_formula(tmp_path):
    root = _mini_root(tmp_path, {
        "docs/index.md": "# Home\n\n<!-- vislab: the labs -->\n",
        "docs/labs/toy.md": "# Toy\n\nSee [the data](../nodata.md) and "
                            "![a plot](../img/missing.png).\n\n"
                            "Maths: $\\notacommand{x}$ and $\\frac{a}{b$, "
                            "$\\big\\lvert x \\big\\rvert$ and $\\text{drop\\_path}$.\n",
    })
    with pytest.raises(site.SiteError) as e:
        site.build(root=root, out=tmp_path / "out", src=tmp_path / "src")
    message = str(e.value)
    assert "nodata.md" in message and "img/missing.png" in message
    assert "labs/toy.md: the maths" in message and "does not render" in message
    assert "unknown command \\notacommand" in message and "a { is never closed" in message
    assert "unknown command \\lvert" in message and "unknown command \\_" in message  # as text


def test_labs_are_found_not_listed(tmp_path):
    """A new lab (a handout or a concept page) appears without a list to edit, in the order of
    the README's lab table, then by name; it gets its pages, its nav entry and its home row."""
    root = _mini_root(tmp_path, {
        "README.md": "| lab | you build |\n|---|---|\n| `zeta` | z |\n| `beta` | b |\n",
        "docs/index.md": "# Home\n\n<!-- vislab: the labs -->\n",
        "labs/zeta/README.md": "# Lab: Zeta things\n\nWrite zeta.\n",
        "labs/alpha/README.md": "# Lab: Alpha\n\nWrite alpha. ![a figure](fig.png) and "
                                "[the beta page](../../docs/labs/beta.md#the-beta-lab)\n",
        "labs/alpha/fig.png": "not really a png",
        "docs/labs/beta.md": "# The beta lab\n\nBeta is about $\\beta$. More, in "
                             "[alpha's handout](../../labs/alpha/README.md).\n",
        "docs/labs/zeta.md": "# The zeta lab\n\nZeta concepts.\n",
        "docs/guides/notes.md": "# Notes\n\nAny other page gets into the navigation too.\n",
    })
    assert site.lab_names(root) == ["zeta", "beta", "alpha"]
    out = site.build(root=root, out=tmp_path / "out", src=tmp_path / "src")
    home = (out / "index.html").read_text()
    assert home.index("Zeta things") < home.index("beta") < home.index("Alpha")
    assert (out / "handouts" / "alpha" / "index.html").is_file()
    assert "Any other page" in (out / "guides" / "notes.html").read_text()
    # links written for the repository (they work on GitHub) lead to the same files on the site
    alpha = (out / "handouts" / "alpha" / "index.html").read_text()
    assert 'src="fig.png"' in alpha and (out / "handouts" / "alpha" / "fig.png").is_file()
    assert 'href="../../labs/beta.html#the-beta-lab"' in alpha
    assert 'href="../handouts/alpha/index.html"' in (out / "labs" / "beta.html").read_text()
    assert "<math" in (out / "labs" / "beta.html").read_text()


def test_student_build_drops_the_instructors_sections(built, tmp_path):
    text = ("# Page\n\nIntro.\n\n" + site.INSTRUCTOR_HEADING + "\n\n- a good answer says X\n\n"
            "```\n## not a heading, inside code\n```\n\n### a subsection, still dropped\n\n"
            "## Next section\n\nKept.\n\n" + site.INSTRUCTOR_HEADING + " (not exactly)\n\nKept.\n")
    student = site.drop_instructor_sections(text)
    assert "good answer says X" not in student and "still dropped" not in student
    assert "Intro." in student and "## Next section" in student and "(not exactly)" in student
    # the real site, built strictly for students: each page is the instructors' page less
    # those sections, and neither the pages nor the search index hold them
    out = site.build(student=True, out=tmp_path / "site", src=tmp_path / "src")
    full_src = built.parent / "src"
    pages = sorted(p.relative_to(full_src) for p in full_src.rglob("*.md"))
    student_src = tmp_path / "src"
    assert pages == sorted(p.relative_to(student_src) for p in student_src.rglob("*.md"))
    for rel in pages:
        mine = (tmp_path / "src" / rel).read_text()
        assert mine == site.drop_instructor_sections((full_src / rel).read_text()), rel
    anchor = "for-instructors-what-a-good-answer-contains"  # the section's id, and its search entry
    for html in [*out.rglob("*.html"), out / "search" / "search_index.json"]:
        assert anchor not in html.read_text(), html.relative_to(out)
    assert any(f'id="{anchor}"' in p.read_text() for p in built.rglob("*.html"))


def test_commands_link_to_their_scripts(built):
    """The ViT page's results tables: every command cell links to the page of its script."""
    page = (built / "labs" / "vit.html").read_text()
    results = page[page.index('id="results"'):]
    tables = re.findall(r"<table>.*?</table>", results, flags=re.S)
    assert len(tables) >= 3
    for table in tables:
        links = re.findall(r'<a href="([^"]+)" class="vislab-command">', table)
        assert links, table[:200]
        for href in links:
            assert (built / "labs" / href).resolve().is_file(), href
    train = re.sub(r"<[^>]+>", "", (built / "source" / "labs" / "vit" / "train.html").read_text())
    assert "def main(args" in train and "def add_arguments(parser" in train


def test_a_table_gets_the_command_its_section_names(tmp_path):
    root = _mini_root(tmp_path, {
        "docs/index.md": "# Home\n\n<!-- vislab: the labs -->\n",
        "benchmarks/speed.py": '"""Time things."""\nprint(1)\n',
        "docs/labs/toy.md": (
            "# Toy\n\n## Results\n\n### Speed\n\n    python benchmarks/speed.py --repeats 5\n\n"
            "| model | s/epoch |\n|---|---|\n| ours | 0.73 |\n\n"
            "### Tasks\n\n| task | what |\n|---|---|\n| `toy.a` | nothing measured |\n"),
    })
    out = site.build(root=root, out=tmp_path / "out", src=tmp_path / "src")
    page = (out / "labs" / "toy.html").read_text()
    made_by = re.findall(r'<p class="vislab-made-by">(.*?)</p>', page)
    assert len(made_by) == 1, made_by  # the speed table, not the one without numbers
    assert 'href="#vislab-command-1"' in made_by[0] and "speed.html" in made_by[0]
    assert 'id="vislab-command-1"' in page
    assert "Time things." in (out / "source" / "benchmarks" / "speed.html").read_text()


# ---------------------------------------------------------------------------------------------
# In the browser
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    path, why = site.find_browser()
    if path is None:
        pytest.skip(f"no headless browser: {why}")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path)
        yield b
        b.close()


class Reader:
    """One browser tab that records page errors and blocks (and counts) every request that
    would leave the disk."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1280, "height": 800})
        self.outside, self.errors = [], []
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def open(self, path: Path):
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")
        return self.page


_READ = """() => {
  const article = document.querySelector("article");
  const maths = [...article.querySelectorAll("math")].map(m => {
    const r = m.getBoundingClientRect(); return [r.width, r.height]; });
  const images = [...article.querySelectorAll("img")].map(i =>
    [i.getAttribute("src"), i.complete ? i.naturalWidth : 0]);
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  let text = "";
  while (walker.nextNode()) {
    const n = walker.currentNode;
    if (!n.parentElement.closest("pre, code, math")) text += n.textContent + " ";
  }
  const links = [...article.querySelectorAll("a.vislab-command, .vislab-made-by a")].map(
    a => a.href);
  const ids = [...document.querySelectorAll("[id]")].map(e => e.id);
  return {maths, images, text, links, ids};
}"""


def _lab_pages(built):
    """(lab, page, the Markdown it was built from) for every lab's handout and concept page."""
    src = built.parent / "src"
    for lab in site.lab_names():
        for rel, md in ((f"handouts/{lab}/index.html", f"handouts/{lab}/README.md"),
                        (f"labs/{lab}.html", f"labs/{lab}.md")):
            if (built / rel).exists():
                yield lab, built / rel, src / md


def test_each_lab_page_renders_its_maths_images_and_links(built, browser):
    reader = Reader(browser)
    pages = [*_lab_pages(built), ("site", built / "site.html", built.parent / "src" / "site.md")]
    concept_pages = {lab for lab, path, _ in pages if path.name == f"{lab}.html"}
    assert set(MATHS_LABS) <= concept_pages, set(MATHS_LABS) - concept_pages
    seen = collections.Counter()
    for lab, path, markdown in pages:
        page = reader.open(path)
        got = page.evaluate(_READ)
        source = path.read_text()
        where = path.relative_to(built)
        assert len(got["maths"]) == source.count("<math "), where
        if lab in MATHS_LABS and path.name == f"{lab}.html":
            assert got["maths"], (f"{where}: the {lab} lab's concept page shows no formula; write "
                                  f"its maths in TeX ($...$, $$...$$: docs/site.md)")
        if _has_tex(markdown.read_text()):
            assert got["maths"], f"{where}: its Markdown has TeX, yet no formula is on the page"
        for w, h in got["maths"]:
            assert w > 0 and h > 0, f"{where}: a formula laid out with no size"
        leftover = re.findall(r"\$\$|\\\(|\\\[|\$[^$\s][^$]*\\[a-zA-Z]+[^$]*\$", got["text"])
        assert not leftover, f"{where}: raw TeX on the page: {leftover[:3]}"
        for src, width in got["images"]:
            assert width > 0, f"{where}: the image {src} did not load"
        for href in got["links"]:
            url = urlparse(href)
            target = Path(unquote(url.path))
            assert target.is_file(), f"{where}: the link {href} leads nowhere"
            if url.fragment and target == path.resolve():
                assert url.fragment in got["ids"], f"{where}: no anchor #{url.fragment}"
        seen["maths"] += len(got["maths"])
        seen["images"] += len(got["images"])
    assert not reader.errors, reader.errors
    assert not reader.outside, f"requests that left the disk: {reader.outside[:5]}"
    assert seen["images"] > 10 and seen["maths"] >= 30  # the checks above looked at something


def _search_term(lab: str, built_src: Path) -> str:
    """A word of the lab's handout, in its prose (not in code), that no other page of the site
    has in any form: the handout's most frequent such word (so the search must find this lab
    by its handout)."""
    handout = (ROOT / "labs" / lab / "README.md").read_text()
    prose = re.sub(r"```.*?```|`[^`]*`", " ", handout, flags=re.S)
    prose = re.sub(r"^(    |\t).*$", " ", prose, flags=re.M)  # indented code blocks
    prose = re.sub(r"\$\$.+?\$\$|\$(?!\s)[^$\n]+?(?<!\s)\$", " ", prose, flags=re.S)  # maths
    words = re.findall(r"(?<![\w.])[a-z]{7,}(?![\w.])", prose)
    others = set()
    for md in built_src.rglob("*.md"):
        if md != built_src / "handouts" / lab / "README.md":
            others |= set(re.findall(r"[a-z]+", md.read_text().lower()))
    counts = collections.Counter(w for w in words if w not in others)
    assert counts, f"no word of {lab}'s handout is unique to it"
    return counts.most_common(1)[0][0]


def test_search_finds_each_lab_by_a_term_of_its_handout(built, browser):
    reader = Reader(browser)
    page = reader.open(built / "index.html")
    box = page.locator("input[data-md-component=search-query]")
    labs = [lab for lab in site.lab_names() if (ROOT / "labs" / lab / "README.md").exists()]
    assert labs
    for lab in labs:
        term = _search_term(lab, built.parent / "src")
        box.click()
        box.fill(term)
        box.press("End")  # a key, as the search listens to the keyboard
        hit = page.locator(f".md-search-result__item a[href*='handouts/{lab}/']").first
        try:
            hit.wait_for(timeout=20_000)  # the index is built on the first query
        except Exception:
            listed = page.locator(".md-search-result").inner_text()[:300]
            pytest.fail(f"searching {term!r} (from {lab}'s handout) does not list the handout: "
                        f"{listed!r}")
    assert not reader.errors and not reader.outside


def test_screenshots_command(built, browser, tmp_path):
    pngs = site.screenshots(built, img=tmp_path, browser=browser)
    assert [p.name for p in pngs] == ["site_home.png", "site_lab.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_vislab_docs_command(capsys, monkeypatch):
    """`vislab docs` is `python -m vislab.site` under the kit's command: --help lists the
    options, a bad one is one line (no traceback), and the options reach vislab.site.main."""
    from vislab import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["docs", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: vislab docs" in out
    assert all(option in out for option in ("--student", "--out", "--screenshots"))
    with pytest.raises(SystemExit) as e:
        cli.main(["docs", "--no-such-option"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "error" in line] == [
        "vislab: error: unrecognized arguments: --no-such-option"]
    assert "Traceback" not in err
    seen = []
    monkeypatch.setattr(site, "main", lambda argv=None: seen.append(argv) or 0)
    assert cli.main(["docs"]) == 0
    assert cli.main(["docs", "--student", "--out", "elsewhere", "--screenshots"]) == 0
    assert seen == [[], ["--student", "--screenshots", "--out", "elsewhere"]]
