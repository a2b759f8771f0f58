#!/usr/bin/env python3
"""echo-mpserv-generator as systemd runs it: output directories as
arguments, the configuration named by ECHO_MPSERV_GENERATOR_CONFIG, the
kernel log replaced by a file (ECHO_MPSERV_GENERATOR_KMSG)."""
import os
import re
import shlex
import subprocess
import tempfile

from harness import DAEMON, SLOW, WRAPPER, Daemon, free_port, main, served

GENERATOR = os.environ.get("ECHO_MPSERV_GENERATOR", "")
DROPIN = "echo-mpserv.socket.d/50-echo-mpserv-generator.conf"


KMSG = {}


def generate(config, args=None, kmsg=True):
    """Runs the generator; returns (status, stderr, drop-in text or None).
    What it wrote to the kernel log is left in KMSG["text"] (None when it
    could not open it: kmsg=False names a path that cannot be opened)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = [os.path.join(tmp, d) for d in ("normal", "early", "late")]
        for d in out:
            os.mkdir(d)
        env = dict(os.environ)
        kmsg_path = os.path.join(tmp, "kmsg" if kmsg else "no/such/kmsg")
        if kmsg:
            open(kmsg_path, "w").close()
        env["ECHO_MPSERV_GENERATOR_KMSG"] = kmsg_path  # never the host's own kernel log
        if config is None:
            env["ECHO_MPSERV_GENERATOR_CONFIG"] = os.path.join(tmp, "missing.conf")
        else:
            path = os.path.join(tmp, "e.conf")
            with open(path, "w") as f:
                f.write(config)
            env["ECHO_MPSERV_GENERATOR_CONFIG"] = path
        p = subprocess.run(WRAPPER + [GENERATOR] + (out if args is None else args),
                           capture_output=True, text=True, env=env, timeout=60 * SLOW)
        written = []
        for d in out:
            for root, _, files in os.walk(d):
                written += [os.path.relpath(os.path.join(root, f), d) for f in files]
        text = None
        if os.path.exists(os.path.join(out[0], DROPIN)):
            with open(os.path.join(out[0], DROPIN)) as f:
                text = f.read()
        assert written in ([], [DROPIN]), written  # nothing else, nowhere else
        KMSG["text"] = open(kmsg_path).read() if kmsg else None
        return p.returncode, p.stderr, text


def test_defaults_write_only_the_caps():
    """The socket unit listens where the defaults want it; the caps always
    go to systemd, whose defaults (MaxConnections=64, no per-source cap)
    are not the daemon's."""
    for config in (None, "", "port = 7; listen = [ \"::\" ];"):
        code, err, text = generate(config)
        assert code == 0 and err == "", err
        assert "[Socket]\nMaxConnections=256\nMaxConnectionsPerSource=32\n" in text, text
        assert "ListenStream" not in text, text


def test_caps_for_accept_yes():
    """With Accept=yes each client is a process of its own: systemd holds
    max_clients and max_clients_per_source (0: no cap, as for systemd)."""
    code, _, text = generate("max_clients = 5; max_clients_per_source = 0; port = 9;")
    assert code == 0
    assert "BindIPv6Only=both\nMaxConnections=5\nMaxConnectionsPerSource=0\n" in text, text


def test_shipped_conffile_is_the_defaults():
    """The conffile as the package ships it (every setting commented out)
    is the defaults: the drop-in of no file (the caps only), nothing logged."""
    with open(os.path.join(os.environ["ECHO_MPSERV_SOURCE_ROOT"], "conf", "echo-mpserv.conf")) as f:
        shipped = f.read()
    code, err, text = generate(shipped)
    assert code == 0 and err == "" and KMSG["text"] == "", (err, KMSG["text"])
    assert "[Socket]\nMaxConnections=256\nMaxConnectionsPerSource=32\n" in text and "ListenStream" not in text, text


def test_port_moves_the_socket():
    code, err, text = generate("port = 7777;")
    assert code == 0 and err == "", err
    assert "[Socket]\nListenStream=\nListenStream=7777\nBindIPv6Only=both\n" in text, text


def test_addresses():
    code, _, text = generate('port = 9; listen = [ "127.0.0.1", "::1" ];')
    assert code == 0
    assert "ListenStream=\nListenStream=127.0.0.1:9\nListenStream=[::1]:9\nBindIPv6Only=ipv6-only\n" in text


def test_any_address_in_every_spelling_serves_what_standalone_serves():
    """The unspecified IPv6 address is one address however it is written:
    alone it is dual-stack both in the drop-in (BindIPv6Only=both) and in
    standalone mode (IPv4 clients served); next to an IPv4 address it is
    IPv6 only in both."""
    for spelling in ("0::0", "::0", "0:0:0:0:0:0:0:0"):
        code, err, text = generate('port = 7777; listen = [ "%s" ];' % spelling)
        assert code == 0 and err == "", err
        assert "[Socket]\nListenStream=\nListenStream=7777\nBindIPv6Only=both\n" in text, (spelling, text)
        code, err, text = generate('listen = [ "%s" ];' % spelling)
        assert code == 0 and err == "" and "ListenStream" not in text, (spelling, text)  # the unit's own
        code, err, text = generate('port = 7777; listen = [ "%s", "127.0.0.2" ];' % spelling)
        assert code == 0 and err == "", err
        assert ("ListenStream=[%s]:7777\nListenStream=127.0.0.2:7777\nBindIPv6Only=ipv6-only\n" % spelling
                in text), (spelling, text)
        port = free_port()
        with Daemon('listen = [ "%s" ];' % spelling, args=["-p", str(port)], activation=False) as d:
            assert served(("127.0.0.1", port)), spelling
            assert served(("::1", port)), spelling
            assert d.stop() == 0
        with Daemon('listen = [ "%s", "127.0.0.2" ];' % spelling, args=["-p", str(port)],
                    activation=False) as d:
            assert served(("::1", port)), spelling
            assert served(("127.0.0.2", port)), spelling
            try:
                assert not served(("127.0.0.1", port)), spelling
            except ConnectionRefusedError:
                pass
            assert d.stop() == 0


def test_broken_config_fails_closed_and_says_why_in_the_kernel_log():
    # A typo next to a narrower listen/port must not leave the socket on its
    # shipped default (every address, port 7): it must refuse to start.
    code, err, text = generate('listen = [ "127.0.0.1" ];\nport = 7777;\nport = "x";\n')
    assert code == 0 and err == "", err
    assert text is not None, "no fail-closed drop-in"
    assert "ListenStream" not in text, text
    lines = text.splitlines()
    check = [l for l in lines if l.startswith("ExecStartPre=-") and l.endswith("--check-config")]
    assert len(check) == 1 and "/echo-mpserv -c " in check[0], text
    closed = [l for l in lines if l.startswith("ExecStartPre=/bin/sh -c ")]
    assert len(closed) == 1 and closed[0].endswith("exit 78'") and "not listening" in closed[0], text
    log = KMSG["text"].splitlines()
    assert all(re.match(r"<3>echo-mpserv-generator\[\d+\]: ", l) for l in log), log
    assert any(":3: duplicate setting 'port' (first set on line 2)" in l for l in log), log
    assert "echo-mpserv.socket will not listen until" in log[-1], log
    print(f"   broken file: fail-closed drop-in, {len(log)} kernel log records")


def test_fail_closed_drop_in_stops_the_socket():
    # The drop-in's own command lines, run as systemd would run them: the
    # check names FILE:LINE and the last line fails with 78 (EX_CONFIG).
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "e.conf")
        with open(conf, "w") as f:
            f.write("max_clients = \"many\";\n")
        env = dict(os.environ, ECHO_MPSERV_GENERATOR_CONFIG=conf,
                   ECHO_MPSERV_GENERATOR_KMSG=os.path.join(tmp, "kmsg"))
        out = os.path.join(tmp, "normal")
        os.mkdir(out)
        subprocess.run(WRAPPER + [GENERATOR, out], env=env, check=True, capture_output=True, timeout=60 * SLOW)
        with open(os.path.join(out, DROPIN)) as f:
            lines = [l.split("=", 1)[1] for l in f.read().splitlines() if l.startswith("ExecStartPre=")]
        check = shlex.split(lines[0].lstrip("-"))
        check[0] = DAEMON  # the installed path is not there in a build tree
        p = subprocess.run(check, capture_output=True, text=True, timeout=30 * SLOW)
        assert p.returncode == 78 and f"{conf}:1: max_clients must be an integer" in p.stderr, p.stderr
        p = subprocess.run(shlex.split(lines[1]), capture_output=True, text=True, timeout=30 * SLOW)
        assert p.returncode == 78 and f"not listening: {conf} could not be read" in p.stderr, p.stderr


def test_dangling_symlink_is_a_broken_configuration():
    """A symbolic link to nothing at the configuration's path is no missing
    file (the daemon refuses to start on it): the socket fails closed."""
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "e.conf")
        os.symlink(os.path.join(tmp, "e.conf.new"), conf)
        kmsg = os.path.join(tmp, "kmsg")
        open(kmsg, "w").close()
        out = os.path.join(tmp, "normal")
        os.mkdir(out)
        env = dict(os.environ, ECHO_MPSERV_GENERATOR_CONFIG=conf, ECHO_MPSERV_GENERATOR_KMSG=kmsg)
        p = subprocess.run(WRAPPER + [GENERATOR, out], env=env, capture_output=True, text=True, timeout=60 * SLOW)
        assert p.returncode == 0, p.stderr
        assert os.path.exists(os.path.join(out, DROPIN)), "no fail-closed drop-in"
        with open(os.path.join(out, DROPIN)) as f:
            text = f.read()
        assert "ListenStream" not in text and "exit 78'" in text, text
        with open(kmsg) as f:
            log = f.read()
        assert f"{conf}: a symbolic link to a file that does not exist" in log, log


def test_no_kernel_log_falls_back_to_stderr():
    code, err, text = generate("port = 7777;\nport = \"x\";\n", kmsg=False)
    assert code == 0 and text is not None and "ExecStartPre=" in text
    assert "echo-mpserv-generator: " in err and ":2: duplicate setting 'port' (first set on line 1)" in err, err
    assert "echo-mpserv.socket will not listen until" in err, err


def test_messages_are_one_line_each():
    """Every problem one line, named as the daemon names it; no blank line
    in the kernel log or on stderr."""
    text = "port = 7777;\nport = 7778;\nlog_level = info;\n"
    for kmsg in (True, False):
        code, err, dropin = generate(text, kmsg=kmsg)
        out = KMSG["text"] if kmsg else err
        assert code == 0 and dropin is not None, (code, err)
        assert ':3: log_level = info: a string value must be in double quotes; write log_level = "info";' in out, out
        lines = out.split("\n")
        assert lines[-1] == "" and "" not in lines[:-1], out


def test_text_the_parser_would_skip_is_refused():
    # libconfig 1.5 ends the file at a comment that is never closed: the
    # addresses below it would be dropped, and the socket moved to port 7777
    # on every address. Refused, so the socket fails closed.
    code, err, text = generate('port = 7777;\n/* loopback only *\nlisten = [ "127.0.0.1" ];\n')
    assert code == 0 and err == "", err
    assert text is not None and "ListenStream" not in text and "exit 78'" in text, text
    assert any(":2: a /* comment that is never closed" in l for l in KMSG["text"].splitlines()), KMSG


def test_usage():
    code, err, _ = generate("", args=[])
    assert code == 2 and "usage" in err


def test_unwritable_output_fails():
    code, err, _ = generate("port = 7777;", args=["/proc/nonexistent"], kmsg=False)
    assert code == 1 and "cannot write to /proc/nonexistent" in err, err
    code, err, _ = generate("port = 7777;", args=["/proc/nonexistent"])
    assert code == 1 and err == "" and "cannot write to /proc/nonexistent" in KMSG["text"], KMSG


if __name__ == "__main__":
    main([test_defaults_write_only_the_caps, test_caps_for_accept_yes, test_shipped_conffile_is_the_defaults,
          test_port_moves_the_socket, test_addresses,
          test_any_address_in_every_spelling_serves_what_standalone_serves,
          test_broken_config_fails_closed_and_says_why_in_the_kernel_log, test_fail_closed_drop_in_stops_the_socket,
          test_no_kernel_log_falls_back_to_stderr, test_messages_are_one_line_each,
          test_dangling_symlink_is_a_broken_configuration,
          test_text_the_parser_would_skip_is_refused,
          test_usage, test_unwritable_output_fails])
