#!/usr/bin/env python3
"""The hash key as a credential (log_hash_key_credential): read at start
from $CREDENTIALS_DIRECTORY, the way systemd passes LoadCredential= to a
DynamicUser= service, so the secret never sits in the world-readable
configuration file. Hashes are stable across runs with one key, differ with
another, and match what the same key gave inline; every way the credential
can be wrong stops the start with status 78 and a message naming the file
(started by systemd on a passed socket, the daemon waits instead, not
serving, until the credential loads); the key never reaches the log or a
dump."""
import os
import re
import signal
import subprocess
import tempfile

from harness import (DAEMON, SLOW, WRAPPER, Daemon, inetd_session, main, recv_exact, scrubbed_env, served,
                     wait_until)

EXIT_OK, EXIT_CONFIG = 0, 78  # sysexits.h EX_CONFIG
NO_RATE = "max_clients_per_source = 0; source_rate = 0; "
HASHED = NO_RATE + 'log_addresses = "hash"; log_hash_key_credential = "log-hash-key";'
KEY_A = "A-secret-key-for-the-tests-0123456789"
KEY_B = "B-another-key-for-the-tests-987654321"
SOURCES = ("127.0.0.9", "127.0.0.8")


class Credentials:
    """A directory standing in for systemd's $CREDENTIALS_DIRECTORY."""

    def __init__(self, files):
        self.tmp = tempfile.TemporaryDirectory(prefix="echo-mpserv-creds-")
        for name, data in files.items():
            path = os.path.join(self.tmp.name, name)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(data if isinstance(data, bytes) else data.encode())

    def __enter__(self):
        return self.tmp.name

    def __exit__(self, *exc):
        self.tmp.cleanup()


def hashes_of(config, creds_dir):
    """The hashed addresses of SOURCES under one run, and the whole log."""
    env = {"CREDENTIALS_DIRECTORY": creds_dir} if creds_dir else {}
    with Daemon(config, env=env) as d:
        out = {}
        for source in SOURCES:
            assert served(d.address(), source)
            m = d.wait_log(r"connection (hash:[0-9a-f]{16}) port \d+ -> ", count=len(out) + 1)[-1]
            out[source] = m.group(1)
        assert d.stop() == 0
        return out, "\n".join(d.log.snapshot())


def run(args, config, creds=None):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.conf")
        with open(path, "w") as f:
            f.write(config)
        env = scrubbed_env()
        if creds:
            env["CREDENTIALS_DIRECTORY"] = creds
        p = subprocess.run(WRAPPER + [DAEMON, "-c", path] + args, capture_output=True, text=True, timeout=60 * SLOW,
                           env=env, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr


def test_hashes_stable_with_one_key_and_keyed():
    with Credentials({"log-hash-key": KEY_A + "\n"}) as creds:
        first, log1 = hashes_of(HASHED, creds)
        second, log2 = hashes_of(HASHED, creds)
    with Credentials({"log-hash-key": KEY_B}) as creds:
        other, _ = hashes_of(HASHED, creds)
    assert first == second, (first, second)
    assert first[SOURCES[0]] != first[SOURCES[1]], first
    assert all(first[s] != other[s] for s in SOURCES), (first, other)
    for log in (log1, log2):
        assert KEY_A not in log and SOURCES[0] not in log, log
    # The same key inline (deprecated) hashes the same: moving a key from
    # the file into a credential keeps every hash.
    inline, log = hashes_of(NO_RATE + f'log_addresses = "hash"; log_hash_key = "{KEY_A}";', None)
    assert inline == first, (inline, first)
    assert "log_hash_key is deprecated" in log and KEY_A not in log, log
    print(f"   {SOURCES[0]} hashed {first[SOURCES[0]]} in two runs with one key, {other[SOURCES[0]]} with another")


def test_binary_key_with_nul_bytes():
    key = bytes(range(32)) + b"\x00\x00\xff"
    with Credentials({"log-hash-key": key}) as creds:
        a, _ = hashes_of(HASHED, creds)
    with Credentials({"log-hash-key": key[:16]}) as creds:
        b, _ = hashes_of(HASHED, creds)
    assert a != b, (a, b)


# (credential files, CREDENTIALS_DIRECTORY set, message): each one a refused start.
BAD_CREDENTIALS = [
    ({}, False, 'log_hash_key_credential: credential "log-hash-key": $CREDENTIALS_DIRECTORY is not set'),
    ({}, True, "/log-hash-key: No such file or directory"),
    ({"log-hash-key": ""}, True, "/log-hash-key: 0 bytes (needs 16 to 128)"),
    ({"log-hash-key": "short-key\n"}, True, "/log-hash-key: 9 bytes (needs 16 to 128)"),
    ({"log-hash-key": "k" * 129}, True, "/log-hash-key: more than 128 bytes (needs 16 to 128)"),
    ({"other": KEY_A}, True, "/log-hash-key: No such file or directory"),
]


def test_bad_credential_stops_the_start():
    for files, set_dir, message in BAD_CREDENTIALS:
        with Credentials(files) as creds:
            code, out, err = run([], HASHED, creds if set_dir else None)
            assert code == EXIT_CONFIG, (files, code, err)
            assert message in err and len(err.strip().splitlines()) == 1, (files, err)
            if set_dir:
                assert creds in err, err  # the message names the file
            # --check-config finds the same problem where a credential is passed.
            if set_dir:
                code, out, err2 = run(["--check-config"], HASHED, creds)
                assert code == EXIT_CONFIG and message in err2 and out == "", (files, err2)
            assert "short-key" not in err and KEY_A not in err, err  # never the content


def test_check_config_without_credentials_directory():
    # A root shell has no $CREDENTIALS_DIRECTORY: a valid setup checks out,
    # saying what was not checked.
    code, out, err = run(["--check-config"], HASHED)
    assert (code, out) == (EXIT_OK, "configuration OK\n"), (code, out, err)
    assert 'credential "log-hash-key" (log_hash_key_credential) not checked' in err, err
    with Credentials({"log-hash-key": KEY_A}) as creds:
        code, out, err = run(["--check-config"], HASHED, creds)
        assert (code, out) == (EXIT_OK, "configuration OK\n") and "not checked" not in err, (code, out, err)


def test_config_errors():
    rows = [
        ('log_hash_key_credential = "/etc/echo-mpserv/log-hash-key";',
         'c.conf:1: log_hash_key_credential = "/etc/echo-mpserv/log-hash-key" is not a credential name'),
        (f'log_hash_key_credential = "log-hash-key";\nlog_hash_key = "{KEY_A}";',
         "c.conf:2: log_hash_key and log_hash_key_credential exclude each other"),
    ]
    for text, message in rows:
        for mode in (["--check-config"], []):
            code, _, err = run(mode, text)
            assert code == EXIT_CONFIG and message in err, (text, mode, code, err)
            assert KEY_A not in err, err


def test_a_key_pasted_as_the_credential_name_is_never_printed():
    """The key itself pasted into log_hash_key_credential (64 hex digits,
    as the package makes it, or base64): refused by --check-config,
    --dump-config and at start, and no output echoes it."""
    import base64
    from harness import free_port
    for key in (os.urandom(32).hex(), base64.b64encode(os.urandom(16)).decode(),
                base64.b64encode(os.urandom(32)).decode()):
        config = 'log_addresses = "hash";\nlog_hash_key_credential = "%s";\n' % key
        with Credentials({}) as creds:
            for args in (["--check-config"], ["--dump-config"], ["-p", str(free_port())]):
                code, out, err = run(args, config, creds if args[0] == "-p" else None)
                assert code == EXIT_CONFIG, (args, code, out, err)
                assert "c.conf:2: log_hash_key_credential looks like a key, not a credential name" in err, err
                for part in (key, key[:16], key[-16:]):
                    assert part not in out + err, (args, out, err)


def test_reload_to_hash_waits_for_the_key_it_names():
    """Running with log_addresses = "full" and no key, a reload asks for
    "hash" with a credential, which is read only at start: the switch
    waits for the restart with the key (said as pending) instead of hashing
    with a key no later run has; after the restart the hash is the key's.
    "hash" with no key at all says that its key is a random one."""
    from test_lifecycle import reload
    with Credentials({"log-hash-key": KEY_A + "\n"}) as creds:
        stable, _ = hashes_of(HASHED, creds)
        with Daemon(NO_RATE + 'log_addresses = "full";', env={"CREDENTIALS_DIRECTORY": creds}) as d:
            ready = reload(d, HASHED)
            assert "restart pending" in ready, ready
            d.wait_log(r'configuration reloaded: log_addresses "full" -> "hash" \(pending\), '
                       r'log_hash_key_credential "" -> "log-hash-key" \(pending\)')
            d.wait_log(r"restart pending: the file changes log_addresses, log_hash_key_credential[,;] ")
            assert served(d.address(), "127.0.0.9")
            d.wait_log(r"connection 127\.0\.0\.9:\d+ -> ")
            assert not any("connection hash:" in line for line in d.log.snapshot()), d.log.snapshot()
            assert d.stop() == 0
        # The restart: the same file, now with its key.
        with Daemon(HASHED, env={"CREDENTIALS_DIRECTORY": creds}) as d:
            assert served(d.address(), "127.0.0.9")
            got = d.wait_log(r"connection (hash:[0-9a-f]{16}) port \d+ -> ")[-1].group(1)
            assert got == stable["127.0.0.9"], (got, stable)
            assert d.stop() == 0
    random_key = r'log_addresses = "hash" with no key set \(log_hash_key_credential\): a random key for this run'
    with Daemon(NO_RATE + 'log_addresses = "hash";') as d:
        d.wait_log(random_key)
        assert d.stop() == 0
    with Daemon(NO_RATE) as d:
        reload(d, NO_RATE + 'log_addresses = "hash";')
        d.wait_log(random_key)
        assert d.stop() == 0


def test_dump_never_shows_the_key():
    code, out, err = run(["--dump-config"], f'log_hash_key = "{KEY_A}";')
    assert code == EXIT_OK and KEY_A not in out + err, out
    assert "# log_hash_key is set in the file and not shown\nlog_hash_key = \"\";\n" in out, out
    code, out, _ = run(["--dump-config"], 'log_hash_key_credential = "log-hash-key";')
    assert code == EXIT_OK and 'log_hash_key_credential = "log-hash-key";' in out, out


def test_connected_socket_reads_the_credential():
    # Accept=yes: an instance reads the credential as the daemon does (the
    # template passes it); it logs addresses in full only, since systemd
    # names the instance after the client (test_modes.py).
    with Credentials({"log-hash-key": KEY_A}) as creds:
        d = inetd_session(NO_RATE + 'log_hash_key_credential = "log-hash-key";', client_ip="127.0.0.7",
                          env={"CREDENTIALS_DIRECTORY": creds})
        try:
            line = d.wait_log(r"connection \S+ -> \S+ closed")[0].string
            assert "connection 127.0.0.7:" in line, line
        finally:
            d.cleanup()


# Started by systemd on a passed socket (see test_lifecycle.py).
AS_A_SERVICE = ["bash", "-c", 'export SYSTEMD_EXEC_PID=$$; exec "$@"', "bash"]
INVOCATION = {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}
CREDENTIAL_WAIT = "Not serving, the hash key credential does not load: "
RESTART_FIX = "fix the file LoadCredential= names, then run: systemctl restart echo-mpserv"


def queue_a_client(d):
    """The client that made systemd start the daemon (Daemon(queued=1)),
    in the backlog of the daemon that does not accept."""
    from test_lifecycle import accept_queue
    client = d.queued[0]
    client.sendall(b"queued")
    wait_until(lambda: accept_queue(d.address()[1]) == 1, 10, "the client to wait in the accept queue")
    return client


def test_bad_credential_under_systemd_waits():
    """Started by systemd on a passed socket for a client with the unit's
    placeholder for a missing key file, the daemon neither exits (systemd would start it
    again for the queued client until the socket failed) nor serves: it
    says why and what to do in STATUS= and the log, a reload that still
    finds the credential bad keeps it waiting, and once the credential
    loads it serves, the queued client first, with that key."""
    with Credentials({"log-hash-key": "missing"}) as creds:
        with Daemon(HASHED, prefix=AS_A_SERVICE, env={**INVOCATION, "CREDENTIALS_DIRECTORY": creds},
                    queued=1) as d:
            status = d.wait_notify(CREDENTIAL_WAIT)[1]
            assert "/log-hash-key: 7 bytes (needs 16 to 128); the service unit passes a placeholder" in status, status
            assert RESTART_FIX in status, status
            d.wait_log(r"not serving: the hash key credential does not load; clients wait in the socket's queue; "
                       + re.escape(RESTART_FIX))
            client = queue_a_client(d)
            n = len(d.notes.snapshot())
            d.signal(signal.SIGHUP)
            d.wait_log(r"reload failed, still not serving: log_hash_key_credential: credential ")
            d.wait_notify(CREDENTIAL_WAIT, after=n)
            assert d.proc.poll() is None
            with open(os.path.join(creds, "log-hash-key"), "w") as f:
                f.write(KEY_A + "\n")
            n = len(d.notes.snapshot())
            d.signal(signal.SIGHUP)
            assert recv_exact(client, 6) == b"queued"
            client.close()
            d.wait_notify("READY=1", after=n)
            d.wait_log(r"configuration loaded from .*; starting to serve")
            assert served(d.address(), SOURCES[0])
            # Two records, the queued client's and this one's, in the order
            # their workers end, which a busy machine may swap.
            got = {m.group(1) for m in d.wait_log(r"connection (hash:[0-9a-f]{16}) port \d+ -> ", count=2)}
            assert d.stop() == 0
            log = "\n".join(d.log.snapshot())
            assert KEY_A not in log, log
        stable, _ = hashes_of(HASHED, creds)
    assert stable[SOURCES[0]] in got, (got, stable)


def test_wait_for_the_file_that_ends_in_a_bad_credential_goes_on():
    """A broken file under systemd waits; the reload that fixes it names a
    credential that is bad: still waiting, now saying so; stopped then, the
    status is 78 and the log says what never loaded."""
    with Credentials({"log-hash-key": "short-key"}) as creds:
        with Daemon("log_level = info;\n", prefix=AS_A_SERVICE,
                    env={**INVOCATION, "CREDENTIALS_DIRECTORY": creds}, queued=1) as d:
            d.wait_notify("Not serving, the configuration does not load: ")
            client = queue_a_client(d)
            d.write_config(HASHED)
            n = len(d.notes.snapshot())
            d.signal(signal.SIGHUP)
            status = d.wait_notify(CREDENTIAL_WAIT, after=n)[1]
            assert "/log-hash-key: 9 bytes (needs 16 to 128)" in status and RESTART_FIX in status, status
            d.wait_log(r"reload failed, still not serving: log_hash_key_credential: ")
            assert d.proc.poll() is None
            assert d.stop() == EXIT_CONFIG
            d.wait_log(r"stopping; never served, the hash key credential did not load")
            assert "short-key" not in "\n".join(d.log.snapshot())
            client.close()


def test_bad_credential_exits_78_outside_the_wait():
    """Standalone (test_bad_credential_stops_the_start) and Accept=yes, one
    client per instance that no restart re-triggers, still exit 78."""
    import socket
    with Credentials({"log-hash-key": "missing"}) as creds, socket.socket() as listener, \
            socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client.connect(listener.getsockname())
        conn, _ = listener.accept()
        d = Daemon(HASHED.replace('log_addresses = "hash"; ', ""), passed_fds=[conn.fileno()], prefix=AS_A_SERVICE,
                   env={**INVOCATION, "CREDENTIALS_DIRECTORY": creds})
        try:
            d.start(wait_ready=False)
            conn.close()
            assert d.wait_exit() == EXIT_CONFIG
            d.wait_log(r"log_hash_key_credential: credential .*/log-hash-key: 7 bytes")
            assert not d.notes.snapshot(), d.notes.snapshot()
        finally:
            d.cleanup()


if __name__ == "__main__":
    main([test_hashes_stable_with_one_key_and_keyed, test_binary_key_with_nul_bytes,
          test_bad_credential_stops_the_start, test_check_config_without_credentials_directory,
          test_config_errors, test_a_key_pasted_as_the_credential_name_is_never_printed,
          test_reload_to_hash_waits_for_the_key_it_names, test_dump_never_shows_the_key, test_connected_socket_reads_the_credential,
          test_bad_credential_under_systemd_waits, test_wait_for_the_file_that_ends_in_a_bad_credential_goes_on,
          test_bad_credential_exits_78_outside_the_wait])
