"""MkDocs hook: two pages that must follow the code, checked at every build.

- docs/reference.md lists exactly the public names of the `lrnet` package. `lrnet/__init__.py`
  exports them lazily (`_EXPORTS`, imported under TYPE_CHECKING), so the docs tool cannot find them
  on its own: the page names them under ``::: lrnet``.
- docs/architecture.md names every module and package of ``src/lrnet`` (`` `name.py` `` or
  `` `name/` ``) in its module map.
- README.md (not part of the site) links only to files that exist.

A mismatch is a warning naming what to add or remove, which fails ``mkdocs build --strict``
(scripts/test.sh). The source is read, never imported (no torch needed).
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.plugins.lrnet_checks")

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "lrnet"


def exported_names(init: Path = PACKAGE / "__init__.py") -> set:
    """The keys of `_EXPORTS` in the package's ``__init__.py``."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and isinstance(node.value, ast.Dict):
            return {ast.literal_eval(key) for key in node.value.keys if key is not None}
    raise ValueError(f"{init}: no _EXPORTS dictionary")


def listed_names(markdown: str) -> set:
    """The names under ``members:`` of the ``::: lrnet`` block (up to the next blank line)."""
    block = re.search(r"^::: lrnet[ \t]*\n(.*?)(?:\n[ \t]*\n|\Z)", markdown, re.M | re.S)
    return set(re.findall(r"^\s+- (\w+)\s*$", block.group(1), re.M)) if block else set()


def package_modules(package: Path = PACKAGE) -> set:
    """``name.py`` for each top-level module and ``name/`` for each sub-package of the package."""
    modules = {p.name for p in package.glob("*.py")}
    packages = {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    return modules | packages


def _check_reference(markdown: str) -> None:
    exported, listed = exported_names(), listed_names(markdown)
    if exported - listed:
        log.warning("reference.md: add %s to the members of `::: lrnet` (they are in lrnet._EXPORTS)",
                    ", ".join(sorted(exported - listed)))
    if listed - exported:
        log.warning("reference.md: %s listed under `::: lrnet` but not in lrnet._EXPORTS",
                    ", ".join(sorted(listed - exported)))


def _check_architecture(markdown: str) -> None:
    modules = package_modules()
    named = set(re.findall(r"`([\w.]+\.py|\w+/)`", markdown))
    if modules - named:
        log.warning("architecture.md: the module map does not name %s (modules of src/lrnet)",
                    ", ".join(sorted(modules - named)))
    first_cells = re.findall(r"^\| *(`[^|]*)\|", markdown, re.M)  # the map's rows: | `name.py`, ... | owns |
    rows = {n for cell in first_cells for n in re.findall(r"`([\w.]+\.py|\w+/)`", cell)}
    if rows - modules:
        log.warning("architecture.md: the module map has rows for %s, not in src/lrnet any more",
                    ", ".join(sorted(rows - modules)))


def readme_broken_links(readme: Path = REPO / "README.md") -> list:
    """Relative link targets of the README (``[text](target)``) that are not files or folders."""
    targets = re.findall(r"\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8"))
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    return sorted({t for t in local if t and not (readme.parent / t).exists()})


def on_pre_build(config, **kwargs):
    broken = readme_broken_links()
    if broken:
        log.warning("README.md: links to missing files: %s", ", ".join(broken))


CHECKS = {"reference.md": _check_reference, "architecture.md": _check_architecture}


def on_page_markdown(markdown, page, config, files, **kwargs):
    check = CHECKS.get(page.file.src_uri)
    if check is not None:
        check(markdown)
    return markdown
