"""The documentation site (mkdocs.yml): it builds with warnings as errors, offline, and covers the public API.

The site is built once per run into a temporary directory with ``mkdocs build --strict``
(what ``make docs`` runs), so a broken link, a missing anchor or an API reference that
does not resolve fails here, in CI's ``make test``. Without MkDocs installed (the
``docs`` extra, which ``make`` installs) the build tests skip with one line, unless
``CI`` is set: then a missing MkDocs fails, as CI must build the site.

README's links are checked without MkDocs: on a package index page a relative link goes
nowhere, so every link to the repository's files is absolute, under the repository URL
of ``[project.urls]``, and names a file that exists.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from .test_public_api import PACKAGES

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mkdocs.yml"
DOCS = ROOT / "docs"
# The theme prints an end-of-life notice on every build unless this is set (see the Makefile).
BUILD_ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def _need_mkdocs() -> None:
    """Skip (or fail, in CI) with one line when the documentation tools are not installed."""
    missing = [name for name in ("mkdocs", "material", "mkdocstrings_handlers.python") if _absent(name)]
    if not missing:
        return
    message = f"documentation site not built: {', '.join(missing)} not installed (pip install -e '.[docs]')"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # the parent package of a dotted name is missing
        return True


@dataclass(frozen=True)
class Build:
    site: Path
    returncode: int
    output: str


def build(config: Path, site: Path, *, cwd: Path = ROOT) -> Build:
    """``mkdocs build --strict`` of ``config`` into ``site``."""
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config)]
    command += ["--site-dir", str(site)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=BUILD_ENV, timeout=600, check=False)
    return Build(site, done.returncode, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built from this checkout with warnings as errors."""
    _need_mkdocs()
    built = build(CONFIG, tmp_path_factory.mktemp("site"))
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.output}"
    return built.site


def nav_pages() -> list[str]:
    """Every page of mkdocs.yml's nav, in order (paths relative to docs/): its ``- Title: page.md`` lines."""
    config = CONFIG.read_text(encoding="utf-8")
    nav = re.search(r"^nav:\n(?P<entries>(?:[ #].*\n|\n)+)", config, flags=re.M)
    assert nav is not None, "mkdocs.yml has no nav"
    return re.findall(r"^\s+- [^:]+: (\S+\.md)\s*$", nav["entries"], flags=re.M)


def test_every_page_of_docs_is_in_the_nav_and_every_public_package_has_a_reference_page() -> None:
    _need_mkdocs()
    pages = nav_pages()
    assert len(pages) == len(set(pages)), "a page is twice in the nav"
    on_disk = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(pages) == on_disk
    assert pages[:2] == ["index.md", "getting-started.md"]
    references = sorted(page.removeprefix("reference/").removesuffix(".md") for page in pages if "/" in page)
    assert references == sorted(PACKAGES)


def test_the_site_builds_with_warnings_as_errors(site: Path) -> None:
    for page in nav_pages():
        assert (site / page).with_suffix(".html").is_file(), page
    assert "Getting started" in (site / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("package", PACKAGES)
def test_the_api_reference_documents_every_public_name(site: Path, package: str) -> None:
    page = (site / "reference" / f"{package}.html").read_text(encoding="utf-8")
    names = [name for name in importlib.import_module(package).__all__ if not name.startswith("__")]
    missing = [name for name in names if f'id="{package}.{name}"' not in page]
    assert not missing, f"reference/{package}.md renders no entry for {missing} (is it hidden from griffe?)"


def test_docstring_markup_is_rendered_not_shown(site: Path) -> None:
    """reST roles become links or code, doctests code, simple tables tables (scripts/griffe_docstrings.py)."""
    for path in sorted((site / "reference").glob("*.html")):
        page = path.read_text(encoding="utf-8")
        assert not re.search(r":(?:class|func|meth|attr|mod|data|exc|obj):`", page), path.name
        assert "=====" not in page, f"{path.name}: a reST table shown as text"
        outside_code = re.sub(r'<div class="(?:language-pycon )?highlight">.*?</div>', "", page, flags=re.S)
        assert "&gt;&gt;&gt; " not in outside_code, f"{path.name}: a doctest shown as text"
    page = (site / "reference" / "autogen_reliability.html").read_text(encoding="utf-8")
    # :func:`configure` in the package docstring links to configure's entry on the same page.
    assert re.search(r'<a [^>]*href="#autogen_reliability\.configure"[^>]*><code>configure</code></a>', page)
    faults = (site / "reference" / "autogen_reliability.testing.html").read_text(encoding="utf-8")
    assert re.search(r"<th>fault</th>\s*<th>exception</th>", faults)  # faults' reST table


def test_the_site_loads_nothing_from_another_host(site: Path) -> None:
    """No font, script, stylesheet or image from a CDN: the site builds offline and reads offline."""
    remote = re.compile(r'<(?:link|script|img|source|iframe)\b[^>]*\b(?:src|href)="(?:https?:)?//', re.I)
    found = []
    for path in site.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(site)}: {match}" for match in remote.findall(html)]
        # Material's repository widget (repo_url) fetches the repository's stars from api.github.com.
        found += [f"{path.relative_to(site)}: the repository widget"] if 'data-md-component="source"' in html else []
    for path in site.rglob("*.css"):
        found += [f"{path.relative_to(site)}: {m}" for m in re.findall(r"@import[^;]*//", path.read_text("utf-8"))]
    assert not found


def test_a_broken_link_or_reference_fails_the_build(tmp_path: Path) -> None:
    _need_mkdocs()
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    with (docs / "storage.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [the old page](retention.md), [a section](reports.md#no-such-section) ")
        page.write("and [`Gone`][autogen_reliability.Gone].\n")
    config = CONFIG.read_text(encoding="utf-8")
    config = config.replace("paths: [.]", f"paths: [{ROOT}]").replace("scripts/", f"{ROOT}/scripts/")
    (tmp_path / "mkdocs.yml").write_text(f"docs_dir: {docs}\n{config}", encoding="utf-8")
    built = build(tmp_path / "mkdocs.yml", tmp_path / "site", cwd=tmp_path)
    assert built.returncode != 0
    assert "Aborted with 3 warnings in strict mode" in built.output, built.output
    for target in ("'retention.md'", "'#no-such-section'", "autogen_reliability.Gone"):
        assert target in built.output


# ---- README on a package index page


def repository_url() -> str:
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    return str(urls["Source"]).rstrip("/")


def readme_links() -> list[str]:
    """The targets of README's links, inline ``[text](url)`` and reference definitions ``[name]: url``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # not in code blocks
    return re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, flags=re.M)


def test_readme_links_are_absolute_and_reach_a_file_of_the_repository() -> None:
    base = f"{repository_url()}/blob/main/"
    links = readme_links()
    relative = [link for link in links if not re.match(r"https?://", link)]
    assert not relative, f"README links that a package index page cannot follow: {relative}"
    ours = [link for link in links if link.startswith(base)]
    assert len(ours) >= 8, f"README links to the docs under {base}: {ours}"
    for link in ours:
        target = ROOT / link.removeprefix(base).split("#", 1)[0]
        assert target.is_file(), f"README links to {link}, but there is no {target.relative_to(ROOT)}"
    assert f"{base}docs/getting-started.md" in ours
