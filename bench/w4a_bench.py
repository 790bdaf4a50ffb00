"""Shared machinery of the benches (bench/node uses it; the older benches
still carry their own copies of the same pieces and keep working as they
are): a generated httpd.conf, the shipped conf/ files with only their paths
changed, a PHP-FPM master with w4a-fpm-pools' pools, wrk rounds, and
httpd instructions per request counted with callgrind on httpd -X.

Every function dies (SystemExit 2, with what it saw) rather than return a
figure measured on an error page.
"""
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "t", "integration"))
from w4a_harness import (HTTPD, MODDIR, REPO, FPM_POOLS, PHP_FPM,  # noqa: E402,F401
                         free_port, wait_port)

WRK = shutil.which("wrk") or "/usr/bin/wrk"


def log(*a):
    print(*a, flush=True)


def die(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)
    raise SystemExit(2)


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def load_bench(name):
    """Another bench script (no .py) as a module, for its helpers."""
    import importlib.machinery
    import importlib.util
    path = os.path.join(HERE, name)
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------
# httpd

# The MPM and core settings of the wall-clock benches: 2 children x 32
# threads, no access log (mod_log_config not loaded), an empty main
# DocumentRoot (a file can only come from the mechanism under test).
HEADER = """ServerRoot {root}
Listen 127.0.0.1:{port}
ServerName localhost
PidFile {root}/httpd.pid
DefaultRuntimeDir {root}
Mutex file:{root} default
ErrorLog {root}/error.log
LogLevel warn
User www-data
Group www-data
{loads}
StartServers 2
ServerLimit 2
ThreadsPerChild 32
ThreadLimit 32
MaxRequestWorkers 64
MinSpareThreads 16
MaxSpareThreads 64
MaxConnectionsPerChild 0
TypesConfig /etc/mime.types
DocumentRoot {root}/empty
<Directory />
    AllowOverride None
    Require all granted
</Directory>
"""
BASE_MODULES = ["mpm_event", "authz_core", "mime", "dir"]


class Httpd:
    """One httpd instance, its own directory and loopback port."""

    def __init__(self, name, root, body, modules=(), ours=()):
        self.name = name
        self.root = root
        self.port = free_port()
        self.conf = os.path.join(root, "httpd.conf")
        os.makedirs(os.path.join(root, "empty"), exist_ok=True)
        os.chmod(root, 0o755)
        loads = "\n".join(
            ["LoadModule %s_module %s/mod_%s.so" % (m, MODDIR, m)
             for m in BASE_MODULES + list(modules)]
            + ["LoadModule %s %s" % (sym, so) for sym, so in ours])
        with open(self.conf, "w") as f:
            f.write(HEADER.format(root=root, port=self.port, loads=loads))
            f.write(body)
        self.started = False

    def errors(self):
        return read_text(os.path.join(self.root, "error.log"))

    def error_lines(self):
        return [ln for ln in self.errors().splitlines()
                if re.search(r"\[[a-z_0-9]+:(error|crit|alert|emerg)\]", ln)]

    def modules(self):
        r = subprocess.run([HTTPD, "-f", self.conf, "-M"],
                           capture_output=True, text=True)
        return r.stdout

    def start(self):
        r = subprocess.run([HTTPD, "-f", self.conf, "-k", "start"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            die("%s: httpd did not start:\n%s%s%s" % (self.name, r.stdout,
                                                     r.stderr, self.errors()))
        self.started = True
        end = time.time() + 60
        while time.time() < end:
            if "resuming normal operations" in self.errors() and \
                    wait_port(self.port, 0.2):
                return
            time.sleep(0.05)
        die("%s: httpd not ready:\n%s" % (self.name, self.errors()))

    def pid(self):
        try:
            return int(read_text(os.path.join(self.root, "httpd.pid")))
        except ValueError:
            return None

    def stop(self):
        if not self.started:
            return
        pid = self.pid()
        subprocess.run([HTTPD, "-f", self.conf, "-k", "stop"],
                       capture_output=True)
        end = time.time() + 15
        while pid and time.time() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.started = False


def shipped(dst_dir, name, subst):
    """A copy of conf/<name> with only the given (old, new) replaced; each
    old string must be there."""
    with open(os.path.join(REPO, "conf", name)) as f:
        text = f.read()
    for old, new in subst:
        if old not in text:
            die("conf/%s no longer holds %r" % (name, old))
        text = text.replace(old, new)
    path = os.path.join(dst_dir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def fetch(port, host, path, headers=None):
    """(status, body, headers) of one GET on a new connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        h = {"Host": host}
        h.update(headers or {})
        c.request("GET", path, headers=h)
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def expect(srv, host, path, status, body=None, contains=None):
    """Die unless srv answers GET host/path with status (and the exact
    body, or a body holding contains)."""
    st, got, _ = fetch(srv.port, host, path)
    if st != status or (body is not None and got != body) or \
            (contains is not None and contains not in got):
        die("%s: GET http://%s%s answered %d %r, expected %d %r\n%s"
            % (srv.name, host, path, st, got[:200], status,
               body if body is not None else contains,
               "\n".join(srv.errors().splitlines()[-20:])))


def wrk(port, host, path, seconds, conns, srv=None):
    """req/s of wrk -t2 -c<conns>; dies on any non-2xx answer (with the
    tail of srv's error log, when given)."""
    r = subprocess.run([WRK, "-t2", "-c%d" % conns, "-d%ds" % seconds,
                        "-H", "Host: " + host,
                        "http://127.0.0.1:%d%s" % (port, path)],
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        die("wrk failed:\n" + out)
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        tail = ""
        if srv is not None:
            tail = "\n".join([ln for ln in srv.errors().splitlines()
                              if "AH00116" not in ln][-15:])
        die("port %d %s answered non-2xx responses:\n%s%s" % (port, path,
                                                            out, tail))
    err = re.search(r"Socket errors: .*", out)
    if err:
        log("  (port %d %s: %s)" % (port, path, err.group(0)))
    return float(m.group(1))


def server_cpu(pidfile):
    """(pids, CPU ns) of the httpd whose parent is in pidfile and of its
    children, every thread: the sum of /proc/<pid>/task/*/schedstat's run
    time.  Divided by the requests served between two readings, it is what
    a request costs the server in CPU, a figure that does not move with
    which process the scheduler runs, as req/s does on a 2-core machine
    that runs wrk too.  pids is there to check that no child came or went
    in between (its time would be missing)."""
    try:
        parent = int(read_text(pidfile).split()[0])
    except (IndexError, ValueError):
        die("no pid in " + pidfile)
    pids = [parent]
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_text("/proc/%s/stat" % name)
            # the ppid is the second field after the ")" closing comm
            rest = stat.rpartition(")")[2].split()
            if len(rest) > 1 and rest[1] == str(parent):
                pids.append(int(name))
    total = 0
    for pid in pids:
        tdir = "/proc/%d/task" % pid
        try:
            tasks = os.listdir(tdir)
        except OSError:
            die("httpd process %d went away while measured" % pid)
        for t in tasks:
            f = read_text("%s/%s/schedstat" % (tdir, t)).split()
            if f:
                total += int(f[0])
    return sorted(pids), total


# --------------------------------------------------------------------------
# PHP-FPM

class Fpm:
    """A PHP-FPM master of the bench's own, with the pools w4a-fpm-pools
    writes for an index (sockets <dir>/sock/<hosting>.sock, settings files
    <dir>/pool.d/w4a-<hosting>.settings)."""

    def __init__(self, root, index, max_children=8):
        self.dir = root
        os.makedirs(os.path.join(root, "pool.d"))
        os.makedirs(os.path.join(root, "sock"))
        os.chmod(root, 0o755)
        os.chmod(os.path.join(root, "sock"), 0o755)
        self.logf = os.path.join(root, "fpm.log")
        self.pidf = os.path.join(root, "fpm.pid")
        with open(os.path.join(root, "fpm.conf"), "w") as f:
            f.write(f"""[global]
pid = {self.pidf}
error_log = {self.logf}
daemonize = yes
rlimit_files = 16384
include = {root}/pool.d/*.conf
""")
        r = subprocess.run([FPM_POOLS, "--pool-dir", root + "/pool.d",
                            "--socket", root + "/sock/%h.sock", "--pid-file",
                            "", "--slowlog", root + "/slow/%h.log",
                            "--max-children", str(max_children),
                            "--max-requests", "0", index],
                           capture_output=True, text=True)
        if not [n for n in os.listdir(root + "/pool.d") if n.endswith(".conf")]:
            die("w4a-fpm-pools wrote no pool:\n" + r.stdout + r.stderr)
        self.pid = None

    def socket(self, hosting):
        return os.path.join(self.dir, "sock", hosting + ".sock")

    def start(self):
        subprocess.run([PHP_FPM, "-y", self.dir + "/fpm.conf"], check=True)
        end = time.time() + 60
        while time.time() < end:
            if "ready to handle connections" in read_text(self.logf):
                self.pid = int(read_text(self.pidf))
                return
            time.sleep(0.05)
        die("php-fpm not ready:\n" + read_text(self.logf)[-2000:])

    def stop(self):
        if not self.pid:
            return
        try:
            os.kill(self.pid, signal.SIGQUIT)
        except ProcessLookupError:
            return
        end = time.time() + 15
        while time.time() < end:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.pid = None


# --------------------------------------------------------------------------
# callgrind

def callgrind_total(conf, port, requests, keep=False):
    """Instructions of httpd -X -f conf under callgrind (all threads, start
    and stop included) while it answers requests, a list of (host, path,
    body), in order on one keep-alive connection (as wrk's); each answer
    must be 200 with exactly body."""
    out = os.path.join(os.path.dirname(conf), "cg.%d.out" % time.time_ns())
    p = subprocess.Popen(["valgrind", "--tool=callgrind",
                          "--callgrind-out-file=" + out, HTTPD, "-X", "-f",
                          conf], stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, 120):
            die("httpd -X under callgrind (%s) did not listen" % conf)
        # httpd -X runs as www-data: the dump at exit must stay writable
        if os.path.exists(out):
            subprocess.run(["chown", "www-data", out])
            os.chmod(out, 0o666)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for host, path, body in requests:
            conn.request("GET", path, headers={"Host": host})
            r = conn.getresponse()
            got = r.read()
            if r.status != 200 or got != body:
                die("callgrind run %s: GET http://%s%s answered %d %r, "
                    "expected 200 %r" % (conf, host, path, r.status,
                                         got[:200], body))
            if (r.getheader("Connection") or "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port,
                                                  timeout=120)
        conn.close()
    finally:
        p.terminate()
        p.wait(120)
    txt = read_text(out)
    if not keep:
        try:
            os.unlink(out)
        except OSError:
            pass
    m = re.search(r"^summary: (\d+)", txt, re.M) or \
        re.search(r"^totals: (\d+)", txt, re.M)
    if not m:
        die("no callgrind totals in %s" % out)
    return int(m.group(1))


def instructions_per_request(conf, port, warm, cases, n, keep=False):
    """{case: instructions per request} for cases {name: (host, path, body)}:
    one run with only the warm-up requests (warm, a list as for
    callgrind_total), and per case one run with the same warm-up followed
    by n requests of that case; the difference divided by n (start-up,
    stop and warm-up cancel out)."""
    base = callgrind_total(conf, port, warm, keep)
    res = {}
    for name, req in cases.items():
        tot = callgrind_total(conf, port, warm + [req] * n, keep)
        res[name] = (tot - base) / float(n)
    return res
