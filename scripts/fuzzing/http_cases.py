"""Generated requests for every route of the client API and the peer API.

A case is a small async function of a seeded `random.Random`: one request,
or a short flow whose later requests use the earlier answers (an upload
session's Location). Cases draw from pools of values that are valid, nearly
valid (a digest with one digit flipped, a range off by one, a manifest cut
short or with a field of the wrong type) and garbage (unicode, percent
tricks, overlong names, random bytes), with bodies in size classes from empty
to above the manifest limit. Writes and deletes go to `fuzz/…` repositories
only, so the fixture (scripts/fuzzing/fixture.py) must survive untouched.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from node.cluster.auth import BODY_HEADER, NODE_HEADER, NONCE_HEADER, TIME_HEADER, sign
from scripts.fuzzing import fixture as fx
from scripts.fuzzing.fixture import Fixture, digest_of, image_manifest
from scripts.fuzzing.senders import Headers, Sender

MANIFEST_TYPES = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
]
WRITABLE_REPOS = [f"fuzz/w{k}" for k in range(6)] + ["fuzz/deep/a/b/c", "fuzz/x-y_z.q"]
KiB, MiB = 1024, 1024 * 1024
# Valid JSON ("\ud800" once dumped) that decodes to a str no encoder will write.
LONE_SURROGATE = "\ud800"


@dataclass(frozen=True)
class Scene:
    """What the cases know of the target: where its nodes are, and what it holds."""

    bases: list[str]  # HTTP base URLs of the nodes
    node_ids: list[str]
    secret: bytes
    fixture: Fixture
    bodies: dict[str, bytes]  # a body per size class
    max_manifest: int

    def base(self, rng: random.Random) -> str:
        return rng.choice(self.bases)


def body_classes(seed: int, max_manifest: int) -> dict[str, bytes]:
    """One body per size class, made once: cases slice and mutate them."""
    rng = random.Random(f"bodies-{seed}")
    return {
        "empty": b"",
        "one": b"{",
        "small": rng.randbytes(100),
        "64KiB": rng.randbytes(64 * KiB),
        "1MiB": rng.randbytes(MiB),
        "over-manifest-limit": rng.randbytes(max_manifest + 1),
    }


# Size classes by weight: big bodies are rare, or a long run would be all copying.
BODY_WEIGHTS = {"empty": 30, "one": 15, "small": 30, "64KiB": 12, "1MiB": 2,
                "over-manifest-limit": 0.5}


def pick_body(scene: Scene, rng: random.Random) -> bytes:
    name = rng.choices(list(BODY_WEIGHTS), weights=list(BODY_WEIGHTS.values()))[0]
    body = scene.bodies[name]
    if body and rng.random() < 0.3:
        return mutate_bytes(body, rng)
    return body


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """`data` with a few bytes flipped, cut short, or grown."""
    choice = rng.randrange(4)
    if choice == 0 and data:
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if choice == 1:
        return data[: rng.randrange(len(data) + 1)]
    if choice == 2:
        return data + rng.randbytes(rng.randint(1, 64))
    return data[rng.randrange(len(data) + 1):]


def flip_digest(digest: str, rng: random.Random) -> str:
    algorithm, hexpart = digest.split(":", 1)
    i = rng.randrange(len(hexpart))
    flipped = "0" if hexpart[i] != "0" else "1"
    return f"{algorithm}:{hexpart[:i]}{flipped}{hexpart[i + 1:]}"


def random_text(rng: random.Random, max_len: int = 40) -> str:
    alphabet = rng.choice([
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "abcXYZ019._-/:@%+ ",
        "éü漢字ｅ٣²\u202e\u200b\ufeff",
        "".join(chr(c) for c in range(32, 127)),
    ])
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


def huge_number(rng: random.Random) -> str:
    return rng.choice(["9" * 20, "1" + "0" * 400, "18446744073709551616", "-1", "-0",
                       "0x10", "1e3", "1.5", "٣", "²", " 5", "5 ", "+5", "00000000000000000007"])


def digest_pool(scene: Scene, rng: random.Random) -> str:
    f = scene.fixture
    known = [f.layer_digest, f.config_digest, f.manifest_digest]
    return rng.choice([
        rng.choice(known),
        flip_digest(rng.choice(known), rng),
        digest_of(rng.randbytes(8)),
        "sha512:" + hashlib.sha512(rng.randbytes(8)).hexdigest(),
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "sha256:",
        ":",
        "md5:" + hashlib.md5(b"x").hexdigest(),
        "sha256:" + "g" * 64,
        "sha256:" + "0" * 6400,
        "sha256+b64:abc=",
        random_text(rng),
        rng.choice(known).replace(":", "%3A"),
    ])


def name_pool(scene: Scene, rng: random.Random, *, writable: bool) -> str:
    if writable and rng.random() < 0.75:
        return rng.choice(WRITABLE_REPOS)
    if not writable and rng.random() < 0.5:
        return fx.REPO
    return rng.choice([
        "", "A", "a" * 256, "a/" * 130 + "a", "-a", "a..b", "a//b", "a/", "é", "a%2Fb",
        "_catalog", "fuzz/blobs/uploads", "a%20b", "ｅ", "fuzz/%2e%2e", "a%00b",
        "fuzz/" + "b" * 250,
        "fuzz/" + random_text(rng, 20).replace("/", "")[:20] or "x",
        quote(random_text(rng, 30), safe=""),
    ])


def reference_pool(scene: Scene, rng: random.Random) -> str:
    return rng.choice([
        fx.TAG, "latest", "v" + str(rng.randrange(100)), "a" * 128, "a" * 129, "-tag", ".tag",
        "tag%20space", "t%00", "%C3%A9", "__", digest_pool(scene, rng),
        quote(random_text(rng), safe=""),
    ])


def query_pool(scene: Scene, rng: random.Random) -> str:
    """A query string with some of the parameters the handlers read, or a broken one."""
    if rng.random() < 0.1:
        return rng.choice(["%zz", "n=%ff", "n=1&n=2&n=x", "=&=&", "&&&", "n", "last=%00",
                           "digest=" + "%" * 10, quote(random_text(rng, 60), safe="=&%")])
    params: dict[str, str] = {}
    if rng.random() < 0.4:
        params["n"] = rng.choice([str(rng.randrange(0, 20)), "0", "", "10000", "10001",
                                  huge_number(rng), random_text(rng, 5)])
    if rng.random() < 0.3:
        params["last"] = rng.choice([fx.TAG, "", random_text(rng, 30), "z" * 3000,
                                     digest_pool(scene, rng), fx.REPO])
    for key in ("digest", "mount"):
        if rng.random() < 0.15:
            params[key] = digest_pool(scene, rng)
    if rng.random() < 0.15:
        params["from"] = name_pool(scene, rng, writable=False)
    if rng.random() < 0.15:
        params["artifactType"] = rng.choice(["", "application/vnd.example+json",
                                             random_text(rng, 300)])
    return urlencode(params)


def range_pool(size: int, rng: random.Random) -> str:
    a = rng.choice([0, 1, size - 1, size, size + 1, rng.randrange(max(size, 1))])
    b = rng.choice([a, a - 1, a + 1, size - 1, size, size + 1, rng.randrange(max(size, 1))])
    return rng.choice([
        f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}", "bytes=-0", "bytes=0-0",
        f"bytes={a}-{b},0-1",
        f"bytes={huge_number(rng)}-", f"bytes=-{'9' * 40}", "bytes=", "bytes=-", "items=0-1",
        f"{a}-{b}", "bytes=0-1 ", "bytes = 0-1", random_text(rng, 20),
    ])


def header_pool(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """A few of the headers the handlers read, valid or not."""
    size = len(scene.fixture.layer)
    choices: list[Callable[[], tuple[str, str]]] = [
        lambda: ("Content-Type", rng.choice(MANIFEST_TYPES + [
            "application/json", "", "text/plain; charset=utf-8",
            MANIFEST_TYPES[0] + "; charset=utf-8", MANIFEST_TYPES[0].upper(),
            "application/vnd.oci.image.manifest.v1+json, application/json",
            random_text(rng, 80), "a" * 4000])),
        lambda: ("Range", range_pool(size, rng)),
        lambda: ("Content-Range", rng.choice([
            "0-0", f"0-{rng.randrange(100)}", f"{rng.randrange(3)}-{rng.randrange(3)}",
            "bytes 0-99/100", "bytes=0-1", "0-", "-1", "5-2", f"0-{'9' * 30}",
            f"{'9' * 400}-{'9' * 401}", "bytes 0-1/*", random_text(rng, 20)])),
        lambda: ("Accept", rng.choice(MANIFEST_TYPES + [
            ", ".join(MANIFEST_TYPES), "*/*", "", random_text(rng, 60), "application/json;q=0.5"])),
        lambda: ("Authorization", rng.choice([
            "Basic " + "YWRtaW46YWRtaW4=", "Basic !!!", "Bearer " + "x" * rng.randrange(500),
            "Bearer", "", random_text(rng, 50)])),
        lambda: ("Docker-Content-Digest", digest_pool(scene, rng)),
        lambda: ("Docker-Upload-UUID", random_text(rng, 40)),
        lambda: ("Docker-Distribution-API-Version", rng.choice(["registry/2.0", "x", ""])),
        lambda: ("If-None-Match", rng.choice(['"' + scene.fixture.layer_digest + '"', "*", "x"])),
        lambda: ("Expect", rng.choice(["100-continue", "nothing"])),
        lambda: ("OCI-Chunk-Min-Length", huge_number(rng)),
        lambda: (TIME_HEADER, rng.choice([str(time.time()), "nan", "inf", huge_number(rng)])),
        lambda: (random_text(rng, 20).replace(":", "").strip() or "X-Empty", random_text(rng, 60)),
    ]
    picked = [rng.choice(choices)() for _ in range(rng.randint(0, 4))]
    return [(k, v) for k, v in picked if _sendable(k, v)]


def _sendable(key: str, value: str) -> bool:
    """What httpx and h11 agree to put on the wire (the raw cases send the rest)."""
    token = all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in key) and key
    return bool(token) and all(c.isascii() and c.isprintable() for c in value) \
        and value == value.strip()


def ascii_target(path: str) -> str:
    """`path` with everything outside printable ASCII percent-encoded, as a client would."""
    return quote(path, safe="/:%?=&@+;,!$'()*[]~-._")


# -- cases -----------------------------------------------------------------------------

Case = Callable[[Sender, Scene, random.Random], Awaitable[None]]


async def valid_reads(s: Sender, scene: Scene, rng: random.Random) -> None:
    """Reads a client makes of what is stored, with the parameters they take."""
    f, repo = scene.fixture, fx.REPO
    pick = rng.randrange(8)
    base = scene.base(rng)
    if pick == 0:
        await s.http(rng.choice(["GET", "HEAD"]), base, f"/v2/{repo}/manifests/{fx.TAG}",
                     [("Accept", rng.choice(MANIFEST_TYPES))], expect=(200,))
    elif pick == 1:
        await s.http(rng.choice(["GET", "HEAD"]), base,
                     f"/v2/{repo}/blobs/{f.layer_digest}", expect=(200,))
    elif pick == 2:
        first = rng.randrange(len(f.layer))
        last = rng.randrange(first, len(f.layer))
        await s.http("GET", base, f"/v2/{repo}/blobs/{f.layer_digest}",
                     [("Range", f"bytes={first}-{last}")], expect=(206,))
    elif pick == 3:
        await s.http("GET", base, f"/v2/_catalog?n={rng.randrange(5)}", expect=(200,))
    elif pick == 4:
        await s.http("GET", base, f"/v2/{repo}/tags/list?n={rng.randrange(3)}&last=a",
                     expect=(200,))
    elif pick == 5:
        query = rng.choice(["", "?artifactType=application%2Fx", f"?n={rng.randrange(3)}"])
        await s.http("GET", base, f"/v2/{repo}/referrers/{f.manifest_digest}{query}",
                     expect=(200,))
    elif pick == 6:
        await s.http(rng.choice(["GET", "HEAD"]), base, "/v2/", expect=(200,))
    else:
        await s.http("GET", base, f"/v2/{repo}/manifests/{f.manifest_digest}", expect=(200,))


ROUTE_SUFFIXES = ["blobs/uploads/", "blobs/uploads/{session}", "blobs/{digest}",
                  "manifests/{reference}", "tags/list", "referrers/{digest}"]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND",
           "get", "M-SEARCH"]


async def route_fuzz(s: Sender, scene: Scene, rng: random.Random) -> None:
    """Any method on any route, with pooled names, references, queries, headers and bodies."""
    method = rng.choice(METHODS)
    writes = method.upper() not in ("GET", "HEAD", "OPTIONS")
    name = name_pool(scene, rng, writable=writes)
    if rng.random() < 0.05:
        path = "/v2/_catalog"
    else:
        suffix = rng.choice(ROUTE_SUFFIXES).format(
            session=rng.choice([random_text(rng, 40), "n1-" + "0" * 32, "x" * 300]),
            digest=digest_pool(scene, rng), reference=reference_pool(scene, rng))
        path = f"/v2/{name}/{suffix}"
    query = query_pool(scene, rng)
    target = ascii_target(path) + (f"?{query}" if query else "")
    body = pick_body(scene, rng) if method not in ("GET", "HEAD") or rng.random() < 0.1 else b""
    await s.http(method, scene.base(rng), target, header_pool(scene, rng), body)


def wrong_value(rng: random.Random) -> Any:
    return rng.choice([None, True, -1, 2**70, 1.5, 1e308, "12", "", [],
                       {}, [1, 2], {"a": 1}, "x" * 5000, "é", 0, LONE_SURROGATE])


def mutate_manifest(scene: Scene, rng: random.Random) -> tuple[bytes, str]:
    """A manifest near the fixture's (or garbage): its body and the Content-Type to send."""
    f = scene.fixture
    doc: Any = json.loads(image_manifest(f.config, [f.layer]))
    content_type = rng.choice(MANIFEST_TYPES + ["", "application/json", random_text(rng, 30)])
    kind = rng.randrange(9)
    if kind == 0:
        return f.manifest[: rng.randrange(len(f.manifest))], content_type
    if kind == 1:  # a field of the wrong type
        path = rng.choice([("schemaVersion",), ("mediaType",), ("config",), ("layers",),
                           ("config", "size"), ("config", "digest"), ("config", "mediaType"),
                           ("layers", 0), ("layers", 0, "size"), ("layers", 0, "digest"),
                           ("annotations",), ("subject",), ("artifactType",)])
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = wrong_value(rng)
    elif kind == 2:  # a blob the repository does not have
        doc["layers"][0]["digest"] = rng.choice([flip_digest(f.layer_digest, rng),
                                                 digest_of(rng.randbytes(4))])
    elif kind == 3:
        depth = rng.choice([10, 1000, 100_000])
        return b"[" * depth + b"]" * depth, content_type
    elif kind == 4:  # an index of random children
        doc = {"schemaVersion": 2, "mediaType": MANIFEST_TYPES[1], "manifests": [
            {"mediaType": MANIFEST_TYPES[0], "digest": digest_pool(scene, rng),
             "size": wrong_value(rng) if rng.random() < 0.3 else 10}
            for _ in range(rng.randrange(4))]}
    elif kind == 5:  # a referrer with a subject, valid or not
        doc["subject"] = {"mediaType": MANIFEST_TYPES[0], "digest": digest_pool(scene, rng),
                          "size": rng.choice([1, -1, 2**64, "1"])}
        doc["artifactType"] = rng.choice(["application/vnd.fuzz", "", None, 5,
                                          "application/x" + LONE_SURROGATE])
    elif kind == 6:
        doc["annotations"] = {random_text(rng, 10): random_text(rng, 10)
                              for _ in range(rng.randrange(5))}
        if rng.random() < 0.2:
            doc["annotations"][rng.choice(["k", LONE_SURROGATE])] = LONE_SURROGATE + "v"
        if rng.random() < 0.3:
            doc["annotations"]["big"] = "x" * rng.choice([1000, 100_000])
    elif kind == 7:
        return pick_body(scene, rng), content_type
    else:
        doc["mediaType"] = rng.choice(MANIFEST_TYPES)
        content_type = rng.choice(MANIFEST_TYPES)
    return json.dumps(doc).encode(), content_type


async def manifest_put(s: Sender, scene: Scene, rng: random.Random) -> None:
    """Manifest PUTs near the real one, by tag or by (right or wrong) digest; then a read."""
    body, content_type = mutate_manifest(scene, rng)
    repo = rng.choice(WRITABLE_REPOS)
    base = scene.base(rng)
    if rng.random() < 0.4:  # the blobs it names, so more of them are storable
        f = scene.fixture
        for digest in (f.config_digest, f.layer_digest):
            await s.http("POST", base, f"/v2/{repo}/blobs/uploads/?mount={digest}&from={fx.REPO}")
    reference = rng.choice([f"t{rng.randrange(20)}", digest_of(body),
                            flip_digest(digest_of(body), rng), reference_pool(scene, rng)])
    headers = [("Content-Type", content_type)] if content_type else []
    await s.http("PUT", base, ascii_target(f"/v2/{repo}/manifests/{reference}"), headers, body)
    await s.http(rng.choice(["GET", "HEAD"]), scene.base(rng),
                 ascii_target(f"/v2/{repo}/manifests/{reference}"))
    if rng.random() < 0.2:
        await s.http("DELETE", scene.base(rng), ascii_target(f"/v2/{repo}/manifests/{reference}"))


async def upload_flow(s: Sender, scene: Scene, rng: random.Random) -> None:
    """A real upload session, fed and closed with near-valid chunks, ranges and digests."""
    repo = rng.choice(WRITABLE_REPOS)
    base = scene.base(rng)
    f = scene.fixture
    if rng.random() < 0.25:  # monolithic, with the digest right or flipped
        body = pick_body(scene, rng)
        digest = rng.choice([digest_of(body), flip_digest(digest_of(body), rng),
                             digest_pool(scene, rng)])
        await s.http("POST", base, f"/v2/{repo}/blobs/uploads/?digest={quote(digest)}", [], body)
        return
    if rng.random() < 0.15:  # a cross-repository mount, real or not
        query = urlencode({"mount": rng.choice([f.layer_digest, digest_pool(scene, rng)]),
                           "from": rng.choice([fx.REPO, name_pool(scene, rng, writable=False)])})
        await s.http("POST", base, f"/v2/{repo}/blobs/uploads/?{query}")
        return
    started = await s.http("POST", base, f"/v2/{repo}/blobs/uploads/")
    if started is None or started.status_code != 202 or "Location" not in started.headers:
        return
    location = started.headers["Location"]
    # Uploads are relayed to the node that holds the session: use any node.
    sent = bytearray()
    for _ in range(rng.randint(0, 3)):
        piece = pick_body(scene, rng)
        start, end = len(sent), len(sent) + len(piece) - 1
        headers: list[tuple[str, str]] = []
        style = rng.randrange(5)
        if style == 0:
            headers.append(("Content-Range", f"{start}-{end}"))
        elif style == 1:
            headers.append(("Content-Range", f"{start + rng.choice([-1, 1])}-{end}"))
        elif style == 2:
            headers.append(("Content-Range", f"{start}-{end + rng.choice([-1, 1, 10**30])}"))
        elif style == 3:
            headers.append(("Content-Range", rng.choice(["garbage", "0-", "-", f"{end}-{start}"])))
        headers += header_pool(scene, rng)[:1]
        answer = await s.http("PATCH", scene.base(rng), location, headers, piece)
        if answer is not None and answer.status_code == 202:
            sent += piece
    await s.http("GET", scene.base(rng), location)
    finish = rng.randrange(5)
    if finish == 4:
        await s.http("DELETE", scene.base(rng), location)
        return
    tail = pick_body(scene, rng) if rng.random() < 0.3 else b""
    whole = digest_of(bytes(sent) + tail)
    digest = [whole, flip_digest(whole, rng), digest_pool(scene, rng), ""][finish]
    query = f"?digest={quote(digest)}" if digest else ""
    closed = await s.http("PUT", scene.base(rng), location + query, [], tail)
    if closed is not None and closed.status_code == 201:
        # Not expected to be 200: a concurrent case may have deleted the same
        # blob (the empty one, say) from the same repository meanwhile.
        await s.http("GET", scene.base(rng), f"/v2/{repo}/blobs/{whole}")
        if rng.random() < 0.5:
            await s.http("DELETE", scene.base(rng), f"/v2/{repo}/blobs/{whole}")
    elif rng.random() < 0.7:
        await s.http("DELETE", scene.base(rng), location)


async def blob_ranges(s: Sender, scene: Scene, rng: random.Random) -> None:
    """Reads of the stored blob with ranges around its ends, valid or not."""
    f = scene.fixture
    digest = rng.choice([f.layer_digest, f.config_digest])
    size = len(f.layer) if digest == f.layer_digest else len(f.config)
    await s.http(rng.choice(["GET", "HEAD"]), scene.base(rng), f"/v2/{fx.REPO}/blobs/{digest}",
                 [("Range", range_pool(size, rng))])


PATH_TRICKS = ["/v2/../_cluster/status", "/v2/fuzz/../../_cluster/status",
               "/v2/%2e%2e/_cluster/status", "/v2/fixture/app/manifests/../../../etc/passwd",
               "/v2/fixture%2fapp/manifests/v1", "/v2/fixture/app/blobs/%00",
               "/v2/fixture/app/manifests/v1%00", "/v2//fixture/app/tags/list",
               "/v2/fixture/app/tags/list/", "/v2/./fixture/app/tags/list", "/v2/%ZZ/tags/list",
               "/v2/fixture/app/manifests/%", "/%76%32/fixture/app/tags/list", "/v2\\..\\x",
               "//v2/", "/v2", "/v2/" + "a/" * 2000 + "tags/list", "/v2/" + "a" * 70000,
               "*", "http://evil.example/v2/", "/_cluster/../v2/", "/_cluster", "/_cluster/",
               "/v2/é/tags/list", "/v2/fixture/app/manifests/v1?\x00"]


async def path_tricks(s: Sender, scene: Scene, rng: random.Random) -> None:
    """Paths no client library would send as written, straight onto a socket."""
    path = rng.choice(PATH_TRICKS)
    method = rng.choice(["GET", "HEAD", "DELETE", "PUT"])
    if method in ("DELETE", "PUT") and "fixture" in path:
        method = "GET"
    request = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    await s.raw(scene.base(rng), request.encode("utf-8", "surrogateescape"))


def _raw_garbage(scene: Scene, rng: random.Random) -> bytes:
    target = f"/v2/fuzz/w0/blobs/uploads/{rng.choice(['', 'x'])}"
    body = scene.bodies["small"]
    choice = rng.randrange(16)
    if choice == 0:
        return rng.randbytes(rng.randint(1, 2000))
    if choice == 1:
        return b"GET /v2/ HTTP/1.1\r\n" + rng.randbytes(200) + b"\r\n\r\n"
    if choice == 2:
        return b"GET /v2/ HTTP/1.1\r\nHost x\r\n\r\n"  # a header without a colon
    if choice == 3:
        return b"GET /v2/ HTTP/1.1\r\nX: " + b"a" * rng.choice([20_000, 100_000]) + b"\r\n\r\n"
    if choice == 4:
        return b"GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n"
    if choice == 5:
        return b"GET /v2/\r\n\r\n"  # HTTP/0.9
    if choice == 6:
        return (f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc").encode()
    if choice == 7:
        return (f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n").encode()
    if choice == 8:
        return (f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                "Content-Length: 7\r\n\r\nabcdefg").encode()
    if choice == 9:
        return (f"PATCH {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "zz\r\nabc\r\n0\r\n\r\n").encode()
    if choice == 10:
        return (f"POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                "Content-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n").encode()
    if choice == 11:
        return (f"PUT /v2/fuzz/w1/manifests/t1 HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {'9' * 30}\r\n\r\n").encode() + body
    if choice == 12:
        return b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nX-B: \xff\xfe\r\n\r\n"
    if choice == 13:
        return b"\r\n" * 100 + b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"
    if choice == 14:
        many = b"".join(b"X-%d: y\r\n" % i for i in range(3000))
        return b"GET /v2/ HTTP/1.1\r\n" + many + b"\r\n"
    return (f"PATCH {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"{'f' * 40}\r\nabc\r\n").encode()


async def raw_garbage(s: Sender, scene: Scene, rng: random.Random) -> None:
    """Malformed request lines, headers and framing on a raw connection."""
    await s.raw(scene.base(rng), _raw_garbage(scene, rng))


PEER_PATHS = ["/_cluster/status", "/_cluster/health", "/_cluster/members", "/_cluster/leader",
              "/_cluster/members/n1", "/_cluster/members/n1/drain", "/_cluster/chunks/confirm",
              "/_cluster/chunks/drop", "/_cluster/chunks/" + "0" * 64, "/_cluster/nope",
              "/_cluster/status/extra"]


def _bad_signature(scene: Scene, rng: random.Random, method: str, path: str,
                   body: bytes) -> Headers:
    """Headers that come close to proving the secret and do not."""
    return list(_bad_signature_map(scene, rng, method, path, body).items())


def _bad_signature_map(scene: Scene, rng: random.Random, method: str, path: str,
                       body: bytes) -> dict[str, str]:
    node = rng.choice(scene.node_ids)
    digest = hashlib.sha256(body).hexdigest() if body else ""
    how = rng.randrange(9)
    if how == 0:
        return {}
    if how == 1:
        return sign(b"not-the-secret-0123456789", method, path, node_id=node, body_digest=digest)
    if how == 2:
        return sign(scene.secret, method, path, node_id=node, body_digest=digest,
                    now=time.time() - rng.choice([60, 3600, 1e9]))
    if how == 3:
        return sign(scene.secret, method, path, node_id="someone-else", body_digest=digest)
    if how == 4:
        return sign(scene.secret, method, path + "x", node_id=node, body_digest=digest)
    if how == 5:
        headers = sign(scene.secret, method, path, node_id=node, body_digest=digest)
        key = rng.choice([TIME_HEADER, NONCE_HEADER, NODE_HEADER, BODY_HEADER])
        value = rng.choice(["nan", "inf", "", "-1", "0" * 32, "z" * 200, huge_number(rng)])
        # Replacing a value by itself (an absent body digest by "") would leave it valid.
        headers[key] = value if value != headers.get(key, "") else value + "0"
        return headers
    if how == 6:
        other = rng.choice([m for m in ("GET", "POST", "PUT", "DELETE") if m != method])
        return sign(scene.secret, other, path, node_id=node, body_digest=digest)
    if how == 7:
        return sign(scene.secret, method, path, node_id="*", body_digest=digest) \
            if path != "/_cluster/health" else {}
    headers = sign(scene.secret, method, path, node_id=node, body_digest=digest)
    headers[TIME_HEADER] = f"{float(headers[TIME_HEADER]) + 0.0001:.4f}"
    return headers


async def peer_unsigned(s: Sender, scene: Scene, rng: random.Random) -> None:
    """The peer API refuses every request that does not prove the secret: 401 or 403."""
    path = rng.choice(PEER_PATHS)
    method = rng.choice(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])
    body = pick_body(scene, rng) if method in ("POST", "PUT", "PATCH") else b""
    headers = _bad_signature(scene, rng, method, path, body)
    await s.http(method, scene.base(rng), path, headers, body, channel="peer unsigned",
                 expect=(401, 403))


async def peer_replay(s: Sender, scene: Scene, rng: random.Random) -> None:
    """A good signature sent twice: the first is served, the replay refused."""
    i = rng.randrange(len(scene.bases))
    headers = list(sign(scene.secret, "GET", "/_cluster/status", node_id=scene.node_ids[i]).items())
    await s.http("GET", scene.bases[i], "/_cluster/status", headers, channel="peer signed",
                 expect=(200,))
    await s.http("GET", scene.bases[i], "/_cluster/status", headers, channel="peer unsigned",
                 expect=(401, 403))


async def peer_signed_garbage(s: Sender, scene: Scene, rng: random.Random) -> None:
    """Signed requests with bodies and ids that are wrong: refused with a 4xx, never a 5xx.

    Nothing here may succeed at changing the cluster: member bodies always lack
    a field or have one of the wrong type, and removals name no member.
    """
    i = rng.randrange(len(scene.bases))
    node = scene.node_ids[i]
    pick = rng.randrange(6)
    body = b""
    if pick == 0:
        method, path = "POST", "/_cluster/chunks/" + rng.choice(["confirm", "drop"])
        doc = rng.choice([None, [], "x", {"chunks": "x"}, {"chunks": ["0" * 63]},
                          {"chunks": ["G" * 64]}, {"chunks": [5]}, {"chunks": ["0" * 64] * 801}])
        body = rng.choice([json.dumps(doc).encode(), pick_body(scene, rng)]) or b"{}"
    elif pick == 1:
        method = rng.choice(["POST", "DELETE"])
        path = "/_cluster/members/" + rng.choice(["nobody", "x" * 100, "n%00"]) + "/drain"
    elif pick == 2:
        method, path = "POST", "/_cluster/members"
        doc = rng.choice([None, [], "x", {"node_id": wrong_value(rng)},
                          {"node_id": "zz", "raft": "nohostport", "http": "h:1"},
                          {"node_id": "../x", "raft": "h:1", "http": "h:1"},
                          {"node_id": "ok", "raft": "h:x", "http": "h:1"}])
        body = rng.choice([json.dumps(doc).encode(), pick_body(scene, rng)]) or b"{}"
    elif pick == 3:
        method, path = "DELETE", "/_cluster/members/" + rng.choice(["nobody", "x" * 100, "n%00"])
    elif pick == 4:
        method, path = "POST", "/_cluster/leader"
        body = json.dumps(rng.choice([{}, {"to": 5}, {"to": "nobody"}, []])).encode()
    else:
        method, path = rng.choice(METHODS[:6]), rng.choice(PEER_PATHS)
        if method in ("POST", "DELETE", "PUT") and path in ("/_cluster/members",
                                                            "/_cluster/leader",
                                                            "/_cluster/members/n1",
                                                            "/_cluster/members/n1/drain",
                                                            "/_cluster/chunks/drop"):
            method = "PATCH"
    digest = hashlib.sha256(body).hexdigest() if body else ""
    headers = list(sign(scene.secret, method, path, node_id=node, body_digest=digest).items())
    await s.http(method, scene.bases[i], path, headers, body, channel="peer signed")


async def random_request(s: Sender, scene: Scene, rng: random.Random) -> None:
    """Random method, random percent-encoded path under /v2/, random body."""
    path = "/v2/" + quote(bytes(rng.randbytes(rng.randint(0, 60))), safe="/")
    await s.http(rng.choice(METHODS), scene.base(rng), path, header_pool(scene, rng),
                 pick_body(scene, rng))


CASES: dict[str, tuple[float, Case]] = {
    "valid_reads": (10, valid_reads),
    "route_fuzz": (30, route_fuzz),
    "manifest_put": (12, manifest_put),
    "upload_flow": (10, upload_flow),
    "blob_ranges": (6, blob_ranges),
    "path_tricks": (5, path_tricks),
    "raw_garbage": (5, raw_garbage),
    "peer_unsigned": (8, peer_unsigned),
    "peer_replay": (1, peer_replay),
    "peer_signed_garbage": (4, peer_signed_garbage),
    "random_request": (9, random_request),
}


def choose_case(rng: random.Random) -> tuple[str, Case]:
    names = list(CASES)
    name = rng.choices(names, weights=[CASES[n][0] for n in names])[0]
    return name, CASES[name][1]
