#!/usr/bin/env python3
"""The command line and configuration errors, run against the binary: a
table of inputs with their exit codes and messages."""
import os
import re
import signal
import socket
import subprocess
import tempfile

from harness import (DAEMON, SLOW, WRAPPER, Daemon, Skip, echo_once, free_port, main, public_copy_of_daemon,
                     scrubbed_env)

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_SOCKET, EXIT_CONFIG = 0, 1, 64, 69, 78  # sysexits.h


def run(args, config=None, timeout=30, prefix=(), env=None):
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        binary = public_copy_of_daemon(tmp) if prefix else DAEMON
        path = os.path.join(tmp, "c.conf")
        if config is not None:
            with open(path, "wb") as f:
                f.write(config if isinstance(config, bytes) else config.encode())
        args = [a.replace("@CONF@", path) for a in args]
        env = dict(scrubbed_env(), **(env or {}))
        p = subprocess.run(list(prefix) + WRAPPER + [binary] + args, capture_output=True, text=True,
                           timeout=timeout * SLOW, env=env, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr


USAGE_ROWS = [
    (["--bogus"], "unknown option '--bogus'"),
    (["-x"], "unknown option '-x'"),
    (["-p", "0"], "invalid port '0'"),
    (["-p", "70000"], "invalid port '70000'"),
    (["--port", "http"], "invalid port 'http'"),
    (["-c"], "option '-c' needs an argument"),
    (["--log-level", "chatty"], "invalid log level 'chatty'"),
    (["stray"], "unexpected argument 'stray'"),
    (["--check-config", "--dump-config"], "exclude each other"),
    (["--accept-yes"], "--accept-yes goes with --check-config"),
]

CONFIG_ROWS = [
    ("port = 0;\n", "c.conf:1: port = 0 is out of range (1..65535)"),
    ("\nmax_clients = 100000;\n", "c.conf:2: max_clients = 100000 is out of range (1..16384)"),
    ("max_session_bytes = 4294967297;\n", "c.conf:1: integer 4294967297 does not fit in 32 bits"),
    ("max_session_bytes = 99999999999999999999L;\n", "c.conf:1: integer 99999999999999999999L does not fit in 64 bits"),
    ("idle_timeout = -5;\n", "c.conf:1: idle_timeout = -5 s is out of range"),
    ("idle_timeout = \"5s\";\n", "c.conf:1: idle_timeout must be a number of seconds, not a string"),
    ("colour = \"blue\";\n", "c.conf:1: unknown key 'colour'"),
    ("listen = [ \"localhost\" ];\n", "c.conf:1: listen: \"localhost\" is not a numeric IPv4 or IPv6 address"),
    ("log_level = \"verbose\";\n", "c.conf:1: log_level = \"verbose\" is not one of"),
    ("port = 7\nbacklog = = 5;\n", "c.conf:2: syntax error"),
    ("@include \"/etc/passwd\"\n", "c.conf:1: @include is not supported"),
    (b"port = 7;\x00\n", "c.conf:1: contains a NUL byte"),
    ("#" * 70000 + "\n", "c.conf: 70001 bytes is more than the 65536-byte limit; not parsed"),
    # Text libconfig 1.5 would skip, or read otherwise than it is written.
    ("port = 7;\n/* keep this loopback-only *\nlisten = [ \"127.0.0.1\" ];\ndeny = [ \"0.0.0.0/0\", \"::/0\" ];\n",
     "c.conf:2: a /* comment that is never closed; it would hide the rest of the file"),
    ("port = 7;\n\"loopback only\nbacklog = 5;\n", "c.conf:2: a string that is never closed"),
    ("port = 7; # loopback only\rlisten = [ \"127.0.0.1\" ];\n", "c.conf:1: a carriage return that does not end a line"),
    (b"\xef\xbb\xbfport = 7;\n", "c.conf:1: the file starts with a byte order mark"),
    ("log_hash_key = \"\\x00123456789abcdefgh\";\n", "c.conf:1: a string cannot hold a NUL byte"),
    # No value holds a control character, written or escaped.
    ("port = 7;\nlog_level = \"info\\t\";\n", "c.conf:2: a string cannot hold a control character (escaped as \\t)"),
    ("deny = [ \"10.0.0.0/8\x1b\" ];\n", "c.conf:1: a string cannot hold a control character (byte 0x1b)"),
    ("listen = [ \"::\" \"1\" ];\n", "c.conf:1: two strings with no comma between them would be read as one"),
    ("port = 7backlog = 5;\n", "c.conf:1: 'backlog' is read as a setting where the text does not clearly start one"),
    ("port = 7;\nport = 8;\n", "c.conf:2: duplicate setting 'port' (first set on line 1)"),
    ("port = 7;\nbacklog = 5;\ngarbage\n", "c.conf:3: syntax error at the end of the file"),
    # A bare word where a string goes: named, not just a syntax error.
    ("port = 7;\nlog_level = info;\n",
     'c.conf:2: log_level = info: a string value must be in double quotes; write log_level = "info";'),
    ('deny = [ "192.0.2.0/24", localhost ];\n', 'c.conf:1: deny: list entry localhost is not quoted; write it as '
     '"localhost"'),
    # An address or prefix written unquoted: named with its key, not a
    # syntax error nor a "mismatched element type in array".
    ('deny = [ 192.0.2.1 ];\n', 'c.conf:1: deny: list entry 192.0.2.1 is not quoted; an address or prefix must be '
     'in double quotes: write it as "192.0.2.1"'),
    ('allow = [ 2001:db8::/32 ];\n', 'c.conf:1: allow: list entry 2001:db8::/32 is not quoted'),
    ('listen = [ 127.0.0.1 ];\n', 'c.conf:1: listen: list entry 127.0.0.1 is not quoted'),
    ('source_limits_exempt = [ ::1 ];\n', 'c.conf:1: source_limits_exempt: list entry ::1 is not quoted'),
    ('deny = [ "192.0.2.1",\n  198.51.100.0/24 ];\n', 'c.conf:2: deny: list entry 198.51.100.0/24 is not quoted'),
    ('allow = [ /* v6 */ fe80::1 ];\n', 'c.conf:1: allow: list entry fe80::1 is not quoted'),
]


def test_usage_errors():
    for args, message in USAGE_ROWS:
        code, out, err = run(args)
        assert code == EXIT_USAGE, (args, code, err)
        assert message in err and "Usage: echo-mpserv" in err, (args, err)
        assert out == "", (args, out)


def test_config_errors():
    for text, message in CONFIG_ROWS:
        for mode in (["--check-config"], []):
            code, out, err = run(["-c", "@CONF@"] + mode, config=text)
            assert code == EXIT_CONFIG, (text[:40], mode, code, err)
            assert message in err, (text[:40], mode, err)
            # One line a problem: no blank line inside or at the end.
            assert err.endswith("\n") and "\n\n" not in err and not err.startswith("\n"), (text[:40], mode, err)


def test_settings_cannot_hide_in_a_multiline_string():
    """A string may span lines in libconfig: settings written on the lines
    inside it would read as settings and be part of the value (here the
    key). A string that runs past its line is refused at the line where it
    starts, in every string value."""
    text = 'port = 7;\nlog_hash_key = "abcdefghijklmnop\nmax_clients_per_source = 4;\nsource_rate = 1;\n";\n'
    for mode in (["--check-config"], ["--dump-config"], []):
        code, out, err = run(["-c", "@CONF@"] + mode, config=text)
        assert code == EXIT_CONFIG, (mode, code, out, err)
        assert "c.conf:2: a string cannot run past the end of its line" in err, (mode, err)
        assert "max_clients_per_source" not in out, out
    code, _, err = run(["-c", "@CONF@", "--check-config"], config='listen = [ "::1",\n"127.0.0.1\n" ];\n')
    assert code == EXIT_CONFIG and "c.conf:2: a string cannot run past the end of its line" in err, err


def test_port_option_without_config_file():
    if os.path.exists("/etc/echo-mpserv/echo-mpserv.conf"):
        raise Skip("the default configuration file exists here")
    code, out, err = run(["--dump-config", "-p", "7000"])
    assert code == EXIT_OK and "port = 7000;" in out, (code, out, err)


def run_on_default_path(conf, args):
    p = subprocess.run(conf.prefix() + [DAEMON] + args, capture_output=True, text=True, timeout=60, env=scrubbed_env(),
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def test_check_config_says_when_no_file_was_read():
    """No -c and nothing at the default path: --check-config says that no
    file was read, not a bare "configuration OK" (exit 0 all the same)."""
    from harness import DefaultConfigDir
    with DefaultConfigDir() as conf:
        code, out, err = run_on_default_path(conf, ["--check-config"])
        assert code == EXIT_OK, (code, out, err)
        assert out == "no configuration file at /etc/echo-mpserv/echo-mpserv.conf; the defaults are OK\n", out
        conf.write("port = 7777;\n")
        assert run_on_default_path(conf, ["--check-config"])[:2] == (EXIT_OK, "configuration OK\n")


def test_dangling_symlink_at_the_default_path_is_an_error():
    """A symbolic link at the default path to a file that does not exist is
    no "missing file, use the defaults": someone meant it to be the
    configuration."""
    from harness import DefaultConfigDir
    with DefaultConfigDir() as conf:
        os.symlink("/etc/echo-mpserv/echo-mpserv.conf.new", conf.path)
        want = "/etc/echo-mpserv/echo-mpserv.conf: a symbolic link to a file that does not exist"
        for args in (["--check-config"], ["--dump-config"], ["-p", str(free_port())]):
            code, out, err = run_on_default_path(conf, args)
            assert code == EXIT_CONFIG, (args, code, out, err)
            assert want in err, (args, err)


def test_missing_given_config_is_an_error():
    code, _, err = run(["-c", "/nonexistent/x.conf", "--check-config"])
    assert code == EXIT_CONFIG and "/nonexistent/x.conf: No such file or directory" in err, err


def test_check_config_ok_and_help_version():
    code, out, _ = run(["-c", "@CONF@", "--check-config"], config="port = 7777;\n")
    assert (code, out) == (EXIT_OK, "configuration OK\n")
    code, out, _ = run(["--help"])
    assert code == EXIT_OK and out.startswith("Usage: echo-mpserv")
    code, out, _ = run(["-V"])
    assert code == EXIT_OK and out.startswith("echo-mpserv ")


def test_dump_config_round_trip():
    code, dumped, _ = run(["-c", "@CONF@", "--dump-config", "-p", "7000"],
                          config='idle_timeout = 1.5; listen = [ "127.0.0.1" ]; max_session_bytes = 8000000000L;')
    assert code == EXIT_OK
    assert "port = 7000;" in dumped and "idle_timeout = 1.500;" in dumped
    assert "max_session_bytes = 8000000000L;" in dumped and "drain_timeout = 10;" in dumped
    code, again, _ = run(["-c", "@CONF@", "--dump-config"], config=dumped)
    assert code == EXIT_OK and again == dumped, (dumped, again)


def test_shipped_config_is_the_defaults_and_documents_every_key():
    """The shipped conffile sets nothing: every key of the key table is
    there once, commented out, with the value --dump-config gives it by
    default (so the file cannot drift from the code), each under a comment;
    the daemon reads it exactly as an empty file. An administrator's copy
    then differs from it only where they changed something."""
    shipped = os.path.join(os.environ["ECHO_MPSERV_SOURCE_ROOT"], "conf", "echo-mpserv.conf")
    with open(os.path.join(os.environ["ECHO_MPSERV_SOURCE_ROOT"], "src", "config-keys.c")) as f:
        table = re.findall(r'^\s+\{ "(\w+)",', f.read(), re.M)
    code, out, err = run(["-c", shipped, "--check-config"])
    assert (code, out, err) == (EXIT_OK, "configuration OK\n", ""), err
    code, from_file, err = run(["-c", shipped, "--dump-config"])
    code2, defaults, err2 = run(["-c", "@CONF@", "--dump-config"], config="")
    assert code == code2 == EXIT_OK and from_file == defaults and err == err2 == "", (err, err2)
    with open(shipped) as f:
        lines = f.read().splitlines()
    set_here = [line for line in lines if line.strip() and not line.startswith("#")]
    assert set_here == [], f"the shipped file sets {set_here}"
    dumped = [line for line in defaults.splitlines() if " = " in line]
    assert [line.split(" = ")[0] for line in dumped] == table, (dumped, table)
    for line in dumped:
        key = line.split(" = ")[0]
        at = [i for i, text in enumerate(lines) if text.startswith(f"#{key} = ")]
        assert len(at) == 1, f"{key}: {len(at)} commented-out settings"
        assert lines[at[0]] == "#" + line, f"shipped '{lines[at[0]]}', default '{line}'"
        assert lines[at[0] - 1].startswith("# "), f"{key} has no comment above it"


def test_port_in_use():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    code, _, err = run(["-c", "@CONF@", "-p", str(port)], config='listen = [ "127.0.0.1" ];')
    taken.close()
    assert code == EXIT_SOCKET, (code, err)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_address_and_permission():
    code, _, err = run(["-c", "@CONF@", "-p", "7"], config='listen = [ "192.0.2.1" ];')
    assert code == EXIT_SOCKET and "cannot listen on 192.0.2.1:7: Cannot assign requested address" in err, err
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        unprivileged_start = int(f.read())
    if os.geteuid() != 0 or unprivileged_start <= 7:
        raise Skip("needs root (to drop to an unprivileged user) and privileged port 7")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    code, _, err = run(["-c", "@CONF@", "-p", "7"], config='listen = [ "127.0.0.1" ];', prefix=nobody)
    assert code == EXIT_SOCKET and "cannot listen on 127.0.0.1:7: Permission denied" in err, (code, err)


def test_wrong_kind_of_passed_socket():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    d = Daemon(passed_fds=[udp.fileno()], names=["echo-udp"])
    try:
        d.start(wait_ready=False)
        assert d.wait_exit() == EXIT_SOCKET
        d.wait_log(r"fd 3 \(echo-udp\) is a non-listening datagram socket \(AF_INET\)")
    finally:
        udp.close()
        d.cleanup()


# What systemd sets for a service it starts: INVOCATION_ID, and the pid it
# executed in SYSTEMD_EXEC_PID ($$ of this shell, which exec keeps).
AS_A_SERVICE = ["bash", "-c", 'export SYSTEMD_EXEC_PID=$$; exec "$@"', "bash"]
INVOCATION = {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}
# With INVOCATION_ID set and journald running, the daemon logs to the journal.
JOURNAL_HERE = os.access("/run/systemd/journal/socket", os.W_OK)


def test_started_by_systemd_without_a_socket_never_binds():
    # A service restarted after a port change before its socket: systemd
    # passes nothing. One clear line, and a status RestartPreventExitStatus=
    # lists, at once; never a bind of its own (the sandbox forbids it).
    port = free_port()
    code, out, err = run(["-c", "@CONF@", "-p", str(port)], config='listen = [ "127.0.0.1" ];',
                         prefix=AS_A_SERVICE, env=INVOCATION)
    assert code == EXIT_SOCKET, (code, err)
    assert out == ""
    if JOURNAL_HERE:
        raise Skip("journald runs here: the line went to the journal (status 69 checked)")
    assert err.strip() == "error: systemd passed no listening socket; run: systemctl restart echo-mpserv.socket", err


def test_inherited_invocation_id_alone_is_standalone():
    # A shell in a terminal that a service started inherits INVOCATION_ID
    # but is not the process systemd executed: it binds, as standalone.
    if JOURNAL_HERE:
        raise Skip("journald runs here: the daemon would log to the journal")
    port = free_port()
    d = Daemon('listen = [ "127.0.0.1" ];', args=["-p", str(port)], activation=False,
               env=dict(INVOCATION, SYSTEMD_EXEC_PID="1"))
    try:
        d.start()
        d.wait_log(rf"listening on 127\.0\.0\.1:{port} \(fd \d+, bound from the configuration\)")
        assert echo_once(("127.0.0.1", port)) == b"ping"
        assert d.stop() == EXIT_OK
    finally:
        d.cleanup()


def test_reload_names_the_socket_restart_for_a_port_change():
    # Under socket activation a new port applies after restarting the
    # socket unit, not the daemon: the reload says so.
    with Daemon("port = 7;") as d:
        d.write_config("port = 7777;\n")
        d.signal(signal.SIGHUP)
        d.wait_log(r"configuration reloaded: port 7 -> 7777 \(pending\)$")
        line = d.wait_log(r"restart pending: the file changes port; port and listen take effect after "
                          r"'systemctl daemon-reload && systemctl restart echo-mpserv\.socket'")[0].string
        assert "after a restart" not in line, line


def test_port_mismatch_warning():
    with Daemon("port = 7;") as d:
        m = d.wait_log(r"socket 127\.0\.0\.1:(\d+) \(unknown\) is on port (\d+) but the configuration says port 7")[0]
        assert int(m.group(1)) == d.port
        assert echo_once(d.address()) == b"ping"


ACCEPT_YES_ROWS = [
    # The defaults ask for a per-source rate (the first problem is named).
    ("", EXIT_CONFIG, ["Accept=yes cannot enforce source_rate: ", "set source_rate = 0"]),
    ("source_rate = 0;\n", EXIT_CONFIG,
     ["Accept=yes cannot enforce max_clients_per_source: ", "not /64 sources; set source_prefix_ipv6 = 128"]),
    ("source_rate = 0;\nsource_prefix_ipv6 = 128;\nsource_prefix_ipv4 = 24;\n", EXIT_CONFIG,
     ["not /24 sources; set source_prefix_ipv4 = 32"]),
    ('source_rate = 0;\nsource_prefix_ipv6 = 128;\nlog_addresses = "hash";\n', EXIT_CONFIG,
     ['Accept=yes cannot enforce log_addresses: ', 'set log_addresses = "full"']),
    ("source_rate = 0;\nsource_prefix_ipv6 = 128;\n", EXIT_OK, []),
    ("source_rate = 0;\nmax_clients_per_source = 0;\n", EXIT_OK, []),
]


def test_check_config_accept_yes():
    """--check-config --accept-yes refuses what an Accept=yes instance would
    refuse a client (outside source_limits_exempt) for, by the same rule;
    plain --check-config passes the same files."""
    for text, code, messages in ACCEPT_YES_ROWS:
        got, out, err = run(["-c", "@CONF@", "--check-config", "--accept-yes"], config=text)
        assert got == code, (text, got, err)
        for message in messages:
            assert message in err, (text, message, err)
        assert (out == "configuration OK\n") == (code == EXIT_OK), (text, out)
        assert err.count("Accept=yes cannot enforce") == (code != EXIT_OK), (text, err)
        assert run(["-c", "@CONF@", "--check-config"], config=text)[0] == EXIT_OK, text


if __name__ == "__main__":
    main([test_usage_errors, test_config_errors, test_settings_cannot_hide_in_a_multiline_string,
          test_port_option_without_config_file, test_check_config_says_when_no_file_was_read,
          test_dangling_symlink_at_the_default_path_is_an_error, test_missing_given_config_is_an_error,
          test_check_config_ok_and_help_version, test_dump_config_round_trip,
          test_shipped_config_is_the_defaults_and_documents_every_key, test_port_in_use,
          test_bad_address_and_permission, test_wrong_kind_of_passed_socket,
          test_started_by_systemd_without_a_socket_never_binds, test_inherited_invocation_id_alone_is_standalone,
          test_reload_names_the_socket_restart_for_a_port_change, test_port_mismatch_warning,
          test_check_config_accept_yes])
