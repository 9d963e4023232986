"""The repository's docs stand alone and hold true: no citation of anything a clone does not have,
every relative link and anchor resolves, every variable the code reads and every routes-file key is
in the configuration reference, and the README says what each dependency is for."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from relay.routes import RouteSchema
from tests.processes import ROOT

README = ROOT / "README.md"
GUIDES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
README_LINES_MAX = 250

# What a clone of the repository does not have: the project's shared notes, an issue tracker's
# numbers, the directories of one machine.
CITATIONS = {
    "a file outside the repository": re.compile(r"\.\./shared\b|\b(?:SPEC|STYLE|BENCHMARKS)\.md\b"),
    "an issue": re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE),
    "a path of one machine": re.compile(r"(?<![\w.~-])/(?:work|home|root)/"),
}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
# How the code reads a variable: environs, os.environ, and the shell scripts' $NAME and ${NAME...}.
PY_READS = re.compile(
    r"""(?:env\.(?:str|int|float|bool|list)|os\.environ\.get|getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']"""
    r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\]"""
)
SHELL_READS = re.compile(r"\$\{?([A-Z][A-Z0-9_]+)")
SHELL_OWN = {"PATH", "PWD", "HOME", "PYTHONPATH", "BASH_SOURCE"}  # the shell's, not the relay's


def tracked() -> list[Path]:
    """The repository's files, as a clone holds them."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def text_of(path: Path) -> str | None:
    """The file as text, or None for a binary file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def prose(markdown: str) -> str:
    """Markdown without its code: fenced blocks and inline code spans."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file's headings (a repeated heading gets -1, -2, ...)."""
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def test_nothing_cites_what_a_clone_does_not_have() -> None:
    """No tracked file cites the project's shared notes, an issue number, or a path of one machine."""
    files = tracked()
    assert len(files) > 100, "git ls-files listed too little"
    found = []
    for path in files:
        text = text_of(path)
        if text is None or path == Path(__file__):  # this file holds the patterns' own examples
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in CITATIONS.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()[:120]}")
    assert found == []


def test_citation_patterns_catch_each_kind() -> None:
    """Each pattern finds what it is for, and leaves alone what looks like it."""
    # The samples are put together here, so that this file does not itself hold what it looks for.
    caught = {
        "a file outside the repository": [
            "see ../" + "shared/notes.txt",
            "as SPEC" + ".md says",
            "BENCHMARKS" + ".md's targets",
        ],
        "an issue": ["fixed in issue" + " 13", "Issue" + " 9: a webhook", "issues " + "#4 and 5"],
        "a path of one machine": ["/work" + "/main/x.py", "in /home" + "/me/relay", "(/root" + "/.cache)"],
    }
    for what, lines in caught.items():
        assert all(CITATIONS[what].search(line) for line in lines), what
    clean = [
        "docs/design.md",
        "https://example.com/ro" + "ot/x",
        "an issue tracker",
        "~/wo" + "rk/relay",
        "MYSPEC" + ".md",
    ]
    assert not any(pattern.search(line) for pattern in CITATIONS.values() for line in clean)


def test_every_relative_link_of_the_docs_resolves() -> None:
    """Each relative link of README.md, docs/*.md and bench/README.md names a file that exists, and an
    anchor that exists in it where the link has one."""
    checked = 0
    broken = []
    for doc in GUIDES:
        for target in LINK.findall(prose(doc.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto: ...
            file_part, _, anchor = target.partition("#")
            linked = (doc.parent / file_part).resolve() if file_part else doc
            checked += 1
            if not linked.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{doc.relative_to(ROOT)}: {target}: no such heading")
    assert checked > 30, "the docs' links were not found"
    assert broken == []


def test_slug_is_githubs() -> None:
    """Anchors are made as GitHub makes them, so a link that works here works there."""
    assert slug("skip_unchanged: attributes Braze already has are not sent again") == (
        "skip_unchanged-attributes-braze-already-has-are-not-sent-again"
    )
    assert slug("The sandbox's demo page") == "the-sandboxs-demo-page"
    assert slug("gunicorn's worker class") == "gunicorns-worker-class"
    assert slug("Records: the fields of each mode") == "records-the-fields-of-each-mode"


def test_readme_is_a_front_door() -> None:
    """The README stays a page: what it is, the two commands, a request, links; the rest in guides."""
    text = README.read_text()
    assert len(text.splitlines()) <= README_LINES_MAX
    assert "./scripts/sandbox" in text and "./scripts/test" in text
    guides = {path.name for path in (ROOT / "docs").glob("*.md")}
    linked = {Path(target.partition("#")[0]).name for target in LINK.findall(text)}
    assert guides <= linked, f"guides the README does not link: {sorted(guides - linked)}"


def variables_the_code_reads() -> set[str]:
    """Every environment variable the product's code and scripts read (tests and benchmarks aside)."""
    names: set[str] = set()
    for path in tracked():
        relative = path.relative_to(ROOT)
        if relative.parts[0] in ("tests", "bench", "docs"):
            continue
        if path.suffix == ".py":
            names |= {a or b for a, b in PY_READS.findall(path.read_text())}
        elif relative.parts[0] == "scripts" or path.name.startswith("Procfile"):
            names |= set(SHELL_READS.findall(path.read_text())) - SHELL_OWN
    return names


def test_every_variable_the_code_reads_is_in_the_configuration_reference() -> None:
    """docs/configuration.md lists each variable read by the code and each of .env.example."""
    read = variables_the_code_reads()
    assert {
        "REDIS_URL",
        "RELAY_INFLIGHT",
        "GUNICORN_THREADS",
        "SANDBOX_DEMO_PORT",
        "RELAY_TEST_REDIS_URL",
    } <= read
    example = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", CONFIGURATION))
    assert sorted((read | example) - listed) == []


def test_every_routes_file_key_is_in_the_configuration_reference() -> None:
    """The routes table of docs/configuration.md names every key the routes file takes."""
    section = CONFIGURATION.split("\n## The routes file\n", 1)[1]
    documented = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?", section, re.MULTILINE))
    keys = {name for pair in documented for name in pair if name}
    taken = set(RouteSchema().fields)
    assert "signature_prefix" in taken
    assert sorted(taken - keys - {"pre_formated_fields"}) == []  # TD's old spelling, named in a row
    assert "pre_formated_fields" in section


def test_readme_says_what_each_dependency_is_for() -> None:
    """Every package pinned in requirements*.txt is named in the README's Dependencies section."""
    section = README.read_text().split("\n## Dependencies", 1)[1]
    packages = []
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            requirement = line.split("#", 1)[0].strip()
            if requirement and not requirement.startswith("-"):
                packages.append(re.split(r"[=<>~!\[; ]", requirement, maxsplit=1)[0])
    assert len(packages) > 25
    missing = [
        package
        for package in packages
        if not re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", section, re.IGNORECASE)
    ]
    assert missing == []
