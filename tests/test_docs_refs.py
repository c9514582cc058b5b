"""The project's code and docs cite only what the repository holds.

* No file cites the design notes that live outside the repository (the shared design,
  algorithm, style and developer documents): what a maintainer needs is in ``docs/``, in the
  project's own words (docs/architecture.md, docs/algorithms.md, docs/numerics.md).
* Every ``docs/<name>.md`` a file mentions exists, and so does the section it points at
  (``#anchor``: an explicit ``<a id>`` or a heading's GitHub anchor; ``, "Title"``: a heading
  that starts with Title). Relative Markdown links in the docs and READMEs resolve the same way.
* Every repository path a file mentions (``tests/x.py``, ``csrc/.../y.h``, ...) and every module
  a docstring names with ``:mod:`` exists.
* Every ``Note [name]`` cited somewhere is defined somewhere (a line that starts the note, or
  ``Note [name]:``).

Files read: everything under python/, csrc/, triton_kernels/, tests/ and docs/, the Python files
under bench/, README.md, bench/README.md, setup.py, CMakeLists.txt (bench/results/ is generated
output and is left out).
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".py", ".h", ".cpp", ".cu", ".cuh", ".md", ".txt", ".cmake", ".in", ".sh",
                 ".toml"}
SKIP_DIRS = {"__pycache__", ".venv", "build", ".pytest_cache", ".hypothesis"}

# The names of the outside documents, assembled so that this file does not cite them itself.
_OUTSIDE = ("DESIGN", "ALGORITHMS", "STYLE", "DEVELOPERS")
OUTSIDE_RE = re.compile(r"\b(?:" + "|".join(_OUTSIDE) + r")(?:\.md\b|\s+§|\s+P\d|\s+rule)"
                        r"|\.\./shared/\w+\.md|§\s*\d")


def _walk(top: Path):
    for path in sorted(top.rglob("*")):
        if any(part in SKIP_DIRS for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name == "CMakeLists.txt"):
            yield path


@lru_cache(maxsize=None)
def scoped_files() -> tuple[Path, ...]:
    files: list[Path] = []
    for top in ("python", "csrc", "triton_kernels", "tests", "docs"):
        files.extend(_walk(ROOT / top))
    files.extend(p for p in _walk(ROOT / "bench")
                 if p.suffix == ".py" and "results" not in p.relative_to(ROOT).parts)
    for name in ("README.md", "bench/README.md", "setup.py", "CMakeLists.txt"):
        if (ROOT / name).is_file():
            files.append(ROOT / name)
    return tuple(files)


def _lines():
    for path in scoped_files():
        if path == Path(__file__).resolve():  # the checker's own examples are not citations
            continue
        rel = path.relative_to(ROOT).as_posix()
        for no, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                  .splitlines(), 1):
            yield rel, no, line


def test_scope_is_not_empty():
    """The walk finds the tree (a wrong ROOT would make every check below vacuous)."""
    names = {p.relative_to(ROOT).as_posix() for p in scoped_files()}
    assert {"README.md", "setup.py", "docs/architecture.md", "python/fusedopt/_stats.py",
            "csrc/math/adam.h", "tests/conftest.py"} <= names
    assert len(names) > 150
    assert Path(__file__).resolve() in scoped_files()


# ------------------------------------------------------------------ outside documents
def test_no_file_cites_documents_outside_the_repository():
    hits = [f"{rel}:{no}: {line.strip()}" for rel, no, line in _lines()
            if OUTSIDE_RE.search(line)]
    assert not hits, ("cite docs/ instead (docs/architecture.md, docs/algorithms.md, "
                      "docs/numerics.md):\n" + "\n".join(hits))


def test_outside_pattern_catches_each_form():
    """The pattern above is what the check rests on: it must see every way those are cited."""
    for name in _OUTSIDE:
        assert OUTSIDE_RE.search(f"as {name}.md explains")
        assert OUTSIDE_RE.search(f"({name} §4)")
    assert OUTSIDE_RE.search("seeded (STYLE P9)")
    assert OUTSIDE_RE.search("(DESIGN rule: never ...)")
    assert OUTSIDE_RE.search("see ../shared/notes.md")
    assert OUTSIDE_RE.search("the AdamL contract (§3)")  # a bare section of those documents
    assert not OUTSIDE_RE.search("docs/architecture.md#layers; DESIGNS are not cited")


# ------------------------------------------------------------------ docs/ targets
def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def _sections(path: Path) -> tuple[set[str], list[str]]:
    """(anchors, heading texts) of a Markdown file; code blocks skipped."""
    anchors: set[str] = set()
    headings: list[str] = []
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        anchors.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', line))
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            headings.append(re.sub(r"[`*]", "", m.group(1)).strip())
            anchors.add(_slug(m.group(1)))
    return anchors, headings


def _check_target(path: Path, anchor: str | None, title: str | None) -> str | None:
    if not path.is_file():
        return f"{path.name} does not exist"
    anchors, headings = _sections(path)
    if anchor and anchor not in anchors:
        return f"{path.name} has no section #{anchor}"
    if title and not any(h.lower().startswith(title.lower()) for h in headings):
        return f"{path.name} has no heading starting with {title!r}"
    return None


DOCS_REF_RE = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)(?:#([\w-]+))?(?:,\s+\"([^\"]+)\")?")


def test_every_cited_docs_page_and_section_exists():
    bad = []
    for rel, no, line in _lines():
        for m in DOCS_REF_RE.finditer(line):
            why = _check_target(ROOT / "docs" / m.group(1), m.group(2), m.group(3))
            if why:
                bad.append(f"{rel}:{no}: {m.group(0)}: {why}")
    assert not bad, "\n".join(bad)


LINK_RE = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_markdown_links_resolve():
    bad = []
    for path in scoped_files():
        if path.suffix != ".md":
            continue
        rel = path.relative_to(ROOT).as_posix()
        for m in LINK_RE.finditer(path.read_text(encoding="utf-8")):
            target = m.group(1)
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                bad.append(f"{rel}: ({target}): {file_part} does not exist")
            elif anchor and dest.suffix == ".md":
                why = _check_target(dest, anchor, None)
                if why:
                    bad.append(f"{rel}: ({target}): {why}")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------ paths, modules, notes
PATH_RE = re.compile(r"(?<![\w/.-])((?:python|csrc|triton_kernels|tests|docs)/[\w/.-]*?"
                     r"\.(?:py|h|cpp|cu|cuh|md|txt|cmake|in|sh|json))(?![\w/-])")


def test_every_repository_path_mentioned_exists():
    bad = [f"{rel}:{no}: {m.group(1)}" for rel, no, line in _lines()
           for m in PATH_RE.finditer(line)
           if "*" not in m.group(1) and not (ROOT / m.group(1)).exists()
           and not (ROOT / (m.group(1) + ".in")).exists()]  # generated by CMake from .in
    assert not bad, "paths that do not exist:\n" + "\n".join(bad)


MOD_RE = re.compile(r":mod:`~?([\w.]+)`")


def _module_exists(name: str, here: Path) -> bool:
    if name.startswith("."):
        base = here.parent
        rest = name[1:]
        while rest.startswith("."):
            base, rest = base.parent, rest[1:]
        parts = rest.split(".") if rest else []
    elif name.split(".")[0] == "fusedopt":
        parts = name.split(".")[1:]
        base = ROOT / "python" / "fusedopt"
        if parts[:1] == ["triton_kernels"]:
            base, parts = ROOT / "triton_kernels", parts[1:]
    else:  # a sibling module of a test helper (``host_sync``)
        base, parts = here.parent, name.split(".")
    target = base.joinpath(*parts) if parts else base
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def test_every_module_named_with_mod_exists():
    bad = []
    for rel, no, line in _lines():
        if not rel.endswith(".py"):
            continue
        for m in MOD_RE.finditer(line):
            if not _module_exists(m.group(1), ROOT / rel):
                bad.append(f"{rel}:{no}: :mod:`{m.group(1)}`")
    assert not bad, "modules that do not exist:\n" + "\n".join(bad)


NOTE_RE = re.compile(r"Note \[([^\]]+)\]")
NOTE_LEAD_RE = re.compile(r"^\s*(?://+|#:?|\*|\"\"\"|;)?\s*$")


def test_every_cited_note_is_defined():
    cited: dict[str, str] = {}
    defined: set[str] = set()
    for rel, no, line in _lines():
        for m in NOTE_RE.finditer(line):
            name = m.group(1)
            cited.setdefault(name, f"{rel}:{no}")
            rest = line[m.end():]
            if rest.startswith(":") or (NOTE_LEAD_RE.match(line[:m.start()])
                                        and rest.strip() in ("", ":")):
                defined.add(name)
    missing = {n: where for n, where in cited.items() if n not in defined}
    assert not missing, "notes cited but defined nowhere:\n" + "\n".join(
        f"{n!r} (first cited at {w})" for n, w in sorted(missing.items()))


def test_checks_can_fail(tmp_path):
    """Each target check rejects what does not exist."""
    page = tmp_path / "page.md"
    page.write_text('# Title one\n<a id="kept"></a>\n## A `code` heading\n')
    assert _check_target(page, "kept", None) is None
    assert _check_target(page, "a-code-heading", None) is None
    assert _slug("state_dict") == "state_dict"  # GitHub keeps underscores
    assert _check_target(page, "title-one", "A code") is None
    assert _check_target(page, "gone", None)
    assert _check_target(page, None, "Missing title")
    assert _check_target(tmp_path / "absent.md", None, None)
    assert not _module_exists("fusedopt.scalars", ROOT / "python/fusedopt/_stats.py")
    assert _module_exists("fusedopt._stats", ROOT / "python/fusedopt/_stats.py")
    assert _module_exists(".prologue", ROOT / "python/fusedopt/reference/__init__.py")
    assert PATH_RE.search("see tests/test_contract.py").group(1) == "tests/test_contract.py"
    assert not (ROOT / "tests/test_contract.py").exists()


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
