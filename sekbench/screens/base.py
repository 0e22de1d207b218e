"""What every tab's screen shares: the tab bar, the footer, and reads off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from sekbench.screens.data import Launch, WorkbenchData, launch, one_line
from sekbench.widgets.key_footer import KeyFooter
from sekbench.widgets.nav_tabs import NavTabs


class TabScreen(Screen):
    """A screen that is one tab of the workbench (one app mode)."""

    MODE = ""
    REFRESH_SECONDS = 1.0

    def compose_frame(self) -> ComposeResult:
        yield NavTabs(self.MODE)

    def compose_footer(self) -> ComposeResult:
        yield KeyFooter()

    @property
    def data(self) -> WorkbenchData:
        return self.app.data  # type: ignore[attr-defined]

    def now(self) -> float:
        return self.app.clock()  # type: ignore[attr-defined]

    # ------------------------------------------------------------ lifecycle
    def on_mount(self) -> None:
        if not self.is_current:
            self.reload()   # built ahead of time (prewarm): read now; shown ones read on resume
        # A screen built ahead of time stays quiet until it is shown (ScreenResume).
        self._ticker = self.set_interval(self.REFRESH_SECONDS, self.reload,
                                         pause=not self.is_current)

    def on_screen_suspend(self) -> None:
        self._ticker.pause()

    def on_screen_resume(self) -> None:
        self._ticker.resume()
        self.reload()

    def reload(self) -> None:
        """Re-read what this screen shows (called on a timer while it is visible)."""

    # --------------------------------------------------------------- workers
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A failed worker is a notification with its one-line reason, never a crash."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(f"{event.worker.name or 'work'}: {one_line(event.worker.error)}",
                        severity="error", timeout=8)

    def read(self, fetch: Callable[[Any], Any], apply: Callable[[Any], None], *,
             group: str = "read") -> None:
        """Run `fetch(store)` off the event loop, then `apply(result)` on it; a newer read
        of the same group cancels an older one."""
        data = self.data

        def locked() -> Any:
            with data.store() as store:
                return fetch(store)

        async def work() -> None:
            apply(await asyncio.to_thread(locked))

        self.run_worker(work, exclusive=True, group=f"{self.MODE}-{group}",
                        exit_on_error=False, name=f"{self.MODE}:{group}")

    def start(self, label: str, *args: str,
              done: Callable[[dict | list | None], None] | None = None) -> None:
        """Launch a CLI verb as its own process; notify when it ends, with its reason if it failed.

        The process outlives the app; only this watch on it ends when the app closes."""
        ws = self.data.ws

        async def work() -> None:
            try:
                job: Launch = await asyncio.to_thread(launch, ws, label, *args)
            except OSError as e:
                self.notify(f"{label}: {one_line(e)}", severity="error")
                return
            self.notify(f"{label} started (pid {job.proc.pid})", timeout=3)
            while job.proc.poll() is None:
                await asyncio.sleep(0.3)
            rc, result, reason = await asyncio.to_thread(job.wait)
            if rc != 0:
                self.notify(f"{label} failed: {one_line(reason)}", severity="error", timeout=8)
                return
            self.notify(f"{label} finished", timeout=3)
            if done is not None:
                done(result)
            self.reload()

        self.run_worker(work, group="launch", exit_on_error=False, name=f"launch:{label}")
