"""What a supervised node is doing, and what happens when it exits.

Pure decisions, no processes: `supervisor` asks them, tests call them
directly. A node the user stopped or killed through the control commands
stays down until they start it; with `--restart`, a node that died by
itself comes back after the delay; while the cluster shuts down nothing
comes back.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass


class State(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"  # SIGSTOP through `kill --signal STOP`, until SIGCONT
    RESTARTING = "restarting"  # dead, waiting out --restart-delay
    STOPPED = "stopped"  # down because the user asked
    DEAD = "dead"  # down by itself, not restarted
    NOT_STARTED = "not started"


class AfterExit(enum.Enum):
    RESTART = "restart"
    STAY_DOWN = "stay down"


def after_exit(*, restart: bool, on_purpose: bool, shutting_down: bool) -> AfterExit:
    """Whether a node that just exited is started again."""
    if restart and not on_purpose and not shutting_down:
        return AfterExit.RESTART
    return AfterExit.STAY_DOWN


def state_after_exit(decision: AfterExit, on_purpose: bool) -> State:
    if decision is AfterExit.RESTART:
        return State.RESTARTING
    return State.STOPPED if on_purpose else State.DEAD


def describe_exit(returncode: int) -> str:
    """`exit code 3` or `signal SIGKILL`, from a Popen-style return code."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


# Signals after which the process is still there: the node is not down.
NON_TERMINATING = frozenset({signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP})


def parse_signal(name: str) -> signal.Signals:
    """`KILL`, `SIGKILL`, `kill` or `9` → the signal; ValueError for anything else."""
    text = name.strip().upper()
    if text.isdigit():
        return signal.Signals(int(text))
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise ValueError(f"unknown signal {name!r}") from None


@dataclass(frozen=True)
class NodeReport:
    """One node as `status` shows it."""

    node_id: str
    state: State
    pid: int | None
    url: str
    last_exit: str | None  # describe_exit of its last exit, if it ever exited

    @property
    def state_text(self) -> str:
        if self.state is State.DEAD and self.last_exit:
            return f"dead: {self.last_exit.replace('exit code', 'exit')}"
        return self.state.value

    def to_json(self) -> dict[str, object]:
        return {"node": self.node_id, "state": self.state.value, "state_text": self.state_text,
                "pid": self.pid, "url": self.url, "last_exit": self.last_exit}
