#!/usr/bin/env python3
"""Every client policy in each of the three modes: standalone (the daemon
binds), socket-activated with Accept=no (a listening socket passed) and
Accept=yes (one connected socket passed, one process per client). Where
Accept=yes leaves a policy to systemd (max_clients, max_clients_per_source)
the generator's drop-in is checked here and systemd itself in the e2e test;
a policy that mode cannot enforce refuses the client, loudly."""
import re
import signal
import socket

from harness import Daemon, connect, free_port, main, recv_exact, served

# The per-source limits off, in every mode, for the tests of the other
# policies (the harness turns them off too when the configuration names
# neither): Accept=yes refuses a rate, and a per-source cap counted by a
# prefix shorter than the address.
NO_RATE = "source_rate = 0;\nmax_clients_per_source = 0;\n"
MODES = ("standalone", "accept-no", "accept-yes")


def refusal_record(d, source, reason):
    return rf"refused 1 connection\(s\) from {source} in the last 10 s: {reason} 1"


class Served:
    """One client from client_ip (port 0: any) against a daemon in `mode`
    with `config`. .echoed: whether its bytes came back (False: reset);
    .daemon: the Daemon, exited (Accept=yes: by itself, with .status; else
    stopped after SIGUSR1 wrote the pending refusal records), its log
    complete."""

    def __init__(self, mode, config, client_ip="127.0.0.1", family=socket.AF_INET):
        self.mode, self.status = mode, None
        if mode == "accept-yes":
            self._connected(config, client_ip, family)
            return
        if mode == "standalone":
            port = free_port()
            d = Daemon(config, args=["-p", str(port)], activation=False)
            address = ("::1" if family == socket.AF_INET6 else "127.0.0.1", port)
        else:
            d = Daemon(config, listen=(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0),))
        self.daemon = d
        try:
            d.start()
            address = address if mode == "standalone" else d.address()
            self.echoed = served(address, client_ip)
            before = len(d.log_lines(r"summary: "))
            d.signal(signal.SIGUSR1)
            d.wait_log(r"summary: ", count=before + 1)
            assert d.stop() == 0
            d.log.wait(lambda _: d.log.closed, 10, "the daemon's output to end")
        except BaseException:
            d.cleanup()
            raise

    def _connected(self, config, client_ip, family):
        loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        with socket.socket(family) as listener, socket.socket(family) as client:
            listener.bind((loopback, 0))
            listener.listen(1)
            client.bind((client_ip, 0))
            client.connect(listener.getsockname()[:2])
            conn, _ = listener.accept()
            self.daemon = d = Daemon(config, passed_fds=[conn.fileno()])
            try:
                d.start(wait_ready=False)
                conn.close()
                try:
                    client.sendall(b"x")
                    self.echoed = client.recv(1) == b"x"
                    client.shutdown(socket.SHUT_WR)  # the session ends, the daemon exits
                    client.recv(1)
                except (ConnectionResetError, BrokenPipeError):
                    self.echoed = False
                self.status = d.wait_exit()
                d.log.wait(lambda _: d.log.closed, 10, "the daemon's output to end")
            except BaseException:
                d.cleanup()
                raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.daemon.cleanup()


def assert_denied(mode, conf, client_ip):
    """The client is refused as "denied", in one refusal record, not
    served, and an Accept=yes instance exits 0."""
    with Served(mode, conf, client_ip) as s:
        assert not s.echoed, mode
        source = re.escape(client_ip)
        assert len(s.daemon.log_lines(refusal_record(s.daemon, source, "denied"))) == 1, \
            (mode, s.daemon.log.snapshot())
        assert not s.daemon.records(), mode  # refused, not served
        assert s.status in (None, 0), (mode, s.status)


def test_deny_in_every_mode():
    conf = NO_RATE + 'deny = [ "127.0.0.5" ];'
    for mode in MODES:
        assert_denied(mode, conf, "127.0.0.5")
        with Served(mode, conf, "127.0.0.6") as s:
            assert s.echoed and len(s.daemon.records()) == 1, mode


def test_allow_in_every_mode():
    conf = NO_RATE + 'allow = [ "127.0.0.6/32", "::1" ];'
    for mode in MODES:
        assert_denied(mode, conf, "127.0.0.5")
        with Served(mode, conf, "127.0.0.6") as s:
            assert s.echoed, mode
        with Served(mode, conf, "::1", socket.AF_INET6) as s:
            assert s.echoed, mode


def test_log_addresses_in_every_mode():
    """The refusal record and the connection record alike. With Accept=yes
    systemd names each instance after the client's address in its own
    records, so anything but "full" is refused there (and the refusal
    itself shows the address as log_addresses says)."""
    conf = NO_RATE + 'log_addresses = "prefix"; source_prefix_ipv4 = 24; deny = [ "127.0.0.5" ];'
    for mode in MODES:
        for client, echoed in (("127.0.0.5", False), ("127.0.0.6", mode != "accept-yes")):
            with Served(mode, conf, client) as s:
                assert s.echoed == echoed, mode
                text = "\n".join(s.daemon.log.snapshot())
                assert client not in text, (mode, text)
                if echoed:
                    assert s.daemon.log_lines(r"connection 127\.0\.0\.0/24 port \d+ -> \S+ closed"), (mode, text)
                elif client == "127.0.0.5":
                    assert s.daemon.log_lines(refusal_record(s.daemon, r"127\.0\.0\.0/24", "denied")), text
                else:
                    assert s.status == 78 and s.daemon.log_lines(
                        r"Accept=yes cannot enforce log_addresses: .*; connection from 127\.0\.0\.0/24 reset"), text


def test_accept_yes_refuses_a_policy_it_cannot_enforce():
    """A per-source rate, a per-source cap counted by a prefix shorter than
    the address (systemd counts single addresses), or addresses kept out of
    the log (systemd names the instance after the client): reset, an error
    naming the key, exit status 78 (CONFIG). Never served unchecked."""
    cap = "source_rate = 0; max_clients_per_source = 32;"
    cases = [
        ("source_rate = 20;", "127.0.0.1", socket.AF_INET, "source_rate"),
        (cap + "source_prefix_ipv4 = 24;", "127.0.0.1", socket.AF_INET, "source_prefix_ipv4 = 32"),
        (cap, "::1", socket.AF_INET6, "source_prefix_ipv6 = 128"),
        (NO_RATE + 'log_addresses = "hash";', "127.0.0.1", socket.AF_INET, 'log_addresses = "full"'),
    ]
    for conf, client, family, key in cases:
        with Served("accept-yes", conf, client, family) as s:
            assert not s.echoed and s.status == 78, (conf, s.status)
            assert s.daemon.log_lines(rf"Accept=yes cannot enforce .*{key}.*; connection from \S+ reset"), \
                s.daemon.log.snapshot()
    # What systemd can count, nothing to count, or a client exempt from the
    # per-source limits (as it is in every mode): served.
    exempt = 'source_rate = 20; source_limits_exempt = [ "127.0.0.0/8" ];'
    for conf, client, family in [(cap, "127.0.0.1", socket.AF_INET),
                                 (cap + "source_prefix_ipv6 = 128;", "::1", socket.AF_INET6),
                                 (NO_RATE, "::1", socket.AF_INET6),
                                 (exempt, "127.0.0.1", socket.AF_INET)]:
        with Served("accept-yes", conf, client, family) as s:
            assert s.echoed and s.status == 0, (conf, s.status, s.daemon.log.snapshot())


def held_sessions(address, source, n):
    held = [connect(address, source=source) for _ in range(n)]
    for h in held:
        h.sendall(b"h")
        assert recv_exact(h, 1) == b"h"
    return held


def test_caps_in_the_daemon_modes():
    """max_clients_per_source refuses (reset); max_clients queues (the
    client waits in the backlog and is served when a place frees). With
    Accept=yes systemd holds both: see the generator test below."""
    for mode in ("standalone", "accept-no"):
        port = free_port()
        kw = {"args": ["-p", str(port)], "activation": False} if mode == "standalone" else {}
        with Daemon("source_rate = 0; max_clients_per_source = 1; max_clients = 2;", **kw) as d:
            address = ("127.0.0.1", port) if mode == "standalone" else d.address()
            held = held_sessions(address, "127.0.0.1", 1)
            assert not served(address, "127.0.0.1"), mode
            held += held_sessions(address, "127.0.0.2", 1)
            waiting = connect(address, source="127.0.0.3")
            waiting.sendall(b"w")
            waiting.settimeout(0.2)
            try:
                assert waiting.recv(1) == b"", "served past max_clients"
            except socket.timeout:
                pass
            held.pop().close()
            waiting.settimeout(None)
            assert recv_exact(waiting, 1) == b"w", mode
            waiting.close()
            for h in held:
                h.close()


if __name__ == "__main__":
    main([test_deny_in_every_mode, test_allow_in_every_mode, test_log_addresses_in_every_mode,
          test_accept_yes_refuses_a_policy_it_cannot_enforce, test_caps_in_the_daemon_modes])
