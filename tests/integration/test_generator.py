#!/usr/bin/env python3
"""echo-mpserv-generator as systemd runs it: output directories as
arguments, the configuration named by ECHO_MPSERV_GENERATOR_CONFIG."""
import os
import subprocess
import tempfile

from harness import WRAPPER, Daemon, free_port, main, served

GENERATOR = os.environ.get("ECHO_MPSERV_GENERATOR", "")
DROPIN = "echo-mpserv.socket.d/50-echo-mpserv-generator.conf"


def generate(config, args=None):
    """Runs the generator; returns (status, stderr, drop-in text or None)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = [os.path.join(tmp, d) for d in ("normal", "early", "late")]
        for d in out:
            os.mkdir(d)
        env = dict(os.environ)
        if config is None:
            env["ECHO_MPSERV_GENERATOR_CONFIG"] = os.path.join(tmp, "missing.conf")
        else:
            path = os.path.join(tmp, "e.conf")
            with open(path, "w") as f:
                f.write(config)
            env["ECHO_MPSERV_GENERATOR_CONFIG"] = path
        p = subprocess.run(WRAPPER + [GENERATOR] + (out if args is None else args),
                           capture_output=True, text=True, env=env, timeout=60)
        written = []
        for d in out:
            for root, _, files in os.walk(d):
                written += [os.path.relpath(os.path.join(root, f), d) for f in files]
        text = None
        if os.path.exists(os.path.join(out[0], DROPIN)):
            with open(os.path.join(out[0], DROPIN)) as f:
                text = f.read()
        assert written in ([], [DROPIN]), written  # nothing else, nowhere else
        return p.returncode, p.stderr, text


def test_defaults_write_nothing():
    for config in (None, "", "port = 7; listen = [ \"::\" ];", "max_clients = 5;"):
        assert generate(config) == (0, "", None), config


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
        assert generate('listen = [ "%s" ];' % spelling) == (0, "", None), spelling
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


def test_broken_config_keeps_defaults_and_says_why():
    code, err, text = generate("port = 7777;\nport = \"x\";\n")
    assert code == 0 and text is None
    assert "echo-mpserv-generator:" in err and ":2: duplicate setting 'port' (first set on line 1)" in err, err
    assert "leaving echo-mpserv.socket at its defaults (port 7)" in err, err


def test_text_the_parser_would_skip_is_refused():
    # libconfig 1.5 ends the file at a comment that is never closed: the
    # addresses below it would be dropped, and the socket moved to port 7777
    # on every address.
    code, err, text = generate('port = 7777;\n/* loopback only *\nlisten = [ "127.0.0.1" ];\n')
    assert code == 0 and text is None, text
    assert ":2: a /* comment that is never closed" in err, err
    assert "leaving echo-mpserv.socket at its defaults (port 7)" in err, err


def test_usage():
    code, err, _ = generate("", args=[])
    assert code == 2 and "usage" in err


def test_unwritable_output_fails():
    code, err, _ = generate("port = 7777;", args=["/proc/nonexistent"])
    assert code == 1 and "cannot write to /proc/nonexistent" in err, err


if __name__ == "__main__":
    main([test_defaults_write_nothing, test_port_moves_the_socket, test_addresses,
          test_any_address_in_every_spelling_serves_what_standalone_serves, test_broken_config_keeps_defaults_and_says_why, test_text_the_parser_would_skip_is_refused,
          test_usage, test_unwritable_output_fails])
