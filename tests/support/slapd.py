"""A real OpenLDAP server for the directory tests: Debian's ``slapd`` (`.ci/run` installs
``slapd`` and ``ldap-utils``), started by the test on a free loopback port with a throwaway
``slapd.conf`` and data dir, loaded with ``slapadd`` before it starts.

The tree (base ``dc=example,dc=com``)::

    cn=secondline,ou=services      the service account Secondline binds as (read-only)
    ou=people                      uid=dora (helpdesk-l2, customer acme, an SSH key),
                                   uid=emil (helpdesk-l1), uid=fritz (in no mapped group)
    ou=groups                      cn=helpdesk-l1, cn=helpdesk-l2, cn=cust-acme (groupOfNames)

Changes during a test go through ``ldapmodify``, as a directory admin's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agent.reaping import reap
from tests.support.broker import free_port
from tests.support.processes import communicate, stop_process

SLAPD: Final = "/usr/sbin/slapd"
BASE_DN: Final = "dc=example,dc=com"
ADMIN_DN: Final = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD: Final = "directory admin secret"
SERVICE_DN: Final = f"cn=secondline,ou=services,{BASE_DN}"
SERVICE_PASSWORD: Final = "service account secret"
USER_PASSWORD: Final = "directory password 1"
WAIT: Final = 30.0  # failure bound for slapd to start listening

# The openssh-lpk schema (as shipped with OpenSSH-LPK and most LDAP deployments): Debian's
# slapd does not carry it.
OPENSSH_LPK: Final = """
attributetype ( 1.3.6.1.4.1.24552.500.1.1.1.13 NAME 'sshPublicKey'
    DESC 'MANDATORY: OpenSSH Public key'
    EQUALITY octetStringMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )
objectclass ( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey' SUP top AUXILIARY
    DESC 'MANDATORY: OpenSSH LPK objectclass'
    MAY ( sshPublicKey $ uid ) )
"""


def slapd_installed() -> bool:
    return Path(SLAPD).exists() and shutil.which("slapadd") is not None


def _conf(data: Path, schema: Path) -> str:
    return f"""
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include {schema}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {data}/slapd.pid
database mdb
maxsize 10485760
suffix "{BASE_DN}"
rootdn "{ADMIN_DN}"
rootpw "{ADMIN_PASSWORD}"
directory {data}/db
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by dn.exact="{SERVICE_DN}" read
    by self read
    by * none
"""


def person(uid: str, name: str, key: str | None = None) -> str:
    extra = f"objectClass: ldapPublicKey\nsshPublicKey: {key.strip()}\n" if key else ""
    return (
        f"dn: uid={uid},ou=people,{BASE_DN}\n"
        "objectClass: inetOrgPerson\n"
        f"{extra}"
        f"uid: {uid}\ncn: {name}\nsn: {name.split()[-1]}\ndisplayName: {name}\n"
        f"userPassword: {USER_PASSWORD}\n\n"
    )


def group(cn: str, *uids: str) -> str:
    # groupOfNames must keep a member: every group also holds the service account, so
    # removing the last person leaves a valid group (as directory admins do with a placeholder).
    members = f"member: {SERVICE_DN}\n" + "".join(
        f"member: uid={u},ou=people,{BASE_DN}\n" for u in uids
    )
    return f"dn: cn={cn},ou=groups,{BASE_DN}\nobjectClass: groupOfNames\ncn: {cn}\n{members}\n"


def tree(dora_key: str | None) -> str:
    return (
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\n"
        "dc: example\no: Example Helpdesk\n\n"
        + "".join(
            f"dn: ou={ou},{BASE_DN}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
            for ou in ("services", "people", "groups")
        )
        + f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: secondline\nuserPassword: {SERVICE_PASSWORD}\n\n"
        + person("dora", "Dora Directory", dora_key)
        + person("emil", "Emil Early")
        + person("fritz", "Fritz Free")
        + group("helpdesk-l1", "emil")
        + group("helpdesk-l2", "dora")
        + group("cust-acme", "dora")
    )


@dataclass
class Slapd:
    root: Path
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def prepare(self, dora_key: str | None = None) -> None:
        """Write the config and load the tree with ``slapadd`` (slapd not running)."""
        assert slapd_installed(), "slapd is not installed: run .ci/run (slapd, ldap-utils)"
        (self.root / "db").mkdir(parents=True, exist_ok=True)
        schema = self.root / "openssh-lpk.schema"
        schema.write_text(OPENSSH_LPK)
        (self.root / "slapd.conf").write_text(_conf(self.root, schema))
        (self.root / "tree.ldif").write_text(tree(dora_key))
        done = subprocess.run(
            ["slapadd", "-f", str(self.root / "slapd.conf"), "-l", str(self.root / "tree.ldif")],
            check=False,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"slapadd failed: {done.stderr}"

    async def start(self) -> None:
        # -d 256 keeps slapd in the foreground and logs "slapd starting" once it listens:
        # that line is the event the test waits for.
        self.proc = await asyncio.create_subprocess_exec(
            SLAPD,
            "-f",
            str(self.root / "slapd.conf"),
            "-h",
            f"ldap://127.0.0.1:{self.port}/",
            "-d",
            "256",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        stderr = self.proc.stderr
        assert stderr is not None
        seen: list[bytes] = []
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    line = await stderr.readline()
                    if not line:
                        said = b"".join(seen).decode(errors="replace")
                        raise RuntimeError("slapd exited: " + said)
                    seen.append(line)
                    if b"slapd starting" in line:
                        break
        except BaseException:
            # A slapd that never got ready is nobody's to stop: end it here.
            await reap(self.proc)
            self.proc = None
            raise
        self._drain = asyncio.get_running_loop().create_task(self._discard(stderr))

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def stop(self) -> None:
        """Take the directory away (an outage); :meth:`start` brings it back."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        await stop_process(proc)
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain

    async def modify(self, ldif: str) -> None:
        """Change the directory as its admin does: ``ldapmodify`` over the network."""
        proc = await asyncio.create_subprocess_exec(
            "ldapmodify",
            "-x",
            "-H",
            self.url,
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PASSWORD,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LDAPTLS_REQCERT": "never"},
        )
        out, _ = await communicate(proc, WAIT, ldif.encode())
        if proc.returncode != 0:
            raise RuntimeError(f"ldapmodify failed: {out.decode(errors='replace')}")

    async def remove_member(self, group_cn: str, uid: str) -> None:
        await self.modify(
            f"dn: cn={group_cn},ou=groups,{BASE_DN}\nchangetype: modify\n"
            f"delete: member\nmember: uid={uid},ou=people,{BASE_DN}\n"
        )

    async def add_member(self, group_cn: str, uid: str) -> None:
        await self.modify(
            f"dn: cn={group_cn},ou=groups,{BASE_DN}\nchangetype: modify\n"
            f"add: member\nmember: uid={uid},ou=people,{BASE_DN}\n"
        )
