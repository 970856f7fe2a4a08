"""One Rich console (stderr) and one progress-bar style for every long-running step."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Results (tables, where outputs are) go to stdout; progress bars, warnings and errors go
# to stderr, so a command's results can be piped or captured on their own. Neither reads Rich
# markup: what they print holds paths and user text ('a[/]b' is a folder name), and styles are
# given as Text styles instead.
console = Console(stderr=True, markup=False)
results = Console(markup=False)
if not results.is_terminal:     # a pipe, a file, a CI log: Rich's 80 columns would cut numbers
    results = Console(width=200, markup=False)


# Library code never prints: it logs to "poser" (info: what runs where; warning: something was
# skipped). The CLI shows those records on stderr (`show_messages`); from Python they follow
# the logging configuration of the program (warnings reach stderr even without one).
log = logging.getLogger("poser")


class _ConsoleHandler(logging.Handler):
    STYLES = {logging.WARNING: "yellow", logging.ERROR: "red"}

    def emit(self, record: logging.LogRecord) -> None:
        style = self.STYLES.get(record.levelno)
        label = (f"{logging.getLevelName(record.levelno).lower()}: ", style) if style else ""
        console.print(Text.assemble(label, self.format(record)), highlight=False, soft_wrap=True)


# Progress bars likewise: library code describes its progress (`progress()` below), and bars
# appear only once the CLI (or a Python user) asks for them; otherwise nothing is drawn.
_bars = {"show": False}


def show_messages(bars: bool = True) -> None:
    """Show the library's log records, and its progress bars unless `bars` is False, on the
    stderr console (the CLI calls this once; a Python user may too)."""
    _bars["show"] = bars
    if not any(isinstance(h, _ConsoleHandler) for h in log.handlers):
        log.addHandler(_ConsoleHandler())
    log.setLevel(logging.INFO)
    log.propagate = False


def messages_shown() -> bool:
    """Whether this process shows the library's messages (the CLI asked): spawned training
    processes ask the same in rank 0, so `train --procs N` shows its run, epochs and bar."""
    return any(isinstance(h, _ConsoleHandler) for h in log.handlers)


def bars_shown() -> bool:
    return _bars["show"]


class RateColumn(ProgressColumn):
    """Items per second in the task's own unit (images/s, samples/s, frames/s)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


def progress(unit: str = "it", columns: tuple[ProgressColumn, ...] | None = None) -> Progress:
    """A progress bar (description, bar, done/total, rate, elapsed, ETA, or `columns` after
    the description), drawn only when `show_messages` asked for bars (silent from Python) and
    stderr is a terminal: sent to a file, a bar would leave its last frame as a line each."""
    columns = columns or (BarColumn(), MofNCompleteColumn(), RateColumn(unit), TimeElapsedColumn(),
                          TimeRemainingColumn())
    return Progress(TextColumn("{task.description}", style="bold", markup=False), *columns, console=console,
                    disable=not (_bars["show"] and console.is_terminal))
