"""test_checksrc.py: scripts/checksrc finds each kind of fault and passes good code.

Each samples/NAME.sample is copied to a temporary directory as NAME (so that
the tree's own check, which reads only *.c and *.h, never sees the bad ones)
and checked there. A sample states the findings it must produce:

    //  expect: RULE            on the next line
    //  expect here: RULE       on this line
    //  expect line N: RULE     on line N

and checksrc must report exactly those, no more and no fewer. Standard
library only.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKSRC = os.path.join(HERE, "..", "..", "scripts", "checksrc")
SAMPLES = os.path.join(HERE, "samples")
EXPECT = re.compile(r"//  expect(?: (here|line (\d+)))?: (\w+)")
FINDING = re.compile(r"^(.*):(\d+): (\w+): .+$")


def expected_findings(path):
    found = set()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            m = EXPECT.search(line)
            if not m:
                continue
            where = number if m.group(1) == "here" else int(m.group(2) or number + 1)
            found.add((where, m.group(3)))
    return found


class ChecksrcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="checksrc-")
        cls.files = {}
        for sample in sorted(os.listdir(SAMPLES)):
            if sample.endswith(".sample"):
                name = sample[: -len(".sample")]
                shutil.copy(os.path.join(SAMPLES, sample), os.path.join(cls.dir, name))
                cls.files[name] = expected_findings(os.path.join(SAMPLES, sample))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def run_checksrc(self, *names):
        paths = [os.path.join(self.dir, n) for n in names]
        proc = subprocess.run([sys.executable, CHECKSRC, *paths], capture_output=True, text=True)
        findings = {}
        for line in proc.stdout.splitlines():
            m = FINDING.match(line)
            self.assertIsNotNone(m, f"not file:line: rule: message: {line!r}")
            findings.setdefault(os.path.basename(m.group(1)), set()).add(
                (int(m.group(2)), m.group(3)))
        return proc.returncode, findings, proc

    def test_every_rule_has_a_bad_sample(self):
        rules = {rule for expected in self.files.values() for _, rule in expected}
        self.assertEqual(rules, {"opening", "static", "destroy", "banned", "comment"})

    def test_good_samples_pass(self):
        good = [n for n, expected in self.files.items() if not expected]
        self.assertIn("good.c", good)
        self.assertIn("good.h", good)
        self.assertIn("test_good.c", good)
        rc, findings, proc = self.run_checksrc(*good)
        self.assertEqual(findings, {}, proc.stdout)
        self.assertEqual(rc, 0, proc.stderr)

    def test_each_bad_sample_reports_exactly_its_faults(self):
        for name, expected in self.files.items():
            if not expected:
                continue
            with self.subTest(sample=name):
                rc, findings, proc = self.run_checksrc(name)
                self.assertEqual(rc, 1, proc.stdout + proc.stderr)
                self.assertEqual(findings.get(name, set()), expected, proc.stdout)

    def test_all_at_once_keeps_the_files_apart(self):
        rc, findings, proc = self.run_checksrc(*self.files)
        self.assertEqual(rc, 1)
        for name, expected in self.files.items():
            self.assertEqual(findings.get(name, set()), expected, name)

    def test_unreadable_file_is_an_error_not_a_pass(self):
        rc, _, proc = self.run_checksrc("no-such-file.c")
        self.assertEqual(rc, 2)
        self.assertIn("cannot read", proc.stderr)


if __name__ == "__main__":
    unittest.main()
