"""The servers the benchmark compares: how each one is started."""

import os
import shutil

from common import ROOT

SEED = os.path.normpath(os.path.join(ROOT, "..", "shared", "seed", "echo_mpserv.c"))

MPSERV_CONF = """# written by bench/bench.py for the benchmark
listen = [ "127.0.0.1" ];
max_clients = 12000;
# warning: no per-connection log lines (they would dominate a 64-byte echo)
log_level = "warning";
# the 1 GiB default would end a full-speed stream after well under a second
max_session_bytes = 1099511627776L;
# the load generator is one source: lift the per-source limits it would hit
max_clients_per_source = 0;
source_rate = 0;
drain_timeout = 2;
"""

XINETD_CONF = """# written by bench/bench.py for the benchmark
service echo
{{
        type        = INTERNAL UNLISTED
        id          = echo-stream
        socket_type = stream
        protocol    = tcp
        user        = root
        wait        = no
        port        = {port}
        bind        = 127.0.0.1
        instances   = UNLIMITED
        per_source  = UNLIMITED
        # default cps is "50 10": over 50 connections/s the service is shut
        # for 10 s (every connection refused). Raised for a fair comparison.
        cps         = 1000000 1
}}
"""


class Peer:
    def __init__(self, name, title, port, forking, note, needs=()):
        self.name, self.title, self.port = name, title, port
        self.forking, self.note, self.needs = forking, note, needs

    def command(self, ctx):
        raise NotImplementedError

    def available(self, ctx):
        for cmd in self.needs:
            if not shutil.which(cmd):
                return False, f"{cmd} not installed"
        return True, ""


class MpServ(Peer):
    def command(self, ctx):
        return [ctx.bin("src/echo-mpserv"), "-c", ctx.mpserv_conf, "-p", str(self.port)]

    def available(self, ctx):
        return (True, "") if os.access(ctx.bin("src/echo-mpserv"), os.X_OK) else (False, "not built")


class Textbook(Peer):
    def command(self, ctx):
        return [ctx.textbook, str(self.port)]

    def available(self, ctx):
        if not os.path.exists(SEED):
            return False, "../shared/seed/echo_mpserv.c not found"
        if not ctx.textbook:
            return False, "could not be compiled"
        return True, ""


class Socat(Peer):
    def __init__(self, *a, target="PIPE", **k):
        super().__init__(*a, **k)
        self.target = target

    def command(self, ctx):
        return ["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr,backlog=1024", self.target]


class Tcpserver(Peer):
    def command(self, ctx):
        return ["tcpserver", "-R", "-H", "-l", "0", "-c", "12000", "-b", "1024", "127.0.0.1", str(self.port), "cat"]


class Ncat(Peer):
    def command(self, ctx):
        return ["ncat", "-n", "-l", "-k", "-m", "12000", "-e", "/bin/cat", "127.0.0.1", str(self.port)]


class Xinetd(Peer):
    def command(self, ctx):
        conf = os.path.join(ctx.tmp, f"xinetd-{self.port}.conf")
        with open(conf, "w") as f:
            f.write(XINETD_CONF.format(port=self.port))
        return ["xinetd", "-dontfork", "-f", conf, "-filelog", os.path.join(ctx.tmp, "xinetd.log"),
                "-pidfile", os.path.join(ctx.tmp, f"xinetd-{self.port}.pid")]


class EpollEcho(Peer):
    def command(self, ctx):
        return [ctx.bin("bench/epoll-echo"), str(self.port)]

    def available(self, ctx):
        return (True, "") if os.access(ctx.bin("bench/epoll-echo"), os.X_OK) else (False, "not built")


PEERS = [
    MpServ("echo-mpserv", "echo-mpserv", 7001, True,
           "standalone, `-c` config: listen 127.0.0.1, max_clients 12000, log_level warning, "
           "max_session_bytes 1 TiB, per-source limits off (one load source), drain_timeout 2"),
    Textbook("textbook", "textbook", 7002, True,
             "../shared/seed/echo_mpserv.c compiled as is (cc -O2); binds INADDR_ANY (only inside the "
             "private namespace), listen backlog 5, 30-byte buffer, no TCP_NODELAY, leaks zombies "
             "(one waitpid per SIGCHLD)"),
    Socat("socat", "socat", 7003, True,
          "`socat TCP-LISTEN:P,bind=127.0.0.1,fork,reuseaddr,backlog=1024 PIPE` (one process per "
          "connection; PIPE and EXEC:cat both echo correctly, PIPE is the lighter)", needs=("socat",)),
    Tcpserver("tcpserver", "tcpserver", 7004, True,
              "ucspi-tcp `tcpserver -R -H -l 0 -c 12000 -b 1024 127.0.0.1 P cat` (fork + exec cat)",
              needs=("tcpserver",)),
    Ncat("ncat", "ncat", 7005, True,
         "`ncat -n -l -k -m 12000 -e /bin/cat 127.0.0.1 P` (two processes per connection; listen "
         "backlog 10, not configurable)", needs=("ncat",)),
    Xinetd("xinetd", "xinetd", 7006, True,
           "internal echo-stream service, private config, `cps = 1000000 1` (the default `50 10` "
           "refuses everything for 10 s after 50 connections in a second), instances UNLIMITED",
           needs=("xinetd",)),
    EpollEcho("epoll", "epoll-echo", 7007, False,
              "bench/epoll-echo.c: one process, non-forking epoll loop: the upper bound"),
    # Not in the default set; --peers socat-exec adds it.
    Socat("socat-exec", "socat EXEC:cat", 7008, True,
          "`socat ... EXEC:cat` (socat child + cat per connection)", needs=("socat",), target="EXEC:cat"),
]
DEFAULT_PEERS = ["echo-mpserv", "textbook", "socat", "tcpserver", "ncat", "xinetd", "epoll"]
PEER_BY_NAME = {p.name: p for p in PEERS}
SUBJECT = "echo-mpserv"
BOUND = "epoll"
