"""The Ray executor: one actor per worker on a Ray cluster, each holding ``work`` (and the models
it loads on first use) for every item it is given.

Ray does the distributing and the retrying: an actor whose process dies (killed, out of memory,
its node lost) is restarted and its task retried, ``max_retries`` times. This module only keeps
one task per actor in flight, so the per-item time limit measures work rather than queueing, and
replaces an actor that overran it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from retrieval_hl.executors.base import Outcome, Work, failure_reason
from rhl_common.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'retrieval-hl[ray]'"
# Longest wait on Ray between checks of the time limits.
_POLL_S = 5.0


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ConfigError: ray is not installed (the message says how to install it).

    """
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs the ray package, which is not installed: {INSTALL_HINT}"
                          ) from None
    return ray


class _Worker:
    """The actor: ``work`` is built once per actor process and called for each item."""

    def __init__(self, work: Work) -> None:
        self.work = work

    def ready(self) -> bool:
        """Answers once the actor is up (its process started, ``work`` unpickled)."""
        return True

    def run(self, item: Any) -> tuple[str, Any]:
        try:
            return "ok", self.work(item)
        except Exception as exc:  # noqa: BLE001 - a failing item costs that item only
            return "error", failure_reason(exc)


class RayExecutor:
    """Items as tasks on Ray actors, one actor per worker.

    Args:
        address: A running cluster (``auto``, ``HOST:PORT``, ``ray://HOST:10001``); ``None``
            joins the cluster ``ray.init()`` finds (``RAY_ADDRESS``) or starts one on this
            machine. When Ray is already initialised in this process, that session is used.
        workers: Actors to start; default: the cluster's CPUs over ``cpus_per_worker``.
        cpus_per_worker: CPUs Ray reserves for each actor (also its torch thread count).
        max_retries: Times a task is retried after its actor's process died.
        num_cpus: CPUs of a Ray started here (default: all of them).
    """

    name: ClassVar[str] = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        max_retries: int = 2,
        num_cpus: int | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers!r}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, got {max_retries!r}")
        self.ray = import_ray()
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.max_retries = max_retries
        self.num_cpus = num_cpus

    def _init(self) -> bool:
        """Connect to (or start) Ray unless this process already has; True if we did."""
        ray = self.ray
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"include_dashboard": False}
        if self.address is None and self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot reach a Ray cluster at {self.address or 'RAY_ADDRESS/local'!r}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        return True

    def run(
        self,
        work: Work,
        items: Sequence[Any],
        *,
        time_limit_s: float,
        done: Callable[[Outcome], None],
    ) -> None:
        """Run ``work`` on every item across the actors; see
        :class:`retrieval_hl.executors.Executor`.
        """
        if not items:
            return
        ray = self.ray
        started = self._init()
        actor_cls = ray.remote(
            num_cpus=self.cpus_per_worker,
            max_restarts=self.max_retries,
            max_task_retries=self.max_retries,
        )(_Worker)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        n = self.workers or max(1, int(cpus // self.cpus_per_worker))
        n = min(n, len(items))
        log.info("ray: %d worker actor(s) for %d item(s) on a cluster of %g CPUs", n, len(items),
                 cpus)
        actors: list[Any] = [None] * n
        starting: dict[Any, int] = {}  # ready ref -> actor slot; a slot takes work once ready
        running: dict[Any, tuple[int, int, float]] = {}  # task ref -> (slot, item, start)
        free: list[int] = []
        todo = deque(range(len(items)))

        def start(slot: int) -> None:
            actors[slot] = actor_cls.remote(work)
            starting[actors[slot].ready.remote()] = slot

        for slot in range(n):
            start(slot)
        try:
            while todo or running:
                while free and todo:
                    slot, i = free.pop(), todo.popleft()
                    running[actors[slot].run.remote(items[i])] = (slot, i, time.monotonic())
                wait_s = _POLL_S
                if running:
                    first = min(t0 for _, _, t0 in running.values()) + time_limit_s
                    wait_s = min(wait_s, max(0.0, first - time.monotonic()))
                ready, _ = ray.wait([*running, *starting], num_returns=1, timeout=wait_s)
                for ref in ready:
                    if ref in starting:
                        slot = starting.pop(ref)
                        try:
                            ray.get(ref)
                        except ray.exceptions.RayError as exc:
                            raise ConfigError(f"a Ray worker could not start: {_first(exc)}"
                                              ) from None
                        free.append(slot)
                        continue
                    slot, i, t0 = running.pop(ref)
                    outcome, died = self._outcome(ref, i, t0)
                    if died:  # out of restarts: a fresh actor for the items still to come
                        start(slot)
                    else:
                        free.append(slot)
                    done(outcome)
                now = time.monotonic()
                for ref, (slot, i, t0) in list(running.items()):
                    if now - t0 < time_limit_s:
                        continue
                    # An actor task cannot be stopped on its own: end its actor, start another.
                    del running[ref]
                    ray.kill(actors[slot], no_restart=True)
                    start(slot)
                    done(Outcome(i, error=f"over the per-video time limit of {time_limit_s:g} s",
                                 elapsed_s=now - t0))
        finally:
            for a in actors:
                if a is not None:
                    ray.kill(a, no_restart=True)
            if started:
                ray.shutdown()

    def _outcome(self, ref: Any, i: int, t0: float) -> tuple[Outcome, bool]:
        """The item's outcome, and whether its actor is dead for good."""
        try:
            status, payload = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            reason = f"worker died, retried {self.max_retries} time(s): {_first(exc)}"
            return Outcome(i, error=reason, elapsed_s=time.monotonic() - t0), True
        elapsed = time.monotonic() - t0
        if status != "ok":
            return Outcome(i, error=payload, elapsed_s=elapsed), False
        return Outcome(i, value=payload, elapsed_s=elapsed), False
