"""The built-in traffic replayer: a few simulated Tuist CLI clients playing a realistic mix against the
service, so a fresh ``make run`` fills every documented metric within seconds.

Each client signs in with a seeded user's tokens and, every round: reports runs, uploads artifacts with
multipart uploads, downloads a burst of artifacts in parallel (remote hits, then node-local hits, plus
misses), uploads and downloads a preview, refreshes its token (and sends the two kinds of bad refresh token
the CLI sends in the wild), loads the HTML pages, and now and then deletes a project's cache or sends a
malformed request. The first round of the first client covers every path, so the 10-second promise does not
depend on chance. The database pool's disconnects come from its connection recycling (``db_pool_recycle`` in
service/settings.py), not from this traffic: closing an overflow connection needs more concurrent checkouts than
the pool holds, which no client can force.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from service.auth import CLI_VERSION_HEADER, SESSION_COOKIE
from service.db import Credentials

_log = logging.getLogger("service.replayer")

COMMANDS = ("build", "test", "generate", "cache", "share", "run", "inspect")
CLI_VERSIONS = ("4.40.0", "4.41.2", "4.43.1")
ARTIFACTS_PER_PROJECT = 24
DOWNLOAD_BURST = 8


@dataclass
class _Identity:
    """One signed-in user's tokens, shared by the clients playing that user."""

    credentials: Credentials
    access_token: str
    refresh_token: str
    lock: threading.Lock


class Replayer:
    """``start()`` launches ``workers`` client threads; ``stop()`` ends them."""

    def __init__(self, base_url: str, credentials: list[Credentials], *, workers: int = 3,
                 interval: float = 0.5, seed: int | None = None) -> None:
        if not credentials:
            raise ValueError("the replayer needs at least one seeded user")
        self.base_url = base_url.rstrip("/")
        self.identities = [_Identity(c, c.access_token, c.refresh_token, threading.Lock()) for c in credentials]
        self.workers = workers
        self.interval = interval
        self.seed = seed
        self.rounds = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._count_lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._run, args=(i,), name=f"replayer-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self, index: int) -> None:
        rng = random.Random(None if self.seed is None else self.seed + index)
        identity = self.identities[index % len(self.identities)]
        with httpx.Client(base_url=self.base_url, timeout=15.0) as client, \
                ThreadPoolExecutor(DOWNLOAD_BURST, thread_name_prefix=f"replayer-{index}-dl") as pool:
            n = 0
            while not self._stop.is_set():
                try:
                    Round(client, pool, identity, rng, first=n == 0, lead=index == 0).play()
                except Exception as exc:  # the service restarting or a transient error: keep playing
                    with self._count_lock:
                        self.errors += 1
                    _log.warning("replayer round failed: %s: %s", type(exc).__name__, exc)
                n += 1
                with self._count_lock:
                    self.rounds += 1
                self._stop.wait(self.interval * rng.uniform(0.5, 1.5))


class Round:
    """One round of one client."""

    def __init__(self, client: httpx.Client, pool: ThreadPoolExecutor, identity: _Identity, rng: random.Random,
                 *, first: bool, lead: bool) -> None:
        self.client = client
        self.pool = pool
        self.identity = identity
        self.rng = rng
        self.first = first
        self.lead = lead
        self.version = rng.choice(CLI_VERSIONS)
        self.slug = rng.choice(identity.credentials.projects)

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.identity.access_token}", CLI_VERSION_HEADER: self.version}

    def play(self) -> None:
        r = self.rng
        if self.lead and (self.first or r.random() < 0.08):
            self.client.delete(f"/api/projects/{self.slug}/cache", headers=self.headers)
        self.pages()
        for _ in range(r.randint(2, 4)):
            self.report_run()
        uploaded = [self.upload(self.artifact(r.randrange(ARTIFACTS_PER_PROJECT)))
                    for _ in range(2 if self.first else r.randint(0, 2))]
        self.download_burst([h for h in uploaded if h])
        if self.first or r.random() < 0.3:
            self.preview()
        self.refresh_tokens()
        if self.first or r.random() < 0.15:
            self.bad_requests()
        self.client.get("/health/ready")

    # -- the pieces -----------------------------------------------------------------------------------------
    def artifact(self, i: int) -> str:
        return hashlib.sha256(f"{self.slug}:{i}".encode()).hexdigest()[:40]

    def pages(self) -> None:
        self.client.get("/")
        cookie = {"cookie": f"{SESSION_COOKIE}={self.identity.access_token}"}
        self.client.get(f"/dashboard/{self.slug}", headers=cookie)
        if self.first or self.rng.random() < 0.3:
            self.client.get("/api/docs", headers=cookie)

    def report_run(self) -> None:
        r = self.rng
        is_ci = r.random() < 0.4
        body = {"name": r.choice(COMMANDS), "is_ci": is_ci, "status": int(r.random() < 0.08),
                "duration_ms": round(r.lognormvariate(9.5 if is_ci else 8.5, 1.0), 1)}
        self.client.post(f"/api/projects/{self.slug}/runs", json=body, headers=self.headers)

    def upload(self, digest: str) -> str | None:
        """Multipart upload in 1-3 parts; returns the hash when it completed."""
        r = self.rng
        base = f"/api/projects/{self.slug}/cache/{digest}/multipart"
        started = self.client.post(f"{base}/start", headers=self.headers)
        if started.status_code != 201:
            return None
        upload_id = started.json()["upload_id"]
        parts = list(range(1, r.randint(1, 3) + 1))
        for number in parts:
            url = self.client.post(f"{base}/part", json={"upload_id": upload_id, "part_number": number},
                                   headers=self.headers)
            if url.status_code != 200:
                return None
            size = int(min(r.lognormvariate(10.5, 1.0), 400_000))
            self.client.put(url.json()["url"], content=r.randbytes(size))
        done = self.client.post(f"{base}/complete", json={"upload_id": upload_id, "parts": parts},
                                headers=self.headers)
        return digest if done.status_code == 200 else None

    def download_burst(self, fresh: list[str]) -> None:
        """Like the CLI fetching a graph's artifacts: in parallel, some just uploaded (a remote hit, then a
        node-local hit), some older, some never uploaded (misses)."""
        r = self.rng
        digests = [*fresh, *fresh]
        digests += [self.artifact(r.randrange(ARTIFACTS_PER_PROJECT)) for _ in range(r.randint(2, 5))]
        digests += [hashlib.sha256(r.randbytes(8)).hexdigest()[:40] for _ in range(r.randint(1, 2))]
        headers = self.headers

        def fetch(digest: str) -> int:
            return self.client.get(f"/api/projects/{self.slug}/cache/{digest}", headers=headers).status_code
        if fresh:  # the first fetch of a fresh artifact must finish before its second one, to be a local hit
            for digest in fresh:
                fetch(digest)
            digests = digests[len(fresh):]
        list(self.pool.map(fetch, digests))

    def preview(self) -> None:
        r = self.rng
        body = r.randbytes(int(min(r.lognormvariate(11, 0.8), 1_000_000)))
        made = self.client.post(f"/api/projects/{self.slug}/previews", params={"display_name": "App"},
                                content=body, headers=self.headers)
        if made.status_code == 201:
            found = self.client.get(f"/api/projects/{self.slug}/previews/{made.json()['id']}", headers=self.headers)
            if found.status_code == 200:
                self.client.get(found.json()["url"])

    def refresh_tokens(self) -> None:
        r = self.rng
        identity = self.identity
        url = "/api/auth/refresh_token"
        headers = {CLI_VERSION_HEADER: self.version}
        if self.first or r.random() < 0.1:
            with identity.lock:
                response = self.client.post(url, json={"refresh_token": identity.refresh_token}, headers=headers)
                if response.status_code == 200:
                    tokens = response.json()
                    identity.access_token, identity.refresh_token = tokens["access_token"], tokens["refresh_token"]
        if self.first or r.random() < 0.1:  # an expired or mistyped token
            self.client.post(url, json={"refresh_token": r.randbytes(16).hex()}, headers=headers)
        if self.first or r.random() < 0.05:  # an access token where a refresh token belongs
            self.client.post(url, json={"refresh_token": identity.access_token}, headers=headers)

    def bad_requests(self) -> None:
        self.client.post(f"/api/projects/{self.slug}/runs", content=b"{not json", headers=self.headers)
        self.client.post(f"/api/projects/{self.slug}/runs", json={"name": "build"}, headers=self.headers)
        self.client.get(f"/no/such/page/{self.rng.randrange(1000)}")
