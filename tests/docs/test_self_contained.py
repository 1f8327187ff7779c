#!/usr/bin/env python3
"""The repository is self-contained (issue 10): nothing in it refers to files outside it.

Three checks over the tracked files (`git ls-files`; a walk of the tree when git is absent):

  outside references  no file names the shared folder beside the repository, by a relative or an
                      absolute path, nor the design notes, style guide or reference folder that
                      lived there. docs/ holds what they said (docs/architecture.md,
                      docs/style.md, docs/servicenow-api.md).
  section citations   every "NAME.md §N" names a numbered heading that exists in that page (a
                      "docs/servicenow-api.md §2.4" must find "### 2.4 ..."), a list such as
                      "docs/architecture.md §1, §4" checks every member, and a bare "§N" in docs/ is checked
                      against its own page, or against docs/servicenow-api.md in the two pages
                      that say their bare §N point there.
  relative links      every relative markdown link in docs/*.md and README.md leads to a file or
                      folder that exists.

Each failure lists file:line and the offending text. The forbidden patterns are assembled from
pieces, so this file does not trip its own scan.

Run: python3 tests/docs/test_self_contained.py (or CTest: docs_self_contained, label unit).
TWINSYNC_SOURCE_DIR names another tree to check; the default is the tree this file is in.
"""

import os
import re
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.environ.get("TWINSYNC_SOURCE_DIR") or os.path.join(HERE, "..", ".."))

# --- what may not appear -------------------------------------------------------------------------

_SHARED = "sha" + "red"
_NOTES = "DES" + "IGN"
_GUIDE = "STY" + "LE"
_REFDIR = "refer" + "ence/"

FORBIDDEN = [
    ("the shared folder beside the repository", re.compile(re.escape(".." + "/" + _SHARED))),
    ("the shared folder by absolute path", re.compile(re.escape("/work/" + _SHARED))),
    ("the shared design notes", re.compile(r"\b" + _NOTES + r"\b")),
    ("the shared style guide", re.compile(r"\b" + _GUIDE + r"\.md\b")),
    ("the shared reference folder",
     re.compile(r"(?<![\w-])" + _REFDIR + r"(?:servicenow-api|exalate|zeromq-broker|seed-)")),
]

# --- section citations ---------------------------------------------------------------------------

API_DOC = "docs/servicenow-api.md"
# Pages whose bare "§N" points into docs/servicenow-api.md (each says so in its opening lines).
BARE_SECTIONS_POINT_TO = {"docs/servicenow.md": API_DOC, "docs/snemu.md": API_DOC}

_CITATION = re.compile(r"(?:(?P<page>(?:[\w.-]+/)*[\w.-]+\.md)[,:]?\s+)?§\s?(?P<num>\d+(?:\.\d+)*)")
_LIST_JOINER = re.compile(r"^\s*(?:,|;|/|and|or|to)?\s*$")
_FOREIGN_SPEC = re.compile(r"\bRFC\s*\d+\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s")

# --- markdown links ------------------------------------------------------------------------------

_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def tracked_files(root):
    """Paths relative to root, '/'-separated: what git tracks, else every file of the tree."""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True,
                             check=True, timeout=60).stdout
        names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
        if names:
            return sorted(n for n in names if os.path.isfile(os.path.join(root, n)))
    except (OSError, subprocess.SubprocessError):
        pass
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Not ours to check: version control, caches, and build trees (they hold a CMakeCache.txt).
        dirnames[:] = sorted(d for d in dirnames
                             if d not in (".git", "__pycache__")
                             and not os.path.exists(os.path.join(dirpath, d, "CMakeCache.txt")))
        for f in sorted(filenames):
            names.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return names


def read_text(root, rel):
    """The file's lines, or None for a binary file (a NUL byte in it)."""
    with open(os.path.join(root, rel), "rb") as f:
        data = f.read()
    if b"\0" in data:
        return None
    return data.decode("utf-8", "replace").splitlines()


class Tree:
    """The files of one source tree, read once."""

    def __init__(self, root):
        self.root = root
        self.files = tracked_files(root)
        self._lines = {}
        self._headings = {}

    def lines(self, rel):
        if rel not in self._lines:
            self._lines[rel] = read_text(self.root, rel)
        return self._lines[rel]

    def text_files(self):
        for rel in self.files:
            lines = self.lines(rel)
            if lines is not None:
                yield rel, lines

    def headings(self, rel):
        """The section numbers of a markdown page's headings ("2.4", "5"), or None if no page."""
        if rel not in self._headings:
            path = os.path.join(self.root, rel)
            if not os.path.isfile(path):
                self._headings[rel] = None
            else:
                nums = set()
                for line in read_text(self.root, rel) or []:
                    m = _HEADING.match(line)
                    if m:
                        nums.add(m.group(1))
                self._headings[rel] = nums
        return self._headings[rel]

    def resolve_page(self, citing, name):
        """The tree-relative path a citation's page name means, or None when there is none."""
        candidates = [name] if "/" in name else [
            os.path.normpath(os.path.join(os.path.dirname(citing), name)).replace(os.sep, "/"),
            "docs/" + name, name]
        for c in candidates:
            if os.path.isfile(os.path.join(self.root, c)):
                return c
        return None


def outside_references(tree):
    """'file:line: text (what)' for every reference to a file outside the tree."""
    hits = []
    for rel, lines in tree.text_files():
        for no, line in enumerate(lines, 1):
            for what, pattern in FORBIDDEN:
                if pattern.search(line):
                    hits.append("%s:%d: %s  (%s)" % (rel, no, line.strip(), what))
    return hits


def citations(rel, line):
    """(page or None, section, explicit) for each § citation of one line, in order. A citation
    in a list after an explicit one ("docs/sync.md §1, §2") inherits its page; one following an RFC
    number is somebody else's and left out."""
    found = []
    page, last_end = None, None
    for m in _CITATION.finditer(line):
        before = line[:m.start()]
        if m.group("page"):
            page = m.group("page")
            found.append((page, m.group("num"), True))
        elif _FOREIGN_SPEC.search(before):
            page = None
        elif page is not None and last_end is not None and _LIST_JOINER.match(line[last_end:m.start()]):
            found.append((page, m.group("num"), True))
        else:
            page = None
            found.append((None, m.group("num"), False))
        last_end = m.end()
    return found


def bad_citations(tree):
    """'file:line: text (why)' for every section citation whose heading does not exist."""
    bad = []
    for rel, lines in tree.text_files():
        in_docs = rel.startswith("docs/") and rel.endswith(".md")
        for no, line in enumerate(lines, 1):
            for page, num, explicit in citations(rel, line):
                if explicit:
                    target = tree.resolve_page(rel, page)
                    if target is None:
                        bad.append("%s:%d: %s  (no page %s in the repository, for §%s)"
                                   % (rel, no, line.strip(), page, num))
                        continue
                elif in_docs:
                    target = BARE_SECTIONS_POINT_TO.get(rel, rel)
                else:
                    continue  # a bare § in code: its page is not stated, nothing to check
                nums = tree.headings(target)
                if nums is not None and num not in nums:
                    bad.append("%s:%d: %s  (%s has no section %s)"
                               % (rel, no, line.strip(), target, num))
    return bad


def markdown_links(lines):
    """(line number, target) of every link in a markdown page, outside code."""
    fence = False
    for no, line in enumerate(lines, 1):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            continue
        if fence:
            continue
        text = _CODE_SPAN.sub("", line)
        for m in _INLINE_LINK.finditer(text):
            yield no, m.group(1)
        m = _REF_LINK.match(text)
        if m:
            yield no, m.group(1)


def broken_links(tree):
    """'file:line: target' for every relative link in docs/*.md and README.md that leads nowhere."""
    bad = []
    pages = [f for f in tree.files
             if f == "README.md" or (f.startswith("docs/") and f.endswith(".md"))]
    for rel in pages:
        for no, target in markdown_links(tree.lines(rel) or []):
            if _SCHEME.match(target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0].split("?", 1)[0]
            if not path:
                continue
            base = tree.root if path.startswith("/") else os.path.join(tree.root, os.path.dirname(rel))
            if not os.path.exists(os.path.normpath(os.path.join(base, path.lstrip("/")))):
                bad.append("%s:%d: %s" % (rel, no, target))
    return bad


def report(title, hits):
    return "%s (%d):\n  %s" % (title, len(hits), "\n  ".join(hits))


class TestSelfContained(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tree = Tree(ROOT)

    def test_the_scan_sees_the_tree(self):
        # A wrong root or an empty file list would make every other test pass for nothing.
        for rel in ("README.md", API_DOC, "tests/docs/test_self_contained.py"):
            self.assertTrue(rel in self.tree.files, "not scanned: %s (root %s, %d files)"
                            % (rel, ROOT, len(self.tree.files)))

    def test_nothing_refers_to_files_outside_the_repository(self):
        hits = outside_references(self.tree)
        self.assertEqual(hits, [], report(
            "references to files outside the repository; cite the docs/ page that holds the point",
            hits))

    def test_section_citations_name_existing_headings(self):
        bad = bad_citations(self.tree)
        self.assertEqual(bad, [], report("section citations that lead nowhere", bad))

    def test_relative_links_in_the_docs_lead_to_files(self):
        bad = broken_links(self.tree)
        self.assertEqual(bad, [], report("relative links to files that do not exist", bad))


class TestTheChecksThemselves(unittest.TestCase):
    """The checks catch what they are for, on lines made up here (so that a check that silently
    stopped matching cannot pass the tree)."""

    def hits(self, line):
        return [what for what, pattern in FORBIDDEN if pattern.search(line)]

    def test_each_outside_reference_form_is_caught(self):
        for line in ["see " + ".." + "/" + _SHARED + "/" + _GUIDE + ".md",
                     "from /work/" + _SHARED + "/" + _REFDIR + "servicenow-api.md",
                     "(" + _NOTES + ".md §7)",
                     "(" + _NOTES + " §5)",
                     "and " + _NOTES + " allows a call a minute",
                     "key=value form (" + _GUIDE + ".md)",
                     "quirks (" + _REFDIR + "servicenow-api.md)"]:
            self.assertTrue(self.hits(line), line)

    def test_the_repository_own_pages_pass(self):
        for line in ["docs/style.md", "docs/servicenow-api.md §2.4", "the design of the store",
                     "docs/protocol.md is the reference for the dialogue",
                     "a reference to this table", "sysparm_exclude_reference_link"]:
            self.assertEqual(self.hits(line), [], line)

    def test_citation_lists_inherit_their_page(self):
        self.assertEqual(citations("x", "(docs/architecture.md §1, §4: nothing lost)"),
                         [("docs/architecture.md", "1", True), ("docs/architecture.md", "4", True)])
        self.assertEqual(citations("x", "docs/protocol.md §4 and §6 state"),
                         [("docs/protocol.md", "4", True), ("docs/protocol.md", "6", True)])
        self.assertEqual(citations("x", "docs/sync.md §2, then later §3.1 alone"),
                         [("docs/sync.md", "2", True), (None, "3.1", False)])
        self.assertEqual(citations("x", "RFC 4648 §5 alphabet"), [])

    def test_each_check_fails_on_a_made_up_tree(self):
        # A small tree without git (so the walk is used): one of each defect, and one good
        # example of each thing checked.
        with tempfile.TemporaryDirectory() as root:
            files = {
                API_DOC: "# API\n\n## 2. Paging\n\n### 2.4 Pitfalls\n\n## 5. Attachments\n",
                "docs/servicenow.md": "Facts in [the API page](servicenow-api.md), bare §n there.\n"
                                      "Short pages (§2.4). Gone (§9.9).\n"
                                      "[missing](nowhere.md) [anchor](#top) [web](https://x.y/z)\n",
                "README.md": "- [docs](docs/servicenow.md) and [gone](docs/gone.md)\n",
                "sn/x.h": "/*  x.h: quirks (" + _REFDIR + "servicenow-api.md). */\n"
                          "//  pages (docs/servicenow-api.md §2.4), files (docs/servicenow-api.md §5.3)\n",
            }
            for rel, text in files.items():
                os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
                with open(os.path.join(root, rel), "w", encoding="utf-8") as f:
                    f.write(text)
            tree = Tree(root)
            self.assertEqual(sorted(tree.files), sorted(files))
            self.assertEqual(outside_references(tree),
                             ["sn/x.h:1: /*  x.h: quirks (" + _REFDIR
                              + "servicenow-api.md). */  (the shared reference folder)"])
            self.assertEqual([b.split("  (")[-1] for b in bad_citations(tree)],
                             ["docs/servicenow-api.md has no section 9.9)",
                              "docs/servicenow-api.md has no section 5.3)"])
            self.assertEqual(broken_links(tree),
                             ["README.md:1: docs/gone.md", "docs/servicenow.md:3: nowhere.md"])

if __name__ == "__main__":
    unittest.main()
