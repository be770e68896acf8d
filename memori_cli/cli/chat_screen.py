"""``memori chat`` on screen: a streamed reply, rendered as Markdown at a terminal or written
as plain text."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Literal

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown

from .common import err, escape, out


@dataclasses.dataclass
class View:
    """Where chat writes: ``screen`` (stdout: replies, tables) and ``talk`` (stderr: the rest).

    At a terminal these are consoles of their own that word-wrap: the shared ones soft-wrap,
    which keeps piped output one line per message but lets the terminal cut words, and makes
    a Live display lose track of its lines (only the first line of each paragraph stayed).
    Piped, the shared ones are used, and replies are written as plain text.
    """

    screen: Console
    talk: Console

    @classmethod
    def for_terminal(cls) -> View:
        """The consoles for this process's stdout and stderr."""
        return cls(
            Console() if out.is_terminal else out,
            Console(stderr=True) if err.is_terminal else err,
        )


@dataclasses.dataclass
class Reply:
    """One reply: its text (possibly partial) and how it ended."""

    text: str
    status: Literal["answered", "interrupted", "failed"]


def show(pieces: Iterator[str], view: View) -> Reply:
    """Stream a reply to the terminal (rendered as Markdown at a TTY, plain text otherwise).

    Ctrl-C stops it: the stream is closed, which stores the partial reply (capture marks it
    partial), and what came so far stays on screen and in the conversation. A backend error
    is said on stderr; the chat goes on.
    """
    received: list[str] = []
    status: Literal["answered", "interrupted", "failed"] = "answered"
    try:
        if view.screen.is_terminal:
            with _quiet_keyboard():
                _live(pieces, view.screen, received)
        else:
            for piece in pieces:
                received.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
    except KeyboardInterrupt:
        status = "interrupted"
        if not view.screen.is_terminal:
            sys.stdout.write("\n")
        view.talk.print("[dim](stopped)[/]")
    except Exception as exc:  # the backend's own errors: say so, keep chatting
        status = "failed"
        if received and not view.screen.is_terminal:
            sys.stdout.write("\n")
        view.talk.print(f"[red]Error from the model:[/] {escape(str(exc))}", highlight=False)
    finally:
        # A stream stopped between two pieces is suspended, not finished: closing it closes
        # the HTTP response, and that is what stores the partial reply.
        close = getattr(pieces, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):  # a connection that fails to close is gone
                close()
    return Reply("".join(received), status)


def _live(pieces: Iterator[str], screen: Console, received: list[str]) -> None:
    """Render the reply as Markdown as it streams, each piece added to ``received`` (so that
    the caller still has what came when this is interrupted or fails).

    A reply taller than the terminal cannot be redrawn in place (the cursor cannot go back
    above the top of the screen): once the live part outgrows the screen, its finished
    paragraphs are printed for good above it, and only the rest stays live.
    """
    shown = ""  # the part still in the live display
    live = Live(Markdown(""), console=screen, refresh_per_second=12)
    try:
        with _held_interrupts():
            live.start()
        for piece in pieces:
            received.append(piece)
            shown += piece
            head, gap, shown = _settle(shown, screen)
            with _held_interrupts():
                if head:
                    live.console.print(Markdown(head))
                    if gap:
                        live.console.print("\n" * (gap - 1))
                live.update(Markdown(shown))
    finally:
        with _held_interrupts():
            live.stop()


def _settle(shown: str, screen: Console) -> tuple[str, int, str]:
    """Split the live part when it is too tall for the screen: (the paragraphs to print for
    good, how many blank lines the whole puts after them, the rest). ("", 0, shown) when it
    fits, or has no paragraph break to split at."""

    def height(text: str) -> int:
        return len(screen.render_lines(Markdown(text), screen.options, pad=False))

    whole = height(shown)
    room = screen.height - 2  # the line the cursor ends on, and one for the prompt
    cut = _last_break(shown) if whole > room else None
    if cut is None:
        return "", 0, shown
    head, rest = shown[:cut].rstrip(), shown[cut:].lstrip("\n")
    # Rich puts a blank line between blocks, or starts a block with one (a list does): the
    # gap is what the whole has between the two parts that the rest alone does not.
    return head, max(0, whole - height(head) - height(rest)), rest


def _last_break(text: str) -> int | None:
    """The offset after the last blank line of ``text`` outside a code fence with a line
    begun after it, or None."""
    cuts = []
    fenced = False
    offset = 0
    lines = text.split("\n")
    for i, line in enumerate(lines[:-1]):  # the last line is still being written
        offset += len(line) + 1
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and not line.strip() and i > 0:
            cuts.append(offset)
    # The rest must have begun: how it starts (a list, a paragraph) decides the gap.
    return next((cut for cut in reversed(cuts) if text[cut:].strip()), None)


@contextlib.contextmanager
def _held_interrupts() -> Iterator[None]:
    """Hold Ctrl-C back while the terminal is being drawn, and raise it once done.

    A KeyboardInterrupt halfway through Rich's output leaves the cursor where the live
    display does not expect it, and its last draw then repeats lines.
    """
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, hold)
    except ValueError:  # not the main thread: signals never come here anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _quiet_keyboard() -> Iterator[None]:
    """Stop the terminal echoing keys while a reply is drawn: an echoed ``^C`` or typed-ahead
    text would land inside the live display and shift its lines. Ctrl-C still interrupts, and
    what is typed ahead still reaches the next prompt."""
    try:
        import termios
    except ImportError:  # Windows
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError):  # stdin is no terminal
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, saved)
