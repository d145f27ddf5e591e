"""The one client both registries are measured with: httpx, streaming, bounded memory.

It speaks the three flows the benchmark times: a monolithic upload (POST a
session, then one PUT `?digest=` carrying the whole body — what docker does
for a layer it sends in one piece), a chunked upload (POST, PATCHes with
`Content-Range`, then an empty PUT `?digest=`), and a pull that streams the
blob, discards it and checks its sha256. Request bodies are generators over
the blob file with an explicit `Content-Length`, so nothing is buffered whole.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator

import httpx

from scripts.benchmarks.payload import Blob


class FlowFailed(RuntimeError):
    """A registry answered a step of a flow with an unexpected status."""


def _expect(response: httpx.Response, status: int, step: str) -> None:
    if response.status_code != status:
        raise FlowFailed(
            f"{step} {response.request.url}: expected {status}, got {response.status_code}: "
            f"{response.text[:300]}"
        )


class RegistryClient:
    def __init__(self, base_url: str, repo: str = "bench",
                 verify: ssl.SSLContext | bool = True) -> None:
        self.base_url = httpx.URL(base_url)
        self.repo = repo
        self.http = httpx.Client(base_url=base_url, trust_env=False, verify=verify,
                                 timeout=httpx.Timeout(600.0))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _location(self, response: httpx.Response) -> httpx.URL:
        return self.base_url.join(response.headers["Location"])

    def _start_session(self) -> httpx.URL:
        response = self.http.post(
            f"/v2/{self.repo}/blobs/uploads/", headers={"Content-Length": "0"}
        )
        _expect(response, 202, "POST")
        return self._location(response)

    def _put(self, location: httpx.URL, blob: Blob, body: Iterator[bytes], length: int) -> None:
        response = self.http.put(
            location.copy_merge_params({"digest": blob.digest}),
            content=body,
            headers={"Content-Length": str(length), "Content-Type": "application/octet-stream"},
        )
        _expect(response, 201, "PUT")

    def push_monolithic(self, blob: Blob) -> None:
        location = self._start_session()
        self._put(location, blob, blob.read(0, blob.size), blob.size)

    def push_chunked(self, blob: Blob, piece: int) -> None:
        location = self._start_session()
        for start in range(0, blob.size, piece):
            length = min(piece, blob.size - start)
            response = self.http.patch(
                location,
                content=blob.read(start, length),
                headers={
                    "Content-Length": str(length),
                    "Content-Range": f"{start}-{start + length - 1}",
                    "Content-Type": "application/octet-stream",
                },
            )
            _expect(response, 202, "PATCH")
            location = self._location(response)
        self._put(location, blob, iter(()), 0)

    def push_bytes(self, data: bytes) -> int:
        """POST a session, then PUT `?digest=` with `data`; returns the final status."""
        response = self.http.post(
            f"/v2/{self.repo}/blobs/uploads/", headers={"Content-Length": "0"}
        )
        if response.status_code != 202:
            return response.status_code
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        response = self.http.put(
            self._location(response).copy_merge_params({"digest": digest}),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return response.status_code

    def pull(self, blob: Blob) -> None:
        """GET the whole blob, discarding it as it arrives; its size and sha256 must match."""
        hasher = hashlib.sha256()
        received = 0
        with self.http.stream("GET", f"/v2/{self.repo}/blobs/{blob.digest}") as response:
            _expect(response, 200, "GET")
            for block in response.iter_raw():
                hasher.update(block)
                received += len(block)
        if received != blob.size or "sha256:" + hasher.hexdigest() != blob.digest:
            raise FlowFailed(
                f"GET {blob.digest}: received {received} bytes hashing to "
                f"sha256:{hasher.hexdigest()}, expected {blob.size} bytes"
            )

    def delete(self, blob: Blob) -> None:
        response = self.http.delete(f"/v2/{self.repo}/blobs/{blob.digest}")
        _expect(response, 202, "DELETE")
