"""What `cmake --install` and `cpack -G DEB` ship, proven by using it.

StagingTest     installs the build into a staging prefix, checks the tree (programs, units,
                example configurations, docs), that each example lists every key its daemon's
                --help names, that the units agree with the examples and pass
                `systemd-analyze verify`, then runs the three daemons FROM THE STAGING PREFIX
                with the example configurations (changed only in paths, ports, URLs) against two
                emulated instances: initiate, accept, an incident and a comment each way.
PackageTest     `cpack -G DEB`: the package lists the programs, units and examples, carries the
                postinst, and its programs run from the unpacked tree.
ConfigErrorTest each configuration error (missing key, unreadable secret file, world-readable
                secret file, bad URL, unreachable broker, bad broker settings) ends the daemon
                at start with a non-zero status and ONE line on stderr naming the key and the
                file.
CommandLineTest the command-line style of the three programs (from the build tree): every
                command answers COMMAND --help; a bad number, an unknown option or command, an
                option the command does not take exit 2; a configuration error exits 78; a
                command that fails exits 1; each with ONE line on stderr.
DocsTest        docs/configuration.md lists exactly the keys each program's --help prints, with
                the same defaults.

CTest runs each class (tests/install/CMakeLists.txt) with TWINSYNC_BUILD_DIR and
TWINSYNC_SOURCE_DIR set. Python 3, standard library only. TWINSYNC_INSTALL_KEEP=1 keeps the
temporary directories.
"""

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

BUILD = os.environ.get("TWINSYNC_BUILD_DIR", "")
SOURCE = os.environ.get("TWINSYNC_SOURCE_DIR",
                        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
                            __file__)))))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(SOURCE, "scripts"))
import twinsync_harness as harness  # noqa: E402

DAEMONS = ("broker", "public", "private")
PROGRAMS = {d: "twinsync-" + d for d in DAEMONS}
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure", "User=twinsync")


def install(prefix):
    """cmake --install of the build tree into prefix; returns the prefix."""
    harness.run(["cmake", "--install", BUILD, "--prefix", prefix])
    return prefix


def help_keys(program):
    """{(section, key)} of every configuration key `program --help` lists, as `section.key`
    (the three programs spell keys, and their flags --section.key, the same way)."""
    text = harness.run([program, "--help"]).stdout
    keys = set()
    for line in text.splitlines():
        key = re.match(r"^\s+(node|servicenow|broker)\.([a-z_]+)\s", line)
        if key:
            keys.add((key.group(1), key.group(2)))
    return keys


def help_defaults(program):
    """{(section, key): default or None} of every configuration key `program --help` lists."""
    text = harness.run([program, "--help"]).stdout
    found = {}
    for line in text.splitlines():
        key = re.match(r"^\s+(node|servicenow|broker)\.([a-z_]+)\s", line)
        if key:
            default = re.search(r"[(;] ?default ([^;)]+)", line)
            found[(key.group(1), key.group(2))] = default.group(1) if default else None
    return found


def ini_lines(path):
    """{(section, key): value} of every key line of an INI file, commented (#key = value) or
    not; a commented value is recorded with a leading '#'."""
    found, section = {}, None
    with open(path) as f:
        for line in f:
            header = re.match(r"^\s*\[([^\]]+)\]", line)
            entry = re.match(r"^\s*(#?)\s*([a-z_]+)\s*=\s*(.*?)\s*$", line)
            if header:
                section = header.group(1)
            elif entry and section:
                found[(section, entry.group(2))] = entry.group(1) + entry.group(3)
    return found


def unit_settings(path):
    """{key: [values]} of a systemd unit file."""
    settings = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^([A-Za-z]+)=(.*)$", line.strip())
            if m:
                settings.setdefault(m.group(1), []).append(m.group(2))
    return settings


class Workdir(unittest.TestCase):
    """A temporary directory per class, removed unless TWINSYNC_INSTALL_KEEP is set."""

    @classmethod
    def setUpClass(cls):
        if not BUILD:
            raise unittest.SkipTest("TWINSYNC_BUILD_DIR is not set (CTest sets it)")
        cls.tmp = tempfile.mkdtemp(prefix="twinsync-install-")

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("TWINSYNC_INSTALL_KEEP"):
            print("kept", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)


class StagingTest(Workdir):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.prefix = install(os.path.join(cls.tmp, "staging"))
        cls.bindir = os.path.join(cls.prefix, "bin")
        cls.examples = os.path.join(cls.prefix, "share", "doc", "twinsync", "examples")
        cls.units = os.path.join(cls.prefix, "lib", "systemd", "system")

    def test_tree_holds_programs_units_examples_docs(self):
        for daemon, program in PROGRAMS.items():
            self.assertTrue(os.access(os.path.join(self.bindir, program), os.X_OK), program)
            self.assertTrue(os.path.isfile(os.path.join(self.units, program + ".service")))
            self.assertTrue(os.path.isfile(os.path.join(self.examples, daemon + ".ini")))
        for doc in ("README.md", "operations.md", "configuration.md", "reliability.md"):
            self.assertTrue(os.path.isfile(os.path.join(self.prefix, "share", "doc", "twinsync",
                                                        doc)), doc)

    def test_programs_answer_help_and_version(self):
        versions = set()
        for program in PROGRAMS.values():
            path = os.path.join(self.bindir, program)
            shown = harness.run([path, "--help"])
            self.assertIn("usage", shown.stdout.lower(), program)
            self.assertIn("--config", shown.stdout, program)
            versions.add(harness.run([path, "version"]).stdout.split()[-1])
        self.assertEqual(len(versions), 1, f"the three programs disagree on the version: "
                                           f"{versions}")

    def test_examples_list_every_key(self):
        for daemon, program in PROGRAMS.items():
            keys = help_keys(os.path.join(self.bindir, program))
            self.assertGreater(len(keys), 10, f"{program} --help lists too few keys: {keys}")
            shown = ini_lines(os.path.join(self.examples, daemon + ".ini"))
            missing = sorted(f"{s}.{k}" for s, k in keys - set(shown))
            self.assertEqual(missing, [], f"{daemon}.ini does not show these keys of "
                                          f"{program} --help")
            unknown = sorted(f"{s}.{k}" for s, k in set(shown) - keys)
            self.assertEqual(unknown, [], f"{daemon}.ini shows keys {program} does not know")

    def test_units_match_examples(self):
        for daemon, program in PROGRAMS.items():
            unit = unit_settings(os.path.join(self.units, program + ".service"))
            config = f"/etc/twinsync/{daemon}.ini"
            self.assertEqual(unit["ExecStart"], [f"/usr/bin/{program} run --config {config}"])
            for setting in HARDENING:
                key, value = setting.split("=", 1)
                self.assertIn(value, unit.get(key, []), f"{program}.service lacks {setting}")
            state_dir = unit["StateDirectory"][0]
            shown = ini_lines(os.path.join(self.examples, daemon + ".ini"))
            section = "broker" if daemon == "broker" else "node"
            self.assertEqual(shown[(section, "state_dir")].lstrip("#"), "/var/lib/" + state_dir)
            if daemon != "broker":
                secret = shown[("servicenow", "password_file")]
                self.assertTrue(secret.startswith("/etc/twinsync/"), secret)

    def test_units_pass_systemd_analyze_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        # The units name /usr/bin; point them at the staging prefix (a path change only).
        for program in PROGRAMS.values():
            with open(os.path.join(self.units, program + ".service")) as f:
                text = f.read().replace("/usr/bin/", self.bindir + "/")
            copy = harness.write_file(os.path.join(self.tmp, program + ".service"), text, 0o644)
            checked = harness.run(["systemd-analyze", "verify", "--man=no", copy], check=False)
            self.assertEqual((checked.returncode, checked.stderr.strip()), (0, ""), program)
            security = harness.run(["systemd-analyze", "security", "--offline=yes", copy],
                                   check=False)
            lines = security.stdout.strip().splitlines()
            if security.returncode == 0 and lines:
                print(f"{program}.service: {lines[-1].strip()}", file=sys.stderr)

    def operations_doc(self):
        with open(os.path.join(self.prefix, "share", "doc", "twinsync", "operations.md")) as f:
            return f.read()

    def test_documented_alert_rules_load_in_prometheus(self):
        if not shutil.which("promtool"):
            self.skipTest("promtool is not installed")
        blocks = [b for b in re.findall(r"```yaml\n(.*?)```", self.operations_doc(), re.S)
                  if "groups:" in b]
        self.assertEqual(len(blocks), 1, "operations.md should hold one block of alert rules")
        rules = harness.write_file(os.path.join(self.tmp, "rules.yml"), blocks[0], 0o644)
        checked = harness.run(["promtool", "check", "rules", rules], check=False)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        self.assertIn("SUCCESS", checked.stdout)

    def documented_textfile_script(self):
        """The Python part of the textfile-collector script in operations.md."""
        found = re.search(r"python3 -c '\n(.*?)\n' >", self.operations_doc(), re.S)
        self.assertIsNotNone(found, "operations.md lost its textfile-collector script")
        return found.group(1)

    def test_daemons_from_staging_sync_an_incident_each_way(self):
        bins = harness.binaries(bindir=self.bindir)
        poll = {("node", "poll_interval_ms"): "500"}
        dep = harness.Deployment(bins, os.path.join(self.tmp, "run"),
                                 public=("acme", {"alice": ("alice-pw", "Alice Adams")}),
                                 private=("globex", {"bob": ("bob-pw", "Bob Brown")}),
                                 examples=self.examples,
                                 settings={"public": poll, "private": poll})
        os.makedirs(dep.dir, exist_ok=True)
        try:
            dep.start_all()
            conn = dep.connect()
            acme, globex = dep.instances["public"], dep.instances["private"]
            inc = acme.create("alice", short_description="Shipped and working", urgency="1")
            twin = harness.wait_for("the twin on globex", lambda: globex.find(
                "bob", "correlation_id=" + inc["sys_id"]), timeout=30)[0]
            self.assertEqual(twin["short_description"], "Shipped and working")
            self.assertEqual(twin["correlation_display"], inc["number"] + "@acme")
            globex.update("bob", twin["sys_id"], comments="Seen here, thanks")
            harness.wait_for("bob's comment on acme", lambda: [
                c for c in acme.comments("alice", inc["sys_id"])
                if c["value"] == "[globex] bob wrote:\nSeen here, thanks"], timeout=30)
            self.assertEqual(dep.cli_json("private", "connection", "show", conn)["status"],
                             "active")
            status = dep.cli("public", "status", "--json").stdout
            figures = harness.run([sys.executable, "-c", self.documented_textfile_script()],
                                  stdin=status).stdout
            self.assertIn("twinsync_node_link_ready 1\n", figures)
            self.assertIn(f'twinsync_node_connection_active{{connection="{conn}"}} 1\n', figures)
            self.assertIn(f'twinsync_node_twins{{connection="{conn}"}} 1\n', figures)
        except harness.HarnessError as e:
            tails = "".join(f"\n--- {d.name}.log\n{d.tail()}" for d in dep.daemons.values())
            self.fail(f"{e}{tails}")
        finally:
            statuses = dep.stop_all()
        self.assertEqual(statuses, {"broker": 0, "public": 0, "private": 0},
                         "exit status of each daemon on SIGTERM")


class PackageTest(Workdir):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not (shutil.which("cpack") and shutil.which("dpkg-deb")):
            raise unittest.SkipTest("cpack or dpkg-deb is not installed")
        harness.run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake"),
                     "-B", cls.tmp], timeout=300)
        debs = glob.glob(os.path.join(cls.tmp, "*.deb"))
        assert len(debs) == 1, debs
        cls.deb = debs[0]

    def test_package_lists_programs_units_examples(self):
        listing = harness.run(["dpkg-deb", "-c", self.deb]).stdout
        for daemon, program in PROGRAMS.items():
            self.assertRegex(listing, rf"-rwxr-xr-x .* \./usr/bin/{program}\n")
            self.assertIn(f"./usr/lib/systemd/system/{program}.service\n", listing)
            self.assertIn(f"./usr/share/doc/twinsync/examples/{daemon}.ini\n", listing)
        self.assertIn("./usr/share/doc/twinsync/operations.md\n", listing)

    def test_package_control_creates_the_user(self):
        fields = harness.run(["dpkg-deb", "-f", self.deb, "Package", "Depends"]).stdout
        self.assertIn("Package: twinsync", fields)
        self.assertIn("adduser", fields)
        control = os.path.join(self.tmp, "control")
        harness.run(["dpkg-deb", "-e", self.deb, control])
        postinst = os.path.join(control, "postinst")
        self.assertTrue(os.access(postinst, os.X_OK), "postinst is not executable")
        harness.run(["sh", "-n", postinst])
        with open(postinst) as f:
            self.assertIn("adduser --system", f.read())

    def test_packaged_programs_run(self):
        root = os.path.join(self.tmp, "root")
        harness.run(["dpkg-deb", "-x", self.deb, root])
        for program in PROGRAMS.values():
            shown = harness.run([os.path.join(root, "usr", "bin", program), "version"])
            self.assertRegex(shown.stdout, r"\d+\.\d+\.\d+", program)


class ConfigErrorTest(Workdir):
    """Each case writes a config from the installed example with one thing wrong, runs the daemon
    and expects: exit status != 0 within 15 s, exactly one line on stderr, naming the key and the
    file (the config file, or for secret files the secret file). A broker that does not answer
    (down, or its name does not resolve yet) is not a configuration error for certain: the node
    may instead keep running, provided it logs a warning naming the endpoint it dials. Every
    case is tried and every failure reported together."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        prefix = install(os.path.join(cls.tmp, "staging"))
        cls.bins = harness.binaries(bindir=os.path.join(prefix, "bin"))
        cls.examples = os.path.join(prefix, "share", "doc", "twinsync", "examples")
        cls.secret = harness.write_file(os.path.join(cls.tmp, "good.password"), "pw\n")
        cls.open_secret = harness.write_file(os.path.join(cls.tmp, "open.password"), "pw\n",
                                             0o644)
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            cls.dead_port = s.getsockname()[1]

    def config(self, daemon, name, changes, drop=()):
        """The installed example with working paths, then `changes` ({(section, key): value})
        applied and the keys in `drop` removed; returns its path."""
        with open(os.path.join(self.examples, daemon + ".ini")) as f:
            text = f.read()
        state = os.path.join(self.tmp, name + "-state")
        base = ({("broker", "state_dir"): state, ("broker", "metrics_port"): "0",
                 ("broker", "endpoint"): "tcp://127.0.0.1:%d" % self.dead_port}
                if daemon == "broker" else
                {("node", "state_dir"): state, ("servicenow", "url"): "http://127.0.0.1:9",
                 ("servicenow", "password_file"): self.secret})
        if daemon == "public":
            base[("broker", "endpoint")] = "tcp://127.0.0.1:%d" % self.dead_port
        for (section, key), value in {**base, **changes}.items():
            text = harness.ini_set(text, section, key, value)
        for section, key in drop:
            text = re.sub(rf"(?m)^{key}\s*=.*\n", "", text)
        return harness.write_file(os.path.join(self.tmp, name + ".ini"), text)

    def attempt(self, daemon, config, must_name, may_run=None):
        """Runs the daemon; returns a description of what is wrong, or None when it behaved.
        With may_run (a text), a daemon still running after 15 s is also right if it has logged
        a warn or error line holding that text (a broker that is down may come back: the node
        waits for it, saying where it dials)."""
        proc = subprocess.Popen([self.bins[daemon], "run", "--config", config],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            warned = [line for line in err.splitlines()
                      if re.search(r"level=(warn|error)", line) and may_run and may_run in line]
            if warned:
                return None
            return (f"still running after 15 s without exiting"
                    + (f" or a warn line naming {may_run!r}" if may_run else "")
                    + f"; stderr: {err.strip()!r}")
        lines = err.strip().splitlines()
        problems = []
        if proc.returncode == 0:
            problems.append("exit status 0")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr")
        missing = [word for word in must_name if not lines or word not in lines[-1]]
        if missing:
            problems.append(f"the line does not name {missing}")
        if not problems:
            return None
        return f"{'; '.join(problems)} (status {proc.returncode}); stderr: {err.strip()!r}"

    def test_each_error_is_one_line_naming_key_and_file(self):
        node_cases = [
            ("missing key", "public", {}, [("servicenow", "user")], ["servicenow.user", "{cfg}"]),
            ("missing key (private)", "private", {}, [("node", "name")], ["node.name", "{cfg}"]),
            ("unreadable secret file", "public",
             {("servicenow", "password_file"): os.path.join(self.tmp, "absent.password")}, [],
             ["password_file", os.path.join(self.tmp, "absent.password")]),
            ("secret file is a directory", "private",
             {("servicenow", "password_file"): self.tmp}, [], ["password_file", self.tmp]),
            ("world-readable secret file", "public",
             {("servicenow", "password_file"): self.open_secret}, [],
             ["password_file", self.open_secret]),
            ("bad URL", "public", {("servicenow", "url"): "htps:/acme service-now.com"}, [],
             ["url", "{cfg}"]),
            ("bad URL (private)", "private", {("servicenow", "url"): "acme"}, [],
             ["url", "{cfg}"]),
            ("broker endpoint not an endpoint", "public", {("broker", "endpoint"): "broker:5570"},
             [], ["endpoint", "{cfg}"]),
            ("broker host unknown", "public",
             {("broker", "endpoint"): "tcp://broker.invalid:5570"}, [], ["endpoint", "{cfg}"],
             "tcp://broker.invalid:5570"),
            ("broker not answering", "public", {}, [], ["endpoint", "{cfg}"],
             "tcp://127.0.0.1:%d" % self.dead_port),
            ("bad broker key", "public", {("broker", "public_key"): "not-a-key"}, [],
             ["public_key", "{cfg}"]),
        ]
        broker_cases = [
            ("unknown key", "broker", {}, [], ["colour", "{cfg}"]),
            ("bad value", "broker", {("broker", "metrics_port"): "99999"}, [],
             ["metrics_port", "{cfg}"]),
            ("bad public key", "broker", {("broker", "public_keys"): "abc"}, [],
             ["public_keys", "{cfg}"]),
            ("endpoint cannot be bound", "broker", {("broker", "endpoint"): "tcp://192.0.2.1:5570"},
             [], ["endpoint", "{cfg}"]),
            ("state_dir cannot be made", "broker", {("broker", "state_dir"): "/proc/twinsync"},
             [], ["state_dir", "{cfg}"]),
        ]
        failures = []
        for n, (case, daemon, changes, drop, must_name, *may_run) in enumerate(
                node_cases + broker_cases):
            cfg = self.config(daemon, f"case{n}", changes, drop)
            if case == "unknown key":
                with open(cfg, "a") as f:
                    f.write("colour = blue\n")
            wanted = [w.replace("{cfg}", cfg) for w in must_name]
            problem = self.attempt(daemon, cfg, wanted, *may_run)
            if problem:
                failures.append(f"twinsync-{daemon}, {case}: {problem}")
        missing = os.path.join(self.tmp, "absent.ini")
        for daemon in DAEMONS:
            problem = self.attempt(daemon, missing, [missing])
            if problem:
                failures.append(f"twinsync-{daemon}, config file missing: {problem}")
        self.assertEqual(failures, [], "\n" + "\n".join(failures))


class CommandLineTest(Workdir):
    """One command-line style and one set of exit statuses for the three programs (issue 10):
    0 success, 1 failure, 2 bad command line, 78 bad configuration; one line on stderr."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bins = harness.binaries(build=BUILD)
        cls.env = {k: v for k, v in os.environ.items() if k != "TWINSYNC_CONFIG"}

    def cli(self, role, *args, stdin=None):
        return subprocess.run([self.bins[role], *args], capture_output=True, text=True,
                              timeout=60, input=stdin, env=self.env)

    def commands(self, role):
        """The command words `PROGRAM --help` lists ([["run"], ["connection", "list"], ...])."""
        text = self.cli(role, "--help").stdout
        section = text.split("commands:\n", 1)[1].split("\n\n", 1)[0]
        found = []
        for line in section.splitlines():
            if line.startswith("   "):  # the help of a long entry, on its own line
                continue
            usage = re.split(r"\s{2,}", line.strip())[0].split()
            words = []
            for token in usage:
                if not re.fullmatch(r"[a-z]+", token):
                    break
                words.append(token)
            found.append(words)
        return found

    def expect(self, status, role, args, words, state=None):
        """Runs PROGRAM args; returns a description of what is wrong, or None: the status, one
        line on stderr holding every one of words, and state (a directory) not made."""
        out = self.cli(role, *args)
        lines = out.stderr.strip().splitlines()
        problems = []
        if out.returncode != status:
            problems.append(f"status {out.returncode}, not {status}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr")
        missing = [w for w in words if not lines or w not in lines[-1]]
        if missing:
            problems.append(f"the line does not name {missing}")
        if state and os.path.exists(state):
            problems.append(f"{state} was made")
            shutil.rmtree(state, ignore_errors=True)
        if problems:
            return f"{PROGRAMS[role]} {' '.join(args)}: {'; '.join(problems)}: {out.stderr!r}"
        return None

    def test_every_command_answers_help(self):
        failures = []
        for role, program in PROGRAMS.items():
            listed = self.commands(role)
            self.assertGreater(len(listed), 4, f"{program} --help lists too few commands")
            for words in listed:
                for args in ([*words, "--help"], [*words, "-h"], ["help", *words]):
                    out = self.cli(role, *args)
                    if (out.returncode, out.stderr) != (0, "") or not out.stdout.startswith(
                            f"usage: {program} {' '.join(words)}"):
                        failures.append(f"{program} {' '.join(args)}: status {out.returncode}, "
                                        f"{out.stdout[:60]!r} {out.stderr!r}")
        self.assertIn(["sync", "start"], self.commands("public"))
        self.assertIn(["connection", "initiate"], self.commands("public"))
        self.assertNotIn(["connection", "initiate"], self.commands("private"))
        self.assertIn(["connection", "accept"], self.commands("private"))
        self.assertEqual(failures, [], "\n" + "\n".join(failures))

    def test_bad_command_lines_exit_2(self):
        state = os.path.join(self.tmp, "never-made")
        node = ["--node.state_dir", state]
        broker = ["--broker.state_dir", state, "--broker.metrics_port", "0"]
        cases = [
            # numbers, options and configuration flags alike
            ("public", ["connection", "show", "X", "--wait", "abc", *node], ["--wait", "'abc'"]),
            ("public", ["connection", "show", "X", "--wait=12x", *node], ["--wait", "'12x'"]),
            ("private", ["errors", "retry", "1", "--wait", "-1", *node], ["--wait", "-1"]),
            ("private", ["errors", "retry", "1", "--wait", "", *node], ["--wait", "''"]),
            ("private", ["errors", "retry", "abc", *node], ["'abc'", "errors retry --help"]),
            ("private", ["errors", "retry", "0", *node], ["error id", "0"]),
            ("public", ["status", "--node.lookback_s", "abc", *node], ["--node.lookback_s"]),
            ("public", ["status", "--node.poll_interval_ms=2sec", *node],
             ["--node.poll_interval_ms", "2sec"]),
            ("public", ["status", "--servicenow.auth", "ldap", *node], ["--servicenow.auth"]),
            ("broker", ["stats", "--interval", "abc", *broker], ["--interval", "'abc'"]),
            ("broker", ["stats", "--interval", "0", *broker], ["--interval", "out of range"]),
            ("broker", ["stats", "--interval", "-5", *broker], ["--interval", "-5"]),
            ("broker", ["run", "--broker.max_frame", "12x", *broker], ["--broker.max_frame"]),
            ("broker", ["key", "--broker.credit", "", *broker], ["--broker.credit"]),
            # unknown, misspelt, misplaced
            ("public", ["--colour", "blue", "status", *node], ["unknown option --colour"]),
            ("public", ["bogus", *node], ["unknown command 'bogus'"]),
            ("private", ["connection", "initiate", "--name", "x", *node], ["unknown command"]),
            ("public", ["connection", "accept", "tsi1.x", *node], ["unknown command"]),
            ("private", ["connection", "show", "X", "--code", *node], ["--code does not apply"]),
            ("public", ["connection", "list", "--trigger", "x", *node],
             ["--trigger does not apply to connection list"]),
            ("public", ["connection", "show", *node], ["connection show takes CONN"]),
            ("public", ["twins", "a", "b", *node], ["twins takes CONN"]),
            ("public", ["connection", "initiate", "--mode", "full", *node], ["--mode", "basic"]),
            ("public", ["connection", "initiate", *node], ["--name"]),
            ("public", ["status", "--wai", "3", *node], ["give the whole name, --wait"]),
            ("public", ["status", *node, "--wait"], ["--wait needs a value"]),
            ("broker", ["run", "--max-frame", "4096", *broker],
             ["did you mean --broker.max_frame?"]),
            ("broker", ["run", "--state-dir", state], ["did you mean --broker.state_dir?"]),
            ("broker", ["key", "extra", *broker], ["key takes no arguments"]),
            ("broker", ["run", "--watch", *broker], ["--watch does not apply to run"]),
            ("broker", ["bogus"], ["unknown command 'bogus'"]),
        ]
        failures = [f for role, args, words in cases
                    if (f := self.expect(2, role, args, words, state))]
        for role in DAEMONS:  # no command at all: the usage on stderr
            out = self.cli(role)
            if out.returncode != 2 or "usage:" not in out.stderr:
                failures.append(f"{PROGRAMS[role]} without a command: status {out.returncode}")
        self.assertEqual(failures, [], "\n" + "\n".join(failures))

    def test_configuration_errors_exit_78(self):
        state = os.path.join(self.tmp, "state78")
        unknown = harness.write_file(os.path.join(self.tmp, "unknown.ini"),
                                     "[node]\nname = acme\ncolour = blue\n")
        section = harness.write_file(os.path.join(self.tmp, "section.ini"),
                                     "[brokr]\nendpoint = tcp://127.0.0.1:1\n")
        value = harness.write_file(os.path.join(self.tmp, "value.ini"),
                                   "[broker]\n\nmetrics_port = 99999\n")
        absent = os.path.join(self.tmp, "absent.ini")
        cases = [
            ("public", ["status", "--config", unknown], [unknown + ":3:", "node.colour"]),
            ("private", ["connection", "list", "--config", absent], [absent]),
            ("public", ["status"], ["missing key node.state_dir"]),
            ("public", ["connection", "initiate", "--name", "x", "--node.state_dir", state],
             ["missing key"]),
            ("private", ["run", "--node.state_dir", state], ["missing key node.name"]),
            ("broker", ["key", "--config", value], [value + ":3:", "broker.metrics_port"]),
            ("broker", ["run", "--config", section], [section + ":2:", "unknown section [brokr]"]),
        ]
        failures = [f for role, args, words in cases
                    if (f := self.expect(78, role, args, words, state))]
        self.assertEqual(failures, [], "\n" + "\n".join(failures))

    def test_failures_exit_1_and_success_0(self):
        state = os.path.join(self.tmp, "state1")
        node = ["--node.state_dir", state]
        failures = [f for role, args, words in [
            ("public", ["connection", "show", "nope", *node], ["no connection named nope"]),
            ("private", ["errors", "retry", "99", "--wait", "0", *node], ["no error 99"]),
            ("private", ["connection", "accept", "not-a-code", *node], ["invitation"]),
            ("public", ["sync", "start", "INC0010001", *node], ["0 connections"]),
        ] if (f := self.expect(1, role, args, words))]
        self.assertEqual(failures, [], "\n" + "\n".join(failures))
        out = self.cli("public", "connection", "list", "--json", *node)
        self.assertEqual((out.returncode, out.stderr), (0, ""))
        self.assertEqual(json.loads(out.stdout), {"connections": []})
        for role in DAEMONS:
            out = self.cli(role, "--version")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout.split()[0], PROGRAMS[role])


class DocsTest(unittest.TestCase):
    """docs/configuration.md is written by hand; the programs' tables are the truth. Every key
    --help prints is in the page's tables and every key there is in --help, with the same
    default wherever the page gives one in backquotes."""

    def documented(self, part, section):
        """{(section, key): default cell} of the key tables in part of the page."""
        found = {}
        for line in part.splitlines():
            if not line.startswith("| `"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            for name in re.findall(r"`([a-z_.]+)`", cells[0]):
                key = (section, name) if section else tuple(name.split(".", 1))
                found[key] = cells[1]
        return found

    def test_configuration_md_lists_the_keys_of_help(self):
        if not BUILD:
            raise unittest.SkipTest("TWINSYNC_BUILD_DIR is not set (CTest sets it)")
        bins = harness.binaries(build=BUILD)
        with open(os.path.join(SOURCE, "docs", "configuration.md")) as f:
            text = f.read()
        broker = text.split("\n## twinsync-broker", 1)[1].split("\n## ", 1)[0]
        nodes = text.split("\n## twinsync-public / twinsync-private", 1)[1].split("\n## ", 1)[0]
        pages = {"broker": self.documented(broker, "broker"), "public": self.documented(nodes, None),
                 "private": self.documented(nodes, None)}
        problems = []
        for role, program in PROGRAMS.items():
            shown, page = help_defaults(bins[role]), pages[role]
            problems += [f"{program} --help has {s}.{k}, configuration.md does not"
                         for s, k in sorted(set(shown) - set(page))]
            if role != "private":  # the private node's help leaves out invite_ttl_s
                problems += [f"configuration.md has {s}.{k}, {program} --help does not"
                             for s, k in sorted(set(page) - set(shown))]
            for key in sorted(set(shown) & set(page)):
                literal = re.fullmatch(r"`([^`]*)`", page[key])
                written = literal.group(1) if literal else None
                if written != shown[key]:
                    problems.append(f"{'.'.join(key)}: default {shown[key]!r} in {program} "
                                    f"--help, {page[key]!r} in configuration.md")
        self.assertEqual(problems, [], "\n" + "\n".join(problems))


if __name__ == "__main__":
    unittest.main()
