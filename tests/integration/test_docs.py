#!/usr/bin/env python3
"""The documentation agrees with the code: --help and echo-mpserv(8), the
configuration keys and defaults and echo-mpserv.conf(5), the MESSAGE_IDs in
src/log.h, the man page and the journal catalog, the modules of src/ and
README's layout. The man pages render lint-clean and journalctl reads the
catalog."""
import os
import re
import subprocess
import tempfile

from harness import DAEMON, Skip, main

ROOT = os.environ.get("ECHO_MPSERV_SOURCE_ROOT", "")
MAN_DIR = os.environ.get("ECHO_MPSERV_MAN_DIR", "")
CATALOG = os.path.join(ROOT, "systemd", "echo-mpserv.catalog")
PAGES = ["echo-mpserv.8", "echo-mpserv.conf.5", "echo-mpserv-generator.8"]


def rendered(page):
    path = os.path.join(MAN_DIR, page)
    if not os.path.exists(path):
        raise Skip("man pages not built (scdoc missing)")
    env = dict(os.environ, MANWIDTH="200")
    out = subprocess.run(["mandoc", "-T", "utf8", "-O", "width=200", path], capture_output=True,
                         text=True, check=True, env=env).stdout
    return re.sub(r".\x08", "", out)  # bold and underline are overstrikes


def section(text, name):
    m = re.search(rf"^{name}\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)", text, re.S | re.M)
    assert m, f"no {name} section"
    return m.group(1)


def test_man_pages_lint_clean():
    for page in PAGES:
        path = os.path.join(MAN_DIR, page)
        if not os.path.exists(path):
            raise Skip("man pages not built (scdoc missing)")
        groff = subprocess.run(["groff", "-ww", "-z", "-man", path], capture_output=True, text=True)
        assert groff.returncode == 0 and groff.stderr == "", (page, groff.stderr)
        mandoc = subprocess.run(["mandoc", "-T", "lint", "-W", "error", path], capture_output=True, text=True)
        assert mandoc.returncode == 0 and mandoc.stdout + mandoc.stderr == "", (page, mandoc.stdout)


def test_help_and_man_page_agree():
    help_text = subprocess.run([DAEMON, "--help"], capture_output=True, text=True, check=True).stdout
    man = rendered("echo-mpserv.8")
    options = section(man, "OPTIONS")
    help_opts = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", help_text.split("Exit status")[0]))
    man_opts = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", options))
    assert help_opts == man_opts, (sorted(help_opts ^ man_opts), help_opts, man_opts)
    # Exit statuses: the summary in --help and the man page's list.
    statuses = dict(re.findall(r"(\d+) ([a-z][a-z ]+?)(?:,|\.)", help_text.split("Exit status:")[1]))
    exits = section(man, "EXIT STATUS")
    for code, meaning in statuses.items():
        m = re.search(rf"^\s+{code}\n\s+(.*)$", exits, re.M)
        assert m, (code, exits)
        assert meaning.split()[0].lower() in m.group(1).lower(), (code, meaning, m.group(1))


def test_config_keys_and_defaults_documented():
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as empty:
        dump = subprocess.run([DAEMON, "-c", empty.name, "--dump-config"], capture_output=True,
                              text=True, check=True).stdout
    defaults = dict(re.findall(r"^(\w+) = (.*);$", dump, re.M))
    man = rendered("echo-mpserv.conf.5")
    keys = section(man, "KEYS")
    documented = re.findall(r"^\s{5,8}(\w+) = ", keys, re.M)
    assert documented == list(defaults), (documented, list(defaults))
    entries = re.split(r"^\s{5,8}(?=\w+ = )", keys, flags=re.M)[1:]
    for entry in entries:
        key = entry.split()[0]
        m = re.search(r"default\s+(.+?)(?:\.(?:\s|$)|;|\s\()", " ".join(entry.split()), re.I)
        assert m, f"{key}: no default in the man page"
        assert m.group(1).strip() == defaults[key], (key, m.group(1), defaults[key])


def test_message_ids_everywhere():
    with open(os.path.join(ROOT, "src", "log.h")) as f:
        ids = set(re.findall(r'#define MSGID_\w+\s+"([0-9a-f]{32})"', f.read()))
    with open(CATALOG) as f:
        catalog = set(re.findall(r"^-- ([0-9a-f]{32})$", f.read(), re.M))
    man = rendered("echo-mpserv.8")
    in_man = set(re.findall(r"\b([0-9a-f]{32})\b", section(man, "LOGGING")))
    assert len(ids) == 18 and ids == catalog == in_man, (ids ^ catalog, ids ^ in_man)


def test_journalctl_reads_the_catalog():
    with tempfile.TemporaryDirectory() as root:
        d = os.path.join(root, "usr/lib/systemd/catalog")
        os.makedirs(d)
        with open(CATALOG) as src, open(os.path.join(d, "echo-mpserv.catalog"), "w") as dst:
            dst.write(src.read())
        subprocess.run(["journalctl", f"--root={root}", "--update-catalog"], check=True)
        listed = subprocess.run(["journalctl", f"--root={root}", "--list-catalog"], capture_output=True,
                                text=True, check=True).stdout.splitlines()
    assert len(listed) == 18 and all(" echo-mpserv: echo-mpserv " in line for line in listed), listed


# The selector for every connection record: a worker whose daemon left
# (the hand-off) writes its record as a plain line, without MESSAGE_ID.
ALL_RECORDS = "journalctl -u echo-mpserv -g '^connection .* closed: '"


def test_every_connection_record_has_a_documented_selector():
    """The catalog, echo-mpserv(8) LOGGING and the README give one selector
    that finds a worker's own record too; its pattern matches the message
    every connection record has (src/session-log.c) and nothing else the
    daemon logs. tests/e2e/test_package.py runs it on a worker's record."""
    with open(CATALOG) as f:
        catalog = f.read()
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    logging = " ".join(section(rendered("echo-mpserv.8"), "LOGGING").split())
    record = catalog.split("-- f0e38bcc52874ef98e57dc873ff05f03")[1].split("\n-- ")[0]
    for where, text in (("catalog entry", record), ("echo-mpserv(8) LOGGING", logging), ("README", readme)):
        assert ALL_RECORDS in text, f"{where} does not give {ALL_RECORDS}"
    pattern = re.compile(re.search(r"-g '(.*)'", ALL_RECORDS).group(1))
    sources = {}
    for name in os.listdir(os.path.join(ROOT, "src")):
        if name.endswith(".c"):
            with open(os.path.join(ROOT, "src", name)) as f:
                sources[name] = f.read()
    formats = [(name, fmt) for name, text in sources.items()
               for fmt in re.findall(r'"((?:[^"\\\n]|\\.)*)"', text)]
    matching = [(n, f) for n, f in formats if pattern.search(f.replace("%s", "x"))]
    assert [n for n, _ in matching] == ["session-log.c"], matching
    with open(os.path.join(ROOT, "tests", "e2e", "test_package.py")) as f:
        assert f'ALL_RECORDS = "{pattern.pattern}"' in f.read()


def test_hand_off_needs_killmode_process_documented():
    """What KillMode=mixed or control-group does to the hand-off, and the two
    lines systemd logs per handed-over worker, in echo-mpserv(8) and in the
    unit's comment beside KillMode=process."""
    man = " ".join(section(rendered("echo-mpserv.8"), "SYSTEMD").split())
    for text in ("KillMode=process", "KillMode=mixed", "KillMode=control-group", "no connection record",
                 "remains running after unit stopped", "Found left-over process", "max_clients"):
        assert text in man, text
    with open(os.path.join(ROOT, "systemd", "echo-mpserv.service.in")) as f:
        unit = f.read()
    comment = " ".join(unit.split("KillMode=process\n")[0].rsplit("\n\n", 1)[1].replace("#", "").split())
    for text in ("mixed", "control-group", "no record", "remains running after unit stopped",
                 "Found left-over process", "max_clients"):
        assert text in comment, text


def test_readme_layout_names_every_module():
    with open(os.path.join(ROOT, "README.md")) as f:
        layout = f.read().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    src = os.listdir(os.path.join(ROOT, "src"))
    files = [n for n in src if n.endswith(".c")]
    # Header-only helpers; a header named MODULE-something.h is its module's.
    files += [n for n in src if n.endswith(".h") and n[:-2] + ".c" not in src and "-" not in n]
    missing = [n for n in sorted(files) if f"`{n}`" not in layout]
    assert not missing, f"README's layout does not name {missing}"


if __name__ == "__main__":
    main([test_man_pages_lint_clean, test_help_and_man_page_agree, test_config_keys_and_defaults_documented,
          test_message_ids_everywhere, test_journalctl_reads_the_catalog,
          test_every_connection_record_has_a_documented_selector, test_hand_off_needs_killmode_process_documented,
          test_readme_layout_names_every_module])
