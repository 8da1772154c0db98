"""The screenshots in docs/report.md: two known runs on the simulator, their reports, PNGs.

    python tests/report_screenshots.py            # writes docs/images/report-*.png

Run 1: Coral, 1,200 rows against the SIMULATED LLM with 0.5% injected server errors and no
retries, at most 48 tasks in flight. Run 2: the support desk (tool calls), 10 rows. Each
report is opened in headless Chromium (tests/headless.py) and parts of it are captured.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headless import open_page

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"

CORAL = [
    "examples/coral/coral_sim.yaml",
    "dataset.limit=1200",
    "services.llm.options.error_rate=0.005",
    "services.llm.max_retries=0",
    "runtime.max_in_flight=48",
]
DESK = ["examples/support_desk/support_desk_sim.yaml", "dataset.limit=10"]


def run(args: list[str], out: Path) -> Path:
    cmd = [sys.executable, "-m", "peerflow.cli", "run", *args, f"output.path={out}"]
    subprocess.run([*cmd, "--no-progress"], cwd=ROOT, check=False, capture_output=True)
    return out.with_name(out.name + ".report.html")


async def capture(page_path: Path, shots: dict[str, list[str]], tmp: Path, pick: str = "") -> None:
    async with open_page(
        page_path.as_uri(), tmp / f"chromium-{page_path.stem}", width=1180
    ) as page:
        if pick:
            await page.evaluate(f"window.peerflowShowTrace({pick!r})")
        assert not page.problems(), page.problems()
        for name, selectors in shots.items():
            path = IMAGES / f"report-{name}.png"
            await page.screenshot(path, *selectors, max_height=1400)
            print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")


async def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        coral = await asyncio.to_thread(run, CORAL, tmp / "coral.jsonl")
        await capture(
            coral,
            {
                "overview": ["header", "#overview", "#throughput"],
                "latency": ["#latency h2", "#latency .grid2"],
                "outcomes": ["#outcomes", "#errors"],
            },
            tmp,
        )
        desk = await asyncio.to_thread(run, DESK, tmp / "desk.jsonl")
        first = (tmp / "desk.jsonl").read_text().split('"id":"', 1)[1].split('"', 1)[0]
        await capture(desk, {"trace": ["#traces"]}, tmp, pick=first)


if __name__ == "__main__":
    asyncio.run(main())
