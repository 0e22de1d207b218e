"""The tab bar every screen shows: Scenarios, Live, Review, Jobs, Replay."""

from __future__ import annotations

from textual.widgets import Tab, Tabs

TABS = (("scenarios", "Scenarios"), ("live", "Live"), ("review", "Review"), ("jobs", "Jobs"),
        ("replay", "Replay"))


class NavTabs(Tabs, can_focus=False):
    """Tabs that switch the app's mode; each mode is one screen."""

    def __init__(self, active: str):
        super().__init__(*(Tab(label, id=f"tab-{name}") for name, label in TABS),
                         active=f"tab-{active}")
        self.mode = active

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        target = event.tab.id.removeprefix("tab-") if event.tab and event.tab.id else self.mode
        if target != self.mode:
            self.active = f"tab-{self.mode}"   # this screen's bar keeps showing this screen
            self.app.switch_mode(target)
