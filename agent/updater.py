"""Self-update while ``run`` is connected: ask the broker, verify, install at a quiet
moment, and watch or undo an install across the restart (docs/agent.md, "Updates").

The decisions are pure (agent.release: signature, digest, version and the quiet moment;
agent.update_state: what a starting agent does about ``update.json``); this module does
their I/O: the signed HTTPS calls (in a thread: agent.broker_client is blocking), the
files under ``updates/`` and the install command. Every refusal is reported to the
broker, which audits it as ``agent.update``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.broker_client import HTTPAnswer, download_pinned, post_pinned
from agent.errors import AgentError, MessageError, ReleaseError
from agent.reaping import reap
from agent.release import (
    MANIFEST_MAX_BYTES,
    PACKAGE_MAX_BYTES,
    UPDATE_PATH,
    UPDATE_REPORT_PATH,
    ReleaseManifest,
    UpdateOffer,
    UpdateQuery,
    UpdateReport,
    Verdict,
    check_digest,
    debian_arch,
    decide_update,
    install_argv,
    package_path,
    verify_manifest,
)
from agent.signing import sign_request
from agent.state import (
    DIR_MODE,
    EnrolledState,
    LocalConfig,
    StatePaths,
    atomic_write,
    read_private,
)
from agent.update_helper import PATH_UNIT, REQUEST, RESULT
from agent.update_state import Start, UpdateRecord, on_start, skipped_version
from agent.version import VERSION

logger = logging.getLogger(__name__)

#: While a session is live, an offer waits; it is asked for again this often.
QUIET_RETRY_SECONDS: Final = 60.0
#: How long the install command may run (dpkg, with its postinst).
INSTALL_TIMEOUT_SECONDS: Final = 600.0
#: ``sysexits.h`` EX_TEMPFAIL: the agent stopped to be restarted into the new version.
EXIT_RESTART: Final = 75


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdaterSettings:
    """What the updater needs from the state dir and the machine."""

    paths: StatePaths
    state: EnrolledState
    config: LocalConfig
    key: Ed25519PrivateKey
    #: SHA-256 of the pinned broker.pem.
    fingerprint: str
    version: str = VERSION
    arch: str | None = debian_arch(platform.machine())


def install_command_for(config: LocalConfig, deb: Path) -> list[str] | None:
    """The install argv on this machine (agent.release.install_argv), None: cannot."""
    return install_argv(
        str(deb),
        update_command=config.update_command,
        is_root=os.geteuid() == 0,
        systemd=Path("/run/systemd/system").is_dir(),
    )


def why_off(settings: UpdaterSettings) -> str | None:
    """Why this agent does not self-update, or None when it does."""
    if settings.state.release_key is None:
        return "the broker sent no release key at enrollment (an older broker)"
    if settings.arch is None:
        return f"there is no agent package for this machine ({platform.machine()})"
    if (
        install_command_for(settings.config, settings.paths.updates / "x.deb") is None
        and not PATH_UNIT.exists()
    ):
        return (
            "the agent runs without root, agent.toml names no update_command, and the "
            "package's secondline-agent-update unit is not installed"
        )
    return None


class Updater:
    """Runs beside the connect loop for as long as the agent runs."""

    def __init__(
        self,
        settings: UpdaterSettings,
        *,
        live_sessions: Callable[[], int],
        restart: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._s = settings
        self._live_sessions = live_sessions
        self._restart = restart
        self._clock = clock
        assert settings.state.release_key is not None  # why_off said so
        assert settings.arch is not None
        self._release_key = settings.state.release_key.raw
        self._arch = settings.arch

    async def run(self, connected: asyncio.Event) -> None:
        """Settle an update under way, then check for offers while connected."""
        record = self._load()
        start = on_start(record, self._s.version)
        if start is Start.FORGET:
            assert record is not None
            logger.info(
                "update.json (%s %s to %s) is not about this version %s; removed",
                record.phase, record.from_version, record.to_version, self._s.version,
            )  # fmt: skip
            self._s.paths.update_json.unlink(missing_ok=True)
            record = None
        if start is Start.WATCH:
            assert record is not None
            if not await self._reconnects(record, connected):
                return
            record = None
        await connected.wait()
        if start is Start.REPORT_ROLLBACK:
            assert record is not None
            if await self._report(record.to_version, "rolled_back", record.reason):
                record = record.rolled_back()
                atomic_write(self._s.paths.update_json, record.serialize())
        while True:
            await connected.wait()
            wait = await self._check(skipped_version(record))
            if wait is None:
                return  # installed: the agent restarts into the new version
            await asyncio.sleep(wait)

    # -- after an install: reconnect, or roll back ----------------------------------------

    async def _reconnects(self, record: UpdateRecord, connected: asyncio.Event) -> bool:
        """True once this new version is connected; else it is rolled back (False)."""
        after = self._s.config.rollback_after_seconds
        left = record.at + after - self._clock()
        logger.info(
            "updated from %s to %s; rolling back unless connected within %.0f s",
            record.from_version, record.to_version, max(left, 0.0),
        )  # fmt: skip
        try:
            async with asyncio.timeout(max(left, 0.0)):
                await connected.wait()
        except TimeoutError:
            reason = (
                f"{record.to_version} did not connect to the broker within {after:.0f} s "
                f"of its install; {record.from_version} was installed again"
            )
            logger.error("%s", reason)
            atomic_write(
                self._s.paths.update_json, record.rolling_back(reason, self._clock()).serialize()
            )
            deb = self._local_package(record.from_version)
            failed = "its kept package is unusable" if deb is None else await self._install(deb)
            if failed is not None:
                logger.error(
                    "the rollback to %s failed (%s); reinstall the agent's package by hand",
                    record.from_version, failed,
                )  # fmt: skip
                return False
            self._restart(f"rolled back to {record.from_version}")
            return False
        self._s.paths.update_json.unlink(missing_ok=True)
        await self._report(
            record.to_version, "installed", f"{record.to_version} connected after its install"
        )
        return True

    # -- one check ---------------------------------------------------------------------

    async def _check(self, skip: str | None) -> float | None:
        """Ask for an offer and act on it; the seconds until the next check (None: the
        agent restarts)."""
        interval = self._s.config.update_check_interval_seconds
        try:
            return await self._check_offer(skip, interval)
        except AgentError as exc:
            logger.warning("the update check failed: %s; trying again in %.0f s", exc, interval)
            return interval

    async def _check_offer(self, skip: str | None, interval: float) -> float | None:
        body = UpdateQuery(self._s.version, self._arch).serialize()
        answer = await asyncio.to_thread(self._post, UPDATE_PATH, body)
        if answer is None:
            return interval
        try:
            offer = UpdateOffer.parse(answer)
        except MessageError as exc:
            await self._refuse("unknown", f"the broker's offer is malformed: {exc}")
            return interval
        if offer is None:
            return interval
        try:
            manifest = verify_manifest(self._release_key, offer.manifest, offer.signature)
        except ReleaseError as exc:
            await self._refuse("unknown", str(exc))
            return interval
        if offer.path != package_path(manifest.version, manifest.arch):
            await self._refuse(manifest.version, "the offer's path is not the signed package's")
            return interval
        if manifest.version == skip:
            logger.info("%s was rolled back here; it is not installed again", skip)
            return interval
        decision = decide_update(
            installed=self._s.version,
            arch=self._arch,
            offered=manifest,
            live_sessions=self._live_sessions(),
        )
        if decision.verdict is Verdict.NOTHING:
            return interval
        if decision.verdict is Verdict.REFUSE:
            await self._refuse(manifest.version, decision.reason)
            return interval
        if decision.verdict is Verdict.WAIT:
            logger.info("update: %s", decision.reason)
            return min(interval, QUIET_RETRY_SECONDS)
        return await self._install_offer(manifest, offer, interval)

    async def _install_offer(
        self, manifest: ReleaseManifest, offer: UpdateOffer, interval: float
    ) -> float | None:
        try:
            # The running version's own package, verified now, is what a rollback installs.
            await asyncio.to_thread(self._fetch_release, self._s.version)
        except (ReleaseError, MessageError) as exc:
            await self._refuse(
                manifest.version,
                f"the running {self._s.version} cannot be kept for a rollback ({exc})",
            )
            return interval
        try:
            deb = await asyncio.to_thread(self._download, manifest)
        except ReleaseError as exc:
            await self._refuse(manifest.version, str(exc))
            return interval
        # Beside the package, for root's own check when root installs it (agent.update_helper).
        atomic_write(deb.with_name(deb.name + ".manifest"), offer.manifest)
        atomic_write(deb.with_name(deb.name + ".manifest.sig"), offer.signature.encode())
        if self._live_sessions():
            logger.info("update: a session started during the download; %s waits", manifest.version)
            return min(interval, QUIET_RETRY_SECONDS)
        logger.info("installing %s over %s", manifest.version, self._s.version)
        record = UpdateRecord(
            phase="installing",
            from_version=self._s.version,
            to_version=manifest.version,
            at=self._clock(),
        )
        atomic_write(self._s.paths.update_json, record.serialize())
        failed = await self._install(deb)
        if failed is not None:
            self._s.paths.update_json.unlink(missing_ok=True)
            await self._refuse(manifest.version, failed)
            return interval
        self._restart(f"installed {manifest.version}")
        return None

    # -- files and commands ----------------------------------------------------------------

    def _package_file(self, version: str) -> Path:
        return self._s.paths.updates / f"secondline-agent_{version}_{self._arch}.deb"

    def _download(self, manifest: ReleaseManifest) -> Path:
        """The package the manifest names, downloaded and checked (blocking)."""
        self._s.paths.updates.mkdir(mode=DIR_MODE, exist_ok=True)
        dest = self._package_file(manifest.version)
        got = download_pinned(
            self._s.state.broker_url,
            package_path(manifest.version, manifest.arch),
            dest,
            fingerprint=self._s.fingerprint,
            max_bytes=min(manifest.size, PACKAGE_MAX_BYTES),
            proxy_url=self._s.config.proxy_url,
        )
        if got.status != 200:
            raise ReleaseError(f"the broker answered HTTP {got.status} for the package")
        try:
            check_digest(manifest, got.size, got.sha256)
        except ReleaseError:
            dest.unlink(missing_ok=True)
            raise
        return dest

    def _fetch_release(self, version: str) -> Path:
        """A published version's package with its manifest and signature, all verified,
        kept in ``updates/`` (blocking)."""
        self._s.paths.updates.mkdir(mode=DIR_MODE, exist_ok=True)
        base = self._package_file(version)
        path = package_path(version, self._arch)
        parts = {}
        for suffix in (".manifest", ".manifest.sig"):
            got = download_pinned(
                self._s.state.broker_url,
                path + suffix,
                base.with_name(base.name + suffix),
                fingerprint=self._s.fingerprint,
                max_bytes=MANIFEST_MAX_BYTES,
                proxy_url=self._s.config.proxy_url,
            )
            if got.status != 200:
                raise ReleaseError(f"the broker does not publish {version} (HTTP {got.status})")
            parts[suffix] = base.with_name(base.name + suffix).read_bytes()
        manifest = verify_manifest(
            self._release_key, parts[".manifest"], parts[".manifest.sig"].decode("ascii", "replace")
        )
        if manifest.version != version or manifest.arch != self._arch:
            raise ReleaseError(f"the manifest published for {version} names another package")
        return self._download(manifest)

    def _local_package(self, version: str) -> Path | None:
        """The kept package of ``version``, verified again before it is installed."""
        deb = self._package_file(version)
        try:
            manifest = verify_manifest(
                self._release_key,
                read_private(deb.with_name(deb.name + ".manifest"), MANIFEST_MAX_BYTES),
                read_private(deb.with_name(deb.name + ".manifest.sig"), MANIFEST_MAX_BYTES).decode(
                    "ascii", "replace"
                ),
            )
            data = read_private(deb, PACKAGE_MAX_BYTES)
            check_digest(manifest, len(data), hashlib.sha256(data).hexdigest())
        except (OSError, AgentError) as exc:
            logger.error("the kept package of %s cannot be used: %s", version, exc)
            return None
        return deb

    async def _install(self, deb: Path) -> str | None:
        """Install ``deb``; None when it went in, else why not."""
        argv = install_command_for(self._s.config, deb)
        if argv is None:
            return await self._ask_root(deb)
        logger.info("running the install command: %s", " ".join(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            logger.error("cannot run %s: %s", argv[0], exc.strerror or exc)
            return f"the install command {argv[0]} cannot be run"
        try:
            async with asyncio.timeout(INSTALL_TIMEOUT_SECONDS):
                output, _ = await proc.communicate()
        except TimeoutError:
            logger.error(
                "the install command did not finish within %.0f s", INSTALL_TIMEOUT_SECONDS
            )
            return "the install command did not finish in time"
        finally:
            # Also when the agent stops meanwhile (a cancel): no install command outlives it.
            await reap(proc)
        for line in output.decode("utf-8", "replace").splitlines()[-20:]:
            logger.info("install: %s", line)
        if proc.returncode != 0:
            logger.error("the install command failed with status %s", proc.returncode)
            return f"the install command failed with status {proc.returncode}"
        return None

    async def _ask_root(self, deb: Path) -> str | None:
        """The package's service: ask root's update unit (agent.update_helper) to install
        ``deb``; it restarts this service when it does, so an answer means a refusal."""
        result = self._s.paths.updates / RESULT
        result.unlink(missing_ok=True)
        atomic_write(self._s.paths.updates / REQUEST, deb.name.encode() + b"\n")
        logger.info("asked root's secondline-agent-update unit to install %s", deb.name)
        deadline = self._clock() + INSTALL_TIMEOUT_SECONDS
        while self._clock() < deadline:
            try:
                reason = read_private(result, 1024).decode("utf-8", "replace").strip()
            except FileNotFoundError:
                await asyncio.sleep(1.0)  # polled: the unit has no other way to answer
                continue
            result.unlink(missing_ok=True)
            return f"root refused the install: {reason}"
        (self._s.paths.updates / REQUEST).unlink(missing_ok=True)
        return "root's secondline-agent-update unit did not install it in time"

    # -- the broker -------------------------------------------------------------------

    def _post(self, path: str, body: bytes) -> bytes | None:
        now = self._clock()
        answer = self._post_signed(path, body, now)
        if answer.status == 401 and b"signature_replayed" in answer.body:
            # Ed25519 signatures are deterministic and the timestamp is in whole seconds: the
            # same query sent twice within one second (the agent restarted right after a
            # check) is the same signature, which the broker refuses as a replay. Sign it
            # once more for the next second (the broker takes timestamps 300 s either way).
            answer = self._post_signed(path, body, float(int(now) + 1))
        if answer.status != 200:
            logger.warning("the broker answered HTTP %s to %s", answer.status, path)
            return None
        return answer.body

    def _post_signed(self, path: str, body: bytes, now: float) -> HTTPAnswer:
        headers = sign_request(self._s.key, self._s.state.agent_id, body, now, path=path)
        return post_pinned(
            self._s.state.broker_url,
            path,
            body,
            fingerprint=self._s.fingerprint,
            headers=headers,
            proxy_url=self._s.config.proxy_url,
        )

    async def _refuse(self, version: str, reason: str) -> None:
        logger.error("update refused: %s", reason)
        await self._report(version, "refused", reason)

    async def _report(self, version: str, outcome: str, reason: str) -> bool:
        """Tell the broker (audited as agent.update); False when it could not be told."""
        body = UpdateReport(version, outcome, _one_line(reason)).serialize()
        try:
            told = await asyncio.to_thread(self._post, UPDATE_REPORT_PATH, body) is not None
        except AgentError as exc:
            logger.warning("cannot report the update (%s) to the broker: %s", outcome, exc)
            return False
        if told:
            logger.info("reported to the broker: %s %s", outcome, version)
        return told

    def _load(self) -> UpdateRecord | None:
        try:
            return UpdateRecord.parse(read_private(self._s.paths.update_json, 4096))
        except FileNotFoundError:
            return None
        except (MessageError, OSError) as exc:
            logger.error("update.json is unreadable (%s); it is removed", exc)
            self._s.paths.update_json.unlink(missing_ok=True)
            return None


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 300 else flat[:299] + "…"
