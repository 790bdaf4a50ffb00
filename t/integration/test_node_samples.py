"""scripts/lib/node-samples.sh: the sample hostings of scripts/node.sh and
node-dev.sh, run again on a node whose sample tenants have been at work.

Hole (fixed, 2026-12-03): the files in a sample home were written and
chmod-ed by root through whatever was there: a tenant that made its
index.html a symlink to a root file had it overwritten, and its
whoami.cgi a symlink to another had that made 0755, on the next run of
node.sh.  Now they are written as the hosting itself.
"""
import os
import pwd
import subprocess

from w4a_harness import SOURCE


def samples(w4a):
    env = dict(os.environ, BASE=os.path.join(w4a.root, "datas"),
               ETC=os.path.join(w4a.root, "etc"), PHPV="8.2")
    r = subprocess.run(["bash", "-c", ". scripts/lib/node-samples.sh && "
                        "w4a_samples \"$ETC/hostings.map\""], cwd=SOURCE,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return env["BASE"], env["ETC"]


def test_node_samples_run_again_never_writes_through_a_tenants_symlink(w4a):
    base, etc = samples(w4a)
    user = "w4a100010"
    uid = pwd.getpwnam(user).pw_uid
    docroot = os.path.join(base, "vol1", user, "var/www/example.com")
    index = os.path.join(docroot, "index.html")
    assert "hosting w4a100010" in open(index).read()
    assert os.stat(index).st_uid == uid
    st = os.stat(os.path.join(base, "vol1", user))
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o750)
    assert "example.com,www.example.com w4a100010 100010 100010 " + docroot \
        in open(os.path.join(etc, "hostings.map")).read()
    # the tenant's links, to root's files
    victims = {}
    for name in ("index.html", "cgi-bin/whoami.cgi"):
        victim = os.path.join(w4a.root, "victim-" + os.path.basename(name))
        with open(victim, "w") as f:
            f.write("root's\n")
        os.chmod(victim, 0o600)
        path = os.path.join(docroot, name)
        os.unlink(path)
        os.symlink(victim, path)
        os.lchown(path, uid, uid)
        victims[victim] = path
    samples(w4a)
    for victim in victims:
        st = os.stat(victim)
        assert open(victim).read() == "root's\n", victim
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600), victim
    # the other sample hostings' files are written as before
    other = os.path.join(base, "vol1/w4a100011/var/www/shop.example.net")
    assert os.stat(os.path.join(other, "index.html")).st_uid == \
        pwd.getpwnam("w4a100011").pw_uid
