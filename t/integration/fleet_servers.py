"""Real backends of the fleet set-up, started by the tests and the
benchmarks: memcached and MariaDB on loopback, each a private instance in
a directory of the test, plus SQLite files and a text-protocol memcached
client to look inside.

Nothing here touches a system instance: ports are free ports, the MariaDB
data directory is the test's own, and processes are stopped by pid.
"""
import glob
import hashlib
import hmac
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import time

from w4a_harness import free_port, wait_port

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
MARIADB = shutil.which("mariadb") or "/usr/bin/mariadb"
MARIADB_INSTALL = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
PG_BIN = (sorted(glob.glob("/usr/lib/postgresql/*/bin")) or ["/usr/bin"])[-1]

# The table the hosting panel writes (docs/mod_w4a_vhost.md, conf/).
SCHEMA = """CREATE TABLE w4a_domains (
    name     VARCHAR(255) NOT NULL PRIMARY KEY,
    domain   VARCHAR(255) NOT NULL,
    hosting  VARCHAR(32)  NOT NULL,
    uid      INTEGER      NOT NULL,
    gid      INTEGER      NOT NULL,
    docroot  VARCHAR(4095) NOT NULL,
    php      VARCHAR(16),
    state    VARCHAR(16)  NOT NULL DEFAULT 'active',
    flags    VARCHAR(4200)
)"""
QUERY = ("SELECT domain, hosting, uid, gid, docroot, php, state, flags "
         "FROM w4a_domains WHERE name = %s")




def seal(key, name, value, expires=0):
    """A cache value as the nodes seal it (modules/common/w4a_mac.h):
    "w4a1 EXPIRES MAC VALUE", MAC = HMAC-SHA256(key, "w4a-mc-1" NUL name
    NUL EXPIRES NUL value); name is the memcached key with its prefix."""
    exp = str(int(expires))
    mac = hmac.new(key, b"w4a-mc-1\0" + name.encode() + b"\0" + exp.encode()
                   + b"\0" + value.encode(), hashlib.sha256).hexdigest()
    return "w4a1 %s %s %s" % (exp, mac, value)


def unseal(sealed):
    """(expires, value) of a sealed value, without checking its MAC."""
    magic, exp, _mac, value = sealed.split(" ", 3)
    assert magic == "w4a1", sealed
    return int(exp), value


def _stop(proc, sig=signal.SIGTERM):
    if proc and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Memcached:
    """A memcached of our own on a free port; stop() and start() again on
    the same port, kill() for a crash."""

    def __init__(self, port=None, mem_mb=64, opts=()):
        self.port = port or free_port()
        self.proc = None
        self.mem_mb = mem_mb
        self.opts = list(opts)

    @property
    def server(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self.proc = subprocess.Popen(
            [MEMCACHED, "-u", "memcache", "-l", "127.0.0.1", "-p",
             str(self.port), "-U", "0", "-m", str(self.mem_mb), "-c", "1024"]
            + self.opts,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_port(self.port), "memcached did not listen"
        return self

    def kill(self):
        _stop(self.proc, signal.SIGKILL)

    def stop(self):
        _stop(self.proc)

    # -- a tiny text-protocol client, to look at and tamper with values --
    def _cmd(self, line, data=None):
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(line.encode() + b"\r\n"
                      + (data + b"\r\n" if data is not None else b""))
            buf = b""
            while not (buf.endswith(b"END\r\n") or buf.endswith(b"STORED\r\n")
                       or buf.endswith(b"DELETED\r\n")
                       or buf.endswith(b"NOT_FOUND\r\n")
                       or buf.endswith(b"ERROR\r\n")):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return buf

    def get(self, key):
        r = self._cmd("get " + key)
        if not r.startswith(b"VALUE "):
            return None
        head, _, rest = r.partition(b"\r\n")
        n = int(head.split()[3])
        return rest[:n].decode()

    def set(self, key, value, ttl=0):
        data = value.encode()
        return self._cmd("set %s 0 %d %d" % (key, ttl, len(data)), data)

    def fill(self, prefix, n, size):
        """n values of size bytes under prefix0 .. prefix<n-1>, pipelined
        (noreply): what pushes the LRU to evict."""
        data = b"x" * size
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            for i in range(0, n, 500):
                s.sendall(b"".join(b"set %s%d 0 0 %d noreply\r\n%s\r\n"
                                   % (prefix.encode(), j, size, data)
                                   for j in range(i, min(n, i + 500))))
            s.sendall(b"version\r\n")         # answered after every set
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk

    def stats(self):
        out = {}
        for ln in self._cmd("stats").decode().splitlines():
            parts = ln.split()
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
        return out


class Mariadb:
    """A MariaDB server of our own: data directory under root, TCP on a
    free loopback port, database w4a with the w4a_domains table, user
    w4a (password w4a) allowed to SELECT."""

    def __init__(self, root):
        self.dir = os.path.join(root, "mariadb")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "mysqld.sock")
        self.port = free_port()
        self.proc = None
        self.log = os.path.join(self.dir, "error.log")
        os.makedirs(self.data, exist_ok=True)
        pw = pwd.getpwnam("mysql")
        for d in (self.dir, self.data):
            os.chown(d, pw.pw_uid, pw.pw_gid)
        r = subprocess.run([MARIADB_INSTALL, "--no-defaults",
                            "--datadir=" + self.data, "--user=mysql",
                            "--auth-root-authentication-method=socket",
                            "--skip-test-db"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr

    @property
    def dbd_params(self):
        return ("host=127.0.0.1,port=%d,user=w4a,pass=w4a,dbname=w4a,"
                "connecttimeout=1,readtimeout=2,writetimeout=2" % self.port)

    def start(self, first=False):
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", "--datadir=" + self.data,
             "--socket=" + self.sock, "--port=%d" % self.port,
             "--bind-address=127.0.0.1", "--user=mysql",
             "--log-error=" + self.log, "--skip-log-bin",
             "--innodb-buffer-pool-size=32M", "--skip-name-resolve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_port(self.port, 60), "mariadbd did not listen:\n" + \
            open(self.log).read()[-2000:]
        if first:
            self.sql("CREATE DATABASE w4a; CREATE USER 'w4a'@'127.0.0.1' "
                     "IDENTIFIED BY 'w4a'; GRANT SELECT ON w4a.* TO "
                     "'w4a'@'127.0.0.1'; USE w4a; " + SCHEMA + ";")
        return self

    def sql(self, text):
        r = subprocess.run([MARIADB, "--no-defaults", "-S", self.sock, "-u",
                            "root", "-N", "-B", "-e", text],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def put(self, name, domain, hosting, uid, docroot, php="8.2",
            state="active", flags=None):
        def q(v):
            return "NULL" if v is None else "'%s'" % str(v).replace("'", "''")
        self.sql("REPLACE INTO w4a.w4a_domains VALUES (%s)" % ", ".join(
            [q(name), q(domain), q(hosting), str(uid), str(uid), q(docroot),
             q(php), q(state), q(flags)]))

    def executes(self):
        """Statements executed by the server so far (prepared ones)."""
        out = self.sql("SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'")
        return int(out.split()[1])

    def kill(self):
        _stop(self.proc, signal.SIGKILL)

    def stop(self):
        _stop(self.proc)


class Postgres:
    """A PostgreSQL server of our own: cluster under root, TCP on a free
    loopback port, database w4a with the w4a_domains table, role w4a
    (password w4a) allowed to SELECT."""

    def __init__(self, root):
        self.dir = os.path.join(root, "pg")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.proc = None
        self.log = os.path.join(self.dir, "server.log")
        os.makedirs(self.dir, exist_ok=True)
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        r = self._as_postgres([os.path.join(PG_BIN, "initdb"), "-D",
                               self.data, "-A", "trust", "-U", "postgres",
                               "--no-sync"])
        assert r.returncode == 0, r.stdout + r.stderr

    def _as_postgres(self, argv, **kw):
        return subprocess.run(argv, capture_output=True, text=True,
                              user="postgres", group="postgres",
                              extra_groups=[], cwd=self.dir, **kw)

    @property
    def dbd_params(self):
        return ("host=127.0.0.1 port=%d user=w4a password=w4a dbname=w4a "
                "connect_timeout=1" % self.port)

    def start(self, first=False):
        self.proc = subprocess.Popen(
            [os.path.join(PG_BIN, "postgres"), "-D", self.data,
             "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", "unix_socket_directories=" + self.dir,
             "-c", "fsync=off", "-c", "shared_buffers=16MB"],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT,
            user="postgres", group="postgres", extra_groups=[], cwd=self.dir)
        assert wait_port(self.port, 60), "postgres did not listen:\n" + \
            open(self.log).read()[-2000:]
        # listening is not accepting: after a crash it first recovers
        end = time.time() + 60
        while self.psql("postgres", "SELECT 1").returncode != 0:
            assert time.time() < end, open(self.log).read()[-2000:]
            time.sleep(0.2)
        if first:
            for db, text in (("postgres", "CREATE ROLE w4a LOGIN PASSWORD 'w4a'"),
                             ("postgres", "CREATE DATABASE w4a"),
                             ("w4a", SCHEMA),
                             ("w4a", "GRANT SELECT ON w4a_domains TO w4a")):
                r = self.psql(db, text)
                assert r.returncode == 0, r.stderr
        return self

    def psql(self, db, text):
        return self._as_postgres([os.path.join(PG_BIN, "psql"), "-h",
                                  self.dir, "-p", str(self.port), "-U",
                                  "postgres", "-d", db, "-v",
                                  "ON_ERROR_STOP=1", "-qAt", "-c", text])

    def put(self, name, domain, hosting, uid, docroot, php="8.2",
            state="active", flags=None):
        def q(v):
            return "NULL" if v is None else "'%s'" % str(v).replace("'", "''")
        vals = ", ".join([q(name), q(domain), q(hosting), str(uid), str(uid),
                          q(docroot), q(php), q(state), q(flags)])
        r = self.psql("w4a", "INSERT INTO w4a_domains VALUES (%s) ON CONFLICT "
                      "(name) DO UPDATE SET domain = EXCLUDED.domain, hosting "
                      "= EXCLUDED.hosting, uid = EXCLUDED.uid, gid = "
                      "EXCLUDED.gid, docroot = EXCLUDED.docroot, php = "
                      "EXCLUDED.php, state = EXCLUDED.state, flags = "
                      "EXCLUDED.flags" % vals)
        assert r.returncode == 0, r.stderr

    def kill(self):
        # the postmaster and its backends: SIGQUIT is PostgreSQL's crash stop
        _stop(self.proc, signal.SIGQUIT)

    def stop(self):
        _stop(self.proc)


class Sqlite:
    """An SQLite map database, readable by httpd's user."""

    def __init__(self, root):
        self.path = os.path.join(root, "map.sqlite")
        with sqlite3.connect(self.path) as db:
            db.execute(SCHEMA)
        os.chmod(self.path, 0o644)

    @property
    def dbd_params(self):
        return self.path

    def put(self, name, domain, hosting, uid, docroot, php="8.2",
            state="active", flags=None):
        with sqlite3.connect(self.path) as db:
            db.execute("REPLACE INTO w4a_domains VALUES (?,?,?,?,?,?,?,?,?)",
                       (name, domain, hosting, uid, uid, docroot, php, state,
                        flags))
