"""report.html: built by compare and rank from a tiny real run, self-contained, escaped, rebuilt by `zoo report`,
and rendered by headless Chromium (Debian's package; `make test` installs it) through the DevTools protocol on a
pipe (no extra Python package): every image loads, the leaderboard table renders, no console errors."""

from __future__ import annotations

import ast
import base64
import fcntl
import io
import json
import os
import re
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers_images import make_folder
from PIL import Image

import zoo_core
from zoo_core.cli import main
from zoo_core.outputs import html_report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
BACKBONES = ["timm/test_resnet", "resnet18"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A compare (2 random-init backbones, feature extraction, --folds 3) and a rank of the same, 32 px."""
    root = tmp_path_factory.mktemp("report")
    data = make_folder(root / "data", num_classes=3, per_class=10)
    zoo_core.compare(BACKBONES, data, out_dir=root / "cmp", weights=None, image_size=32, progress=False, folds=3)
    zoo_core.rank(BACKBONES, data, out_dir=root / "rank", weights=None, image_size=32, progress=False, folds=3)
    return root / "cmp", root / "rank"


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-terminated JSON)."""

    def __init__(self, user_data: Path) -> None:
        if not CHROMIUM.exists():
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium "
                        "chromium-driver); the HTML report's browser test needs it")
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()

        def fds() -> None:  # in the child: copies above 9 first, so that fd 3/4 are never clobbered or CLOEXEC
            a, b = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={user_data}",
                                      "--remote-debugging-pipe", "about:blank"], preexec_fn=fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False)
        os.close(to_r)
        os.close(from_w)
        self._buf, self._id, self.events = b"", 0, []

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Call ``method`` and return its result (events seen meanwhile are kept in ``events``)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._next(timeout)
            if reply.get("id") == self._id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, name: str, timeout: float = 60) -> None:
        """Wait until event ``name`` has arrived."""
        while not any(e.get("method") == name for e in self.events):
            self.events.append(self._next(timeout))

    def _next(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_r], [], [], max(left, 0))
            assert ready, "chromium did not answer on the DevTools pipe"
            chunk = os.read(self._from_r, 1 << 20)
            assert chunk, "chromium closed the DevTools pipe"
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def close(self) -> None:
        """Stop the browser this test started."""
        self.proc.terminate()
        self.proc.wait(timeout=30)
        os.close(self._to_w)
        os.close(self._from_r)


CHECK = """JSON.stringify({images: Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
 w: i.naturalWidth})), rows: document.querySelectorAll('table.leaderboard tbody tr').length,
 height: document.querySelector('table.leaderboard').getBoundingClientRect().height,
 text: document.querySelector('table.leaderboard').innerText})"""


def render(report: Path, user_data: Path) -> tuple[dict[str, Any], bytes, list[dict[str, Any]]]:
    """Open ``report`` in headless Chromium: the DOM checks, a full-page PNG screenshot, the error events."""
    cdp = DevTools(user_data)
    try:
        target = cdp.send("Target.createTarget", url="about:blank")["targetId"]
        session = cdp.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            cdp.send(f"{domain}.enable", session)
        cdp.send("Emulation.setDeviceMetricsOverride", session, width=1400, height=900, deviceScaleFactor=1,
                 mobile=False)
        cdp.send("Page.navigate", session, url=report.as_uri())
        cdp.wait_event("Page.loadEventFired")
        checks = json.loads(cdp.send("Runtime.evaluate", session, expression=CHECK, returnByValue=True)
                            ["result"]["value"])
        shot = cdp.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)["data"]
        errors = [e for e in cdp.events if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        return checks, base64.b64decode(shot), errors
    finally:
        cdp.close()


def test_compare_report_renders_in_chromium(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    cmp_dir, _ = dirs
    report = cmp_dir / "report.html"
    checks, png, errors = render(report, tmp_path / "profile")
    assert not errors, f"console errors: {errors}"
    # the 3 compare plots + curves and confusion of both entries, all decoded by the browser
    assert len(checks["images"]) == 3 + 2 * len(BACKBONES), checks["images"]
    assert all(i["ok"] for i in checks["images"]), [i for i in checks["images"] if not i["ok"]]
    assert checks["rows"] == len(BACKBONES) and checks["height"] > 40
    assert all(b in checks["text"] for b in BACKBONES) and "tied" in checks["text"]
    with Image.open(io.BytesIO(png)) as img:
        img.verify()
    with Image.open(io.BytesIO(png)) as img:
        gray = img.convert("L")
        assert img.width >= 1000 and img.height > 900
        lo, hi = gray.getextrema()
        assert hi - lo > 100  # not blank: text, table rules and plots on white


def test_report_is_self_contained_with_the_statistics(dirs: tuple[Path, Path]) -> None:
    cmp_dir, rank_dir = dirs
    html = (cmp_dir / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(?!data:)", html), "every asset is a data URI"
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "95 % Wilson" in html and "McNemar" in html and "3 stratified folds" in html
    assert html.count("data:image/png;base64,") == 3 + 2 * len(BACKBONES)
    rows = json.loads((cmp_dir / "leaderboard.json").read_text())["entries"]
    assert f"{rows[0]['top1_low']:.3f}-{rows[0]['top1_high']:.3f}" in html
    assert all(f"{v:.3f}" in html for v in rows[1]["folds_top1"])  # every fold's top-1 is listed
    rank_html = (rank_dir / "report.html").read_text()
    assert rank_html.count("data:image/png;base64,") == 1 and "LogME" in rank_html
    ranking = json.loads((rank_dir / "ranking.json").read_text())["entries"]
    assert rank_html.index(ranking[0]["backbone"]) < rank_html.index(ranking[1]["backbone"])


def test_zoo_report_rebuilds_and_escapes(dirs: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cmp_dir, _ = dirs
    board = json.loads((cmp_dir / "leaderboard.json").read_text())
    board["entries"][0]["stats_note"] = "<script>alert(1)</script> & <b>"
    moved = tmp_path / "moved"
    (moved / "runs").mkdir(parents=True)
    for p in cmp_dir.glob("*.png"):
        (moved / p.name).write_bytes(p.read_bytes())
    for r in board["entries"]:  # the folder moved: run dirs are found under its runs/
        run = cmp_dir / r["run_dir"]
        (moved / "runs" / run.name).mkdir()
        for f in ("curves.png", "confusion.png"):
            (moved / "runs" / run.name / f).write_bytes((run / f).read_bytes())
        r["run_dir"] = str(tmp_path / "gone" / run.name)
    (moved / "leaderboard.json").write_text(json.dumps(board))
    assert main(["report", str(moved)]) == 0
    assert capsys.readouterr().out.strip() == str(moved / "report.html")
    html = (moved / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in html
    assert html.count("data:image/png;base64,") == 3 + 2 * len(BACKBONES) and "is missing" not in html
    assert main(["report", str(tmp_path / "gone")]) == 2
    assert "neither leaderboard.json nor ranking.json" in capsys.readouterr().err
    assert html_report.write_report(moved) == moved / "report.html"


def test_outputs_import_nothing_of_comparison_or_ranking() -> None:
    """compare and rank import the outputs room, so it must not import them back (not even inside a function)."""
    folder = Path(html_report.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = "." * node.level + (node.module or "")
                names = [target + ("" if target.endswith(".") else ".") + a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            bad = [n for n in names if any(part in ("comparison", "ranking") for part in n.split("."))]
            assert not bad, f"{path.name} imports {bad}"
